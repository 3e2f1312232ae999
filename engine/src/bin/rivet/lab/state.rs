//! What a lab made, recorded in `/run/rivet-lab/<name>.json` as it is made, so that `down`
//! (or the rollback of a failed `up`) removes exactly that and nothing else.
//!
//! `/run` is emptied at boot, like the namespaces and processes the file describes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::BmcKind;
use super::chassis;
use super::network;
use super::process::Process;
use super::redfish;

const REGISTRY: &str = "/run/rivet-lab";

pub(crate) fn netns_name(lab: &str) -> String {
    format!("rivet-{lab}")
}

/// Lab names become namespace and file names: short, lowercase, no separators.
pub(crate) fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        bail!("invalid lab name {name:?}: use 1-24 of a-z, 0-9 and '-', not starting with '-'");
    }
    Ok(())
}

fn state_path(name: &str) -> PathBuf {
    Path::new(REGISTRY).join(format!("{name}.json"))
}

fn already_up(name: &str) -> String {
    format!("a lab named {name} is already up; run `rivet lab down --name {name}` first")
}

/// Fails if a lab named `name` is recorded or its namespace exists.
pub(crate) fn ensure_free(name: &str) -> anyhow::Result<()> {
    if state_path(name).exists() {
        bail!(already_up(name));
    }
    let netns = netns_name(name);
    if network::netns_exists(&netns) {
        bail!(
            "network namespace {netns} exists but no lab {name} is recorded (left behind by \
             a crash?); `rivet lab down --name {name}` removes it"
        );
    }
    Ok(())
}

/// One emulated machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LabHost {
    pub(crate) name: String,
    pub(crate) mac: String,
    pub(crate) bmc_address: String,
    pub(crate) dir: PathBuf,
    pub(crate) tap: String,
    /// Its own BMC emulator (IPMI); Redfish hosts share the lab's.
    pub(crate) bmc: Option<Process>,
    /// Where libvirt records its QEMU's PID (Redfish hosts).
    #[serde(default)]
    pub(crate) qemu_pidfile: Option<PathBuf>,
}

impl LabHost {
    /// The host's QEMU, when it runs (its chassis control records the PID).
    pub(crate) fn qemu(&self) -> Option<Process> {
        match &self.qemu_pidfile {
            Some(pidfile) => super::process::qemu_from_pidfile(pidfile),
            None => chassis::running_qemu(&self.dir),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LabState {
    pub(crate) name: String,
    pub(crate) netns: String,
    /// The lab's directory: created by `up`, removed by `down`.
    pub(crate) dir: PathBuf,
    pub(crate) bmc_kind: BmcKind,
    pub(crate) server_ip: Ipv4Addr,
    pub(crate) netns_created: bool,
    pub(crate) engine: Option<Process>,
    pub(crate) api_url: String,
    pub(crate) hosts: Vec<LabHost>,
    /// The private libvirtd of a Redfish lab, and `virsh` to talk to it.
    #[serde(default)]
    pub(crate) libvirtd: Option<Process>,
    #[serde(default)]
    pub(crate) virsh: Option<PathBuf>,
    /// The sushy-tools emulator every Redfish host of the lab sits behind.
    #[serde(default)]
    pub(crate) sushy: Option<Process>,
}

impl LabState {
    /// Claims `name`: fails if a lab of that name is recorded or its namespace exists.
    pub(crate) fn claim(self) -> anyhow::Result<Self> {
        ensure_free(&self.name)?;
        std::fs::create_dir_all(REGISTRY).with_context(|| format!("creating {REGISTRY}"))?;
        let path = state_path(&self.name);
        // create_new is the lock: of two `up`s with one name, one gets here.
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(already_up(&self.name))
            }
            Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
        };
        file.write_all(&serde_json::to_vec_pretty(&self)?)?;
        Ok(self)
    }

    /// Records the current state (atomically: a crash leaves the old or the new file).
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let path = state_path(&self.name);
        let temporary = path.with_extension("json.new");
        std::fs::write(&temporary, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| format!("replacing {}", path.display()))
    }

