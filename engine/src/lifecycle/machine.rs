//! The transition function: `(host, event, now) → (host', actions)`.
//!
//! [`apply`] is pure: it reads only its arguments, changes only the host it is given, and
//! returns the side effects for the runtime to perform ([`Action`]) and the timeline
//! entries to record. Its shape follows NVIDIA NICo's state controller — after every event
//! the host's spec is compared with its status and the next operation is chosen, so
//! handling an event twice, or after a restart, does no harm — and BareMetalHost's state
//! table (`metal3-api` §1.8).

use std::time::Duration;

use rivet_model::HardwareDetails;

use super::address::BootMethod;
use super::backoff::Backoff;
use super::host::{
    Activity, BmcSpec, CleaningPolicy, DetachSpec, Host, HostError, ImageFormat, ImageSpec,
    InspectionMode, Progress, RebootMode, StepPhase,
};
use super::state::{ErrorType, OperationalStatus, ProvisioningState as State};
use super::steps::{Operation, Step, plan};
use super::time::Timestamp;
use super::timeline::{
    BootObservations, TimelineEntry, TimelineEvent, WaitReason, agent_timeout_reason,
};
use rivet_model::RootDeviceHints;

/// Settings that shape the lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Keep the agent running between inspection, preparation and provisioning.
    pub fast_track: bool,
    /// How long to wait for the agent to connect after booting it.
    pub agent_timeout: Duration,
    pub backoff: Backoff,
    /// Failures after which a deletion stops trying to deprovision or power off (BMO: 3).
    pub delete_retry_limit: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            fast_track: true,
            agent_timeout: Duration::from_secs(1800),
            backoff: Backoff::default(),
            delete_retry_limit: 3,
        }
    }
}

/// A request from a user or the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Desired power in the stable states.
    SetOnline(bool),
    /// Provision `image` (and power the host on).
    Provision {
        image: ImageSpec,
    },
    /// Remove the image.
    Deprovision,
    /// Inspect an available host again.
    Inspect,
    Reboot {
        mode: RebootMode,
    },
    /// Take over a running host: provisioned with `image`, or externally provisioned
    /// without one. Nothing is written to its disk.
    Adopt {
        image: Option<ImageSpec>,
    },
    Detach(DetachSpec),
    Attach,
    Delete,
    /// The BMC credentials changed; register again.
    CredentialsChanged,
    /// Give (or change) the BMC address.
    SetBmc(BmcSpec),
    /// Change settings that take effect at the next operation.
    Update(Box<SettingsPatch>),
}

/// Settings to change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsPatch {
    pub root_device_hints: Option<Option<RootDeviceHints>>,
    pub cleaning: Option<CleaningPolicy>,
    pub description: Option<Option<String>>,
    pub externally_provisioned: Option<bool>,
    pub inspection_mode: Option<InspectionMode>,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    Nothing,
    /// The power state read from the BMC.
    Power {
        on: bool,
    },
    /// The hash of the agent token issued for the next boot.
    AgentToken {
        sha256: String,
    },
    /// The inventory collected by inspection.
    Hardware(Box<HardwareDetails>),
}

/// How a step failed, which decides what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Worth retrying the same step (BMC timeout or 5xx, connection refused).
    Transient,
    /// The operation cannot succeed as it is (image 404, checksum mismatch, agent timeout).
    Fatal,
    /// The BMC rejected the credentials: a registration error until they change.
    Credentials,
    /// A step needed the agent and it was not connected.
    AgentGone,
}

/// A failed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub class: FailureClass,
    pub message: String,
}

impl StepFailure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// An input to the lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The host was just created with [`Host::new`]: record it and start.
    Enrolled,
    /// Look at the host again, when nothing in particular happened.
    Reconcile,
    Intent(Intent),
    /// The step dispatched with `token` finished.
    StepFinished {
        token: u32,
        result: Result<StepOutput, StepFailure>,
    },
    /// A time the host asked to be woken at has come. `boot` is what the boot services saw
    /// of the host, used to explain an agent that never called back.
    Timer {
        boot: BootObservations,
    },
    AgentConnected,
    AgentDisconnected,
    PowerObserved {
        on: bool,
    },
    /// A provisioning slot was granted after [`Action::AcquireSlot`].
    SlotGranted,
}

/// A side effect for the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Execute `step`, then report [`Event::StepFinished`] with `token`. Dispatched only
    /// after the transition that asked for it is committed.
    RunStep { token: u32, step: Step },
    /// Deliver [`Event::Timer`] at (or after) this time.
    WakeAt(Timestamp),
    /// Queue for a provisioning slot; [`Event::SlotGranted`] follows when one is free.
    AcquireSlot,
    /// Give the slot back, or leave the queue.
    ReleaseSlot,
    /// Store the inventory.
    StoreHardware(Box<HardwareDetails>),
    /// The host is deleted: drop its record, secrets, inventory and timeline.
    Forget,
}

/// The effects of one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub actions: Vec<Action>,
    pub timeline: Vec<TimelineEntry>,
    /// Whether the host record changed (and must be written).
    pub changed: bool,
}

