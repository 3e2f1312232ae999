//! `rivet bmc` against sushy-tools' emulator: output, exit codes, and passwords that never
//! show.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use rivet_tests::sushy::{FakeSystem, SUSHY_PASSWORD, SUSHY_USERNAME, SushyDriver, SushyEmulator};
use rivet_tests::{cargo_bin, scratch_dir};

/// The base64 of `admin:password`, as it would appear in a logged Basic header.
const BASIC_TOKEN: &str = "YWRtaW46cGFzc3dvcmQ=";

struct Bmc {
    _sushy: SushyEmulator,
    address: String,
}

fn bmc(n: u8) -> Bmc {
    let system = FakeSystem::numbered(n);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), None);
    let base = sushy.base_url();
    let address = format!(
        "redfish+http://{}/redfish/v1/Systems/{}",
        &base["http://".len()..],
        system.uuid
    );
    Bmc {
        _sushy: sushy,
        address,
    }
}

fn rivet(args: &[&str], password: Option<&str>) -> Output {
    let mut command = Command::new(cargo_bin("rivet"));
    command.args(args).env_remove("RUST_LOG");
    command.env_remove("RIVET_BMC_PASSWORD");
    if let Some(password) = password {
        command.env("RIVET_BMC_PASSWORD", password);
    }
    command.output().expect("run rivet")
}

fn bmc_args<'a>(address: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bmc", "--address", address, "--username", SUSHY_USERNAME];
    args.extend_from_slice(rest);
    args
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn power_boot_inventory_media_and_health_print_what_the_bmc_says() {
    let bmc = bmc(21);
    let run = |rest: &[&str]| {
        let out = rivet(&bmc_args(&bmc.address, rest), Some(SUSHY_PASSWORD));
        assert!(out.status.success(), "{rest:?}: {}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(run(&["power", "status"]), "off\n");
    assert_eq!(
        run(&["boot", "set", "pxe", "--mode", "uefi"]),
        "pxe once uefi\n"
    );
    // sushy-tools reports every override as continuous.
    assert_eq!(run(&["boot", "get"]), "pxe persistent uefi\n");
    let inventory: serde_json::Value =
        serde_json::from_str(&run(&["inventory", "--json"])).unwrap();
    assert_eq!(inventory["systemVendor"]["manufacturer"], "Sushy Emulator");
    assert_eq!(inventory["nics"][0]["mac"], "52:54:00:00:00:15");
    assert!(run(&["inventory"]).contains("nic\t52:54:00:00:00:15"));
    let media = run(&["vmedia", "status"]);
    assert!(media.contains("/VirtualMedia/Cd\tcd\tempty"), "{media}");
    assert_eq!(run(&["health"]), "ok\n");
    // The fake driver lands power changes seconds later; the command waits for them.
    assert_eq!(run(&["power", "on"]), "on\n");
    assert_eq!(run(&["power", "status"]), "on\n");
    assert_eq!(run(&["power", "off", "--no-wait"]), "requested\n");
}

#[test]
fn capabilities_the_bmc_lacks_are_named() {
    let bmc = bmc(22);
    let out = rivet(
        &bmc_args(&bmc.address, &["bios", "get"]),
        Some(SUSHY_PASSWORD),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no configured BMC driver offers BIOS"),
        "{}",
        stderr(&out)
    );
    let out = rivet(
        &bmc_args(&bmc.address, &["bios", "set", "no-equals-sign"]),
        Some(SUSHY_PASSWORD),
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn passwords_come_from_a_file_or_the_environment_and_never_show() {
    let bmc = bmc(23);
    let dir = scratch_dir("bmc-cli");
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{SUSHY_PASSWORD}\n")).unwrap();
    let file = file.display().to_string();

    let out = rivet(
        &bmc_args(&bmc.address, &["--password-file", &file, "power", "status"]),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = rivet(&bmc_args(&bmc.address, &["power", "status"]), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("RIVET_BMC_PASSWORD"),
        "{}",
        stderr(&out)
    );

    // A wrong password: exit 4, and neither it nor any credential shows, even at trace level.
    let mut command = Command::new(cargo_bin("rivet"));
    command
        .args(["-vv", "--log-format", "json"])
        .args(bmc_args(&bmc.address, &["power", "status"]))
        .env("RIVET_BMC_PASSWORD", "hunter2-wrong")
        .env("RUST_LOG", "trace");
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("rejected the credentials"), "{all}");
    assert!(!all.contains("hunter2-wrong"));
    assert!(
        !all.contains("aHVudGVyMi13cm9uZw"),
        "base64 of the password leaked"
    );

    // The right password at trace level: no password, no Basic token in the logs.
    let mut command = Command::new(cargo_bin("rivet"));
    command
        .args(["-vv"])
        .args(bmc_args(&bmc.address, &["inventory"]))
        .env("RIVET_BMC_PASSWORD", SUSHY_PASSWORD)
        .env("RUST_LOG", "trace");
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains(BASIC_TOKEN),
        "the Basic credentials were logged"
    );
    assert!(!all.contains(&format!("\"{SUSHY_PASSWORD}\"")));
}

#[test]
fn bad_addresses_unreachable_bmcs_and_bad_arguments_have_their_own_exit_codes() {
    let out = rivet(&bmc_args("foo://10.0.0.1", &["power", "status"]), Some("x"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown BMC address type `foo`"),
        "{}",
        stderr(&out)
    );

    let out = rivet(
        &bmc_args("redfish://admin:hunter2@10.0.0.1", &["power", "status"]),
        Some("x"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("hunter2"));

    let port = rivet_tests::free_tcp_port();
    let nobody = format!("redfish+http://127.0.0.1:{port}");
    let out = rivet(&bmc_args(&nobody, &["power", "status"]), Some("x"));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the BMC"),
        "{}",
        stderr(&out)
    );

    let out = rivet(&["bmc", "--address", "10.0.0.1", "power"], Some("x"));
    assert_eq!(out.status.code(), Some(2));
    let out = rivet(&bmc_args("10.0.0.1", &["boot", "set", "floppy"]), Some("x"));
    assert_eq!(out.status.code(), Some(2));

    // IPMI addresses reach the IPMI driver.
    let out = rivet(
        &bmc_args("ipmi://127.0.0.1:1", &["power", "status"]),
        Some("x"),
    );
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn the_tls_flags_are_mutually_exclusive() {
    let out = rivet(
        &bmc_args(
            "redfish://127.0.0.1",
            &["--insecure", "--ca-cert", "/nonexistent", "power", "status"],
        ),
        Some("x"),
    );
    assert_eq!(out.status.code(), Some(2));
    let bmc = bmc(24);
    // Plain HTTP ignores TLS settings; a CA file that cannot be read is an error first.
    let out = rivet(
        &bmc_args(
            &bmc.address,
            &["--ca-cert", "/nonexistent/ca.pem", "power", "status"],
        ),
        Some(SUSHY_PASSWORD),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("reading the CA certificate"),
        "{}",
        stderr(&out)
    );
}
