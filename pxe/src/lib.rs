//! Rivet's boot services: everything a machine needs to network-boot, from one async
//! process driven by a host table.
//!
//! - [`hosts`]: the host table (MAC → boot the agent, boot the local disk, or ignore; fixed
//!   address, host name, gateway, DNS), loaded from JSON and swapped atomically at run time
//!   through [`HostTableHandle`].
//! - [`dhcp`]: DHCPv4, as ProxyDHCP (boot information only, ports 67 and 4011) or
//!   authoritative (addresses from the table and a pool, durable leases with group commit,
//!   DECLINE/RELEASE/INFORM, relays and option 82). PXE clients are told which iPXE build
//!   to load by firmware (option 93); iPXE itself (user class "iPXE" / option 175) gets its
//!   script's URL; UEFI HTTP boot clients get an `http://` URL.
//! - [`tftp`]: read-only TFTP with blksize, tsize, timeout and windowsize.
//! - [`http`]: per-host iPXE scripts and files with byte ranges, as an axum router.
//! - [`ipxe`]: the scripts, rendered from validated values ([`cmdline`]) so host data
//!   cannot inject iPXE commands.
//! - [`ra`]: IPv6 router advertisements so iPXE does not wait ~13 s for IPv6.
//! - [`confine`]: files are opened with `openat2(RESOLVE_BENEATH)`, never outside a root.
//! - [`observe`]: per-MAC observations (DHCP requests and what Rivet answered, TFTP reads,
//!   HTTP fetches) for a [`BootObserver`], so a machine stuck in its boot can be explained.
//! - [`service`]: [`BootServices`] starts the set in the caller's tokio runtime.
//!
//! The DHCP and TFTP cores are sans-IO (datagram and time in, datagrams and records out);
//! tokio sockets live in `dhcp::edge` and `tftp::server`. IPv4 only: DHCPv6 and IPv6 boot
//! are not implemented.

#![forbid(unsafe_code)]

pub mod cmdline;
pub mod confine;
pub mod dhcp;
pub mod hosts;
pub mod http;
pub mod ipxe;
pub mod mac;
pub mod net;
pub mod observe;
pub mod ra;
pub mod service;
pub mod tftp;

pub use hosts::{
    AgentBoot, Asset, BootAction, Host, HostTable, HostTableError, HostTableHandle, UnknownPolicy,
};
pub use ipxe::HttpBase;
pub use mac::MacAddr;
pub use observe::{BootObserver, Observation, ObservationKind, ObserverHandle};
pub use service::{BootConfig, BootError, BootServices, DhcpSettings, HttpSettings, TftpSettings};
