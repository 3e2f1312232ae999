//! `write_image` over HTTP(S): real servers with Range (BusyBox httpd) and without
//! (`python3 -m http.server`, `openssl s_server -WWW` for TLS), checksum files, and the faults
//! only a fault injector produces (cut connections, lying lengths, 503s, redirects).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use md5::Md5;
use rivet_images::{
    Checksum, ChecksumAlgorithm, ChecksumError, Container, DiskFormat, HttpOptions, ImageError,
    ImageSource, SourceError, StreamingMode, WriteOptions, WriteReport, write_image,
};
use rivet_tests::http::{Faults, FaultyServer, busybox_httpd, python_http_server};
use rivet_tests::{
    ChildGuard, free_tcp_port, require_tool, scratch_dir, tcp_port_open, wait_until,
};
use sha2::{Digest, Sha256, Sha512};

use common::{corpus, corpus_of, mixed_raw, reference_raw, run};

fn fast_http() -> HttpOptions {
    HttpOptions {
        retry_backoff: Duration::from_millis(10),
        ..HttpOptions::default()
    }
}

fn options(checksum: Option<Checksum>) -> WriteOptions {
    WriteOptions {
        checksum,
        http: fast_http(),
        ..WriteOptions::default()
    }
}

fn sha256_of(path: &Path) -> Checksum {
    let digest = hex::encode(Sha256::digest(std::fs::read(path).unwrap()));
    Checksum::parse(&digest, None).unwrap()
}

async fn write_url(
    url: &str,
    target: &Path,
    options: &WriteOptions,
) -> Result<WriteReport, ImageError> {
    write_image(&ImageSource::parse(url).unwrap(), target, options).await
}

fn gzip(path: &Path) -> PathBuf {
    run(Command::new(require_tool("pigz"))
        .args(["-k", "-f"])
        .arg(path));
    PathBuf::from(format!("{}.gz", path.display()))
}

