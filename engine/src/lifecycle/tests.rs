//! Every transition of the lifecycle, including BMO's deletion, detach, reboot and adoption
//! paths (`metal3-api` §1.8, §2).

use std::time::Duration;

use super::testkit::{Rig, image, mac, policy, spec};
use super::*;
use ProvisioningState as S;
use Step::*;

const SIM: &str = "sim://m1";

// ------------------------------------------------------------------ enrolment to available

#[test]
fn a_host_without_bmc_details_is_unmanaged_until_they_are_given() {
    let mut rig = Rig::new(HostSpec::new(None, Some(mac())), policy());
    assert_eq!(rig.state(), S::Unmanaged);
    assert_eq!(rig.operational(), OperationalStatus::Discovered);
    assert!(rig.pending.is_none());
    rig.intent(Intent::SetBmc(BmcSpec {
        address: SIM.to_owned(),
        disable_certificate_verification: false,
    }))
    .unwrap();
    assert_eq!(rig.state(), S::Registering);
    assert_eq!(rig.pending_step(), Some(ValidateBmc));
    assert_eq!(rig.operational(), OperationalStatus::Ok);
}

#[test]
fn enrolment_walks_registering_inspecting_preparing_to_available() {
    let mut rig = Rig::enrolled(SIM);
    assert_eq!(rig.state(), S::Registering);
    let steps = rig.settle();
    assert_eq!(
        steps,
        [
            ValidateBmc,
            ConfigureAgentBoot,
            PowerOffHard,
            PowerOn,
            InspectInBand,
            Clean
        ]
    );
    assert_eq!(
        rig.transitions(),
        [
            (S::Registering, S::Inspecting),
            (S::Inspecting, S::Preparing),
            (S::Preparing, S::Available)
        ]
    );
    let status = &rig.host.status;
    assert!(status.registered && status.has_hardware);
    assert_eq!(rig.hardware_stored, 1);
    assert_eq!(status.architecture.as_deref(), Some("x86_64"));
    assert_eq!(
        status.powered_on,
        Some(true),
        "fast-track keeps the agent running"
    );
    assert!(status.agent.connected && status.agent.token_sha256.is_some());
    let history = status.operation_history;
    assert!(history.register.end.is_some() && history.inspect.end.is_some());
    assert!(
        !rig.holds_slot,
        "the inspection slot is given back in preparing"
    );
    assert_eq!(rig.operational(), OperationalStatus::Ok);
}

#[test]
fn without_fast_track_the_agent_is_powered_off_and_booted_again() {
    let mut policy = policy();
    policy.fast_track = false;
    let mut rig = Rig::new(spec(SIM), policy);
    let steps = rig.settle();
    assert_eq!(
        steps,
        [
            ValidateBmc,
            ConfigureAgentBoot,
            PowerOffHard,
            PowerOn,
            InspectInBand,
            PowerOffHard,
            ConfigureAgentBoot,
            PowerOffHard,
            PowerOn,
            Clean,
            PowerOffHard,
            // `online: true` in available: power follows.
            PowerOn
        ]
    );
    assert!(!rig.host.status.agent.connected);
}

#[test]
fn inspection_modes_choose_the_path() {
    let mut disabled = spec(SIM);
    disabled.inspection_mode = InspectionMode::Disabled;
    let mut rig = Rig::new(disabled, policy());
    let steps = rig.settle();
    assert_eq!(rig.transitions()[0], (S::Registering, S::Preparing));
    assert!(!steps.contains(&InspectInBand));

    let mut out_of_band = spec(SIM);
    out_of_band.inspection_mode = InspectionMode::OutOfBand;
    out_of_band.cleaning.mode = CleaningMode::Disabled;
    let mut rig = Rig::new(out_of_band, policy());
    assert_eq!(rig.settle(), [ValidateBmc, InspectOutOfBand, PowerOn]);
    assert_eq!(rig.state(), S::Available);
    assert!(rig.host.status.has_hardware);
}

#[test]
fn disabled_cleaning_makes_preparing_a_pass_through() {
    let mut quiet = spec(SIM);
    quiet.cleaning.mode = CleaningMode::Disabled;
    let mut rig = Rig::new(quiet, policy());
    let steps = rig.settle();
    assert!(!steps.contains(&Clean));
    assert_eq!(rig.state(), S::Available);
}

