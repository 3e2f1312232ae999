//! `rivet host …` against a real `rivet serve`, as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::Daemon;

fn config() -> &'static str {
    "[engine]\nbackoff_base_ms = 200\nbackoff_max_ms = 800\npower_poll_interval_ms = 20\n\
     power_sync_interval_secs = 0\n\
     [drivers]\nkind = \"simulated\"\n\
     [drivers.simulated]\nbmc_latency_ms = 2\nboot_latency_ms = 20\nagent_latency_ms = 10\n"
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

#[test]
fn a_user_enrols_provisions_and_deletes_a_host_from_the_command_line() {
    let daemon = Daemon::start("host-cli", config());
    let password = daemon.dir.path().join("bmc-password");
    std::fs::write(&password, "hunter2\n").unwrap();
    let password = password.to_str().unwrap();
    let out = ok(daemon.host_command(&[
        "enroll",
        "cli-1",
        "--bmc",
        "sim://cli-1",
        "--username",
        "admin",
        "--password-file",
        password,
        "--mac",
        "52:54:00:20:00:01",
    ]));
    assert!(out.starts_with("host cli-1: registering (OK)"), "{out}");
    let out = ok(daemon.host_command(&[
        "provision",
        "cli-1",
        "--image",
        "http://images.invalid/os.qcow2",
        "--checksum-type",
        "auto",
        "--wait",
    ]));
    assert_eq!(out.trim(), "host cli-1: provisioned (OK)");

    let table = ok(daemon.host_command(&["list"]));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATE", "STATUS", "POWER", "NOTE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["cli-1", "provisioned", "OK", "on"]);

    let json: serde_json::Value =
        serde_json::from_str(&ok(daemon.host_command(&["list", "--json"]))).unwrap();
    assert_eq!(json[0]["status"]["state"], "provisioned");
    assert!(!json.to_string().contains("hunter2"));

    let show = ok(daemon.host_command(&["show", "cli-1"]));
    assert!(
        show.contains("Image         http://images.invalid/os.qcow2"),
        "{show}"
    );
    assert!(show.contains("BMC user      admin"), "{show}");

    let timeline = ok(daemon.host_command(&["timeline", "cli-1"]));
    assert!(
        timeline.contains("writing the image: done in"),
        "{timeline}"
    );
    assert!(
        timeline.contains("provisioning → provisioned"),
        "{timeline}"
    );

    let out = ok(daemon.host_command(&["power", "cli-1", "off", "--wait"]));
    assert_eq!(out.trim(), "host cli-1: provisioned (OK)");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(daemon.host_command(&["show", "cli-1", "--json"]))).unwrap();
    assert_eq!(shown["status"]["poweredOn"], false);

    let out = ok(daemon.host_command(&["reboot", "cli-1", "--hard", "--wait"]));
    assert!(out.starts_with("host cli-1: provisioned"), "{out}");
    let out = ok(daemon.host_command(&["deprovision", "cli-1", "--wait"]));
    assert_eq!(out.trim(), "host cli-1: available (OK)");
    let out = ok(daemon.host_command(&["delete", "cli-1", "--wait"]));
    assert_eq!(out.trim(), "host cli-1: deleted");
    let gone = daemon.host_command(&["show", "cli-1"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no host is named `cli-1`"));
}

#[test]
fn mistakes_and_failures_exit_1_with_a_reason() {
    let daemon = Daemon::start("host-cli-errors", config());
    let refused = daemon.host_command(&["reboot", "nobody"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no host is named `nobody`"));

    // A failure while waiting stops the wait and says why.
    let client = daemon.client();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(client.set_faults(
            "dark-1",
            &rivet_engine::sim::Faults {
                no_dhcp: true,
                ..Default::default()
            },
        ))
        .unwrap();
    let password = daemon.dir.path().join("pw");
    std::fs::write(&password, "x").unwrap();
    ok(daemon.host_command(&[
        "enroll",
        "dark-1",
        "--bmc",
        "sim://dark-1",
        "--username",
        "admin",
        "--password-file",
        password.to_str().unwrap(),
        "--mac",
        "52:54:00:20:00:02",
    ]));
    let waited = daemon.host_command(&[
        "provision",
        "dark-1",
        "--image",
        "http://i/x",
        "--wait",
        "--timeout",
        "3",
    ]);
    assert_eq!(waited.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(
        stderr.contains("timed out after 3s") || stderr.contains("inspection error"),
        "{stderr}"
    );

    // Without the token nothing works.
    let stranger = std::process::Command::new(rivet_tests::cargo_bin("rivet"))
        .args(["host", "list", "--url", &daemon.url()])
        .env("RIVET_TOKEN", "not-the-token")
        .env("RIVET_CA_FILE", daemon.state_dir().join("tls/ca.pem"))
        .output()
        .unwrap();
    assert_eq!(stranger.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&stranger.stderr)
    );

    // And a client that does not trust the engine's CA refuses to talk to it.
    let untrusting = std::process::Command::new(rivet_tests::cargo_bin("rivet"))
        .args(["host", "list", "--url", &daemon.url()])
        .env("RIVET_TOKEN_FILE", daemon.state_dir().join("api-token"))
        .env_remove("RIVET_STATE_DIR")
        .env_remove("RIVET_CA_FILE")
        .output()
        .unwrap();
    assert_eq!(untrusting.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&untrusting.stderr);
    assert!(stderr.contains("cannot reach the engine"), "{stderr}");
}

#[test]
fn serving_real_drivers_without_their_settings_is_refused_with_a_reason() {
    let dir = rivet_tests::scratch_dir("serve-hardware");
    let config = dir.path().join("rivet.toml");
    std::fs::write(
        &config,
        "state_dir = \"s\"\n[drivers]\nkind = \"hardware\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(rivet_tests::cargo_bin("rivet"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("drivers.real.boot.engine_url"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "state_dir = \"s\"\n[drivers]\nkind = \"simulated\"\n[engine]\nturbo = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(rivet_tests::cargo_bin("rivet"))
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("turbo"));
}
