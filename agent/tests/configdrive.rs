#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Config drives read back by the real tools: xorriso for ISO 9660 + Joliet, fsck.vfat and
//! mtools for FAT, blkid for labels, sgdisk/sfdisk for the partition added at the end.

mod common;

use std::path::Path;

use common::{MIB, blkid_at, run, run_with_input, sparse_file};
use rivet_agent::configdrive::{self, ConfigDrive, ConfigDriveError, Filesystem};
use rivet_agent::disk::{Access, Disk};
use rivet_tests::block::{LoopDevice, LoopOptions};
use rivet_tests::scratch_dir;
use serde_json::json;

const NOW: i64 = 1_700_000_000;

fn sample(dir: &Path) -> ConfigDrive {
    let latest = dir.join("openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    std::fs::write(
        latest.join("meta_data.json"),
        r#"{"uuid":"0f1e","hostname":"node-0"}"#,
    )
    .unwrap();
    std::fs::write(
        latest.join("user_data"),
        "#cloud-config\nhostname: node-0\n",
    )
    .unwrap();
    std::fs::write(
        latest.join("network_data.json"),
        r#"{"links":[],"networks":[]}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("openstack/2012-08-10")).unwrap();
    std::fs::write(dir.join("openstack/2012-08-10/meta_data.json"), "{}").unwrap();
    ConfigDrive::from_dir(dir).unwrap()
}

fn assert_files_equal(extracted: &Path, drive: &ConfigDrive) {
    for (path, contents) in drive.files() {
        let got = std::fs::read(extracted.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(&got, contents, "{path}");
    }
}

#[test]
fn iso9660_drives_read_back_with_xorriso_and_blkid() {
    let dir = scratch_dir("cd-iso");
    let drive = sample(&dir.path().join("src"));
    let iso = dir.path().join("cd.iso");
    std::fs::write(&iso, drive.iso9660(NOW)).unwrap();
    let found = blkid_at(&iso, 0, std::fs::metadata(&iso).unwrap().len()).unwrap();
    assert!(
        found.contains("LABEL=\"config-2\"") && found.contains("TYPE=\"iso9660\""),
        "{found}"
    );
    let out = dir.path().join("out");
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            iso.to_str().unwrap(),
            "-extract",
            "/",
            out.to_str().unwrap(),
        ],
    );
    assert_files_equal(&out, &drive);
}

#[test]
fn vfat_drives_pass_fsck_and_read_back_with_mtools() {
    for sector in [512u32, 4096] {
        let dir = scratch_dir("cd-vfat");
        let drive = sample(&dir.path().join("src"));
        let image = dir.path().join("cd.vfat");
        std::fs::write(&image, drive.vfat(64 * MIB, sector, NOW).unwrap()).unwrap();
        run("fsck.vfat", &["-n", image.to_str().unwrap()]);
        let found = blkid_at(&image, 0, 64 * MIB).unwrap();
        assert!(
            found.contains("LABEL=\"CONFIG-2\"") && found.contains("TYPE=\"vfat\""),
            "{found}"
        );
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let output = std::process::Command::new(rivet_tests::require_tool("mcopy"))
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-i", image.to_str().unwrap(), "::/openstack"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_files_equal(&out.parent().unwrap().join("out"), &drive);
    }
}

