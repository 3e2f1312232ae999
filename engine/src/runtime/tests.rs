//! The engine with simulated drivers, in-process.

use std::sync::Arc;
use std::time::Duration;

use super::testkit::{settled, wait_for};
use super::*;
use crate::lifecycle::{
    Backoff, ErrorType, ImageSpec, MacAddr, OperationalStatus, ProvisioningState as S,
};
use crate::sim::{Faults, SimConfig, SimLab};

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.policy.agent_timeout = Duration::from_millis(400);
    config.policy.backoff = Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    config.power_poll_interval = Duration::from_millis(5);
    config.power_sync_interval = Duration::ZERO;
    config
}

fn lab() -> Arc<SimLab> {
    SimLab::new(SimConfig {
        bmc_latency_ms: 1,
        boot_latency_ms: 5,
        agent_latency_ms: 2,
        ..SimConfig::default()
    })
    .unwrap()
}

fn request(n: u8) -> EnrollRequest {
    EnrollRequest::new(
        format!("host-{n}"),
        Some(BmcAccess {
            address: format!("sim://m{n}"),
            username: "admin".into(),
            password: "secret".into(),
            disable_certificate_verification: false,
        }),
        Some(MacAddr::new([0x52, 0x54, 0, 0, 1, n])),
    )
}

fn image() -> ImageSpec {
    ImageSpec {
        url: "http://images.invalid/os.qcow2".into(),
        checksum: None,
        checksum_type: None,
        format: None,
    }
}

