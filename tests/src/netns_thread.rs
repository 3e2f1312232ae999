//! Running in-process code (a tokio runtime serving sockets) inside a [`Netns`], for tests
//! of libraries rather than binaries.

use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use crate::Netns;

impl Netns {
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
