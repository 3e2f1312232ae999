//! What the boot services saw of each MAC, kept from `rivet-pxe`'s observations for
//! [`BootService::observations`](crate::drivers::BootService::observations).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rivet_pxe::dhcp::Silence;
use rivet_pxe::observe::{BootOffered, DhcpAnswer, HttpFetch, TftpOutcome};
use rivet_pxe::{BootObserver, Observation, ObservationKind};

use crate::lifecycle::{BootObservations, DhcpAnswered, MacAddr, NextLoad, Timestamp};

/// MACs remembered at most. Every machine on the segment that asks DHCP is seen, known or
/// not; beyond this the one quiet longest is forgotten.
const MAX_MACS: usize = 4096;

/// The per-MAC record, fed by the DHCP, TFTP and HTTP services.
#[derive(Debug, Default)]
pub(super) struct BootLog {
    macs: Mutex<HashMap<MacAddr, Seen>>,
}

/// The last time each step happened for one MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    dhcp: Option<Timestamp>,
    answered: Option<DhcpAnswered>,
    /// The last silence since the last answer, and why (rendered only when asked for: a
    /// segment full of machines Rivet ignores must not cost an allocation per request).
    silence: Option<(Timestamp, Silence)>,
    ipxe: Option<Timestamp>,
    /// The last refused request for iPXE, and what was refused.
    ipxe_refused: Option<(Timestamp, String)>,
    script: Option<Timestamp>,
    agent: Option<Timestamp>,
    /// The latest of all, for choosing whom to forget.
    last: Timestamp,
}

impl BootLog {
    fn macs(&self) -> MutexGuard<'_, HashMap<MacAddr, Seen>> {
        // A map of plain values: a panic elsewhere cannot leave it half-changed.
        self.macs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What was seen of `mac` at or after `since`.
    pub(super) fn observations(&self, mac: MacAddr, since: Timestamp) -> BootObservations {
        let Some(seen) = self.macs().get(&mac).cloned() else {
            return BootObservations::default();
        };
        let recent = |at: Option<Timestamp>| at.filter(|&at| at >= since);
        BootObservations {
            dhcp: recent(seen.dhcp),
            dhcp_answered: seen.answered.filter(|answer| answer.at >= since),
            dhcp_silence: seen
                .silence
                .filter(|(at, _)| *at >= since)
                .map(|(_, why)| why.to_string()),
            ipxe_fetched: recent(seen.ipxe),
            ipxe_refused: seen
                .ipxe_refused
                .filter(|(at, _)| *at >= since)
                .map(|(_, why)| why),
            script_fetched: recent(seen.script),
            agent_fetched: recent(seen.agent),
        }
    }

    fn record(&self, mac: MacAddr, at: Timestamp, kind: &ObservationKind) {
        let mut macs = self.macs();
        if macs.len() >= MAX_MACS
            && !macs.contains_key(&mac)
            && let Some(quietest) = macs
                .iter()
                .min_by_key(|(_, seen)| seen.last)
                .map(|(mac, _)| *mac)
        {
            macs.remove(&quietest);
        }
        let seen = macs.entry(mac).or_default();
        seen.last = seen.last.max(at);
        match kind {
            ObservationKind::Dhcp { answer, .. } => {
                seen.dhcp = Some(at);
                match answer {
                    DhcpAnswer::Replied { boot, .. } => {
                        seen.answered = Some(DhcpAnswered {
                            at,
                            next: boot.map(next_load),
                        });
                        seen.silence = None;
                    }
                    DhcpAnswer::Silent(why) => seen.silence = Some((at, why.clone())),
                    _ => {}
                }
            }
            ObservationKind::Tftp {
                outcome: TftpOutcome::Sent { .. },
                ..
            } => seen.ipxe = Some(at),
            ObservationKind::Tftp {
                file,
                outcome: TftpOutcome::Refused(why),
            } => {
                seen.ipxe_refused = Some((at, format!("TFTP read of {file} was refused: {why}")));
            }
            ObservationKind::Http {
                fetch: HttpFetch::Ipxe,
                status,
            } if *status >= 400 => {
                seen.ipxe_refused = Some((at, format!("HTTP fetch of iPXE got status {status}")));
            }
            // Errors are answered, not fetched: the step did not happen.
            ObservationKind::Http { status, .. } if *status >= 400 => {}
            ObservationKind::Http { fetch, .. } => match fetch {
                HttpFetch::Script => seen.script = Some(at),
                HttpFetch::File => seen.agent = Some(at),
                // The chain script is iPXE running, asking which script is the host's.
                HttpFetch::Ipxe | HttpFetch::ChainScript => seen.ipxe = Some(at),
            },
            _ => {}
        }
    }
}

