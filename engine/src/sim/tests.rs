use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::drivers::{
    AgentIdentity, AgentRejected, AgentToken, BootEntry, BootInstruction, DriverErrorKind,
    HostTarget, PowerOff,
};
use crate::lifecycle::{BootMethod, BootMode, HostId, MacAddr, Timestamp};

/// Records agent connections instead of running an engine.
#[derive(Default)]
struct Registry {
    connected: Mutex<Vec<(AgentIdentity, String)>>,
    disconnected: Mutex<Vec<HostId>>,
    accept: bool,
}

#[async_trait]
impl AgentRegistry for Registry {
    async fn connected(
        &self,
        identity: AgentIdentity,
        token: AgentToken,
    ) -> Result<HostId, AgentRejected> {
        self.connected
            .lock()
            .unwrap()
            .push((identity.clone(), token.expose().to_owned()));
        if self.accept {
            identity.host.ok_or(AgentRejected)
        } else {
            Err(AgentRejected)
        }
    }
    async fn disconnected(&self, host: HostId) {
        self.disconnected.lock().unwrap().push(host);
    }
}

fn fast() -> SimConfig {
    SimConfig {
        bmc_latency_ms: 0,
        boot_latency_ms: 1,
        agent_latency_ms: 0,
        ..SimConfig::default()
    }
}

fn target(address: &str, method: BootMethod) -> HostTarget {
    HostTarget {
        id: HostId::from_u128(7),
        name: "h7".into(),
        boot_mac: Some(MacAddr::new([2, 0, 0, 0, 0, 7])),
        boot_method: method,
        boot_mode: BootMode::Uefi,
        bmc: crate::drivers::BmcTarget {
            address: address.to_owned(),
            credentials: rivet_bmc::Credentials::new("admin", "pw"),
            verify_tls: true,
        },
    }
}

/// Sets the host's MAC to boot the agent with `token`, then boots it from the network.
async fn network_boot_agent(drivers: &crate::drivers::Drivers, host: &HostTarget, token: &str) {
    let entry = BootEntry::Agent {
        host: host.id,
        token: AgentToken::new(token.into()),
    };
    drivers
        .boot
        .set_entry(host.boot_mac.unwrap(), entry)
        .await
        .unwrap();
    drivers
        .bmc
        .set_boot(host, &BootInstruction::Network)
        .await
        .unwrap();
    drivers.bmc.power_on(host).await.unwrap();
}

