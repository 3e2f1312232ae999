#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rivet's IPMI client against OpenIPMI's `ipmi_sim` (suites 0–11, no 17), every command
//! cross-checked with `ipmitool -I lanplus -C 3` against the same simulator.

use std::time::Duration;

use rivet_bmc::ipmi::{
    BootDeviceSelector, CipherSuite, IpmiOptions, IpmiProvider, IpmiTarget, Privilege,
};
use rivet_bmc::{
    BmcError, BootDevice, BootMode, BootOverride, BootPersistence, BootTarget, Credentials, Health,
    Power, PowerOffMode, PowerState, Provider,
};
use rivet_tests::{IPMI_OPERATOR, IPMI_PASSWORD, IPMI_USER, IpmiSim, free_udp_port, wait_until};

fn options() -> IpmiOptions {
    IpmiOptions {
        timeout: Duration::from_millis(500),
        retries: 3,
        min_command_interval: Duration::ZERO,
        ..IpmiOptions::default()
    }
}

fn target(port: u16, privilege: Privilege) -> IpmiTarget {
    IpmiTarget {
        host: "127.0.0.1".into(),
        port,
        privilege,
    }
}

async fn connect(sim: &IpmiSim) -> IpmiProvider {
    IpmiProvider::connect(
        target(sim.port(), Privilege::Administrator),
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        options(),
    )
    .await
    .expect("log in to ipmi_sim")
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "ipmitool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn falls_back_from_17_to_3_and_reads_the_device_id() {
    let sim = IpmiSim::start();
    let bmc = connect(&sim).await;
    assert_eq!(bmc.name(), "ipmi");
    // ipmi_sim refuses suite 17's algorithms; the default preference [17, 3] walks down.
    assert_eq!(bmc.cipher_suite().await, Some(CipherSuite::Suite3));
    assert!(!format!("{bmc:?}").contains(IPMI_PASSWORD));

    let id = bmc.device_id().await.unwrap();
    let mc_info = stdout(&sim.ipmitool(&["mc", "info"]));
    assert!(mc_info.contains(&format!(
        "Manufacturer ID           : {}",
        id.manufacturer_id
    )));
    assert!(mc_info.contains(&format!("Product ID                : {}", id.product_id)));
    assert!(mc_info.contains("IPMI Version              : 2.0"));
    assert_eq!(id.ipmi_version, (2, 0));
    assert_eq!((id.manufacturer_id, id.product_id), (0x1291, 0x0F02));
}

#[tokio::test]
async fn power_control_agrees_with_ipmitool() {
    let sim = IpmiSim::start();
    let bmc = connect(&sim).await;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    bmc.power_on().await.unwrap();
    assert_eq!(sim.power(), "1");
    assert!(stdout(&sim.ipmitool(&["chassis", "power", "status"])).contains("Chassis Power is on"));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    stdout(&sim.ipmitool(&["chassis", "power", "off"]));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    stdout(&sim.ipmitool(&["chassis", "power", "on"]));
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    bmc.power_off(PowerOffMode::Soft).await.unwrap();
    assert!(
        sim.control_log().ends_with("shutdown 1\n"),
        "{}",
        sim.control_log()
    );
    bmc.reset().await.unwrap();
    assert!(
        sim.control_log().ends_with("reset 1\n"),
        "{}",
        sim.control_log()
    );
    bmc.power_off(PowerOffMode::Hard).await.unwrap();
    assert_eq!(sim.power(), "0");
    assert!(
        stdout(&sim.ipmitool(&["chassis", "power", "status"])).contains("Chassis Power is off")
    );

    // ipmi_sim powers off at once and back on from a one-second timer.
    sim.set_power(true);
    bmc.power_cycle().await.unwrap();
    assert!(
        sim.control_log().ends_with("power 0\n"),
        "{}",
        sim.control_log()
    );
    wait_until("the power cycle to end on", Duration::from_secs(10), || {
        sim.power() == "1"
    });
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    // Through the provider interface, as the registry calls it.
    let health = Provider::health(&bmc).expect("IPMI offers health");
    assert_eq!(health.health().await.unwrap(), Health::Ok);
}