// ------------------------------------------------------------------ provisioning

#[test]
fn provisioning_reuses_the_fast_track_agent_and_boots_from_disk() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://images/os.qcow2"),
    })
    .unwrap();
    assert_eq!(
        rig.operational(),
        OperationalStatus::Delayed,
        "provisioning needs a slot"
    );
    rig.grant();
    assert_eq!(rig.state(), S::Provisioning);
    let steps = rig.settle();
    assert_eq!(steps, [Deploy, ConfigureDiskBoot, PowerOffSoft, PowerOn]);
    assert_eq!(rig.state(), S::Provisioned);
    let status = &rig.host.status;
    assert_eq!(
        status.image.as_ref().map(|i| i.url.as_str()),
        Some("http://images/os.qcow2")
    );
    assert_eq!(status.error_count, 0);
    assert!(status.operation_history.provision.end.is_some());
    assert!(!status.agent.connected);
    assert!(!rig.holds_slot);
}

#[test]
fn provisioning_an_offline_host_waits_for_online() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::SetOnline(false)).unwrap();
    rig.settle();
    assert_eq!(rig.host.status.powered_on, Some(false));
    // Provisioning turns the host on, as BMO's image + online does.
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    assert!(rig.host.spec.online);
    rig.grant();
    assert_eq!(rig.state(), S::Provisioning);
    assert_eq!(
        rig.settle(),
        [
            ConfigureAgentBoot,
            PowerOffHard,
            PowerOn,
            Deploy,
            ConfigureDiskBoot,
            PowerOffSoft,
            PowerOn
        ]
    );
}

#[test]
fn deprovisioning_cleans_and_returns_to_available() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::Deprovision).unwrap();
    rig.grant();
    assert_eq!(rig.state(), S::Deprovisioning);
    let steps = rig.settle();
    assert_eq!(steps, [ConfigureAgentBoot, PowerOffHard, PowerOn, Clean]);
    assert_eq!(rig.state(), S::Available);
    assert!(rig.host.status.image.is_none());
    assert!(rig.host.status.operation_history.deprovision.end.is_some());
}

#[test]
fn a_new_image_url_deprovisions_then_provisions_again() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::Provision {
        image: image("http://images/v2.qcow2"),
    })
    .unwrap();
    rig.settle();
    assert_eq!(rig.state(), S::Provisioned);
    assert_eq!(
        rig.host.status.image.as_ref().unwrap().url,
        "http://images/v2.qcow2"
    );
    let tail: Vec<_> = rig.transitions().into_iter().rev().take(4).collect();
    assert_eq!(
        tail,
        [
            (S::Provisioning, S::Provisioned),
            (S::Available, S::Provisioning),
            (S::Deprovisioning, S::Available),
            (S::Provisioned, S::Deprovisioning),
        ]
    );
}

#[test]
fn changing_the_image_mid_provisioning_cancels_at_the_step_boundary() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    rig.grant();
    assert_eq!(rig.pending_step(), Some(Deploy));
    rig.intent(Intent::Deprovision).unwrap();
    // The write in flight is not interrupted; its end is the boundary.
    assert_eq!(rig.state(), S::Provisioning);
    rig.succeed();
    assert_eq!(rig.state(), S::Deprovisioning);
    assert!(rig.log.iter().any(|e| matches!(
        e.event,
        TimelineEvent::OperationCancelled {
            operation: Operation::Provision,
            ..
        }
    )));
    rig.settle();
    assert_eq!(rig.state(), S::Available);
}

#[test]
fn a_fatal_provisioning_failure_cleans_up_backs_off_and_retries() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://i/missing"),
    })
    .unwrap();
    rig.grant();
    rig.fail(
        FailureClass::Fatal,
        "image http://i/missing returned HTTP 404 Not Found",
    );
    assert_eq!(rig.state(), S::Deprovisioning);
    let error = rig.host.status.error.clone().unwrap();
    assert_eq!(error.kind, ErrorType::Provisioning);
    assert_eq!(error.step, Some(Deploy));
    assert!(error.message.contains("404"));
    assert_eq!(rig.operational(), OperationalStatus::Error);
    assert!(rig.holds_slot, "cleaning up keeps the slot");
    // Cleanup runs at once; the retry waits for the back-off.
    while rig.pending.is_some() || rig.host.progress().is_some() {
        if rig.pending.is_some() {
            rig.succeed();
        } else {
            rig.send(Event::AgentConnected);
        }
    }
    assert_eq!(rig.state(), S::Available);
    assert_eq!(
        rig.operational(),
        OperationalStatus::Error,
        "the error stays until provisioning works"
    );
    assert!(matches!(
        rig.host.status.activity,
        Activity::Backoff {
            operation: Operation::Provision,
            ..
        }
    ));
    rig.fire_timer();
    rig.grant();
    assert_eq!(rig.state(), S::Provisioning);
    rig.settle();
    assert_eq!(rig.state(), S::Provisioned);
    assert!(rig.host.status.error.is_none());
    assert_eq!(rig.host.status.error_count, 0);
    assert_eq!(rig.operational(), OperationalStatus::Ok);
}

