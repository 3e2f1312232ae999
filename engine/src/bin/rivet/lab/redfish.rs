//! The Redfish flavour of a lab: every host is a libvirt domain of one private `libvirtd`,
//! and one sushy-tools emulator (its libvirt driver) is the Redfish BMC of them all, each
//! host being `/redfish/v1/Systems/<uuid>`.
//!
//! The daemon runs in session mode as `nobody` with its sockets, state and pool under the
//! lab's directory, inside the lab's namespace: it shares nothing with a system libvirtd,
//! and its QEMUs open the lab's taps (created for `nobody`) and nothing else.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::network::in_netns;
use super::process::{
    Process, find_tool, qemu_from_pidfile, random_bytes, run_checked, spawn_detached,
};

/// Where the emulator listens, on the lab's bridge address.
pub(crate) const SUSHY_PORT: u16 = 8000;
/// The account libvirtd and its QEMUs run as.
pub(crate) const USER: &str = "nobody";
const GROUP: &str = "nogroup";

/// The programs a Redfish lab needs, found before anything is made.
#[derive(Debug)]
pub(crate) struct RedfishTools {
    libvirtd: PathBuf,
    setpriv: PathBuf,
    virsh: PathBuf,
    sushy: PathBuf,
    /// A Python that has `bcrypt` (sushy's own), for the emulator's password file.
    python: PathBuf,
}

impl RedfishTools {
    pub(crate) fn find() -> anyhow::Result<Self> {
        // `just deps` installs sushy-tools into the checkout's venv.
        let sushy = find_tool("sushy-emulator").or_else(|err| {
            let venv = Path::new("target/venv/bin/sushy-emulator");
            if venv.is_file() {
                std::path::absolute(venv).context("locating target/venv")
            } else {
                Err(err)
            }
        })?;
        let python = sushy
            .parent()
            .map(|bin| bin.join("python3"))
            .filter(|python| python.is_file())
            .map_or_else(|| find_tool("python3"), Ok)?;
        Ok(Self {
            libvirtd: find_tool("libvirtd")?,
            setpriv: find_tool("setpriv")?,
            virsh: find_tool("virsh")?,
            sushy,
            python,
        })
    }
}

/// The private libvirtd's directory under the lab's.
pub(crate) fn libvirt_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("libvirt")
}

fn socket(lab_dir: &Path) -> PathBuf {
    libvirt_dir(lab_dir).join("run/libvirt/libvirt-sock")
}

/// The connection URI of the lab's libvirtd.
pub(crate) fn uri(lab_dir: &Path) -> String {
    format!("qemu:///session?socket={}", socket(lab_dir).display())
}

/// Where libvirtd records the PID of `domain`'s QEMU.
pub(crate) fn qemu_pidfile(lab_dir: &Path, domain: &str) -> PathBuf {
    libvirt_dir(lab_dir).join(format!("run/libvirt/qemu/run/{domain}.pid"))
}

