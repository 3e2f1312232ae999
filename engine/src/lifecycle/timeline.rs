//! The per-host timeline: every state change, operation and step with its duration, and —
//! when a host waits or fails — a reason a person can act on.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::address::BootMethod;
use super::host::{Activity, Host, StepPhase};
use super::ids::MacAddr;
use super::state::{ErrorType, ProvisioningState};
use super::steps::{Operation, Step};
use super::time::Timestamp;

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// Per host, increasing from 1.
    pub seq: u64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: TimelineEvent,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum TimelineEvent {
    Enrolled,
    /// A request was accepted.
    Intent {
        summary: String,
    },
    StateChanged {
        from: ProvisioningState,
        to: ProvisioningState,
    },
    #[serde(rename_all = "camelCase")]
    OperationStarted {
        operation: Operation,
        steps: Vec<Step>,
    },
    #[serde(rename_all = "camelCase")]
    StepSucceeded {
        operation: Operation,
        step: Step,
        attempt: u16,
        duration_ms: u64,
    },
    #[serde(rename_all = "camelCase")]
    StepFailed {
        operation: Operation,
        step: Step,
        attempt: u16,
        duration_ms: u64,
        error: String,
    },
    /// The host waits; `reason` says for what.
    Waiting {
        reason: String,
    },
    /// A provisioning slot came after waiting for it.
    #[serde(rename_all = "camelCase")]
    SlotGranted {
        waited_ms: u64,
    },
    #[serde(rename_all = "camelCase")]
    OperationSucceeded {
        operation: Operation,
        duration_ms: u64,
    },
    #[serde(rename_all = "camelCase")]
    OperationFailed {
        operation: Operation,
        error_type: ErrorType,
        message: String,
        retry_at: Timestamp,
    },
    OperationCancelled {
        operation: Operation,
        reason: String,
    },
    /// The failed `operation` is no longer wanted, so its error no longer applies.
    ErrorCleared {
        operation: Operation,
    },
    /// The engine restarted and picked the operation up again at `step`.
    Resumed {
        operation: Operation,
        step: Step,
    },
    PowerObserved {
        on: bool,
    },
    AgentConnected,
    AgentDisconnected,
    Detached,
    Attached,
}

/// Why a host is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// No provisioning slot is free.
    Capacity { operation: Operation },
    /// The agent has not connected yet.
    Agent {
        mac: Option<MacAddr>,
        method: Option<BootMethod>,
        deadline: Timestamp,
    },
    /// A failed step or operation is retried later.
    Backoff {
        operation: Operation,
        until: Timestamp,
    },
    /// A step is being executed.
    Step { step: Step, since: Timestamp },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Capacity { operation } => write!(
                f,
                "waiting for a free provisioning slot to start {operation} (the capacity limit is reached)"
            ),
            Self::Agent {
                mac,
                method,
                deadline,
            } => {
                let after = match method {
                    Some(BootMethod::VirtualMedia) => "booting the agent ISO from virtual media",
                    Some(BootMethod::UefiHttp) => "UEFI HTTP boot",
                    Some(BootMethod::NetworkBoot) | None => "network boot",
                };
                match mac {
                    Some(mac) => write!(
                        f,
                        "waiting for the agent on {mac} to call back after {after}"
                    ),
                    None => write!(f, "waiting for the agent to call back after {after}"),
                }?;
                write!(f, " (gives up at {deadline})")
            }
            Self::Backoff { operation, until } => {
                write!(f, "{operation} failed; retrying at {until}")
            }
            Self::Step { step, since } => write!(f, "{step} (since {since})"),
        }
    }
}

/// Why the host is waiting now, if it is.
pub fn wait_reason(host: &Host) -> Option<WaitReason> {
    match &host.status.activity {
        Activity::Idle => None,
        Activity::Delayed { operation, .. } => Some(WaitReason::Capacity {
            operation: *operation,
        }),
        Activity::Backoff { operation, until } => Some(WaitReason::Backoff {
            operation: *operation,
            until: *until,
        }),
        Activity::Running(progress) => match progress.phase {
            StepPhase::AwaitingAgent { deadline } => Some(WaitReason::Agent {
                mac: host.spec.boot_mac_address,
                method: host.spec.boot_method(),
                deadline,
            }),
            StepPhase::Retrying { at } => Some(WaitReason::Backoff {
                operation: progress.operation,
                until: at,
            }),
            StepPhase::InFlight => progress.current_step().map(|step| WaitReason::Step {
                step,
                since: progress.step_started,
            }),
        },
    }
}

