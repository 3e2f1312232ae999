//! Chaos: `rivet serve` is killed with SIGKILL at random moments while 100 simulated hosts
//! enrol and provision. After each restart every host resumes from its last committed
//! step; in the end all of them are provisioned, none is lost, and no step whose completion
//! was committed ran again.
//!
//! The simulated machines journal what happens to them and replay it at start-up, so they
//! "keep running" across the daemon's deaths as real hardware would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Daemon, journal, settled, sim_host, wait_for};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rivet_engine::client::{Client, ClientError};
use rivet_engine::lifecycle::{Activity, ImageSpec, ProvisioningState as S, StepPhase};
use rivet_engine::runtime::ListQuery;
use rivet_engine::sim::Record;
use serde_json::json;

const HOSTS: u16 = 100;
const KILLS: u32 = 6;
const IMAGE: &str = "http://images.invalid/chaos.qcow2";

/// Retries a request while the daemon is down; `409 exists` means an earlier attempt got
/// through before the daemon died.
async fn insist<T, F, Fut>(what: &str, call: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for _ in 0..600 {
        match call().await {
            Ok(value) => return Some(value),
            Err(ClientError::Api { code, .. }) if code == "exists" => return None,
            Err(ClientError::Api {
                status, message, ..
            }) => panic!("{what}: HTTP {status}: {message}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{what}: the daemon never came back");
}

/// Whether some host has a step in flight — dispatched, not waiting for the agent or a
/// retry (waiting a few seconds for one); `false` once every host is done.
async fn steps_in_flight(client: &Client) -> bool {
    for _ in 0..100 {
        if let Ok(hosts) = client.list_all(ListQuery::default()).await {
            let in_flight = |view: &rivet_engine::runtime::HostView| {
                matches!(
                    &view.status.activity,
                    Activity::Running(progress) if progress.phase == StepPhase::InFlight
                )
            };
            if hosts.iter().any(in_flight) {
                return true;
            }
            let done = hosts.len() == usize::from(HOSTS)
                && hosts.iter().all(|view| view.status.state == S::Provisioned);
            if done {
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_host_and_redoes_no_committed_step() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("chaos seed {seed} (CHAOS_SEED={seed} replays the kill times)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let config = "[engine]\nprovisioning_limit = 20\nbackoff_base_ms = 100\nbackoff_max_ms = 500\n\
         agent_timeout_secs = 10\npower_poll_interval_ms = 10\npower_sync_interval_secs = 0\n\
         [drivers]\nkind = \"simulated\"\n\
         [drivers.simulated]\nbmc_latency_ms = 10\nboot_latency_ms = 100\nagent_latency_ms = 300\n\
         journal = \"state/sim.log\"\n";
    let mut daemon = Daemon::start("chaos", config);
    let url = daemon.url();
    let state_dir = daemon.state_dir();
    let client = daemon.client();

    // Hosts enrol and ask for their image at once, ten at a time, retrying through the kills.
    let workload = {
        let client = client.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..HOSTS)
                .for_each_concurrent(10, |n| {
                    let client = client.clone();
                    async move {
                        let name = format!("chaos-{n:03}");
                        let request = sim_host(&name, n, "pw");
                        insist(&name, || client.enroll(&request)).await;
                        let image = ImageSpec {
                            url: IMAGE.into(),
                            checksum: None,
                            checksum_type: None,
                            format: None,
                        };
                        let body = json!({"image": image});
                        insist(&name, || client.action(&name, "provision", Some(&body))).await;
                    }
                })
                .await;
        })
    };
    let mut kills = 0;
    for _ in 0..KILLS {
        let pause = rng.random_range(80..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // Kill while steps are in flight, so that every kill lands mid-operation.
        if !steps_in_flight(&client).await {
            break;
        }
        kills += 1;
        eprintln!("kill {kills} after {pause} ms");
        daemon.kill_and_restart();
    }
    workload.await.unwrap();
    assert!(
        kills >= 3,
        "only {kills} kills landed while work was in flight"
    );

    // Everyone gets there.
    let client = Client::new(
        &url,
        &std::fs::read_to_string(state_dir.join("api-token")).unwrap(),
        Some(&state_dir.join("tls/ca.pem")),
    )
    .unwrap();
    for n in 0..HOSTS {
        let name = format!("chaos-{n:03}");
        let view = wait_for(
            &client,
            &name,
            "provisioned",
            Duration::from_secs(180),
            settled(S::Provisioned),
        )
        .await;
        assert!(
            view.status.error.is_none(),
            "{name}: {:?}",
            view.status.error
        );
        assert_eq!(
            view.status.image.as_ref().map(|i| i.url.as_str()),
            Some(IMAGE)
        );
    }
    let hosts = client.list_all(ListQuery::default()).await.unwrap();
    assert_eq!(
        hosts.len(),
        usize::from(HOSTS),
        "hosts were lost or duplicated"
    );
    assert_eq!(daemon.starts, kills + 1);

    // Timelines have no holes: every committed entry survived. And the kills did land in
    // the middle of operations: some steps were picked up again after a restart.
    let mut resumed = 0;
    for view in &hosts {
        let entries = client.timeline(&view.name, 0).await.unwrap().entries;
        assert!(!entries.is_empty());
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, index as u64 + 1, "{}: timeline hole", view.name);
        }
        resumed += entries
            .iter()
            .filter(|e| serde_json::to_value(e).unwrap()["type"] == "resumed")
            .count();
    }
    eprintln!("{resumed} steps were resumed after a restart");
    assert!(
        resumed > 0,
        "no kill hit a step in flight; the test proved nothing"
    );

    // What the machines saw: inspect, clean, deploy, boot-from-disk, in that order. A step
    // in flight at a kill may run again (steps are idempotent) but never a step after a
    // later one began — that would mean a committed completion was forgotten.
    let mut sequences: HashMap<String, Vec<u8>> = HashMap::new();
    for record in journal(&state_dir) {
        let (machine, rank) = match record {
            Record::Inspect { m } => (m, 1),
            Record::Clean { m } => (m, 2),
            Record::Deploy { m } => (m, 3),
            Record::Persistent { m, .. } => (m, 4),
            _ => continue,
        };
        sequences.entry(machine).or_default().push(rank);
    }
    assert_eq!(sequences.len(), usize::from(HOSTS));
    for (machine, ranks) in &sequences {
        assert!(
            ranks.windows(2).all(|w| w[0] <= w[1]),
            "{machine} went back: {ranks:?}"
        );
        let deploys = ranks.iter().filter(|&&rank| rank == 3).count();
        assert!(deploys >= 1, "{machine} was never written");
        assert!(
            deploys <= 1 + kills as usize,
            "{machine} was written {deploys} times"
        );
    }
    for view in &hosts {
        let machine = client.machine(&view.name).await.unwrap();
        assert_eq!(machine.disk.as_deref(), Some(IMAGE), "{}", view.name);
        assert!(machine.powered_on);
    }
}
