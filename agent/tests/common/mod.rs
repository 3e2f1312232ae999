//! Shared by the agent's integration tests: the agent image (built once per binary, cached
//! under `target/agent-image/`), guests that run one job, and disk seeding with real tools.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rivet_agent::console;
use rivet_tests::qemu::{Firmware, Guest, GuestBuilder};
use rivet_tests::workspace_root;
use sha2::{Digest, Sha256};

mod disks;
pub use disks::*;

pub fn sha256_file(path: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's kernel, initramfs and ISO.
#[derive(Debug, Clone)]
pub struct AgentImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub iso: PathBuf,
}

static IMAGE_LOCK: Mutex<()> = Mutex::new(());

/// Builds the agent image from this test build's `rivet-agent` with `scripts/agent-image.sh
/// --fast`, once per content: the cache key covers the binary and every file of the image.
pub fn agent_image() -> AgentImage {
    let _guard = IMAGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_rivet-agent"));
    let mut key = Sha256::new();
    for path in [
        binary.clone(),
        root.join("scripts/agent-image.sh"),
        root.join("agent/image/init"),
        root.join("agent/image/udhcpc.script"),
    ] {
        key.update(std::fs::read(&path).unwrap());
    }
    let key = hex(&key.finalize()[..8]);
    let out = root.join(format!("target/agent-image/test-{key}"));
    let image = AgentImage {
        kernel: out.join("vmlinuz"),
        initramfs: out.join("initramfs.img"),
        iso: out.join("rivet-agent.iso"),
    };
    if image.iso.exists() {
        return image;
    }
    let building = root.join(format!("target/agent-image/test-{key}.partial"));
    let _ = std::fs::remove_dir_all(&building);
    let started = Instant::now();
    let status = Command::new(root.join("scripts/agent-image.sh"))
        // The ISO runs an inventory job, so a boot from it shows what it saw.
        .args(["--fast", "--iso-cmdline", "rivet.job=inventory", "--binary"])
        .arg(&binary)
        .arg("--out")
        .arg(&building)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/agent-image.sh failed");
    std::fs::rename(&building, &out).unwrap();
    eprintln!("built the agent image in {:?}", started.elapsed());
    image
}

/// A guest booted from the agent image with one job.
pub struct JobGuest {
    builder: GuestBuilder,
    dir: PathBuf,
}

/// What a job guest printed.
#[derive(Debug)]
pub struct JobRun {
    pub serial: String,
    pub result: serde_json::Value,
    /// Guest uptime when the agent said it was ready.
    pub ready_uptime: Option<f64>,
}

impl JobGuest {
    /// Direct kernel boot of the agent image with `params` appended to the command line.
    pub fn direct(name: &str, dir: &Path, params: &str) -> Self {
        let image = agent_image();
        let append = format!("console=ttyS0 quiet panic=-1 {params}");
        Self::with_initrd(name, dir, &image.initramfs, &append)
    }

    /// Direct kernel boot with any initramfs (the agent's plus an overlay).
    pub fn with_initrd(name: &str, dir: &Path, initrd: &Path, append: &str) -> Self {
        let image = agent_image();
        let builder =
            GuestBuilder::new(name)
                .memory_mib(1024)
                .kernel(&image.kernel, initrd, append);
        Self {
            builder,
            dir: dir.to_owned(),
        }
    }

    /// Boots nothing directly: the firmware finds the boot medium among the devices.
    pub fn firmware_boot(name: &str, dir: &Path, firmware: Firmware) -> Self {
        Self {
            builder: GuestBuilder::new(name).memory_mib(1024).firmware(firmware),
            dir: dir.to_owned(),
        }
    }

    pub fn arg(mut self, arg: impl Into<std::ffi::OsString>) -> Self {
        self.builder = self.builder.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<std::ffi::OsString>>(mut self, args: I) -> Self {
        for arg in args {
            self.builder = self.builder.arg(arg);
        }
        self
    }

    /// A raw disk image on a virtio-blk device with `extra` device properties.
    pub fn virtio_disk(self, path: &Path, id: &str, drive_opts: &str, device_opts: &str) -> Self {
        self.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id={id}{drive_opts}",
                path.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive={id}{device_opts}"))
    }

    /// Starts the guest and leaves it to the test.
    pub fn start(self) -> Guest {
        self.builder.start(&self.dir)
    }

    /// Starts the guest, waits for the job's result and for the guest to power off.
    pub fn run(self, timeout: Duration) -> JobRun {
        let started = Instant::now();
        let mut guest = self.builder.start(&self.dir);
        guest.wait_for_serial(console::RESULT_END, timeout);
        guest.wait_for_exit(Duration::from_secs(120));
        let serial = guest.serial();
        let result = console::results_in(&serial)
            .pop()
            .unwrap_or_else(|| panic!("no result on the console:\n{serial}"));
        let ready_uptime = serial
            .lines()
            .find(|l| l.contains(console::READY))
            .and_then(|l| l.split("uptime ").nth(1))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok());
        eprintln!(
            "guest ran its job in {:?} (agent ready at guest uptime {ready_uptime:?} s)",
            started.elapsed()
        );
        JobRun {
            serial,
            result,
            ready_uptime,
        }
    }
}