/// What the boot services saw from a host, used to say why an agent never called back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootObservations {
    /// Last DHCP request (network boot) or HTTP boot request (UEFI HTTP) from the boot MAC.
    pub dhcp: Option<Timestamp>,
    /// Last fetch of the agent (iPXE script, kernel or initramfs, or the agent ISO).
    pub agent_fetched: Option<Timestamp>,
}

/// The reason an agent wait ran out, naming the last thing that did happen.
pub fn agent_timeout_reason(
    mac: Option<MacAddr>,
    method: Option<BootMethod>,
    seen: BootObservations,
    waited: Duration,
) -> String {
    let who = mac.map_or_else(|| "the host".to_owned(), |mac| mac.to_string());
    let waited = format_duration(waited);
    let detail = match (method, seen.dhcp, seen.agent_fetched) {
        (Some(BootMethod::VirtualMedia), _, None) => {
            "the BMC never fetched the agent ISO (check that the BMC can reach the engine's HTTP address)".to_owned()
        }
        (Some(BootMethod::VirtualMedia), _, Some(at)) => format!(
            "the BMC fetched the agent ISO at {at} but the agent never connected (check the console: \
             did the host boot the virtual CD?)"
        ),
        (_, None, None) => format!(
            "no DHCP request seen from {who} (check the provisioning network, the boot MAC and \
             that the firmware tries network boot)"
        ),
        (_, Some(at), None) => format!(
            "{who} sent a DHCP request at {at} but never fetched the agent (check TFTP/HTTP \
             reachability from the host)"
        ),
        (_, _, Some(at)) => format!(
            "{who} fetched the agent at {at} but the agent never connected to the engine (check \
             that the host can reach the engine's URL and that the agent trusts its certificate)"
        ),
    };
    let after = match method {
        Some(BootMethod::VirtualMedia) => "booting from virtual media",
        Some(BootMethod::UefiHttp) => "UEFI HTTP boot",
        Some(BootMethod::NetworkBoot) | None => "network boot",
    };
    format!("agent never called back after {after} (waited {waited}): {detail}")
}

/// `1h 2m 3s`, `4m 5s`, `6s`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    if total == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (hours, minutes, seconds) = (total / 3600, total % 3600 / 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m {seconds}s"),
        _ => format!("{hours}h {minutes}m {seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Option<MacAddr> {
        "52:54:00:00:00:07".parse().ok()
    }

    #[test]
    fn agent_timeouts_name_the_last_thing_seen() {
        let waited = Duration::from_secs(1800);
        let nothing = agent_timeout_reason(
            mac(),
            Some(BootMethod::NetworkBoot),
            BootObservations::default(),
            waited,
        );
        assert_eq!(
            nothing,
            "agent never called back after network boot (waited 30m 0s): no DHCP request seen from \
             52:54:00:00:00:07 (check the provisioning network, the boot MAC and that the firmware \
             tries network boot)"
        );
        let dhcp = BootObservations {
            dhcp: Some(Timestamp::from_millis(0)),
            agent_fetched: None,
        };
        let reason = agent_timeout_reason(mac(), Some(BootMethod::NetworkBoot), dhcp, waited);
        assert!(
            reason.contains("sent a DHCP request at 1970-01-01T00:00:00.000Z but never fetched"),
            "{reason}"
        );
        let fetched = BootObservations {
            dhcp: None,
            agent_fetched: Some(Timestamp::from_millis(5)),
        };
        let reason = agent_timeout_reason(mac(), Some(BootMethod::UefiHttp), fetched, waited);
        assert!(
            reason.starts_with("agent never called back after UEFI HTTP boot"),
            "{reason}"
        );
        assert!(reason.contains("never connected to the engine"), "{reason}");
        let reason = agent_timeout_reason(
            None,
            Some(BootMethod::VirtualMedia),
            BootObservations::default(),
            waited,
        );
        assert!(
            reason.contains("the BMC never fetched the agent ISO"),
            "{reason}"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(6)), "6s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m 5s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h 2m 3s");
    }

    #[test]
    fn entries_serialise_flat_with_a_type_tag() {
        let entry = TimelineEntry {
            seq: 3,
            at: Timestamp::from_millis(0),
            event: TimelineEvent::StepSucceeded {
                operation: Operation::Provision,
                step: Step::Deploy,
                attempt: 0,
                duration_ms: 1500,
            },
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 3, "at": "1970-01-01T00:00:00.000Z", "type": "stepSucceeded",
                "operation": "provision", "step": "deploy", "attempt": 0, "durationMs": 1500})
        );
        let back: TimelineEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry);
    }
}
