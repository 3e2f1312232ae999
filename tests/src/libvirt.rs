//! A private libvirt daemon with real QEMU domains, for tests that need power and boot
//! changes to really start, stop and redirect a machine.
//!
//! The daemon runs in **session mode as `nobody`**, with its configuration, sockets, state
//! and disks in a scratch directory: it shares nothing with a system libvirtd (which other
//! tests or people may be running), needs no virtlogd (`stdio_handler = "file"`), and its
//! domains use TCG (`type='qemu'`). Dropping it destroys every running domain, kills any
//! QEMU left behind by its pid file, then stops the daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::net::Netns;
use crate::paths::scratch_dir;
use crate::process::{ChildGuard, wait_until};
use crate::tools::{require_root, require_tool};

/// The unprivileged account the daemon and its QEMU processes run as.
pub const USER: &str = "nobody";
const GROUP: &str = "nogroup";

/// A running private libvirtd.
#[derive(Debug)]
pub struct Libvirtd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<ChildGuard>,
}

impl Libvirtd {
    /// Starts the daemon and creates the `default` storage pool sushy-tools uploads
    /// virtual-media images into.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts the daemon inside `ns`: its domains' tap NICs are that namespace's (create
    /// them with [`Netns::add_tap_owned`] for [`USER`]).
    pub fn start_in(ns: &Netns) -> Self {
        Self::launch(Some(ns))
    }