#[tokio::test]
async fn boot_device_agrees_with_ipmitool() {
    let sim = IpmiSim::start();
    let bmc = connect(&sim).await;
    let set = |target, persistence| BootOverride {
        target,
        persistence,
        mode: Some(BootMode::Uefi),
        http_boot_uri: None,
    };

    bmc.set_boot_override(&set(BootTarget::Pxe, BootPersistence::Once))
        .await
        .unwrap();
    assert_eq!(sim.boot(), "pxe");
    let param5 = stdout(&sim.ipmitool(&["chassis", "bootparam", "get", "5"]));
    assert!(
        param5.contains("Boot Device Selector : Force PXE"),
        "{param5}"
    );
    // ipmi_sim keeps only the device and never reports the valid bit (test-peers.md §2.1),
    // so the flags read back carry the device but no override is in effect.
    let flags = bmc.boot_flags().await.unwrap();
    assert_eq!(flags.device, BootDeviceSelector::Pxe);
    assert!(!flags.valid);
    assert_eq!(bmc.boot_override().await.unwrap(), None);

    for (target, simulator, ipmitool_name) in [
        (
            BootTarget::Disk,
            "default",
            "Force Boot from default Hard-Drive",
        ),
        (BootTarget::Cd, "cdrom", "Force Boot from CD/DVD"),
        (BootTarget::BiosSetup, "bios", "Force Boot into BIOS Setup"),
    ] {
        bmc.set_boot_override(&set(target, BootPersistence::Persistent))
            .await
            .unwrap();
        assert_eq!(sim.boot(), simulator);
        let param5 = stdout(&sim.ipmitool(&["chassis", "bootparam", "get", "5"]));
        assert!(param5.contains(ipmitool_name), "{param5}");
    }

    stdout(&sim.ipmitool(&["chassis", "bootdev", "pxe"]));
    assert_eq!(
        bmc.boot_flags().await.unwrap().device,
        BootDeviceSelector::Pxe
    );

    let http = bmc
        .set_boot_override(&set(BootTarget::UefiHttp, BootPersistence::Once))
        .await
        .unwrap_err();
    assert!(matches!(http, BmcError::Unsupported { .. }), "{http}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_authentication_errors() {
    let sim = IpmiSim::start();
    for (user, password) in [(IPMI_USER, "not-the-password"), ("nobody", IPMI_PASSWORD)] {
        let err = IpmiProvider::connect(
            target(sim.port(), Privilege::Administrator),
            Credentials::new(user, password),
            options(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BmcError::Authentication), "{user}: {err}");
        assert!(!err.is_transient());
        assert!(!format!("{err} {err:?}").contains(password));
    }
    // ipmitool agrees that the password is wrong.
    let output = std::process::Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(sim.port().to_string())
        .args([
            "-U",
            IPMI_USER,
            "-P",
            "not-the-password",
            "-R",
            "1",
            "-N",
            "1",
        ])
        .args(["chassis", "power", "status"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Unable to establish IPMI v2"));
}

#[tokio::test]
async fn chassis_commands_need_the_privilege_raised() {
    let sim = IpmiSim::start();
    // A session left at User gets "insufficient privilege" for chassis control, which is
    // what ipmi-rs users hit; Rivet raises to the target privilege after RAKP.
    let user_session = IpmiProvider::connect(
        target(sim.port(), Privilege::User),
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        options(),
    )
    .await
    .unwrap();
    assert_eq!(user_session.power_state().await.unwrap(), PowerState::Off);
    let err = user_session.power_on().await.unwrap_err();
    assert!(
        matches!(err, BmcError::IpmiRefused { code: 0xD4, .. }),
        "{err}"
    );
    assert_eq!(sim.power(), "0");

    let operator = IpmiProvider::connect(
        target(sim.port(), Privilege::Operator),
        Credentials::new(IPMI_OPERATOR, IPMI_PASSWORD),
        options(),
    )
    .await
    .unwrap();
    operator.power_on().await.unwrap();
    assert_eq!(sim.power(), "1");
    // (ipmi_sim 2.0.33 does not enforce a user's privilege limit on RMCP+ sessions — ipmitool
    // as `operator -L ADMINISTRATOR` gets in too — so refusal is not testable here.)
}

#[tokio::test]
async fn suite_17_only_is_refused_with_the_bmcs_reason() {
    let sim = IpmiSim::start();
    let err = IpmiProvider::connect(
        target(sim.port(), Privilege::Administrator),
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        IpmiOptions {
            cipher_suites: vec![17],
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BmcError::IpmiRefused { code: 0x04, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("invalid authentication algorithm"),
        "{err}"
    );

    // ipmitool fails the same way.
    let output = rivet_tests::ipmitool(sim.port(), "17", &["chassis", "power", "status"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid authentication algorithm"));

    let unknown = IpmiProvider::connect(
        target(sim.port(), Privilege::Administrator),
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        IpmiOptions {
            cipher_suites: vec![8],
            ..options()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(unknown, BmcError::Unsupported { .. }), "{unknown}");
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    let port = free_udp_port();
    let err = IpmiProvider::connect(
        target(port, Privilege::Administrator),
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Connection(_)), "{err}");
    assert!(err.to_string().contains("ICMP port unreachable"), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn close_session_frees_the_bmcs_slot() {
    let sim = IpmiSim::start();
    let active = || {
        let info = stdout(&sim.ipmitool(&["session", "info", "active"]));
        let line = info
            .lines()
            .find(|line| line.starts_with("active sessions"))
            .unwrap_or_else(|| panic!("no session count in {info}"))
            .to_owned();
        line.rsplit(':')
            .next()
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    // ipmitool's own session is one of them.
    assert_eq!(active(), 1);
    let bmc = connect(&sim).await;
    assert_eq!(active(), 2);
    bmc.close().await;
    assert_eq!(active(), 1);

    // Dropping a provider sends Close Session too (without waiting for the answer).
    let bmc = connect(&sim).await;
    assert_eq!(active(), 2);
    drop(bmc);
    assert_eq!(active(), 1);
}
