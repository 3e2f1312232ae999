//! The lab's network: one namespace with a bridge the VMs' taps and the engine share.

use std::ffi::OsStr;
use std::process::Command;

use super::process::run_checked;

/// The bridge in every lab namespace.
pub(crate) const BRIDGE: &str = "br0";

pub(crate) fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// A command run inside the namespace `netns`.
pub(crate) fn in_netns(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

fn ip_in(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    run_checked(in_netns(netns, "ip").args(args)).map(drop)
}

/// Creates `netns` with loopback and bridge `br0` at `address` (CIDR) up.
pub(crate) fn create_netns(netns: &str, address: &str) -> anyhow::Result<()> {
    run_checked(Command::new("ip").args(["netns", "add", netns]))?;
    ip_in(netns, &["link", "set", "lo", "up"])?;
    ip_in(netns, &["link", "add", BRIDGE, "type", "bridge"])?;
    // No forwarding delay: firmware gives up on DHCP long before 15 s of STP listening.
    ip_in(
        netns,
        &[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ],
    )?;
    ip_in(netns, &["addr", "add", address, "dev", BRIDGE])?;
    ip_in(netns, &["link", "set", BRIDGE, "up"])
}

/// Adds tap `tap` on the bridge, for a QEMU NIC.
pub(crate) fn add_tap(netns: &str, tap: &str, owner: Option<&str>) -> anyhow::Result<()> {
    match owner {
        // An unprivileged QEMU (libvirt's) may open only a tap made for its user.
        Some(user) => ip_in(
            netns,
            &["tuntap", "add", "dev", tap, "mode", "tap", "user", user],
        )?,
        None => ip_in(netns, &["tuntap", "add", "dev", tap, "mode", "tap"])?,
    }
    ip_in(netns, &["link", "set", tap, "master", BRIDGE, "up"])
}

/// Deletes the namespace and every interface in it; a missing one is not an error.
pub(crate) fn delete_netns(netns: &str) -> anyhow::Result<()> {
    if !netns_exists(netns) {
        return Ok(());
    }
    run_checked(Command::new("ip").args(["netns", "del", netns])).map(drop)
}
