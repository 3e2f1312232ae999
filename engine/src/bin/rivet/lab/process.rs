//! The lab's processes: finding tools, starting daemons detached, and stopping them by PID
//! (there is no service manager to ask).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

/// Fails unless this process runs as root (namespaces, taps and bridges need it).
pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("{what} must run as root: it creates network namespaces, bridges and taps");
    }
    Ok(())
}

/// The path of `tool`, from PATH or the sbin directories root's PATH may lack.
pub(crate) fn find_tool(tool: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("`{tool}` is not installed (or not on PATH); run `just deps`"))
}

/// A process the lab started, identified by PID and by its command name so that a PID
/// reused by something else after a reboot or crash is never signalled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Process {
    pub(crate) pid: i32,
    /// `/proc/<pid>/comm` when it started (at most 15 bytes).
    pub(crate) comm: String,
}

impl Process {
    /// Whether the process is still ours and running (a zombie has finished).
    pub(crate) fn is_running(&self) -> bool {
        match read_stat(self.pid) {
            Some((comm, state)) => comm == self.comm && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once it is gone.
    pub(crate) fn stop(&self, grace: Duration) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid).with_context(|| format!("invalid PID {}", self.pid))?;
        // ESRCH means it has just exited, which is what we want.
        let _ = kill_process(pid, Signal::TERM);
        if wait_gone(self, grace) {
            return Ok(());
        }
        let _ = kill_process(pid, Signal::KILL);
        if wait_gone(self, Duration::from_secs(5)) {
            return Ok(());
        }
        bail!(
            "process {} ({}) did not exit after SIGKILL",
            self.pid,
            self.comm
        )
    }

    /// The process with this PID, if it runs now.
    pub(crate) fn from_pid(pid: i32) -> Option<Self> {
        let (comm, _) = read_stat(pid)?;
        Some(Self { pid, comm })
    }
}

fn wait_gone(process: &Process, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !process.is_running() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !process.is_running()
}

/// The command name and state letter from `/proc/<pid>/stat`.
fn read_stat(pid: i32) -> Option<(String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S …`: comm may hold spaces and parentheses, so cut at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let state = stat.get(close + 1..)?.trim_start().chars().next()?;
    Some((comm, state))
}

/// The QEMU whose PID `pidfile` holds, if it runs.
pub(crate) fn qemu_from_pidfile(pidfile: &Path) -> Option<Process> {
    let pid = std::fs::read_to_string(pidfile).ok()?;
    let process = Process::from_pid(pid.trim().parse().ok()?)?;
    (process.comm.starts_with("qemu-system") && process.is_running()).then_some(process)
}

/// `N` bytes from the kernel's random generator (passwords, UUIDs).
pub(crate) fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    use std::io::Read as _;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes)
}

/// Starts `command` in its own process group with output to `log`, not waiting for it: a
/// lab daemon outlives `rivet lab up`.
pub(crate) fn spawn_detached(command: &mut Command, log: &Path) -> anyhow::Result<Process> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    let pid = i32::try_from(child.id()).context("PID out of range")?;
    // `ip netns exec` (and `setpriv`) replace themselves with the program; give them the
    // moment it takes so the recorded name is the daemon's, not theirs.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut process = Process::from_pid(pid);
    while process
        .as_ref()
        .is_some_and(|p| p.comm == "ip" || p.comm == "setpriv")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
        process = Process::from_pid(pid);
    }
    process.with_context(|| {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        format!("{:?} exited at once:\n{log}", command.get_program())
    })
}

/// Runs a command to completion, failing with its output when it fails.
pub(crate) fn run_checked(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}{}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_and_a_stranger_is_not_taken_for_it() {
        let me = Process::from_pid(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert!(me.is_running());
        let impostor = Process {
            pid: me.pid,
            comm: "not-this-one".into(),
        };
        assert!(!impostor.is_running(), "a reused PID is not ours");
    }

    #[test]
    fn a_missing_tool_points_at_just_deps() {
        let err = find_tool("rivet-no-such-tool").unwrap_err().to_string();
        assert!(
            err.contains("rivet-no-such-tool") && err.contains("just deps"),
            "{err}"
        );
    }
}