    pub(crate) fn load(name: &str) -> anyhow::Result<Option<Self>> {
        let path = state_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a lab state file", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub(crate) fn load_all() -> anyhow::Result<Vec<Self>> {
        let entries = match std::fs::read_dir(REGISTRY) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("reading {REGISTRY}")),
        };
        let mut labs = Vec::new();
        for entry in entries {
            let file_name = entry?.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(lab) = Self::load(name)? {
                labs.push(lab);
            }
        }
        labs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(labs)
    }

    /// The engine's state directory (token, CA certificate, store).
    pub(crate) fn engine_dir(&self) -> PathBuf {
        self.dir.join("engine")
    }

    /// Stops every process, deletes the namespace, then the files and the record. Every
    /// step runs even if an earlier one failed; the record goes only when all succeeded,
    /// so a failed `down` can be repeated.
    pub(crate) fn tear_down(&self, keep_files: bool) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        if let Some(engine) = &self.engine
            && let Err(err) = engine.stop(Duration::from_secs(15))
        {
            failures.push(format!("engine: {err:#}"));
        }
        if let Some(sushy) = &self.sushy
            && let Err(err) = sushy.stop(Duration::from_secs(5))
        {
            failures.push(format!("sushy-emulator: {err:#}"));
        }
        if let Some(virsh) = &self.virsh {
            failures.extend(redfish::destroy_domains(virsh, &self.dir));
        }
        if let Some(libvirtd) = &self.libvirtd
            && let Err(err) = libvirtd.stop(Duration::from_secs(10))
        {
            failures.push(format!("libvirtd: {err:#}"));
        }
        for host in &self.hosts {
            if let Some(qemu) = host.qemu()
                && let Err(err) = qemu.stop(Duration::from_secs(5))
            {
                failures.push(format!("{} QEMU: {err:#}", host.name));
            }
            if let Some(bmc) = &host.bmc
                && let Err(err) = bmc.stop(Duration::from_secs(5))
            {
                failures.push(format!("{} BMC: {err:#}", host.name));
            }
        }
        if self.netns_created
            && let Err(err) = network::delete_netns(&self.netns)
        {
            failures.push(format!("namespace {}: {err:#}", self.netns));
        }
        if !keep_files
            && self.dir.exists()
            && let Err(err) = std::fs::remove_dir_all(&self.dir)
        {
            failures.push(format!("{}: {err}", self.dir.display()));
        }
        if !failures.is_empty() {
            bail!("some of the lab is left: {}", failures.join("; "));
        }
        let path = state_path(&self.name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// The state with what runs now, for `status --json`.
    pub(crate) fn report(&self) -> serde_json::Value {
        let hosts: Vec<_> = self
            .hosts
            .iter()
            .map(|host| {
                serde_json::json!({
                    "name": host.name,
                    "mac": host.mac,
                    "bmc_address": host.bmc_address,
                    "bmc_running": host.bmc.as_ref().or(self.sushy.as_ref()).is_some_and(Process::is_running),
                    "bmc_pid": host.bmc.as_ref().or(self.sushy.as_ref()).map(|b| b.pid),
                    "qemu_pid": host.qemu().map(|q| q.pid),
                    "serial_log": chassis::serial_log(&host.dir),
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "netns": self.netns,
            "dir": self.dir,
            "bmc": self.bmc_kind,
            "api_url": self.api_url,
            "engine_state_dir": self.engine_dir(),
            "token_file": self.engine_dir().join("api-token"),
            "ca_file": self.engine_dir().join("tls/ca.pem"),
            "engine_running": self.engine.as_ref().is_some_and(Process::is_running),
            "engine_pid": self.engine.as_ref().map(|e| e.pid),
            "libvirtd_pid": self.libvirtd.as_ref().map(|p| p.pid),
            "sushy_pid": self.sushy.as_ref().map(|p| p.pid),
            "hosts": hosts,
        })
    }

    /// A few lines for people.
    pub(crate) fn describe(&self) -> String {
        let running = |p: &Option<Process>| match p {
            Some(p) if p.is_running() => format!("running (pid {})", p.pid),
            Some(_) => "NOT RUNNING".to_owned(),
            None => "not started".to_owned(),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "lab {} (namespace {}, {})",
            self.name,
            self.netns,
            self.dir.display()
        );
        let _ = writeln!(
            out,
            "  engine  {}  {}  state {}",
            running(&self.engine),
            self.api_url,
            self.engine_dir().display()
        );
        for host in &self.hosts {
            let qemu = match host.qemu() {
                Some(q) => format!("VM on (pid {})", q.pid),
                None => "VM off".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:<8} {}  BMC {} {}  {}",
                host.name,
                host.mac,
                host.bmc_address,
                running(if host.bmc.is_some() {
                    &host.bmc
                } else {
                    &self.sushy
                }),
                qemu
            );
        }
        let _ = writeln!(
            out,
            "  BMC user admin, password in {}",
            self.dir.join("bmc-password").display()
        );
        let _ = writeln!(
            out,
            "  clients: ip netns exec {} rivet host --url {} --state-dir {} …",
            self.netns,
            self.api_url,
            self.engine_dir().display()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_path_or_an_interface_are_refused() {
        for good in ["lab", "ci-1", "a"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "../x", "Lab", "a b", "-x", "a/b", &"x".repeat(25)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