#[test]
fn backoff_grows_with_each_failure() {
    let mut rig = Rig::enrolled(SIM);
    let mut delays = Vec::new();
    for _ in 0..4 {
        rig.fail(
            FailureClass::Transient,
            "BMC sim://m1 unreachable: connection refused",
        );
        let error = rig.host.status.error.clone().unwrap();
        delays.push(error.retry_at.since(rig.now));
        rig.fire_timer();
    }
    assert_eq!(rig.host.status.error_count, 4);
    for pair in delays.windows(2) {
        assert!(pair[1] > pair[0], "{delays:?}");
    }
}

#[test]
fn a_transient_bmc_failure_retries_the_same_step_without_starting_over() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    rig.grant();
    rig.succeed(); // Deploy
    assert_eq!(rig.pending_step(), Some(ConfigureDiskBoot));
    rig.fail(
        FailureClass::Transient,
        "BMC sim://m1 unreachable: connection refused",
    );
    let error = rig.host.status.error.clone().unwrap();
    assert_eq!(error.kind, ErrorType::Provisioning);
    assert!(error.message.contains("unreachable"));
    assert_eq!(rig.state(), S::Provisioning);
    assert!(rig.pending.is_none());
    rig.fire_timer();
    assert_eq!(
        rig.pending_step(),
        Some(ConfigureDiskBoot),
        "the same step again"
    );
    assert_eq!(rig.host.progress().unwrap().attempt, 1);
    rig.succeed();
    assert!(
        rig.host.status.error.is_none(),
        "the failure of this step is over"
    );
    rig.settle();
    assert_eq!(rig.state(), S::Provisioned);
    assert_eq!(
        rig.executed.iter().filter(|s| **s == Deploy).count(),
        1,
        "the image is written once"
    );
}

// ------------------------------------------------------------------ agent, credentials, capacity

#[test]
fn an_agent_that_never_calls_back_is_an_inspection_error_with_a_reason() {
    let mut rig = Rig::enrolled(SIM);
    rig.succeed(); // ValidateBmc
    rig.grant();
    for _ in 0..3 {
        rig.succeed();
    }
    assert!(matches!(
        rig.host.progress().unwrap().phase,
        StepPhase::AwaitingAgent { .. }
    ));
    let reason = wait_reason(&rig.host).unwrap().to_string();
    assert!(
        reason.starts_with(
            "waiting for the agent on 52:54:00:00:00:07 to call back after network boot"
        ),
        "{reason}"
    );
    rig.fire_timer();
    let error = rig.host.status.error.clone().unwrap();
    assert_eq!(error.kind, ErrorType::Inspection);
    assert_eq!(error.step, Some(AwaitAgent));
    assert!(
        error.message.starts_with("agent never called back after network boot (waited 10m 0s): no DHCP request seen from 52:54:00:00:00:07"),
        "{}",
        error.message
    );
    assert_eq!(rig.state(), S::Inspecting);
    // After the back-off the whole operation runs again, booting the agent afresh.
    rig.fire_timer();
    assert_eq!(rig.pending_step(), Some(ConfigureAgentBoot));
    rig.settle();
    assert_eq!(rig.state(), S::Available);
    assert_eq!(rig.operational(), OperationalStatus::Ok);
}

