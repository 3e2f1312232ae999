//! Boot services for Rivet: DHCPv4 (proxy and authoritative), TFTP, iPXE scripts and HTTP boot,
//! with sans-IO protocol cores and tokio sockets at the edge.

#![forbid(unsafe_code)]

pub mod cmdline;
pub mod confine;
pub mod hosts;
pub mod ipxe;
pub mod mac;
pub mod tftp;

pub use hosts::{AgentBoot, Asset, BootAction, Host, HostTable, HostTableHandle, UnknownPolicy};
pub use mac::MacAddr;
