//! Images that must be refused, each with its own error: made by qemu-img where the tool can
//! make them (backing files, external data files, encryption, foreign formats), otherwise
//! crafted by patching a real image's header or tables. Every case runs tables-first (from a
//! file) and forward-only (inside gzip); a refusal found before the first write leaves the
//! target untouched, one found mid-stream leaves it wiped — and nothing is ever written past
//! the end of the image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rivet_images::qcow2::{Header, Qcow2Error, Structure};
use rivet_images::{
    Container, DeclaredFormat, DiskFormat, ImageError, ImageSource, Refusal, WriteOptions, inspect,
    write_image,
};
use rivet_tests::{require_tool, scratch_dir};

use common::{qemu_img, qemu_io, run};

const PRECIOUS: &[u8] = b"the target's previous content, which a refusal must not touch";

/// A small real image: 4 MiB virtual, 64 KiB clusters, header at 0, refcount table at
/// 0x10000, refcount block at 0x20000, L1 at 0x30000, L2 at 0x40000, data from 0x50000.
fn base(dir: &Path) -> PathBuf {
    let path = dir.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path.to_str().unwrap(), "4M"]);
    qemu_io(
        &path,
        &[
            "write -q -P 17 0 128k".into(),
            "write -q -P 34 1M 64k".into(),
        ],
    );
    path
}

struct Layout {
    bytes: Vec<u8>,
    l1: usize,
    l2: usize,
}

