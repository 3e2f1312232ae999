use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::tools::{require_root, require_tool};

/// A TCP port on 127.0.0.1 that was free a moment ago, for peers that must be told a port.
///
/// Prefer binding port 0 yourself; this exists for daemons (sushy-emulator, ipmi_sim) that
/// take a port in their configuration.
pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral TCP port");
    listener.local_addr().expect("local address").port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago (see [`free_tcp_port`]).
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral UDP port");
    socket.local_addr().expect("local address").port()
}

/// Whether something accepts TCP connections at `addr`.
pub fn tcp_port_open(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}

/// A network namespace, deleted (with every interface in it) when dropped.
///
/// Names are unique per process and call, so tests may run in parallel.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `rv<prefix><pid>-<n>` with its loopback up. `prefix` should be short: interface
    /// and namespace names are limited to 15 bytes.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        require_root();
        require_tool("ip");
        let name = format!(
            "rv{prefix}{}-{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        let netns = Self { name };
        netns.exec_checked(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `args` inside the namespace and fails the test if it fails.
    pub fn exec_checked(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        run_checked(self.command(program).args(rest))
    }

    /// Creates bridge `br0` with `address` (CIDR, e.g. `10.99.0.1/24`) and brings it up.
    pub fn add_bridge(&self, bridge: &str, address: &str) {
        self.exec_checked(&["ip", "link", "add", bridge, "type", "bridge"]);
        self.exec_checked(&["ip", "addr", "add", address, "dev", bridge]);
        self.exec_checked(&["ip", "link", "set", bridge, "up"]);
    }

    /// Creates tap `tap` attached to `bridge`, for a QEMU guest.
    pub fn add_tap(&self, tap: &str, bridge: &str) {
        self.exec_checked(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"]);
        self.exec_checked(&["ip", "link", "set", tap, "master", bridge, "up"]);
    }

    /// Creates tap `tap` attached to `bridge` and owned by `user`, so an unprivileged
    /// QEMU (a session libvirtd's) can open it.
    pub fn add_tap_owned(&self, tap: &str, bridge: &str, user: &str) {
        self.exec_checked(&[
            "ip", "tuntap", "add", "dev", tap, "mode", "tap", "user", user,
        ]);
        self.exec_checked(&["ip", "link", "set", tap, "master", bridge, "up"]);
    }

    /// Joins two namespaces with a veth pair and addresses (CIDR) on each end.
    pub fn link(
        &self,
        local_if: &str,
        local_addr: &str,
        peer: &Netns,
        peer_if: &str,
        peer_addr: &str,
    ) {
        run_checked(Command::new("ip").args([
            "link", "add", local_if, "netns", &self.name, "type", "veth", "peer", "name", peer_if,
            "netns", &peer.name,
        ]));
        for (ns, iface, addr) in [(self, local_if, local_addr), (peer, peer_if, peer_addr)] {
            ns.exec_checked(&["ip", "addr", "add", addr, "dev", iface]);
            ns.exec_checked(&["ip", "link", "set", iface, "up"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep the namespace's interfaces alive; kill them first.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: kill has no memory-safety preconditions.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_checked(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_enough_to_bind() {
        let port = free_tcp_port();
        assert!(port > 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is still free");
        assert!(free_udp_port() > 0);
    }

    #[test]
    fn netns_two_namespaces_reach_each_other_over_veth() {
        let a = Netns::new("t");
        let b = Netns::new("t");
        a.link("va", "10.123.0.1/30", &b, "vb", "10.123.0.2/30");
        a.exec_checked(&["ping", "-c", "1", "-W", "2", "10.123.0.2"]);
        let name = a.name().to_owned();
        drop(a);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }
}
