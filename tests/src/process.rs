use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process that is killed, with its whole process group, when the guard drops,
/// so a failing test never leaves a daemon behind.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Starts `command` in its own process group.
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll child")
    }

    /// Fails the test if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll child") {
            panic!("{} exited early with {status}", self.name);
        }
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        let pgid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; a stale pgid only yields ESRCH.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 50 ms until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Live (not zombie) processes in process group `pgid`. A killed grandchild is
    /// reparented to PID 1, which in a container may never reap it, so a zombie is "gone".
    fn live_members(pgid: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                // Fields after the parenthesised command: state, ppid, pgrp, ...
                let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
            })
            .collect()
    }

    #[test]
    fn dropping_the_guard_kills_the_process_group() {
        let guard = ChildGuard::spawn("sleep", Command::new("sh").args(["-c", "sleep 30 & wait"]));
        let pgid = guard.id();
        wait_until(
            "the child to start its grandchild",
            Duration::from_secs(5),
            || live_members(pgid).len() >= 2,
        );
        drop(guard);
        wait_until("the process group to die", Duration::from_secs(5), || {
            live_members(pgid).is_empty()
        });
    }

    #[test]
    #[should_panic(expected = "timed out")]
    fn wait_until_gives_up() {
        wait_until("never", Duration::from_millis(100), || false);
    }
}