fn layout(path: &Path) -> Layout {
    let bytes = std::fs::read(path).unwrap();
    let header = Header::parse(&bytes).unwrap();
    let l1 = header.l1_table_offset as usize;
    let l2 = (be64(&bytes, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    Layout { bytes, l1, l2 }
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Writes a patched copy of the base image.
fn patched(dir: &Path, name: &str, patch: impl FnOnce(&mut Layout)) -> PathBuf {
    let mut layout = layout(&base(dir));
    patch(&mut layout);
    let path = dir.join(format!("{name}.qcow2"));
    std::fs::write(&path, &layout.bytes).unwrap();
    path
}

fn tool_made(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut full: Vec<&str> = args.to_vec();
    full.push(path.to_str().unwrap());
    if args[0] == "create" {
        full.push("4M");
    }
    qemu_img(&full);
    path
}

fn converted(dir: &Path, format: &str) -> PathBuf {
    let path = dir.join(format!("image.{format}"));
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        format,
        base(dir).to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    path
}

type Check = fn(&ImageError) -> bool;

fn qcow2_refusal(err: &ImageError) -> Option<&Qcow2Error> {
    match err.root() {
        ImageError::Refused(Refusal::Qcow2(err)) => Some(err),
        _ => None,
    }
}

struct Case {
    name: &'static str,
    image: PathBuf,
    check: Check,
    /// Detected from the header alone, so refused before the target is touched even when
    /// streaming forward-only.
    header_level: bool,
}

fn cases(dir: &Path) -> Vec<Case> {
    let passwd = dir.join("passwd-copy");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let case = |name, image, check: Check, header_level| Case {
        name,
        image,
        check,
        header_level,
    };
    vec![
        case(
            "backing file",
            tool_made(
                dir,
                "backing.qcow2",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    passwd.to_str().unwrap(),
                ],
            ),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::BackingFile { name: Some(name) }) if name.ends_with("passwd-copy")),
            true,
        ),
        case(
            "external data file",
            tool_made(
                dir,
                "datafile.qcow2",
                &[
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-o",
                    &format!("data_file={}", dir.join("data.raw").display()),
                ],
            ),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::ExternalDataFile { name: Some(_) })
                )
            },
            true,
        ),
        case(
            "LUKS encryption",
            tool_made(
                dir,
                "luks.qcow2",
                &[
                    "create",
                    "-q",
                    "--object",
                    "secret,id=s0,data=pw",
                    "-f",
                    "qcow2",
                    "-o",
                    "encrypt.format=luks,encrypt.key-secret=s0",
                ],
            ),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::Encrypted { method: 2 })),
            true,
        ),
        case(
            "legacy AES encryption",
            patched(dir, "aes", |l| put32(&mut l.bytes, 32, 1)),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::Encrypted { method: 1 })),
            true,
        ),
        case(
            "unknown incompatible feature",
            patched(dir, "incompat", |l| put64(&mut l.bytes, 72, 1 << 33)),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::UnknownIncompatibleFeatures { bits }) if *bits == 1 << 33),
            true,
        ),
        case(
            "corrupt bit",
            patched(dir, "corrupt", |l| put64(&mut l.bytes, 72, 2)),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::MarkedCorrupt)),
            true,
        ),
        case(
            "version 1",
            patched(dir, "v1", |l| put32(&mut l.bytes, 4, 1)),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::UnsupportedVersion(1))),
            true,
        ),
        case(
            "huge clusters",
            patched(dir, "cluster-bits", |l| put32(&mut l.bytes, 20, 30)),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::InvalidClusterBits(30))),
            true,
        ),
        case(
            "L1 too small for the virtual size",
            patched(dir, "l1-small", |l| put64(&mut l.bytes, 24, 1 << 40)),
            |e| matches!(qcow2_refusal(e), Some(Qcow2Error::L1TooSmall { .. })),
            true,
        ),
        case(
            "L1 table outside the file",
            patched(dir, "l1-outside", |l| put64(&mut l.bytes, 40, 0x7000_0000)),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::OutsideFile {
                        what: Structure::L1Table,
                        ..
                    })
                ) || is_truncated(e, Structure::L1Table)
            },
            false,
        ),
        case(
            "L2 table outside the file",
            patched(dir, "l2-outside", |l| {
                let at = l.l1;
                put64(&mut l.bytes, at, (1 << 63) | 0x7000_0000);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::OutsideFile {
                        what: Structure::L2Table,
                        ..
                    })
                ) || is_truncated(e, Structure::L2Table)
            },
            false,
        ),
        case(
            "misaligned L2 table",
            patched(dir, "l2-misaligned", |l| {
                let at = l.l1;
                put64(&mut l.bytes, at, (1 << 63) | 0x40200);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::Misaligned {
                        what: Structure::L2Table,
                        ..
                    })
                )
            },
            false,
        ),
        case(
            "data cluster outside the file",
            patched(dir, "data-outside", |l| {
                let at = l.l2;
                put64(&mut l.bytes, at, (1 << 63) | 0x7000_0000);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::OutsideFile {
                        what: Structure::Data,
                        ..
                    })
                ) || is_truncated(e, Structure::Data)
            },
            false,
        ),
        case(
            "data cluster on the L1 table",
            patched(dir, "data-on-l1", |l| {
                let (at, l1) = (l.l2, l.l1 as u64);
                put64(&mut l.bytes, at, (1 << 63) | l1);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(
                        Qcow2Error::Overlap {
                            first: Structure::L1Table,
                            ..
                        } | Qcow2Error::AlreadyConsumed { .. }
                    )
                )
            },
            false,
        ),
        case(
            "data cluster on the refcount table",
            patched(dir, "data-on-refcounts", |l| {
                let at = l.l2 + 8;
                put64(&mut l.bytes, at, (1 << 63) | 0x10000);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(
                        Qcow2Error::Overlap {
                            first: Structure::RefcountTable,
                            ..
                        } | Qcow2Error::AlreadyConsumed { .. }
                    )
                )
            },
            false,
        ),
        case(
            "two guest clusters on one host cluster",
            patched(dir, "duplicate", |l| {
                let first = be64(&l.bytes, l.l2);
                let at = l.l2 + 8 * 10;
                put64(&mut l.bytes, at, first);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(
                        Qcow2Error::DuplicateHostCluster { .. }
                            | Qcow2Error::AlreadyConsumed { .. }
                    )
                )
            },
            false,
        ),
        case(
            "reserved bits in an L2 entry",
            patched(dir, "reserved", |l| {
                let at = l.l2;
                let entry = be64(&l.bytes, at);
                put64(&mut l.bytes, at, entry | (1 << 58));
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::ReservedBits {
                        what: Structure::Data,
                        ..
                    })
                )
            },
            false,
        ),
        case(
            "compressed cluster running far past the end of the file",
            patched(dir, "compressed-length", |l| {
                let at = l.l2;
                let end = l.bytes.len() as u64;
                // 64 KiB clusters: offset in bits 0..53, 255 extra sectors in bits 54..61.
                put64(&mut l.bytes, at, (1 << 62) | (255 << 54) | (end - 100));
            }),
            // Forward-only, without the file's length, its range is first seen to run into
            // the data cluster before it.
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(
                        Qcow2Error::CompressedLength { .. }
                            | Qcow2Error::Overlap {
                                first: Structure::CompressedData,
                                ..
                            }
                    )
                ) || is_truncated(e, Structure::CompressedData)
            },
            false,
        ),
        case(
            "external data file extension without the feature bit",
            patched(dir, "datafile-ext", |l| {
                // after the header (112 bytes for qemu's v3): type, length, name, then the end
                let header_len = u32::from_be_bytes(l.bytes[100..104].try_into().unwrap()) as usize;
                let mut extensions = Vec::new();
                extensions.extend_from_slice(&0x4441_5441u32.to_be_bytes());
                extensions.extend_from_slice(&8u32.to_be_bytes());
                extensions.extend_from_slice(b"/dev/sda");
                extensions.extend_from_slice(&[0; 8]);
                l.bytes[header_len..header_len + extensions.len()].copy_from_slice(&extensions);
            }),
            |e| {
                matches!(
                    qcow2_refusal(e),
                    Some(Qcow2Error::ExternalDataFile { name: Some(name) }) if name == "/dev/sda"
                )
            },
            true,
        ),
        case(
            "VMDK",
            converted(dir, "vmdk"),
            |e| {
                matches!(
                    e.root(),
                    ImageError::Refused(Refusal::UnsupportedFormat {
                        format: DiskFormat::Vmdk,
                        ..
                    })
                )
            },
            true,
        ),
        case(
            "VDI",
            converted(dir, "vdi"),
            |e| {
                matches!(
                    e.root(),
                    ImageError::Refused(Refusal::UnsupportedFormat {
                        format: DiskFormat::Vdi,
                        ..
                    })
                )
            },
            true,
        ),
        case(
            "VHDX",
            converted(dir, "vhdx"),
            |e| {
                matches!(
                    e.root(),
                    ImageError::Refused(Refusal::UnsupportedFormat {
                        format: DiskFormat::Vhdx,
                        ..
                    })
                )
            },
            true,
        ),
        case(
            "QED",
            converted(dir, "qed"),
            |e| {
                matches!(
                    e.root(),
                    ImageError::Refused(Refusal::UnsupportedFormat {
                        format: DiskFormat::Qed,
                        ..
                    })
                )
            },
            true,
        ),
        case(
            "ISO 9660",
            iso(dir),
            |e| {
                matches!(
                    e.root(),
                    ImageError::Refused(Refusal::UnsupportedFormat {
                        format: DiskFormat::Iso,
                        ..
                    })
                )
            },
            true,
        ),
        case(
            "empty file",
            {
                let path = dir.join("empty.img");
                std::fs::write(&path, b"").unwrap();
                path
            },
            |e| matches!(e.root(), ImageError::Refused(Refusal::Empty)),
            true,
        ),
    ]
}

