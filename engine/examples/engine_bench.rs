//! Control-plane load generator behind `scripts/bench/engine.sh`.
//!
//! Drives N hosts through enroll → available → provisioned → deprovisioned → deleted,
//! against Rivet's REST API (simulated drivers) or against Ironic's (fake-hardware), with the
//! same client and the same concurrency, and writes the phase timings, per-host latencies
//! and the server's peak RSS as JSON. `report` turns those files into a Markdown table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use rivet_engine::client::Client;
use rivet_engine::lifecycle::{ImageSpec, MacAddr, ProvisioningState, Timestamp};
use rivet_engine::runtime::{BmcAccess, EnrollRequest, ListQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the workload against `rivet serve`.
    Rivet {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long)]
        ca_file: PathBuf,
        #[command(flatten)]
        load: Load,
    },
    /// Run the workload against Ironic's API (noauth, fake-hardware).
    Ironic {
        #[arg(long, default_value = "http://127.0.0.1:6385")]
        url: String,
        #[command(flatten)]
        load: Load,
    },
    /// Write the Markdown report from result files.
    Report {
        /// Result files (JSON), any order.
        files: Vec<PathBuf>,
        /// A note on the machine, printed in the report.
        #[arg(long, default_value = "")]
        machine: String,
    },
}

