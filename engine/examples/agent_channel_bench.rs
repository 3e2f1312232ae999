//! Agent-channel round trips on loopback: N `inspect` commands sent by the engine's
//! `AgentChannel` to the real `rivet-agent` client over one TLS WebSocket, against the
//! same number of request/response exchanges done the request-per-command way (a fresh
//! HTTPS connection per exchange, as an agent API called per command or a polling agent
//! pays), served by the same TLS listener. Prints one JSON object.
//!
//! `cargo run --release -p rivet-engine --example agent_channel_bench -- [N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rivet_agent::channel::protocol::{CleanPolicy, DeployJob};
use rivet_agent::channel::{
    ChannelParams, Client, ClientConfig, JobError, JobHandler, ProgressReporter,
};
use rivet_bmc::Credentials;
use rivet_engine::api::{self, TlsMaterial};
use rivet_engine::drivers::agent_channel::{AgentChannel, ChannelSettings};
use rivet_engine::drivers::{
    AgentDriver, AgentIdentity, AgentRegistry, AgentRejected, AgentToken, BmcTarget, HostTarget,
};
use rivet_engine::lifecycle::{BootMethod, BootMode, HostId, MacAddr};
use rivet_model::HardwareDetails;

/// Admits every agent as one host: the benchmark measures the channel, not the lookup.
struct OneHost(HostId);

#[async_trait]
impl AgentRegistry for OneHost {
    async fn connected(&self, _: AgentIdentity, _: AgentToken) -> Result<HostId, AgentRejected> {
        Ok(self.0)
    }
    async fn disconnected(&self, _: HostId) {}
}

struct Immediate;

#[async_trait]
impl JobHandler for Immediate {
    async fn inspect(&self) -> Result<HardwareDetails, JobError> {
        Ok(HardwareDetails::default())
    }
    async fn clean(&self, _: &CleanPolicy, _: ProgressReporter) -> Result<(), JobError> {
        Ok(())
    }
    async fn deploy(&self, _: &DeployJob, _: ProgressReporter) -> Result<(), JobError> {
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |arg| arg.parse().expect("N is a number"));
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsMaterial::issue(dir.path(), &["localhost".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_id = HostId::from_random([9; 16]);
    let channel = AgentChannel::new(ChannelSettings::default());
    channel.attach(Arc::new(OneHost(host_id)));
    let router = channel
        .router()
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(api::serve(listener, tls.server.clone(), router));

    let url = format!("https://localhost:{port}");
    let params = ChannelParams::new(&url, &tls.fingerprint, "benchmark-token", None).unwrap();
    let client = Client::new(ClientConfig::new(params, vec!["52:54:00:00:00:09".into()])).unwrap();
    tokio::spawn(async move { client.run(Arc::new(Immediate)).await });
    while channel.connected_hosts().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let host = HostTarget {
        id: host_id,
        name: Arc::from("bench"),
        boot_mac: Some(MacAddr::new([0x52, 0x54, 0, 0, 0, 9])),
        boot_method: BootMethod::NetworkBoot,
        boot_mode: BootMode::Uefi,
        bmc: BmcTarget {
            address: "ipmi://127.0.0.1".into(),
            credentials: Credentials::new("u", "p"),
            verify_tls: true,
        },
    };

    let mut channel_times = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let one = Instant::now();
        channel.inspect(&host).await.unwrap();
        channel_times.push(one.elapsed());
    }
    let channel_total = started.elapsed();

    let ca = reqwest::Certificate::from_pem(tls.trust_pem.as_bytes()).unwrap();
    // A new TCP connection and TLS handshake per exchange (no pooling), and the same
    // exchange over one kept-alive HTTP/1.1 connection.
    let fresh = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .pool_max_idle_per_host(0)
        .http1_only()
        .build()
        .unwrap();
    let kept = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .unwrap();
    let healthz = format!("{url}/healthz");
    let (fresh_times, fresh_total) = exchanges(&fresh, &healthz, n.min(2_000)).await;
    let (kept_times, kept_total) = exchanges(&kept, &healthz, n).await;
    channel_times.sort();
    let rate = |count: usize, total: Duration| count as f64 / total.as_secs_f64();
    let channel_rate = rate(n, channel_total);
    let fresh_rate = rate(fresh_times.len(), fresh_total);
    let kept_rate = rate(kept_times.len(), kept_total);
    let summary = |times: &[Duration], per_s: f64| {
        serde_json::json!({
            "count": times.len(),
            "per_s": per_s.round(),
            "p50_us": percentile(times, 0.5).round(),
            "p99_us": percentile(times, 0.99).round(),
        })
    };
    let ratio = |other: f64| (channel_rate / other * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "channel_inspect": summary(&channel_times, channel_rate),
            "https_new_connection": summary(&fresh_times, fresh_rate),
            "https_kept_alive": summary(&kept_times, kept_rate),
            "ratio_vs_new_connection": ratio(fresh_rate),
            "ratio_vs_kept_alive": ratio(kept_rate),
        })
    );
}

/// `count` sequential GETs of `url`; sorted latencies and the total time.
async fn exchanges(http: &reqwest::Client, url: &str, count: usize) -> (Vec<Duration>, Duration) {
    let mut times = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let one = Instant::now();
        let body = http.get(url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "ok");
        times.push(one.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    (times, total)
}