impl BootObserver for BootLog {
    fn observe(&self, observation: &Observation) {
        if let Some(mac) = observation.mac {
            self.record(
                MacAddr::new(mac.octets()),
                timestamp(observation.at),
                &observation.kind,
            );
        }
    }
}

fn next_load(offered: BootOffered) -> NextLoad {
    match offered {
        BootOffered::IpxeOverTftp => NextLoad::IpxeOverTftp,
        BootOffered::IpxeOverHttp => NextLoad::IpxeOverHttp,
        BootOffered::Script => NextLoad::Script,
    }
}

fn timestamp(at: SystemTime) -> Timestamp {
    let millis = at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    });
    Timestamp::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rivet_pxe::observe::MessageType;

    use super::*;

    const MAC: MacAddr = MacAddr::new([0x52, 0x54, 0, 0, 0, 1]);

    fn observe(log: &BootLog, mac: MacAddr, secs: u64, kind: ObservationKind) {
        log.observe(&Observation {
            mac: Some(rivet_pxe::MacAddr::new(mac.octets())),
            ip: None,
            at: UNIX_EPOCH + Duration::from_secs(secs),
            kind,
        });
    }

    fn dhcp(answer: DhcpAnswer) -> ObservationKind {
        ObservationKind::Dhcp {
            message: MessageType::Discover,
            answer,
        }
    }

    fn at(secs: u64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(secs * 1000))
    }

    #[test]
    fn each_step_is_recorded_and_old_ones_are_left_out() {
        let log = BootLog::default();
        observe(
            &log,
            MAC,
            1,
            dhcp(DhcpAnswer::Silent(Silence::NotForUs("unknown host"))),
        );
        let silent = log.observations(MAC, Timestamp::from_millis(0));
        assert_eq!(silent.dhcp, at(1));
        assert_eq!(silent.dhcp_silence.as_deref(), Some("unknown host"));

        observe(
            &log,
            MAC,
            2,
            dhcp(DhcpAnswer::Replied {
                reply: MessageType::Offer,
                address: None,
                boot: Some(BootOffered::IpxeOverTftp),
            }),
        );
        let tftp = ObservationKind::Tftp {
            file: "undionly.kpxe".into(),
            outcome: TftpOutcome::Sent { bytes: 1 },
        };
        let missing = ObservationKind::Tftp {
            file: "snponly.efi".into(),
            outcome: TftpOutcome::Refused("file not found"),
        };
        observe(&log, MAC, 3, missing);
        observe(&log, MAC, 3, tftp);
        let http = |fetch, status| ObservationKind::Http { fetch, status };
        observe(&log, MAC, 4, http(HttpFetch::Script, 200));
        observe(&log, MAC, 5, http(HttpFetch::File, 404));
        observe(&log, MAC, 6, http(HttpFetch::File, 206));
        let seen = log.observations(MAC, Timestamp::from_millis(0));
        assert_eq!(
            seen,
            BootObservations {
                dhcp: at(2),
                dhcp_answered: Some(DhcpAnswered {
                    at: Timestamp::from_millis(2000),
                    next: Some(NextLoad::IpxeOverTftp),
                }),
                dhcp_silence: None,
                ipxe_fetched: at(3),
                ipxe_refused: Some("TFTP read of snponly.efi was refused: file not found".into()),
                script_fetched: at(4),
                agent_fetched: at(6),
            }
        );
        let later = log.observations(MAC, Timestamp::from_millis(3500));
        assert_eq!(
            (later.dhcp, later.dhcp_answered, later.ipxe_fetched),
            (None, None, None)
        );
        assert_eq!(later.script_fetched, at(4));
        assert_eq!(
            log.observations(MacAddr::new([2; 6]), Timestamp::from_millis(0)),
            BootObservations::default()
        );
    }

    #[test]
    fn the_quietest_mac_is_forgotten_when_full() {
        let log = BootLog::default();
        let mac = |n: usize| MacAddr::new([2, 0, 0, 0, (n >> 8) as u8, n as u8]);
        for n in 0..MAX_MACS {
            observe(&log, mac(n), 10 + n as u64, dhcp(DhcpAnswer::Noted));
        }
        observe(&log, mac(0), 100_000, dhcp(DhcpAnswer::Noted));
        observe(&log, MAC, 100_001, dhcp(DhcpAnswer::Noted));
        assert_eq!(log.macs().len(), MAX_MACS);
        let since = Timestamp::from_millis(0);
        assert_eq!(log.observations(mac(0), since).dhcp, at(100_000));
        assert_eq!(log.observations(mac(1), since).dhcp, None);
        assert_eq!(log.observations(MAC, since).dhcp, at(100_001));
    }
}
