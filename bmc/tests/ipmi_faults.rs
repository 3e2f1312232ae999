#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A lossy network between Rivet and a real BMC simulator: lost, duplicated and reordered
//! datagrams are retried or ignored, silence is a clear timeout, and a BMC that forgot the
//! session gets a fresh login. The loss comes from `rivet_tests::LossyRelay`, a test-only
//! fault injector; the BMC is OpenIPMI's ipmi_sim.

use std::time::Duration;

use rivet_bmc::ipmi::{IpmiOptions, IpmiProvider, IpmiTarget};
use rivet_bmc::{
    BmcError, BootDevice, BootOverride, BootPersistence, BootTarget, Credentials, Power,
    PowerOffMode, PowerState,
};
use rivet_tests::{Faults, IPMI_PASSWORD, IPMI_USER, IpmiSim, LossyRelay};

fn options() -> IpmiOptions {
    IpmiOptions {
        timeout: Duration::from_millis(200),
        retries: 5,
        min_command_interval: Duration::ZERO,
        ..IpmiOptions::default()
    }
}

async fn connect_through(
    relay: &LossyRelay,
    options: IpmiOptions,
) -> Result<IpmiProvider, BmcError> {
    IpmiProvider::connect(
        IpmiTarget {
            port: relay.port(),
            ..IpmiTarget::new("127.0.0.1")
        },
        Credentials::new(IPMI_USER, IPMI_PASSWORD),
        options,
    )
    .await
}

#[tokio::test]
async fn lost_duplicated_and_reordered_datagrams_are_survived() {
    let sim = IpmiSim::start();
    let relay = LossyRelay::start(
        sim.addr(),
        Faults {
            drop_every: 3,
            duplicate_every: 4,
            delay_every: 5,
        },
    );
    let bmc = connect_through(&relay, options()).await.unwrap();
    for round in 0..4 {
        bmc.power_on().await.unwrap();
        assert_eq!(sim.power(), "1", "round {round}");
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
        bmc.power_off(PowerOffMode::Hard).await.unwrap();
        assert_eq!(sim.power(), "0", "round {round}");
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    }
    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Cd,
        persistence: BootPersistence::Once,
        mode: None,
        http_boot_uri: None,
    })
    .await
    .unwrap();
    assert_eq!(sim.boot(), "cdrom");

    let stats = relay.stats();
    assert!(stats.dropped >= 10, "{stats:?}");
    assert!(stats.duplicated >= 5, "{stats:?}");
    assert!(stats.delayed >= 5, "{stats:?}");
}

#[tokio::test]
async fn a_silent_bmc_is_a_transient_timeout() {
    let sim = IpmiSim::start();
    let relay = LossyRelay::start(
        sim.addr(),
        Faults {
            drop_every: 1,
            ..Faults::default()
        },
    );
    let quick = IpmiOptions {
        timeout: Duration::from_millis(100),
        retries: 2,
        ..options()
    };
    let err = connect_through(&relay, quick.clone()).await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout(_)), "{err}");
    assert!(err.is_transient());
    // 100 + 200 + 300 ms of waiting, reported as such.
    assert!(err.to_string().contains("600ms"), "{err}");
    assert_eq!(
        relay.stats().dropped,
        3,
        "one datagram and two retransmissions"
    );

    // Silence after login: the command times out too, and the next call logs in again.
    relay.set_faults(Faults::default());
    let bmc = connect_through(&relay, quick).await.unwrap();
    relay.set_faults(Faults {
        drop_every: 1,
        ..Faults::default()
    });
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout(_)), "{err}");
    relay.set_faults(Faults::default());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn a_bmc_that_forgot_the_session_gets_a_fresh_login() {
    let first = IpmiSim::start();
    let relay = LossyRelay::start(first.addr(), Faults::default());
    let quick = IpmiOptions {
        timeout: Duration::from_millis(150),
        retries: 2,
        ..options()
    };
    let bmc = connect_through(&relay, quick).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // As if the BMC rebooted: a simulator that never saw this session, whose host is on.
    let second = IpmiSim::start();
    second.set_power(true);
    relay.redirect(second.addr());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.power_off(PowerOffMode::Hard).await.unwrap();
    assert_eq!(second.power(), "0");
    assert_eq!(first.control_log(), "");
}