async fn settle(registry: &Registry, count: usize) {
    for _ in 0..500 {
        if registry.connected.lock().unwrap().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the agent never connected");
}

#[tokio::test]
async fn a_network_boot_into_the_agent_connects_with_the_token() {
    let lab = SimLab::new(fast()).unwrap();
    let drivers = lab.drivers();
    let registry = Arc::new(Registry {
        accept: true,
        ..Registry::default()
    });
    drivers.agent.attach(registry.clone());
    let host = target("sim://m7", BootMethod::NetworkBoot);
    let mac = host.boot_mac.unwrap();
    let since = Timestamp::now();
    network_boot_agent(&drivers, &host, "tok").await;
    settle(&registry, 1).await;
    let (identity, token) = registry.connected.lock().unwrap()[0].clone();
    assert_eq!(token, "tok");
    assert_eq!(identity.host, Some(host.id));
    assert_eq!(identity.macs, [mac]);
    let seen = drivers.boot.observations(host.id, Some(mac), since);
    assert!(seen.dhcp.is_some() && seen.agent_fetched.is_some());
    assert!(drivers.agent.inspect(&host).await.unwrap().cpu.is_some());
    // The override was for one boot: the next boot goes to disk and starts no agent.
    drivers.bmc.power_off(&host, PowerOff::Hard).await.unwrap();
    assert_eq!(*registry.disconnected.lock().unwrap(), [host.id]);
    let err = drivers.agent.inspect(&host).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::AgentNotConnected);
    drivers.bmc.power_on(&host).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(registry.connected.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn virtual_media_boots_the_per_host_iso() {
    let lab = SimLab::new(fast()).unwrap();
    let drivers = lab.drivers();
    let registry = Arc::new(Registry {
        accept: true,
        ..Registry::default()
    });
    drivers.agent.attach(registry.clone());
    let host = target("sim+virtualmedia://vm1", BootMethod::VirtualMedia);
    let iso = drivers
        .boot
        .agent_iso(&host, &AgentToken::new("iso-token".into()))
        .await
        .unwrap();
    drivers
        .bmc
        .set_boot(&host, &BootInstruction::VirtualMedia { iso_url: iso })
        .await
        .unwrap();
    drivers.bmc.power_on(&host).await.unwrap();
    settle(&registry, 1).await;
    assert_eq!(registry.connected.lock().unwrap()[0].1, "iso-token");
}

#[tokio::test]
async fn faults_make_the_bmc_and_the_network_misbehave() {
    let lab = SimLab::new(fast()).unwrap();
    let drivers = lab.drivers();
    let registry = Arc::new(Registry {
        accept: true,
        ..Registry::default()
    });
    drivers.agent.attach(registry.clone());
    let host = target("sim://faulty", BootMethod::NetworkBoot);
    lab.set_faults(
        "faulty",
        Faults {
            bmc_unreachable: true,
            ..Faults::default()
        },
    );
    let err = drivers.bmc.power_state(&host).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Unreachable);
    assert_eq!(
        err.message,
        "BMC sim://faulty unreachable: connection refused"
    );
    lab.set_faults(
        "faulty",
        Faults {
            bmc_password: Some("right".into()),
            ..Faults::default()
        },
    );
    let err = drivers.bmc.power_on(&host).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Credentials);
    assert!(
        err.message
            .contains("rejected the credentials of user admin")
    );
    assert!(
        !err.message.contains("pw"),
        "the password leaked: {}",
        err.message
    );
    lab.set_faults(
        "faulty",
        Faults {
            no_dhcp: true,
            ..Faults::default()
        },
    );
    let since = Timestamp::now();
    network_boot_agent(&drivers, &host, "t").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(registry.connected.lock().unwrap().is_empty());
    assert_eq!(
        drivers.boot.observations(host.id, host.boot_mac, since),
        Default::default()
    );
    assert!(lab.machine("faulty").unwrap().powered_on);
}

#[tokio::test]
async fn the_journal_lets_machines_outlive_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig {
        journal: Some(dir.path().join("sim.log")),
        ..fast()
    };
    let host = target("sim://j1", BootMethod::NetworkBoot);
    {
        let lab = SimLab::new(config.clone()).unwrap();
        let drivers = lab.drivers();
        let registry = Arc::new(Registry {
            accept: true,
            ..Registry::default()
        });
        drivers.agent.attach(registry.clone());
        network_boot_agent(&drivers, &host, "t1").await;
        settle(&registry, 1).await;
        let deploy = crate::drivers::DeployRequest {
            image: crate::lifecycle::ImageSpec {
                url: "http://i/os".into(),
                checksum: None,
                checksum_type: None,
                format: None,
            },
            root_device_hints: None,
            boot_mode: BootMode::Uefi,
            config_drive: Default::default(),
        };
        drivers
            .agent
            .deploy(&host, &deploy, Arc::new(|_| {}))
            .await
            .unwrap();
    }
    // A new process: the machine is still on, with its disk, and its agent reconnects.
    let lab = SimLab::new(config.clone()).unwrap();
    let view = lab.machine("j1").unwrap();
    assert!(view.powered_on && view.agent_running);
    assert_eq!(view.disk.as_deref(), Some("http://i/os"));
    let registry = Arc::new(Registry {
        accept: true,
        ..Registry::default()
    });
    lab.drivers().agent.attach(registry.clone());
    settle(&registry, 1).await;
    assert_eq!(registry.connected.lock().unwrap()[0].1, "t1");
    let records = read_journal(config.journal.as_ref().unwrap()).unwrap();
    assert!(records.contains(&Record::Deploy { m: "j1".into() }));
}

#[tokio::test]
async fn a_refused_agent_goes_away() {
    let lab = SimLab::new(fast()).unwrap();
    let drivers = lab.drivers();
    let registry = Arc::new(Registry {
        accept: false,
        ..Registry::default()
    });
    drivers.agent.attach(registry.clone());
    let host = target("sim://r1", BootMethod::NetworkBoot);
    network_boot_agent(&drivers, &host, "bad").await;
    settle(&registry, 1).await;
    for _ in 0..100 {
        if !lab.machine("r1").unwrap().agent_running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("a refused agent kept running");
}
