#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Deploys onto image files standing in for disks: images made by sgdisk, mkfs and
//! `qemu-img convert`, served by BusyBox httpd, checked byte for byte with `cmp`, the tables
//! with `sgdisk -v`, the config drive with xorriso, a wiped disk with blkid and wipefs.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use rivet_agent::configdrive::{ConfigDrive, Filesystem};
use rivet_agent::deploy::{self, ChosenDisk, DeployError, DeployRequest};
use rivet_agent::shutdown::{self, Stage};
use rivet_images::Phase;
use rivet_tests::scratch_dir;

const DISK_BYTES: u64 = 256 * MIB;

fn config_source(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("cd");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("meta_data.json"), r#"{"uuid":"deploy-test"}"#).unwrap();
    std::fs::write(source.join("user_data"), "#cloud-config\nhostname: n1\n").unwrap();
    source
}

fn disk_with_old_table(path: &Path) {
    sparse_file(path, DISK_BYTES);
    run(
        "sgdisk",
        &["-n1:0:+100M", "-n2:0:0", path.to_str().unwrap()],
    );
    run(
        "mkfs.fat",
        &["-F", "32", "--offset=2048", path.to_str().unwrap()],
    );
}

#[test]
fn a_qcow2_lands_byte_for_byte_with_the_backup_moved_and_a_config_drive() {
    let dir = scratch_dir("deploy-qcow2");
    let raw = deploy_image(dir.path());
    let qcow2 = dir.path().join("image.qcow2");
    qemu_img_convert(&raw, "qcow2", &qcow2);
    let disk = dir.path().join("disk.raw");
    disk_with_old_table(&disk);

    let mut request = DeployRequest::parse(
        qcow2.to_str().unwrap(),
        Some(&sha256_file(&qcow2)),
        Some("sha256"),
        None,
    )
    .unwrap();
    let source = config_source(dir.path());
    request.config_drive = Some(ConfigDrive::load(&source).unwrap());
    // What a power-off would find, seen from the pipeline's own progress updates.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress: rivet_images::ProgressCallback = Arc::new({
        let (seen, disk) = (seen.clone(), disk.clone());
        move |update: &rivet_images::Progress| {
            let stage = shutdown::coordinator()
                .busy_disks()
                .into_iter()
                .find(|(busy, _)| *busy == disk)
                .map(|(_, stage)| stage);
            seen.lock().unwrap().push((update.phase, stage));
        }
    });
    let report = deploy::deploy(&ChosenDisk::named(&disk, None), &request, Some(progress)).unwrap();
    let seen = seen.lock().unwrap().clone();
    let stage_in = |phase| {
        seen.iter()
            .find(|(seen, _)| *seen == phase)
            .unwrap_or_else(|| panic!("no {phase} update in {seen:?}"))
            .1
    };
    assert_eq!(stage_in(Phase::Streaming), Some(Stage::Destroying));
    assert_eq!(stage_in(Phase::Committing), Some(Stage::Finishing));
    // Once deployed the disk is nobody's work: a power-off now must leave it alone.
    assert!(
        !shutdown::coordinator()
            .busy_disks()
            .iter()
            .any(|(busy, _)| *busy == disk)
    );

    assert_eq!(report.format.to_string(), "qcow2");
    assert_eq!(report.virtual_size, IMAGE_BYTES);
    assert!(report.checksum_verified);
    assert!(report.gpt_backup_moved);
    assert!(!report.partition_table_reread, "a file has no kernel table");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), DISK_BYTES);
    assert_deployed(&raw, &disk);
    let drive = report.config_drive.clone().unwrap();
    assert_eq!(drive.filesystem, Filesystem::Iso9660);
    assert_eq!(drive.partition, 3);
    assert!(drive.offset + drive.size <= DISK_BYTES && drive.offset >= IMAGE_BYTES);
    let files = config_drive_files(&disk, drive.offset, drive.size, dir.path());
    assert_eq!(
        std::fs::read_to_string(files.join("openstack/latest/meta_data.json")).unwrap(),
        r#"{"uuid":"deploy-test"}"#
    );
    // The report is what the engine reads: the fields it needs are there by name.
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "disk",
        "format",
        "bytesWritten",
        "checksumVerified",
        "duration",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    assert_eq!(json["configDrive"]["partition"], 3);
}

#[test]
fn the_cli_deploys_a_raw_image_over_http_checked_against_a_checksum_file() {
    let dir = scratch_dir("deploy-http");
    let served = dir.path().join("www");
    std::fs::create_dir_all(&served).unwrap();
    let raw = deploy_image(dir.path());
    std::fs::copy(&raw, served.join("disk.img")).unwrap();
    std::fs::write(
        served.join("SHA256SUMS"),
        format!("{}  disk.img\n", sha256_file(&raw)),
    )
    .unwrap();
    let server = rivet_tests::http::busybox_httpd(&served);
    let disk = dir.path().join("disk.raw");
    sparse_file(&disk, DISK_BYTES);

    let out = Command::new(env!("CARGO_BIN_EXE_rivet-agent"))
        .args(["deploy", &server.url("disk.img"), "--checksum"])
        .arg(server.url("SHA256SUMS"))
        .arg("--disk")
        .arg(&disk)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["format"], "raw");
    assert_eq!(report["checksumVerified"], true);
    assert_eq!(report["digest"]["algorithm"], "sha256");
    assert_eq!(report["gptBackupMoved"], true);
    assert!(report.get("configDrive").is_none());
    assert_deployed(&raw, &disk);
}

