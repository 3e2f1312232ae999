//! The whole lifecycle on real peers only: `rivet serve` (the real binary, real drivers,
//! ProxyDHCP next to the site's dnsmasq, which alone hands out addresses, TFTP-less iPXE
//! boot over HTTP, the agent channel) in a network namespace; OpenIPMI's `ipmi_sim` as the
//! BMC, whose power state starts and stops a QEMU
//! guest (TCG, SeaBIOS with QEMU's iPXE ROM); the agent image built by
//! `scripts/agent-image.sh` and PXE-booted by that guest; `rivet host` and curl as the
//! clients. Enroll → inspect (the agent's inventory names the disk and NIC QEMU was
//! given) → available → provision a qcow2 made by `qemu-img` → the guest boots the
//! image's boot sector from its disk → deprovision (the disk has no partition table left)
//! → delete.
//!
//! Phase wall times are printed (`e2e phase …`), never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../agent/tests/common/disks.rs"]
mod disks;
#[path = "common/e2e.rs"]
mod e2e;

use std::path::Path;
use std::sync::Arc;

use e2e::{
    DISK_BYTES, DISK_MARKER, Dhcp, Lab, PHASE_TIMEOUT, Phases, SERVER, boot_code,
    build_agent_image, config_drive_meta_data, make_image, tail,
};
use rivet_engine::lifecycle::ProvisioningState as S;
use rivet_tests::qemu::GuestBuilder;
use rivet_tests::{
    AddressServer, IPMI_PASSWORD, IPMI_USER, IpmiSim, Netns, PowerSwitch, scratch_dir, wait_until,
};

const MAC: &str = "52:54:00:e2:e0:01";
const HOST: &str = "e2e-node";

fn guest(ns: &Netns, dir: &Path, disk: &Path, n: usize, boot_device: &str) -> GuestBuilder {
    // Network first when the BMC says PXE, the disk first otherwise (bootindex: `-boot`
    // does not reach -device NICs).
    let (nic, disk_index) = if boot_device == "pxe" { (1, 2) } else { (2, 1) };
    let port = dir.join("sercon-port.bin");
    std::fs::write(&port, 0x3f8u16.to_le_bytes()).unwrap();
    GuestBuilder::new(&format!("e2e-{n}"))
        .in_netns(ns)
        .with_qmp()
        .memory_mib(1024)
        .arg("-netdev")
        .arg("tap,id=n0,ifname=tap0,script=no,downscript=no")
        .arg("-device")
        .arg(format!(
            "virtio-net-pci,netdev=n0,mac={MAC},bootindex={nic}"
        ))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
        .arg("-device")
        .arg(format!(
            "virtio-blk-pci,drive=d0,serial=E2E-ROOT,bootindex={disk_index}"
        ))
        // SeaBIOS and iPXE print on the serial console too.
        .arg("-fw_cfg")
        .arg(format!("name=etc/sercon-port,file={}", port.display()))
}

