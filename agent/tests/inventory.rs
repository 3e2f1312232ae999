#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Inventory from sysfs trees captured on QEMU guests (see tests/fixtures/agent/SOURCES.md):
//! what the agent reports must be what QEMU was told.

use std::net::IpAddr;

use rivet_agent::inventory::{BootMode, InterfaceAddress, Inventory, Transport};
use rivet_agent::sysfs::SysRoot;
use rivet_model::{HardwareDetails, StorageType};
use rivet_tests::fixture;

const GIB: u64 = 1 << 30;

fn inventory(name: &str) -> Inventory {
    let addresses = [InterfaceAddress {
        interface: "eth1".into(),
        address: "10.0.2.15".parse::<IpAddr>().unwrap(),
    }];
    Inventory::collect(&SysRoot::at(fixture(format!("agent/{name}"))), &addresses)
}

#[test]
fn system_firmware_cpu_and_memory_match_the_smbios_qemu_was_given() {
    let inv = inventory("qemu-pc");
    let vendor = inv.system_vendor.as_ref().unwrap();
    assert_eq!(vendor.manufacturer.as_deref(), Some("Rivet Labs"));
    assert_eq!(vendor.product_name.as_deref(), Some("Rivet Test Node"));
    assert_eq!(vendor.serial_number.as_deref(), Some("RT-0001"));
    assert_eq!(
        inv.system.uuid.as_deref(),
        Some("6a0c2f2e-1d3b-4f5a-9c7e-0123456789ab")
    );
    assert_eq!(inv.system.sku.as_deref(), Some("RT-SKU"));
    assert_eq!(inv.system.family.as_deref(), Some("Rivet"));
    let bios = inv.firmware.as_ref().unwrap().bios.as_ref().unwrap();
    assert_eq!(bios.vendor.as_deref(), Some("Rivet BIOS"));
    assert_eq!(bios.version.as_deref(), Some("1.2.3"));
    assert_eq!(bios.date.as_deref(), Some("01/02/2025"));
    assert_eq!(inv.boot_mode, BootMode::Bios);

    let cpu = inv.cpu.as_ref().unwrap();
    assert_eq!(cpu.cpu.count, Some(2));
    assert_eq!(cpu.cpu.arch.as_deref(), Some("x86_64"));
    assert!(cpu.cpu.model.as_deref().unwrap().contains("QEMU"));
    assert!(cpu.cpu.clock_megahertz.unwrap() > 100.0);
    assert!(cpu.cpu.flags.iter().any(|f| f == "sse2"));

    // -m 1024: SMBIOS says 1024 MiB installed; the kernel keeps some for itself.
    assert_eq!(inv.ram_mebibytes, Some(1024));
    assert_eq!(inv.memory.physical_source.as_deref(), Some("smbios"));
    assert!(inv.memory.total_bytes.unwrap() < 1024 * 1024 * 1024);
}

#[test]
fn every_kind_of_disk_is_described_as_qemu_was_told() {
    let inv = inventory("qemu-pc");
    let names: Vec<&str> = inv.storage.iter().map(|d| d.kernel_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "/dev/nvme0n1",
            "/dev/sda",
            "/dev/sdb",
            "/dev/sdc",
            "/dev/sdd",
            "/dev/vda",
            "/dev/vdb",
            "/dev/vdc",
            "/dev/vdd"
        ],
        "the NVMe multipath path device nvme0c0n1 must not be listed"
    );

    let hdd = inv.disk("sdc").unwrap();
    assert_eq!(
        hdd.storage.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:06.0-scsi-0:0:0:0")
    );
    assert_eq!(hdd.storage.serial_number.as_deref(), Some("SCSI-HDD-1"));
    assert_eq!(hdd.storage.vendor.as_deref(), Some("SEAGATE"));
    assert_eq!(hdd.storage.model.as_deref(), Some("ST20000NM"));
    assert_eq!(hdd.storage.wwn.as_deref(), Some("0x5000c500a0b1c2d3"));
    assert_eq!(
        hdd.storage.wwn_with_extension.as_deref(),
        Some("0x5000c500a0b1c2d3")
    );
    assert_eq!(hdd.storage.rotational, Some(true));
    assert_eq!(hdd.storage.kind, Some(StorageType::Hdd));
    assert_eq!(hdd.size_bytes(), 20 * GIB);
    assert_eq!(hdd.storage.hctl.as_deref(), Some("9:0:0:0"));
    assert_eq!(hdd.transport, Some(Transport::Scsi));
    assert!(
        hdd.storage
            .alternate_names
            .contains(&"/dev/disk/by-id/wwn-0x5000c500a0b1c2d3".to_owned())
    );

    let ssd = inv.disk("/dev/sdd").unwrap();
    assert_eq!(ssd.storage.rotational, Some(false), "rotation_rate=1");
    assert_eq!(ssd.storage.kind, Some(StorageType::Ssd));
    assert_eq!(ssd.storage.wwn.as_deref(), Some("0x5002538e40a1b2c3"));

    let sata = inv.disk("sdb").unwrap();
    assert_eq!(
        sata.by_path,
        [
            "/dev/disk/by-path/pci-0000:00:07.0-ata-1.0",
            "/dev/disk/by-path/pci-0000:00:07.0-ata-1"
        ]
    );
    assert_eq!(sata.transport, Some(Transport::Sata));
    assert_eq!(sata.storage.model.as_deref(), Some("RIVET-SATA-SSD"));
    assert_eq!(sata.storage.serial_number.as_deref(), Some("SATA-1"));
    assert_eq!(
        sata.storage.vendor, None,
        "libata's \"ATA\" is not a vendor"
    );
    assert_eq!(sata.storage.wwn.as_deref(), Some("0x50014ee2b1c2d3e4"));

    let nvme = inv.disk("nvme0n1").unwrap();
    assert_eq!(
        nvme.storage.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:08.0-nvme-1")
    );
    assert_eq!(nvme.storage.kind, Some(StorageType::Nvme));
    assert_eq!(nvme.storage.serial_number.as_deref(), Some("NVME-1"));
    assert_eq!(nvme.storage.model.as_deref(), Some("QEMU NVMe Ctrl"));
    assert!(nvme.storage.wwn.as_deref().unwrap().starts_with("nvme."));
    assert_eq!(nvme.storage.hctl, None);
    assert_eq!(nvme.size_bytes(), 5 * GIB);

    let virtio = inv
        .disk("/dev/disk/by-path/virtio-pci-0000:00:05.0")
        .unwrap();
    assert_eq!(virtio.kernel_name, "/dev/vdb");
    assert_eq!(virtio.storage.serial_number.as_deref(), Some("VIRTIO-ROOT"));
    assert_eq!(
        virtio.storage.vendor, None,
        "virtio's vendor id is not a vendor"
    );
    assert_eq!(virtio.transport, Some(Transport::Virtio));
    assert_eq!(virtio.size_bytes(), 8 * GIB);

    let read_only = inv.disk("vdc").unwrap();
    assert!(read_only.read_only);
    assert_eq!(
        read_only.storage.serial_number.as_deref(),
        Some("READ-ONLY")
    );

    let raid = inv.disk("sda").unwrap();
    assert_eq!(
        raid.storage.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:0b.0-scsi-0:2:2:0"),
        "megaraid_sas virtual drive"
    );

    for disk in &inv.storage {
        assert_eq!(disk.logical_sector_size, 512);
        assert!(!disk.virtual_media);
    }
}

