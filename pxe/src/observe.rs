//! Per-MAC observations: what each machine asked the boot services for and what it got, so
//! that a machine that never finished booting can be explained ("asked DHCP, was told to load
//! iPXE over TFTP, never did").
//!
//! The DHCP and TFTP cores stay sans-IO: the DHCP core returns who asked and what with its
//! reply ([`crate::dhcp::Exchange`]), and the edges turn that into an [`Observation`] for the
//! [`BootObserver`] registered with [`BootServices::start_observed`]. Without an observer the
//! edges do no extra work.
//!
//! TFTP carries no MAC address, and neither do HTTP fetches other than the per-host script:
//! those are attributed through the addresses DHCP handed out or saw clients claim
//! ([`ObserverHandle::mac_of`]); a client whose address DHCP never saw is reported by IP only.
//!
//! [`BootServices::start_observed`]: crate::BootServices::start_observed

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// DHCP message types, as observations name them.
pub use dhcproto::v4::MessageType;

use crate::dhcp::{Handled, RequestSeen, Silence};
use crate::mac::MacAddr;

/// Addresses remembered for attributing TFTP and HTTP requests, at most (a /16 pool's worth).
/// Beyond that the table starts over: attribution is best effort, memory is not.
const MAX_CLIENT_ADDRESSES: usize = 1 << 16;

/// Something a machine did, as one of the boot services saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The machine: from the DHCP request itself, from the script's URL, or for TFTP and
    /// other HTTP requests from the address DHCP gave it or saw it claim. `None` when none
    /// of those is known.
    pub mac: Option<MacAddr>,
    /// The machine's IPv4 address, when the event has one (TFTP and HTTP peers; the address
    /// a DHCP answer gave or a request claimed).
    pub ip: Option<Ipv4Addr>,
    /// When the service saw it.
    pub at: SystemTime,
    pub kind: ObservationKind,
}

/// What was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObservationKind {
    /// A DHCP message from the machine, and what Rivet did about it.
    Dhcp {
        message: MessageType,
        answer: DhcpAnswer,
    },
    /// A TFTP read request and how it ended.
    Tftp {
        file: Box<str>,
        outcome: TftpOutcome,
    },
    /// An HTTP request to one of the boot routes, with the response's status code.
    Http { fetch: HttpFetch, status: u16 },
}

/// What Rivet did with a DHCP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpAnswer {
    /// It replied.
    Replied {
        reply: MessageType,
        /// The address given (`yiaddr`), if any; ProxyDHCP gives none.
        address: Option<Ipv4Addr>,
        /// What the reply told the machine to load next, if anything.
        boot: Option<BootOffered>,
    },
    /// The message needs no reply (DECLINE, RELEASE) and was acted on.
    Noted,
    /// It stayed silent, and why.
    Silent(Silence),
}

/// What a DHCP reply told a machine to load next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOffered {
    /// An iPXE build over TFTP (PXE firmware).
    IpxeOverTftp,
    /// An iPXE build over HTTP (UEFI HTTP boot).
    IpxeOverHttp,
    /// The machine's iPXE script (the machine already runs iPXE).
    Script,
}

/// How a TFTP read request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TftpOutcome {
    /// The whole file was sent and acknowledged.
    Sent { bytes: u64 },
    /// Refused; the reason the client was told.
    Refused(&'static str),
}

/// Which boot route an HTTP request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFetch {
    /// `/boot/<mac>.ipxe`, the machine's own script.
    Script,
    /// `/boot.ipxe`, the script chaining to the machine's own.
    ChainScript,
    /// `/files/…`: kernels, initrds, ISOs.
    File,
    /// `/ipxe/…`: an iPXE build (UEFI HTTP boot).
    Ipxe,
}

impl HttpFetch {
    /// The route `path` (relative to the boot router) belongs to, and for a script the MAC
    /// its name carries.
    pub fn classify(path: &str) -> Option<(Self, Option<MacAddr>)> {
        if path == "/boot.ipxe" {
            return Some((Self::ChainScript, None));
        }
        if let Some(name) = path.strip_prefix("/boot/") {
            let mac = name
                .strip_suffix(".ipxe")
                .and_then(|mac| mac.parse::<MacAddr>().ok());
            return mac.map(|mac| (Self::Script, Some(mac)));
        }
        if path.starts_with("/files/") {
            return Some((Self::File, None));
        }
        if path.starts_with("/ipxe/") {
            return Some((Self::Ipxe, None));
        }
        None
    }
}