#[test]
fn vm_netns_a_pxe_booted_agent_takes_a_host_from_enroll_to_delete() {
    let mut phases = Phases::start();

    let ns = Arc::new(Netns::new("e2e"));
    ns.add_bridge("br0", &format!("{SERVER}/24"));
    ns.add_tap("tap0", "br0");
    let dir = scratch_dir("e2e");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    build_agent_image(&files.join("agent"), false);
    let (raw_image, digest) = make_image(dir.path(), &files);
    let disk = dir.path().join("disk.raw");
    disks::sparse_file(&disk, DISK_BYTES);

    let sim = IpmiSim::start_in(&ns);
    let switch = PowerSwitch::attach(sim.state_dir(), {
        let (ns, dir, disk) = (ns.clone(), dir.path().to_owned(), disk.clone());
        move |n, boot_device| guest(&ns, &dir, &disk, n, boot_device).start(&dir)
    });

    // The site's DHCP server gives addresses (10.99.0.200–250); Rivet only adds the boot.
    let dnsmasq = AddressServer::start(
        &ns,
        "br0",
        "10.99.0.2/24",
        ("10.99.0.200", "10.99.0.250"),
        dir.path(),
    );
    let lab = Lab::start(ns.clone(), dir, &files, Dhcp::Proxy, HOST, IPMI_PASSWORD);
    phases.end("setup (agent image, qcow2, netns, ipmi_sim, dnsmasq, rivet serve)");

    // Enroll: the engine registers the BMC, boots the agent over the network, inspects.
    let bmc = format!("ipmi://127.0.0.1:{}", sim.port());
    lab.rivet_host(&[
        "enroll",
        HOST,
        "--bmc",
        &bmc,
        "--username",
        IPMI_USER,
        "--mac",
        MAC,
    ]);
    let agent_serial = switch.wait_for_serial(0, "connected to the engine", PHASE_TIMEOUT);
    assert_eq!(switch.power_ons()[0].boot_device, "pxe");
    assert!(
        agent_serial.contains("rivet-agent ready"),
        "{}",
        tail(&agent_serial, 40)
    );
    assert!(
        agent_serial.contains(&format!("/boot/{}.ipxe", MAC.replace(':', "-"))),
        "iPXE fetched the host's script: {}",
        tail(&agent_serial, 60)
    );
    let leases = dnsmasq.daemon.log();
    assert!(
        leases.contains("DHCPACK(vdns) 10.99.0.2") && leases.contains(MAC),
        "dnsmasq gave the host its address: {}",
        tail(&leases, 20)
    );
    assert!(
        agent_serial.contains("=10.99.0.2"),
        "the agent runs on dnsmasq's address: {}",
        tail(&agent_serial, 20)
    );
    phases.end("enroll → agent connected (ProxyDHCP + PXE boot)");
    lab.wait_settled(S::Available);
    phases.end("agent connected → available (inspect, clean)");

    lab.assert_inventory(MAC);

    // Provision: the agent writes the image, the engine boots the host from its disk.
    phases.restart();
    lab.provision(&digest);
    lab.wait_settled(S::Provisioned);
    // Provisioning ends with a soft power-off of the agent: ipmi_sim's chassis control
    // presses the guest's ACPI button and the agent powers itself off before the timeout.
    assert!(
        !lab.serve.log().contains("soft power-off timed out"),
        "the agent did not power off on the ACPI button: {}",
        tail(&lab.serve.log(), 20)
    );
    phases.end("provision (deploy, boot to disk, power cycle)");
    wait_until(
        "the guest to be powered on from its disk",
        PHASE_TIMEOUT,
        || {
            switch
                .power_ons()
                .last()
                .is_some_and(|on| on.boot_device != "pxe")
        },
    );
    let booted = switch.power_ons().len() - 1;
    switch.wait_for_serial(booted, DISK_MARKER, PHASE_TIMEOUT);
    assert_eq!(sim.power(), "1");
    phases.end("provisioned → the image printed its marker");
    disks::assert_deployed(&raw_image, &disk);
    assert_eq!(
        boot_code(&disk),
        boot_code(&raw_image),
        "the image's boot code"
    );
    let meta_data = config_drive_meta_data(&disk, lab.dir.path());
    assert_eq!(meta_data["name"], HOST, "{meta_data}");

    // Deprovision: the agent boots again and cleans the disk's metadata.
    phases.restart();
    lab.rivet_host(&["deprovision", HOST]);
    lab.wait_settled(S::Available);
    phases.end("deprovision (agent boot, metadata clean)");
    disks::assert_unbootable(&disk);
    // The engine's own account of every step, for the phase breakdown.
    let timeline = lab.rivet_host(&["timeline", HOST]).stdout;
    eprintln!("{}", String::from_utf8_lossy(&timeline));

    // Delete: powered off, the agent released, the host gone.
    phases.restart();
    lab.rivet_host(&["delete", HOST]);
    wait_until("the host to be deleted", PHASE_TIMEOUT, || {
        lab.view().is_none()
    });
    wait_until("the machine to be off", PHASE_TIMEOUT, || {
        sim.power() == "0"
    });
    phases.end("delete");

    let boots: Vec<String> = switch
        .power_ons()
        .into_iter()
        .map(|on| on.boot_device)
        .collect();
    assert_eq!(
        boots,
        ["pxe", "default", "pxe"],
        "inspection and deprovisioning boot the agent, the provisioned host its disk"
    );
    let log = lab.serve.log();
    assert!(log.contains("agent connected"), "{}", tail(&log, 40));
    phases.total();
}
