//! More of [`Netns`]: in-process code (a tokio runtime serving sockets) running inside, for
//! tests of libraries rather than binaries, and links to a DHCP client's namespace.

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::thread::JoinHandle;

use crate::{Netns, require_tool};

impl Netns {
    /// Joins this namespace (`local_if`, with `local_addr` in CIDR form) to `client`
    /// (`client_if` with MAC `client_mac` and no address, as a machine before DHCP) by a
    /// veth pair, both ends up.
    pub fn link_client(
        &self,
        local_if: &str,
        local_addr: &str,
        client: &Netns,
        client_if: &str,
        client_mac: &str,
    ) {
        let status = Command::new("ip")
            .args([
                "link",
                "add",
                local_if,
                "netns",
                self.name(),
                "type",
                "veth",
            ])
            .args(["peer", "name", client_if, "netns", client.name()])
            .status()
            .expect("run ip link add");
        assert!(status.success(), "ip link add {local_if} failed");
        self.exec_checked(&["ip", "addr", "add", local_addr, "dev", local_if]);
        self.exec_checked(&["ip", "link", "set", local_if, "up"]);
        client.exec_checked(&["ip", "link", "set", client_if, "address", client_mac]);
        client.exec_checked(&["ip", "link", "set", client_if, "up"]);
    }

    /// Runs the tool `args[0]` (which must be installed) inside the namespace and returns
    /// its output, whether it succeeded or not.
    pub fn output(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        self.command(require_tool(program))
            .args(rest)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {program}: {err}"))
    }

    /// Runs `body` on a new thread that lives in this namespace: every socket it opens, and
    /// every thread it spawns, is inside. The namespace must outlive the thread.
    pub fn spawn_inside<T, F>(&self, body: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = std::path::Path::new("/run/netns").join(self.name());
        let namespace = std::fs::File::open(&path)
            .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()));
        std::thread::Builder::new()
            .name(format!("in-{}", self.name()))
            .spawn(move || {
                // SAFETY: setns only reads the descriptor, which `namespace` keeps open for
                // the call, and changes only the calling thread's network namespace.
                #[allow(unsafe_code)]
                let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    entered,
                    0,
                    "setns into {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                drop(namespace);
                body()
            })
            .expect("spawn a thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_a_thread_inside_sees_only_the_namespace_interfaces() {
        let ns = Netns::new("th");
        ns.exec_checked(&["ip", "link", "add", "brx7", "type", "bridge"]);
        let inside = ns.spawn_inside(interfaces).join().unwrap();
        assert!(inside.contains(&"brx7".to_owned()), "{inside:?}");
        assert!(!interfaces().contains(&"brx7".to_owned()));
    }

    /// The interfaces the calling thread's namespace has, as the kernel lists them.
    fn interfaces() -> Vec<String> {
        let out = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        out.lines()
            .skip(2)
            .filter_map(|line| line.split(':').next())
            .map(|name| name.trim().to_owned())
            .collect()
    }
}
