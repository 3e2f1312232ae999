//! Daemons under test whose output goes to a log file the test can wait on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::ChildGuard;

/// A background process (killed on drop, with its process group) whose standard output and
/// error are captured in `<dir>/<name>.log`.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    log: PathBuf,
    child: ChildGuard,
}

impl Daemon {
    /// Starts `command` with its output in `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, command: &mut Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create the daemon log");
        let err = file.try_clone().expect("clone the log handle");
        command
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .env("NO_COLOR", "1");
        let child = ChildGuard::spawn(name, command);
        Self {
            name: name.to_owned(),
            log,
            child,
        }
    }

    /// Everything logged so far, without terminal colour codes.
    pub fn log(&self) -> String {
        let raw = std::fs::read(&self.log).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    /// Waits until the log contains `needle`; fails with the log if the process exits or
    /// `timeout` passes first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Some(status) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}; its log:\n{log}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {needle:?} within {timeout:?}; its log:\n{log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait() {
            panic!("{} exited ({status}); its log:\n{}", self.name, self.log());
        }
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        self.child.signal(signal);
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Removes ANSI escape sequences (colours) from log text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::scratch_dir;

    #[test]
    fn logs_are_captured_and_waited_for() {
        let dir = scratch_dir("daemon");
        let mut daemon = Daemon::spawn(
            "echoer",
            dir.path(),
            Command::new("sh").args(["-c", "printf '\\033[32mready\\033[0m\\n'; sleep 30"]),
        );
        let log = daemon.wait_for_log("ready", Duration::from_secs(10));
        assert_eq!(log, "ready\n");
        daemon.assert_running();
        daemon.signal(libc::SIGTERM);
        assert!(!daemon.wait_for_exit(Duration::from_secs(10)).success());
    }

    #[test]
    #[should_panic(expected = "exited")]
    fn an_early_exit_fails_with_the_log() {
        let dir = scratch_dir("daemon");
        let mut daemon = Daemon::spawn("quitter", dir.path(), Command::new("true").arg("x"));
        daemon.wait_for_log("never", Duration::from_secs(10));
    }
}
