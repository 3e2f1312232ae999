//! The harness Rivet's tests share.
//!
//! Tests run against real software (qemu-img, sushy-tools, ipmi_sim, QEMU, DHCP and TFTP
//! clients). When one is missing, a test **fails** with a message naming the missing piece
//! and how to install it; it never skips. Everything here panics instead of returning errors
//! because it only ever runs inside tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod block;
mod daemon;
mod dnsmasq;
pub mod fault_proxy;
pub mod http;
mod ipmi_sim;
pub mod iso;
pub mod libvirt;
mod net;
mod netns_more;
mod paths;
mod power_switch;
mod process;
mod pyghmi_bmc;
pub mod qemu;
pub mod qmp;
pub mod sushy;
mod tools;
mod udhcpc;
mod udp_relay;

pub use daemon::Daemon;
pub use dnsmasq::AddressServer;
pub use ipmi_sim::{IPMI_OPERATOR, IPMI_PASSWORD, IPMI_USER, IpmiSim, ipmitool, udp_port_taken};
pub use net::{Netns, free_tcp_port, free_udp_port, tcp_port_open};
pub use paths::{cargo_bin, fixture, scratch_dir, workspace_root};
pub use power_switch::{PowerOn, PowerSwitch};
pub use process::{ChildGuard, wait_until};
pub use pyghmi_bmc::PyghmiBmc;
pub use tools::{require_root, require_tool, venv_tool};
pub use udhcpc::{PXE_BIOS_CLASS, udhcpc};
pub use udp_relay::{Faults, LossyRelay, RelayStats};
