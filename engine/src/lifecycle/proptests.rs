//! Property tests: random event sequences — requests, step outcomes good, bad and stale,
//! agents coming and going, timers, power surprises, slot grants — never put a host in an
//! invalid state; and in a world where everything works, every host converges on what its
//! spec asks for.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;

use super::testkit::{Rig, image, mac, policy};
use super::*;
use ProvisioningState as S;

#[derive(Debug, Clone)]
enum Move {
    Succeed,
    Fail(FailureClass),
    Stale,
    AgentConnected,
    AgentDisconnected,
    Elapse(u16),
    Power(bool),
    Grant,
    SpuriousGrant,
    Ask(Ask),
}

#[derive(Debug, Clone)]
enum Ask {
    Online(bool),
    Provision(u8),
    Deprovision,
    Inspect,
    Reboot(bool),
    Adopt(Option<u8>),
    Detach { delay: bool, force: bool },
    Attach,
    Delete,
    Credentials,
    Bmc(u8),
    External(bool),
    Cleaning(u8),
}

impl Ask {
    fn intent(&self) -> Intent {
        let bmc = |n: u8| BmcSpec {
            address: if n.is_multiple_of(3) {
                format!("sim+virtualmedia://m{n}")
            } else {
                format!("sim://m{n}")
            },
            disable_certificate_verification: false,
        };
        match *self {
            Self::Online(on) => Intent::SetOnline(on),
            Self::Provision(n) => Intent::Provision {
                image: image(&format!("http://images/{n}")),
            },
            Self::Deprovision => Intent::Deprovision,
            Self::Inspect => Intent::Inspect,
            Self::Reboot(hard) => Intent::Reboot {
                mode: if hard {
                    RebootMode::Hard
                } else {
                    RebootMode::Soft
                },
            },
            Self::Adopt(n) => Intent::Adopt {
                image: n.map(|n| image(&format!("http://images/{n}"))),
            },
            Self::Detach { delay, force } => Intent::Detach(DetachSpec {
                delete_action: if delay {
                    DeleteAction::Delay
                } else {
                    DeleteAction::Delete
                },
                force,
            }),
            Self::Attach => Intent::Attach,
            Self::Delete => Intent::Delete,
            Self::Credentials => Intent::CredentialsChanged,
            Self::Bmc(n) => Intent::SetBmc(bmc(n)),
            Self::External(on) => Intent::Update(Box::new(SettingsPatch {
                externally_provisioned: Some(on),
                ..SettingsPatch::default()
            })),
            Self::Cleaning(n) => Intent::Update(Box::new(SettingsPatch {
                cleaning: Some(CleaningPolicy {
                    mode: [
                        CleaningMode::Metadata,
                        CleaningMode::Erase,
                        CleaningMode::Disabled,
                    ][usize::from(n % 3)],
                    disks: Vec::new(),
                }),
                ..SettingsPatch::default()
            })),
        }
    }
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        any::<bool>().prop_map(Ask::Online),
        (0u8..3).prop_map(Ask::Provision),
        Just(Ask::Deprovision),
        Just(Ask::Inspect),
        any::<bool>().prop_map(Ask::Reboot),
        proptest::option::of(0u8..3).prop_map(Ask::Adopt),
        (any::<bool>(), any::<bool>()).prop_map(|(delay, force)| Ask::Detach { delay, force }),
        Just(Ask::Attach),
        Just(Ask::Delete),
        Just(Ask::Credentials),
        (0u8..4).prop_map(Ask::Bmc),
        any::<bool>().prop_map(Ask::External),
        (0u8..3).prop_map(Ask::Cleaning),
    ]
}

fn a_move() -> impl Strategy<Value = Move> {
    prop_oneof![
        6 => Just(Move::Succeed),
        1 => prop_oneof![
            Just(FailureClass::Transient),
            Just(FailureClass::Fatal),
            Just(FailureClass::Credentials),
            Just(FailureClass::AgentGone)
        ]
        .prop_map(Move::Fail),
        1 => Just(Move::Stale),
        2 => Just(Move::AgentConnected),
        1 => Just(Move::AgentDisconnected),
        2 => (0u16..2000).prop_map(Move::Elapse),
        1 => any::<bool>().prop_map(Move::Power),
        2 => Just(Move::Grant),
        1 => Just(Move::SpuriousGrant),
        3 => ask().prop_map(Move::Ask),
    ]
}

