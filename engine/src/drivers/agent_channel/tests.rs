//! The agent channel end to end: the in-process engine (simulated BMC, the simulated boot
//! service wrapped to capture the tokens it is handed) with the real `rivet-agent` client
//! over real TLS on loopback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rivet_agent::channel::protocol::{CleanPolicy, DeployJob, FailureKind};
use rivet_agent::channel::{
    ChannelParams, Client, ClientConfig, ConnectError, JobError, JobHandler, ProgressReporter,
};
use rivet_model::{Cpu, HardwareDetails};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::*;
use crate::Engine;
use crate::api::{self, ApiToken, AppState, TlsMaterial};
use crate::drivers::{AgentToken, BmcTarget, BootEntry, BootService, Drivers};
use crate::lifecycle::{
    BootMethod, BootMode, BootObservations, DetachSpec, ImageSpec, Intent, MacAddr,
    OperationalStatus, ProvisioningState as S, Timestamp,
};
use crate::runtime::testkit::{settled, wait_for};
use crate::runtime::{BmcAccess, EngineConfig, EngineHandle, EnrollRequest, HostEventKind};
use crate::sim::{SimConfig, SimLab};

// ---------------------------------------------------------------- the rig

/// The simulated boot service, recording the agent tokens the engine hands out — the
/// tokens a real agent would find on its kernel command line.
#[derive(Debug)]
struct TokenTap {
    inner: Arc<dyn BootService>,
    tokens: Mutex<HashMap<MacAddr, AgentToken>>,
}

