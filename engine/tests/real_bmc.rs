//! The real BMC driver through the engine's seam, against real peers: sushy-tools'
//! emulator (Redfish, fake driver: power changes land 1–11 s after the request) and
//! OpenIPMI's `ipmi_sim` (IPMI 2.0 over LAN).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use rivet_bmc::Credentials;
use rivet_engine::drivers::bmc::{BmcSettings, RealBmc};
use rivet_engine::drivers::{
    BmcDriver, BmcTarget, BootInstruction, DriverErrorKind, HostTarget, PowerOff,
};
use rivet_engine::lifecycle::{BootMethod, BootMode, HostId, MacAddr};
use rivet_tests::sushy::{FakeSystem, SUSHY_PASSWORD, SUSHY_USERNAME, SushyDriver, SushyEmulator};
use rivet_tests::{IPMI_PASSWORD, IPMI_USER, IpmiSim, free_tcp_port};

fn host(n: u8, address: String, username: &str, password: &str) -> HostTarget {
    let mut id = [0u8; 16];
    id[15] = n;
    HostTarget {
        id: HostId::from_random(id),
        name: Arc::from(format!("host-{n}")),
        boot_mac: Some(MacAddr::new([0x52, 0x54, 0, 0, 0, n])),
        boot_method: BootMethod::NetworkBoot,
        boot_mode: BootMode::Uefi,
        bmc: BmcTarget {
            address,
            credentials: Credentials::new(username, password),
            verify_tls: true,
        },
    }
}

/// The production settings with the peers' slowness taken out: no spacing between IPMI
/// commands, short datagram time-outs and quick Redfish retries (a refused connection is
/// retried for about 7.5 s by default).
fn driver() -> RealBmc {
    let mut options = BmcSettings {
        call_timeout_secs: 30,
        ipmi_fallback: false,
        ipmi_min_command_interval_ms: 0,
    }
    .connect_options();
    options.ipmi.timeout = Duration::from_millis(500);
    options.redfish.retry.attempts = 2;
    options.redfish.retry.initial_backoff = Duration::from_millis(20);
    RealBmc::new(options)
}

/// Polls the driver until the host's power reads `on` (the emulator applies changes late).
async fn settle(bmc: &RealBmc, host: &HostTarget, on: bool) {
    for _ in 0..160 {
        if bmc.power_state(host).await.unwrap() == on {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{} never reported power {on}", host.name);
}

/// The system's boot override target as the emulator holds it (sushy-tools ignores
/// `BootSourceOverrideEnabled` and always reports `Continuous`, so only the target tells).
async fn boot_of(sushy: &SushyEmulator, system: &FakeSystem) -> String {
    let url = format!("{}/redfish/v1/Systems/{}", sushy.base_url(), system.uuid);
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .basic_auth(SUSHY_USERNAME, Some(SUSHY_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["Boot"]["BootSourceOverrideTarget"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn redfish_power_boot_and_credentials_through_sushy() {
    let off = FakeSystem::numbered(1);
    let on = FakeSystem {
        powered_on: true,
        ..FakeSystem::numbered(2)
    };
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![off.clone(), on.clone()]), None);
    let address = |system: &FakeSystem| {
        format!(
            "redfish+http://{}/redfish/v1/Systems/{}",
            sushy.addr(),
            system.uuid
        )
    };
    let bmc = driver();
    let starting = host(1, address(&off), SUSHY_USERNAME, SUSHY_PASSWORD);
    let stopping = host(2, address(&on), SUSHY_USERNAME, SUSHY_PASSWORD);
    assert!(!bmc.power_state(&starting).await.unwrap());
    assert!(bmc.power_state(&stopping).await.unwrap());
    bmc.power_on(&starting).await.unwrap();
    bmc.power_off(&stopping, PowerOff::Hard).await.unwrap();
    // Both changes land within the emulator's delay; wait for them together.
    tokio::join!(
        settle(&bmc, &starting, true),
        settle(&bmc, &stopping, false)
    );

    bmc.set_boot(&starting, &BootInstruction::Network)
        .await
        .unwrap();
    assert_eq!(boot_of(&sushy, &off).await, "Pxe");
    bmc.set_boot(&starting, &BootInstruction::Disk)
        .await
        .unwrap();
    assert_eq!(boot_of(&sushy, &off).await, "Hdd");

    let inventory = bmc.inventory(&starting).await.unwrap();
    assert!(
        inventory
            .nics
            .iter()
            .any(|nic| nic.mac.as_deref() == Some("52:54:00:00:00:01")),
        "{inventory:?}"
    );

    // A wrong password is a credentials error, never an unreachable or retried one, and
    // the message does not carry it; the fixed password works on the same host.
    let wrong = host(1, address(&off), SUSHY_USERNAME, "not-the-password");
    let err = bmc.power_state(&wrong).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Credentials, "{err}");
    assert!(!err.message.contains("not-the-password"));
    assert!(bmc.power_state(&starting).await.unwrap());
}

#[tokio::test]
async fn unreachable_and_invalid_bmcs_are_named_as_such() {
    let bmc = driver();
    let nobody = host(
        3,
        format!(
            "redfish+http://127.0.0.1:{}/redfish/v1/Systems/x",
            free_tcp_port()
        ),
        "u",
        "p",
    );
    let err = bmc.power_state(&nobody).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Unreachable, "{err}");
    let nonsense = host(4, "gopher://10.0.0.1".into(), "u", "p");
    let err = bmc.power_on(&nonsense).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Failed, "{err}");
    assert!(err.message.contains("invalid BMC address"), "{err}");
}

#[tokio::test]
async fn ipmi_power_boot_and_credentials_through_ipmi_sim() {
    let sim = IpmiSim::start();
    let bmc = driver();
    let address = format!("ipmi://127.0.0.1:{}", sim.port());
    let target = host(5, address.clone(), IPMI_USER, IPMI_PASSWORD);
    sim.set_power(false);
    assert!(!bmc.power_state(&target).await.unwrap());
    bmc.power_on(&target).await.unwrap();
    assert_eq!(sim.power(), "1");
    assert!(bmc.power_state(&target).await.unwrap());
    bmc.set_boot(&target, &BootInstruction::Network)
        .await
        .unwrap();
    assert_eq!(sim.boot(), "pxe");
    // IPMI has no virtual media: disk boot still works (there is nothing to eject).
    bmc.set_boot(&target, &BootInstruction::Disk).await.unwrap();
    assert_eq!(sim.boot(), "default");
    bmc.power_off(&target, PowerOff::Hard).await.unwrap();
    assert_eq!(sim.power(), "0");
    // Someone pressed the power button: the next read shows it (no stale cache).
    sim.set_power(true);
    assert!(bmc.power_state(&target).await.unwrap());

    let wrong = host(5, address, IPMI_USER, "not-the-password");
    let err = bmc.power_state(&wrong).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Credentials, "{err}");
    assert!(!err.message.contains("not-the-password"));
    let iso = BootInstruction::VirtualMedia {
        iso_url: "http://boot.example/agent.iso".into(),
    };
    let err = bmc.set_boot(&target, &iso).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Unsupported, "{err}");
}
