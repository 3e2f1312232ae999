#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Cleaning against disks seeded by the real tools (sgdisk, sfdisk, mkfs.*, pvcreate,
//! cryptsetup, xorriso) and checked by the real tools (wipefs, blkid). Block devices are loop
//! devices; the md RAID cases need a kernel with md and run in the VM tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{blkid_at, on_range, run, run_with_input, sparse_file, wipefs};

use rivet_agent::clean::{self, CleanMode, CleanOptions, CleanTarget, Outcome};
use rivet_agent::disk::{Access, Disk};
use rivet_tests::block::{LoopDevice, LoopOptions};
use rivet_tests::{require_tool, scratch_dir};

const MIB: u64 = common::MIB;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rivet-agent"))
        .args(args)
        .output()
        .unwrap()
}

fn report_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A GPT disk with ext4, xfs, LVM, btrfs, swap and vfat partitions.
fn seed_gpt_disk(image: &Path) -> Vec<(u64, u64)> {
    sparse_file(image, 560 * MIB);
    let img = image.to_str().unwrap();
    run(
        "sgdisk",
        &[
            "-n1:0:+20M",
            "-n2:0:+300M",
            "-n3:0:+20M",
            "-n4:0:+128M",
            "-n5:0:+8M",
            "-n6:0:+40M",
            img,
        ],
    );
    let layout = [
        (MIB, 20 * MIB),
        (21 * MIB, 300 * MIB),
        (321 * MIB, 20 * MIB),
        (341 * MIB, 128 * MIB),
        (469 * MIB, 8 * MIB),
        (477 * MIB, 40 * MIB),
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
    on_range(image, layout[3].0, layout[3].1, |dev| {
        run("mkfs.btrfs", &["-q", "-f", dev]);
    });
    on_range(image, layout[4].0, layout[4].1, |dev| {
        run("mkswap", &[dev]);
    });
    on_range(image, layout[5].0, layout[5].1, |dev| {
        run("mkfs.vfat", &["-F", "32", dev]);
    });
    layout.to_vec()
}

/// An MBR disk: a primary vfat partition and an extended one with LUKS2 and ext4 logicals.
fn seed_mbr_disk(image: &Path) -> Vec<(u64, u64)> {
    sparse_file(image, 96 * MIB);
    let script = "label: dos\nstart=2048, size=32M, type=c\nstart=67584, type=5\n\
                  start=69632, size=24M, type=83\nstart=120832, type=83\n";
    run_with_input(
        "sfdisk",
        &["-q", image.to_str().unwrap()],
        script.as_bytes(),
    );
    let out = run("sfdisk", &["-d", image.to_str().unwrap()]);
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    // start and size of every partition but the extended container, in bytes
    let layout: Vec<(u64, u64)> = dump
        .lines()
        .filter(|l| l.contains("start=") && !l.contains("type=5"))
        .map(|l| {
            let field = |name: &str| -> u64 {
                let at = l.find(name).unwrap() + name.len();
                l[at..]
                    .trim_start()
                    .split(',')
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            (field("start=") * 512, field("size=") * 512)
        })
        .collect();
    assert_eq!(layout.len(), 3, "{dump}");
    on_range(image, layout[0].0, layout[0].1, |dev| {
        run("mkfs.vfat", &["-F", "16", dev]);
    });
    on_range(image, layout[1].0, layout[1].1, |dev| {
        run_with_input(
            "cryptsetup",
            &[
                "luksFormat",
                "-q",
                "--type",
                "luks2",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                dev,
                "-",
            ],
            b"secret",
        );
    });
    on_range(image, layout[2].0, layout[2].1, |dev| {
        run("mkfs.ext4", &["-q", dev]);
    });
    layout
}

#[test]
fn metadata_clean_leaves_nothing_wipefs_or_blkid_recognise() {
    let dir = scratch_dir("clean-metadata");
    let gpt = dir.path().join("gpt.img");
    let mbr = dir.path().join("mbr.img");
    let iso = dir.path().join("iso.img");
    let gpt_parts = seed_gpt_disk(&gpt);
    let mbr_parts = seed_mbr_disk(&mbr);
    std::fs::write(dir.path().join("hello"), b"hello").unwrap();
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-J",
            "-V",
            "SEEDED",
            "-o",
            iso.to_str().unwrap(),
            dir.path().join("hello").to_str().unwrap(),
        ],
    );
    // The seeds are what we think they are.
    let before = wipefs(&gpt);
    assert!(before.iter().any(|l| l.starts_with("gpt")), "{before:?}");
    let expectations = [
        "TYPE=\"ext4\"",
        "TYPE=\"xfs\"",
        "TYPE=\"LVM2_member\"",
        "TYPE=\"btrfs\"",
        "TYPE=\"swap\"",
        "TYPE=\"vfat\"",
    ];
    for ((offset, len), kind) in gpt_parts.iter().zip(expectations) {
        let found = blkid_at(&gpt, *offset, *len).unwrap_or_default();
        assert!(found.contains(kind), "expected {kind} at {offset}: {found}");
    }
    for ((offset, len), kind) in mbr_parts.iter().zip(["vfat", "crypto_LUKS", "ext4"]) {
        let found = blkid_at(&mbr, *offset, *len).unwrap_or_default();
        assert!(found.contains(kind), "expected {kind} at {offset}: {found}");
    }
    assert!(wipefs(&iso).iter().any(|l| l.starts_with("iso9660")));

    let out = agent(&[
        "clean",
        "--mode",
        "metadata",
        "--json",
        "--disk",
        gpt.to_str().unwrap(),
        "--disk",
        mbr.to_str().unwrap(),
        "--disk",
        iso.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report_of(&out);
    assert_eq!(report["mode"], "metadata");
    for disk in report["disks"].as_array().unwrap() {
        assert_eq!(disk["result"], "succeeded", "{disk}");
        assert_eq!(disk["method"], "metadata");
        assert!(disk["durationMs"].is_u64());
    }
    let gpt_wiped: Vec<&str> = report["disks"][0]["wiped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "ext4",
        "xfs",
        "LVM2_member",
        "btrfs",
        "swap",
        "vfat",
        "gpt",
        "PMBR",
    ] {
        assert!(gpt_wiped.contains(&kind), "{kind} not in {gpt_wiped:?}");
    }

    for image in [&gpt, &mbr, &iso] {
        assert_eq!(wipefs(image), Vec::<String>::new(), "{}", image.display());
        let size = std::fs::metadata(image).unwrap().len();
        assert_eq!(blkid_at(image, 0, size), None);
    }
    for (offset, len) in gpt_parts {
        assert_eq!(
            blkid_at(&gpt, offset, len),
            None,
            "GPT partition at {offset}"
        );
    }
    for (offset, len) in mbr_parts {
        assert_eq!(
            blkid_at(&mbr, offset, len),
            None,
            "MBR partition at {offset}"
        );
    }
    // sfdisk and sgdisk find no table either.
    let listing = Command::new(require_tool("sfdisk"))
        .arg("-d")
        .arg(&mbr)
        .output()
        .unwrap();
    assert!(!listing.status.success(), "sfdisk still sees a table");
    let gpt_listing = run("sgdisk", &["-p", gpt.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&gpt_listing.stdout);
    assert!(
        text.contains("Creating new GPT entries") || !text.contains("Number"),
        "{text}"
    );
}

#[test]
fn metadata_clean_handles_4k_sector_disks() {
    let dir = scratch_dir("clean-4k");
    let image = dir.path().join("4k.img");
    sparse_file(&image, 64 * MIB);
    let four_k = LoopOptions {
        sector_size: Some(4096),
        ..Default::default()
    };
    {
        let device = LoopDevice::attach(&image, &four_k);
        run(
            "sgdisk",
            &["-n1:0:+16M", "-n2:0:0", device.path().to_str().unwrap()],
        );
        // The GPT lives at byte 4096 and its backup in the last 4 KiB sector.
        let before = wipefs(device.path());
        assert!(before.contains(&"gpt 0x1000".to_owned()), "{before:?}");
    }
    let disk = Disk::open(&image, Access::ReadWrite)
        .unwrap()
        .with_sector_size(4096);
    let wiped = clean::wipe_metadata(&disk, false).unwrap();
    assert!(
        wiped
            .iter()
            .any(|s| s.kind == "gpt" && s.offset == 64 * MIB - 4096),
        "{wiped:?}"
    );
    let device = LoopDevice::attach(&image, &four_k);
    assert_eq!(wipefs(device.path()), Vec::<String>::new());
}

#[test]
fn the_guard_refuses_shared_cluster_storage_unless_forced() {
    let dir = scratch_dir("clean-guard");
    for (name, type_code) in [
        ("gpfs", "37AFFC90-EF7D-4E96-91C3-2D7AE055B174"),
        ("vmfs", "AA31E02A-400F-11DB-9590-000C2911D1B8"),
    ] {
        let image = dir.path().join(format!("{name}.img"));
        sparse_file(&image, 32 * MIB);
        run(
            "sgdisk",
            &[
                "-n1:0:0",
                &format!("-t1:{type_code}"),
                image.to_str().unwrap(),
            ],
        );
        let refused = agent(&["clean", "--json", "--disk", image.to_str().unwrap()]);
        assert!(!refused.status.success());
        let report = report_of(&refused);
        let error = report["disks"][0]["error"].as_str().unwrap();
        assert_eq!(report["disks"][0]["result"], "failed");
        assert!(
            error.contains("refusing to clean") && error.contains("partition 1"),
            "{error}"
        );
        assert!(
            !wipefs(&image).is_empty(),
            "nothing may be wiped when refusing"
        );
        let forced = agent(&[
            "clean",
            "--force",
            "--json",
            "--disk",
            image.to_str().unwrap(),
        ]);
        assert!(forced.status.success());
        assert_eq!(wipefs(&image), Vec::<String>::new());
    }
}

fn random_file(path: &Path, bytes: usize) {
    std::fs::write(path, common::noise(bytes, 0x2545_f491_4f6c_dd1d)).unwrap();
}

fn all_zero(path: &Path) -> bool {
    std::fs::read(path).unwrap().iter().all(|b| *b == 0)
}

#[test]
fn erase_zeroes_block_devices_and_files_and_refuses_read_only_disks() {
    let dir = scratch_dir("clean-erase");
    let on_device = dir.path().join("device.img");
    let as_file = dir.path().join("file.img");
    let read_only = dir.path().join("ro.img");
    for path in [&on_device, &as_file, &read_only] {
        random_file(path, (16 * MIB) as usize);
    }
    let device = LoopDevice::attach(&on_device, &LoopOptions::default());
    let ro_device = LoopDevice::attach(
        &read_only,
        &LoopOptions {
            read_only: true,
            ..Default::default()
        },
    );
    let out = agent(&[
        "clean",
        "--mode",
        "erase",
        "--json",
        "--disk",
        device.path().to_str().unwrap(),
        "--disk",
        as_file.to_str().unwrap(),
        "--disk",
        ro_device.path().to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a refused read-only disk is a failure"
    );
    let report = report_of(&out);
    let disks = report["disks"].as_array().unwrap();
    assert_eq!(disks[0]["result"], "succeeded", "{}", disks[0]);
    // Loop devices have no secure discard; they zero through write-zeroes or discard.
    let method = disks[0]["method"].as_str().unwrap();
    assert!(["zero-out", "discard"].contains(&method), "{method}");
    assert!(
        disks[0]["notes"].to_string().contains("secure-discard"),
        "{}",
        disks[0]
    );
    assert_eq!(disks[1]["result"], "succeeded");
    assert_eq!(disks[1]["method"], "zero-out");
    assert_eq!(disks[2]["result"], "failed");
    assert!(
        disks[2]["error"].as_str().unwrap().contains("read-only"),
        "{}",
        disks[2]
    );
    drop(device);
    assert!(all_zero(&on_device));
    assert!(all_zero(&as_file));
    assert!(!all_zero(&read_only));

    let skipped = agent(&[
        "clean",
        "--mode",
        "erase",
        "--json",
        "--skip-read-only",
        "--disk",
        ro_device.path().to_str().unwrap(),
    ]);
    assert!(skipped.status.success());
    assert_eq!(report_of(&skipped)["disks"][0]["result"], "skipped");
}

#[test]
fn a_disk_in_use_is_refused_untouched() {
    let dir = scratch_dir("clean-busy");
    let image = dir.path().join("busy.img");
    sparse_file(&image, 32 * MIB);
    run("sgdisk", &["-n1:0:0", image.to_str().unwrap()]);
    let device = LoopDevice::attach(&image, &LoopOptions::default());
    // Whoever mounted or assembled the disk holds it exclusively, as this open does.
    let _holder = Disk::open(device.path(), Access::ReadOnly).unwrap();
    let out = agent(&["clean", "--json", "--disk", device.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let error = report_of(&out)["disks"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("in use"), "{error}");
    assert!(!wipefs(&image).is_empty());
}

#[test]
fn the_library_reports_every_disk_in_order_and_skips_virtual_media() {
    let dir = scratch_dir("clean-order");
    let paths: Vec<PathBuf> = (0..5)
        .map(|i| dir.path().join(format!("d{i}.img")))
        .collect();
    for path in &paths {
        sparse_file(path, 4 * MIB);
        run("sgdisk", &["-n1:0:0", path.to_str().unwrap()]);
    }
    let mut targets: Vec<CleanTarget> = paths.iter().map(CleanTarget::from_path).collect();
    targets[2].virtual_media = true;
    let report = clean::clean(
        &targets,
        CleanOptions {
            mode: CleanMode::Metadata,
            parallel: 3,
            ..Default::default()
        },
        &|_, _, _| {},
    );
    let order: Vec<String> = report.disks.iter().map(|d| d.disk.clone()).collect();
    let expected: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(order, expected);
    assert_eq!(report.disks[2].result, Outcome::Skipped);
    assert!(report.succeeded());
    assert!(!wipefs(&paths[2]).is_empty(), "virtual media untouched");
    assert_eq!(wipefs(&paths[0]), Vec::<String>::new());
}