#[test]
fn wrong_credentials_are_a_registration_error_until_they_change() {
    let mut rig = Rig::enrolled(SIM);
    rig.fail(
        FailureClass::Credentials,
        "BMC sim://m1 rejected the credentials of user admin",
    );
    let error = rig.host.status.error.clone().unwrap();
    assert_eq!(error.kind, ErrorType::Registration);
    assert!(matches!(
        rig.host.status.activity,
        Activity::Backoff {
            operation: Operation::Register,
            ..
        }
    ));
    // New credentials are tried at once, without waiting for the back-off.
    rig.intent(Intent::CredentialsChanged).unwrap();
    assert_eq!(rig.pending_step(), Some(ValidateBmc));
    rig.settle();
    assert_eq!(rig.state(), S::Available);
    assert!(rig.host.status.error.is_none());
}

#[test]
fn credentials_failing_on_a_provisioned_host_are_a_provisioned_registration_error() {
    let mut rig = Rig::provisioned(SIM);
    rig.send(Event::PowerObserved { on: false });
    assert_eq!(rig.pending_step(), Some(PowerOn));
    rig.fail(FailureClass::Credentials, "rejected");
    assert_eq!(
        rig.host.status.error.as_ref().unwrap().kind,
        ErrorType::ProvisionedRegistration
    );
    assert!(!rig.host.status.registered);
    rig.fire_timer();
    assert_eq!(
        rig.pending_step(),
        Some(ValidateBmc),
        "registers again before anything else"
    );
    rig.settle();
    assert_eq!(rig.state(), S::Provisioned);
    assert_eq!(rig.host.status.powered_on, Some(true));
}

#[test]
fn capacity_delays_entering_inspection_and_virtual_media_is_exempt() {
    let mut rig = Rig::enrolled(SIM);
    rig.succeed(); // ValidateBmc
    assert!(rig.queued_for_slot);
    assert_eq!(rig.state(), S::Registering);
    assert_eq!(rig.operational(), OperationalStatus::Delayed);
    assert!(
        wait_reason(&rig.host)
            .unwrap()
            .to_string()
            .contains("provisioning slot")
    );
    rig.grant();
    assert_eq!(rig.state(), S::Inspecting);
    assert_eq!(rig.operational(), OperationalStatus::Ok);
    assert!(rig.host.status.slot);

    let mut media = Rig::enrolled("sim+virtualmedia://m2");
    media.succeed();
    assert!(!media.queued_for_slot);
    assert_eq!(media.state(), S::Inspecting);
    assert!(!media.host.status.slot);
}

#[test]
fn a_delayed_host_that_stops_wanting_the_slot_leaves_the_queue() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Inspect).unwrap();
    assert!(rig.queued_for_slot);
    rig.intent(Intent::Delete).unwrap();
    assert!(
        !rig.queued_for_slot,
        "deletion takes the host out of the queue"
    );
    assert_eq!(rig.state(), S::PoweringOffBeforeDelete);
}

#[test]
fn a_lost_fast_track_agent_is_booted_again_without_an_error() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    rig.grant();
    assert_eq!(rig.pending_step(), Some(Deploy));
    rig.fail(
        FailureClass::AgentGone,
        "no agent is connected for 52:54:00:00:00:07",
    );
    assert!(rig.host.status.error.is_none());
    assert_eq!(rig.pending_step(), Some(ConfigureAgentBoot));
    let steps = rig.settle();
    assert_eq!(
        steps[..4],
        [ConfigureAgentBoot, PowerOffHard, PowerOn, Deploy]
    );
    assert_eq!(rig.state(), S::Provisioned);
}

#[test]
fn stale_step_results_are_ignored() {
    let mut rig = Rig::enrolled(SIM);
    let (token, _) = rig.pending.unwrap();
    let before = rig.host.clone();
    let out = rig.send(Event::StepFinished {
        token: token.wrapping_add(5),
        result: Ok(StepOutput::Nothing),
    });
    assert!(out.actions.is_empty() && out.timeline.is_empty() && !out.changed);
    assert_eq!(rig.host, before);
}

// ------------------------------------------------------------------ power and reboot

#[test]
fn power_follows_online_in_the_stable_states() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::SetOnline(false)).unwrap();
    assert_eq!(rig.settle(), [PowerOffSoft]);
    assert_eq!(rig.host.status.powered_on, Some(false));
    // Someone turns it on behind our back: the sync loop notices and it goes off again.
    rig.send(Event::PowerObserved { on: true });
    assert_eq!(rig.settle(), [PowerOffSoft]);
    rig.intent(Intent::SetOnline(true)).unwrap();
    assert_eq!(rig.settle(), [PowerOn]);
}