/// The target's first MiB is all zeros: no partition table, no boot code.
fn assert_unbootable(target: &Path) {
    let bytes = std::fs::read(target).unwrap();
    let head = &bytes[..bytes.len().min(1 << 20)];
    assert!(
        head.iter().all(|&b| b == 0),
        "the target's first MiB is not wiped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_variants_over_http_with_and_without_range() {
    let dir = scratch_dir("http-corpus");
    let images = corpus(dir.path());
    let with_range = busybox_httpd(dir.path());
    let without_range = python_http_server(dir.path());
    let target = dir.path().join("target.raw");
    for image in &images {
        let name = image.path.file_name().unwrap().to_str().unwrap();
        let reference = reference_raw(&image.path, dir.path());
        for (server, mode) in [
            (&with_range, StreamingMode::MetadataFirst),
            (&without_range, StreamingMode::ForwardOnly),
        ] {
            let report = write_url(
                &server.url(name),
                &target,
                &options(Some(sha256_of(&image.path))),
            )
            .await
            .unwrap_or_else(|err| panic!("{} via {mode:?}: {err}", image.name));
            assert_eq!(report.mode, mode, "{}", image.name);
            assert!(
                std::fs::read(&target).unwrap() == reference,
                "{} via {mode:?}: output differs from qemu-img",
                image.name
            );
        }
    }
    // qcow2 inside gzip streams forward-only from either server.
    for image in images
        .iter()
        .filter(|image| ["zstd", "vm-written", "resized"].contains(&image.name))
    {
        let wrapped = gzip(&image.path);
        let name = wrapped.file_name().unwrap().to_str().unwrap().to_owned();
        let reference = reference_raw(&image.path, dir.path());
        for server in [&with_range, &without_range] {
            let report = write_url(
                &server.url(&name),
                &target,
                &options(Some(sha256_of(&wrapped))),
            )
            .await
            .unwrap();
            assert_eq!(report.compression, Container::Gzip);
            assert_eq!(report.mode, StreamingMode::ForwardOnly);
            assert!(std::fs::read(&target).unwrap() == reference, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resized_qcow2_needs_range_or_room_to_park() {
    let dir = scratch_dir("http-resized");
    let images = corpus_of(dir.path(), &["resized"]);
    let resized = images.iter().find(|image| image.name == "resized").unwrap();
    let without_range = python_http_server(dir.path());
    let target = dir.path().join("target.raw");
    let tight = WriteOptions {
        parking_limit: 256 << 10,
        ..options(None)
    };
    let err = write_url(&without_range.url("resized.qcow2"), &target, &tight)
        .await
        .unwrap_err();
    assert!(
        matches!(err.root(), ImageError::ParkingLimit { limit } if *limit == 256 << 10),
        "{err:?}"
    );
    assert!(err.target_modified());
    assert_unbootable(&target);
    // Served with Range, the same image needs no parking at all.
    let with_range = busybox_httpd(dir.path());
    let report = write_url(&with_range.url("resized.qcow2"), &target, &tight)
        .await
        .unwrap();
    assert_eq!(report.parked_peak, 0);
    assert!(std::fs::read(&target).unwrap() == reference_raw(&resized.path, dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_files_in_gnu_and_bsd_format() {
    let dir = scratch_dir("http-sums");
    let raw = dir.path().join("disk.img");
    mixed_raw(&raw, 3, 3);
    let data = std::fs::read(&raw).unwrap();
    let sha256 = hex::encode(Sha256::digest(&data));
    let sha512 = hex::encode(Sha512::digest(&data));
    let md5 = hex::encode(Md5::digest(&data));
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{}  other.img\n{sha256}  disk.img\n", "0".repeat(64)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("CHECKSUM"),
        format!("SHA512 (disk.img) = {sha512}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("disk.img.md5"), format!("{md5}\n")).unwrap();
    std::fs::write(
        dir.path().join("WRONG"),
        format!("{}  disk.img\n", "ab".repeat(32)),
    )
    .unwrap();
    let server = busybox_httpd(dir.path());
    let target = dir.path().join("target.raw");
    let image = server.url("disk.img");

    for (file, algorithm) in [
        ("SHA256SUMS", ChecksumAlgorithm::Sha256),
        ("CHECKSUM", ChecksumAlgorithm::Sha512),
        ("disk.img.md5", ChecksumAlgorithm::Md5),
    ] {
        let checksum = Checksum::parse(&server.url(file), None).unwrap();
        let report = write_url(&image, &target, &options(Some(checksum)))
            .await
            .unwrap();
        assert_eq!(report.digest.unwrap().algorithm, algorithm, "{file}");
        assert!(std::fs::read(&target).unwrap() == data);
    }

    // A file that does not list the image: refused before the target is touched.
    std::fs::write(&target, b"precious").unwrap();
    let missing = Checksum::parse(&server.url("SHA256SUMS"), None).unwrap();
    let err = write_url(&server.url("CHECKSUM"), &target, &options(Some(missing)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Checksum(ChecksumError::NotListed { ref file_name }) if file_name == "CHECKSUM"),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");

    // A wrong digest: everything was written, then wiped.
    let wrong = Checksum::parse(&server.url("WRONG"), None).unwrap();
    let err = write_url(&image, &target, &options(Some(wrong)))
        .await
        .unwrap_err();
    assert!(err.is_verification_failure(), "{err:?}");
    assert!(matches!(err, ImageError::Wiped { .. }));
    assert_unbootable(&target);
}

fn faulty_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let raw = dir.join("image.raw");
    mixed_raw(&raw, 6, 9);
    let data = std::fs::read(&raw).unwrap();
    (raw, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_with_range() {
    let dir = scratch_dir("http-resume");
    let (raw, data) = faulty_image(dir.path());
    let server = FaultyServer::start(
        &raw,
        Faults {
            ranges: true,
            etag: Some("\"v1\"".into()),
            cut_after: Some(1_500_000),
            cuts: 3,
            ..Faults::default()
        },
    );
    let target = dir.path().join("target.raw");
    let report = write_url(
        &server.url("image.raw"),
        &target,
        &options(Some(sha256_of(&raw))),
    )
    .await
    .unwrap();
    assert_eq!(report.bytes_read, data.len() as u64);
    assert!(std::fs::read(&target).unwrap() == data);
    let resumed: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|request| {
            request
                .range
                .as_deref()
                .is_some_and(|range| range.ends_with('-') && range != "bytes=0-")
        })
        .collect();
    assert!(resumed.len() >= 2, "{:?}", server.requests());
    assert!(
        resumed
            .iter()
            .all(|request| request.if_range.as_deref() == Some("\"v1\""))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_without_range_restarts_and_skips() {
    let dir = scratch_dir("http-restart");
    let (raw, data) = faulty_image(dir.path());
    let server = FaultyServer::start(
        &raw,
        Faults {
            cut_after: Some(2_000_000),
            cuts: 2,
            unavailable: 1,
            ..Faults::default()
        },
    );
    let target = dir.path().join("target.raw");
    let report = write_url(
        &server.url("r/image.raw"),
        &target,
        &options(Some(sha256_of(&raw))),
    )
    .await
    .unwrap();
    assert_eq!(report.mode, StreamingMode::Sequential);
    assert!(std::fs::read(&target).unwrap() == data);
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.path == "/r/image.raw")
    );
    assert!(
        requests.len() >= 4,
        "a 503, a redirect and two cut bodies: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lies_about_the_length_fails_and_the_target_is_wiped() {
    let dir = scratch_dir("http-lies");
    let (raw, _) = faulty_image(dir.path());
    let server = FaultyServer::start(
        &raw,
        Faults {
            ranges: true,
            extra_length: 4096,
            ..Faults::default()
        },
    );
    let target = dir.path().join("target.raw");
    let err = write_url(
        &server.url("image.raw"),
        &target,
        &options(Some(sha256_of(&raw))),
    )
    .await
    .unwrap_err();
    assert!(err.target_modified(), "{err:?}");
    assert!(
        matches!(
            err.root(),
            ImageError::Source(SourceError::Inconsistent { .. } | SourceError::Transfer { .. })
        ),
        "{err:?}"
    );
    assert_unbootable(&target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_times_out_and_resumes() {
    let dir = scratch_dir("http-stall");
    let (raw, data) = faulty_image(dir.path());
    let server = FaultyServer::start(
        &raw,
        Faults {
            ranges: true,
            cut_after: Some(1_000_000),
            cuts: 1,
            stall: Some(Duration::from_secs(20)),
            ..Faults::default()
        },
    );
    let target = dir.path().join("target.raw");
    let opts = WriteOptions {
        http: HttpOptions {
            read_timeout: Duration::from_millis(300),
            ..fast_http()
        },
        ..options(Some(sha256_of(&raw)))
    };
    write_url(&server.url("image.raw"), &target, &opts)
        .await
        .unwrap();
    assert!(std::fs::read(&target).unwrap() == data);
    assert!(server.requests().len() >= 3, "{:?}", server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_tokens_never_appear_in_errors() {
    let dir = scratch_dir("http-secrets");
    let server = busybox_httpd(dir.path());
    let url = server
        .url("missing.img?token=SECRET-TOKEN")
        .replace("http://", "http://admin:SECRET-PASSWORD@");
    let target = dir.path().join("target.raw");
    let err = write_url(&url, &target, &options(None)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Source(SourceError::Status { status: 404, .. })
        ),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("SECRET"), "{text}");
    }
    assert!(
        !target.exists(),
        "nothing is created for a source that cannot be read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded() {
    let dir = scratch_dir("http-giveup");
    let (raw, _) = faulty_image(dir.path());
    let server = FaultyServer::start(
        &raw,
        Faults {
            cut_after: Some(100_000),
            cuts: 100,
            ..Faults::default()
        },
    );
    let target = dir.path().join("target.raw");
    let opts = WriteOptions {
        http: HttpOptions {
            retries: 2,
            ..fast_http()
        },
        ..options(None)
    };
    let err = write_url(&server.url("image.raw"), &target, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.root(),
            ImageError::Source(SourceError::Transfer { attempts: 3, .. })
        ),
        "{err:?}"
    );
    assert!(server.requests().len() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_verification_on_by_default() {
    let dir = scratch_dir("https");
    let openssl = require_tool("openssl");
    let path = |name: &str| dir.path().join(name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    // A private CA and a server certificate it signs.
    run(Command::new(&openssl)
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=Rivet test CA"])
        .args(ec)
        .arg("-keyout")
        .arg(path("ca.key"))
        .arg("-out")
        .arg(path("ca.pem")));
    run(Command::new(&openssl)
        .args(["req", "-new", "-subj", "/CN=127.0.0.1"])
        .args(ec)
        .arg("-keyout")
        .arg(path("key.pem"))
        .arg("-out")
        .arg(path("server.csr")));
    std::fs::write(
        path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
        .arg("-in")
        .arg(path("server.csr"))
        .arg("-CA")
        .arg(path("ca.pem"))
        .arg("-CAkey")
        .arg(path("ca.key"))
        .arg("-extfile")
        .arg(path("ext.cnf"))
        .arg("-out")
        .arg(path("cert.pem")));
    let (cert, key, ca) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let images = corpus_subset(dir.path());
    let port = free_tcp_port();
    let mut server = ChildGuard::spawn(
        "openssl s_server",
        Command::new(&openssl)
            .current_dir(dir.path())
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null()),
    );
    wait_until("openssl s_server", Duration::from_secs(10), || {
        server.assert_running();
        tcp_port_open(([127, 0, 0, 1], port).into())
    });
    let target = dir.path().join("target.raw");
    let url = format!("https://127.0.0.1:{port}/{}", images.1);

    let untrusted = write_url(&url, &target, &options(None)).await.unwrap_err();
    assert!(untrusted.to_string().contains("certificate"), "{untrusted}");
    assert!(
        matches!(untrusted, ImageError::Source(SourceError::Tls { .. })),
        "a certificate error is not retried: {untrusted:?}"
    );

    let trusting = WriteOptions {
        http: HttpOptions {
            extra_root_certificates: vec![std::fs::read(&ca).unwrap()],
            ..fast_http()
        },
        ..options(Some(sha256_of(&images.0)))
    };
    let report = write_url(&url, &target, &trusting).await.unwrap();
    assert_eq!(report.format, DiskFormat::Qcow2);
    assert!(std::fs::read(&target).unwrap() == reference_raw(&images.0, dir.path()));
}

fn corpus_subset(dir: &Path) -> (PathBuf, String) {
    let raw = dir.join("base.raw");
    mixed_raw(&raw, 4, 17);
    let image = common::convert(dir, &raw, "tls", &["-c"]).path;
    (image, "tls.qcow2".into())
}
