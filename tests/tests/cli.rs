//! The `rivet` binary as a user meets it: help, completions, exit codes, log formats.

// Tests fail by panicking; helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use rivet_tests::cargo_bin;

fn rivet(args: &[&str]) -> Output {
    Command::new(cargo_bin("rivet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rivet")
}

#[test]
fn help_lists_every_command_group() {
    let out = rivet(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in [
        "image",
        "bmc",
        "boot",
        "serve",
        "host",
        "lab",
        "completions",
    ] {
        assert!(help.contains(command), "`{command}` missing from:\n{help}");
    }
}

#[test]
fn completions_are_generated_for_bash_and_zsh() {
    for (shell, marker) in [("bash", "_rivet()"), ("zsh", "#compdef rivet")] {
        let out = rivet(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell} script lacks {marker}");
    }
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let out = rivet(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let out = rivet(&["--log-format", "xml", "completions", "bash"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    // `completions` logs nothing at the default level; -vv with RUST_LOG unset must still
    // leave stdout clean (logs go to stderr).
    let out = rivet(&["--log-format", "json", "-vv", "completions", "fish"]);
    assert!(out.status.success());
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("JSON log line");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("rivet"));
}
