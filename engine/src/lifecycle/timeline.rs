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
///
/// Each field is the last time that step happened; together they say how far the host got:
/// DHCP request → answer → iPXE loaded → its script fetched → the agent fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootObservations {
    /// Last DHCP request (network boot) or HTTP boot request (UEFI HTTP) from the boot MAC.
    pub dhcp: Option<Timestamp>,
    /// Last DHCP answer Rivet gave the boot MAC. `None` also when the boot services cannot
    /// tell (another DHCP server).
    pub dhcp_answered: Option<DhcpAnswered>,
    /// Why Rivet stayed silent to the boot MAC's last unanswered DHCP request ("unknown
    /// host", "the pool is exhausted", …).
    pub dhcp_silence: Option<String>,
    /// Last time the host loaded iPXE from Rivet (over TFTP, or HTTP for UEFI HTTP boot).
    pub ipxe_fetched: Option<Timestamp>,
    /// Why the host's last request for iPXE was refused ("TFTP read of undionly.kpxe
    /// refused: file not found"), if one was.
    pub ipxe_refused: Option<String>,
    /// Last fetch of the host's own iPXE script.
    pub script_fetched: Option<Timestamp>,
    /// Last fetch of the agent (kernel or initramfs, or the agent ISO).
    pub agent_fetched: Option<Timestamp>,
}

/// A DHCP answer Rivet gave, and what it told the host to load next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpAnswered {
    pub at: Timestamp,
    /// `None`: an address only (the host did not ask as a network-boot client).
    pub next: Option<NextLoad>,
}

/// What a DHCP answer told a host to load next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextLoad {
    IpxeOverTftp,
    IpxeOverHttp,
    /// Its iPXE script (the host already runs iPXE).
    Script,
}

/// The reason an agent wait ran out, naming the furthest step the host was seen to reach.
pub fn agent_timeout_reason(
    mac: Option<MacAddr>,
    method: Option<BootMethod>,
    seen: &BootObservations,
    waited: Duration,
) -> String {
    let who = mac.map_or_else(|| "the host".to_owned(), |mac| mac.to_string());
    let waited = format_duration(waited);
    let detail = if method == Some(BootMethod::VirtualMedia) {
        match seen.agent_fetched {
            None => "the BMC never fetched the agent ISO (check that the BMC can reach the engine's HTTP address)".to_owned(),
            Some(at) => format!(
                "the BMC fetched the agent ISO at {at} but the agent never connected (check the \
                 console: did the host boot the virtual CD?)"
            ),
        }
    } else {
        network_boot_detail(&who, seen)
    };
    let after = match method {
        Some(BootMethod::VirtualMedia) => "booting from virtual media",
        Some(BootMethod::UefiHttp) => "UEFI HTTP boot",
        Some(BootMethod::NetworkBoot) | None => "network boot",
    };
    format!("agent never called back after {after} (waited {waited}): {detail}")
}