/// A random starting spec and policy.
fn start() -> impl Strategy<Value = (HostSpec, Policy)> {
    (
        0u8..4,
        any::<bool>(),
        0u8..3,
        0u8..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(bmc, external, inspection, cleaning, fast_track, online)| {
                let address = match bmc {
                    0 => None,
                    1 => Some("sim+virtualmedia://m1"),
                    _ => Some("sim://m1"),
                };
                let mut spec = HostSpec::new(
                    address.map(|address| BmcSpec {
                        address: address.to_owned(),
                        disable_certificate_verification: false,
                    }),
                    Some(mac()),
                );
                spec.externally_provisioned = external;
                spec.online = online;
                spec.inspection_mode = [
                    InspectionMode::Agent,
                    InspectionMode::OutOfBand,
                    InspectionMode::Disabled,
                ][usize::from(inspection)];
                spec.cleaning.mode = [
                    CleaningMode::Metadata,
                    CleaningMode::Erase,
                    CleaningMode::Disabled,
                ][usize::from(cleaning)];
                let mut policy = policy();
                policy.fast_track = fast_track;
                policy.agent_timeout = Duration::from_secs(120);
                (spec, policy)
            },
        )
}

/// The state changes the lifecycle may make (BMO's table plus adoption and detachment).
fn allowed(from: S, to: S, detached: bool) -> bool {
    if to == S::Deleting && detached {
        return true;
    }
    let targets: &[S] = match from {
        S::Unmanaged => &[S::Registering, S::Deleting],
        S::Registering => &[
            S::Inspecting,
            S::Preparing,
            S::ExternallyProvisioned,
            S::Provisioned,
            S::Deleting,
        ],
        S::Inspecting => &[S::Preparing, S::PoweringOffBeforeDelete],
        S::Preparing => &[S::Available, S::PoweringOffBeforeDelete],
        S::Available => &[
            S::Inspecting,
            S::Provisioning,
            S::ExternallyProvisioned,
            S::Provisioned,
            S::PoweringOffBeforeDelete,
        ],
        S::Provisioning => &[S::Provisioned, S::Deprovisioning],
        S::Provisioned => &[S::Deprovisioning],
        S::ExternallyProvisioned => &[S::Provisioned, S::PoweringOffBeforeDelete],
        S::Deprovisioning => &[S::Available, S::PoweringOffBeforeDelete],
        S::PoweringOffBeforeDelete => &[S::Deleting],
        S::Deleting => &[],
    };
    targets.contains(&to)
}

/// Operations that may run in each state.
fn runs_in(operation: Operation, state: S) -> bool {
    use Operation as O;
    match operation {
        O::Register => !matches!(state, S::Unmanaged | S::Deleting),
        O::Inspect => state == S::Inspecting,
        O::Prepare => state == S::Preparing,
        O::Provision => state == S::Provisioning,
        O::Deprovision => state == S::Deprovisioning,
        O::Adopt => matches!(
            state,
            S::Registering | S::Available | S::Provisioned | S::ExternallyProvisioned
        ),
        O::PowerOn | O::PowerOff | O::Reboot => state.is_stable(),
        O::PowerOffBeforeDelete => state == S::PoweringOffBeforeDelete,
        O::Delete => state == S::Deleting,
        O::Detach => true,
    }
}