/// Receives observations.
///
/// Called on the services' own tasks and threads (the DHCP task for every DHCP message), so
/// it must be quick and must not block: record and return.
pub trait BootObserver: Send + Sync + 'static {
    fn observe(&self, observation: &Observation);
}

/// A registered [`BootObserver`] and the client addresses DHCP learnt, shared by the
/// services (and by an HTTP router served elsewhere, through
/// [`HttpState::observer`](crate::http::HttpState::observer)).
#[derive(Clone)]
pub struct ObserverHandle {
    observer: Arc<dyn BootObserver>,
    clients: Arc<Mutex<ClientAddresses>>,
}

impl fmt::Debug for ObserverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserverHandle").finish_non_exhaustive()
    }
}

impl ObserverHandle {
    pub fn new(observer: Arc<dyn BootObserver>) -> Self {
        Self {
            observer,
            clients: Arc::default(),
        }
    }

    /// The MAC address that last held or claimed `ip` through our DHCP.
    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.clients().get(ip)
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, ClientAddresses> {
        // A map of plain values: a panic elsewhere cannot leave it half-changed.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports a DHCP message the core decoded and what came of it, and remembers the
    /// address the machine got or claims.
    pub(crate) fn dhcp(
        &self,
        request: RequestSeen,
        result: &Result<Handled, Silence>,
        at: SystemTime,
    ) {
        let answer = DhcpAnswer::from_result(result);
        let given = match &answer {
            DhcpAnswer::Replied {
                reply: MessageType::Ack,
                address,
                ..
            } => *address,
            _ => None,
        };
        let ip = given.or(request.address);
        if let (Some(mac), Some(ip)) = (request.mac, ip) {
            self.clients().insert(ip, mac);
        }
        if request.mac.is_none() && ip.is_none() {
            return;
        }
        self.observer.observe(&Observation {
            mac: request.mac,
            ip,
            at,
            kind: ObservationKind::Dhcp {
                message: request.message,
                answer,
            },
        });
    }

    /// Reports a TFTP read from `ip`.
    pub(crate) fn tftp(&self, ip: Ipv4Addr, file: &str, outcome: TftpOutcome) {
        self.observer.observe(&Observation {
            mac: self.mac_of(ip),
            ip: Some(ip),
            at: SystemTime::now(),
            kind: ObservationKind::Tftp {
                file: file.into(),
                outcome,
            },
        });
    }

    /// Reports an HTTP request; `mac` is the one a script's URL names.
    pub(crate) fn http(
        &self,
        fetch: HttpFetch,
        mac: Option<MacAddr>,
        ip: Option<Ipv4Addr>,
        status: u16,
    ) {
        let mac = mac.or_else(|| ip.and_then(|ip| self.mac_of(ip)));
        if mac.is_none() && ip.is_none() {
            return;
        }
        self.observer.observe(&Observation {
            mac,
            ip,
            at: SystemTime::now(),
            kind: ObservationKind::Http { fetch, status },
        });
    }
}

impl DhcpAnswer {
    fn from_result(result: &Result<Handled, Silence>) -> Self {
        match result {
            Ok(Handled {
                reply: Some(reply), ..
            }) => Self::Replied {
                reply: reply.kind,
                address: reply.address,
                boot: reply.boot,
            },
            Ok(Handled { reply: None, .. }) => Self::Noted,
            Err(silence) => Self::Silent(silence.clone()),
        }
    }
}

/// IPv4 address → MAC, bounded by [`MAX_CLIENT_ADDRESSES`].
#[derive(Debug, Default)]
struct ClientAddresses {
    by_ip: HashMap<Ipv4Addr, MacAddr>,
}

impl ClientAddresses {
    fn get(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.by_ip.get(&ip).copied()
    }

