//! `rivet image` as a user meets it: inspect and write against images made by qemu-img, over
//! files and HTTP, with the exit codes scripts rely on (0 written and verified, 4 checksum
//! mismatch, 5 image refused, 1 anything else).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use rivet_tests::http::busybox_httpd;
use rivet_tests::{cargo_bin, require_tool, scratch_dir};

fn rivet(args: &[&str]) -> Output {
    Command::new(cargo_bin("rivet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rivet")
}

fn qemu_img(args: &[&str]) {
    let status = Command::new(require_tool("qemu-img"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img {args:?}");
}

fn sha256(path: &Path) -> String {
    let out = Command::new(require_tool("sha256sum"))
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// A small compressed qcow2 with a GPT, and qemu-img's raw rendering of it.
fn image(dir: &Path) -> (String, Vec<u8>) {
    let raw = dir.join("disk.raw");
    let mut data = vec![0u8; 8 << 20];
    for (i, chunk) in data
        .chunks_mut(4096)
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
    {
        chunk.fill((i % 251) as u8 + 1);
    }
    std::fs::write(&raw, &data).unwrap();
    let status = Command::new(require_tool("sgdisk"))
        .args(["-o", "-n", "1:2048:0", "-t", "1:8300"])
        .arg(&raw)
        .output()
        .unwrap();
    assert!(status.status.success());
    let image = dir.join("disk.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    (
        image.to_str().unwrap().to_owned(),
        std::fs::read(&raw).unwrap(),
    )
}

#[test]
fn inspect_reports_and_refuses() {
    let dir = scratch_dir("cli-inspect");
    let (image, _) = image(dir.path());
    let out = rivet(&["image", "inspect", &image]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("qcow2") && text.contains("safe to write"),
        "{text}"
    );

    let out = rivet(&["image", "inspect", "--json", &image]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format"], "qcow2");
    assert_eq!(json["safe"], true);
    assert_eq!(json["virtual_size"], 8 << 20);
    assert_eq!(json["tables_checked"], true);

    let evil = dir.path().join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "/etc/passwd",
        evil.to_str().unwrap(),
    ]);
    let out = rivet(&["image", "inspect", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED"));
}

#[test]
fn write_verifies_and_uses_distinct_exit_codes() {
    let dir = scratch_dir("cli-write");
    let (image, reference) = image(dir.path());
    let target = dir.path().join("out.raw");
    let target = target.to_str().unwrap();
    let digest = sha256(Path::new(&image));

    let out = rivet(&[
        "image",
        "write",
        &image,
        target,
        "--checksum",
        &digest,
        "--progress",
        "none",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("verified sha256 {digest}")));
    assert!(std::fs::read(target).unwrap() == reference);

    let wrong = "0".repeat(64);
    let out = rivet(&[
        "image",
        "write",
        &image,
        target,
        "--checksum",
        &wrong,
        "--progress",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));

    let out = rivet(&[
        "image",
        "write",
        &image,
        target,
        "--format",
        "raw",
        "--progress",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("declared raw"));

    let out = rivet(&[
        "image",
        "write",
        "/nonexistent/disk.img",
        target,
        "--progress",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(1));

    let out = rivet(&[
        "image",
        "write",
        &image,
        target,
        "--checksum-type",
        "md5",
        "--checksum",
        &digest,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a sha256 digest is not an md5 digest"
    );
}

#[test]
fn write_over_http_with_a_checksum_file_and_json_progress() {
    let dir = scratch_dir("cli-http");
    let (image, reference) = image(dir.path());
    let digest = sha256(Path::new(&image));
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{digest}  disk.qcow2\n"),
    )
    .unwrap();
    let server = busybox_httpd(dir.path());
    let target = dir.path().join("out.raw");
    let out = rivet(&[
        "image",
        "write",
        &server.url("disk.qcow2"),
        target.to_str().unwrap(),
        "--checksum",
        &server.url("SHA256SUMS"),
        "--progress",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.iter().any(|line| line["event"] == "progress"));
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["report"]["digest"]["hex"], digest);
    assert_eq!(done["report"]["mode"], "metadata-first");
    assert!(std::fs::read(&target).unwrap() == reference);
}
