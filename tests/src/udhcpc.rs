//! busybox udhcpc as a one-shot DHCP client, for tests that need a real client's exchange.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;

use crate::{Netns, require_tool, scratch_dir};

/// The PXE vendor class of a BIOS PXE ROM (architecture 0), for [`udhcpc`].
pub const PXE_BIOS_CLASS: &str = "PXEClient:Arch:00000:UNDI:002001";

/// Runs busybox udhcpc once on `interface` inside `ns`, sending `vendor_class` (option 60)
/// if given, for at most `tries` one-second attempts. Returns the address the server
/// acknowledged, or `None` if no server answered. The interface is not configured.
pub fn udhcpc(
    ns: &Netns,
    interface: &str,
    vendor_class: Option<&str>,
    tries: u32,
) -> Option<Ipv4Addr> {
    let dir = scratch_dir("udhcpc");
    let script = dir.path().join("script.sh");
    let bound = dir.path().join("bound");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > {}\nexit 0\n",
            bound.display()
        ),
    )
    .expect("write the udhcpc script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make the udhcpc script executable");
    let mut command = ns.command(require_tool("busybox"));
    command
        .args(["udhcpc", "-f", "-q", "-n", "-i", interface, "-T", "1", "-t"])
        .arg(tries.to_string())
        .arg("-s")
        .arg(&script);
    if let Some(class) = vendor_class {
        command.args(["-V", class]);
    }
    let out = command.output().expect("run busybox udhcpc");
    if !out.status.success() {
        return None;
    }
    let address = std::fs::read_to_string(&bound).unwrap_or_else(|err| {
        panic!(
            "udhcpc succeeded but never reported an address ({err}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Some(
        address
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("udhcpc bound to `{address}`, not an IPv4 address")),
    )
}
