#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The agent image booted under QEMU (TCG) with disks of every kind: inventory, root-device
//! hints and cleaning on real (emulated) hardware. Each test boots as few guests as it can
//! and checks several things per boot.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use rivet_agent::hints::{HintSet, select_root_disk};
use rivet_agent::inventory::{BootMode, Inventory, Transport};
use rivet_model::StorageType;
use rivet_tests::qemu::Firmware;
use rivet_tests::qmp::Qmp;
use rivet_tests::scratch_dir;
use serde_json::json;

const GIB: u64 = 1 << 30;
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

fn hints_param(hints: serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hints.to_string())
}

#[test]
fn vm_inventory_matches_what_qemu_was_told_and_hints_choose_the_disk() {
    let dir = scratch_dir("vm-inventory");
    let disk = |name: &str, bytes: u64| {
        let path = dir.path().join(name);
        sparse_file(&path, bytes);
        path.display().to_string()
    };
    let hints = hints_param(json!({"serialNumber": "SCSI-SSD-1", "rotational": false}));
    // The e1000e is configured statically (named by its MAC), which turns DHCP off.
    let params = format!(
        "rivet.job=inventory rivet.hints={hints} BOOTIF=01-52-54-00-00-00-12 \
         ip=10.0.2.77::10.0.2.2:255.255.255.0:node-static:52-54-00-00-00-12:off:10.0.2.3"
    );
    let run = JobGuest::direct("inventory", dir.path(), &params)
        .args(["-smp", "2"])
        .args([
            "-smbios",
            "type=0,vendor=Rivet BIOS,version=1.2.3,date=01/02/2025",
        ])
        .args([
            "-smbios",
            "type=1,manufacturer=Rivet Labs,product=Rivet Test Node,serial=RT-0001,sku=RT-SKU",
        ])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:11",
        ])
        .args([
            "-netdev",
            "user,id=n1",
            "-device",
            "e1000e,netdev=n1,mac=52:54:00:00:00:12",
        ])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=d0",
                disk("virtio.raw", 8 * GIB)
            ),
        ])
        .args(["-device", "virtio-blk-pci,drive=d0,serial=VIRTIO-ROOT"])
        .args(["-device", "virtio-scsi-pci,id=scsi0"])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=d1",
                disk("hdd.raw", 20 * GIB)
            ),
        ])
        .args([
            "-device",
            "scsi-hd,drive=d1,bus=scsi0.0,scsi-id=0,serial=SCSI-HDD-1,wwn=0x5000c500a0b1c2d3,\
             rotation_rate=7200,vendor=SEAGATE,product=ST20000NM",
        ])
        .args([
            "-drive",
            &format!("file={},format=raw,if=none,id=d2", disk("ssd.raw", 7 * GIB)),
        ])
        .args([
            "-device",
            "scsi-hd,drive=d2,bus=scsi0.0,scsi-id=1,serial=SCSI-SSD-1,wwn=0x5002538e40a1b2c3,\
             rotation_rate=1,vendor=SAMSUNG,product=PM893",
        ])
        .args(["-device", "ahci,id=ahci0"])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=d3",
                disk("sata.raw", 6 * GIB)
            ),
        ])
        .args([
            "-device",
            "ide-hd,drive=d3,bus=ahci0.0,serial=SATA-1,model=RIVET-SATA-SSD,\
             wwn=0x50014ee2b1c2d3e4,rotation_rate=1",
        ])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=d4",
                disk("nvme.raw", 5 * GIB)
            ),
        ])
        .args(["-device", "nvme,drive=d4,serial=NVME-1"])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=d5,readonly=on",
                disk("ro.raw", 4608 * MIB)
            ),
        ])
        .args(["-device", "virtio-blk-pci,drive=d5,serial=READ-ONLY"])
        .args([
            "-drive",
            &format!("file={},format=raw,if=none,id=d6", disk("small.raw", GIB)),
        ])
        .args(["-device", "virtio-blk-pci,drive=d6,serial=SMALL"])
        .run(JOB_TIMEOUT);

    assert!(run.serial.contains("rivet-agent ready"), "{}", run.serial);
    let result = &run.result;
    assert_eq!(result["job"], "inventory");
    assert_eq!(result["succeeded"], true, "{result}");
    let inv: Inventory = serde_json::from_value(result["result"]["inventory"].clone()).unwrap();

    let vendor = inv.system_vendor.clone().unwrap();
    assert_eq!(vendor.manufacturer.as_deref(), Some("Rivet Labs"));
    assert_eq!(vendor.product_name.as_deref(), Some("Rivet Test Node"));
    assert_eq!(vendor.serial_number.as_deref(), Some("RT-0001"));
    let bios = inv.firmware.clone().unwrap().bios.unwrap();
    assert_eq!(bios.vendor.as_deref(), Some("Rivet BIOS"));
    assert_eq!(bios.version.as_deref(), Some("1.2.3"));
    assert_eq!(inv.boot_mode, BootMode::Bios);
    assert_eq!(inv.cpu.as_ref().unwrap().cpu.count, Some(2));
    assert_eq!(inv.ram_mebibytes, Some(1024));

    let by_serial = |serial: &str| {
        inv.storage
            .iter()
            .find(|d| d.storage.serial_number.as_deref() == Some(serial))
            .unwrap_or_else(|| panic!("no disk with serial {serial}: {:#?}", inv.storage))
    };
    let hdd = by_serial("SCSI-HDD-1");
    assert_eq!(hdd.storage.kind, Some(StorageType::Hdd));
    assert_eq!(hdd.storage.wwn.as_deref(), Some("0x5000c500a0b1c2d3"));
    assert_eq!(hdd.storage.vendor.as_deref(), Some("SEAGATE"));
    assert_eq!(hdd.size_bytes(), 20 * GIB);
    assert!(
        hdd.storage
            .name
            .as_deref()
            .unwrap()
            .contains("-scsi-0:0:0:0")
    );
    let ssd = by_serial("SCSI-SSD-1");
    assert_eq!(ssd.storage.kind, Some(StorageType::Ssd));
    let sata = by_serial("SATA-1");
    assert_eq!(sata.transport, Some(Transport::Sata));
    assert_eq!(sata.storage.model.as_deref(), Some("RIVET-SATA-SSD"));
    assert_eq!(sata.storage.wwn.as_deref(), Some("0x50014ee2b1c2d3e4"));
    assert!(sata.storage.name.as_deref().unwrap().ends_with("-ata-1.0"));
    let nvme = by_serial("NVME-1");
    assert_eq!(nvme.storage.kind, Some(StorageType::Nvme));
    assert!(nvme.storage.name.as_deref().unwrap().ends_with("-nvme-1"));
    assert!(by_serial("READ-ONLY").read_only);
    assert_eq!(by_serial("VIRTIO-ROOT").transport, Some(Transport::Virtio));
    assert_eq!(inv.storage.len(), 7, "{:#?}", inv.storage);

    // The e1000e is the boot NIC, with its static address; the other has none (no DHCP
    // when an address is given). DHCP is exercised by the ISO test.
    assert_eq!(inv.nics.len(), 2);
    for nic in &inv.nics {
        assert!(nic.has_carrier);
        let booted = nic.nic.mac.as_deref() == Some("52:54:00:00:00:12");
        assert_eq!(nic.nic.pxe, Some(booted));
        let expected: &[&str] = if booted { &["10.0.2.77"] } else { &[] };
        assert_eq!(nic.ipv4_addresses, expected, "{nic:?}");
    }
    assert_eq!(inv.hostname.as_deref(), Some("node-static"));

    // The hints given on the command line chose the SSD, in the guest.
    assert_eq!(
        result["result"]["rootDevice"]["name"],
        ssd.kernel_name.as_str()
    );
    // And every other way of naming a disk chooses it on this live inventory.
    let choose = |hints: serde_json::Value| {
        let set = HintSet::from_json(&hints).unwrap();
        select_root_disk(&inv.storage, &set).map(|d| d.kernel_name.clone())
    };
    assert_eq!(
        choose(json!({})).unwrap(),
        nvme.kernel_name,
        "smallest disk ≥ 4 GiB"
    );
    assert_eq!(
        choose(json!({"wwn": "0x5000C500A0B1C2D3"})).unwrap(),
        hdd.kernel_name
    );
    assert_eq!(
        choose(json!({"deviceName": sata.storage.name})).unwrap(),
        sata.kernel_name
    );
    assert_eq!(
        choose(json!({"hctl": hdd.storage.hctl})).unwrap(),
        hdd.kernel_name
    );
    assert_eq!(choose(json!({"size": ">= 10"})).unwrap(), hdd.kernel_name);
    assert_eq!(
        choose(json!({"model": "<in> nvme"})).unwrap(),
        nvme.kernel_name
    );
    assert!(choose(json!({"serial": "READ-ONLY"})).is_err());
}