#[test]
fn sources_are_checked_before_anything_is_written() {
    let dir = scratch_dir("cd-bad");
    // Loose files go under openstack/latest.
    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::write(loose.join("meta_data.json"), "{}").unwrap();
    std::fs::write(loose.join("user_data"), "x").unwrap();
    let drive = ConfigDrive::from_dir(&loose).unwrap();
    let names: Vec<&String> = drive.files().keys().collect();
    assert_eq!(
        names,
        [
            "openstack/latest/meta_data.json",
            "openstack/latest/user_data"
        ]
    );
    // Links are refused, not followed (a link to /etc/shadow must not end up on the disk).
    let linked = dir.path().join("linked");
    std::fs::create_dir_all(linked.join("openstack/latest")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/hostname",
        linked.join("openstack/latest/meta_data.json"),
    )
    .unwrap();
    assert!(matches!(
        ConfigDrive::from_dir(&linked),
        Err(ConfigDriveError::BadPath { .. })
    ));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        ConfigDrive::from_dir(&empty),
        Err(ConfigDriveError::Empty)
    ));
    assert!(matches!(
        ConfigDrive::from_dir(&dir.path().join("missing-dir-with-openstack")),
        Err(ConfigDriveError::Empty)
    ));
    let mut drive = ConfigDrive::default();
    for bad in ["../etc/passwd", "/abs", "a/./b", "sp ace", ""] {
        assert!(drive.insert(bad, vec![]).is_err(), "{bad:?} accepted");
    }
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("user_data"), vec![b'x'; 61 << 20]).unwrap();
    assert!(matches!(
        ConfigDrive::from_dir(&big),
        Err(ConfigDriveError::TooBig { .. })
    ));

    let ironic = ConfigDrive::from_ironic_json(&json!({
        "meta_data": {"uuid": "u1"},
        "user_data": "#!/bin/sh\necho hi\n",
        "network_data": {"links": []}
    }))
    .unwrap();
    assert_eq!(
        ironic.files()["openstack/latest/user_data"],
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        ironic.files()["openstack/latest/meta_data.json"],
        br#"{"uuid":"u1"}"#
    );
    assert!(ConfigDrive::from_ironic_json(&json!({"meta_data": {}, "evil": 1})).is_err());
    assert!(ConfigDrive::from_ironic_json(&json!("string")).is_err());
}