#[test]
fn a_failing_power_change_is_a_power_management_error_with_backoff() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::SetOnline(false)).unwrap();
    rig.fail(
        FailureClass::Fatal,
        "BMC refused the power-off: PowerState is read-only",
    );
    assert_eq!(
        rig.host.status.error.as_ref().unwrap().kind,
        ErrorType::PowerManagement
    );
    assert!(matches!(
        rig.host.status.activity,
        Activity::Backoff {
            operation: Operation::PowerOff,
            ..
        }
    ));
    rig.settle();
    assert_eq!(rig.host.status.powered_on, Some(false));
    assert!(rig.host.status.error.is_none());
}

#[test]
fn reboots_apply_to_provisioned_hosts_and_hard_wins() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::Reboot {
        mode: RebootMode::Soft,
    })
    .unwrap();
    assert_eq!(rig.settle(), [PowerOffSoft, PowerOn]);
    assert!(rig.host.spec.reboot.is_none(), "the request is consumed");
    // Two requests arrive while a reboot runs; the hard one wins.
    rig.intent(Intent::Reboot {
        mode: RebootMode::Soft,
    })
    .unwrap();
    rig.intent(Intent::Reboot {
        mode: RebootMode::Hard,
    })
    .unwrap();
    rig.intent(Intent::Reboot {
        mode: RebootMode::Soft,
    })
    .unwrap();
    assert_eq!(rig.settle(), [PowerOffSoft, PowerOn, PowerOffHard, PowerOn]);
    assert_eq!(rig.state(), S::Provisioned);

    let mut available = Rig::available(SIM);
    let rejected = available
        .intent(Intent::Reboot {
            mode: RebootMode::Hard,
        })
        .unwrap_err();
    assert!(rejected.0.contains("available"), "{rejected}");
}

// ------------------------------------------------------------------ deletion (BMO §1.8)

fn delete(rig: &mut Rig) -> Vec<Step> {
    rig.intent(Intent::Delete).unwrap();
    let steps = rig.settle();
    assert!(rig.forgotten, "host not forgotten; state {}", rig.state());
    steps
}

#[test]
fn deleting_a_registering_or_unmanaged_host_skips_straight_to_deleting() {
    let mut rig = Rig::enrolled(SIM);
    rig.succeed();
    rig.intent(Intent::Delete).unwrap();
    assert_eq!(
        rig.state(),
        S::Deleting,
        "registering goes straight to deleting"
    );
    let mut unmanaged = Rig::new(HostSpec::new(None, None), policy());
    assert_eq!(delete(&mut unmanaged), [ReleaseBoot]);
    assert_eq!(unmanaged.transitions(), [(S::Unmanaged, S::Deleting)]);
}

#[test]
fn deleting_an_available_host_powers_it_off_first() {
    let mut rig = Rig::available(SIM);
    assert_eq!(delete(&mut rig), [PowerOffSoft, ReleaseBoot]);
    let tail: Vec<_> = rig.transitions().into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        [
            (S::PoweringOffBeforeDelete, S::Deleting),
            (S::Available, S::PoweringOffBeforeDelete)
        ]
    );
}

#[test]
fn deleting_a_provisioned_host_deprovisions_then_powers_off() {
    let mut rig = Rig::provisioned(SIM);
    let steps = delete(&mut rig);
    assert_eq!(
        steps,
        [
            ConfigureAgentBoot,
            PowerOffHard,
            PowerOn,
            Clean,
            PowerOffSoft,
            ReleaseBoot
        ]
    );
    let tail: Vec<_> = rig.transitions().into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            (S::PoweringOffBeforeDelete, S::Deleting),
            (S::Deprovisioning, S::PoweringOffBeforeDelete),
            (S::Provisioned, S::Deprovisioning)
        ]
    );
}

#[test]
fn deleting_mid_provisioning_waits_for_the_step_then_deprovisions() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    rig.grant();
    rig.intent(Intent::Delete).unwrap();
    assert_eq!(
        rig.pending_step(),
        Some(Deploy),
        "the write in flight finishes"
    );
    rig.succeed();
    assert_eq!(rig.state(), S::Deprovisioning);
    rig.settle();
    assert!(rig.forgotten);
}