#[test]
fn nics_report_identity_link_addresses_and_the_boot_interface() {
    let inv = inventory("qemu-pc");
    assert_eq!(inv.nics.len(), 2);
    let e1000e = &inv.nics[0];
    assert_eq!(e1000e.nic.name.as_deref(), Some("eth0"));
    assert_eq!(e1000e.nic.mac.as_deref(), Some("52:54:00:00:00:12"));
    assert_eq!(e1000e.nic.model.as_deref(), Some("0x8086 0x10d3"));
    assert_eq!(e1000e.driver.as_deref(), Some("e1000e"));
    assert_eq!(e1000e.speed_mbps, Some(1000));
    assert_eq!(e1000e.nic.speed_gbps, Some(1));
    assert_eq!(e1000e.nic.pxe, Some(true), "BOOTIF names this MAC");
    assert!(e1000e.has_carrier);
    assert_eq!(e1000e.nic.pci_address.as_deref(), Some("0000:00:04.0"));
    let virtio = &inv.nics[1];
    assert_eq!(virtio.nic.mac.as_deref(), Some("52:54:00:00:00:11"));
    assert_eq!(virtio.driver.as_deref(), Some("virtio_net"));
    assert_eq!(virtio.nic.pxe, Some(false));
    assert_eq!(virtio.nic.ip.as_deref(), Some("10.0.2.15"));
    assert_eq!(virtio.ipv4_addresses, ["10.0.2.15"]);
    assert_eq!(inv.pxe_interface.as_deref(), Some("52:54:00:00:00:12"));
}

#[test]
fn uefi_guest_with_a_4k_nvme_and_bmc_virtual_media() {
    let inv = inventory("qemu-q35-uefi");
    assert_eq!(inv.boot_mode, BootMode::Uefi);
    let bios = inv.firmware.as_ref().unwrap().bios.as_ref().unwrap();
    assert!(bios.vendor.as_deref().unwrap().contains("OVMF"));
    let sata = inv.disk("sda").unwrap();
    assert_eq!(
        sata.storage.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:1f.2-ata-3.0")
    );
    assert_eq!(sata.storage.rotational, Some(true));
    let nvme = inv.disk("nvme0n1").unwrap();
    assert_eq!(nvme.logical_sector_size, 4096);
    assert_eq!(nvme.physical_sector_size, 4096);
    assert_eq!(nvme.size_bytes(), 10 * GIB);
    let floppy = inv.disk("sdb").unwrap();
    assert_eq!(floppy.transport, Some(Transport::Usb));
    assert!(floppy.virtual_media, "AMI Virtual_Floppy0 on USB");
    assert_eq!(
        floppy.storage.name.as_deref(),
        Some("/dev/disk/by-path/pci-0000:00:04.0-usb-0:1:1.0-scsi-0:0:0:0")
    );
}

#[test]
fn the_json_is_a_valid_hardware_details_document_with_extras() {
    let inv = inventory("qemu-pc");
    let json = serde_json::to_value(&inv).unwrap();
    let details: HardwareDetails = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(details, inv.hardware_details());
    // The extras sit next to the BMO fields.
    assert_eq!(json["storage"][0]["logicalSectorSize"], 512);
    assert_eq!(json["storage"][0]["type"], "NVME");
    assert_eq!(json["bootMode"], "bios");
    assert_eq!(json["nics"][0]["driver"], "e1000e");
    let again: Inventory = serde_json::from_value(json).unwrap();
    assert_eq!(again, inv);
}

#[test]
fn a_missing_tree_gives_an_empty_inventory_not_a_panic() {
    let empty = tempfile::tempdir().unwrap();
    let inv = Inventory::collect(&SysRoot::at(empty.path()), &[]);
    assert!(inv.storage.is_empty());
    assert!(inv.nics.is_empty());
    assert_eq!(inv.cpu, None);
    assert_eq!(inv.system_vendor, None);
}