/// A GPT disk with ext4, xfs and LVM partitions; returns the partitions' byte ranges.
fn seed_gpt(image: &Path) -> Vec<(u64, u64)> {
    sparse_file(image, 400 * MIB);
    run(
        "sgdisk",
        &[
            "-n1:0:+20M",
            "-n2:0:+300M",
            "-n3:0:+20M",
            image.to_str().unwrap(),
        ],
    );
    let layout = vec![
        (MIB, 20 * MIB),
        (21 * MIB, 300 * MIB),
        (321 * MIB, 20 * MIB),
    ];
    on_range(image, layout[0].0, layout[0].1, |dev| {
        run("mkfs.ext4", &["-q", dev]);
    });
    on_range(image, layout[1].0, layout[1].1, |dev| {
        run("mkfs.xfs", &["-q", "-f", dev]);
    });
    on_range(image, layout[2].0, layout[2].1, |dev| {
        run("pvcreate", &["-q", "-ff", "-y", dev]);
    });
    layout
}

/// An MBR disk with a vfat primary and an ext4 logical partition.
fn seed_mbr(image: &Path) -> Vec<(u64, u64)> {
    sparse_file(image, 64 * MIB);
    run_with_input(
        "sfdisk",
        &["-q", image.to_str().unwrap()],
        b"label: dos\nstart=2048, size=20M, type=c\nstart=43008, type=5\nstart=45056, size=16M, type=83\n",
    );
    let layout = vec![(2048 * 512, 20 * MIB), (45056 * 512, 16 * MIB)];
    on_range(image, layout[0].0, layout[0].1, |dev| {
        run("mkfs.vfat", &["-F", "16", dev]);
    });
    on_range(image, layout[1].0, layout[1].1, |dev| {
        run("mkfs.ext4", &["-q", dev]);
    });
    layout
}