fn sgdisk_verify(image: &Path) -> String {
    let out = std::process::Command::new(rivet_tests::require_tool("sgdisk"))
        .args(["-v", image.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_gpt_image_smaller_than_the_disk_gets_its_backup_moved_and_a_config_drive_at_the_end() {
    let dir = scratch_dir("cd-gpt");
    let drive = sample(&dir.path().join("src"));
    let disk_path = dir.path().join("disk.img");
    // The "image": 64 MiB with two partitions, written to a 256 MiB disk.
    sparse_file(&disk_path, 64 * MIB);
    run(
        "sgdisk",
        &[
            "-n1:0:+16M",
            "-c1:root",
            "-n2:0:+8M",
            disk_path.to_str().unwrap(),
        ],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk_path)
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    let before = sgdisk_verify(&disk_path);
    assert!(
        !before.contains("No problems found"),
        "sgdisk should see the misplaced backup: {before}"
    );

    let disk = Disk::open(&disk_path, Access::ReadWrite).unwrap();
    assert!(configdrive::fix_gpt_backup(&disk).unwrap());
    assert!(
        !configdrive::fix_gpt_backup(&disk).unwrap(),
        "a second fix changes nothing"
    );
    assert!(
        sgdisk_verify(&disk_path).contains("No problems found"),
        "{}",
        sgdisk_verify(&disk_path)
    );

    let placement = configdrive::write_to_disk(&disk, &drive, NOW).unwrap();
    assert_eq!(placement.filesystem, Filesystem::Iso9660);
    assert!(placement.created);
    assert_eq!(placement.partition, 3);
    // It ends at the last usable sector, just before the backup entries and header.
    assert_eq!(placement.offset + placement.size, 256 * MIB - 33 * 512);
    assert!(placement.offset + placement.size <= 256 * MIB - 33 * 512);
    assert_eq!(placement.offset % MIB, 0, "1 MiB aligned");
    assert!(sgdisk_verify(&disk_path).contains("No problems found"));
    let listing =
        String::from_utf8_lossy(&run("sgdisk", &["-i", "3", disk_path.to_str().unwrap()]).stdout)
            .into_owned();
    assert!(listing.contains("config-2"), "{listing}");
    let found = blkid_at(&disk_path, placement.offset, placement.size).unwrap();
    assert!(found.contains("LABEL=\"config-2\""), "{found}");
    // The original partitions are untouched.
    let first =
        String::from_utf8_lossy(&run("sgdisk", &["-i", "1", disk_path.to_str().unwrap()]).stdout)
            .into_owned();
    assert!(
        first.contains("First sector: 2048") && first.contains("'root'"),
        "{first}"
    );

    // Writing again reuses the partition.
    let again = configdrive::write_to_disk(&disk, &drive, NOW).unwrap();
    assert!(!again.created);
    assert_eq!(again.partition, 3);
    assert_eq!(again.offset, placement.offset);
}

#[test]
fn an_mbr_disk_gets_a_primary_config_partition() {
    let dir = scratch_dir("cd-mbr");
    let drive = sample(&dir.path().join("src"));
    let disk_path = dir.path().join("disk.img");
    sparse_file(&disk_path, 128 * MIB);
    run_with_input(
        "sfdisk",
        &["-q", disk_path.to_str().unwrap()],
        b"label: dos\nstart=2048, size=32M, type=83\n",
    );
    let disk = Disk::open(&disk_path, Access::ReadWrite).unwrap();
    let placement = configdrive::write_to_disk(&disk, &drive, NOW).unwrap();
    assert_eq!(placement.partition, 2);
    assert_eq!(placement.offset + placement.size, 128 * MIB);
    let dump = String::from_utf8_lossy(&run("sfdisk", &["-d", disk_path.to_str().unwrap()]).stdout)
        .into_owned();
    let start = placement.offset / 512;
    assert!(
        dump.contains(&format!("start=      {start}")) || dump.contains(&format!("start={start}")),
        "{dump}"
    );
    assert!(
        blkid_at(&disk_path, placement.offset, placement.size)
            .unwrap()
            .contains("config-2")
    );
}

#[test]
fn a_4k_sector_disk_gets_a_vfat_config_drive() {
    let dir = scratch_dir("cd-4k");
    let drive = sample(&dir.path().join("src"));
    let disk_path = dir.path().join("disk.img");
    sparse_file(&disk_path, 256 * MIB);
    let four_k = LoopOptions {
        sector_size: Some(4096),
        ..Default::default()
    };
    {
        let device = LoopDevice::attach(&disk_path, &four_k);
        run("sgdisk", &["-n1:0:+32M", device.path().to_str().unwrap()]);
    }
    let disk = Disk::open(&disk_path, Access::ReadWrite)
        .unwrap()
        .with_sector_size(4096);
    let placement = configdrive::write_to_disk(&disk, &drive, NOW).unwrap();
    assert_eq!(placement.filesystem, Filesystem::Vfat);
    drop(disk);
    let device = LoopDevice::attach(&disk_path, &four_k);
    let verify =
        String::from_utf8_lossy(&run("sgdisk", &["-v", device.path().to_str().unwrap()]).stdout)
            .into_owned();
    assert!(verify.contains("No problems found"), "{verify}");
    let found = blkid_at(&disk_path, placement.offset, placement.size).unwrap();
    assert!(
        found.contains("LABEL=\"CONFIG-2\"") && found.contains("BLOCK_SIZE=\"4096\""),
        "{found}"
    );
}

#[test]
fn a_disk_without_a_partition_table_is_refused() {
    let dir = scratch_dir("cd-none");
    let drive = sample(&dir.path().join("src"));
    let disk_path = dir.path().join("disk.img");
    sparse_file(&disk_path, 64 * MIB);
    let disk = Disk::open(&disk_path, Access::ReadWrite).unwrap();
    assert!(matches!(
        configdrive::write_to_disk(&disk, &drive, NOW),
        Err(ConfigDriveError::NoPartitionTable)
    ));
    assert!(
        std::fs::read(&disk_path).unwrap().iter().all(|b| *b == 0),
        "nothing written"
    );
}