    fn insert(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        if ip.is_unspecified() || ip.is_broadcast() {
            return;
        }
        if self.by_ip.len() >= MAX_CLIENT_ADDRESSES && !self.by_ip.contains_key(&ip) {
            self.by_ip.clear();
        }
        self.by_ip.insert(ip, mac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr::new([0x52, 0x54, 0, 0, 0, last])
    }

    #[test]
    fn routes_are_classified_and_scripts_name_their_mac() {
        assert_eq!(
            HttpFetch::classify("/boot/52-54-00-00-00-07.ipxe"),
            Some((HttpFetch::Script, Some(mac(7))))
        );
        assert_eq!(
            HttpFetch::classify("/boot/52:54:00:00:00:07.ipxe"),
            Some((HttpFetch::Script, Some(mac(7))))
        );
        assert_eq!(HttpFetch::classify("/boot/not-a-mac.ipxe"), None);
        assert_eq!(HttpFetch::classify("/boot/52-54-00-00-00-07"), None);
        assert_eq!(
            HttpFetch::classify("/boot.ipxe"),
            Some((HttpFetch::ChainScript, None))
        );
        assert_eq!(
            HttpFetch::classify("/files/agent/vmlinuz"),
            Some((HttpFetch::File, None))
        );
        assert_eq!(
            HttpFetch::classify("/ipxe/snponly.efi"),
            Some((HttpFetch::Ipxe, None))
        );
        assert_eq!(HttpFetch::classify("/metrics"), None);
        assert_eq!(HttpFetch::classify("/filesystem"), None);
    }

    #[test]
    fn client_addresses_follow_the_latest_holder_and_stay_bounded() {
        let mut clients = ClientAddresses::default();
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        clients.insert(ip, mac(1));
        clients.insert(ip, mac(2));
        assert_eq!(clients.get(ip), Some(mac(2)));
        clients.insert(Ipv4Addr::UNSPECIFIED, mac(3));
        clients.insert(Ipv4Addr::BROADCAST, mac(3));
        assert_eq!(clients.by_ip.len(), 1);

        let last = Ipv4Addr::from(0x0a01_0000 + MAX_CLIENT_ADDRESSES as u32 - 2);
        for n in 0..MAX_CLIENT_ADDRESSES as u32 - 1 {
            clients.insert(Ipv4Addr::from(0x0a01_0000 + n), mac(4));
        }
        assert_eq!(clients.by_ip.len(), MAX_CLIENT_ADDRESSES);
        // Updating a known address keeps the table; a new one beyond the bound starts over.
        clients.insert(last, mac(5));
        assert_eq!(clients.by_ip.len(), MAX_CLIENT_ADDRESSES);
        assert_eq!(clients.get(ip), Some(mac(2)));
        clients.insert(Ipv4Addr::new(10, 2, 0, 1), mac(6));
        assert_eq!(clients.by_ip.len(), 1);
        assert_eq!(clients.get(ip), None);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Observation>>);

    impl BootObserver for Recorder {
        fn observe(&self, observation: &Observation) {
            self.0.lock().unwrap().push(observation.clone());
        }
    }

    #[test]
    fn tftp_and_http_requests_are_attributed_through_dhcp_addresses() {
        let recorder = Arc::new(Recorder::default());
        let handle = ObserverHandle::new(recorder.clone());
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let claimed = RequestSeen {
            mac: Some(mac(9)),
            message: MessageType::Request,
            address: Some(ip),
        };
        handle.dhcp(
            claimed,
            &Err(Silence::NotForUs("the client chose another server")),
            SystemTime::UNIX_EPOCH,
        );
        handle.tftp(ip, "undionly.kpxe", TftpOutcome::Sent { bytes: 3 });
        handle.http(
            HttpFetch::File,
            None,
            Some(Ipv4Addr::new(10, 0, 0, 10)),
            200,
        );
        handle.http(HttpFetch::Script, Some(mac(1)), None, 404);
        let seen = recorder.0.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!((seen[0].mac, seen[0].ip), (Some(mac(9)), Some(ip)));
        assert_eq!(
            seen[0].kind,
            ObservationKind::Dhcp {
                message: MessageType::Request,
                answer: DhcpAnswer::Silent(Silence::NotForUs("the client chose another server")),
            }
        );
        assert_eq!((seen[1].mac, seen[1].ip), (Some(mac(9)), Some(ip)));
        assert_eq!(
            seen[1].kind,
            ObservationKind::Tftp {
                file: "undionly.kpxe".into(),
                outcome: TftpOutcome::Sent { bytes: 3 }
            }
        );
        assert_eq!(seen[2].mac, None, "an address DHCP never saw");
        assert_eq!(seen[3].mac, Some(mac(1)));
        assert_eq!(
            seen[3].kind,
            ObservationKind::Http {
                fetch: HttpFetch::Script,
                status: 404
            }
        );
    }
}
