//! A boot lab for `rivet boot serve` tests: a namespace with bridge `br0` (10.99.0.1/24),
//! an HTTP root with the test kernel and a marker initramfs, a host table, and helpers to
//! start the server and a separate address server (dnsmasq).

use std::path::PathBuf;
use std::time::Duration;

use rivet_tests::qemu::{GuestBuilder, guest_kernel, marker_initramfs};
use rivet_tests::{AddressServer, Daemon, Netns, cargo_bin, scratch_dir};

pub(crate) const SERVER: &str = "10.99.0.1";
pub(crate) const MARKER: &str = "RIVET-PXE-MARKER";

/// Generous: a TCG boot is 8-16 s alone, much slower while other tests load the machine.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

pub(crate) struct BootLab {
    pub(crate) ns: Netns,
    pub(crate) dir: tempfile::TempDir,
}

impl BootLab {
    /// The namespace, bridge and HTTP root (`http/vmlinuz`, `http/initrd.img`).
    pub(crate) fn new(prefix: &str) -> Self {
        let ns = Netns::new(prefix);
        ns.add_bridge("br0", &format!("{SERVER}/24"));
        let dir = scratch_dir(prefix);
        let http = dir.path().join("http");
        std::fs::create_dir(&http).unwrap();
        std::fs::copy(guest_kernel(), http.join("vmlinuz")).unwrap();
        marker_initramfs(
            &http.join("initrd.img"),
            MARKER,
            "echo RIVET-CMDLINE $(cat /proc/cmdline)",
        );
        Self { ns, dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `hosts.json`.
    pub(crate) fn hosts(&self, json: &str) {
        std::fs::write(self.path("hosts.json"), json).unwrap();
    }

    /// Starts `rivet boot serve` on br0 with `extra` arguments and waits until it serves.
    pub(crate) fn serve(&self, extra: &[&str]) -> Daemon {
        let mut command = self.ns.command(cargo_bin("rivet"));
        command
            .args(["-v", "boot", "serve", "--interface", "br0", "--hosts"])
            .arg(self.path("hosts.json"))
            .arg("--http-root")
            .arg(self.path("http"))
            .arg("--lease-db")
            .arg(self.path("leases.redb"))
            .args(extra);
        let mut daemon = Daemon::spawn("rivet-boot", self.dir.path(), &mut command);
        daemon.wait_for_log("HTTP serving", Duration::from_secs(30));
        daemon
    }

    /// A separate address server: dnsmasq (addresses only, no boot options, no DNS) in its
    /// own namespace, joined to br0 by a veth pair, serving 10.99.0.100-199.
    pub(crate) fn address_server(&self) -> (Netns, Daemon) {
        let server = AddressServer::start(
            &self.ns,
            "br0",
            "10.99.0.2/24",
            ("10.99.0.100", "10.99.0.199"),
            self.dir.path(),
        );
        (server.ns, server.daemon)
    }
}

/// SeaBIOS and iPXE's option ROM print to the VGA console, which these guests lack; the
/// `etc/sercon-port` fw_cfg item (a little-endian port number, as `-nographic` sets it)
/// copies their output to COM1 so the serial log shows the boot.
pub(crate) fn bios_console_on_serial(guest: GuestBuilder, dir: &std::path::Path) -> GuestBuilder {
    let port = dir.join("sercon-port.bin");
    std::fs::write(&port, 0x3f8u16.to_le_bytes()).unwrap();
    guest
        .arg("-fw_cfg")
        .arg(format!("name=etc/sercon-port,file={}", port.display()))
}