/// Fails unless the daemon's account can reach `dir` (it may not exist yet): libvirtd and
/// its QEMUs run as [`USER`] and open the disks and consoles under it.
pub(crate) fn check_reachable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(metadata) = std::fs::metadata(ancestor) else {
            continue;
        };
        if metadata.permissions().mode() & 0o001 == 0 {
            bail!(
                "a Redfish lab's libvirtd runs as {USER} and cannot enter {} (mode {:o}); \
                 give a --state-dir every user can traverse (the default under \
                 /var/tmp/rivet-lab is)",
                ancestor.display(),
                metadata.permissions().mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// Opens the lab's own directories to the daemon's account, whatever the umask made them.
pub(crate) fn open_dirs(dirs: &[&Path]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for dir in dirs {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {} to {USER}", dir.display()))?;
    }
    Ok(())
}

/// Hands `path` (recursively) to the daemon's account.
pub(crate) fn give_to_daemon(path: &Path) -> anyhow::Result<()> {
    run_checked(
        Command::new("chown")
            .args(["-R", &format!("{USER}:{GROUP}")])
            .arg(path),
    )
    .map(drop)
}

/// Starts the lab's libvirtd in `netns` and waits for its socket.
pub(crate) fn start_libvirtd(
    tools: &RedfishTools,
    netns: &str,
    lab_dir: &Path,
) -> anyhow::Result<Process> {
    let dir = libvirt_dir(lab_dir);
    for sub in ["config/libvirt", "run", "cache", "data", "home", "pool"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    // No virtlogd: QEMU writes its own logs.
    std::fs::write(
        dir.join("config/libvirt/qemu.conf"),
        "stdio_handler = \"file\"\n",
    )?;
    give_to_daemon(&dir)?;
    let log = dir.join("libvirtd.log");
    let mut command = in_netns(netns, &tools.setpriv);
    command
        .args([
            &format!("--reuid={USER}"),
            &format!("--regid={GROUP}"),
            "--clear-groups",
        ])
        .arg(&tools.libvirtd)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_DATA_HOME", dir.join("data"));
    let daemon = spawn_detached(&mut command, &log)?;
    super::up::wait_for("libvirtd's socket", Duration::from_secs(60), || {
        if !daemon.is_running() {
            bail!("libvirtd exited:\n{}", super::up::tail(&log));
        }
        Ok(socket(lab_dir).exists())
    })?;
    // sushy uploads virtual-media images into the pool named `default`.
    let pool = dir.join("pool");
    virsh(
        tools,
        lab_dir,
        &[
            "pool-define-as",
            "default",
            "dir",
            "--target",
            &pool.to_string_lossy(),
        ],
    )?;
    virsh(tools, lab_dir, &["pool-start", "default"])?;
    Ok(daemon)
}

/// `virsh` against the lab's libvirtd.
pub(crate) fn virsh(tools: &RedfishTools, lab_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    virsh_at(&tools.virsh, lab_dir, args)
}

fn virsh_at(virsh: &Path, lab_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    run_checked(Command::new(virsh).arg("-c").arg(uri(lab_dir)).args(args))
}

/// One machine of the lab.
pub(crate) struct Domain<'a> {
    pub(crate) name: &'a str,
    pub(crate) uuid: &'a str,
    pub(crate) mac: &'a str,
    pub(crate) tap: &'a str,
    pub(crate) disk: &'a Path,
    pub(crate) serial_log: &'a Path,
    pub(crate) memory_mib: u32,
}

impl Domain<'_> {
    /// The domain's XML: TCG, q35, SeaBIOS on the serial console (sushy switches the
    /// loader when a boot mode is asked for), the NIC on its tap, an empty CD drive for
    /// virtual media, the console appended to `serial_log`.
    pub(crate) fn xml(&self) -> String {
        let escape = |path: &Path| {
            path.display()
                .to_string()
                .replace('&', "&amp;")
                .replace('\'', "&apos;")
                .replace('<', "&lt;")
        };
        format!(
            "<domain type='qemu'>\n\
             \x20 <name>{name}</name>\n\
             \x20 <uuid>{uuid}</uuid>\n\
             \x20 <memory unit='MiB'>{memory}</memory>\n\
             \x20 <vcpu>1</vcpu>\n\
             \x20 <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/>\
             <bios useserial='yes'/></os>\n\
             \x20 <features><acpi/><apic/></features>\n\
             \x20 <devices>\n\
             \x20   <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\n\
             \x20   <interface type='ethernet'><target dev='{tap}' managed='no'/>\
             <mac address='{mac}'/><model type='virtio'/></interface>\n\
             \x20   <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
             <target dev='sda' bus='sata'/><readonly/></disk>\n\
             \x20   <serial type='file'><source path='{serial}' append='on'/>\
             <target port='0'/></serial>\n\
             \x20 </devices>\n\
             </domain>\n",
            name = self.name,
            uuid = self.uuid,
            memory = self.memory_mib,
            disk = escape(self.disk),
            tap = self.tap,
            mac = self.mac,
            serial = escape(self.serial_log),
        )
    }
}

/// Defines `domain` in the lab's libvirtd (powered off).
pub(crate) fn define(
    tools: &RedfishTools,
    lab_dir: &Path,
    host_dir: &Path,
    domain: &Domain<'_>,
) -> anyhow::Result<()> {
    let file = host_dir.join("domain.xml");
    std::fs::write(&file, domain.xml())?;
    give_to_daemon(host_dir)?;
    virsh(tools, lab_dir, &["define", &file.to_string_lossy()])
        .with_context(|| format!("defining the domain of {}", domain.name))
        .map(drop)
}

/// Starts the emulator on `address` in `netns`, with HTTP Basic authentication of
/// `user`/`password`, and waits for it to listen.
pub(crate) fn start_sushy(
    tools: &RedfishTools,
    netns: &str,
    lab_dir: &Path,
    address: Ipv4Addr,
    user: &str,
    password: &str,
) -> anyhow::Result<Process> {
    let dir = lab_dir.join("sushy");
    std::fs::create_dir_all(&dir)?;
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt_hash(&tools.python, password)?;
    super::up::write_private(&htpasswd, &format!("{user}:{hash}\n"))?;
    // The emulator's configuration is Python; every value is a literal we write.
    let config = format!(
        "SUSHY_EMULATOR_LISTEN_IP = '{address}'\n\
         SUSHY_EMULATOR_LISTEN_PORT = {SUSHY_PORT}\n\
         SUSHY_EMULATOR_STATE_DIR = {state}\n\
         SUSHY_EMULATOR_AUTH_FILE = {htpasswd}\n\
         SUSHY_EMULATOR_LIBVIRT_URI = {uri}\n\
         SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False\n\
         SUSHY_EMULATOR_BOOT_LOADER_MAP = {{\n\
         \x20   'UEFI': {{'x86_64': '/usr/share/OVMF/OVMF_CODE_4M.fd'}},\n\
         \x20   'Legacy': {{'x86_64': '/usr/share/seabios/bios-256k.bin'}}}}\n\
         SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = '/usr/share/OVMF/OVMF_VARS_4M.fd'\n",
        state = python_str(&dir.join("state").display().to_string()),
        htpasswd = python_str(&htpasswd.display().to_string()),
        uri = python_str(&uri(lab_dir)),
    );
    let config_file = dir.join("emulator.conf");
    std::fs::write(&config_file, config)?;
    let log = dir.join("emulator.log");
    let emulator = spawn_detached(
        in_netns(netns, &tools.sushy)
            .arg("--config")
            .arg(&config_file),
        &log,
    )?;
    super::up::wait_for("sushy-emulator", Duration::from_secs(60), || {
        if !emulator.is_running() {
            bail!("sushy-emulator exited:\n{}", super::up::tail(&log));
        }
        Ok(std::fs::read_to_string(&log)?.contains("Running on"))
    })?;
    Ok(emulator)
}

/// `text` as a Python string literal.
fn python_str(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn bcrypt_hash(python: &Path, password: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(python)
        .args([
            "-c",
            "import bcrypt, sys; \
             print(bcrypt.hashpw(sys.stdin.readline().strip().encode(), \
             bcrypt.gensalt()).decode())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "hashing the BMC password with {} failed (is bcrypt installed? `just deps`): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Stops every domain of the lab's libvirtd, then any QEMU its PID files still name.
pub(crate) fn destroy_domains(virsh: &Path, lab_dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    if socket(lab_dir).exists() {
        let listed = virsh_at(virsh, lab_dir, &["list", "--name", "--state-running"]);
        for name in listed.unwrap_or_default().split_whitespace() {
            // Whatever survives is killed through its PID file below.
            let _ = virsh_at(virsh, lab_dir, &["destroy", name]);
        }
    }
    let run = libvirt_dir(lab_dir).join("run/libvirt/qemu/run");
    for entry in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "pid")
            && let Some(qemu) = qemu_from_pidfile(&path)
            && let Err(err) = qemu.stop(Duration::from_secs(5))
        {
            failures.push(format!("QEMU {}: {err:#}", qemu.pid));
        }
    }
    failures
}

/// A random UUID (version 4) for a domain.
pub(crate) fn random_uuid() -> anyhow::Result<String> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_xml_escapes_paths_and_names_the_tap_and_console() {
        let domain = Domain {
            name: "node-1",
            uuid: "0b5c3a52-8f1e-4f43-9c1c-6a8e2d9f0a01",
            mac: "52:54:00:77:00:01",
            tap: "tap1",
            disk: Path::new("/var/tmp/it's <here>/disk.qcow2"),
            serial_log: Path::new("/var/tmp/lab/serial.log"),
            memory_mib: 512,
        };
        let xml = domain.xml();
        assert!(xml.contains("<source file='/var/tmp/it&apos;s &lt;here>/disk.qcow2'/>"));
        assert!(xml.contains("<target dev='tap1' managed='no'/>"));
        assert!(xml.contains("<source path='/var/tmp/lab/serial.log' append='on'/>"));
        assert!(xml.contains("<memory unit='MiB'>512</memory>"));
    }

    #[test]
    fn paths_become_python_literals_that_mean_the_same() {
        assert_eq!(python_str("/var/tmp/lab"), "'/var/tmp/lab'");
        assert_eq!(python_str(r"/it's\\here"), r"'/it\'s\\\\here'");
    }

    #[test]
    fn uuids_are_version_4() {
        let uuid = random_uuid().unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "{uuid}");
        assert_ne!(uuid, random_uuid().unwrap());
    }
}