    fn launch(ns: Option<&Netns>) -> Self {
        require_root();
        let libvirtd = require_tool("libvirtd");
        let setpriv = require_tool("setpriv");
        require_tool("virsh");
        require_tool("qemu-system-x86_64");
        let dir = scratch_dir("libvirt");
        for sub in [
            "config/libvirt",
            "run",
            "cache",
            "data",
            "home",
            "pool",
            "disks",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create libvirt dirs");
        }
        std::fs::write(
            dir.path().join("config/libvirt/qemu.conf"),
            "stdio_handler = \"file\"\n",
        )
        .expect("write qemu.conf");
        // The scratch directory is private to root; nobody must reach into it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("open the scratch dir");
        chown_recursive(dir.path());
        let log = dir.path().join("libvirtd.log");
        let file = std::fs::File::create(&log).expect("create the libvirtd log");
        let err = file.try_clone().expect("clone the log handle");
        let mut command = match ns {
            Some(ns) => ns.command(setpriv),
            None => Command::new(setpriv),
        };
        command
            .args([
                &format!("--reuid={USER}"),
                &format!("--regid={GROUP}"),
                "--clear-groups",
            ])
            .arg(&libvirtd)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", dir.path().join("home"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let mut child = ChildGuard::spawn("libvirtd", &mut command);
        let socket = dir.path().join("run/libvirt/libvirt-sock");
        wait_until("libvirtd's socket", Duration::from_secs(30), || {
            if let Some(status) = child.try_wait() {
                panic!(
                    "libvirtd exited ({status}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            socket.exists()
        });
        let daemon = Self {
            dir,
            socket,
            child: Some(child),
        };
        let pool = daemon.dir.path().join("pool");
        daemon.virsh(&[
            "pool-define-as",
            "default",
            "dir",
            "--target",
            &pool.display().to_string(),
        ]);
        daemon.virsh(&["pool-start", "default"]);
        daemon
    }

    /// The connection URI for clients (sushy-tools, virsh).
    pub fn uri(&self) -> String {
        format!("qemu:///session?socket={}", self.socket.display())
    }

    /// A directory the daemon's QEMU processes can read and write (for disks, serial logs).
    pub fn disk_dir(&self) -> PathBuf {
        self.dir.path().join("disks")
    }

    /// Runs virsh against this daemon and fails the test if it fails.
    pub fn virsh(&self, args: &[&str]) -> String {
        let out = self.try_virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .output()
            .expect("run virsh")
    }

    /// `running`, `shut off`, … as virsh reports it.
    pub fn domain_state(&self, name: &str) -> String {
        self.virsh(&["domstate", name]).trim().to_owned()
    }

    /// The domain's current XML.
    pub fn domain_xml(&self, name: &str) -> String {
        self.virsh(&["dumpxml", name])
    }

    /// Defines a TCG domain with a 64 MiB qcow2 disk, a user-mode NIC (for `Pxe`), an
    /// empty SATA CD-ROM (for `Cd`) and a serial console to a file; returns the serial
    /// log's path.
    pub fn define_domain(&self, name: &str, uuid: &str, mac: &str) -> PathBuf {
        let disk = self.disk_dir().join(format!("{name}.qcow2"));
        let status = Command::new(require_tool("qemu-img"))
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .expect("run qemu-img");
        assert!(status.success(), "qemu-img create failed");
        self.define(&Domain {
            name,
            uuid,
            mac,
            nic: Nic::User,
            disk: DomainDisk::Qcow2(&disk),
            disk_serial: None,
            memory_mib: 256,
        })
    }

    /// Defines `domain` (TCG, q35, SeaBIOS printing on the serial console unless the BMC
    /// switches it to UEFI, an empty SATA CD-ROM, the serial console to a file); returns
    /// the serial log's path. Disks must be under [`Self::disk_dir`].
    pub fn define(&self, domain: &Domain<'_>) -> PathBuf {
        let Domain {
            name, uuid, mac, ..
        } = domain;
        let disks = self.disk_dir();
        let serial = disks.join(format!("{name}-serial.log"));
        chown_recursive(&disks);
        let interface = match domain.nic {
            Nic::User => "<interface type='user'>".to_owned(),
            Nic::Tap(tap) => {
                format!("<interface type='ethernet'><target dev='{tap}' managed='no'/>")
            }
        };
        let (format, disk) = match domain.disk {
            DomainDisk::Qcow2(path) => ("qcow2", path),
            DomainDisk::Raw(path) => ("raw", path),
        };
        let disk_serial = domain
            .disk_serial
            .map(|serial| format!("<serial>{serial}</serial>"))
            .unwrap_or_default();
        let xml = format!(
            "<domain type='qemu'>\n\
             \x20 <name>{name}</name>\n\
             \x20 <uuid>{uuid}</uuid>\n\
             \x20 <memory unit='MiB'>{memory}</memory>\n\
             \x20 <vcpu>1</vcpu>\n\
             \x20 <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/>\
             <bios useserial='yes'/></os>\n\
             \x20 <features><acpi/><apic/></features>\n\
             \x20 <devices>\n\
             \x20   <disk type='file' device='disk'><driver name='qemu' type='{format}'/>\
             <source file='{disk}'/><target dev='vda' bus='virtio'/>{disk_serial}</disk>\n\
             \x20   {interface}<mac address='{mac}'/><model type='virtio'/></interface>\n\
             \x20   <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
             <target dev='sda' bus='sata'/><readonly/></disk>\n\
             \x20   <serial type='file'><source path='{serial}' append='on'/><target port='0'/></serial>\n\
             \x20 </devices>\n\
             </domain>\n",
            memory = domain.memory_mib,
            disk = disk.display(),
            serial = serial.display(),
        );
        let file = self.dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).expect("write the domain XML");
        self.virsh(&["define", &file.display().to_string()]);
        serial
    }

    fn qemu_pids(&self) -> Vec<i32> {
        let run = self.dir.path().join("run/libvirt/qemu/run");
        std::fs::read_dir(run)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|text| text.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A domain for [`Libvirtd::define`].
#[derive(Debug, Clone)]
pub struct Domain<'a> {
    pub name: &'a str,
    pub uuid: &'a str,
    pub mac: &'a str,
    pub nic: Nic<'a>,
    pub disk: DomainDisk<'a>,
    /// The disk's serial number, as the guest's inventory reports it.
    pub disk_serial: Option<&'a str>,
    pub memory_mib: u32,
}

/// A domain's NIC.
#[derive(Debug, Clone, Copy)]
pub enum Nic<'a> {
    /// QEMU's user-mode network (no PXE server).
    User,
    /// An existing tap (in the daemon's namespace) that the domain opens.
    Tap(&'a str),
}

/// A domain's disk image.
#[derive(Debug, Clone, Copy)]
pub enum DomainDisk<'a> {
    Qcow2(&'a Path),
    Raw(&'a Path),
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(["list", "--name", "--state-running"])
            .output()
        {
            for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.try_virsh(&["destroy", name]);
            }
        }
        // QEMU detaches from the daemon; anything its pid files still name goes too.
        for pid in self.qemu_pids() {
            // SAFETY: kill has no memory-safety preconditions; a stale pid yields ESRCH.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        drop(self.child.take());
    }
}

fn chown_recursive(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{GROUP}")])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {} failed", path.display());
}
