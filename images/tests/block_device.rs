//! Block-device targets, on real loop devices (root): zeroing policies, `O_DIRECT` with 512-
//! and 4096-byte sectors, exclusive opening, size checks, and wiping after a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rivet_images::{
    Checksum, ImageError, ImageSource, Refusal, TargetError, TargetKind, WriteOptions, ZeroPolicy,
    write_image,
};
use rivet_tests::{require_root, require_tool, scratch_dir};

use common::{corpus_of, reference_raw, run};

const DEVICE_SIZE: u64 = 48 << 20;

/// A loop device over a file, detached when dropped.
struct Loop {
    device: PathBuf,
}

impl Loop {
    fn new(backing: &Path, sector_size: u32) -> Self {
        require_root();
        let file = std::fs::File::create(backing).unwrap();
        file.set_len(DEVICE_SIZE).unwrap();
        drop(file);
        let out = run(Command::new(require_tool("losetup"))
            .args([
                "--find",
                "--show",
                "--sector-size",
                &sector_size.to_string(),
            ])
            .arg(backing));
        let device = String::from_utf8(out).unwrap().trim().to_owned();
        let guard = Self {
            device: PathBuf::from(&device),
        };
        assert!(device.starts_with("/dev/loop"), "{device:?}");
        guard
    }

    /// Fills the device with a non-zero pattern, so that zero ranges must really be zeroed.
    fn fill(&self, byte: u8) {
        let data = vec![byte; DEVICE_SIZE as usize];
        std::fs::write(&self.device, data).unwrap();
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(&self.device).unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

async fn write(
    image: &Path,
    device: &Path,
    options: &WriteOptions,
) -> Result<rivet_images::WriteReport, ImageError> {
    write_image(&ImageSource::File(image.to_path_buf()), device, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_device_targets_with_every_zero_policy_and_direct_io() {
    let dir = scratch_dir("blockdev");
    let images = corpus_of(
        dir.path(),
        &[
            "vm-written",
            "zero-clusters",
            "zlib",
            "extended-l2",
            "odd-size",
        ],
    );
    let pick = |name: &str| {
        images
            .iter()
            .find(|image| image.name == name)
            .unwrap()
            .path
            .clone()
    };
    let device = Loop::new(&dir.path().join("disk.img"), 512);

    for (name, direct) in [
        ("vm-written", false),
        ("zero-clusters", true),
        ("zlib", true),
        ("extended-l2", false),
        ("odd-size", true),
    ] {
        let image = pick(name);
        let reference = reference_raw(&image, dir.path());
        device.fill(0xAB);
        let options = WriteOptions {
            direct_io: direct,
            zero_policy: ZeroPolicy::WriteZeroes,
            ..WriteOptions::default()
        };
        let report = write(&image, &device.device, &options).await.unwrap();
        assert_eq!(report.target, TargetKind::BlockDevice);
        assert!(report.bytes_zeroed > 0, "{name}: zero ranges were zeroed");
        let content = device.read();
        assert!(
            content[..reference.len()] == reference[..],
            "{name} (direct {direct}): device differs from qemu-img"
        );
        // Beyond the image, the device keeps what it had — except its last MiB, which is
        // cleared so no stale backup GPT survives.
        let tail = &content[reference.len()..(DEVICE_SIZE - (1 << 20)) as usize];
        assert!(
            tail.iter().all(|&b| b == 0xAB),
            "{name}: wrote past the image"
        );
        assert!(
            content[(DEVICE_SIZE - (1 << 20)) as usize..]
                .iter()
                .all(|&b| b == 0)
        );
    }

    // AssumeZeroed skips zero ranges: on a device that is not zeroed they keep their old
    // bytes (which is why the caller must only claim it after wiping)…
    let image = pick("zero-clusters");
    let reference = reference_raw(&image, dir.path());
    device.fill(0xAB);
    let assume = WriteOptions {
        zero_policy: ZeroPolicy::AssumeZeroed,
        ..WriteOptions::default()
    };
    let report = write(&image, &device.device, &assume).await.unwrap();
    assert_eq!(report.bytes_zeroed, 0);
    assert!(report.bytes_skipped > 0);
    assert!(device.read()[..reference.len()] != reference[..]);
    // …and on a zeroed device the result is exact.
    device.fill(0);
    write(&image, &device.device, &assume).await.unwrap();
    assert!(device.read()[..reference.len()] == reference[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_on_4k_sectors_with_512_byte_clusters() {
    let dir = scratch_dir("blockdev-4k");
    let images = corpus_of(dir.path(), &["cluster-512", "zlib-512", "odd-size"]);
    let device = Loop::new(&dir.path().join("disk.img"), 4096);
    for name in ["cluster-512", "zlib-512", "odd-size"] {
        let image = &images.iter().find(|image| image.name == name).unwrap().path;
        let reference = reference_raw(image, dir.path());
        device.fill(0x5A);
        let options = WriteOptions {
            direct_io: true,
            ..WriteOptions::default()
        };
        write(image, &device.device, &options).await.unwrap();
        assert!(device.read()[..reference.len()] == reference[..], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_in_use_too_small_or_failed_are_handled() {
    let dir = scratch_dir("blockdev-errors");
    let device = Loop::new(&dir.path().join("disk.img"), 512);
    device.fill(0xCD);

    // Held exclusively by someone else (as a mounted filesystem would be): refused.
    let image = dir.path().join("small.raw");
    common::mixed_raw(&image, 4, 1);
    let holder = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&device.device)
        .unwrap();
    let err = write(&image, &device.device, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Target(TargetError::Busy { .. })),
        "{err:?}"
    );
    drop(holder);

    // Larger than the device: refused before anything is written.
    let big = dir.path().join("big.qcow2");
    common::qemu_img(&["create", "-q", "-f", "qcow2", big.to_str().unwrap(), "64M"]);
    let err = write(&big, &device.device, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Refused(Refusal::TooLarge { needed, available }) if needed == 64 << 20 && available == DEVICE_SIZE),
        "{err:?}"
    );
    assert!(
        device.read().iter().all(|&b| b == 0xCD),
        "the device was touched"
    );
    let big_raw = dir.path().join("big.raw");
    std::fs::File::create(&big_raw)
        .unwrap()
        .set_len(DEVICE_SIZE + 512)
        .unwrap();
    let err = write(&big_raw, &device.device, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Refused(Refusal::TooLarge { .. })),
        "{err:?}"
    );
    assert!(
        device.read().iter().all(|&b| b == 0xCD),
        "a raw image too large touched it"
    );

    // A checksum mismatch after writing: both ends of the device are wiped.
    let wrong = WriteOptions {
        checksum: Some(Checksum::parse(&"0".repeat(64), None).unwrap()),
        ..WriteOptions::default()
    };
    let err = write(&image, &device.device, &wrong).await.unwrap_err();
    assert!(
        err.is_verification_failure() && err.target_modified(),
        "{err:?}"
    );
    let content = device.read();
    let mib = 1 << 20;
    assert!(content[..mib].iter().all(|&b| b == 0), "start not wiped");
    assert!(
        content[content.len() - mib..].iter().all(|&b| b == 0),
        "end not wiped"
    );
    assert!(
        content[(4 << 20) - mib..4 << 20].iter().all(|&b| b == 0),
        "image end not wiped"
    );
}
