//! The whole lifecycle through Redfish, on real peers only: `rivet serve` (real drivers,
//! authoritative DHCP, iPXE over HTTP, per-host agent ISOs, the agent channel) in a
//! network namespace; sushy-tools' emulator with its libvirt driver as the BMC, in front of
//! a private libvirtd whose TCG domain sits on a tap in that namespace; the agent image
//! built by `scripts/agent-image.sh`. One host, in UEFI mode (OVMF), network-boots the
//! agent and goes enroll → inspect → available → provision a qcow2 → boots its disk through
//! the image's ESP → deprovision → delete; another, in legacy mode (SeaBIOS), boots the
//! agent from its own ISO through Redfish virtual media and is provisioned.
//!
//! Phase wall times are printed (`e2e phase …`), never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../agent/tests/common/disks.rs"]
mod disks;
#[path = "common/e2e.rs"]
mod e2e;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{
    DISK_BYTES, DISK_MARKER, Dhcp, Lab, PHASE_TIMEOUT, Phases, SERVER, boot_code,
    build_agent_image, config_drive_meta_data, make_image, tail,
};
use rivet_engine::lifecycle::ProvisioningState as S;
use rivet_tests::libvirt::{Domain, DomainDisk, Libvirtd, Nic, USER};
use rivet_tests::sushy::{
    SUSHY_NETNS_PORT, SUSHY_PASSWORD, SUSHY_USERNAME, SushyDriver, SushyEmulator,
};
use rivet_tests::{Netns, scratch_dir, wait_until};

const MAC: &str = "52:54:00:e2:e0:02";
const UUID: &str = "5b0e6c1e-4c55-4b58-9d6c-2f1f1f0e2e02";
const DOMAIN: &str = "e2e-redfish";
const HOST: &str = "redfish-node";

/// The lab, the BMC emulator and the machine behind it. Fields drop in order: the daemon
/// first, then the BMC, then the machine, then the namespace.
struct Rig {
    lab: Lab,
    sushy: SushyEmulator,
    libvirt: Libvirtd,
    serial: PathBuf,
    disk: PathBuf,
    raw_image: PathBuf,
    digest: String,
    _ns: Arc<Netns>,
}

impl Rig {
    /// Everything up to a running `rivet serve`, with the agent's ISO when `iso`.
    fn start(phases: &mut Phases, iso: bool) -> Self {
        let ns = Arc::new(Netns::new("rf"));
        ns.add_bridge("br0", &format!("{SERVER}/24"));
        ns.add_tap_owned("tap0", "br0", USER);
        let dir = scratch_dir("e2e-redfish");
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        build_agent_image(&files.join("agent"), iso);
        let (raw_image, digest) = make_image(dir.path(), &files);

        let libvirt = Libvirtd::start_in(&ns);
        let disk = libvirt.disk_dir().join("root.raw");
        disks::sparse_file(&disk, DISK_BYTES);
        let serial = libvirt.define(&Domain {
            name: DOMAIN,
            uuid: UUID,
            mac: MAC,
            nic: Nic::Tap("tap0"),
            disk: DomainDisk::Raw(&disk),
            disk_serial: Some("E2E-ROOT"),
            memory_mib: 1024,
        });
        let sushy = SushyEmulator::start_in(&ns, SushyDriver::Libvirt(libvirt.uri()));
        let lab = Lab::start(
            ns.clone(),
            dir,
            &files,
            Dhcp::Authoritative,
            HOST,
            SUSHY_PASSWORD,
        );
        phases.end("setup (agent image, qcow2, netns, libvirtd, sushy-emulator, rivet serve)");
        Self {
            lab,
            sushy,
            libvirt,
            serial,
            disk,
            raw_image,
            digest,
            _ns: ns,
        }
    }

    fn enroll(&self, scheme: &str, boot_mode: &str) {
        let bmc = format!("{scheme}+http://127.0.0.1:{SUSHY_NETNS_PORT}/redfish/v1/Systems/{UUID}");
        self.lab.rivet_host(&[
            "enroll",
            HOST,
            "--bmc",
            &bmc,
            "--username",
            SUSHY_USERNAME,
            "--mac",
            MAC,
            "--boot-mode",
            boot_mode,
        ]);
    }

