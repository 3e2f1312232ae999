//! QEMU guests for tests: TCG only (this machine's /dev/kvm hangs stock kernels), serial
//! console captured to a file, killed when dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net::Netns;
use crate::process::ChildGuard;
use crate::qmp::Qmp;
use crate::tools::require_tool;

/// The host's Debian kernel, which boots under TCG in about two seconds of guest time.
pub fn guest_kernel() -> PathBuf {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("read /boot")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels
        .pop()
        .expect("no /boot/vmlinuz-*: the linux-image-amd64 package is missing; run `just deps`")
}

/// Firmware a guest boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on the `pc` machine.
    Bios,
    /// OVMF on `q35`, with a private copy of the variable store.
    Uefi,
}

/// How to start a guest. Every option maps onto one QEMU flag; anything else goes through
/// [`GuestBuilder::arg`].
#[derive(Debug)]
pub struct GuestBuilder {
    name: String,
    memory_mib: u32,
    firmware: Firmware,
    netns: Option<String>,
    qmp: bool,
    args: Vec<OsString>,
}

impl GuestBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            memory_mib: 512,
            firmware: Firmware::Bios,
            netns: None,
            qmp: false,
            args: Vec::new(),
        }
    }

    /// Gives the guest a QMP socket, so [`Guest::press_power_button`] works.
    pub fn with_qmp(mut self) -> Self {
        self.qmp = true;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.firmware = firmware;
        self
    }

    /// Runs QEMU inside `netns` (so a tap NIC can join a bridge there).
    pub fn in_netns(mut self, netns: &Netns) -> Self {
        self.netns = Some(netns.name().to_owned());
        self
    }

    /// Direct kernel boot.
    pub fn kernel(self, kernel: &Path, initrd: &Path, append: &str) -> Self {
        self.arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(append)
    }

    /// A virtio NIC on tap `ifname` (created beforehand with [`Netns::add_tap`]).
    pub fn tap_nic(self, ifname: &str, mac: &str) -> Self {
        let id = format!("n{}", self.args.len());
        self.arg("-netdev")
            .arg(format!(
                "tap,id={id},ifname={ifname},script=no,downscript=no"
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev={id},mac={mac}"))
    }

    /// A raw or qcow2 file as a virtio disk with an optional serial number.
    pub fn virtio_disk(self, path: &Path, format: &str, serial: Option<&str>) -> Self {
        let id = format!("d{}", self.args.len());
        let serial = serial.map(|s| format!(",serial={s}")).unwrap_or_default();
        self.arg("-drive")
            .arg(format!(
                "file={},format={format},if=none,id={id}",
                path.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive={id}{serial}"))
    }

    /// Any other QEMU argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the guest; its serial console is written to `<dir>/<name>-serial.log`.
    pub fn start(self, dir: &Path) -> Guest {
        let qemu = require_tool("qemu-system-x86_64");
        let serial_log = dir.join(format!("{}-serial.log", self.name));
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&qemu);
                command
            }
            None => Command::new(&qemu),
        };
        command
            .args([
                "-accel",
                "tcg",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-m")
            .arg(self.memory_mib.to_string())
            .arg("-serial")
            .arg(format!("file:{}", serial_log.display()));
        match self.firmware {
            Firmware::Bios => {
                command.args(["-M", "pc"]);
            }
            Firmware::Uefi => {
                let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
                let vars_template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
                assert!(
                    code.exists() && vars_template.exists(),
                    "OVMF is missing; run `just deps`"
                );
                let vars = dir.join(format!("{}-vars.fd", self.name));
                std::fs::copy(vars_template, &vars).expect("copy the OVMF variable store");
                command
                    .args(["-M", "q35", "-drive"])
                    .arg(format!(
                        "if=pflash,format=raw,readonly=on,file={}",
                        code.display()
                    ))
                    .arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", vars.display()));
            }
        }
        let qmp_socket = self.qmp.then(|| Qmp::socket(dir, &self.name));
        if let Some(socket) = &qmp_socket {
            command.args(Qmp::args(socket));
        }
        command.args(&self.args);
        let child = ChildGuard::spawn(&format!("qemu guest {}", self.name), &mut command);
        Guest {
            name: self.name,
            serial_log,
            qmp_socket,
            child,
        }
    }
}

/// A running guest.
#[derive(Debug)]
pub struct Guest {
    name: String,
    serial_log: PathBuf,
    qmp_socket: Option<PathBuf>,
    child: ChildGuard,
}

impl Guest {
    /// Presses the ACPI power button (what a BMC's soft power-off does); `false` when the
    /// guest was started without [`GuestBuilder::with_qmp`] or has exited already.
    pub fn press_power_button(&mut self) -> bool {
        match &self.qmp_socket {
            Some(socket) if self.child.try_wait().is_none() => {
                Qmp::connect(socket, Duration::from_secs(10))
                    .execute("system_powerdown", serde_json::json!({}));
                true
            }
            _ => false,
        }
    }

    /// Everything the guest has printed on its serial console so far.
    pub fn serial(&self) -> String {
        std::fs::read(&self.serial_log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the serial console shows `marker`; on timeout the test fails with the
    /// console's last lines, which is usually all one needs to see why.
    pub fn wait_for_serial(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial();
            if serial.contains(marker) {
                return serial;
            }
            if Instant::now() > deadline {
                panic!(
                    "guest {} did not print {marker:?} within {timeout:?}; its console ended with:\n{}",
                    self.name,
                    tail(&serial, 40)
                );
            }
            if let Some(status) = self.child.try_wait() {
                panic!(
                    "guest {} exited ({status}) without printing {marker:?}; its console ended with:\n{}",
                    self.name,
                    tail(&serial, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The file the serial console is written to.
    pub fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    /// Whether QEMU has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().is_some()
    }

    /// Waits for QEMU to exit (the guest powered off; `-no-reboot` turns reboots into exits).
    pub fn wait_for_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().is_none() {
            assert!(
                Instant::now() < deadline,
                "guest {} still running after {timeout:?}; console:\n{}",
                self.name,
                tail(&self.serial(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A minimal initramfs: busybox, an `/init` that mounts /proc, /sys and /dev, runs `script`
/// (shell, may be empty), prints `marker` and powers off. Written as an uncompressed newc
/// cpio, which every kernel accepts.
pub fn marker_initramfs(path: &Path, marker: &str, script: &str) {
    let busybox = require_tool("busybox");
    let busybox_bytes = std::fs::read(&busybox).expect("read busybox");
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         {script}\n\
         echo {marker}\n\
         poweroff -f\n"
    );
    let mut archive = Cpio::default();
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        archive.dir(dir);
    }
    archive.file("bin/busybox", 0o755, &busybox_bytes);
    archive.file("init", 0o755, init.as_bytes());
    std::fs::write(path, archive.finish()).expect("write the initramfs");
}

/// A writer for the "newc" cpio format the kernel unpacks into its initial root.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    pub fn file(&mut self, name: &str, permissions: u32, contents: &[u8]) {
        self.entry(name, 0o100_000 | permissions, contents);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes());
    }

    fn entry(&mut self, name: &str, mode: u32, contents: &[u8]) {
        self.inode += 1;
        let size = u32::try_from(contents.len()).expect("initramfs members are under 4 GiB");
        let name_len = u32::try_from(name.len() + 1).expect("short name");
        let fields = [self.inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, name_len, 0];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(contents);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// A boot sector that prints a marker on COM1 and halts:
/// `cli; xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8; .l: lodsb; test al,al; jz .h;
/// out dx,al; jmp .l; .h: hlt; jmp .h; msg: db …, 0`.
pub fn marker_boot_sector(marker: &str) -> Vec<u8> {
    let mut sector = vec![
        0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xBE, 0x16, 0x7C, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74,
        0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD,
    ];
    assert_eq!(sector.len(), 0x16, "the message starts at 0x7c16");
    sector.extend_from_slice(marker.as_bytes());
    sector.extend_from_slice(b"\r\n\0");
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xAA]);
    sector
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::scratch_dir;

    #[test]
    fn cpio_archives_unpack_with_the_real_cpio() {
        let cpio_tool = require_tool("cpio");
        let dir = scratch_dir("cpio");
        let mut archive = Cpio::default();
        archive.dir("etc");
        archive.file("etc/hello", 0o644, b"hello world\n");
        archive.symlink("greeting", "etc/hello");
        std::fs::write(dir.path().join("a.cpio"), archive.finish()).unwrap();
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let status = Command::new(cpio_tool)
            .args(["-i", "-d", "-F"])
            .arg(dir.path().join("a.cpio"))
            .current_dir(&out_dir)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(out_dir.join("greeting")).unwrap(),
            "hello world\n"
        );
    }

    #[test]
    fn vm_a_marker_initramfs_boots_to_its_marker_under_tcg() {
        let dir = scratch_dir("guest");
        let initrd = dir.path().join("initrd.cpio");
        marker_initramfs(&initrd, "RIVET-HARNESS-MARKER", "echo script-ran");
        let mut guest = GuestBuilder::new("marker")
            .kernel(&guest_kernel(), &initrd, "console=ttyS0 quiet panic=-1")
            .start(dir.path());
        let serial = guest.wait_for_serial("RIVET-HARNESS-MARKER", Duration::from_secs(120));
        assert!(serial.contains("script-ran"));
        guest.wait_for_exit(Duration::from_secs(60));
    }
}