/// A request that does not apply to the host as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Applies `event` to `host` at `now`. On `Err` the host is unchanged.
pub fn apply(
    host: &mut Host,
    event: Event,
    now: Timestamp,
    policy: &Policy,
) -> Result<Output, Rejected> {
    let before = host.clone();
    let mut machine = Machine {
        host,
        now,
        policy,
        out: Output::default(),
    };
    match event {
        Event::Enrolled => machine.record(TimelineEvent::Enrolled),
        Event::Reconcile => {}
        Event::Intent(intent) => {
            if let Err(rejected) = machine.intent(intent) {
                *machine.host = before;
                return Err(rejected);
            }
        }
        Event::StepFinished { token, result } => machine.step_finished(token, result),
        Event::Timer { boot } => machine.timer(boot),
        Event::AgentConnected => machine.agent_connected(),
        Event::AgentDisconnected => machine.agent_disconnected(),
        Event::PowerObserved { on } => machine.power_observed(on),
        Event::SlotGranted => machine.slot_granted(),
    }
    machine.advance();
    Ok(machine.finish(&before))
}

/// Picks a host up after the engine restarted: re-dispatches the step that was in flight,
/// re-arms deadlines and queues again for a slot. The agent is not trusted to still be
/// connected; it connects again and says so.
pub fn resume(host: &mut Host, now: Timestamp, policy: &Policy) -> Output {
    let before = host.clone();
    let mut machine = Machine {
        host,
        now,
        policy,
        out: Output::default(),
    };
    machine.host.status.agent.connected = false;
    match machine.host.status.activity.clone() {
        Activity::Running(progress) => match progress.phase {
            StepPhase::InFlight => {
                if let Some(step) = progress.current_step() {
                    machine.record(TimelineEvent::Resumed {
                        operation: progress.operation,
                        step,
                    });
                    machine.begin_step();
                }
            }
            StepPhase::AwaitingAgent { deadline } => machine.wake_at(deadline),
            StepPhase::Retrying { at } => machine.wake_at(at),
        },
        Activity::Delayed { .. } => machine.out.actions.push(Action::AcquireSlot),
        Activity::Backoff { until, .. } => machine.wake_at(until),
        Activity::Idle => {}
    }
    machine.advance();
    machine.finish(&before)
}

/// What the host should do next when it is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Desire {
    /// Change state; no operation needed.
    Become(State),
    /// Run an operation in the current state.
    Run(Operation),
    /// Enter a state (taking a slot if it needs one) and run an operation there.
    Enter(State, Operation),
    /// Leave detachment: register again and adopt.
    Reattach,
}

struct Machine<'a> {
    host: &'a mut Host,
    now: Timestamp,
    policy: &'a Policy,
    out: Output,
}

