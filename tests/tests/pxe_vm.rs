//! `rivet boot serve` network-booting real firmware: QEMU (TCG) with SeaBIOS and its iPXE
//! option ROM, and OVMF with EDK2's own PXE and HTTP boot, into the test kernel and a
//! marker initramfs served over HTTP; authoritative and proxy mode (dnsmasq giving the
//! addresses); a host marked "local disk" sent to its disk.
//!
//! Boot times measured on the reference machine (2-core EPYC, TCG, idle), QEMU start to
//! marker: BIOS/iPXE ROM authoritative 7.6 s with router advertisements and 23.2 s with
//! `--no-router-advertisements` (iPXE waits for IPv6); the same boot from dnsmasq plus a
//! static HTTP server took 9.8 s in `test-peers.md` §4.2. OVMF native PXE in proxy mode
//! 15.2 s, OVMF HTTP boot 16.3 s, BIOS proxy 10.1 s. Durations are recorded here, never
//! asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pxe_common;

use std::time::Duration;

use pxe_common::{BOOT_TIMEOUT, BootLab, MARKER, bios_console_on_serial};
use rivet_tests::qemu::{Firmware, Guest, GuestBuilder, marker_boot_sector};

const MAC: &str = "52:54:00:12:34:02";

/// A host table booting `MAC` into the agent, with `extra` JSON fields on the host.
fn agent_table(extra: &str) -> String {
    format!(
        r#"{{"agent": {{"kernel": "vmlinuz", "initrds": ["initrd.img"],
                       "cmdline": "console=ttyS0 quiet panic=-1 rivet.test=pxe"}},
            "hosts": [{{"mac": "{MAC}", "boot": "agent"{extra}}}]}}"#
    )
}

/// A virtio NIC on tap0 without QEMU's iPXE option ROM, so OVMF's own network stack
/// (EDK2 PXE and HTTP boot) drives it.
fn firmware_nic(guest: GuestBuilder) -> GuestBuilder {
    guest
        .arg("-netdev")
        .arg("tap,id=n0,ifname=tap0,script=no,downscript=no")
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={MAC},romfile="))
}

/// A BIOS guest whose virtio NIC (with QEMU's iPXE option ROM) is on tap0, booting from
/// the network, with SeaBIOS and iPXE output on its serial console.
fn bios_ipxe_guest(lab: &BootLab, name: &str) -> Guest {
    let guest = GuestBuilder::new(name)
        .in_netns(&lab.ns)
        .tap_nic("tap0", MAC)
        .arg("-boot")
        .arg("n");
    bios_console_on_serial(guest, lab.dir.path()).start(lab.dir.path())
}

fn assert_agent_booted(serial: &str) {
    let cmdline = serial
        .lines()
        .find(|line| line.contains("RIVET-CMDLINE"))
        .unwrap_or_else(|| panic!("no command line on the console:\n{serial}"));
    assert!(cmdline.contains("initrd=initrd.img"), "{cmdline}");
    assert!(cmdline.contains("rivet.test=pxe"), "{cmdline}");
}

