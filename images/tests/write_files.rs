//! `write_image` from local files, differential against `qemu-img convert -O raw`, for every
//! qcow2 variant qemu-img and qemu-io write, plain and wrapped in gzip and zstd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use rivet_images::{
    Checksum, Container, DiskFormat, ImageSource, StreamingMode, WriteOptions, write_image,
};
use rivet_tests::{require_tool, scratch_dir};
use sha2::{Digest, Sha256};

use common::{corpus, reference_raw, run};

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn compress(path: &Path, tool: &str) -> std::path::PathBuf {
    let (program, args, ext): (&str, &[&str], &str) = match tool {
        "gzip" => ("pigz", &["-k", "-f", "-6"], "gz"),
        _ => ("zstd", &["-q", "-k", "-f", "-3"], "zst"),
    };
    run(Command::new(require_tool(program)).args(args).arg(path));
    let mut out = path.as_os_str().to_owned();
    out.push(format!(".{ext}"));
    out.into()
}

async fn write(
    source: &Path,
    target: &Path,
    checksum: Option<String>,
) -> rivet_images::WriteReport {
    let options = WriteOptions {
        checksum: checksum.map(|hex| Checksum::parse(&hex, None).unwrap()),
        ..WriteOptions::default()
    };
    write_image(&ImageSource::File(source.to_path_buf()), target, &options)
        .await
        .unwrap_or_else(|err| panic!("{}: {err:?}", source.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_from_files_matches_qemu_img() {
    let dir = scratch_dir("write-files");
    let target = dir.path().join("target.raw");
    for image in corpus(dir.path()) {
        let reference = reference_raw(&image.path, dir.path());
        let report = write(&image.path, &target, Some(sha256_hex(&image.path))).await;
        assert_eq!(report.format, DiskFormat::Qcow2, "{}", image.name);
        assert_eq!(report.mode, StreamingMode::MetadataFirst, "{}", image.name);
        assert!(report.digest.is_some());
        assert!(
            std::fs::read(&target).unwrap() == reference,
            "{}: output differs from qemu-img",
            image.name
        );
        assert_eq!(report.virtual_size, reference.len() as u64);

        // The same image wrapped in gzip and zstd streams forward-only.
        for tool in ["gzip", "zstd"] {
            let wrapped = compress(&image.path, tool);
            let report = write(&wrapped, &target, Some(sha256_hex(&wrapped))).await;
            assert_eq!(
                report.mode,
                StreamingMode::ForwardOnly,
                "{} {tool}",
                image.name
            );
            assert_ne!(report.compression, Container::None);
            assert!(
                std::fs::read(&target).unwrap() == reference,
                "{} in {tool}: output differs from qemu-img",
                image.name
            );
            std::fs::remove_file(wrapped).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_images_plain_and_compressed() {
    let dir = scratch_dir("write-raw");
    let raw = dir.path().join("disk.raw");
    common::mixed_raw(&raw, 9, 5);
    // not a multiple of anything
    let mut data = std::fs::read(&raw).unwrap();
    data.extend_from_slice(b"tail bytes");
    std::fs::write(&raw, &data).unwrap();
    let target = dir.path().join("out.raw");
    for source in [raw.clone(), compress(&raw, "gzip"), compress(&raw, "zstd")] {
        let report = write(&source, &target, Some(sha256_hex(&source))).await;
        assert_eq!(report.format, DiskFormat::Raw);
        assert_eq!(report.virtual_size, data.len() as u64);
        assert!(
            std::fs::read(&target).unwrap() == data,
            "{}",
            source.display()
        );
        assert!(report.bytes_skipped > 0, "zero blocks become holes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_io_to_a_regular_file() {
    let dir = scratch_dir("write-direct");
    let target = dir.path().join("target.raw");
    for image in common::corpus_of(dir.path(), &["cluster-512", "odd-size", "zlib"]) {
        let reference = reference_raw(&image.path, dir.path());
        let options = WriteOptions {
            direct_io: true,
            ..WriteOptions::default()
        };
        write_image(&ImageSource::File(image.path.clone()), &target, &options)
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", image.name));
        let written = std::fs::read(&target).unwrap();
        assert_eq!(written.len(), reference.len(), "{}", image.name);
        assert!(
            written == reference,
            "{}: differs from qemu-img",
            image.name
        );
    }
}