impl Machine<'_> {
    // ---------------------------------------------------------------- intents

    fn intent(&mut self, intent: Intent) -> Result<(), Rejected> {
        let state = self.host.status.state;
        // A detached host whose deletion is delayed waits for exactly this attach.
        if self.host.spec.deleting && !matches!(intent, Intent::Delete | Intent::Attach) {
            return Err(reject("the host is being deleted"));
        }
        let summary = match intent {
            Intent::SetOnline(online) => {
                self.host.spec.online = online;
                format!("power {}", if online { "on" } else { "off" })
            }
            Intent::Provision { image } => {
                if state == State::ExternallyProvisioned || self.host.spec.externally_provisioned {
                    return Err(reject(
                        "the host is externally provisioned: Rivet does not write its disk \
                         (clear externallyProvisioned first)",
                    ));
                }
                if image.format == Some(ImageFormat::LiveIso) {
                    return Err(reject("live-iso images are not supported yet"));
                }
                if image.url.trim().is_empty() {
                    return Err(reject("the image URL is empty"));
                }
                let summary = format!("provision {}", image.url);
                let new = self.host.spec.image.as_ref() != Some(&image);
                self.host.spec.image = Some(image);
                self.host.spec.online = true;
                if new {
                    self.retry_now(Operation::Provision);
                }
                summary
            }
            Intent::Deprovision => {
                self.host.spec.image = None;
                "deprovision".to_owned()
            }
            Intent::Inspect => {
                match state {
                    State::Available => self.host.spec.inspect_requested = true,
                    State::Inspecting => self.retry_now(Operation::Inspect),
                    _ => {
                        return Err(reject(format!(
                            "inspection can be requested for available hosts; this one is {state}"
                        )));
                    }
                }
                "inspect".to_owned()
            }
            Intent::Reboot { mode } => {
                if !matches!(state, State::Provisioned | State::ExternallyProvisioned) {
                    return Err(reject(format!(
                        "reboot applies to provisioned and externally provisioned hosts; this one is {state}"
                    )));
                }
                // A hard request wins over a pending soft one, as with BMO's annotations.
                let merged = match (self.host.spec.reboot, mode) {
                    (Some(RebootMode::Hard), _) | (_, RebootMode::Hard) => RebootMode::Hard,
                    _ => RebootMode::Soft,
                };
                self.host.spec.reboot = Some(merged);
                format!(
                    "reboot ({})",
                    if merged == RebootMode::Hard {
                        "hard"
                    } else {
                        "soft"
                    }
                )
            }
            Intent::Adopt { image } => {
                let idle = matches!(
                    self.host.status.activity,
                    Activity::Idle | Activity::Backoff { .. }
                );
                if !(matches!(state, State::Registering) || state == State::Available && idle) {
                    return Err(reject(format!(
                        "adoption applies to registering or idle available hosts; this one is {state}"
                    )));
                }
                let summary = match &image {
                    Some(image) => format!("adopt as provisioned with {}", image.url),
                    None => "adopt as externally provisioned".to_owned(),
                };
                self.host.spec.externally_provisioned = image.is_none();
                self.host.spec.image = image;
                self.host.spec.adopt_requested = true;
                summary
            }
            Intent::Detach(detach) => {
                if !detach.force && !state.is_stable() {
                    return Err(reject(format!(
                        "detach applies to available, provisioned and externally provisioned hosts \
                         (this one is {state}); force it to interrupt"
                    )));
                }
                self.host.spec.detached = Some(detach);
                "detach".to_owned()
            }
            Intent::Attach => {
                if self.host.spec.detached.is_none() {
                    return Err(reject("the host is not detached"));
                }
                self.host.spec.detached = None;
                "attach".to_owned()
            }
            Intent::Delete => {
                if self.host.spec.deleting {
                    return Ok(());
                }
                self.host.spec.deleting = true;
                "delete".to_owned()
            }
            Intent::CredentialsChanged => {
                self.host.spec.credentials_version =
                    self.host.spec.credentials_version.wrapping_add(1);
                self.host.status.registered = false;
                self.retry_now(Operation::Register);
                "new BMC credentials".to_owned()
            }
            Intent::SetBmc(bmc) => {
                let changeable = matches!(state, State::Unmanaged | State::Registering)
                    || self.host.status.detached;
                if self.host.spec.bmc.as_ref() != Some(&bmc) && !changeable {
                    return Err(reject(format!(
                        "the BMC address can change only while registering or detached; this host is {state}"
                    )));
                }
                let summary = format!("BMC address {}", bmc.address);
                self.host.spec.bmc = Some(bmc);
                self.host.status.registered = false;
                self.retry_now(Operation::Register);
                summary
            }
            Intent::Update(patch) => self.update(*patch)?,
        };
        self.record(TimelineEvent::Intent { summary });
        Ok(())
    }

    fn update(&mut self, patch: SettingsPatch) -> Result<String, Rejected> {
        let state = self.host.status.state;
        if let Some(external) = patch.externally_provisioned {
            let allowed = external == self.host.spec.externally_provisioned
                || match external {
                    true => matches!(
                        state,
                        State::Available | State::Registering | State::Unmanaged
                    ),
                    false => !matches!(state, State::Provisioning),
                };
            if !allowed {
                return Err(reject(format!(
                    "externallyProvisioned can be set only on available or registering hosts; this one is {state}"
                )));
            }
        }
        let mut changed = Vec::new();
        if let Some(hints) = patch.root_device_hints {
            self.host.spec.root_device_hints = hints;
            changed.push("root device hints");
        }
        if let Some(cleaning) = patch.cleaning {
            self.host.spec.cleaning = cleaning;
            changed.push("cleaning");
        }
        if let Some(description) = patch.description {
            self.host.spec.description = description;
            changed.push("description");
        }
        if let Some(external) = patch.externally_provisioned {
            self.host.spec.externally_provisioned = external;
            changed.push("externally provisioned");
        }
        if let Some(mode) = patch.inspection_mode {
            self.host.spec.inspection_mode = mode;
            changed.push("inspection mode");
        }
        if changed.is_empty() {
            changed.push("nothing");
        }
        Ok(format!("update {}", changed.join(", ")))
    }

    /// Lets a failed operation run again now rather than at the end of its back-off,
    /// because the request that made it fail has changed.
    fn retry_now(&mut self, operation: Operation) {
        if let Some(error) = &mut self.host.status.error
            && error.operation == operation
        {
            error.retry_at = self.now;
        }
        match &mut self.host.status.activity {
            Activity::Backoff {
                operation: waiting, ..
            } if *waiting == operation => {
                self.host.status.activity = Activity::Idle;
            }
            Activity::Running(progress) if progress.operation == operation => {
                if let StepPhase::Retrying { at } = &mut progress.phase {
                    *at = self.now;
                    self.out.actions.push(Action::WakeAt(self.now));
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- outside events

    fn step_finished(&mut self, token: u32, result: Result<StepOutput, StepFailure>) {
        let Activity::Running(progress) = &self.host.status.activity else {
            return;
        };
        if progress.token != token || progress.phase != StepPhase::InFlight {
            return; // The outcome of a dispatch this host no longer waits for.
        }
        let (operation, attempt, started) =
            (progress.operation, progress.attempt, progress.step_started);
        let Some(step) = progress.current_step() else {
            return;
        };
        let duration_ms = millis(self.now.since(started));
        match result {
            Ok(output) => {
                self.absorb(step, output);
                self.record(TimelineEvent::StepSucceeded {
                    operation,
                    step,
                    attempt,
                    duration_ms,
                });
                // A transient failure of this very step is over.
                if self
                    .host
                    .status
                    .error
                    .as_ref()
                    .is_some_and(|error| error.operation == operation && error.step == Some(step))
                {
                    self.host.status.error = None;
                }
                self.next_step();
            }
            Err(failure) => {
                self.record(TimelineEvent::StepFailed {
                    operation,
                    step,
                    attempt,
                    duration_ms,
                    error: failure.message.clone(),
                });
                self.step_failed(operation, step, failure);
            }
        }
    }

    fn timer(&mut self, boot: BootObservations) {
        match self.host.status.activity.clone() {
            Activity::Running(progress) => match progress.phase {
                StepPhase::AwaitingAgent { deadline } if self.now >= deadline => {
                    let waited = deadline.since(progress.step_started);
                    let message = agent_timeout_reason(
                        self.host.spec.boot_mac_address,
                        self.host.spec.boot_method(),
                        &boot,
                        waited,
                    );
                    self.record(TimelineEvent::StepFailed {
                        operation: progress.operation,
                        step: Step::AwaitAgent,
                        attempt: progress.attempt,
                        duration_ms: millis(waited),
                        error: message.clone(),
                    });
                    self.step_failed(
                        progress.operation,
                        Step::AwaitAgent,
                        StepFailure::new(FailureClass::Fatal, message),
                    );
                }
                StepPhase::Retrying { at } if self.now >= at => self.begin_step(),
                _ => {}
            },
            Activity::Backoff { until, .. } if self.now >= until => {
                self.host.status.activity = Activity::Idle;
            }
            _ => {}
        }
    }

    fn agent_connected(&mut self) {
        if !self.host.status.agent.connected {
            self.host.status.agent.connected = true;
            self.record(TimelineEvent::AgentConnected);
        }
        if let Activity::Running(progress) = &self.host.status.activity
            && matches!(progress.phase, StepPhase::AwaitingAgent { .. })
        {
            let (operation, attempt) = (progress.operation, progress.attempt);
            let duration_ms = millis(self.now.since(progress.step_started));
            self.record(TimelineEvent::StepSucceeded {
                operation,
                step: Step::AwaitAgent,
                attempt,
                duration_ms,
            });
            self.next_step();
        }
    }

    fn agent_disconnected(&mut self) {
        if self.host.status.agent.connected {
            self.host.status.agent.connected = false;
            self.record(TimelineEvent::AgentDisconnected);
        }
    }

    fn power_observed(&mut self, on: bool) {
        if self.host.status.powered_on != Some(on) {
            self.host.status.powered_on = Some(on);
            self.record(TimelineEvent::PowerObserved { on });
        }
        if !on && self.host.status.agent.connected {
            self.agent_disconnected();
        }
    }

    fn slot_granted(&mut self) {
        match self.host.status.activity.clone() {
            Activity::Delayed {
                operation,
                target,
                since,
            } => {
                if self.now > since {
                    self.record(TimelineEvent::SlotGranted {
                        waited_ms: millis(self.now.since(since)),
                    });
                }
                self.host.status.slot = true;
                self.host.status.activity = Activity::Idle;
                self.set_state(target);
                self.start(operation);
            }
            // Granted after the host stopped wanting it: give it straight back.
            _ if !self.host.status.slot => self.out.actions.push(Action::ReleaseSlot),
            _ => {}
        }
    }

    // ---------------------------------------------------------------- deciding

    /// Starts whatever the host should do next, until it is busy or has nothing to do.
    fn advance(&mut self) {
        // Each round either changes state, starts something or stops; the plan of any host
        // settles in a handful of rounds, and the bound keeps a logic error from spinning.
        for _ in 0..32 {
            if !self.advance_once() {
                return;
            }
        }
    }

    fn advance_once(&mut self) -> bool {
        match self.host.status.activity.clone() {
            Activity::Running(progress) => {
                // Waiting phases can be abandoned at once; an in-flight step is left to
                // finish, so that no two steps ever run on one host.
                if progress.phase != StepPhase::InFlight && !self.still_wanted(&progress) {
                    self.cancel(progress.operation);
                    return true;
                }
                return false;
            }
            Activity::Delayed {
                operation, target, ..
            } => {
                if self.desired() == Some(Desire::Enter(target, operation)) {
                    return false;
                }
                self.host.status.activity = Activity::Idle;
                self.out.actions.push(Action::ReleaseSlot);
                return true;
            }
            Activity::Backoff { operation, until } => {
                if self.now < until && self.desired() == Some(Desire::Run(operation)) {
                    return false;
                }
                self.host.status.activity = Activity::Idle;
                return true;
            }
            Activity::Idle => {}
        }
        let Some(desire) = self.desired() else {
            self.clear_withdrawn_error();
            return false;
        };
        match desire {
            Desire::Become(state) => self.set_state(state),
            Desire::Reattach => {
                self.host.status.detached = false;
                self.host.status.registered = false;
                self.host.status.adopted = false;
                self.record(TimelineEvent::Attached);
            }
            Desire::Run(operation) => {
                if self.backing_off(operation) {
                    return false;
                }
                self.start(operation);
            }
            Desire::Enter(state, operation) => {
                if self.backing_off(operation) {
                    return false;
                }
                let exempt = self.host.spec.boot_method() == Some(BootMethod::VirtualMedia);
                if state.needs_capacity() && !self.host.status.slot && !exempt {
                    self.host.status.activity = Activity::Delayed {
                        operation,
                        target: state,
                        since: self.now,
                    };
                    // Most requests are granted at once; only a real wait is worth a
                    // timeline entry, written when the slot comes (see `slot_granted`).
                    self.out.actions.push(Action::AcquireSlot);
                    return false;
                }
                self.set_state(state);
                self.start(operation);
            }
        }
        true
    }

    /// An idle host with nothing left to do no longer retries what failed (the request was
    /// withdrawn, say the image removed after a failed provisioning), so the failure is
    /// history: it stays in the timeline and leaves the status.
    fn clear_withdrawn_error(&mut self) {
        if self.host.status.detached {
            return; // Attaching again shows the error it had (BMO).
        }
        if let Some(error) = self.host.status.error.take() {
            self.host.status.error_count = 0;
            self.record(TimelineEvent::ErrorCleared {
                operation: error.operation,
            });
        }
    }

    /// Whether `operation` failed recently and must wait for its back-off to end.
    fn backing_off(&mut self, operation: Operation) -> bool {
        let Some(error) = &self.host.status.error else {
            return false;
        };
        if error.operation != operation || self.now >= error.retry_at {
            return false;
        }
        let until = error.retry_at;
        self.host.status.activity = Activity::Backoff { operation, until };
        self.wake_at(until);
        true
    }

    fn desired(&self) -> Option<Desire> {
        let (spec, status) = (&self.host.spec, &self.host.status);
        if spec.deleting {
            return self.deletion_desire();
        }
        if status.detached {
            return spec.detached.is_none().then_some(Desire::Reattach);
        }
        if spec.detached.is_some() {
            return Some(Desire::Run(Operation::Detach));
        }
        if status.state == State::Unmanaged {
            return spec
                .bmc
                .is_some()
                .then_some(Desire::Become(State::Registering));
        }
        if !status.registered {
            return Some(Desire::Run(Operation::Register));
        }
        let desire = match status.state {
            State::Unmanaged => return None,
            State::Registering => {
                if spec.adopt_requested {
                    Desire::Run(Operation::Adopt)
                } else if spec.externally_provisioned {
                    Desire::Become(State::ExternallyProvisioned)
                } else if spec.inspection_mode == InspectionMode::Disabled {
                    Desire::Become(State::Preparing)
                } else {
                    Desire::Enter(State::Inspecting, Operation::Inspect)
                }
            }
            // Entering a state it is already in takes the slot it may lack (after its BMC
            // address changed from virtual media while detached, say).
            State::Inspecting => Desire::Enter(State::Inspecting, Operation::Inspect),
            State::Preparing => Desire::Run(Operation::Prepare),
            State::Available => {
                if spec.adopt_requested {
                    Desire::Run(Operation::Adopt)
                } else if spec.externally_provisioned {
                    Desire::Become(State::ExternallyProvisioned)
                } else if spec.inspect_requested {
                    Desire::Enter(State::Inspecting, Operation::Inspect)
                } else if self.wants_provisioning() {
                    Desire::Enter(State::Provisioning, Operation::Provision)
                } else {
                    return self.power_desire();
                }
            }
            State::Provisioning => {
                if spec.image.is_some() && status.image.is_none() {
                    Desire::Enter(State::Provisioning, Operation::Provision)
                } else {
                    Desire::Become(State::Deprovisioning)
                }
            }
            State::Provisioned => {
                let wanted = spec.image.as_ref().map(|image| image.url.as_str());
                let written = status.image.as_ref().map(|image| image.url.as_str());
                if written.is_none() || wanted != written {
                    Desire::Enter(State::Deprovisioning, Operation::Deprovision)
                } else if !status.adopted {
                    Desire::Run(Operation::Adopt)
                } else if spec.reboot.is_some() {
                    Desire::Run(Operation::Reboot)
                } else {
                    return self.power_desire();
                }
            }
            State::ExternallyProvisioned => {
                if !spec.externally_provisioned {
                    // BMO main: the spec's image is taken as what is on the disk.
                    Desire::Become(State::Provisioned)
                } else if !status.adopted {
                    Desire::Run(Operation::Adopt)
                } else if spec.reboot.is_some() {
                    Desire::Run(Operation::Reboot)
                } else {
                    return self.power_desire();
                }
            }
            State::Deprovisioning => Desire::Enter(State::Deprovisioning, Operation::Deprovision),
            State::PoweringOffBeforeDelete => Desire::Run(Operation::PowerOffBeforeDelete),
            State::Deleting => Desire::Run(Operation::Delete),
        };
        Some(desire)
    }

    /// BMO's deletion entry (`metal3-api` §1.8).
    fn deletion_desire(&self) -> Option<Desire> {
        let status = &self.host.status;
        let desire = match status.state {
            State::Deleting => Desire::Run(Operation::Delete),
            // A detach that was asked for is finished first; then its delete action rules,
            // and a detached host is neither cleaned nor powered off.
            _ if self.host.spec.detached.is_some() && !status.detached => {
                Desire::Run(Operation::Detach)
            }
            _ if status.detached => match self.host.spec.detached {
                Some(DetachSpec {
                    delete_action: super::host::DeleteAction::Delay,
                    ..
                }) => return None,
                _ => Desire::Become(State::Deleting),
            },
            State::PoweringOffBeforeDelete => Desire::Run(Operation::PowerOffBeforeDelete),
            State::Deprovisioning => Desire::Enter(State::Deprovisioning, Operation::Deprovision),
            State::Unmanaged | State::Registering => Desire::Become(State::Deleting),
            State::Provisioning | State::Provisioned => {
                Desire::Enter(State::Deprovisioning, Operation::Deprovision)
            }
            _ => Desire::Become(State::PoweringOffBeforeDelete),
        };
        Some(desire)
    }

    fn power_desire(&self) -> Option<Desire> {
        match (self.host.spec.online, self.host.status.powered_on) {
            (true, Some(false)) => Some(Desire::Run(Operation::PowerOn)),
            (false, Some(true)) => Some(Desire::Run(Operation::PowerOff)),
            _ => None,
        }
    }

    fn wants_provisioning(&self) -> bool {
        let spec = &self.host.spec;
        spec.online && spec.image.is_some() && self.host.status.image.is_none()
    }

    /// Whether the running operation should go on at its next step boundary.
    fn still_wanted(&self, progress: &Progress) -> bool {
        let spec = &self.host.spec;
        let interrupted = spec.deleting || spec.detached.is_some();
        match progress.operation {
            Operation::Provision => {
                !interrupted
                    && spec.image.as_ref().map(|image| &image.url) == progress.target_image.as_ref()
            }
            Operation::Register
            | Operation::Inspect
            | Operation::Prepare
            | Operation::Adopt
            | Operation::PowerOn
            | Operation::PowerOff
            | Operation::Reboot => !interrupted,
            Operation::Deprovision
            | Operation::PowerOffBeforeDelete
            | Operation::Delete
            | Operation::Detach => true,
        }
    }

    // ---------------------------------------------------------------- running

    fn start(&mut self, operation: Operation) {
        let steps = plan(operation, self.host, self.policy);
        match operation {
            Operation::Reboot => self.host.spec.reboot = None,
            Operation::Inspect => self.host.spec.inspect_requested = false,
            _ => {}
        }
        if let Some(metric) = self.host.status.operation_history.metric_mut(operation) {
            metric.start = Some(self.now);
            metric.end = None;
        }
        self.record(TimelineEvent::OperationStarted {
            operation,
            steps: steps.clone(),
        });
        if steps.is_empty() {
            self.complete(operation, self.now);
            return;
        }
        let target_image = (operation == Operation::Provision)
            .then(|| self.host.spec.image.as_ref().map(|image| image.url.clone()))
            .flatten();
        self.host.status.activity = Activity::Running(Progress {
            operation,
            steps,
            index: 0,
            attempt: 0,
            started: self.now,
            step_started: self.now,
            token: 0,
            phase: StepPhase::InFlight,
            target_image,
        });
        self.begin_step();
    }

    /// Dispatches the current step, or starts waiting when it is the agent wait.
    fn begin_step(&mut self) {
        let connected = self.host.status.agent.connected;
        let next_token = self.host.status.dispatches.wrapping_add(1);
        let timeout = self.policy.agent_timeout;
        let now = self.now;
        let Activity::Running(progress) = &mut self.host.status.activity else {
            return;
        };
        let Some(step) = progress.current_step() else {
            return;
        };
        progress.step_started = now;
        if step == Step::AwaitAgent {
            if connected {
                let (operation, attempt) = (progress.operation, progress.attempt);
                self.record(TimelineEvent::StepSucceeded {
                    operation,
                    step,
                    attempt,
                    duration_ms: 0,
                });
                self.next_step();
                return;
            }
            let deadline = now.plus(timeout);
            progress.phase = StepPhase::AwaitingAgent { deadline };
            self.wake_at(deadline);
            let reason = WaitReason::Agent {
                mac: self.host.spec.boot_mac_address,
                method: self.host.spec.boot_method(),
                deadline,
            };
            self.record(TimelineEvent::Waiting {
                reason: reason.to_string(),
            });
            return;
        }
        progress.phase = StepPhase::InFlight;
        progress.token = next_token;
        self.host.status.dispatches = next_token;
        self.out.actions.push(Action::RunStep {
            token: next_token,
            step,
        });
    }

    /// Moves past the current step: to the next one, or to the operation's end.
    fn next_step(&mut self) {
        let Activity::Running(progress) = &mut self.host.status.activity else {
            return;
        };
        progress.index += 1;
        progress.attempt = 0;
        progress.phase = StepPhase::InFlight;
        let progress = progress.clone();
        if !self.still_wanted(&progress) {
            self.cancel(progress.operation);
            return;
        }
        if progress.index >= progress.steps.len() {
            self.complete(progress.operation, progress.started);
            return;
        }
        self.begin_step();
    }

    fn absorb(&mut self, step: Step, output: StepOutput) {
        let status = &mut self.host.status;
        match step {
            Step::PowerOn => status.powered_on = Some(true),
            Step::PowerOffSoft | Step::PowerOffHard => {
                status.powered_on = Some(false);
                status.agent.connected = false;
            }
            Step::ReleaseBoot => status.agent = Default::default(),
            _ => {}
        }
        match output {
            StepOutput::Nothing => {}
            StepOutput::Power { on } => status.powered_on = Some(on),
            StepOutput::AgentToken { sha256 } => {
                status.agent.token_sha256 = Some(sha256);
                status.agent.connected = false;
            }
            StepOutput::Hardware(hardware) => {
                status.has_hardware = true;
                if status.architecture.is_none() {
                    status.architecture = hardware.cpu.as_ref().and_then(|cpu| cpu.arch.clone());
                }
                self.out.actions.push(Action::StoreHardware(hardware));
            }
        }
    }

    fn step_failed(&mut self, operation: Operation, step: Step, failure: StepFailure) {
        let uses_booted_agent = self
            .host
            .progress()
            .is_some_and(|progress| progress.steps.contains(&Step::ConfigureAgentBoot));
        match failure.class {
            FailureClass::AgentGone if !uses_booted_agent => {
                // The fast-track agent went away: boot it again, which is not an error.
                self.host.status.agent.connected = false;
                self.host.status.activity = Activity::Idle;
                self.start(operation);
            }
            FailureClass::Transient => {
                let kind = self.error_type(operation);
                let retry_at = self.record_error(kind, failure.message, operation, Some(step));
                if self.give_up_on_cleanup() {
                    self.fail_operation(operation);
                    return;
                }
                if let Activity::Running(progress) = &mut self.host.status.activity {
                    progress.phase = StepPhase::Retrying { at: retry_at };
                    progress.attempt = progress.attempt.saturating_add(1);
                }
                self.wake_at(retry_at);
            }
            FailureClass::Credentials => {
                let kind = if matches!(
                    self.host.status.state,
                    State::Provisioned | State::ExternallyProvisioned
                ) {
                    ErrorType::ProvisionedRegistration
                } else {
                    ErrorType::Registration
                };
                self.host.status.registered = false;
                self.record_error(kind, failure.message, Operation::Register, Some(step));
                self.fail_operation(operation);
            }
            FailureClass::Fatal | FailureClass::AgentGone => {
                let kind = self.error_type(operation);
                self.record_error(kind, failure.message, operation, Some(step));
                self.fail_operation(operation);
            }
        }
    }

    /// Ends a failed operation: provisioning cleans up at once; a deletion that keeps
    /// failing moves on; everything else waits for its back-off and runs again.
    fn fail_operation(&mut self, operation: Operation) {
        let Some(error) = self.host.status.error.clone() else {
            return;
        };
        self.record(TimelineEvent::OperationFailed {
            operation,
            error_type: error.kind,
            message: error.message.clone(),
            retry_at: error.retry_at,
        });
        self.host.status.activity = Activity::Idle;
        if self.give_up_on_cleanup() {
            match self.host.status.state {
                State::Deprovisioning => self.set_state(State::PoweringOffBeforeDelete),
                State::PoweringOffBeforeDelete => self.set_state(State::Deleting),
                _ => {}
            }
            return;
        }
        if operation == Operation::Provision && error.operation == Operation::Provision {
            self.set_state(State::Deprovisioning);
            return;
        }
        self.host.status.activity = Activity::Backoff {
            operation: error.operation,
            until: error.retry_at,
        };
        self.wake_at(error.retry_at);
    }

    /// BMO abandons deprovisioning and power-off during deletion after a few failures.
    fn give_up_on_cleanup(&self) -> bool {
        self.host.spec.deleting
            && matches!(
                self.host.status.state,
                State::Deprovisioning | State::PoweringOffBeforeDelete
            )
            && self.host.status.error_count > self.policy.delete_retry_limit
    }

    fn error_type(&self, operation: Operation) -> ErrorType {
        match operation {
            Operation::Register
                if matches!(
                    self.host.status.state,
                    State::Provisioned | State::ExternallyProvisioned
                ) =>
            {
                ErrorType::ProvisionedRegistration
            }
            Operation::Register => ErrorType::Registration,
            Operation::Adopt => ErrorType::ProvisionedRegistration,
            Operation::Inspect => ErrorType::Inspection,
            Operation::Prepare => ErrorType::Preparation,
            Operation::Provision | Operation::Deprovision => ErrorType::Provisioning,
            Operation::PowerOn
            | Operation::PowerOff
            | Operation::Reboot
            | Operation::PowerOffBeforeDelete => ErrorType::PowerManagement,
            Operation::Detach | Operation::Delete => ErrorType::Detach,
        }
    }

    /// Records a failure and returns when to retry.
    fn record_error(
        &mut self,
        kind: ErrorType,
        message: String,
        operation: Operation,
        step: Option<Step>,
    ) -> Timestamp {
        let status = &mut self.host.status;
        status.error_count = status.error_count.saturating_add(1);
        let delay = self
            .policy
            .backoff
            .delay(status.error_count, self.host.id.as_u128());
        let retry_at = self.now.plus(delay);
        status.error = Some(HostError {
            kind,
            message,
            operation,
            step,
            at: self.now,
            retry_at,
        });
        retry_at
    }

    fn complete(&mut self, operation: Operation, started: Timestamp) {
        self.host.status.activity = Activity::Idle;
        self.record(TimelineEvent::OperationSucceeded {
            operation,
            duration_ms: millis(self.now.since(started)),
        });
        if let Some(metric) = self.host.status.operation_history.metric_mut(operation) {
            metric.end = Some(self.now);
        }
        // A phase that succeeds clears its own failure and the back-off count.
        if self
            .host
            .status
            .error
            .as_ref()
            .is_some_and(|error| error.operation == operation)
        {
            self.host.status.error = None;
            self.host.status.error_count = 0;
        } else if self.host.status.error.is_none() {
            self.host.status.error_count = 0;
        }
        match operation {
            Operation::Register => self.host.status.registered = true,
            Operation::Inspect => self.set_state(State::Preparing),
            Operation::Prepare => self.set_state(State::Available),
            Operation::Provision => {
                self.host.status.image = self.host.spec.image.clone();
                self.host.status.adopted = true;
                self.set_state(State::Provisioned);
            }
            Operation::Deprovision => {
                self.host.status.image = None;
                if self.host.spec.deleting {
                    self.set_state(State::PoweringOffBeforeDelete);
                } else {
                    self.set_state(State::Available);
                }
            }
            Operation::Adopt => {
                self.host.status.adopted = true;
                if self.host.spec.adopt_requested {
                    self.host.spec.adopt_requested = false;
                    if self.host.spec.externally_provisioned {
                        self.set_state(State::ExternallyProvisioned);
                    } else {
                        self.host.status.image = self.host.spec.image.clone();
                        self.set_state(State::Provisioned);
                    }
                }
            }
            Operation::PowerOffBeforeDelete => self.set_state(State::Deleting),
            Operation::Delete => self.out.actions.push(Action::Forget),
            Operation::Detach => {
                self.host.status.detached = true;
                self.record(TimelineEvent::Detached);
            }
            Operation::PowerOn | Operation::PowerOff | Operation::Reboot => {}
        }
    }

    fn cancel(&mut self, operation: Operation) {
        let reason = if self.host.spec.deleting {
            "the host is being deleted"
        } else if self.host.spec.detached.is_some() {
            "the host is being detached"
        } else {
            "the request changed"
        };
        self.host.status.activity = Activity::Idle;
        self.record(TimelineEvent::OperationCancelled {
            operation,
            reason: reason.to_owned(),
        });
    }

    fn set_state(&mut self, state: State) {
        let from = self.host.status.state;
        if from == state {
            return;
        }
        if self.host.status.slot && !state.needs_capacity() {
            self.host.status.slot = false;
            self.out.actions.push(Action::ReleaseSlot);
        }
        // Pending one-shot requests belong to the state they were made in.
        if !matches!(state, State::Provisioned | State::ExternallyProvisioned) {
            self.host.spec.reboot = None;
        }
        if state != State::Inspecting {
            self.host.spec.inspect_requested = false;
        }
        if state == State::Provisioned && from == State::ExternallyProvisioned {
            self.host.status.image = self.host.spec.image.clone();
        }
        self.host.status.state = state;
        self.record(TimelineEvent::StateChanged { from, to: state });
    }

    // ---------------------------------------------------------------- output

    fn wake_at(&mut self, at: Timestamp) {
        self.out.actions.push(Action::WakeAt(at));
    }

    fn record(&mut self, event: TimelineEvent) {
        self.host.status.timeline_seq += 1;
        self.out.timeline.push(TimelineEntry {
            seq: self.host.status.timeline_seq,
            at: self.now,
            event,
        });
    }

    fn finish(self, before: &Host) -> Output {
        let status = &mut self.host.status;
        status.operational_status = if status.detached {
            OperationalStatus::Detached
        } else if matches!(status.activity, Activity::Delayed { .. }) {
            OperationalStatus::Delayed
        } else if status.error.is_some() {
            OperationalStatus::Error
        } else if status.state == State::Unmanaged {
            OperationalStatus::Discovered
        } else {
            OperationalStatus::Ok
        };
        let mut out = self.out;
        out.changed = *self.host != *before;
        if out.changed {
            self.host.status.last_updated = self.now;
        }
        out
    }
}

fn reject(reason: impl Into<String>) -> Rejected {
    Rejected(reason.into())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