#[test]
fn deleting_an_inspecting_host_abandons_the_agent_wait() {
    let mut rig = Rig::enrolled(SIM);
    rig.succeed();
    rig.grant();
    for _ in 0..3 {
        rig.succeed();
    }
    assert!(matches!(
        rig.host.progress().unwrap().phase,
        StepPhase::AwaitingAgent { .. }
    ));
    rig.intent(Intent::Delete).unwrap();
    assert_eq!(rig.state(), S::PoweringOffBeforeDelete);
    assert!(!rig.holds_slot);
    rig.settle();
    assert!(rig.forgotten);
}

#[test]
fn a_deletion_that_cannot_power_off_gives_up_after_the_retry_limit() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Delete).unwrap();
    for _ in 0..4 {
        assert_eq!(rig.pending_step(), Some(PowerOffSoft));
        rig.fail(FailureClass::Transient, "BMC unreachable");
        if rig.state() == S::PoweringOffBeforeDelete {
            rig.fire_timer();
        }
    }
    assert_eq!(rig.state(), S::Deleting);
    rig.settle();
    assert!(rig.forgotten);
}

#[test]
fn a_deletion_that_cannot_deprovision_moves_on_to_power_off() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::Delete).unwrap();
    rig.settle_until(|rig| rig.pending_step() == Some(Clean));
    for _ in 0..4 {
        rig.fail(FailureClass::Fatal, "disk /dev/sda is read-only");
        if rig.state() == S::Deprovisioning {
            rig.settle_until(|rig| rig.pending_step() == Some(Clean));
        }
    }
    assert_eq!(rig.state(), S::PoweringOffBeforeDelete);
    rig.settle();
    assert!(rig.forgotten);
}

impl Rig {
    fn settle_until(&mut self, done: impl Fn(&Rig) -> bool) {
        for _ in 0..100 {
            if done(self) {
                return;
            }
            if self.pending.is_some() {
                self.succeed();
            } else if self.queued_for_slot {
                self.grant();
            } else if matches!(
                self.host.progress().map(|p| p.phase),
                Some(StepPhase::AwaitingAgent { .. })
            ) {
                self.send(Event::AgentConnected);
            } else {
                self.fire_timer();
            }
        }
        panic!("condition never reached; state {}", self.state());
    }
}

// ------------------------------------------------------------------ detach (BMO §2)

#[test]
fn detach_forgets_the_host_in_the_backend_and_attach_adopts_it_again() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::Detach(DetachSpec::default())).unwrap();
    assert_eq!(rig.settle(), [ReleaseBoot]);
    assert_eq!(rig.operational(), OperationalStatus::Detached);
    assert_eq!(rig.state(), S::Provisioned, "the state does not change");
    assert!(rig.host.status.agent.token_sha256.is_none());
    // Detached hosts are left alone: a power mismatch starts nothing.
    rig.send(Event::PowerObserved { on: false });
    assert!(rig.pending.is_none());
    rig.intent(Intent::Attach).unwrap();
    assert_eq!(rig.settle(), [ValidateBmc, AdoptBoot, PowerOn]);
    assert_eq!(rig.operational(), OperationalStatus::Ok);
    assert_eq!(rig.state(), S::Provisioned);
    assert!(rig.log.iter().any(|e| e.event == TimelineEvent::Attached));
}

#[test]
fn detach_outside_the_stable_states_needs_force() {
    let mut rig = Rig::enrolled(SIM);
    rig.succeed();
    rig.grant();
    let rejected = rig
        .intent(Intent::Detach(DetachSpec::default()))
        .unwrap_err();
    assert!(rejected.0.contains("force"), "{rejected}");
    rig.intent(Intent::Detach(DetachSpec {
        force: true,
        ..DetachSpec::default()
    }))
    .unwrap();
    rig.settle();
    assert_eq!(rig.operational(), OperationalStatus::Detached);
    assert_eq!(rig.state(), S::Inspecting);
}

#[test]
fn deleting_a_detached_host_skips_power_off_and_cleaning() {
    let mut rig = Rig::provisioned(SIM);
    rig.intent(Intent::Detach(DetachSpec::default())).unwrap();
    rig.settle();
    let steps = delete(&mut rig);
    assert_eq!(steps, [ReleaseBoot]);
    assert_eq!(
        *rig.transitions().last().unwrap(),
        (S::Provisioned, S::Deleting)
    );
}

