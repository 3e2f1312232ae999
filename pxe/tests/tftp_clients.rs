//! The TFTP server against real clients on loopback: curl, atftp (blksize and windowsize)
//! and tftp-hpa, plus concurrency and hostile requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use rivet_pxe::confine::ConfinedDir;
use rivet_pxe::tftp::packet::{self, ErrorCode, Packet};
use rivet_pxe::tftp::{TftpConfig, TftpLimits, TftpServer};
use rivet_tests::{require_tool, scratch_dir};

/// Deterministic bytes that differ block to block, so a misplaced block is caught.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

struct Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn server_with(limits: TftpLimits) -> Server {
    let root = scratch_dir("tftp-root");
    for (name, len) in [
        ("empty", 0),
        ("one-block", 512),
        ("odd", 512 * 3 + 17),
        ("kernel", 3 * 1024 * 1024 + 123),
    ] {
        std::fs::write(root.path().join(name), pattern(len)).unwrap();
    }
    std::fs::create_dir(root.path().join("sub")).unwrap();
    std::fs::write(root.path().join("sub/text.cfg"), "line one\nline two\r\n").unwrap();
    let outside = root.path().parent().unwrap().join(format!(
        "{}-secret",
        root.path().file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, root.path().join("escape")).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = TftpConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits,
        max_transfers: 256,
    };
    let dir = ConfinedDir::open(root.path()).unwrap();
    let server = runtime.block_on(TftpServer::bind(&config, dir)).unwrap();
    let addr = server.local_addr().unwrap();
    runtime.spawn(server.run());
    Server {
        addr,
        root,
        _runtime: runtime,
    }
}

fn server() -> Server {
    server_with(TftpLimits::default())
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"))
}

fn assert_same(served: &Server, name: &str, got: &Path) {
    let expected = std::fs::read(served.root.path().join(name)).unwrap();
    let got = std::fs::read(got).unwrap_or_else(|err| panic!("{}: {err}", got.display()));
    assert_eq!(got.len(), expected.len(), "{name}: length");
    assert!(got == expected, "{name}: contents differ");
}

#[test]
fn curl_downloads_every_size_byte_for_byte() {
    let curl = require_tool("curl");
    let served = server();
    let out = scratch_dir("tftp-curl");
    // Not "empty": curl 7.88 fails every empty TFTP download with "getpeername() failed"
    // (tftpd-hpa too); tftp-hpa covers it below.
    for name in ["one-block", "odd", "kernel", "sub/text.cfg"] {
        let target = out.path().join(name.replace('/', "_"));
        let result = run(Command::new(&curl)
            .args(["-sS", "--fail", "-o"])
            .arg(&target)
            .arg(format!("tftp://{}/{name}", served.addr)));
        assert!(result.status.success(), "{name}: {result:?}");
        assert_same(&served, name, &target);
    }
    // curl's own blksize option.
    let target = out.path().join("kernel-8192");
    let result = run(Command::new(&curl)
        .args(["-sS", "--tftp-blksize", "8192", "-o"])
        .arg(&target)
        .arg(format!("tftp://{}/kernel", served.addr)));
    assert!(result.status.success(), "{result:?}");
    assert_same(&served, "kernel", &target);
}

#[test]
fn atftp_negotiates_blksize_and_windowsize() {
    let atftp = require_tool("atftp");
    let served = server();
    let out = scratch_dir("tftp-atftp");
    for options in [
        &[][..],
        &["blksize 1468"][..],
        &["blksize 8192", "tsize 0"][..],
        &["blksize 1468", "windowsize 8"][..],
        &["windowsize 16", "timeout 2"][..],
    ] {
        let target = out
            .path()
            .join(format!("kernel-{}", options.join("-").replace(' ', "_")));
        let mut command = Command::new(&atftp);
        command.args(["--get", "-r", "kernel", "-l"]).arg(&target);
        for option in options {
            command.args(["--option", option]);
        }
        command
            .arg(served.addr.ip().to_string())
            .arg(served.addr.port().to_string());
        let result = run(&mut command);
        assert!(result.status.success(), "{options:?}: {result:?}");
        assert_same(&served, "kernel", &target);
    }
}

#[test]
fn tftp_hpa_gets_binary_and_netascii() {
    let tftp = require_tool("tftp");
    let served = server();
    let out = scratch_dir("tftp-hpa");
    for name in ["odd", "empty"] {
        let target = out.path().join(name);
        let result = run(Command::new(&tftp)
            .args(["-m", "binary"])
            .arg(served.addr.ip().to_string())
            .arg(served.addr.port().to_string())
            .arg("-c")
            .arg("get")
            .arg(name)
            .arg(&target));
        assert!(result.status.success(), "{result:?}");
        assert_same(&served, name, &target);
    }

    // netascii: the client turns CR LF back into the local newline convention.
    let target = out.path().join("text.cfg");
    let result = run(Command::new(&tftp)
        .args(["-m", "netascii"])
        .arg(served.addr.ip().to_string())
        .arg(served.addr.port().to_string())
        .arg("-c")
        .arg("get")
        .arg("sub/text.cfg")
        .arg(&target));
    assert!(result.status.success(), "{result:?}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"line one\nline two\r\n",
        "netascii must round-trip"
    );
}