#[tokio::test]
async fn hosts_go_through_the_whole_lifecycle_and_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab();
    let engine = Engine::open(config(dir.path()), lab.drivers())
        .await
        .unwrap();
    let handle = engine.handle();
    let mut events = handle.subscribe();
    for n in 0..5 {
        let view = handle.enroll(request(n)).await.unwrap();
        assert_eq!(view.status.state, S::Registering);
        assert_eq!(view.bmc_username.as_deref(), Some("admin"));
    }
    for n in 0..5 {
        let view = wait_for(
            &handle,
            &format!("host-{n}"),
            "available",
            settled(S::Available),
        )
        .await;
        assert!(view.status.has_hardware);
    }
    assert!(
        handle
            .hardware("host-0")
            .await
            .unwrap()
            .unwrap()
            .cpu
            .is_some()
    );
    for n in 0..5 {
        handle
            .apply(&format!("host-{n}"), Intent::Provision { image: image() })
            .await
            .unwrap();
    }
    for n in 0..5 {
        wait_for(
            &handle,
            &format!("host-{n}"),
            "provisioned",
            settled(S::Provisioned),
        )
        .await;
        let machine = lab.machine(&format!("m{n}")).unwrap();
        assert_eq!(
            machine.disk.as_deref(),
            Some("http://images.invalid/os.qcow2")
        );
        assert!(machine.powered_on);
    }
    handle.apply("host-0", Intent::Deprovision).await.unwrap();
    wait_for(&handle, "host-0", "available again", settled(S::Available)).await;
    assert_eq!(
        lab.machine("m0").unwrap().disk,
        None,
        "cleaning wiped the disk"
    );
    handle.apply("host-0", Intent::Delete).await.unwrap();
    for _ in 0..1000 {
        if handle.get("host-0").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(handle.get("host-0").await.unwrap().is_none());
    assert!(matches!(
        handle.timeline("host-0", 0, 10).await,
        Err(EngineError::NotFound(_))
    ));
    let timeline = handle.timeline("host-1", 0, 1000).await.unwrap();
    assert!(timeline.len() > 20);
    assert!(timeline.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    // The event stream carried the same story, deletion included.
    let deleted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.host == "host-0" && event.kind == HostEventKind::Deleted {
                return;
            }
        }
    });
    deleted.await.expect("no deletion event");
    let page = handle
        .list(ListQuery {
            limit: Some(2),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(
        page.items
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["host-1", "host-2"]
    );
    let rest = handle
        .list(ListQuery {
            limit: Some(10),
            after: page.next.clone(),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.next, None);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_resumes_every_host_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("sim.log");
    let lab_config = SimConfig {
        bmc_latency_ms: 1,
        boot_latency_ms: 5,
        agent_latency_ms: 30,
        journal: Some(journal),
        ..SimConfig::default()
    };
    {
        let lab = SimLab::new(lab_config.clone()).unwrap();
        let engine = Engine::open(config(dir.path()), lab.drivers())
            .await
            .unwrap();
        let handle = engine.handle();
        for n in 0..6 {
            handle.enroll(request(n)).await.unwrap();
        }
        // Stop while the hosts are somewhere in the middle.
        tokio::time::sleep(Duration::from_millis(60)).await;
        engine.shutdown().await.unwrap();
    }
    let lab = SimLab::new(lab_config).unwrap();
    let engine = Engine::open(config(dir.path()), lab.drivers())
        .await
        .unwrap();
    let handle = engine.handle();
    for n in 0..6 {
        wait_for(
            &handle,
            &format!("host-{n}"),
            "available",
            settled(S::Available),
        )
        .await;
    }
    let summary = handle.summary().await.unwrap();
    assert_eq!(summary.total, 6);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_capacity_limit_holds_and_queued_hosts_are_delayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.provisioning_limit = 2;
    let lab = SimLab::new(SimConfig {
        bmc_latency_ms: 1,
        boot_latency_ms: 20,
        agent_latency_ms: 20,
        ..SimConfig::default()
    })
    .unwrap();
    let engine = Engine::open(config, lab.drivers()).await.unwrap();
    let handle = engine.handle();
    for n in 0..6 {
        handle.enroll(request(n)).await.unwrap();
    }
    let mut saw_delayed = false;
    loop {
        let summary = handle.summary().await.unwrap();
        assert!(summary.slots_in_use <= 2, "{summary:?}");
        let page = handle.list(ListQuery::default()).await.unwrap();
        let inspecting = page
            .items
            .iter()
            .filter(|v| v.status.state == S::Inspecting)
            .count();
        assert!(inspecting <= 2, "{inspecting} hosts inspecting at once");
        saw_delayed |= page
            .items
            .iter()
            .any(|v| v.status.operational_status == OperationalStatus::Delayed);
        if page.items.iter().all(|v| v.status.state == S::Available) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_delayed, "no host ever waited for a slot");
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_agent_that_never_calls_back_names_the_reason_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let lab = lab();
    lab.set_faults(
        "m1",
        Faults {
            no_dhcp: true,
            ..Faults::default()
        },
    );
    let engine = Engine::open(config(dir.path()), lab.drivers())
        .await
        .unwrap();
    let handle = engine.handle();
    handle.enroll(request(1)).await.unwrap();
    let view = wait_for(&handle, "host-1", "in error", |v| v.status.error.is_some()).await;
    let error = view.status.error.unwrap();
    assert_eq!(error.kind, ErrorType::Inspection);
    assert!(
        error
            .message
            .contains("no DHCP request seen from 52:54:00:00:01:01"),
        "{}",
        error.message
    );
    lab.set_faults("m1", Faults::default());
    let view = wait_for(&handle, "host-1", "available", settled(S::Available)).await;
    assert_eq!(view.status.operational_status, OperationalStatus::Ok);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn agents_with_a_wrong_token_or_unknown_mac_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path()), lab().drivers())
        .await
        .unwrap();
    let handle = engine.handle();
    let view = handle.enroll(request(3)).await.unwrap();
    let registry: &dyn AgentRegistry = &handle;
    let identity = AgentIdentity {
        host: Some(view.id),
        macs: vec![],
    };
    assert!(
        registry
            .connected(identity, AgentToken::new("guess".into()))
            .await
            .is_err()
    );
    let stranger = AgentIdentity {
        host: None,
        macs: vec![MacAddr::new([9; 6])],
    };
    assert!(
        registry
            .connected(stranger, AgentToken::new("guess".into()))
            .await
            .is_err()
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn enrolment_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path()), lab().drivers())
        .await
        .unwrap();
    let handle = engine.handle();
    handle.enroll(request(1)).await.unwrap();
    let duplicate = handle.enroll(request(1)).await.unwrap_err();
    assert!(matches!(duplicate, EngineError::Exists(_)), "{duplicate}");
    let mut same_mac = request(1);
    same_mac.name = "other".into();
    let err = handle.enroll(same_mac).await.unwrap_err();
    assert!(
        err.to_string().contains("already belongs to host `host-1`"),
        "{err}"
    );
    let mut bad = request(2);
    bad.name = "no spaces".into();
    assert!(matches!(
        handle.enroll(bad).await,
        Err(EngineError::Invalid(_))
    ));
    let mut uuid = request(2);
    uuid.name = "0b7c6f4e-2d1a-4c3b-9e8f-1a2b3c4d5e6f".into();
    assert!(
        handle
            .enroll(uuid)
            .await
            .unwrap_err()
            .to_string()
            .contains("UUID")
    );
    let mut no_mac = request(2);
    no_mac.boot_mac_address = None;
    assert!(
        handle
            .enroll(no_mac)
            .await
            .unwrap_err()
            .to_string()
            .contains("bootMACAddress")
    );
    let mut media = request(2);
    media.boot_mac_address = None;
    media.bmc.as_mut().unwrap().address = "sim+virtualmedia://m2".into();
    handle.enroll(media).await.unwrap();
    let mut unknown = request(3);
    unknown.bmc.as_mut().unwrap().address = "irmc://bmc".into();
    assert!(
        handle
            .enroll(unknown)
            .await
            .unwrap_err()
            .to_string()
            .contains("unknown BMC address scheme")
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_power_sync_loop_enforces_online() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.power_sync_interval = Duration::from_millis(30);
    let lab = lab();
    let engine = Engine::open(config, lab.drivers()).await.unwrap();
    let handle = engine.handle();
    handle.enroll(request(4)).await.unwrap();
    let view = wait_for(&handle, "host-4", "available", settled(S::Available)).await;
    assert_eq!(view.status.powered_on, Some(true));
    // Someone turns the machine off behind the engine's back.
    let drivers = lab.drivers();
    let target = crate::drivers::HostTarget {
        id: view.id,
        name: "host-4".into(),
        boot_mac: view.spec.boot_mac_address,
        boot_method: crate::lifecycle::BootMethod::NetworkBoot,
        boot_mode: Default::default(),
        bmc: crate::drivers::BmcTarget {
            address: "sim://m4".into(),
            credentials: rivet_bmc::Credentials::new("admin", "secret"),
            verify_tls: true,
        },
    };
    drivers
        .bmc
        .power_off(&target, crate::drivers::PowerOff::Hard)
        .await
        .unwrap();
    let timeline_has = |kind: &str| {
        let kind = kind.to_owned();
        let handle = handle.clone();
        async move {
            handle
                .timeline("host-4", 0, 1000)
                .await
                .unwrap()
                .iter()
                .any(|entry| serde_json::to_value(entry).unwrap()["type"] == kind.as_str())
        }
    };
    for _ in 0..1000 {
        if timeline_has("powerObserved").await && lab.machine("m4").unwrap().powered_on {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        lab.machine("m4").unwrap().powered_on,
        "the engine did not power the host back on"
    );
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_engine_that_forgot_everything_adopts_running_hosts_without_touching_them() {
    let lab = lab();
    let first = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(first.path()), lab.drivers())
            .await
            .unwrap();
        let handle = engine.handle();
        handle.enroll(request(7)).await.unwrap();
        wait_for(&handle, "host-7", "available", settled(S::Available)).await;
        handle
            .apply("host-7", Intent::Provision { image: image() })
            .await
            .unwrap();
        wait_for(&handle, "host-7", "provisioned", settled(S::Provisioned)).await;
        engine.shutdown().await.unwrap();
    }
    // The store is gone (a new state directory); the machine still runs its image.
    let second = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(second.path()), lab.drivers())
        .await
        .unwrap();
    let handle = engine.handle();
    let mut again = request(7);
    again.adopt = Some(Adoption {
        image: Some(image()),
    });
    handle.enroll(again).await.unwrap();
    let view = wait_for(&handle, "host-7", "adopted", settled(S::Provisioned)).await;
    assert_eq!(view.status.image.as_ref().unwrap().url, image().url);
    assert!(view.status.adopted);
    let steps: Vec<String> = handle
        .timeline("host-7", 0, 1000)
        .await
        .unwrap()
        .iter()
        .filter_map(|entry| match &entry.event {
            crate::lifecycle::TimelineEvent::StepSucceeded { step, .. } => {
                Some(format!("{step:?}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        ["ValidateBmc", "AdoptBoot"],
        "adoption touched more than it should"
    );
    let machine = lab.machine("m7").unwrap();
    assert_eq!(machine.disk.as_deref(), Some(image().url.as_str()));
    assert!(machine.powered_on);
    engine.shutdown().await.unwrap();
}