#[async_trait]
impl BootService for TokenTap {
    async fn set_entry(&self, mac: MacAddr, entry: BootEntry) -> Result<(), DriverError> {
        if let BootEntry::Agent { token, .. } = &entry {
            self.tokens.lock().unwrap().insert(mac, token.clone());
        }
        self.inner.set_entry(mac, entry).await
    }
    async fn remove(&self, mac: MacAddr) -> Result<(), DriverError> {
        self.inner.remove(mac).await
    }
    async fn agent_iso(
        &self,
        host: &HostTarget,
        token: &AgentToken,
    ) -> Result<String, DriverError> {
        self.inner.agent_iso(host, token).await
    }
    fn uefi_http_url(&self, host: &HostTarget) -> String {
        self.inner.uefi_http_url(host)
    }
    fn observations(
        &self,
        host: HostId,
        mac: Option<MacAddr>,
        since: Timestamp,
    ) -> BootObservations {
        self.inner.observations(host, mac, since)
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    engine: Option<Engine>,
    handle: EngineHandle,
    channel: AgentChannel,
    tap: Arc<TokenTap>,
    tls: TlsMaterial,
    url: String,
    server: JoinHandle<()>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const MAC: MacAddr = MacAddr::new([0x52, 0x54, 0, 0xc4, 0, 1]);

fn settings() -> ChannelSettings {
    ChannelSettings {
        keepalive_secs: 1,
        reconnect_grace_secs: 2,
        ..ChannelSettings::default()
    }
}

async fn rig(settings: ChannelSettings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let lab = SimLab::new(SimConfig {
        bmc_latency_ms: 0,
        boot_latency_ms: 0,
        agent_latency_ms: 0,
        ..SimConfig::default()
    })
    .unwrap();
    let sim = lab.drivers();
    let tap = Arc::new(TokenTap {
        inner: sim.boot.clone(),
        tokens: Mutex::default(),
    });
    let channel = AgentChannel::new(settings);
    let drivers = Drivers {
        bmc: sim.bmc,
        boot: tap.clone(),
        agent: Arc::new(channel.clone()),
    };
    let mut config = EngineConfig::new(dir.path());
    config.power_poll_interval = Duration::from_millis(5);
    config.power_sync_interval = Duration::ZERO;
    config.policy.agent_timeout = Duration::from_secs(60);
    config.policy.backoff = crate::lifecycle::Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    let engine = Engine::open(config, drivers).await.unwrap();
    let handle = engine.handle();
    let tls = TlsMaterial::issue(&dir.path().join("tls"), &["localhost".into()]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    // The channel rides on the API's own listener and router.
    let state = AppState {
        engine: handle.clone(),
        sim: None,
    };
    let router = api::router(state, ApiToken::new("api-token-for-tests")).merge(channel.router());
    let server = tokio::spawn(api::serve(listener, tls.server.clone(), router));
    Rig {
        _dir: dir,
        engine: Some(engine),
        handle,
        channel,
        tap,
        tls,
        url,
        server,
    }
}

impl Rig {
    async fn enroll(&self, name: &str) {
        let bmc = BmcAccess {
            address: format!("sim://{name}"),
            username: "admin".into(),
            password: "secret".into(),
            disable_certificate_verification: false,
        };
        self.handle
            .enroll(EnrollRequest::new(name, Some(bmc), Some(MAC)))
            .await
            .unwrap();
    }

    /// The token the boot service was handed for the agent of [`MAC`].
    async fn token(&self) -> String {
        for _ in 0..2000 {
            if let Some(token) = self.tap.tokens.lock().unwrap().get(&MAC) {
                return token.expose().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the engine never configured an agent boot");
    }

    fn client(&self, url: &str, fingerprint: &str, token: &str) -> Client {
        let params = ChannelParams::new(url, fingerprint, token, None).unwrap();
        let mut config = ClientConfig::new(params, vec![MAC.to_string()]);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(200);
        config.idle_timeout = Duration::from_secs(5);
        Client::new(config).unwrap()
    }

    /// Runs the real client with `agent` behind it until the engine releases it.
    fn run_agent(&self, url: &str, token: &str, agent: &Arc<TestAgent>) -> JoinHandle<()> {
        let client = self.client(url, &self.tls.fingerprint, token);
        let agent = agent.clone();
        tokio::spawn(async move { client.run(agent).await })
    }

    async fn shutdown(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown().await.unwrap();
        }
    }
}

/// A rig with host `name` enrolled and waiting for its agent, and that agent's token.
async fn rig_with_host(name: &str) -> (Rig, String) {
    let rig = rig(settings()).await;
    rig.enroll(name).await;
    let token = rig.token().await;
    (rig, token)
}

// ---------------------------------------------------------------- the agent

/// The caller's side of the agent, recording what it was asked to do.
#[derive(Default)]
struct TestAgent {
    calls: Mutex<Vec<String>>,
    deploys: AtomicUsize,
    /// When set, deploys wait for it (to cut the connection mid-deploy).
    deploy_gate: Option<Arc<Notify>>,
    /// When set, inspections never finish.
    hang_inspect: bool,
    /// Deploys that got past the gate.
    deploys_done: AtomicUsize,
}

fn gate_passed(agent: &TestAgent) -> bool {
    agent.deploys_done.load(Ordering::SeqCst) == 1
}

fn inventory() -> HardwareDetails {
    HardwareDetails {
        hostname: Some("from-the-real-client".into()),
        cpu: Some(Cpu {
            count: Some(96),
            ..Cpu::default()
        }),
        ..HardwareDetails::default()
    }
}

#[async_trait]
impl JobHandler for TestAgent {
    async fn inspect(&self) -> Result<HardwareDetails, JobError> {
        self.calls.lock().unwrap().push("inspect".into());
        if self.hang_inspect {
            std::future::pending::<()>().await;
        }
        Ok(inventory())
    }

    async fn clean(
        &self,
        policy: &CleanPolicy,
        progress: ProgressReporter,
    ) -> Result<(), JobError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("clean {:?}", policy.mode));
        progress.report(Some(50), "wiping signatures");
        progress.report(Some(100), "disks cleaned");
        Ok(())
    }

    async fn deploy(&self, job: &DeployJob, progress: ProgressReporter) -> Result<(), JobError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("deploy {}", job.image.url));
        self.deploys.fetch_add(1, Ordering::SeqCst);
        if job.image.url.contains("missing") {
            return Err(JobError::new(
                FailureKind::Failed,
                "image returned HTTP 404",
            ));
        }
        progress.report(Some(10), "writing the image");
        if let Some(gate) = &self.deploy_gate {
            gate.notified().await;
        }
        progress.report(Some(100), "image written");
        self.deploys_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn image(url: &str) -> ImageSpec {
    ImageSpec {
        url: url.into(),
        checksum: None,
        checksum_type: None,
        format: None,
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn inspect_clean_deploy_and_release_round_trip_with_the_real_client() {
    let (rig, token) = rig_with_host("h1").await;
    let agent = Arc::new(TestAgent::default());
    let running = rig.run_agent(&rig.url, &token, &agent);
    let mut events = rig.handle.subscribe();
    wait_for(&rig.handle, "h1", "available", settled(S::Available)).await;
    let hardware = rig.handle.hardware("h1").await.unwrap().unwrap();
    assert_eq!(
        hardware,
        inventory(),
        "the engine stored the client's inventory"
    );

    rig.handle
        .apply(
            "h1",
            Intent::Provision {
                image: image("https://images.example/os.img"),
            },
        )
        .await
        .unwrap();
    wait_for(&rig.handle, "h1", "provisioned", settled(S::Provisioned)).await;
    assert_eq!(
        *agent.calls.lock().unwrap(),
        vec![
            "inspect",
            "clean Metadata",
            "deploy https://images.example/os.img"
        ],
        "one of each, in order, over one fast-tracked agent session"
    );
    let mut progress = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let HostEventKind::Progress { percent, message } = event.kind {
            progress.push((percent, message));
        }
    }
    for expected in [
        "wiping signatures",
        "disks cleaned",
        "writing the image",
        "image written",
    ] {
        assert!(
            progress.iter().any(|(_, message)| message == expected),
            "progress {expected:?} reached the engine's events: {progress:?}"
        );
    }

    // Detaching ends the agent session: the client is released and stops for good.
    rig.handle
        .apply("h1", Intent::Detach(DetachSpec::default()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the released client stops")
        .unwrap();
    for _ in 0..1000 {
        if rig.channel.connected_hosts().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rig.channel.connected_hosts().is_empty(),
        "the session ended"
    );
    rig.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_or_an_unknown_machine_never_gets_a_websocket_nor_reaches_the_logs() {
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    // The test runs on one thread, so every task the engine and the client spawn logs here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (rig, token) = rig_with_host("h2").await;
    let guess = "not-the-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let wrong = rig.client(&rig.url, &rig.tls.fingerprint, guess);
    assert!(
        matches!(wrong.connect().await, Err(ConnectError::Rejected(401))),
        "a wrong token is refused before the upgrade"
    );
    // The right token from a machine with another MAC address is refused too.
    let params = ChannelParams::new(&rig.url, &rig.tls.fingerprint, &token, None).unwrap();
    let stranger =
        Client::new(ClientConfig::new(params, vec!["52:54:00:ff:ff:ff".into()])).unwrap();
    assert!(matches!(
        stranger.connect().await,
        Err(ConnectError::Rejected(401))
    ));
    let view = rig.handle.get("h2").await.unwrap().unwrap();
    assert!(!view.status.agent.connected);
    assert!(rig.channel.connected_hosts().is_empty());

    // The right agent gets in, then a raw request without a token is refused as well.
    let right = rig.client(&rig.url, &rig.tls.fingerprint, &token);
    let connection = right.connect().await.unwrap();
    assert_eq!(rig.channel.connected_hosts().len(), 1);
    drop(connection);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("refused an agent"),
        "the refusal is logged: {text}"
    );
    for secret in [token.as_str(), guess] {
        assert!(!text.contains(secret), "a token reached the logs");
    }
    rig.shutdown().await;
}

#[tokio::test]
async fn the_client_refuses_an_engine_whose_certificate_is_not_pinned() {
    let (rig, token) = rig_with_host("h3").await;
    // Another engine's CA: a valid certificate authority, just not the pinned one.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = TlsMaterial::issue(elsewhere.path(), &["localhost".into()]).unwrap();
    let zeros = format!("sha256:{}", "00".repeat(32));
    for pin in [other.fingerprint.as_str(), zeros.as_str()] {
        let client = rig.client(&rig.url, pin, &token);
        let err = client.connect().await.unwrap_err();
        assert!(
            matches!(err, ConnectError::UntrustedCertificate(_)),
            "{err}"
        );
    }
    // The pin is checked and then the chain is verified against it: the right pin for the
    // wrong name is refused as well.
    let by_ip = rig.url.replace("localhost", "127.0.0.1");
    let client = rig.client(&by_ip, &rig.tls.fingerprint, &token);
    let err = client.connect().await.unwrap_err();
    assert!(
        matches!(err, ConnectError::UntrustedCertificate(_)),
        "{err}"
    );
    assert!(rig.channel.connected_hosts().is_empty());
    rig.shutdown().await;
}

/// Relays TCP to `upstream` and can cut every relayed connection (a real network fault:
/// both sides see their TCP connection end) and refuse new ones while it is down.
struct Relay {
    port: u16,
    cut: Arc<Notify>,
    down: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(Notify::new());
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let (cut, down) = (cut.clone(), down.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        continue;
                    }
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            () = cut.notified() => {}
                        }
                    });
                }
            }
        });
        Self {
            port,
            cut,
            down,
            task,
        }
    }

    /// Cuts every connection and refuses new ones until [`Relay::up`].
    fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_deploy_that_finishes_while_the_link_is_down_is_reported_once_it_is_back() {
    let (rig, token) = rig_with_host("h4").await;
    let upstream: u16 = rig.url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(upstream).await;
    let gate = Arc::new(Notify::new());
    let agent = Arc::new(TestAgent {
        deploy_gate: Some(gate.clone()),
        ..TestAgent::default()
    });
    let through_relay = format!("https://localhost:{}", relay.port);
    let running = rig.run_agent(&through_relay, &token, &agent);
    wait_for(&rig.handle, "h4", "available", settled(S::Available)).await;
    rig.handle
        .apply(
            "h4",
            Intent::Provision {
                image: image("https://images.example/os.img"),
            },
        )
        .await
        .unwrap();
    for _ in 0..2000 {
        if agent.deploys.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        agent.deploys.load(Ordering::SeqCst),
        1,
        "the deploy started"
    );

    relay.down();
    wait_for(&rig.handle, "h4", "disconnected", |view| {
        !view.status.agent.connected
    })
    .await;
    // The deploy ends while the agent cannot reach the engine…
    gate.notify_one();
    for _ in 0..2000 {
        if gate_passed(&agent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        gate_passed(&agent),
        "the deploy finished while disconnected"
    );
    let still = rig.handle.get("h4").await.unwrap().unwrap();
    assert_eq!(still.status.state, S::Provisioning);
    // …and its result crosses the next connection.
    relay.up();
    wait_for(&rig.handle, "h4", "reconnected", |view| {
        view.status.agent.connected
    })
    .await;
    wait_for(&rig.handle, "h4", "provisioned", settled(S::Provisioned)).await;
    assert_eq!(
        agent.deploys.load(Ordering::SeqCst),
        1,
        "the deploy ran once; its result crossed the new connection"
    );
    running.abort();
    rig.shutdown().await;
}

#[tokio::test]
async fn an_agent_the_engine_forgot_while_it_was_away_stops_instead_of_knocking_forever() {
    let (rig, token) = rig_with_host("h9").await;
    let upstream: u16 = rig.url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(upstream).await;
    let agent = Arc::new(TestAgent::default());
    let through_relay = format!("https://localhost:{}", relay.port);
    let running = rig.run_agent(&through_relay, &token, &agent);
    wait_for(&rig.handle, "h9", "available", settled(S::Available)).await;

    // The link drops; while the agent is away the host is detached, which ends its
    // deployment: the release finds no agent and the token is forgotten.
    relay.down();
    wait_for(&rig.handle, "h9", "disconnected", |view| {
        !view.status.agent.connected
    })
    .await;
    rig.handle
        .apply("h9", Intent::Detach(DetachSpec::default()))
        .await
        .unwrap();
    wait_for(&rig.handle, "h9", "detached", |view| {
        view.status.operational_status == OperationalStatus::Detached
    })
    .await;
    assert!(
        !running.is_finished(),
        "the agent is still trying to reach the engine"
    );

    // Back on the network, it is refused and stops rather than retrying for ever.
    relay.up();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the forgotten agent stops")
        .unwrap();
    assert!(rig.channel.connected_hosts().is_empty());
    rig.shutdown().await;
}

fn target(id: HostId) -> HostTarget {
    HostTarget {
        id,
        name: "h5".into(),
        boot_mac: Some(MAC),
        boot_method: BootMethod::NetworkBoot,
        boot_mode: BootMode::Uefi,
        bmc: BmcTarget {
            address: "sim://h5".into(),
            credentials: rivet_bmc::Credentials::new("admin", "secret"),
            verify_tls: true,
        },
    }
}

/// The timeline of `name` as one JSON string, to look for messages in.
async fn timeline_text(handle: &EngineHandle, name: &str) -> String {
    serde_json::to_string(&handle.timeline(name, 0, 1000).await.unwrap()).unwrap()
}

async fn wait_for_timeline(handle: &EngineHandle, name: &str, needle: &str) {
    for _ in 0..3000 {
        if timeline_text(handle, name).await.contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{name}'s timeline never said {needle:?}: {}",
        timeline_text(handle, name).await
    );
}

#[tokio::test]
async fn without_an_agent_commands_fail_at_once_as_not_connected() {
    let rig = rig(settings()).await;
    rig.enroll("h5").await;
    rig.token().await;
    let id = rig.handle.get("h5").await.unwrap().unwrap().id;
    let host = target(id);
    // The engine is waiting for an agent that never comes; the seam answers at once.
    let err = rig.channel.inspect(&host).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::AgentNotConnected, "{err}");
    let sink: ProgressSink = Arc::new(|_| {});
    let err = rig
        .channel
        .clean(&host, &CleaningPolicy::default(), sink)
        .await
        .unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::AgentNotConnected, "{err}");
    rig.channel.release(&host).await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_command_nobody_answers_times_out() {
    let rig = rig(ChannelSettings {
        inspect_timeout_secs: 1,
        ..settings()
    })
    .await;
    rig.enroll("h7").await;
    let token = rig.token().await;
    let agent = Arc::new(TestAgent {
        hang_inspect: true,
        ..TestAgent::default()
    });
    let running = rig.run_agent(&rig.url, &token, &agent);
    wait_for_timeline(&rig.handle, "h7", "did not finish inspect within 1s").await;
    let view = rig.handle.get("h7").await.unwrap().unwrap();
    assert_eq!(view.status.state, S::Inspecting);
    running.abort();
    rig.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_leaves_mid_command_and_stays_away_fails_it_after_the_grace() {
    let (rig, token) = rig_with_host("h8").await;
    let agent = Arc::new(TestAgent {
        hang_inspect: true,
        ..TestAgent::default()
    });
    let running = rig.run_agent(&rig.url, &token, &agent);
    for _ in 0..2000 {
        if !agent.calls.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*agent.calls.lock().unwrap(), vec!["inspect"]);
    running.abort();
    // The runtime hears AgentNotConnected and boots a fresh agent (a new token).
    wait_for_timeline(&rig.handle, "h8", "did not come back within 2s").await;
    for _ in 0..2000 {
        if rig.token().await != token {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(rig.token().await, token, "a new agent boot was configured");
    rig.shutdown().await;
}

#[tokio::test]
async fn agent_failures_keep_their_meaning() {
    let (rig, token) = rig_with_host("h6").await;
    let agent = Arc::new(TestAgent::default());
    let running = rig.run_agent(&rig.url, &token, &agent);
    wait_for(&rig.handle, "h6", "available", settled(S::Available)).await;
    rig.handle
        .apply(
            "h6",
            Intent::Provision {
                image: image("https://images.example/missing.img"),
            },
        )
        .await
        .unwrap();
    let view = wait_for(&rig.handle, "h6", "failed to provision", |view| {
        view.status
            .error
            .as_ref()
            .is_some_and(|error| error.message.contains("HTTP 404"))
    })
    .await;
    let error = view.status.error.unwrap();
    assert_eq!(error.kind, crate::lifecycle::ErrorType::Provisioning);
    assert!(
        agent
            .calls
            .lock()
            .unwrap()
            .contains(&"clean Metadata".to_owned())
    );
    running.abort();
    rig.shutdown().await;
}

/// Upgrade headers a WebSocket client sends, without the ones under test.
fn upgrade_request(http: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    http.get(url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
}

#[tokio::test]
async fn malformed_handshakes_are_refused_with_a_reason() {
    let (rig, token) = rig_with_host("h9").await;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(rig.tls.trust_pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let url = format!(
        "{}{}",
        rig.url,
        rivet_agent::channel::protocol::CONNECT_PATH
    );
    // Outside the API's bearer check (agents have their own token), but not a plain GET.
    let plain = http.get(&url).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 426);
    let text = plain.text().await.unwrap();
    assert!(text.contains("WebSocket"), "{text}");
    let cases = [
        // (subprotocol, authorization, macs, expected status, expected text)
        (
            None,
            Some(format!("Bearer {token}")),
            Some("52:54:00:c4:00:01"),
            400,
            "subprotocol",
        ),
        (
            Some("rivet-agent.v1"),
            None,
            Some("52:54:00:c4:00:01"),
            401,
            "token is required",
        ),
        (
            Some("rivet-agent.v1"),
            Some(token.clone()),
            Some("52:54:00:c4:00:01"),
            401,
            "token is required",
        ),
        (
            Some("rivet-agent.v1"),
            Some(format!("Bearer {token}")),
            None,
            400,
            "no MAC address",
        ),
        (
            Some("rivet-agent.v1"),
            Some(format!("Bearer {token}")),
            Some("52:54:00:c4:00"),
            400,
            "not a MAC address",
        ),
    ];
    for (protocol, authorization, macs, status, text) in cases {
        let mut request = upgrade_request(&http, &url);
        if let Some(protocol) = protocol {
            request = request.header("sec-websocket-protocol", protocol);
        }
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(macs) = macs {
            request = request.header("rivet-agent-macs", macs);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{protocol:?} {macs:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains(text), "{body}");
        assert!(!body.contains(&token), "the answer echoes no token");
    }
    assert!(rig.channel.connected_hosts().is_empty());
    rig.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_breaks_the_protocol_is_disconnected() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (rig, token) = rig_with_host("h10").await;
    // A hand-made client: TLS pinned like the agent's, then whatever bytes it likes.
    let pin = rivet_agent::channel::Fingerprint::parse(&rig.tls.fingerprint).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(
        rivet_agent::channel::pin::client_config(pin).unwrap(),
    ));
    let port: u16 = rig.url.rsplit(':').next().unwrap().parse().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tls.connect(name, tcp).await.unwrap();
    let mut request = format!("wss://localhost:{port}/v1/agent/connect")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert("sec-websocket-protocol", "rivet-agent.v1".parse().unwrap());
    headers.insert("rivet-agent-macs", MAC.to_string().parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    wait_for(&rig.handle, "h10", "connected", |view| {
        view.status.agent.connected
    })
    .await;
    socket
        .send(Message::text(r#"{"type":"result","id":"seven"}"#))
        .await
        .unwrap();
    // The engine closes the connection and reports the agent gone.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(frame)) = socket.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the engine closed the connection");
    wait_for(&rig.handle, "h10", "disconnected", |view| {
        !view.status.agent.connected
    })
    .await;
    rig.shutdown().await;
}