#[test]
fn a_delayed_delete_of_a_detached_host_waits_for_attach() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Detach(DetachSpec {
        delete_action: DeleteAction::Delay,
        force: false,
    }))
    .unwrap();
    rig.settle();
    rig.intent(Intent::Delete).unwrap();
    rig.settle();
    assert!(!rig.forgotten);
    assert_eq!(rig.state(), S::Available);
    // Attaching lets the deletion go on, still without powering off.
    rig.intent(Intent::Attach).unwrap();
    assert_eq!(rig.settle(), [ReleaseBoot]);
    assert!(rig.forgotten);
}

// ------------------------------------------------------------------ adoption and external provisioning

#[test]
fn an_externally_provisioned_host_is_adopted_without_touching_its_disk() {
    let mut external = spec(SIM);
    external.externally_provisioned = true;
    let mut rig = Rig::new(external, policy());
    let steps = rig.settle();
    assert_eq!(steps, [ValidateBmc, AdoptBoot, PowerOn]);
    assert_eq!(
        rig.transitions(),
        [(S::Registering, S::ExternallyProvisioned)]
    );
    assert!(rig.host.status.adopted);
    let rejected = rig
        .intent(Intent::Provision {
            image: image("http://i/a"),
        })
        .unwrap_err();
    assert!(rejected.0.contains("externally provisioned"));
    // Clearing the flag (BMO main) takes the spec's image as what is on disk.
    rig.intent(Intent::Update(Box::new(SettingsPatch {
        externally_provisioned: Some(false),
        ..SettingsPatch::default()
    })))
    .unwrap();
    rig.settle();
    assert!(
        rig.transitions()
            .contains(&(S::ExternallyProvisioned, S::Provisioned))
    );
    // With no image, provisioned makes no sense: it deprovisions.
    assert_eq!(rig.state(), S::Available);
}

#[test]
fn adopting_at_enrolment_takes_over_a_running_host() {
    let mut rig = Rig::enrolled(SIM);
    rig.intent(Intent::Adopt {
        image: Some(image("http://i/running")),
    })
    .unwrap();
    let steps = rig.settle();
    assert_eq!(steps, [ValidateBmc, AdoptBoot, PowerOn]);
    assert_eq!(rig.transitions(), [(S::Registering, S::Provisioned)]);
    assert_eq!(
        rig.host.status.image.as_ref().unwrap().url,
        "http://i/running"
    );
    assert!(
        !steps.iter().any(|step| step.uses_agent()),
        "no agent, no disk writes"
    );
}

#[test]
fn adopting_an_available_host_marks_it_provisioned() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Adopt {
        image: Some(image("http://i/x")),
    })
    .unwrap();
    assert_eq!(rig.settle(), [AdoptBoot]);
    assert_eq!(rig.state(), S::Provisioned);
    let mut provisioned = Rig::provisioned(SIM);
    assert!(provisioned.intent(Intent::Adopt { image: None }).is_err());
}

#[test]
fn re_inspection_is_for_available_hosts() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Inspect).unwrap();
    let steps = rig.settle();
    assert_eq!(
        steps,
        [InspectInBand, Clean],
        "the fast-track agent is reused"
    );
    assert!(rig.transitions().contains(&(S::Available, S::Inspecting)));
    assert_eq!(rig.state(), S::Available);
    let mut provisioned = Rig::provisioned(SIM);
    assert!(provisioned.intent(Intent::Inspect).is_err());
}

// ------------------------------------------------------------------ requests and restarts

#[test]
fn rejected_requests_leave_the_host_untouched() {
    let mut rig = Rig::provisioned(SIM);
    let before = rig.host.clone();
    for intent in [
        Intent::Inspect,
        Intent::Attach,
        Intent::Adopt { image: None },
        Intent::SetBmc(BmcSpec {
            address: "sim://other".into(),
            disable_certificate_verification: false,
        }),
        Intent::Provision {
            image: ImageSpec {
                format: Some(ImageFormat::LiveIso),
                ..image("http://i/live.iso")
            },
        },
        Intent::Update(Box::new(SettingsPatch {
            externally_provisioned: Some(true),
            ..SettingsPatch::default()
        })),
    ] {
        assert!(rig.intent(intent.clone()).is_err(), "{intent:?}");
        assert_eq!(rig.host, before, "{intent:?}");
    }
    rig.intent(Intent::Delete).unwrap();
    let rejected = rig.intent(Intent::SetOnline(true)).unwrap_err();
    assert_eq!(rejected.0, "the host is being deleted");
}

