//! A stand-in for the runtime that the lifecycle tests drive: it keeps the dispatched step,
//! the wake-ups and the slot requests, and answers with whatever a test says.

use std::time::Duration;

use rivet_model::{Cpu, HardwareDetails};

use super::*;

pub(super) fn mac() -> MacAddr {
    MacAddr::new([0x52, 0x54, 0, 0, 0, 7])
}

pub(super) fn spec(address: &str) -> HostSpec {
    HostSpec::new(
        Some(BmcSpec {
            address: address.to_owned(),
            disable_certificate_verification: false,
        }),
        Some(mac()),
    )
}

pub(super) fn image(url: &str) -> ImageSpec {
    ImageSpec {
        url: url.to_owned(),
        checksum: Some("0".repeat(64)),
        checksum_type: Some(ChecksumType::Sha256),
        format: Some(ImageFormat::Qcow2),
    }
}

pub(super) fn policy() -> Policy {
    Policy {
        fast_track: true,
        agent_timeout: Duration::from_secs(600),
        backoff: Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        },
        delete_retry_limit: 3,
    }
}

/// The runtime's side of one host.
#[derive(Debug)]
pub(super) struct Rig {
    pub(super) host: Host,
    pub(super) now: Timestamp,
    pub(super) policy: Policy,
    /// The step dispatched and not yet answered.
    pub(super) pending: Option<(u32, Step)>,
    pub(super) wakes: Vec<Timestamp>,
    pub(super) queued_for_slot: bool,
    pub(super) holds_slot: bool,
    pub(super) log: Vec<TimelineEntry>,
    pub(super) executed: Vec<Step>,
    pub(super) forgotten: bool,
    pub(super) hardware_stored: usize,
}

impl Rig {
    pub(super) fn new(spec: HostSpec, policy: Policy) -> Self {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let host = Host::new(HostId::from_random([7; 16]), "host-7", spec, now);
        let mut rig = Self {
            host,
            now,
            policy,
            pending: None,
            wakes: Vec::new(),
            queued_for_slot: false,
            holds_slot: false,
            log: Vec::new(),
            executed: Vec::new(),
            forgotten: false,
            hardware_stored: 0,
        };
        rig.send(Event::Enrolled);
        rig
    }

    pub(super) fn enrolled(address: &str) -> Self {
        Self::new(spec(address), policy())
    }

    /// Applies `event`; a rejection fails the test.
    pub(super) fn send(&mut self, event: Event) -> Output {
        self.try_send(event)
            .unwrap_or_else(|rejected| panic!("rejected: {rejected}"))
    }

    pub(super) fn try_send(&mut self, event: Event) -> Result<Output, Rejected> {
        assert!(!self.forgotten, "event for a forgotten host");
        let out = apply(&mut self.host, event, self.now, &self.policy)?;
        self.take(&out);
        Ok(out)
    }

    pub(super) fn intent(&mut self, intent: Intent) -> Result<Output, Rejected> {
        self.try_send(Event::Intent(intent))
    }

    pub(super) fn take(&mut self, out: &Output) {
        let mut expected_seq = self.log.last().map_or(0, |entry| entry.seq);
        for entry in &out.timeline {
            expected_seq += 1;
            assert_eq!(entry.seq, expected_seq, "timeline sequence");
        }
        self.log.extend(out.timeline.iter().cloned());
        for action in &out.actions {
            match action {
                Action::RunStep { token, step } => {
                    assert!(
                        self.pending.is_none(),
                        "two steps in flight: {:?} and {step:?}",
                        self.pending
                    );
                    self.pending = Some((*token, *step));
                }
                Action::WakeAt(at) => self.wakes.push(*at),
                Action::AcquireSlot => self.queued_for_slot = true,
                Action::ReleaseSlot => {
                    self.queued_for_slot = false;
                    self.holds_slot = false;
                }
                Action::StoreHardware(_) => self.hardware_stored += 1,
                Action::Forget => self.forgotten = true,
            }
        }
    }

    pub(super) fn pending_step(&self) -> Option<Step> {
        self.pending.map(|(_, step)| step)
    }