fn is_truncated(err: &ImageError, what: Structure) -> bool {
    // Forward-only, an offset beyond the end is only known when the stream ends.
    matches!(
        err.root(),
        ImageError::Corrupt(message) if message.contains("lies beyond") && message.contains(&what.to_string())
    )
}

fn iso(dir: &Path) -> PathBuf {
    let content = dir.join("iso-content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("README"), "an installer").unwrap();
    let path = dir.join("installer.iso");
    run(Command::new(require_tool("xorriso"))
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&path)
        .arg(&content));
    path
}

fn gzip(path: &Path) -> PathBuf {
    run(Command::new(require_tool("pigz"))
        .args(["-k", "-f"])
        .arg(path));
    PathBuf::from(format!("{}.gz", path.display()))
}

async fn attempt(image: &Path, target: &Path) -> ImageError {
    std::fs::write(target, PRECIOUS).unwrap();
    write_image(
        &ImageSource::File(image.to_path_buf()),
        target,
        &WriteOptions::default(),
    )
    .await
    .expect_err("the image must be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malicious_image_is_refused_with_its_own_error() {
    let dir = scratch_dir("malicious");
    let target = dir.path().join("target.raw");
    let all = cases(dir.path());
    for case in &all {
        // From a file: tables first, so every refusal comes before the first write.
        let err = attempt(&case.image, &target).await;
        assert!((case.check)(&err), "{}: wrong error {err:?}", case.name);
        assert!(err.is_refusal(), "{}: {err:?}", case.name);
        assert!(!err.target_modified(), "{}: {err:?}", case.name);
        assert_eq!(std::fs::read(&target).unwrap(), PRECIOUS, "{}", case.name);

        // inspect gives the same verdict without writing.
        let inspection = inspect(&ImageSource::File(case.image.clone()), &Default::default())
            .await
            .unwrap();
        assert!(!inspection.safe, "{}: inspect calls it safe", case.name);

        // Inside gzip: forward-only. Header-level refusals still come first; table-level
        // ones may come mid-stream, after which the target is wiped.
        let wrapped = gzip(&case.image);
        let err = attempt(&wrapped, &target).await;
        assert!(
            (case.check)(&err),
            "{} (gzip): wrong error {err:?}",
            case.name
        );
        let written = std::fs::read(&target).unwrap();
        if case.header_level {
            assert!(!err.target_modified(), "{} (gzip): {err:?}", case.name);
            assert_eq!(written, PRECIOUS, "{} (gzip)", case.name);
        } else if err.target_modified() {
            assert!(
                matches!(err, ImageError::Wiped { .. }),
                "{}: {err:?}",
                case.name
            );
            assert!(
                written.len() as u64 <= 4 << 20,
                "{}: written past the end",
                case.name
            );
            assert!(
                written[..written.len().min(1 << 20)]
                    .iter()
                    .all(|&b| b == 0)
            );
        }
        std::fs::remove_file(wrapped).unwrap();
    }
    assert!(all.len() >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_formats_must_match_the_content() {
    let dir = scratch_dir("mismatch");
    let target = dir.path().join("target.raw");
    let qcow2 = base(dir.path());
    let raw = dir.path().join("plain.raw");
    std::fs::write(&raw, vec![1u8; 1 << 20]).unwrap();
    for (image, declared, detected) in [
        (&qcow2, DeclaredFormat::Raw, DiskFormat::Qcow2),
        (&raw, DeclaredFormat::Qcow2, DiskFormat::Raw),
    ] {
        std::fs::write(&target, PRECIOUS).unwrap();
        let options = WriteOptions {
            format: declared,
            ..WriteOptions::default()
        };
        let err = write_image(&ImageSource::File(image.clone()), &target, &options)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ImageError::Refused(Refusal::FormatMismatch { declared: d, detected: f }) if d == declared && f == detected),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), PRECIOUS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_and_oversized_images_stop_at_the_limit() {
    let dir = scratch_dir("bombs");
    let target = dir.path().join("target.raw");
    // 64 MiB of zeros compress to ~64 KiB; the target only takes 16 MiB.
    let zeros = dir.path().join("zeros.raw");
    std::fs::write(&zeros, vec![0u8; 64 << 20]).unwrap();
    let bomb = gzip(&zeros);
    let limited = WriteOptions {
        size_limit: Some(16 << 20),
        ..WriteOptions::default()
    };
    let err = write_image(&ImageSource::File(bomb), &target, &limited)
        .await
        .unwrap_err();
    assert!(
        matches!(err.root(), ImageError::Refused(Refusal::TooLarge { available, .. }) if *available == 16 << 20),
        "{err:?}"
    );
    assert!(std::fs::metadata(&target).unwrap().len() <= 16 << 20);

    // A qcow2 whose virtual size exceeds the limit is refused before anything is written.
    std::fs::write(&target, PRECIOUS).unwrap();
    let big = dir.path().join("big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", big.to_str().unwrap(), "1G"]);
    for source in [big.clone(), gzip(&big)] {
        let err = write_image(&ImageSource::File(source), &target, &limited)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ImageError::Refused(Refusal::TooLarge { needed, .. }) if needed == 1 << 30),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), PRECIOUS);
    }

    // xz is recognised and refused.
    run(Command::new(require_tool("xz"))
        .args(["-k", "-f", "-0"])
        .arg(&big));
    let err = write_image(
        &ImageSource::File(dir.path().join("big.qcow2.xz")),
        &target,
        &WriteOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        ImageError::Refused(Refusal::UnsupportedCompression(Container::Xz))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_compressed_cluster_fails_and_wipes() {
    let dir = scratch_dir("damaged");
    let raw = dir.path().join("text.raw");
    std::fs::write(&raw, "compressible text ".repeat(200_000)).unwrap();
    let image = common::convert(dir.path(), &raw, "damaged", &["-c"]).path;
    let mut bytes = std::fs::read(&image).unwrap();
    let header = Header::parse(&bytes).unwrap();
    let l1 = header.l1_table_offset as usize;
    let l2 = (be64(&bytes, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    // Garble the first compressed cluster of the second MiB (outside the held-back head).
    let entry = be64(&bytes, l2 + 8 * 20);
    assert!(entry & (1 << 62) != 0, "qemu-img compressed the cluster");
    let offset = (entry & ((1 << 54) - 1)) as usize;
    bytes[offset..offset + 64].fill(0xff);
    std::fs::write(&image, &bytes).unwrap();
    let target = dir.path().join("target.raw");
    let err = write_image(&ImageSource::File(image), &target, &WriteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Wiped { .. }), "{err:?}");
    assert!(
        matches!(err.root(), ImageError::Corrupt(message) if message.contains("deflate")),
        "{err:?}"
    );
    let written = std::fs::read(&target).unwrap();
    assert!(written[..1 << 20].iter().all(|&b| b == 0));
}
