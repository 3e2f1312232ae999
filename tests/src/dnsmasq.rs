//! dnsmasq as a site's own DHCP server: addresses only (no boot options, no DNS), in a
//! namespace of its own joined to a bridge by a veth pair, so Rivet's ProxyDHCP can be
//! tested next to a DHCP server others wrote.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::net::Netns;
use crate::tools::require_tool;

/// A running dnsmasq and the namespace it lives in (both removed on drop).
#[derive(Debug)]
pub struct AddressServer {
    pub daemon: Daemon,
    pub ns: Netns,
}

impl AddressServer {
    /// Joins a new namespace to `bridge` in `ns` (veth `vaddr` ↔ `vdns`), gives its end
    /// `address` (CIDR) and starts dnsmasq there handing out `first`–`last` (a /24);
    /// logs and leases go in `dir`.
    pub fn start(ns: &Netns, bridge: &str, address: &str, range: (&str, &str), dir: &Path) -> Self {
        let dnsmasq = require_tool("dnsmasq");
        let peer = Netns::new("dns");
        let status = Command::new("ip")
            .args(["link", "add", "vaddr", "netns", ns.name()])
            .args(["type", "veth", "peer", "name", "vdns", "netns", peer.name()])
            .status()
            .expect("run ip link add");
        assert!(
            status.success(),
            "creating the veth pair for dnsmasq failed"
        );
        ns.exec_checked(&["ip", "link", "set", "vaddr", "master", bridge, "up"]);
        peer.exec_checked(&["ip", "addr", "add", address, "dev", "vdns"]);
        peer.exec_checked(&["ip", "link", "set", "vdns", "up"]);
        let conf = dir.join("dnsmasq.conf");
        std::fs::write(
            &conf,
            format!(
                "port=0\ninterface=vdns\nbind-interfaces\n\
                 dhcp-range={},{},255.255.255.0,1h\n\
                 dhcp-leasefile={}\nlog-dhcp\n",
                range.0,
                range.1,
                dir.join("dnsmasq.leases").display()
            ),
        )
        .expect("write dnsmasq.conf");
        let mut command = peer.command(dnsmasq);
        command
            .arg("--keep-in-foreground")
            .arg("--log-facility=-")
            .arg(format!("--conf-file={}", conf.display()));
        let mut daemon = Daemon::spawn("dnsmasq", dir, &mut command);
        daemon.wait_for_log("DHCP, IP range", Duration::from_secs(10));
        Self { daemon, ns: peer }
    }
}