#[test]
fn a_checksum_mismatch_leaves_a_disk_that_cannot_boot() {
    let dir = scratch_dir("deploy-mismatch");
    let raw = deploy_image(dir.path());
    let qcow2 = dir.path().join("image.qcow2");
    qemu_img_convert(&raw, "qcow2", &qcow2);
    let disk = dir.path().join("disk.raw");
    disk_with_old_table(&disk);
    assert!(blkid_at(&disk, 0, DISK_BYTES).is_some());
    let wrong = "0".repeat(64);

    let out = Command::new(env!("CARGO_BIN_EXE_rivet-agent"))
        .args(["deploy", qcow2.to_str().unwrap(), "--checksum", &wrong])
        .arg("--config-drive")
        .arg(config_source(dir.path()))
        .arg("--disk")
        .arg(&disk)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "exit status 4: checksum mismatch"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checksumMismatch"], true);
    assert_eq!(report["diskWiped"], true);
    // Neither the image's table nor the old one is left, nor any file system at the start.
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), DISK_BYTES);
    assert_unbootable(&disk);
}

#[test]
fn refusals_and_bad_requests_leave_the_disk_as_it_was() {
    let dir = scratch_dir("deploy-refused");
    let raw = deploy_image(dir.path());
    let qcow2 = dir.path().join("image.qcow2");
    qemu_img_convert(&raw, "qcow2", &qcow2);
    let small = dir.path().join("small.raw");
    sparse_file(&small, 32 * MIB);
    run("sgdisk", &["-n1:0:0", small.to_str().unwrap()]);
    let before = std::fs::read(&small).unwrap();

    let request = DeployRequest::parse(qcow2.to_str().unwrap(), None, None, None).unwrap();
    let err = deploy::deploy(&ChosenDisk::named(&small, None), &request, None).unwrap_err();
    assert!(matches!(err, DeployError::Image { .. }), "{err}");
    assert!(!err.disk_wiped(), "{}", err.chain());
    assert!(err.chain().contains("needs"), "{}", err.chain());

    // A qcow2 declared raw is refused, not written as raw bytes.
    let request = DeployRequest::parse(qcow2.to_str().unwrap(), None, None, Some("raw")).unwrap();
    let big = dir.path().join("big.raw");
    disk_with_old_table(&big);
    let big_before = std::fs::read(&big).unwrap();
    let err = deploy::deploy(&ChosenDisk::named(&big, None), &request, None).unwrap_err();
    assert!(err.chain().contains("declared raw"), "{}", err.chain());
    assert_eq!(std::fs::read(&big).unwrap(), big_before);
    // A failed deploy leaves no disk registered as being written either.
    let busy = shutdown::coordinator().busy_disks();
    assert!(
        !busy.iter().any(|(disk, _)| *disk == big || *disk == small),
        "{busy:?}"
    );

    // A missing disk, a config drive that cannot be read: refused before anything happens.
    let err = deploy::deploy(
        &ChosenDisk::named(&dir.path().join("absent"), None),
        &request,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, DeployError::Open { .. }), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_rivet-agent"))
        .args(["deploy", qcow2.to_str().unwrap(), "--config-drive"])
        .arg(dir.path().join("no-such-dir"))
        .arg("--disk")
        .arg(&small)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config drive"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&small).unwrap(), before);
}

/// On a real block device (a loop device over a file full of noise): zero ranges are zeroed,
/// not skipped, when nothing erased the disk first; and a checksum mismatch wipes the old
/// table at the device's far end too, not just the image's.
#[test]
fn on_a_block_device_zeroes_are_written_and_a_mismatch_wipes_both_ends() {
    use rivet_tests::block::{LoopDevice, LoopOptions};
    let dir = scratch_dir("deploy-loop");
    let raw = deploy_image(dir.path());
    let qcow2 = dir.path().join("image.qcow2");
    qemu_img_convert(&raw, "qcow2", &qcow2);
    let backing = dir.path().join("disk.raw");
    std::fs::write(&backing, noise(96 * MIB as usize, 5)).unwrap();
    {
        let device = LoopDevice::attach(&backing, &LoopOptions::default());
        let request = DeployRequest::parse(qcow2.to_str().unwrap(), None, None, None).unwrap();
        let report =
            deploy::deploy(&ChosenDisk::named(device.path(), None), &request, None).unwrap();
        assert_eq!(report.zero_policy, rivet_images::ZeroPolicy::WriteZeroes);
        assert!(report.bytes_zeroed > 0, "{report:?}");
        assert!(report.gpt_backup_moved);
    }
    assert_deployed(&raw, &backing);

    // Now an old table at both ends of the device, and an image that fails its checksum.
    std::fs::remove_file(&backing).unwrap();
    sparse_file(&backing, 96 * MIB);
    run("sgdisk", &["-n1:0:0", backing.to_str().unwrap()]);
    run(
        "mkfs.fat",
        &["-F", "32", "--offset=2048", backing.to_str().unwrap()],
    );
    {
        let device = LoopDevice::attach(&backing, &LoopOptions::default());
        let out = Command::new(env!("CARGO_BIN_EXE_rivet-agent"))
            .args([
                "deploy",
                qcow2.to_str().unwrap(),
                "--checksum",
                &"1".repeat(64),
            ])
            .arg("--disk")
            .arg(device.path())
            .arg("--json")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["diskWiped"], true, "{report}");
    }
    assert_unbootable(&backing);
}
