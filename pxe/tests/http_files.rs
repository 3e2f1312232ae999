//! The HTTP boot routes against curl on loopback: per-host scripts, byte ranges, content
//! types, conditional requests, live host-table swaps, and every way out of the root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;

use rivet_pxe::{BootConfig, BootServices, HostTable, HostTableHandle, HttpSettings};
use rivet_tests::{require_tool, scratch_dir};

const TABLE: &str = r#"{
  "agent": {"kernel": "agent/vmlinuz", "initrds": ["agent/initrd.img"], "cmdline": "console=ttyS0"},
  "hosts": [
    {"mac": "52:54:00:00:00:01", "boot": "agent"},
    {"mac": "52:54:00:00:00:02", "boot": "local_disk"},
    {"mac": "52:54:00:00:00:03", "boot": "ignore"}
  ]
}"#;

struct Server {
    addr: SocketAddr,
    hosts: HostTableHandle,
    root: tempfile::TempDir,
    _outside: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    services: Option<BootServices>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(services) = self.services.take() {
            self.runtime.block_on(services.shutdown());
        }
    }
}

fn server() -> Server {
    let outside = scratch_dir("http-outside");
    std::fs::write(outside.path().join("secret"), "TOP-SECRET").unwrap();
    let root = scratch_dir("http-root");
    let files = root.path().join("files");
    std::fs::create_dir_all(files.join("agent")).unwrap();
    let kernel: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.join("agent/vmlinuz"), &kernel).unwrap();
    std::fs::write(files.join("agent/initrd.img"), b"initrd").unwrap();
    std::fs::write(files.join("rescue.iso"), b"iso").unwrap();
    std::os::unix::fs::symlink("agent/vmlinuz", files.join("kernel-link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), files.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), files.join("dir-escape")).unwrap();
    std::fs::write(root.path().join("secret-beside"), "TOP-SECRET").unwrap();
    let ipxe = root.path().join("ipxe");
    std::fs::create_dir(&ipxe).unwrap();
    std::fs::write(ipxe.join("snponly.efi"), b"MZ-efi").unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hosts = HostTableHandle::new(HostTable::from_json(TABLE).unwrap());
    let config = BootConfig {
        http_base: Some("http://boot.example:8080".parse().unwrap()),
        http: Some(HttpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            files_root: Some(files),
            ipxe_root: Some(ipxe),
        }),
        ..BootConfig::default()
    };
    let services = runtime
        .block_on(BootServices::start(config, hosts.clone()))
        .unwrap();
    Server {
        addr: services.http_addr().unwrap(),
        hosts,
        root,
        _outside: outside,
        runtime,
        services: Some(services),
    }
}