    /// Answers the pending step with `result`.
    pub(super) fn answer(&mut self, result: Result<StepOutput, StepFailure>) -> Step {
        let (token, step) = self.pending.take().expect("a step is in flight");
        self.executed.push(step);
        self.send(Event::StepFinished { token, result });
        step
    }

    /// The output a working driver gives for `step`.
    pub(super) fn success(step: Step) -> StepOutput {
        match step {
            Step::ValidateBmc => StepOutput::Power { on: false },
            Step::ConfigureAgentBoot => StepOutput::AgentToken {
                sha256: "ab".repeat(32),
            },
            Step::InspectInBand | Step::InspectOutOfBand => {
                StepOutput::Hardware(Box::new(HardwareDetails {
                    cpu: Some(Cpu {
                        arch: Some("x86_64".to_owned()),
                        ..Cpu::default()
                    }),
                    ..HardwareDetails::default()
                }))
            }
            _ => StepOutput::Nothing,
        }
    }

    pub(super) fn succeed(&mut self) -> Step {
        let step = self.pending_step().expect("a step is in flight");
        self.answer(Ok(Self::success(step)))
    }

    pub(super) fn fail(&mut self, class: FailureClass, message: &str) -> Step {
        self.answer(Err(StepFailure::new(class, message)))
    }

    pub(super) fn grant(&mut self) {
        assert!(self.queued_for_slot, "no slot was requested");
        self.queued_for_slot = false;
        self.holds_slot = true;
        self.send(Event::SlotGranted);
    }

    /// Moves the clock to the earliest wake-up and delivers the timer.
    pub(super) fn fire_timer(&mut self) {
        let at = self
            .wakes
            .iter()
            .copied()
            .min()
            .expect("a wake-up is scheduled");
        self.wakes.retain(|&wake| wake != at);
        self.now = self.now.max(at);
        self.send(Event::Timer {
            boot: BootObservations::default(),
        });
    }

    pub(super) fn elapse(&mut self, duration: Duration) {
        self.now = self.now.plus(duration);
    }

    /// Plays a working world until the host has nothing left to do: steps succeed, agents
    /// connect, slots are granted, back-offs run out. Returns the steps executed.
    pub(super) fn settle(&mut self) -> Vec<Step> {
        let start = self.executed.len();
        for _ in 0..500 {
            if self.forgotten {
                break;
            }
            if self.pending.is_some() {
                self.elapse(Duration::from_millis(100));
                self.succeed();
            } else if self.queued_for_slot {
                self.grant();
            } else if matches!(
                self.host.progress().map(|p| p.phase),
                Some(StepPhase::AwaitingAgent { .. })
            ) {
                self.elapse(Duration::from_millis(100));
                self.send(Event::AgentConnected);
            } else if matches!(
                self.host.status.activity,
                Activity::Backoff { .. }
                    | Activity::Running(Progress {
                        phase: StepPhase::Retrying { .. },
                        ..
                    })
            ) {
                self.fire_timer();
            } else {
                break;
            }
        }
        self.executed[start..].to_vec()
    }

    pub(super) fn state(&self) -> ProvisioningState {
        self.host.status.state
    }

    pub(super) fn operational(&self) -> OperationalStatus {
        self.host.status.operational_status
    }

    /// The state changes recorded so far.
    pub(super) fn transitions(&self) -> Vec<(ProvisioningState, ProvisioningState)> {
        self.log
            .iter()
            .filter_map(|entry| match entry.event {
                TimelineEvent::StateChanged { from, to } => Some((from, to)),
                _ => None,
            })
            .collect()
    }

    /// Drives a fresh host to `available`.
    pub(super) fn available(address: &str) -> Self {
        let mut rig = Self::enrolled(address);
        rig.settle();
        assert_eq!(rig.state(), ProvisioningState::Available);
        rig
    }

    /// Drives a fresh host to `provisioned`.
    pub(super) fn provisioned(address: &str) -> Self {
        let mut rig = Self::available(address);
        rig.intent(Intent::Provision {
            image: image("http://images/os.qcow2"),
        })
        .unwrap();
        rig.settle();
        assert_eq!(rig.state(), ProvisioningState::Provisioned);
        rig
    }
}