/// Creates software RAID arrays on the given disks inside a guest, with the real mdadm and
/// the kernel's md driver (neither exists on the host): RAID 1 with metadata 1.0 and 0.90 on
/// the partitions of the first two disks, and 1.2 on the whole of the other two.
fn seed_md(dir: &Path, disks: [&Path; 4]) {
    let image = agent_image();
    let kernel_version = std::fs::read_dir("/lib/modules")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|v| image_kernel_matches(&image.kernel, v))
        .expect("the modules of the image's kernel");
    let md = format!("/lib/modules/{kernel_version}/kernel/drivers/md");
    let mut overlay = rivet_tests::qemu::Cpio::default();
    for d in ["sbin", "seed", "lib", "lib/x86_64-linux-gnu"] {
        overlay.dir(d);
    }
    overlay.file("sbin/mdadm", 0o755, &std::fs::read("/sbin/mdadm").unwrap());
    for lib in ["libudev.so.1", "libcap.so.2"] {
        let bytes = std::fs::read(format!("/lib/x86_64-linux-gnu/{lib}")).unwrap();
        overlay.file(&format!("lib/x86_64-linux-gnu/{lib}"), 0o755, &bytes);
    }
    overlay.file(
        "seed/md-mod.ko",
        0o644,
        &std::fs::read(format!("{md}/md-mod.ko")).unwrap(),
    );
    overlay.file(
        "seed/raid1.ko",
        0o644,
        &std::fs::read(format!("{md}/raid1.ko")).unwrap(),
    );
    let init = "#!/bin/sh\nexport PATH=/sbin:/usr/bin:/bin\n\
        mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev\n\
        mkdir -p /run/mdadm; dmesg -n 1\n\
        for a in $(cat /sys/bus/pci/devices/*/modalias); do modprobe -q $a; done\n\
        for a in $(cat /sys/bus/virtio/devices/*/modalias); do modprobe -q $a; done\n\
        sleep 1\n\
        insmod /seed/md-mod.ko; insmod /seed/raid1.ko\n\
        set -e\n\
        M='mdadm --create --run --assume-clean --level=1 --raid-devices=2'\n\
        $M --metadata=1.0 /dev/md0 /dev/vda1 /dev/vdb1\n\
        $M --metadata=0.90 /dev/md1 /dev/vda2 /dev/vdb2\n\
        $M --metadata=1.2 /dev/md2 /dev/vdc /dev/vdd\n\
        cat /proc/mdstat\n\
        mdadm --stop --scan\n\
        echo '===== RIVET-AGENT RESULT BEGIN ====='\necho '{\"seeded\":true}'\n\
        echo '===== RIVET-AGENT RESULT END ====='\npoweroff -f\n";
    overlay.file("init", 0o755, init.as_bytes());
    let initrd = dir.join("seed-md.cpio");
    let base = run("zstd", &["-dc", image.initramfs.to_str().unwrap()]).stdout;
    std::fs::write(&initrd, [base, overlay.finish()].concat()).unwrap();
    let mut guest = JobGuest::with_initrd("seed-md", dir, &initrd, "console=ttyS0 quiet panic=-1");
    for (i, disk) in disks.iter().enumerate() {
        guest = guest.virtio_disk(disk, &format!("md{i}"), "", "");
    }
    let run = guest.run(JOB_TIMEOUT);
    assert!(run.serial.contains("active raid1"), "{}", run.serial);
}

fn image_kernel_matches(kernel: &Path, version: &str) -> bool {
    std::fs::read(format!("/boot/vmlinuz-{version}")).ok() == std::fs::read(kernel).ok()
}