/// What curl saw: status, headers (lower-cased names) and body.
struct Fetched {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn curl(server: &Server, path: &str, extra: &[&str]) -> Fetched {
    let dir = scratch_dir("curl");
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let output = Command::new(require_tool("curl"))
        .args(["-sS", "--path-as-is", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("http://{}{path}", server.addr))
        .output()
        .unwrap();
    assert!(output.status.success(), "curl {path}: {output:?}");
    Fetched {
        status: String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap(),
        headers: std::fs::read_to_string(headers)
            .unwrap_or_default()
            .to_ascii_lowercase(),
        body: std::fs::read(body).unwrap_or_default(),
    }
}

fn header<'a>(fetched: &'a Fetched, name: &str) -> Option<&'a str> {
    fetched
        .headers
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn hosts_get_their_scripts_in_either_mac_spelling() {
    let server = server();
    for path in [
        "/boot/52-54-00-00-00-01.ipxe",
        "/boot/52:54:00:00:00:01.ipxe",
    ] {
        let got = curl(&server, path, &[]);
        assert_eq!(got.status, 200, "{path}");
        let script = String::from_utf8(got.body).unwrap();
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains(
            "kernel --name vmlinuz http://boot.example:8080/files/agent/vmlinuz initrd=initrd.img console=ttyS0"
        ));
        assert_eq!(
            header(&got_headers(&server, path), "content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    let local = curl(&server, "/boot/52-54-00-00-00-02.ipxe", &[]);
    assert!(String::from_utf8(local.body).unwrap().contains("sanboot"));
    assert_eq!(
        curl(&server, "/boot/52-54-00-00-00-03.ipxe", &[]).status,
        404
    );
    assert_eq!(
        curl(&server, "/boot/52-54-00-00-00-99.ipxe", &[]).status,
        404
    );
    assert_eq!(curl(&server, "/boot/not-a-mac.ipxe", &[]).status, 404);
    let chain = curl(&server, "/boot.ipxe", &[]);
    assert!(
        String::from_utf8(chain.body)
            .unwrap()
            .contains("chain http://boot.example:8080/boot/${mac:hexhyp}.ipxe")
    );
}

fn got_headers(server: &Server, path: &str) -> Fetched {
    curl(server, path, &["-I"])
}

#[test]
fn a_new_host_table_takes_effect_without_a_restart() {
    let server = server();
    assert_eq!(
        curl(&server, "/boot/52-54-00-00-00-03.ipxe", &[]).status,
        404
    );
    server.hosts.set_hosts(
        HostTable::from_json(r#"{"hosts": [{"mac": "52:54:00:00:00:03", "boot": "local_disk"}]}"#)
            .unwrap(),
    );
    assert_eq!(
        curl(&server, "/boot/52-54-00-00-00-03.ipxe", &[]).status,
        200
    );
    assert_eq!(
        curl(&server, "/boot/52-54-00-00-00-01.ipxe", &[]).status,
        404
    );
}

#[test]
fn files_are_served_with_ranges_types_and_validators() {
    let server = server();
    let whole: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let full = curl(&server, "/files/agent/vmlinuz", &[]);
    assert_eq!(full.status, 200);
    assert_eq!(full.body, whole);
    assert_eq!(header(&full, "accept-ranges"), Some("bytes"));
    assert_eq!(
        header(&full, "content-type"),
        Some("application/octet-stream")
    );
    let etag = header(&full, "etag").unwrap().to_owned();

    let part = curl(&server, "/files/agent/vmlinuz", &["-r", "1000-1999"]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &whole[1000..2000]);
    assert_eq!(
        header(&part, "content-range"),
        Some("bytes 1000-1999/100000")
    );
    let tail = curl(&server, "/files/agent/vmlinuz", &["-r", "-10"]);
    assert_eq!(tail.body, &whole[99_990..]);
    let open = curl(&server, "/files/agent/vmlinuz", &["-r", "99000-"]);
    assert_eq!(open.body, &whole[99_000..]);
    let beyond = curl(&server, "/files/agent/vmlinuz", &["-r", "200000-"]);
    assert_eq!(beyond.status, 416);
    assert_eq!(header(&beyond, "content-range"), Some("bytes */100000"));

    // Resuming a download with curl -C: the rest, byte for byte.
    let dir = scratch_dir("resume");
    let partial = dir.path().join("vmlinuz");
    std::fs::write(&partial, &whole[..4242]).unwrap();
    let output = Command::new(require_tool("curl"))
        .args(["-sS", "--fail", "-C", "-", "-o"])
        .arg(&partial)
        .arg(format!("http://{}/files/agent/vmlinuz", server.addr))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(&partial).unwrap(), whole);

    // Conditional requests.
    let cached = curl(
        &server,
        "/files/agent/vmlinuz",
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    let changed = curl(
        &server,
        "/files/agent/vmlinuz",
        &["-r", "0-9", "-H", "If-Range: \"stale\""],
    );
    assert_eq!(changed.status, 200, "a stale If-Range gets the whole file");
    assert_eq!(changed.body.len(), 100_000);

    // HEAD: headers only.
    let head = curl(&server, "/files/agent/vmlinuz", &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(header(&head, "content-length"), Some("100000"));

    assert_eq!(
        header(&curl(&server, "/files/rescue.iso", &[]), "content-type"),
        Some("application/x-iso9660-image")
    );
    assert_eq!(curl(&server, "/files/kernel-link", &[]).body, whole);
    let efi = curl(&server, "/ipxe/snponly.efi", &[]);
    assert_eq!((efi.status, efi.body.as_slice()), (200, &b"MZ-efi"[..]));
    assert_eq!(header(&efi, "content-type"), Some("application/efi"));
    assert_eq!(curl(&server, "/files/missing", &[]).status, 404);
    assert_eq!(curl(&server, "/files/agent", &[]).status, 404);
}

#[test]
fn nothing_outside_the_root_is_ever_served() {
    let server = server();
    for path in [
        "/files/../secret-beside",
        "/files/agent/../../secret-beside",
        "/files/%2e%2e/secret-beside",
        "/files/..%2fsecret-beside",
        "/files/agent%2f..%2f..%2fsecret-beside",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/escape",
        "/files/dir-escape/secret",
        "/files/agent/..\\..\\secret-beside",
        "/ipxe/../files/agent/vmlinuz",
    ] {
        let got = curl(&server, path, &[]);
        assert!(
            matches!(got.status, 400 | 403 | 404),
            "{path}: status {}",
            got.status
        );
        let body = String::from_utf8_lossy(&got.body);
        assert!(!body.contains("TOP-SECRET"), "{path} leaked: {body}");
        assert!(!body.contains("root:"), "{path} leaked: {body}");
    }
    assert!(server.root.path().join("secret-beside").exists());
}
