//! Faults, through the real `rivet serve` with simulated drivers: each one ends in the right
//! error type with a readable reason, and the host recovers once the fault is fixed.
//! The image test serves images with Python's `http.server`, a real HTTP peer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, journal, settled, sim_host, wait_for};
use rivet_engine::lifecycle::{ErrorType, ImageSpec, OperationalStatus, ProvisioningState as S};
use rivet_engine::sim::{Faults, Record};
use rivet_tests::{
    ChildGuard, free_tcp_port, require_tool, scratch_dir, tcp_port_open, wait_until,
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

fn config(fetch_images: bool) -> String {
    format!(
        "[engine]\nbackoff_base_ms = 200\nbackoff_max_ms = 800\nagent_timeout_secs = 2\n\
         power_poll_interval_ms = 20\npower_sync_interval_secs = 0\n\
         [drivers]\nkind = \"simulated\"\n\
         [drivers.simulated]\nbmc_latency_ms = 2\nboot_latency_ms = 20\nagent_latency_ms = 10\n\
         fetch_images = {fetch_images}\njournal = \"state/sim.log\"\n"
    )
}

fn image(url: &str) -> ImageSpec {
    ImageSpec {
        url: url.into(),
        checksum: None,
        checksum_type: None,
        format: None,
    }
}

#[tokio::test]
async fn a_bmc_that_goes_down_mid_provisioning_is_retried_in_place() {
    let daemon = Daemon::start("fault-bmc", &config(false));
    let client = daemon.client();
    client.enroll(&sim_host("bmc-1", 1, "pw")).await.unwrap();
    wait_for(&client, "bmc-1", "available", LONG, settled(S::Available)).await;
    client
        .set_faults(
            "bmc-1",
            &Faults {
                bmc_unreachable: true,
                ..Faults::default()
            },
        )
        .await
        .unwrap();
    client
        .action(
            "bmc-1",
            "provision",
            Some(&json!({"image": image("http://images.invalid/os.img")})),
        )
        .await
        .unwrap();
    let view = wait_for(&client, "bmc-1", "an error", LONG, |v| {
        v.status.error.is_some()
    })
    .await;
    let error = view.status.error.unwrap();
    assert_eq!(error.kind, ErrorType::Provisioning);
    assert_eq!(
        error.message,
        "BMC sim://bmc-1 unreachable: connection refused"
    );
    assert_eq!(
        view.status.state,
        S::Provisioning,
        "a transient failure stays in place"
    );
    assert_eq!(view.status.operational_status, OperationalStatus::Error);
    client
        .set_faults("bmc-1", &Faults::default())
        .await
        .unwrap();
    let view = wait_for(
        &client,
        "bmc-1",
        "provisioned",
        LONG,
        settled(S::Provisioned),
    )
    .await;
    assert!(view.status.error.is_none());
    // The image was written once: the retry resumed at the failed step.
    let deploys = journal(&daemon.state_dir())
        .iter()
        .filter(|r| **r == Record::Deploy { m: "bmc-1".into() })
        .count();
    assert_eq!(deploys, 1);
    let timeline = client.timeline("bmc-1", 0).await.unwrap().entries;
    assert!(
        timeline
            .iter()
            .any(|e| serde_json::to_value(e).unwrap()["type"] == "stepFailed")
    );
}

#[tokio::test]
async fn an_agent_that_never_calls_back_is_an_inspection_error_naming_what_was_seen() {
    let daemon = Daemon::start("fault-agent", &config(false));
    let client = daemon.client();
    client
        .set_faults(
            "quiet-1",
            &Faults {
                no_dhcp: true,
                ..Faults::default()
            },
        )
        .await
        .unwrap();
    client.enroll(&sim_host("quiet-1", 2, "pw")).await.unwrap();
    let view = wait_for(&client, "quiet-1", "an error", LONG, |v| {
        v.status.error.is_some()
    })
    .await;
    let error = view.status.error.unwrap();
    assert_eq!(error.kind, ErrorType::Inspection);
    assert!(
        error.message.starts_with("agent never called back after network boot (waited 2s): no DHCP request seen from 52:54:00:10:00:02"),
        "{}",
        error.message
    );
    assert_eq!(view.status.state, S::Inspecting);
    client
        .set_faults("quiet-1", &Faults::default())
        .await
        .unwrap();
    wait_for(&client, "quiet-1", "available", LONG, settled(S::Available)).await;
}

#[tokio::test]
async fn wrong_credentials_are_a_registration_error_until_they_are_fixed() {
    let daemon = Daemon::start("fault-creds", &config(false));
    let client = daemon.client();
    client
        .set_faults(
            "locked-1",
            &Faults {
                bmc_password: Some("right-password".into()),
                ..Faults::default()
            },
        )
        .await
        .unwrap();
    client
        .enroll(&sim_host("locked-1", 3, "wrong-password"))
        .await
        .unwrap();
    let view = wait_for(&client, "locked-1", "an error", LONG, |v| {
        v.status.error.is_some()
    })
    .await;
    let error = view.status.error.unwrap();
    assert_eq!(error.kind, ErrorType::Registration);
    assert_eq!(
        error.message,
        "BMC sim://locked-1 rejected the credentials of user admin (HTTP 401)"
    );
    assert_eq!(view.status.state, S::Registering);
    let update = rivet_engine::api::hosts::UpdateRequest {
        bmc: Some(rivet_engine::api::hosts::BmcUpdate {
            username: Some("admin".into()),
            password: Some("right-password".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    client.update("locked-1", &update).await.unwrap();
    wait_for(
        &client,
        "locked-1",
        "available",
        LONG,
        settled(S::Available),
    )
    .await;
    // Neither password ever reached the log, the API or the store in clear.
    assert!(!daemon.log().contains("password"), "{}", daemon.log());
    let store = std::fs::read(daemon.state_dir().join("rivet.redb")).unwrap();
    for secret in [&b"wrong-password"[..], b"right-password"] {
        assert!(
            !store.windows(secret.len()).any(|w| w == secret),
            "a password is in the store in clear"
        );
    }
}

/// `python3 -m http.server` serving `dir` on a free port.
fn http_server(dir: &std::path::Path) -> (ChildGuard, u16) {
    let python = require_tool("python3");
    let port = free_tcp_port();
    let server = ChildGuard::spawn(
        "python3 -m http.server",
        Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_until("the HTTP server", Duration::from_secs(30), || {
        tcp_port_open(([127, 0, 0, 1], port).into())
    });
    (server, port)
}

#[tokio::test]
async fn an_image_that_is_not_there_is_a_provisioning_error_until_it_is() {
    let images = scratch_dir("images");
    let (_server, port) = http_server(images.path());
    let daemon = Daemon::start("fault-image", &config(true));
    let client = daemon.client();
    client.enroll(&sim_host("img-1", 4, "pw")).await.unwrap();
    wait_for(&client, "img-1", "available", LONG, settled(S::Available)).await;
    let content = b"not really an operating system\n".repeat(1000);
    let checksum = hex_sha256(&content);
    let url = format!("http://127.0.0.1:{port}/os.img");
    let body = json!({"image": {"url": url, "checksum": checksum, "checksumType": "sha256"}});
    client
        .action("img-1", "provision", Some(&body))
        .await
        .unwrap();
    let view = wait_for(&client, "img-1", "an error", LONG, |v| {
        v.status.error.is_some()
    })
    .await;
    let error = view.status.error.unwrap();
    assert_eq!(error.kind, ErrorType::Provisioning);
    assert_eq!(
        error.message,
        format!("image {url} returned HTTP 404 Not Found")
    );
    std::fs::write(images.path().join("os.img"), &content).unwrap();
    let view = wait_for(
        &client,
        "img-1",
        "provisioned",
        LONG,
        settled(S::Provisioned),
    )
    .await;
    assert!(view.status.error.is_none());
    // The failed attempt was cleaned up (deprovisioned) before the retry, as BMO does.
    let changes: Vec<(String, String)> = client
        .timeline("img-1", 0)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["type"] == "stateChanged")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        changes.contains(&("provisioning".into(), "deprovisioning".into())),
        "{changes:?}"
    );
    assert_eq!(
        client.machine("img-1").await.unwrap().disk.as_deref(),
        Some(url.as_str())
    );
    // A wrong checksum is caught too.
    std::fs::write(images.path().join("bad.img"), b"tampered").unwrap();
    let bad = format!("http://127.0.0.1:{port}/bad.img");
    let body = json!({"image": {"url": bad, "checksum": checksum, "checksumType": "sha256"}});
    client
        .action("img-1", "provision", Some(&body))
        .await
        .unwrap();
    let view = wait_for(&client, "img-1", "a checksum error", LONG, |v| {
        v.status
            .error
            .as_ref()
            .is_some_and(|e| e.message.contains("checksum mismatch"))
    })
    .await;
    assert_eq!(view.status.error.unwrap().kind, ErrorType::Provisioning);
}

fn hex_sha256(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