fn check(rig: &Rig, out: &Output) -> Result<(), TestCaseError> {
    let host = &rig.host;
    let status = &host.status;
    let detached = status.detached || host.spec.detached.is_some();
    for entry in &out.timeline {
        if let TimelineEvent::StateChanged { from, to } = entry.event {
            prop_assert!(
                allowed(from, to, detached),
                "forbidden transition {from} → {to}"
            );
        }
    }
    if rig.forgotten {
        prop_assert_eq!(status.state, S::Deleting);
        prop_assert!(host.spec.deleting);
        return Ok(());
    }
    match &status.activity {
        Activity::Running(progress) => {
            prop_assert!(
                progress.index < progress.steps.len(),
                "cursor past the plan"
            );
            prop_assert!(
                runs_in(progress.operation, status.state),
                "{} running in {}",
                progress.operation,
                status.state
            );
            match progress.phase {
                StepPhase::InFlight => {
                    prop_assert_eq!(
                        rig.pending,
                        Some((progress.token, progress.steps[progress.index]))
                    );
                }
                StepPhase::AwaitingAgent { .. } => {
                    prop_assert_eq!(progress.steps[progress.index], Step::AwaitAgent);
                    prop_assert!(rig.pending.is_none());
                }
                StepPhase::Retrying { at } => {
                    prop_assert!(rig.pending.is_none());
                    prop_assert!(
                        rig.wakes.iter().any(|&wake| wake <= at),
                        "no wake-up for a retry"
                    );
                }
            }
        }
        Activity::Delayed { target, .. } => {
            prop_assert!(target.needs_capacity());
            prop_assert!(rig.queued_for_slot, "delayed without a slot request");
            prop_assert_eq!(status.operational_status, OperationalStatus::Delayed);
        }
        Activity::Backoff { until, .. } => {
            prop_assert!(
                rig.wakes.iter().any(|wake| wake <= until),
                "no wake-up for a back-off"
            );
        }
        Activity::Idle => {}
    }
    if !matches!(status.activity, Activity::Running(_)) {
        prop_assert!(rig.pending.is_none(), "a step runs for an idle host");
    }
    // Slots: held only in the states that need one, and the runtime agrees.
    prop_assert_eq!(status.slot, rig.holds_slot);
    if status.slot {
        prop_assert!(
            status.state.needs_capacity(),
            "slot held in {}",
            status.state
        );
    }
    let exempt = host.spec.boot_method() == Some(BootMethod::VirtualMedia);
    // The operation that gives a state its name runs only with a slot.
    if let Activity::Running(progress) = &status.activity {
        let limited = matches!(
            progress.operation,
            Operation::Inspect | Operation::Provision | Operation::Deprovision
        );
        if limited && !exempt {
            prop_assert!(status.slot, "{} without a slot", progress.operation);
        }
    }
    if status.error.is_some() {
        prop_assert!(status.error_count > 0);
    }
    let operational = status.operational_status;
    prop_assert_eq!(operational == OperationalStatus::Detached, status.detached);
    if operational == OperationalStatus::Error {
        prop_assert!(status.error.is_some());
    }
    if status.detached && !host.spec.deleting {
        prop_assert!(
            matches!(status.activity, Activity::Idle),
            "a detached host is busy"
        );
    }
    if status.state == S::Provisioned && status.activity == Activity::Idle && !detached {
        prop_assert!(status.image.is_some(), "provisioned without an image");
    }
    Ok(())
}