#[derive(Debug, clap::Args)]
struct Load {
    #[arg(long)]
    hosts: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// The server's process id, to read its peak RSS (with its children's).
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhaseResult {
    name: String,
    /// Until every request of the phase was answered.
    request_seconds: f64,
    /// Until every host reached the phase's target state.
    seconds: f64,
    hosts_per_second: f64,
    /// Per host: from its request to the server's timestamp of reaching the target.
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunResult {
    tool: String,
    hosts: usize,
    concurrency: usize,
    phases: Vec<PhaseResult>,
    total_seconds: f64,
    peak_rss_mib: Option<f64>,
    /// Rivet only: p99 bound of step durations by step, and over all steps (ms).
    step_p99_ms: BTreeMap<String, f64>,
    retries: usize,
    /// `/proc/loadavg`'s 1-minute figure when the run started: the machine is shared.
    #[serde(default)]
    load_average: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn now_ms() -> u64 {
    Timestamp::now().as_millis()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn phase(
    name: &str,
    hosts: usize,
    requests: Duration,
    total: Duration,
    mut latencies: Vec<f64>,
) -> PhaseResult {
    latencies.sort_by(f64::total_cmp);
    let seconds = total.as_secs_f64();
    PhaseResult {
        name: name.to_owned(),
        request_seconds: requests.as_secs_f64(),
        seconds,
        hosts_per_second: hosts as f64 / seconds.max(1e-9),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// Peak RSS (VmHWM) of `pid` and every process below it, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let mut pids = vec![pid];
    let mut index = 0;
    while index < pids.len() {
        let parent = pids[index];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                // The parent pid is the second field after the command's closing parenthesis.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                if ppid == Some(parent) && !pids.contains(&child) {
                    pids.push(child);
                }
            }
        }
        index += 1;
    }
    let kib: u64 = pids
        .iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    (kib > 0).then(|| kib as f64 / 1024.0)
}

fn mac(i: usize) -> MacAddr {
    let [_, a, b, c] = u32::try_from(i).unwrap_or(0).to_be_bytes();
    MacAddr::new([0x52, 0x54, 0x01, a, b, c])
}

fn name(i: usize) -> String {
    format!("bench-{i:05}")
}

// ------------------------------------------------------------------ Rivet

async fn rivet(client: Client, load: &Load) -> anyhow::Result<RunResult> {
    let n = load.hosts;
    let load_at_start = load_average();
    let started = Instant::now();
    let mut phases = Vec::new();

    // Enrol: the engine registers, inspects and prepares every host itself.
    let phase_start = Instant::now();
    let (requests, sent) = timed_requests(n, load.concurrency, |i| {
        let client = client.clone();
        async move {
            let request = EnrollRequest::new(
                name(i),
                Some(BmcAccess {
                    address: format!("sim://{}", name(i)),
                    username: "admin".into(),
                    password: "bench".into(),
                    disable_certificate_verification: false,
                }),
                Some(mac(i)),
            );
            client
                .enroll(&request)
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        }
    })
    .await?;
    rivet_wait(&client, Some(ProvisioningState::Available), n).await?;
    let total = phase_start.elapsed();
    phases.push(phase(
        "enroll → available",
        n,
        requests,
        total,
        rivet_latencies(&client, &sent).await?,
    ));

    let image = json!({"image": ImageSpec { url: "http://images.invalid/bench.qcow2".into(), checksum: None, checksum_type: None, format: None }});
    for (label, action, target) in [
        (
            "provision",
            "provision",
            Some(ProvisioningState::Provisioned),
        ),
        (
            "deprovision",
            "deprovision",
            Some(ProvisioningState::Available),
        ),
        ("delete", "delete", None),
    ] {
        let phase_start = Instant::now();
        let (requests, sent) = timed_requests(n, load.concurrency, |i| {
            let client = client.clone();
            let image = image.clone();
            async move {
                let result = match action {
                    "delete" => client.delete(&name(i)).await,
                    "provision" => client.action(&name(i), action, Some(&image)).await,
                    _ => client.action(&name(i), action, None).await,
                };
                result.map(drop).map_err(anyhow::Error::from)
            }
        })
        .await?;
        rivet_wait(&client, target, n).await?;
        let total = phase_start.elapsed();
        let latencies = match target {
            Some(_) => rivet_latencies(&client, &sent).await?,
            None => Vec::new(),
        };
        phases.push(phase(label, n, requests, total, latencies));
    }
    let metrics = client.metrics().await?;
    Ok(RunResult {
        tool: "rivet".into(),
        hosts: n,
        concurrency: load.concurrency,
        total_seconds: started.elapsed().as_secs_f64(),
        phases,
        peak_rss_mib: load.pid.and_then(peak_rss_mib),
        step_p99_ms: step_p99(&metrics),
        retries: 0,
        load_average: load_at_start,
    })
}

/// Sends request `i` for every host with `concurrency` in flight; returns how long that
/// took and when each host's request was sent (ms since the epoch).
async fn timed_requests<F, Fut>(
    n: usize,
    concurrency: usize,
    request: F,
) -> anyhow::Result<(Duration, Vec<u64>)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut sent = vec![0u64; n];
    let results: Vec<(usize, u64)> = futures::stream::iter(0..n)
        .map(|i| {
            let call = request(i);
            async move {
                let at = now_ms();
                call.await.with_context(|| format!("host {i}"))?;
                Ok::<_, anyhow::Error>((i, at))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    for (i, at) in results {
        sent[i] = at;
    }
    Ok((started.elapsed(), sent))
}

/// Polls the summary until all `n` hosts are in `target` (or gone, for `None`).
async fn rivet_wait(
    client: &Client,
    target: Option<ProvisioningState>,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let summary = client.summary().await?;
        let done = match target {
            Some(state) => {
                summary.by_state.get(&state).copied().unwrap_or(0) == n && summary.total == n
            }
            None => summary.total == 0,
        };
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("hosts never got to {target:?}: {summary:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rivet_latencies(client: &Client, sent: &[u64]) -> anyhow::Result<Vec<f64>> {
    let hosts = client.list_all(ListQuery::default()).await?;
    Ok(hosts
        .iter()
        .filter_map(|view| {
            let i: usize = view.name.strip_prefix("bench-")?.parse().ok()?;
            let done = view.status.last_updated.as_millis();
            Some(done.saturating_sub(*sent.get(i)?) as f64)
        })
        .collect())
}

/// p99 bounds from `rivet_step_duration_seconds` buckets, per step and over all steps.
fn step_p99(metrics: &str) -> BTreeMap<String, f64> {
    let mut per_step: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("rivet_step_duration_seconds_bucket{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let step = labels
            .split("step=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        let le = labels
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let count: u64 = value.parse().unwrap_or(0);
        per_step
            .entry(step.to_owned())
            .or_default()
            .push((bound, count));
    }
    let p99 = |buckets: &[(f64, u64)]| -> Option<f64> {
        let total = buckets.last()?.1;
        let rank = ((total as f64) * 0.99).ceil() as u64;
        buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank.max(1))
            .map(|(bound, _)| bound * 1000.0)
    };
    let mut all: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (step, buckets) in &per_step {
        if let Some(bound) = p99(buckets) {
            out.insert(step.clone(), bound);
        }
        for (index, (bound, count)) in buckets.iter().enumerate() {
            let entry = all.entry(index as u64).or_insert((*bound, 0));
            entry.1 += count;
        }
    }
    let combined: Vec<(f64, u64)> = all.into_values().collect();
    if let Some(bound) = p99(&combined) {
        out.insert("all steps".into(), bound);
    }
    out
}

// ------------------------------------------------------------------ Ironic

/// Whether a node is where a phase wants it: (provision state, inspected).
type Settled = fn(&str, bool) -> bool;

/// What the benchmark reads of an Ironic node.
#[derive(Debug, Clone)]
struct Node {
    uuid: String,
    state: String,
    /// `provision_updated_at`, ms since the epoch.
    updated: Option<u64>,
    inspected: bool,
}

#[derive(Debug, Clone)]
struct Ironic {
    http: reqwest::Client,
    url: String,
    retries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Ironic {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        for _ in 0..200 {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .header("X-OpenStack-Ironic-API-Version", "latest");
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(_) => {
                    // Ironic's embedded server resets connections beyond ~10 clients.
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::CONFLICT
                || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            {
                // NodeLocked: the conductor still holds the node; clients retry.
                self.retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if !status.is_success() {
                bail!("{method} {path}: HTTP {status}: {text}");
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        bail!("{method} {path}: gave up after 200 attempts")
    }

    /// Every node.
    async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        let mut nodes = Vec::new();
        let mut path = "/v1/nodes?fields=uuid,name,provision_state,provision_updated_at,inspection_finished_at&limit=1000".to_owned();
        loop {
            let page = self.call(reqwest::Method::GET, &path, None).await?;
            for node in page["nodes"].as_array().into_iter().flatten() {
                let text = |key: &str| node[key].as_str().unwrap_or_default().to_owned();
                nodes.push(Node {
                    uuid: text("uuid"),
                    state: text("provision_state"),
                    updated: node["provision_updated_at"]
                        .as_str()
                        .and_then(parse_ironic_time),
                    inspected: !node["inspection_finished_at"].is_null(),
                });
            }
            match page["next"].as_str() {
                Some(next) => {
                    path = next
                        .split_once("/v1/")
                        .map(|(_, rest)| format!("/v1/{rest}"))
                        .unwrap_or_default()
                }
                None => return Ok(nodes),
            }
        }
    }

    async fn wait(&self, n: usize, done: Settled) -> anyhow::Result<Vec<Node>> {
        let deadline = Instant::now() + Duration::from_secs(7200);
        loop {
            let nodes = self.nodes().await?;
            if nodes.len() == n && nodes.iter().all(|node| done(&node.state, node.inspected)) {
                return Ok(nodes);
            }
            if n == 0 && nodes.is_empty() {
                return Ok(nodes);
            }
            if Instant::now() > deadline {
                bail!("Ironic nodes never settled");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `2026-11-25T02:23:55.499123+00:00` (Ironic) → ms since the epoch.
fn parse_ironic_time(text: &str) -> Option<u64> {
    let utc = text
        .strip_suffix("+00:00")
        .map(|t| format!("{t}Z"))
        .unwrap_or_else(|| text.to_owned());
    Timestamp::parse_rfc3339(&utc).map(Timestamp::as_millis)
}

async fn ironic(url: &str, load: &Load) -> anyhow::Result<RunResult> {
    let load_at_start = load_average();
    let ironic = Ironic {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(load.concurrency)
            .build()?,
        url: url.trim_end_matches('/').to_owned(),
        retries: Default::default(),
    };
    let n = load.hosts;
    let started = Instant::now();
    let mut phases = Vec::new();
    let uuids: std::sync::Arc<std::sync::Mutex<Vec<String>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![String::new(); n]));

    // Enrol → available, the way BMO drives Ironic: create + port, manage, inspect, provide.
    let composite_start = Instant::now();
    let (requests, first_sent) = timed_requests(n, load.concurrency, |i| {
        let ironic = ironic.clone();
        let uuids = uuids.clone();
        async move {
            let node = ironic
                .call(reqwest::Method::POST, "/v1/nodes", Some(json!({"name": name(i), "driver": "fake-hardware", "inspect_interface": "fake"})))
                .await?;
            let uuid = node["uuid"].as_str().context("no uuid")?.to_owned();
            ironic.call(reqwest::Method::POST, "/v1/ports", Some(json!({"node_uuid": uuid, "address": mac(i).to_string()}))).await?;
            if let Ok(mut uuids) = uuids.lock() {
                uuids[i] = uuid;
            }
            Ok(())
        }
    })
    .await?;
    phases.push(phase(
        "ironic: create node + port",
        n,
        requests,
        composite_start.elapsed(),
        Vec::new(),
    ));
    let uuids: Vec<String> = uuids.lock().map(|u| u.clone()).unwrap_or_default();
    let index: BTreeMap<String, usize> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), i))
        .collect();

    let steps: [(&str, &str, Settled); 3] = [
        ("ironic: manage", "manage", |state, _| state == "manageable"),
        ("ironic: inspect", "inspect", |state, inspected| {
            state == "manageable" && inspected
        }),
        ("ironic: provide", "provide", |state, _| {
            state == "available"
        }),
    ];
    let mut last_nodes = Vec::new();
    for (label, target, done) in steps {
        let phase_start = Instant::now();
        let (requests, _) = timed_requests(n, load.concurrency, |i| {
            let ironic = ironic.clone();
            let path = format!("/v1/nodes/{}/states/provision", uuids[i]);
            async move {
                ironic
                    .call(reqwest::Method::PUT, &path, Some(json!({"target": target})))
                    .await
                    .map(drop)
            }
        })
        .await?;
        last_nodes = ironic.wait(n, done).await?;
        phases.push(phase(label, n, requests, phase_start.elapsed(), Vec::new()));
    }
    let latencies = ironic_latencies(&last_nodes, &index, &first_sent);
    phases.push(phase(
        "enroll → available",
        n,
        Duration::ZERO,
        composite_start.elapsed(),
        latencies,
    ));

    let deploy: [(&str, &str, Settled); 2] = [
        ("provision", "active", |state, _| state == "active"),
        ("deprovision", "deleted", |state, _| state == "available"),
    ];
    for (label, target, done) in deploy {
        let phase_start = Instant::now();
        let (requests, sent) = timed_requests(n, load.concurrency, |i| {
            let ironic = ironic.clone();
            let path = format!("/v1/nodes/{}/states/provision", uuids[i]);
            async move {
                ironic
                    .call(reqwest::Method::PUT, &path, Some(json!({"target": target})))
                    .await
                    .map(drop)
            }
        })
        .await?;
        let nodes = ironic.wait(n, done).await?;
        phases.push(phase(
            label,
            n,
            requests,
            phase_start.elapsed(),
            ironic_latencies(&nodes, &index, &sent),
        ));
    }
    let phase_start = Instant::now();
    let (requests, _) = timed_requests(n, load.concurrency, |i| {
        let ironic = ironic.clone();
        let path = format!("/v1/nodes/{}", uuids[i]);
        async move {
            ironic
                .call(reqwest::Method::DELETE, &path, None)
                .await
                .map(drop)
        }
    })
    .await?;
    ironic.wait(0, |_, _| false).await?;
    phases.push(phase(
        "delete",
        n,
        requests,
        phase_start.elapsed(),
        Vec::new(),
    ));
    Ok(RunResult {
        tool: "ironic".into(),
        hosts: n,
        concurrency: load.concurrency,
        total_seconds: started.elapsed().as_secs_f64(),
        phases,
        peak_rss_mib: load.pid.and_then(peak_rss_mib),
        step_p99_ms: BTreeMap::new(),
        retries: ironic.retries.load(std::sync::atomic::Ordering::Relaxed),
        load_average: load_at_start,
    })
}

fn ironic_latencies(nodes: &[Node], index: &BTreeMap<String, usize>, sent: &[u64]) -> Vec<f64> {
    nodes
        .iter()
        .filter_map(|node| {
            let i = *index.get(&node.uuid)?;
            Some(node.updated?.saturating_sub(*sent.get(i)?) as f64)
        })
        .collect()
}

// ------------------------------------------------------------------ report

fn report(files: &[PathBuf], machine: &str) -> anyhow::Result<String> {
    let mut runs: Vec<RunResult> = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        runs.push(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?,
        );
    }
    runs.sort_by_key(|run| (run.hosts, run.tool.clone(), run.concurrency));
    let mut out = String::new();
    out.push_str("# Engine control-plane benchmark\n\n");
    if !machine.is_empty() {
        out.push_str(&format!("Machine: {machine}\n\n"));
    }
    out.push_str("Workload: N hosts through enroll → available (register, inspect, prepare) → provisioned → deprovisioned → deleted, through the REST API, with the same load generator and C requests in flight for both tools. Rivet runs its simulated drivers with zero latency; Ironic 39.0.0 runs standalone (SQLite, noauth, `rpc_transport = none`) with `fake-hardware`, zero fake delays and automated cleaning off, driven the way BMO drives it (create + port, manage, inspect, provide; active; deleted; delete). hosts/s = N ÷ the time until every host reached the phase's target state. p99 = per host, from its request to the server's own timestamp of reaching the target.\n\n");
    out.push_str("| N | C | tool | phase | hosts/s | seconds | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|\n");
    for run in &runs {
        for phase in &run.phases {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {:.2} | {} | {} |\n",
                run.hosts,
                run.concurrency,
                run.tool,
                phase.name,
                phase.hosts_per_second,
                phase.seconds,
                if phase.p50_ms > 0.0 {
                    format!("{:.0}", phase.p50_ms)
                } else {
                    "–".into()
                },
                if phase.p99_ms > 0.0 {
                    format!("{:.0}", phase.p99_ms)
                } else {
                    "–".into()
                },
            ));
        }
    }
    out.push_str("\n## Ratios (Rivet hosts/s ÷ Ironic hosts/s, same N and C)\n\n| N | C | phase | Rivet hosts/s | Ironic hosts/s | ratio |\n|---|---|---|---|---|---|\n");
    let compared = ["enroll → available", "provision", "deprovision", "delete"];
    for rivet in runs.iter().filter(|run| run.tool == "rivet") {
        let Some(ironic) = runs.iter().find(|run| {
            run.tool == "ironic" && run.hosts == rivet.hosts && run.concurrency == rivet.concurrency
        }) else {
            continue;
        };
        for name in compared {
            let find = |run: &RunResult| {
                run.phases
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.hosts_per_second)
            };
            if let (Some(r), Some(i)) = (find(rivet), find(ironic)) {
                out.push_str(&format!(
                    "| {} | {} | {name} | {r:.0} | {i:.1} | **{:.0}×** |\n",
                    rivet.hosts,
                    rivet.concurrency,
                    r / i
                ));
            }
        }
        out.push_str(&format!(
            "| {} | {} | whole workload | {:.0} | {:.1} | **{:.0}×** |\n",
            rivet.hosts,
            rivet.concurrency,
            rivet.hosts as f64 / rivet.total_seconds,
            ironic.hosts as f64 / ironic.total_seconds,
            ironic.total_seconds / rivet.total_seconds
        ));
    }
    out.push_str("\n## Totals, peak RSS and step latency\n\n| N | C | tool | total seconds | peak RSS MiB | p99 step latency (all steps) | retries | load average at start |\n|---|---|---|---|---|---|---|---|\n");
    for run in &runs {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {:.1} |\n",
            run.hosts,
            run.concurrency,
            run.tool,
            run.total_seconds,
            run.peak_rss_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "–".into()),
            run.step_p99_ms
                .get("all steps")
                .map(|ms| format!("≤ {ms} ms"))
                .unwrap_or_else(|| "–".into()),
            run.retries,
            run.load_average,
        ));
    }
    if let Some(largest) = runs
        .iter()
        .filter(|run| run.tool == "rivet")
        .max_by_key(|run| (run.hosts, run.concurrency))
    {
        out.push_str(&format!("\nRivet p99 step latency by step at N = {}, C = {} (upper bound of the histogram bucket):\n\n| step | p99 ≤ ms |\n|---|---|\n", largest.hosts, largest.concurrency));
        for (step, ms) in &largest.step_p99_ms {
            out.push_str(&format!("| {step} | {ms} |\n"));
        }
    }
    Ok(out)
}

fn write(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(result)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Rivet {
            url,
            token_file,
            ca_file,
            load,
        } => {
            let token = std::fs::read_to_string(&token_file)
                .with_context(|| format!("reading {}", token_file.display()))?;
            let client = Client::new(&url, &token, Some(&ca_file))?;
            let result = rivet(client, &load).await?;
            write(&load.out, &result)?;
        }
        Command::Ironic { url, load } => {
            let result = ironic(&url, &load).await?;
            write(&load.out, &result)?;
        }
        Command::Report { files, machine } => print!("{}", report(&files, &machine)?),
    }
    Ok(())
}