#[test]
fn vm_bios_ipxe_rom_boots_the_agent_from_the_authoritative_server() {
    let lab = BootLab::new("pxb");
    lab.ns.add_tap("tap0", "br0");
    lab.hosts(&agent_table(r#", "ipv4": "10.99.0.50""#));
    let mut server = lab.serve(&["--mode", "authoritative"]);
    let mut guest = bios_ipxe_guest(&lab, "bios-auth");
    let serial = guest.wait_for_serial(MARKER, BOOT_TIMEOUT);
    // iPXE announced itself (option 175) and went straight to its script over HTTP.
    assert!(
        serial.contains("net0: 10.99.0.50/255.255.255.0"),
        "{serial}"
    );
    assert!(
        serial.contains("http://10.99.0.1:8080/boot/52-54-00-12-34-02.ipxe"),
        "{serial}"
    );
    assert_agent_booted(&serial);
    server.assert_running();
    let log = server.log();
    assert!(
        log.contains("iPXE script served host=52:54:00:12:34:02"),
        "{log}"
    );
    assert!(
        !log.contains("TFTP transfer complete"),
        "no TFTP for iPXE: {log}"
    );
}

#[test]
fn vm_bios_ipxe_rom_takes_proxydhcp_from_rivet_and_its_address_from_dnsmasq() {
    let lab = BootLab::new("pxp");
    lab.ns.add_tap("tap0", "br0");
    let (_peer, dnsmasq) = lab.address_server();
    lab.hosts(&agent_table(""));
    let mut server = lab.serve(&["--mode", "proxy"]);
    let mut guest = bios_ipxe_guest(&lab, "bios-proxy");
    let serial = guest.wait_for_serial(MARKER, BOOT_TIMEOUT);
    assert!(
        serial.contains("net0: 10.99.0.1"),
        "address from dnsmasq's range: {serial}"
    );
    assert_agent_booted(&serial);
    assert!(dnsmasq.log().contains("DHCPACK(vdns)"), "{}", dnsmasq.log());
    server.assert_running();
    assert!(server.log().contains("iPXE script served"));
}

#[test]
fn vm_uefi_firmware_pxe_loads_snponly_over_tftp_in_proxy_mode() {
    // EDK2's own PXE driver (no iPXE ROM) with addresses from dnsmasq: the ProxyDHCP offer
    // carries option 43 (discovery control 8), so EDK2 takes the boot file from it.
    let lab = BootLab::new("pxu");
    lab.ns.add_tap("tap0", "br0");
    let (_peer, _dnsmasq) = lab.address_server();
    lab.hosts(&agent_table(""));
    let mut server = lab.serve(&["--mode", "proxy"]);
    let mut guest = firmware_nic(
        GuestBuilder::new("uefi-proxy")
            .firmware(Firmware::Uefi)
            .memory_mib(1024)
            .in_netns(&lab.ns),
    )
    .arg("-boot")
    .arg("n")
    .start(lab.dir.path());
    let serial = guest.wait_for_serial(MARKER, BOOT_TIMEOUT);
    assert!(serial.contains("NBP filename is snponly.efi"), "{serial}");
    assert!(
        serial.contains("Station IP address is 10.99.0.1"),
        "{serial}"
    );
    assert_agent_booted(&serial);
    server.assert_running();
    let log = server.log();
    assert!(
        log.contains("TFTP transfer complete") && log.contains("file=snponly.efi"),
        "{log}"
    );
}

#[test]
fn vm_uefi_http_boot_gets_ipxe_over_http_from_the_authoritative_server() {
    // PXE boot options disabled in OVMF, leaving "UEFI HTTPv4": the firmware asks as
    // HTTPClient (arch 16) and is given http://…/ipxe/snponly.efi.
    let lab = BootLab::new("pxh");
    lab.ns.add_tap("tap0", "br0");
    lab.hosts(&agent_table(r#", "ipv4": "10.99.0.60""#));
    let mut server = lab.serve(&["--mode", "authoritative"]);
    let mut guest = firmware_nic(
        GuestBuilder::new("uefi-http")
            .firmware(Firmware::Uefi)
            .memory_mib(1024)
            .in_netns(&lab.ns)
            .arg("-fw_cfg")
            .arg("name=opt/org.tianocore/IPv4PXESupport,string=n")
            .arg("-fw_cfg")
            .arg("name=opt/org.tianocore/IPv6PXESupport,string=n"),
    )
    .arg("-boot")
    .arg("n")
    .start(lab.dir.path());
    let serial = guest.wait_for_serial(MARKER, BOOT_TIMEOUT);
    assert!(serial.contains("Start HTTP Boot over IPv4"), "{serial}");
    assert!(
        serial.contains("URI: http://10.99.0.1:8080/ipxe/snponly.efi"),
        "{serial}"
    );
    assert!(
        serial.contains("net0: 10.99.0.60/255.255.255.0"),
        "{serial}"
    );
    assert_agent_booted(&serial);
    server.assert_running();
}

#[test]
fn vm_a_local_disk_host_is_sent_to_its_disk() {
    const DISK_MARKER: &str = "RIVET-LOCAL-DISK-BOOTED";
    let lab = BootLab::new("pxd");
    lab.ns.add_tap("tap0", "br0");
    lab.hosts(&format!(
        r#"{{"hosts": [{{"mac": "{MAC}", "boot": "local_disk", "ipv4": "10.99.0.70"}}]}}"#
    ));
    let disk = lab.path("disk.img");
    let mut image = marker_boot_sector(DISK_MARKER);
    image.resize(1 << 20, 0);
    std::fs::write(&disk, image).unwrap();
    let mut server = lab.serve(&["--mode", "authoritative"]);
    // Network first, then the disk (bootindex: `-boot order` does not reach -device NICs).
    let guest = GuestBuilder::new("local-disk")
        .in_netns(&lab.ns)
        .arg("-netdev")
        .arg("tap,id=n0,ifname=tap0,script=no,downscript=no")
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={MAC},bootindex=1"))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
        .arg("-device")
        .arg("virtio-blk-pci,drive=d0,bootindex=2");
    let mut guest = bios_console_on_serial(guest, lab.dir.path()).start(lab.dir.path());
    let serial = guest.wait_for_serial(DISK_MARKER, BOOT_TIMEOUT);
    assert!(
        serial.contains("Rivet: booting from the local disk"),
        "the script was run: {serial}"
    );
    server.assert_running();
    let log = server.log();
    assert!(
        log.contains("iPXE script served host=52:54:00:12:34:02"),
        "{log}"
    );
    assert!(!log.contains("vmlinuz"), "no kernel was fetched: {log}");
    // Let the guest sit a moment: it must stay on its disk, not loop back to the network.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(guest.serial().matches(DISK_MARKER).count(), 1);
}
