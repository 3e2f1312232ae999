//! The chassis of a lab host: ipmi_sim's `chassis_control` program.
//!
//! ipmi_sim runs `rivet lab chassis-control <host dir> get power boot` or
//! `… set power 1 boot pxe` and reads `param:value` lines back. Power is whether the host's
//! QEMU runs; the boot device, kept in a file, decides at each start whether the NIC
//! (iPXE) or the disk comes first.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::process::Process;

/// How to start one host's QEMU; written by `lab up` into the host's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) name: String,
    pub(crate) qemu: PathBuf,
    pub(crate) memory_mib: u32,
    pub(crate) disk: PathBuf,
    pub(crate) tap: String,
    pub(crate) mac: String,
}

const MACHINE: &str = "machine.json";
const BOOT: &str = "boot";
const PIDFILE: &str = "qemu.pid";

impl Machine {
    /// Writes the machine file, the initial boot device and SeaBIOS's serial-console port.
    pub(crate) fn install(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join(MACHINE), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join(BOOT), "default\n")?;
        // SeaBIOS and the iPXE ROM print only to VGA, which these machines lack; this
        // fw_cfg item (COM1's port, little-endian) copies their output to the serial log.
        std::fs::write(dir.join("sercon-port.bin"), 0x3f8u16.to_le_bytes())?;
        Ok(())
    }

    fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MACHINE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Starts QEMU (TCG, SeaBIOS, virtio disk and NIC) daemonized; network first when
    /// the boot device is `pxe`, the disk first otherwise.
    fn start(&self, dir: &Path, boot_device: &str) -> anyhow::Result<()> {
        let (disk_index, nic_index) = if boot_device == "pxe" { (2, 1) } else { (1, 2) };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("qemu.log"))?;
        let status = Command::new(&self.qemu)
            .args(["-name", &self.name])
            .args(["-accel", "tcg", "-M", "pc", "-nodefaults"])
            // Entropy for the agent's TLS: without it getrandom blocks early in boot.
            .args(["-device", "virtio-rng-pci"])
            .args(["-display", "none", "-smp", "1", "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-daemonize")
            .arg("-pidfile")
            .arg(dir.join(PIDFILE))
            .arg("-chardev")
            .arg(format!(
                "file,id=serial0,append=on,path={}",
                serial_log(dir).display()
            ))
            .args(["-serial", "chardev:serial0", "-fw_cfg"])
            .arg(format!(
                "name=etc/sercon-port,file={}",
                dir.join("sercon-port.bin").display()
            ))
            .arg("-monitor")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.join("monitor.sock").display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},format=qcow2,if=none,id=disk0",
                self.disk.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=disk0,bootindex={disk_index}"))
            .arg("-netdev")
            .arg(format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                self.tap
            ))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=net0,mac={},bootindex={nic_index}",
                self.mac
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting QEMU")?;
        if !status.success() {
            bail!(
                "QEMU failed to start ({status}); see {}",
                dir.join("qemu.log").display()
            );
        }
        Ok(())
    }
}

pub(crate) fn serial_log(dir: &Path) -> PathBuf {
    dir.join("serial.log")
}

/// The host's QEMU, if it runs.
pub(crate) fn running_qemu(dir: &Path) -> Option<Process> {
    super::process::qemu_from_pidfile(&dir.join(PIDFILE))
}

/// One ipmi_sim request; answers go to standard output.
pub(crate) fn run(dir: &Path, request: &[String]) -> anyhow::Result<()> {
    let machine = Machine::load(dir)?;
    let boot_device = || -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(dir.join(BOOT))?.trim().to_owned())
    };
    match request.split_first() {
        Some((op, params)) if op == "get" => {
            let mut out = std::io::stdout().lock();
            for param in params {
                match param.as_str() {
                    "power" => writeln!(out, "power:{}", u8::from(running_qemu(dir).is_some()))?,
                    "boot" => writeln!(out, "boot:{}", boot_device()?)?,
                    other => bail!("unknown parameter {other}"),
                }
            }
            Ok(())
        }
        Some((op, params)) if op == "set" => {
            for pair in params.chunks(2) {
                let [param, value] = pair else {
                    bail!("`set {}` has no value", pair.join(" "));
                };
                set(&machine, dir, param, value, &boot_device)?;
            }
            Ok(())
        }
        _ => bail!("expected `get <param>…` or `set <param> <value>…`, got {request:?}"),
    }
}

fn set(
    machine: &Machine,
    dir: &Path,
    param: &str,
    value: &str,
    boot_device: &dyn Fn() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let stop = || match running_qemu(dir) {
        Some(qemu) => qemu.stop(Duration::from_secs(3)),
        None => Ok(()),
    };
    match (param, value) {
        ("power", "1") if running_qemu(dir).is_none() => machine.start(dir, &boot_device()?),
        ("power", "1") => Ok(()),
        ("power", "0") => stop(),
        ("reset", _) => {
            stop()?;
            machine.start(dir, &boot_device()?)
        }
        // A soft power-off: ACPI power button; the guest may ignore it (the engine then
        // cuts power after its timeout).
        ("shutdown", _) => match UnixStream::connect(dir.join("monitor.sock")) {
            Ok(mut monitor) => Ok(monitor.write_all(b"system_powerdown\n")?),
            Err(_) => Ok(()),
        },
        ("boot", device) => {
            let path = dir.join(BOOT);
            let temporary = dir.join("boot.new");
            std::fs::write(&temporary, format!("{device}\n"))?;
            Ok(std::fs::rename(temporary, path)?)
        }
        ("identify", _) => Ok(()),
        (other, value) => bail!("cannot set {other} to {value}"),
    }
}