    fn console(&self) -> String {
        std::fs::read(&self.serial)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits for `marker` on the console after byte `from`; returns the console from there.
    fn wait_for_console(&self, marker: &str, from: usize) -> String {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        let mut next_check = Instant::now();
        loop {
            if Instant::now() >= next_check {
                self.lab.fail_if_failing();
                next_check = Instant::now() + Duration::from_secs(3);
            }
            let console = self.console();
            let after = console.get(from..).unwrap_or_default();
            if after.contains(marker) {
                return after.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{marker} did not appear on the console; its tail:\n{}\nsushy log:\n{}\nserve log:\n{}",
                tail(after, 40),
                tail(&self.sushy.log(), 20),
                tail(&self.lab.serve.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Provisions, then waits for the domain to print the image's marker from its disk.
    fn provision_and_boot(&self, phases: &mut Phases) {
        let from = self.console().len();
        self.lab.provision(&self.digest);
        self.lab.wait_settled(S::Provisioned);
        phases.end("provision (deploy, boot to disk)");
        self.wait_for_console(DISK_MARKER, from);
        assert_eq!(self.libvirt.domain_state(DOMAIN), "running");
        phases.end("provisioned → the image printed its marker");
        disks::assert_deployed(&self.raw_image, &self.disk);
        assert_eq!(
            boot_code(&self.disk),
            boot_code(&self.raw_image),
            "the image's boot code"
        );
        let meta_data = config_drive_meta_data(&self.disk, self.lab.dir.path());
        assert_eq!(meta_data["name"], HOST, "{meta_data}");
    }

    fn delete(&self, phases: &mut Phases) {
        phases.restart();
        self.lab.rivet_host(&["delete", HOST]);
        wait_until("the host to be deleted", PHASE_TIMEOUT, || {
            self.lab.view().is_none()
        });
        wait_until("the domain to be off", PHASE_TIMEOUT, || {
            self.libvirt.domain_state(DOMAIN) == "shut off"
        });
        phases.end("delete");
    }
}

#[test]
fn vm_netns_a_redfish_host_network_boots_the_agent_from_enroll_to_delete() {
    let mut phases = Phases::start();
    let rig = Rig::start(&mut phases, false);

    // UEFI: sushy gives the domain OVMF, whose iPXE (the NIC's EFI ROM) boots the agent, and
    // the provisioned disk boots through its ESP.
    rig.enroll("redfish", "uefi");
    let console = rig.wait_for_console("connected to the engine", 0);
    assert!(
        console.contains(&format!("/boot/{}.ipxe", MAC.replace(':', "-"))),
        "iPXE fetched the host's script: {}",
        tail(&console, 60)
    );
    assert!(
        rig.libvirt.domain_xml(DOMAIN).contains("OVMF_CODE"),
        "sushy switched the domain to UEFI"
    );
    phases.end("enroll → agent connected (Redfish, UEFI network boot)");
    rig.lab.wait_settled(S::Available);
    phases.end("agent connected → available (inspect, clean)");
    rig.lab.assert_inventory(MAC);

    rig.provision_and_boot(&mut phases);

    let from = rig.console().len();
    rig.lab.rivet_host(&["deprovision", HOST]);
    rig.lab.wait_settled(S::Available);
    rig.wait_for_console("connected to the engine", from);
    phases.end("deprovision (agent boot, metadata clean)");
    disks::assert_unbootable(&rig.disk);
    let timeline = rig.lab.rivet_host(&["timeline", HOST]).stdout;
    eprintln!("{}", String::from_utf8_lossy(&timeline));

    rig.delete(&mut phases);
    let log = rig.sushy.log();
    assert!(
        log.contains("Systems/") && log.contains("Actions/ComputerSystem.Reset"),
        "the engine drove power through Redfish: {}",
        tail(&log, 40)
    );
    phases.total();
}

#[test]
fn vm_netns_a_redfish_virtual_media_host_boots_its_own_agent_iso_and_is_provisioned() {
    let mut phases = Phases::start();
    let rig = Rig::start(&mut phases, true);

    // Legacy: SeaBIOS boots the ISO, then the disk's MBR boot code.
    rig.enroll("redfish-virtualmedia", "legacy");
    let console = rig.wait_for_console("connected to the engine", 0);
    assert!(
        console.contains("boot medium /dev/"),
        "the agent found its ISO: {}",
        tail(&console, 60)
    );
    assert!(
        !console.contains(".ipxe"),
        "nothing network-booted: {}",
        tail(&console, 60)
    );
    phases.end("enroll → agent connected (Redfish virtual media)");
    let log = rig.sushy.log();
    assert!(
        log.contains("VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia"),
        "the engine inserted the ISO through Redfish: {}",
        tail(&log, 40)
    );
    rig.lab.wait_settled(S::Available);
    phases.end("agent connected → available (inspect, clean)");
    rig.lab.assert_inventory(MAC);

    rig.provision_and_boot(&mut phases);
    // Booting the disk ejected the agent's ISO (sushy removes the CD drive's medium, or the
    // drive with it).
    let xml = rig.libvirt.domain_xml(DOMAIN);
    if let Some(at) = xml.find("device='cdrom'") {
        let cdrom = &xml[at..];
        let cdrom = &cdrom[..cdrom.find("</disk>").unwrap()];
        assert!(!cdrom.contains("<source"), "the CD is empty: {cdrom}");
    }
    let log = rig.sushy.log();
    assert!(
        log.contains("VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia"),
        "the engine ejected the ISO through Redfish: {}",
        tail(&log, 40)
    );

    rig.delete(&mut phases);
    phases.total();
}