#[test]
fn resume_redispatches_the_step_in_flight() {
    let mut rig = Rig::available(SIM);
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    rig.grant();
    let (token, step) = rig.pending.take().unwrap();
    assert_eq!(step, Deploy);
    // The engine dies; a new one loads the committed host and resumes it.
    let out = resume(&mut rig.host, rig.now, &rig.policy);
    rig.take(&out);
    let (new_token, again) = rig.pending.unwrap();
    assert_eq!(again, Deploy);
    assert_ne!(new_token, token);
    assert!(out.timeline.iter().any(|e| e.event
        == TimelineEvent::Resumed {
            operation: Operation::Provision,
            step: Deploy
        }));
    // An answer for the old dispatch is ignored.
    rig.send(Event::StepFinished {
        token,
        result: Ok(StepOutput::Nothing),
    });
    assert_eq!(rig.pending_step(), Some(Deploy));
    rig.settle();
    assert_eq!(rig.state(), S::Provisioned);
}

#[test]
fn resume_rearms_waits_and_slot_requests() {
    let mut rig = Rig::enrolled(SIM);
    rig.succeed();
    assert!(matches!(rig.host.status.activity, Activity::Delayed { .. }));
    let out = resume(&mut rig.host, rig.now, &rig.policy);
    assert!(out.actions.contains(&Action::AcquireSlot));
    rig.take(&out);
    rig.grant();
    for _ in 0..3 {
        rig.succeed();
    }
    let Some(StepPhase::AwaitingAgent { deadline }) = rig.host.progress().map(|p| p.phase) else {
        panic!("not waiting for the agent");
    };
    let out = resume(&mut rig.host, rig.now, &rig.policy);
    assert_eq!(out.actions, [Action::WakeAt(deadline)]);
    rig.take(&out);
    rig.send(Event::AgentConnected);
    assert_eq!(rig.pending_step(), Some(InspectInBand));
}

#[test]
fn agents_are_not_trusted_to_be_connected_after_a_restart() {
    let mut rig = Rig::available(SIM);
    assert!(rig.host.status.agent.connected);
    let out = resume(&mut rig.host, rig.now, &rig.policy);
    rig.take(&out);
    assert!(!rig.host.status.agent.connected);
    rig.intent(Intent::Provision {
        image: image("http://i/a"),
    })
    .unwrap();
    rig.grant();
    assert_eq!(rig.pending_step(), Some(ConfigureAgentBoot));
}

#[test]
fn every_change_is_timestamped_and_sequenced() {
    let mut rig = Rig::provisioned(SIM);
    assert_eq!(rig.host.status.timeline_seq, rig.log.last().unwrap().seq);
    assert_eq!(rig.host.status.last_updated, rig.now);
    let durations: Vec<u64> = rig
        .log
        .iter()
        .filter_map(|e| match e.event {
            TimelineEvent::StepSucceeded { duration_ms, .. } => Some(duration_ms),
            _ => None,
        })
        .collect();
    assert!(
        durations.iter().filter(|&&d| d == 100).count() >= 8,
        "{durations:?}"
    );
    let unchanged = rig.send(Event::PowerObserved { on: true });
    assert!(
        !unchanged.changed,
        "an observation that matches changes nothing"
    );
}

#[test]
fn the_bmc_address_changes_only_while_registering() {
    let mut rig = Rig::enrolled(SIM);
    rig.fail(FailureClass::Transient, "unreachable");
    rig.intent(Intent::SetBmc(BmcSpec {
        address: "sim://m9".into(),
        disable_certificate_verification: false,
    }))
    .unwrap();
    rig.fire_timer();
    assert_eq!(
        rig.pending_step(),
        Some(ValidateBmc),
        "new address, new attempt now"
    );
    assert_eq!(rig.host.spec.bmc.as_ref().unwrap().address, "sim://m9");
    rig.settle();
    assert_eq!(rig.state(), S::Available);
    let mut available = Rig::available(SIM);
    assert!(
        available
            .intent(Intent::SetBmc(BmcSpec {
                address: "sim://x".into(),
                disable_certificate_verification: false
            }))
            .is_err()
    );
    let _ = Duration::from_secs(1);
}