/// The furthest network-boot step seen, and what to check next.
fn network_boot_detail(who: &str, seen: &BootObservations) -> String {
    if let Some(at) = seen.agent_fetched {
        return format!(
            "{who} fetched the agent at {at} but the agent never connected to the engine (check \
             that the host can reach the engine's URL and that the agent trusts its certificate)"
        );
    }
    if let Some(at) = seen.script_fetched {
        return format!(
            "{who} fetched its iPXE script at {at} but the agent never connected (check the \
             console: did iPXE download and boot the agent kernel and initramfs, and can the \
             host reach the engine's URL?)"
        );
    }
    if let Some(at) = seen.ipxe_fetched {
        return format!(
            "{who} loaded iPXE at {at} but iPXE never fetched the host's script (check that \
             iPXE gets an address and can reach the boot HTTP server)"
        );
    }
    if let Some(DhcpAnswered { at, next }) = seen.dhcp_answered {
        return match next {
            Some(NextLoad::IpxeOverTftp | NextLoad::IpxeOverHttp)
                if let Some(why) = &seen.ipxe_refused =>
            {
                format!(
                    "Rivet answered {who}'s DHCP request at {at} with iPXE, but the {why} (check \
                     that the iPXE builds are in the boot services' ipxe_root)"
                )
            }
            Some(NextLoad::IpxeOverTftp) => format!(
                "Rivet answered {who}'s DHCP request at {at} with an address and iPXE over TFTP, \
                 but the host never fetched iPXE (check that UDP port 69 of the boot server is \
                 reachable from the host)"
            ),
            Some(NextLoad::IpxeOverHttp) => format!(
                "Rivet answered {who}'s DHCP request at {at} with iPXE over HTTP, but the host \
                 never fetched it (check that the boot HTTP server is reachable from the host)"
            ),
            Some(NextLoad::Script) => format!(
                "Rivet answered {who}'s DHCP request at {at} with its iPXE script's URL, but \
                 the host never fetched the script (check that the boot HTTP server is reachable \
                 from the host)"
            ),
            None => format!(
                "Rivet gave {who} an address at {at} but nothing to boot: the request was not \
                 a PXE or HTTP boot client's (check that the firmware network-boots from this \
                 NIC, and that Rivet has an iPXE build for its architecture)"
            ),
        };
    }
    match (seen.dhcp, &seen.dhcp_silence) {
        (Some(at), Some(why)) => format!(
            "{who} sent a DHCP request at {at} but Rivet stayed silent: {why} (check the boot \
             MAC address and the DHCP settings)"
        ),
        (Some(at), None) => format!(
            "{who} sent a DHCP request at {at} but never fetched the agent (check TFTP/HTTP \
             reachability from the host)"
        ),
        (None, _) => format!(
            "no DHCP request seen from {who} (check the provisioning network, the boot MAC and \
             that the firmware tries network boot)"
        ),
    }
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
            &BootObservations::default(),
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
            ..BootObservations::default()
        };
        let reason = agent_timeout_reason(mac(), Some(BootMethod::NetworkBoot), &dhcp, waited);
        assert!(
            reason.contains("sent a DHCP request at 1970-01-01T00:00:00.000Z but never fetched"),
            "{reason}"
        );
        let fetched = BootObservations {
            agent_fetched: Some(Timestamp::from_millis(5)),
            ..BootObservations::default()
        };
        let reason = agent_timeout_reason(mac(), Some(BootMethod::UefiHttp), &fetched, waited);
        assert!(
            reason.starts_with("agent never called back after UEFI HTTP boot"),
            "{reason}"
        );
        assert!(reason.contains("never connected to the engine"), "{reason}");
        let reason = agent_timeout_reason(
            None,
            Some(BootMethod::VirtualMedia),
            &BootObservations::default(),
            waited,
        );
        assert!(
            reason.contains("the BMC never fetched the agent ISO"),
            "{reason}"
        );
        let iso = agent_timeout_reason(None, Some(BootMethod::VirtualMedia), &fetched, waited);
        assert!(iso.contains("the BMC fetched the agent ISO at"), "{iso}");
    }

    /// The reason for a network boot that got as far as `seen`.
    fn network_reason(seen: &BootObservations) -> String {
        agent_timeout_reason(
            mac(),
            Some(BootMethod::NetworkBoot),
            seen,
            Duration::from_secs(600),
        )
    }

    fn at(millis: u64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(millis))
    }

    #[test]
    fn a_silent_dhcp_server_says_why() {
        let seen = BootObservations {
            dhcp: at(1000),
            dhcp_silence: Some("unknown host".into()),
            ..BootObservations::default()
        };
        assert_eq!(
            network_reason(&seen),
            "agent never called back after network boot (waited 10m 0s): 52:54:00:00:00:07 sent \
             a DHCP request at 1970-01-01T00:00:01.000Z but Rivet stayed silent: unknown host \
             (check the boot MAC address and the DHCP settings)"
        );
    }

    #[test]
    fn an_answer_names_what_the_host_was_told_to_load_next() {
        let answered = |next| BootObservations {
            dhcp: at(2000),
            dhcp_answered: Some(DhcpAnswered {
                at: Timestamp::from_millis(2000),
                next,
            }),
            // A later unanswered REQUEST (ProxyDHCP leaves those to the other server) does
            // not hide the answer.
            dhcp_silence: Some("ProxyDHCP answers only DISCOVER on port 67".into()),
            ..BootObservations::default()
        };
        let tftp = network_reason(&answered(Some(NextLoad::IpxeOverTftp)));
        assert!(
            tftp.contains(
                "Rivet answered 52:54:00:00:00:07's DHCP request at 1970-01-01T00:00:02.000Z \
                 with an address and iPXE over TFTP, but the host never fetched iPXE"
            ),
            "{tftp}"
        );
        let http = network_reason(&answered(Some(NextLoad::IpxeOverHttp)));
        assert!(
            http.contains("with iPXE over HTTP, but the host never fetched it"),
            "{http}"
        );
        let script = network_reason(&answered(Some(NextLoad::Script)));
        assert!(
            script.contains("with its iPXE script's URL, but the host never fetched the script"),
            "{script}"
        );
        let refused = network_reason(&BootObservations {
            ipxe_refused: Some("TFTP read of undionly.kpxe was refused: file not found".into()),
            ..answered(Some(NextLoad::IpxeOverTftp))
        });
        assert!(
            refused.contains(
                "with iPXE, but the TFTP read of undionly.kpxe was refused: file not found (check \
                 that the iPXE builds are in the boot services' ipxe_root)"
            ),
            "{refused}"
        );
        let address = network_reason(&answered(None));
        assert!(
            address.contains(
                "gave 52:54:00:00:00:07 an address at 1970-01-01T00:00:02.000Z but nothing to boot"
            ),
            "{address}"
        );
    }

    #[test]
    fn the_furthest_step_seen_wins() {
        let mut seen = BootObservations {
            dhcp: at(1000),
            dhcp_answered: Some(DhcpAnswered {
                at: Timestamp::from_millis(1000),
                next: Some(NextLoad::IpxeOverTftp),
            }),
            ipxe_fetched: at(3000),
            ..BootObservations::default()
        };
        let ipxe = network_reason(&seen);
        assert!(
            ipxe.contains(
                "52:54:00:00:00:07 loaded iPXE at 1970-01-01T00:00:03.000Z but iPXE never \
                 fetched the host's script"
            ),
            "{ipxe}"
        );
        seen.script_fetched = at(4000);
        let script = network_reason(&seen);
        assert!(
            script.contains(
                "fetched its iPXE script at 1970-01-01T00:00:04.000Z but the agent never connected"
            ),
            "{script}"
        );
        seen.agent_fetched = at(5000);
        let agent = network_reason(&seen);
        assert!(
            agent.contains(
                "fetched the agent at 1970-01-01T00:00:05.000Z but the agent never connected to \
                 the engine"
            ),
            "{agent}"
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