#[test]
fn fifty_concurrent_downloads_all_complete_intact() {
    let curl = require_tool("curl");
    let served = server();
    let out = scratch_dir("tftp-many");
    let children: Vec<_> = (0..50)
        .map(|i| {
            let target = out.path().join(format!("kernel-{i}"));
            let mut command = Command::new(&curl);
            command
                .args(["-sS", "--fail", "-o"])
                .arg(&target)
                .arg(format!("tftp://{}/kernel", served.addr));
            if i % 2 == 0 {
                command.args(["--tftp-blksize", "1468"]);
            }
            (target, command.spawn().unwrap())
        })
        .collect();
    for (target, child) in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_same(&served, "kernel", &target);
    }
}

/// Sends one request from a fresh socket and returns the first reply.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(request, addr).unwrap();
    let mut buffer = vec![0u8; 70000];
    let (len, _) = socket.recv_from(&mut buffer).expect("a reply");
    buffer.truncate(len);
    buffer
}

fn error_code(reply: &[u8]) -> ErrorCode {
    match packet::parse(reply).unwrap() {
        Packet::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn traversal_and_symlinks_out_of_the_root_are_refused_and_leak_nothing() {
    let curl = require_tool("curl");
    let served = server();
    let out = scratch_dir("tftp-traversal");
    for name in [
        "../secret",
        "/etc/passwd",
        "sub/../../x",
        "escape",
        "..%2f..%2fetc%2fpasswd",
    ] {
        let target = out.path().join("got");
        let result = run(Command::new(&curl)
            .args(["-sS", "--path-as-is", "-o"])
            .arg(&target)
            .arg(format!("tftp://{}/{name}", served.addr)));
        assert!(!result.status.success(), "{name} was served");
        assert!(!target.exists() || std::fs::read(&target).unwrap().is_empty());
    }
    // Crafted requests: each gets an access violation, never data.
    for name in [
        "../../../../etc/passwd",
        "/etc/shadow",
        "escape",
        "sub/../../etc/passwd",
    ] {
        let reply = exchange(
            served.addr,
            &packet::encode_read_request(name, "octet", &[]),
        );
        assert_eq!(error_code(&reply), ErrorCode::AccessViolation, "{name}");
    }
    let reply = exchange(
        served.addr,
        &packet::encode_read_request("missing", "octet", &[]),
    );
    assert_eq!(error_code(&reply), ErrorCode::FileNotFound);
    let reply = exchange(
        served.addr,
        &packet::encode_read_request("sub", "octet", &[]),
    );
    assert_eq!(error_code(&reply), ErrorCode::FileNotFound);
}

#[test]
fn writes_and_malformed_requests_are_refused_and_the_server_carries_on() {
    let served = server();
    let mut write = packet::encode_read_request("new", "octet", &[]);
    write[1] = 2;
    assert_eq!(
        error_code(&exchange(served.addr, &write)),
        ErrorCode::AccessViolation
    );
    assert!(!served.root.path().join("new").exists());
    for hostile in [
        &b"\x00\x01"[..],
        &b"\x00\x01kernel"[..],
        &b"\x00\x01kernel\x00binary\x00"[..],
        &b"\x00\x01kernel\x00octet\x00blksize\x00"[..],
        &b"\x00\x01kernel\x00mail\x00"[..],
    ] {
        let reply = exchange(served.addr, hostile);
        assert_eq!(
            error_code(&reply),
            ErrorCode::IllegalOperation,
            "{hostile:?}"
        );
    }
    // Junk that is not even a request gets no answer, and huge garbage is survived.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(&[0xff; 60000], served.addr).unwrap();
    socket.send_to(&[0, 4, 0, 1], served.addr).unwrap();
    // Still serving.
    let reply = exchange(
        served.addr,
        &packet::encode_read_request("one-block", "octet", &[]),
    );
    assert!(matches!(
        packet::parse(&reply).unwrap(),
        Packet::Data { block: 1, data } if data.len() == 512
    ));
}

#[test]
fn a_silent_client_is_abandoned_after_the_retransmission_budget() {
    let served = server_with(TftpLimits {
        default_timeout: Duration::from_millis(200),
        max_retransmits: 2,
        ..TftpLimits::default()
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .send_to(
            &packet::encode_read_request("odd", "octet", &[]),
            served.addr,
        )
        .unwrap();
    let mut buffer = vec![0u8; 2048];
    let mut data_packets = 0;
    loop {
        let (len, _) = socket
            .recv_from(&mut buffer)
            .expect("the server gives up with an error");
        match packet::parse(&buffer[..len]).unwrap() {
            Packet::Data { block: 1, .. } => data_packets += 1,
            Packet::Error { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The first send plus two retransmissions, then the error.
    assert_eq!(data_packets, 3);
}