fn play(rig: &mut Rig, a_move: &Move) -> Result<(), TestCaseError> {
    if rig.forgotten {
        return Ok(());
    }
    let out = match a_move {
        Move::Succeed => match rig.pending.take() {
            Some((token, step)) => {
                let result = Ok(Rig::success(step));
                rig.executed.push(step);
                rig.send(Event::StepFinished { token, result })
            }
            None => return Ok(()),
        },
        Move::Fail(class) => match rig.pending.take() {
            Some((token, step)) => {
                rig.executed.push(step);
                rig.send(Event::StepFinished {
                    token,
                    result: Err(StepFailure::new(*class, "injected failure")),
                })
            }
            None => return Ok(()),
        },
        Move::Stale => {
            let before = rig.host.clone();
            let token = rig.pending.map_or(0, |(token, _)| token).wrapping_add(1000);
            let out = rig.send(Event::StepFinished {
                token,
                result: Ok(StepOutput::Nothing),
            });
            prop_assert_eq!(&rig.host, &before, "a stale answer changed the host");
            out
        }
        Move::AgentConnected => rig.send(Event::AgentConnected),
        Move::AgentDisconnected => rig.send(Event::AgentDisconnected),
        Move::Elapse(seconds) => {
            rig.elapse(Duration::from_secs(u64::from(*seconds)));
            let now = rig.now;
            rig.wakes.retain(|&wake| wake > now);
            rig.send(Event::Timer {
                boot: BootObservations::default(),
            })
        }
        Move::Power(on) => rig.send(Event::PowerObserved { on: *on }),
        Move::Grant => {
            if !rig.queued_for_slot {
                return Ok(());
            }
            rig.queued_for_slot = false;
            rig.holds_slot = true;
            rig.send(Event::SlotGranted)
        }
        Move::SpuriousGrant => {
            if rig.queued_for_slot || rig.holds_slot {
                return Ok(());
            }
            // The runtime only grants requested slots; the lifecycle hands a stray one back.
            rig.holds_slot = true;
            rig.send(Event::SlotGranted)
        }
        Move::Ask(ask) => {
            let before = rig.host.clone();
            match rig.intent(ask.intent()) {
                Ok(out) => out,
                Err(_) => {
                    prop_assert_eq!(&rig.host, &before, "a rejected request changed the host");
                    return Ok(());
                }
            }
        }
    };
    check(rig, &out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_never_reach_an_invalid_state(
        (spec, policy) in start(),
        moves in proptest::collection::vec(a_move(), 1..160),
    ) {
        let mut rig = Rig::new(spec, policy);
        check(&rig, &Output::default())?;
        for a_move in &moves {
            play(&mut rig, a_move)?;
        }
    }

    #[test]
    fn in_a_working_world_every_host_converges_on_its_spec(
        (spec, policy) in start(),
        moves in proptest::collection::vec(a_move(), 0..80),
        last in proptest::collection::vec(ask(), 0..4),
    ) {
        let mut rig = Rig::new(spec, policy);
        // Anything may happen first, failures included...
        for a_move in &moves {
            play(&mut rig, a_move)?;
        }
        // ...then some last requests, and a world where everything works.
        for ask in &last {
            if rig.forgotten {
                break;
            }
            let _ = rig.try_send(Event::Intent(ask.intent()));
        }
        settle_fully(&mut rig);
        converged(&rig)?;
    }
}

/// [`Rig::settle`], plus the time it takes for back-offs and agent deadlines to pass.
fn settle_fully(rig: &mut Rig) {
    for _ in 0..20 {
        rig.settle();
        if rig.forgotten || rig.wakes.is_empty() {
            return;
        }
        if rig.host.status.activity == Activity::Idle {
            return;
        }
        rig.fire_timer();
    }
}

fn converged(rig: &Rig) -> Result<(), TestCaseError> {
    let (spec, status) = (&rig.host.spec, &rig.host.status);
    if rig.forgotten {
        prop_assert!(spec.deleting);
        return Ok(());
    }
    prop_assert_eq!(
        &status.activity,
        &Activity::Idle,
        "not settled in {}",
        status.state
    );
    if spec.deleting {
        // Only a detached host whose deletion is delayed may linger.
        prop_assert!(status.detached);
        prop_assert_eq!(
            spec.detached.map(|d| d.delete_action),
            Some(DeleteAction::Delay)
        );
        return Ok(());
    }
    if spec.detached.is_some() {
        prop_assert!(status.detached);
        return Ok(());
    }
    if spec.bmc.is_none() {
        prop_assert_eq!(status.state, S::Unmanaged);
        return Ok(());
    }
    prop_assert!(status.error.is_none(), "error left: {:?}", status.error);
    prop_assert!(status.registered);
    let expected: HashSet<S> = if spec.externally_provisioned {
        [S::ExternallyProvisioned].into()
    } else if spec.image.is_some() && (spec.online || status.image.is_some()) {
        [S::Provisioned].into()
    } else {
        [S::Available].into()
    };
    prop_assert!(
        expected.contains(&status.state),
        "{} but spec {:?}",
        status.state,
        spec
    );
    if status.state == S::Provisioned {
        prop_assert_eq!(
            status.image.as_ref().map(|i| &i.url),
            spec.image.as_ref().map(|i| &i.url)
        );
    }
    prop_assert_eq!(
        status.powered_on,
        Some(spec.online),
        "power does not follow online"
    );
    prop_assert!(spec.reboot.is_none() && !spec.inspect_requested && !spec.adopt_requested);
    Ok(())
}