#[test]
fn vm_metadata_cleaning_removes_tables_filesystems_lvm_and_md_everywhere() {
    let dir = scratch_dir("vm-clean-metadata");
    let d = |name: &str| dir.path().join(name);
    // md: two partitioned disks (1.0 and 0.90 superblocks at partition ends) and two whole disks (1.2).
    for name in ["md-a.raw", "md-b.raw"] {
        sparse_file(&d(name), 64 * MIB);
        run(
            "sgdisk",
            &["-n1:0:+24M", "-n2:0:+24M", d(name).to_str().unwrap()],
        );
    }
    for name in ["md-c.raw", "md-d.raw"] {
        sparse_file(&d(name), 32 * MIB);
    }
    seed_md(
        dir.path(),
        [
            &d("md-a.raw"),
            &d("md-b.raw"),
            &d("md-c.raw"),
            &d("md-d.raw"),
        ],
    );
    let md_parts = [(MIB, 24 * MIB), (25 * MIB, 24 * MIB)];
    for name in ["md-a.raw", "md-b.raw"] {
        for (offset, len) in md_parts {
            let found = blkid_at(&d(name), offset, len).unwrap_or_default();
            assert!(
                found.contains("linux_raid_member"),
                "{name}@{offset}: {found}"
            );
        }
    }
    assert!(
        wipefs(&d("md-c.raw"))
            .iter()
            .any(|l| l.starts_with("linux_raid_member"))
    );
    let gpt_parts = seed_gpt(&d("gpt.raw"));
    let mbr_parts = seed_mbr(&d("mbr.raw"));
    sparse_file(&d("nvme.raw"), 64 * MIB);
    run("sgdisk", &["-n1:0:0", d("nvme.raw").to_str().unwrap()]);
    on_range(&d("nvme.raw"), MIB, 62 * MIB, |dev| {
        run("mkfs.ext4", &["-q", dev]);
    });
    sparse_file(&d("ro.raw"), 32 * MIB);
    run("sgdisk", &["-n1:0:0", d("ro.raw").to_str().unwrap()]);
    let ro_before = sha256_file(&d("ro.raw"));

    let run = JobGuest::direct(
        "clean-metadata",
        dir.path(),
        "rivet.job=clean rivet.clean.mode=metadata rivet.clean.skip_read_only",
    )
    .virtio_disk(&d("md-a.raw"), "a", "", ",serial=MD-A")
    .virtio_disk(&d("md-b.raw"), "b", "", ",serial=MD-B")
    .virtio_disk(&d("md-c.raw"), "c", "", ",serial=MD-C")
    .virtio_disk(&d("md-d.raw"), "dd", "", ",serial=MD-D")
    .virtio_disk(&d("ro.raw"), "ro", ",readonly=on", ",serial=RO")
    .args(["-device", "virtio-scsi-pci,id=scsi0"])
    .args([
        "-drive",
        &format!("file={},format=raw,if=none,id=g", d("gpt.raw").display()),
    ])
    .args(["-device", "scsi-hd,drive=g,bus=scsi0.0,serial=GPT"])
    .args(["-device", "ahci,id=ahci0"])
    .args([
        "-drive",
        &format!("file={},format=raw,if=none,id=m", d("mbr.raw").display()),
    ])
    .args(["-device", "ide-hd,drive=m,bus=ahci0.0,serial=MBR"])
    .args([
        "-drive",
        &format!("file={},format=raw,if=none,id=n", d("nvme.raw").display()),
    ])
    .args(["-device", "nvme,drive=n,serial=NVME-CLEAN"])
    .run(JOB_TIMEOUT);

    let result = &run.result;
    assert_eq!(result["job"], "clean");
    assert_eq!(result["succeeded"], true, "{result}");
    let disks = result["result"]["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 8, "{result}");
    for disk in disks {
        let expected = if disk["notes"].to_string().contains("read-only") {
            "skipped"
        } else {
            "succeeded"
        };
        assert_eq!(disk["result"], expected, "{disk}");
    }
    let wiped: String = result["result"].to_string();
    for kind in [
        "linux_raid_member",
        "ext4",
        "xfs",
        "LVM2_member",
        "vfat",
        "gpt",
        "PMBR",
        "dos",
    ] {
        assert!(
            wiped.contains(&format!("\"{kind}\"")),
            "{kind} not reported wiped"
        );
    }

    for name in [
        "md-a.raw", "md-b.raw", "md-c.raw", "md-d.raw", "gpt.raw", "mbr.raw", "nvme.raw",
    ] {
        assert_eq!(wipefs(&d(name)), Vec::<String>::new(), "{name}");
        let size = std::fs::metadata(d(name)).unwrap().len();
        assert_eq!(blkid_at(&d(name), 0, size), None, "{name}");
    }
    let ranges = [
        ("md-a.raw", md_parts.to_vec()),
        ("md-b.raw", md_parts.to_vec()),
        ("gpt.raw", gpt_parts),
        ("mbr.raw", mbr_parts),
    ];
    for (name, parts) in ranges {
        for (offset, len) in parts {
            assert_eq!(
                blkid_at(&d(name), offset, len),
                None,
                "{name} partition at {offset}"
            );
        }
    }
    assert_eq!(
        sha256_file(&d("ro.raw")),
        ro_before,
        "the read-only disk is untouched"
    );
}

#[test]
fn vm_erase_uses_nvme_format_discard_and_zeroing_and_refuses_read_only() {
    let dir = scratch_dir("vm-clean-erase");
    let d = |name: &str| dir.path().join(name);
    for (i, name) in ["nvme.raw", "discard.raw", "nodiscard.raw", "ro.raw"]
        .iter()
        .enumerate()
    {
        std::fs::write(d(name), noise((32 * MIB) as usize, i as u64 + 7)).unwrap();
    }
    let run = JobGuest::direct(
        "clean-erase",
        dir.path(),
        "rivet.job=clean rivet.clean.mode=erase",
    )
    .args([
        "-drive",
        &format!("file={},format=raw,if=none,id=n", d("nvme.raw").display()),
    ])
    .args(["-device", "nvme,drive=n,serial=NVME-ERASE"])
    // Discards reach the file (holes) but there is no write-zeroes command: verified discard.
    .virtio_disk(
        &d("discard.raw"),
        "dis",
        ",discard=unmap",
        ",serial=DISCARD,write-zeroes=off",
    )
    // Discards are accepted and ignored: the agent must notice and zero instead.
    .virtio_disk(
        &d("nodiscard.raw"),
        "nod",
        ",discard=ignore",
        ",serial=NODISCARD,write-zeroes=off",
    )
    .virtio_disk(&d("ro.raw"), "ro", ",readonly=on", ",serial=RO")
    .run(JOB_TIMEOUT);

    let result = &run.result;
    assert_eq!(
        result["succeeded"], false,
        "the read-only disk was refused: {result}"
    );
    let disks = result["result"]["disks"].as_array().unwrap();
    let by_disk = |kernel: &str| {
        disks
            .iter()
            .find(|r| r["disk"] == kernel)
            .unwrap_or_else(|| panic!("no report for {kernel}: {result}"))
            .clone()
    };
    let nvme = by_disk("/dev/nvme0n1");
    assert_eq!(nvme["result"], "succeeded", "{nvme}");
    assert!(
        nvme["method"].as_str().unwrap().starts_with("nvme-format"),
        "{nvme}"
    );
    let discard = by_disk("/dev/vda");
    assert_eq!(discard["method"], "discard", "{discard}");
    let zeroed = by_disk("/dev/vdb");
    assert_eq!(zeroed["method"], "zero-out", "{zeroed}");
    assert!(
        zeroed["notes"]
            .to_string()
            .contains("does not read back zeroes"),
        "{zeroed}"
    );
    let ro = by_disk("/dev/vdc");
    assert_eq!(ro["result"], "failed");
    assert!(ro["error"].as_str().unwrap().contains("read-only"), "{ro}");

    for name in ["nvme.raw", "discard.raw", "nodiscard.raw"] {
        let bytes = std::fs::read(d(name)).unwrap();
        assert!(bytes.iter().all(|b| *b == 0), "{name} is not all zeroes");
    }
    assert_eq!(
        std::fs::read(d("ro.raw")).unwrap(),
        noise((32 * MIB) as usize, 10)
    );
}

#[test]
fn vm_the_hybrid_iso_boots_under_bios_and_uefi() {
    let image = agent_image();
    let dir = scratch_dir("vm-iso");
    // SeaBIOS from an emulated CD-ROM.
    let bios = JobGuest::firmware_boot("iso-bios", dir.path(), Firmware::Bios)
        .args([
            "-drive",
            &format!(
                "file={},media=cdrom,if=ide,index=2,readonly=on",
                image.iso.display()
            ),
        ])
        .args(["-boot", "d"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .run(JOB_TIMEOUT);
    // OVMF from the same image on a USB stick, as a BMC's virtual media presents it.
    let uefi = JobGuest::firmware_boot("iso-uefi", dir.path(), Firmware::Uefi)
        .args(["-device", "qemu-xhci,id=xhci"])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=stick,readonly=on",
                image.iso.display()
            ),
        ])
        .args(["-device", "usb-storage,drive=stick,bus=xhci.0,bootindex=0"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .run(JOB_TIMEOUT);
    for (run, mode) in [(&bios, "bios"), (&uefi, "uefi")] {
        assert!(run.serial.contains("boot medium /dev/"), "{}", run.serial);
        // The ISO's rivet/cmdline asks for an inventory.
        let result = &run.result;
        assert_eq!(result["succeeded"], true, "{result}");
        let inv: Inventory = serde_json::from_value(result["result"]["inventory"].clone()).unwrap();
        let expected = if mode == "bios" {
            BootMode::Bios
        } else {
            BootMode::Uefi
        };
        assert_eq!(inv.boot_mode, expected);
        assert_eq!(inv.nics[0].ipv4_addresses, ["10.0.2.15"]);
    }
    // The USB stick the UEFI guest booted from is virtual media, never a target.
    let inv: Inventory =
        serde_json::from_value(uefi.result["result"]["inventory"].clone()).unwrap();
    let stick = inv
        .storage
        .iter()
        .find(|d| d.transport == Some(Transport::Usb))
        .unwrap();
    assert!(stick.virtual_media, "{stick:?}");
    assert!(
        uefi.result["result"]["rootDevice"]["error"]
            .as_str()
            .unwrap()
            .contains("virtual media"),
        "{}",
        uefi.result
    );
}

/// The config drive, written by `rivet-agent config-drive --disk` in a guest onto a GPT disk
/// whose image was smaller than the disk and onto a 4 KiB-sector disk, then mounted by the
/// guest's own kernel: ISO 9660 on the first, VFAT on the second.
#[test]
fn vm_linux_mounts_the_config_drives_the_agent_writes() {
    let dir = scratch_dir("vm-configdrive");
    let d = |name: &str| dir.path().join(name);
    // An "image" of 64 MiB with two partitions on a 256 MiB disk: the GPT backup is misplaced.
    sparse_file(&d("gpt.raw"), 64 * MIB);
    run(
        "sgdisk",
        &["-n1:0:+16M", "-n2:0:+8M", d("gpt.raw").to_str().unwrap()],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(d("gpt.raw"))
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    sparse_file(&d("4k.raw"), 256 * MIB);
    {
        let device = rivet_tests::block::LoopDevice::attach(
            &d("4k.raw"),
            &rivet_tests::block::LoopOptions {
                sector_size: Some(4096),
                ..Default::default()
            },
        );
        run("sgdisk", &["-n1:0:+32M", device.path().to_str().unwrap()]);
    }
    let mut overlay = rivet_tests::qemu::Cpio::default();
    for dir in [
        "cd",
        "cd/openstack",
        "cd/openstack/latest",
        "mnt",
        "mnt/iso",
        "mnt/fat",
    ] {
        overlay.dir(dir);
    }
    overlay.file(
        "cd/openstack/latest/meta_data.json",
        0o644,
        br#"{"uuid":"vm-config-drive"}"#,
    );
    overlay.file(
        "cd/openstack/latest/user_data",
        0o644,
        b"#cloud-config-from-rivet",
    );
    let init = "#!/bin/sh\nexport PATH=/usr/bin:/bin\n\
        mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev\n\
        dmesg -n 1\n\
        for a in $(cat /sys/bus/pci/devices/*/modalias); do modprobe -q $a; done\n\
        for a in $(cat /sys/bus/virtio/devices/*/modalias); do modprobe -q $a; done\n\
        for m in isofs vfat nls_cp437 nls_ascii; do modprobe -q $m; done\n\
        sleep 1\n\
        rivet-agent config-drive --source /cd --disk /dev/vda\n\
        rivet-agent config-drive --source /cd --disk /dev/vdb\n\
        sleep 1\n\
        mount -t iso9660 -o ro /dev/vda3 /mnt/iso && echo \"ISO $(cat /mnt/iso/openstack/latest/meta_data.json) $(cat /mnt/iso/openstack/latest/user_data)\"\n\
        mount -t vfat -o ro /dev/vdb2 /mnt/fat && echo \"FAT $(cat /mnt/fat/openstack/latest/meta_data.json) $(cat /mnt/fat/openstack/latest/user_data)\"\n\
        echo '===== RIVET-AGENT RESULT BEGIN ====='\necho '{\"done\":true}'\n\
        echo '===== RIVET-AGENT RESULT END ====='\npoweroff -f\n";
    overlay.file("init", 0o755, init.as_bytes());
    let image = agent_image();
    let initrd = d("configdrive.cpio");
    let base = run("zstd", &["-dc", image.initramfs.to_str().unwrap()]).stdout;
    std::fs::write(&initrd, [base, overlay.finish()].concat()).unwrap();
    let booted = JobGuest::with_initrd(
        "configdrive",
        dir.path(),
        &initrd,
        "console=ttyS0 quiet panic=-1",
    )
    .virtio_disk(&d("gpt.raw"), "g", "", "")
    .virtio_disk(
        &d("4k.raw"),
        "k",
        "",
        ",logical_block_size=4096,physical_block_size=4096",
    )
    .run(JOB_TIMEOUT);
    let serial = &booted.serial;
    assert!(serial.contains("\"gptBackupMoved\": true"), "{serial}");
    assert!(
        serial.contains("\"filesystem\": \"iso9660\"")
            && serial.contains("\"filesystem\": \"vfat\""),
        "{serial}"
    );
    assert!(
        serial.contains(r#"ISO {"uuid":"vm-config-drive"} #cloud-config-from-rivet"#),
        "{serial}"
    );
    assert!(
        serial.contains(r#"FAT {"uuid":"vm-config-drive"} #cloud-config-from-rivet"#),
        "{serial}"
    );
    // The host's sgdisk agrees with the guest's kernel about the tables.
    let verify = run("sgdisk", &["-v", d("gpt.raw").to_str().unwrap()]).stdout;
    let verify = String::from_utf8_lossy(&verify);
    assert!(verify.contains("No problems found"), "{verify}");
}

/// The agent's initramfs with `files` added (a config drive source, say), for a guest that
/// still runs the agent's own `/init`.
fn initramfs_with(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let mut overlay = rivet_tests::qemu::Cpio::default();
    for (path, contents) in files {
        let mut parent = String::new();
        for component in Path::new(path).parent().unwrap().iter() {
            parent = if parent.is_empty() {
                component.to_string_lossy().into_owned()
            } else {
                format!("{parent}/{}", component.to_string_lossy())
            };
            overlay.dir(&parent);
        }
        overlay.file(path, 0o644, contents);
    }
    let image = agent_image();
    let initrd = dir.join(format!("{name}.cpio"));
    let base = run("zstd", &["-dc", image.initramfs.to_str().unwrap()]).stdout;
    std::fs::write(&initrd, [base, overlay.finish()].concat()).unwrap();
    initrd
}

/// The URL of a file `server` serves as a user-mode guest reaches it: the host's loopback is
/// 10.0.2.2 to the guest.
fn guest_url(server: &rivet_tests::http::StaticServer, name: &str) -> String {
    server.url(name).replace("//127.0.0.1:", "//10.0.2.2:")
}

/// A deploy guest: the agent's `/init` with a user-mode NIC (the host's loopback is
/// 10.0.2.2 to it), the target disk with serial TARGET and a decoy disk.
fn deploy_guest(name: &str, dir: &Path, initrd: &Path, params: &str, target: &Path) -> JobRun {
    let decoy = dir.join("decoy.raw");
    sparse_file(&decoy, 256 * MIB);
    run("sgdisk", &["-n1:0:0", decoy.to_str().unwrap()]);
    let before = std::fs::read(&decoy).unwrap();
    let run = JobGuest::with_initrd(
        name,
        dir,
        initrd,
        &format!("console=ttyS0 quiet panic=-1 {params}"),
    )
    .args([
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
    ])
    .virtio_disk(&decoy, "decoy", "", ",serial=DECOY")
    .virtio_disk(target, "target", "", ",serial=TARGET")
    .run(JOB_TIMEOUT);
    assert_eq!(
        std::fs::read(&decoy).unwrap(),
        before,
        "the disk the hints did not choose was changed"
    );
    run
}

/// A qcow2 made by `qemu-img convert` from a GPT disk with FAT and ext4 partitions, served
/// by BusyBox httpd, deployed by `rivet-agent run` in the guest onto the disk the hints name
/// (larger than the image, holding an old table), with a checksum and a config drive.
#[test]
fn vm_deploy_writes_a_qcow2_from_http_with_its_config_drive() {
    let dir = scratch_dir("vm-deploy-qcow2");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let raw = deploy_image(dir.path());
    qemu_img_convert(&raw, "qcow2", &www.join("image.qcow2"));
    let server = rivet_tests::http::busybox_httpd(&www);
    let target = dir.path().join("target.raw");
    sparse_file(&target, 256 * MIB);
    run("sgdisk", &["-n1:0:+200M", target.to_str().unwrap()]);

    let meta = br#"{"uuid":"vm-deploy","hostname":"deployed"}"#;
    let user = b"#cloud-config\nhostname: deployed\n";
    let initrd = initramfs_with(
        dir.path(),
        "deploy-qcow2",
        &[
            ("cd/meta_data.json", meta.as_slice()),
            ("cd/user_data", user.as_slice()),
        ],
    );
    let params = format!(
        "rivet.job=deploy rivet.image={} rivet.image.checksum={} rivet.image.checksum_type=sha256 rivet.configdrive=/cd \
         rivet.hints={}",
        guest_url(&server, "image.qcow2"),
        sha256_file(&www.join("image.qcow2")),
        hints_param(json!({"serialNumber": "TARGET"})),
    );
    let run = deploy_guest("deploy-qcow2", dir.path(), &initrd, &params, &target);
    let result = &run.result;
    assert_eq!(result["job"], "deploy");
    assert_eq!(result["succeeded"], true, "{result}\n{}", run.serial);
    let report = &result["result"];
    assert_eq!(report["disk"]["serialNumber"], "TARGET", "{report}");
    assert!(
        report["disk"]["reason"]
            .as_str()
            .unwrap()
            .contains("root-device hints"),
        "{report}"
    );
    assert_eq!(report["format"], "qcow2");
    assert_eq!(report["checksumVerified"], true);
    assert_eq!(report["partitionTableReread"], true);
    assert_eq!(report["gptBackupMoved"], true);
    assert_eq!(report["zeroPolicy"], "write-zeroes");
    eprintln!("deploy report: {report}");

    assert_deployed(&raw, &target);
    let drive = &report["configDrive"];
    assert_eq!(drive["partition"], 3, "{report}");
    let files = config_drive_files(
        &target,
        drive["offset"].as_u64().unwrap(),
        drive["size"].as_u64().unwrap(),
        dir.path(),
    );
    assert_eq!(
        std::fs::read(files.join("openstack/latest/meta_data.json")).unwrap(),
        meta
    );
    assert_eq!(
        std::fs::read(files.join("openstack/latest/user_data")).unwrap(),
        user
    );
}

/// A raw image deployed right after an erase in the same job, onto a disk full of noise: the
/// erase zeroes the disk, so the writer skips the image's zero ranges — and every byte of
/// them must still read as zero afterwards.
#[test]
fn vm_deploy_after_an_erase_skips_zero_ranges_and_they_read_as_zero() {
    let dir = scratch_dir("vm-deploy-raw");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let raw = deploy_image(dir.path());
    std::fs::copy(&raw, www.join("image.img")).unwrap();
    let server = rivet_tests::http::busybox_httpd(&www);
    let target = dir.path().join("target.raw");
    std::fs::write(&target, noise(128 * MIB as usize, 3)).unwrap();

    let params = format!(
        "rivet.job=deploy rivet.image={} rivet.image.format=raw rivet.clean.mode=erase \
         rivet.hints={}",
        guest_url(&server, "image.img"),
        hints_param(json!({"serialNumber": "TARGET"})),
    );
    let initrd = agent_image().initramfs;
    let run = deploy_guest("deploy-raw", dir.path(), &initrd, &params, &target);
    let result = &run.result;
    assert_eq!(result["succeeded"], true, "{result}\n{}", run.serial);
    let report = &result["result"];
    assert_eq!(report["format"], "raw");
    assert_eq!(report["checksumVerified"], false);
    assert_eq!(report["cleaned"]["result"], "succeeded", "{report}");
    assert_eq!(report["zeroPolicy"], "assume-zeroed", "{report}");
    assert!(report["bytesSkipped"].as_u64().unwrap() > 0, "{report}");
    assert!(report.get("configDrive").is_none());
    assert_deployed(&raw, &target);
    // Past the image, only the moved GPT backup is left of anything: the noise is gone.
    let disk = std::fs::read(&target).unwrap();
    let tail_start = (128 * MIB - GPT_BACKUP_BYTES) as usize;
    assert!(
        disk[IMAGE_BYTES as usize..tail_start]
            .iter()
            .all(|b| *b == 0),
        "noise survived past the image"
    );
}

/// A guest whose agent waits for an engine that never answers (it retries for ever, as it
/// does while a real engine is down), with QMP to press its power button.
fn power_button_guest(dir: &Path, name: &str, params: &str) -> (rivet_tests::qemu::Guest, Qmp) {
    let socket = Qmp::socket(dir, name);
    let mut guest = JobGuest::direct(name, dir, params)
        .args(Qmp::args(&socket))
        .start();
    guest.wait_for_serial(rivet_agent::console::READY, JOB_TIMEOUT);
    let qmp = Qmp::connect(&socket, Duration::from_secs(30));
    (guest, qmp)
}

/// Presses the ACPI power button (what a BMC's soft power-off does) and waits for the
/// guest to power itself off: QEMU exits when it does. Returns the console.
fn press_and_wait_for_power_off(guest: &mut rivet_tests::qemu::Guest, qmp: &mut Qmp) -> String {
    assert!(
        !guest.has_exited(),
        "the guest stopped before the button was pressed"
    );
    let pressed = Instant::now();
    qmp.execute("system_powerdown", json!({}));
    // Polled finely here only to print a useful figure; nothing is asserted on it.
    while !guest.has_exited() && pressed.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    guest.wait_for_exit(Duration::from_secs(1));
    eprintln!(
        "the guest powered off {:.2} s after system_powerdown",
        pressed.elapsed().as_secs_f64()
    );
    guest.serial()
}

#[test]
fn vm_the_power_button_powers_off_an_agent_waiting_for_its_engine() {
    let dir = scratch_dir("vm-power-button");
    let fingerprint = format!("sha256:{}", "ab".repeat(32));
    let (mut guest, mut qmp) = power_button_guest(
        dir.path(),
        "power-button",
        &format!("rivet.url=https://10.0.2.2:9/ rivet.ca={fingerprint} rivet.token=never-used"),
    );
    guest.wait_for_serial("connecting to the engine", JOB_TIMEOUT);
    let serial = press_and_wait_for_power_off(&mut guest, &mut qmp);
    assert!(
        serial.contains("rivet-agent: power button pressed (event"),
        "{serial}"
    );
    assert!(serial.contains("rivet-agent: powering off"), "{serial}");
    assert!(!serial.contains("partition tables are wiped"), "{serial}");
}

/// The button pressed while an image streams onto a disk that held an old GPT: the image
/// server stops sending half-way, the button is pressed, and the disk must come back with
/// both ends zeroed — no old table over half a new image, nothing that boots — and no
/// result claiming anything.
#[test]
fn vm_the_power_button_during_a_deploy_wipes_the_half_written_disk() {
    let dir = scratch_dir("vm-power-button-deploy");
    let image = dir.path().join("image.raw");
    let content = noise(24 * MIB as usize, 0x5eed);
    std::fs::write(&image, &content).unwrap();
    let checksum = sha256_file(&image);
    let half = 12 * MIB;
    let server = rivet_tests::http::FaultyServer::start(
        &image,
        rivet_tests::http::Faults {
            cut_after: Some(half),
            cuts: usize::MAX,
            stall: Some(Duration::from_secs(600)),
            ..Default::default()
        },
    );
    let target = dir.path().join("target.raw");
    sparse_file(&target, 64 * MIB);
    run("sgdisk", &["-n1:0:0", target.to_str().unwrap()]);
    let hints = hints_param(json!({"serialNumber": "TARGET"}));
    let url = server
        .url("image.raw")
        .replace("//127.0.0.1:", "//10.0.2.2:");
    let socket = Qmp::socket(dir.path(), "power-button-deploy");
    let mut guest = JobGuest::direct(
        "power-button-deploy",
        dir.path(),
        &format!(
            "rivet.job=deploy rivet.hints={hints} rivet.image={url} \
             rivet.image.checksum={checksum}"
        ),
    )
    .args(Qmp::args(&socket))
    .args([
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
    ])
    .virtio_disk(&target, "target", "", ",serial=TARGET")
    .start();
    let mut qmp = Qmp::connect(&socket, Duration::from_secs(30));
    guest.wait_for_serial("deploying", JOB_TIMEOUT);
    rivet_tests::wait_until("the guest to fetch the image", JOB_TIMEOUT, || {
        !server.requests().is_empty()
    });
    // The first half arrives in well under a second; give the guest's writer time to
    // put it into the page cache (the power-off syncs it to the disk).
    std::thread::sleep(Duration::from_secs(5));
    let serial = press_and_wait_for_power_off(&mut guest, &mut qmp);

    assert!(
        serial.contains("rivet-agent: power button pressed (event"),
        "{serial}"
    );
    assert!(
        serial.contains("/dev/vda was being written; its partition tables are wiped"),
        "{serial}"
    );
    assert!(
        !serial.contains(rivet_agent::console::RESULT_BEGIN),
        "{serial}"
    );
    let disk = std::fs::read(&target).unwrap();
    assert_eq!(disk.len() as u64, 64 * MIB);
    let end = 63 * MIB as usize;
    assert!(
        disk[..MIB as usize].iter().all(|&b| b == 0),
        "the first MiB"
    );
    assert!(disk[end..].iter().all(|&b| b == 0), "the last MiB");
    // The image was really being written: its second MiB is on the disk.
    let second = MIB as usize..2 * MIB as usize;
    assert!(
        disk[second.clone()] == content[second],
        "nothing of the image was written"
    );
    assert_unbootable(&target);
}
