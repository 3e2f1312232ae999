#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rivet's IPMI client against pyghmi's BMC server class: as shipped (suite 3 only, which it
//! counter-offers whatever the client proposes) and with the suite-17 extension, which
//! `ipmitool -C 17` and pyghmi's own client validate first.

use std::time::Duration;

use rivet_bmc::ipmi::{CipherSuite, IpmiOptions, IpmiProvider, IpmiTarget};
use rivet_bmc::{
    BmcError, BootDevice, BootMode, BootOverride, BootPersistence, BootTarget, Credentials, Power,
    PowerOffMode, PowerState,
};
use rivet_tests::{IPMI_PASSWORD, IPMI_USER, PyghmiBmc};

fn options(cipher_suites: Vec<u8>) -> IpmiOptions {
    IpmiOptions {
        timeout: Duration::from_millis(500),
        retries: 3,
        min_command_interval: Duration::ZERO,
        cipher_suites,
    }
}

async fn connect(bmc: &PyghmiBmc, cipher_suites: Vec<u8>) -> Result<IpmiProvider, BmcError> {
    IpmiProvider::connect(
        IpmiTarget {
            port: bmc.port(),
            ..IpmiTarget::new("127.0.0.1")
        },
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        options(cipher_suites),
    )
    .await
}

fn stdout(bmc: &PyghmiBmc, output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}\nBMC log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        bmc.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn stock_pyghmi_counter_offers_suite_3_and_every_command_agrees_with_ipmitool() {
    let bmc = PyghmiBmc::start();
    // Rivet proposes 17; pyghmi answers with suite 3's algorithms, which Rivet allows.
    let rivet = connect(&bmc, vec![17, 3]).await.unwrap();
    assert_eq!(rivet.cipher_suite().await, Some(CipherSuite::Suite3));
    // A counter-offer outside the configured suites is refused, never a silent downgrade.
    let err = connect(&bmc, vec![17]).await.unwrap_err();
    assert!(matches!(err, BmcError::Protocol(_)), "{err}");
    assert!(
        err.to_string().contains("none of the configured suites"),
        "{err}"
    );

    assert_eq!(rivet.power_state().await.unwrap(), PowerState::Off);
    rivet.power_on().await.unwrap();
    assert_eq!(bmc.power(), "on");
    assert!(
        stdout(&bmc, &bmc.ipmitool("3", &["chassis", "power", "status"]))
            .contains("Chassis Power is on")
    );
    stdout(&bmc, &bmc.ipmitool("3", &["chassis", "power", "off"]));
    assert_eq!(rivet.power_state().await.unwrap(), PowerState::Off);

    rivet.power_cycle().await.unwrap();
    rivet.reset().await.unwrap();
    rivet.power_off(PowerOffMode::Soft).await.unwrap();
    rivet.power_off(PowerOffMode::Hard).await.unwrap();
    assert_eq!(
        bmc.actions(),
        ["on", "off", "cycle", "reset", "shutdown", "off"]
    );
    let boot_parameters = || -> Vec<String> {
        bmc.actions()
            .iter()
            .filter_map(|action| action.strip_prefix("bootparam "))
            .map(str::to_owned)
            .collect()
    };

    rivet
        .set_boot_override(&BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: None,
            http_boot_uri: None,
        })
        .await
        .unwrap();
    assert_eq!(bmc.boot(), "network");
    // Ironic's bytes: parameter 3 = 0x08, then valid + next boot, legacy (the mode pyghmi
    // reported, since none was asked for), PXE.
    assert_eq!(boot_parameters(), ["0308", "058004000000"]);
    let param5 = stdout(
        &bmc,
        &bmc.ipmitool("3", &["chassis", "bootparam", "get", "5"]),
    );
    assert!(
        param5.contains("Force PXE") && param5.contains("Boot Flag Valid"),
        "{param5}"
    );
    // pyghmi keeps only the device; it reports valid, next boot only, legacy.
    assert_eq!(
        rivet.boot_override().await.unwrap(),
        Some(BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: Some(BootMode::Legacy),
            http_boot_uri: None,
        })
    );

    stdout(&bmc, &bmc.ipmitool("3", &["chassis", "bootdev", "cdrom"]));
    assert_eq!(
        rivet.boot_override().await.unwrap().map(|boot| boot.target),
        Some(BootTarget::Cd)
    );
    rivet
        .set_boot_override(&BootOverride {
            target: BootTarget::Disk,
            persistence: BootPersistence::Persistent,
            mode: Some(BootMode::Uefi),
            http_boot_uri: None,
        })
        .await
        .unwrap();
    assert_eq!(bmc.boot(), "hd");
    // `raw 0x00 0x08 0x05 0xe0 0x08 0 0 0`: valid, persistent, UEFI, disk (after ipmitool's
    // own bootdev sequence).
    let parameters = boot_parameters();
    assert_eq!(parameters[parameters.len() - 2..], ["0308", "05e008000000"]);
}

#[tokio::test]
async fn suite_17_against_pyghmi_with_the_sha256_extension() {
    let bmc = PyghmiBmc::start_with_suite17();
    // Two independent suite-17 clients accept the extended server first.
    assert!(
        stdout(&bmc, &bmc.ipmitool("17", &["chassis", "power", "status"]))
            .contains("Chassis Power is off")
    );
    let pyghmi = bmc.pyghmi_client_power();
    assert_eq!(
        stdout(&bmc, &pyghmi).trim(),
        "off 16",
        "pyghmi's client should use HMAC-SHA256-128"
    );

    let rivet = connect(&bmc, vec![17, 3]).await.unwrap();
    assert_eq!(rivet.cipher_suite().await, Some(CipherSuite::Suite17));
    rivet.power_on().await.unwrap();
    assert_eq!(bmc.power(), "on");
    assert!(
        stdout(&bmc, &bmc.ipmitool("17", &["chassis", "power", "status"]))
            .contains("Chassis Power is on")
    );
    stdout(&bmc, &bmc.ipmitool("17", &["chassis", "power", "off"]));
    assert_eq!(rivet.power_state().await.unwrap(), PowerState::Off);
    rivet
        .set_boot_override(&BootOverride {
            target: BootTarget::BiosSetup,
            persistence: BootPersistence::Once,
            mode: Some(BootMode::Legacy),
            http_boot_uri: None,
        })
        .await
        .unwrap();
    assert_eq!(bmc.boot(), "setup");
    let device = rivet.device_id().await.unwrap();
    assert!(
        stdout(&bmc, &bmc.ipmitool("17", &["mc", "info"])).contains(&format!(
            "Manufacturer ID           : {}",
            device.manufacturer_id
        ))
    );

    // Suite 3 only still works against the same server.
    let suite3 = connect(&bmc, vec![3]).await.unwrap();
    assert_eq!(suite3.cipher_suite().await, Some(CipherSuite::Suite3));
    assert_eq!(suite3.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_in_both_suites() {
    let bmc = PyghmiBmc::start_with_suite17();
    for suites in [vec![17], vec![3]] {
        let err = IpmiProvider::connect(
            IpmiTarget {
                port: bmc.port(),
                ..IpmiTarget::new("127.0.0.1")
            },
            Credentials::new(IPMI_USER, "hunter2"),
            options(suites.clone()),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BmcError::Authentication), "{suites:?}: {err}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }
}
