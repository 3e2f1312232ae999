//! Disk images and the real tools that make and check them, shared by the agent's tests and
//! the engine's end-to-end test (which includes this file by path).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rivet_tests::block::{LoopDevice, LoopOptions};
use rivet_tests::require_tool;

pub const MIB: u64 = 1 << 20;

pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(require_tool(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn run_with_input(program: &str, args: &[&str], input: &[u8]) {
    use std::io::Write as _;
    let mut child = Command::new(require_tool(program))
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    assert!(child.wait().unwrap().success(), "{program} {args:?} failed");
}

pub fn sparse_file(path: &Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

/// Runs `setup` on a loop device covering `len` bytes at `offset` of `image`.
pub fn on_range(image: &Path, offset: u64, len: u64, setup: impl FnOnce(&str)) {
    let device = LoopDevice::attach(
        image,
        &LoopOptions {
            offset: Some(offset),
            size_limit: Some(len),
            ..Default::default()
        },
    );
    setup(device.path().to_str().unwrap());
}

/// The signatures `wipefs` lists (`TYPE OFFSET`), without wiping anything.
pub fn wipefs(image: &Path) -> Vec<String> {
    let out = run(
        "wipefs",
        &[
            "--no-act",
            "--noheadings",
            "--output",
            "TYPE,OFFSET",
            image.to_str().unwrap(),
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// What `blkid` finds in `len` bytes at `offset`; `None` when nothing (exit status 2).
pub fn blkid_at(image: &Path, offset: u64, len: u64) -> Option<String> {
    let out = Command::new(require_tool("blkid"))
        .args(["-p", "-O", &offset.to_string(), "-S", &len.to_string()])
        .arg(image)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(2) => None,
        other => panic!(
            "blkid exited with {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Deterministic pseudo-random bytes (no two 8-byte words alike for a long while).
pub fn noise(bytes: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    let mut state = seed | 1;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// The layout of [`deploy_image`]: a 48 MiB GPT disk.
pub const IMAGE_BYTES: u64 = 48 * MIB;
/// Where the GPT's primary copy ends (protective MBR, header, 128 entries): the bytes the
/// backup fix-up and a new partition rewrite.
pub const GPT_PRIMARY_BYTES: u64 = 34 * 512;
/// The backup entries and header at the end of the image, which the fix-up leaves stale.
pub const GPT_BACKUP_BYTES: u64 = 33 * 512;

/// A small bootable-looking disk made by the real tools: GPT (sgdisk) with a FAT partition
/// holding a file of noise (mkfs.fat, mcopy) and an ext4 one holding another (mkfs.ext4 -d),
/// zeroes everywhere else. Returns the raw image; nothing here needs root.
pub fn deploy_image(dir: &Path) -> PathBuf {
    let image = dir.join("image.raw");
    sparse_file(&image, IMAGE_BYTES);
    let path = image.to_str().unwrap();
    run("sgdisk", &["-n1:2048:+16M", "-t1:ef00", "-n2:0:0", path]);
    run("mkfs.fat", &["-F", "16", "--offset=2048", path, "16384"]);
    let noise_file = dir.join("noise.bin");
    std::fs::write(&noise_file, noise(3 * MIB as usize, 7)).unwrap();
    run(
        "mcopy",
        &[
            "-i",
            &format!("{path}@@{}", MIB),
            noise_file.to_str().unwrap(),
            "::/noise.bin",
        ],
    );
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "deployed-by-rivet\n").unwrap();
    std::fs::write(root.join("data.bin"), noise(2 * MIB as usize, 11)).unwrap();
    let ext4_start = 17 * MIB;
    let ext4_kib = (IMAGE_BYTES - ext4_start - GPT_BACKUP_BYTES) / 1024;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            root.to_str().unwrap(),
            "-E",
            &format!("offset={ext4_start}"),
            path,
            &format!("{ext4_kib}k"),
        ],
    );
    image
}

/// Converts `image` with `qemu-img convert` to `format` (the peer's own encoder).
pub fn qemu_img_convert(image: &Path, format: &str, output: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            format,
            image.to_str().unwrap(),
            output.to_str().unwrap(),
        ],
    );
}

/// Asserts that `disk` holds `raw_image` at its start — every byte but the GPT's primary
/// copy (rewritten to point at the moved backup and list the config drive) and the stale
/// backup at the image's end — and that sgdisk finds the tables consistent, with the
/// image's partitions unchanged.
pub fn assert_deployed(raw_image: &Path, disk: &Path) {
    let image_len = std::fs::metadata(raw_image).unwrap().len();
    let middle = image_len - GPT_PRIMARY_BYTES - GPT_BACKUP_BYTES;
    let out = Command::new(require_tool("cmp"))
        .arg(format!("--ignore-initial={GPT_PRIMARY_BYTES}"))
        .arg(format!("--bytes={middle}"))
        .arg(raw_image)
        .arg(disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the disk differs from the image: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verify = run("sgdisk", &["-v", disk.to_str().unwrap()]).stdout;
    let verify = String::from_utf8_lossy(&verify);
    assert!(verify.contains("No problems found"), "{verify}");
    for number in ["1", "2"] {
        let info = |path: &Path| {
            String::from_utf8_lossy(&run("sgdisk", &["-i", number, path.to_str().unwrap()]).stdout)
                .into_owned()
        };
        assert_eq!(info(raw_image), info(disk), "partition {number}");
    }
}

/// The files of the `config-2` ISO 9660 partition at `offset`, extracted with xorriso.
pub fn config_drive_files(disk: &Path, offset: u64, size: u64, scratch: &Path) -> PathBuf {
    let mut bytes = vec![0u8; size as usize];
    use std::os::unix::fs::FileExt as _;
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut bytes, offset)
        .unwrap();
    let iso = scratch.join("config-2.iso");
    std::fs::write(&iso, bytes).unwrap();
    let found = blkid_at(&iso, 0, size).expect("a file system in the config-2 partition");
    assert!(found.contains("LABEL=\"config-2\""), "{found}");
    let out = scratch.join("config-2");
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
    out
}

/// Asserts that nothing on `disk` identifies a partition table or file system any more.
pub fn assert_unbootable(disk: &Path) {
    let size = std::fs::metadata(disk).unwrap().len();
    assert_eq!(blkid_at(disk, 0, size), None, "blkid still finds something");
    assert_eq!(wipefs(disk), Vec::<String>::new());
    let sgdisk = Command::new(require_tool("sgdisk"))
        .arg("-p")
        .arg(disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sgdisk.stdout);
    assert!(
        text.contains("Creating new GPT entries"),
        "sgdisk found a table:\n{text}"
    );
}
