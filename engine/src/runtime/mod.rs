//! The runtime: the engine as a library. [`Engine::open`] loads the store, resumes every
//! host where its last committed step left it, and starts the loop; an [`EngineHandle`]
//! takes host intents in and gives host status and events out.
//!
//! This is the surface the daemon's REST API serves and the Kubernetes operator embeds: it
//! mirrors BMO's provisioner contract (enrol = register, intents = provision, deprovision,
//! power, reboot, adopt, detach, delete; status and events back), and like that contract
//! it survives forgetting everything — a host enrolled again with `adopt` is taken over as
//! it runs.

mod capacity;
mod core;
mod executor;
mod power_sync;
mod token;
mod types;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use self::core::{Core, Msg, Shared};
use crate::drivers::{
    AgentIdentity, AgentRegistry, AgentRejected, AgentToken, Drivers, HostTarget,
};
use crate::lifecycle::{HostId, Intent, Policy, TimelineEntry};
use crate::metrics::{Metrics, Summary};
use crate::secrets::HostSecrets;
use crate::store::writer::Writer;
use crate::store::{Sealer, Store};
pub use types::{
    Adoption, BmcAccess, EngineError, EnrollRequest, HostEvent, HostEventKind, HostView, ListQuery,
    Page, ProgressView, SecretsUpdate, validate_bmc, validate_bmc_address, validate_name,
};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the store (`rivet.redb`) lives.
    pub state_dir: PathBuf,
    /// The key that seals secrets; `<state_dir>/secrets.key` when unset (created if absent).
    pub key_file: Option<PathBuf>,
    /// redb's page cache, in bytes.
    pub store_cache_bytes: usize,
    pub policy: Policy,
    /// Hosts inspecting, provisioning or deprovisioning at once; 0 for no limit.
    /// Virtual-media hosts do not count.
    pub provisioning_limit: usize,
    /// How often the power of settled hosts is read; zero turns the loop off.
    pub power_sync_interval: Duration,
    pub power_sync_batch: usize,
    pub power_sync_concurrency: usize,
    /// How long a soft power-off may take before power is cut.
    pub soft_power_off_timeout: Duration,
    /// How long to wait for a power change to show.
    pub power_wait_timeout: Duration,
    pub power_poll_interval: Duration,
    /// Timeline entries kept per host.
    pub timeline_limit: u64,
}

impl EngineConfig {
    /// Defaults for a store in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            key_file: None,
            store_cache_bytes: 16 << 20,
            policy: Policy::default(),
            provisioning_limit: 20,
            power_sync_interval: Duration::from_secs(60),
            power_sync_batch: 256,
            power_sync_concurrency: 32,
            soft_power_off_timeout: Duration::from_secs(180),
            power_wait_timeout: Duration::from_secs(60),
            power_poll_interval: Duration::from_secs(2),
            timeline_limit: crate::store::DEFAULT_TIMELINE_LIMIT,
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("secrets.key"))
    }

    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("rivet.redb")
    }
}

/// A running engine.
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    core: JoinHandle<Result<(), EngineError>>,
    sync: JoinHandle<()>,
}

/// A cheap, cloneable handle to talk to the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    inbox: mpsc::UnboundedSender<Msg>,
    events: broadcast::Sender<HostEvent>,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// Opens the store, resumes every host and starts the engine.
    pub async fn open(config: EngineConfig, drivers: Drivers) -> Result<Self, EngineError> {
        let sealer =
            Sealer::load_or_create(&config.key_path()).map_err(crate::store::StoreError::from)?;
        let store_path = config.store_path();
        let (cache, limit) = (config.store_cache_bytes, config.timeline_limit);
        let (store, loaded) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&store_path, sealer, cache)?.with_timeline_limit(limit);
            let loaded = store.load()?;
            Ok::<_, crate::store::StoreError>((store, loaded))
        })
        .await
        .map_err(|err| EngineError::Start(err.to_string()))??;
        let metrics = Arc::new(Metrics::default());
        let writer = Writer::spawn(store.clone(), metrics.clone())
            .map_err(|err| EngineError::Start(format!("cannot start the store writer: {err}")))?;
        let (inbox, receiver) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(16_384);
        let pace = power_sync::Pace {
            interval: config.power_sync_interval,
            batch: config.power_sync_batch,
            concurrency: config.power_sync_concurrency,
        };
        let shared = Arc::new(Shared {
            drivers: drivers.clone(),
            config,
            metrics: metrics.clone(),
            events: events.clone(),
            inbox: inbox.clone(),
        });
        let mut core = Core::new(shared, store, writer, loaded);
        core.resume_all();
        let handle = EngineHandle {
            inbox,
            events,
            metrics,
        };
        drivers.agent.attach(Arc::new(handle.clone()));
        let core = tokio::spawn(core.run(receiver));
        let sync = tokio::spawn(power_sync::run(handle.clone(), drivers.bmc.clone(), pace));
        Ok(Self { handle, core, sync })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Waits until the engine stops on its own, which it does only when the store fails.
    pub async fn closed(&mut self) -> Result<(), EngineError> {
        (&mut self.core)
            .await
            .map_err(|err| EngineError::Start(format!("the engine loop panicked: {err}")))?
    }

    /// Commits what is pending and stops. Steps in flight are abandoned; the next start
    /// resumes them.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        self.sync.abort();
        let (reply, done) = oneshot::channel();
        if self.handle.inbox.send(Msg::Shutdown { reply }).is_ok() {
            let _ = done.await;
        }
        self.core
            .await
            .map_err(|err| EngineError::Start(format!("the engine loop panicked: {err}")))?
    }
}

impl EngineHandle {
    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(msg(reply))
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)
    }

    /// Enrols a host (BMO's Register). Returns once the host is durable.
    pub async fn enroll(&self, request: EnrollRequest) -> Result<HostView, EngineError> {
        request.validate()?;
        let secrets = HostSecrets {
            bmc_username: request
                .bmc
                .as_ref()
                .map(|b| b.username.clone())
                .unwrap_or_default(),
            bmc_password: request
                .bmc
                .as_ref()
                .map(|b| b.password.clone())
                .unwrap_or_default(),
            ..HostSecrets::default()
        };
        self.ask(|reply| Msg::Enroll {
            request: Box::new(request),
            secrets,
            reply,
        })
        .await?
    }

    /// Applies `intents` to host `name`, all or none, with an optional secrets change.
    /// Returns once the change is durable.
    pub async fn request(
        &self,
        name: &str,
        intents: Vec<Intent>,
        secrets: Option<SecretsUpdate>,
    ) -> Result<HostView, EngineError> {
        self.ask(|reply| Msg::Request {
            name: name.to_owned(),
            intents,
            secrets,
            reply,
        })
        .await?
    }

    /// Applies one intent.
    pub async fn apply(&self, name: &str, intent: Intent) -> Result<HostView, EngineError> {
        self.request(name, vec![intent], None).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<HostView>, EngineError> {
        self.ask(|reply| Msg::Get {
            name: name.to_owned(),
            reply,
        })
        .await
    }

    pub async fn list(&self, query: ListQuery) -> Result<Page, EngineError> {
        self.ask(|reply| Msg::List { query, reply }).await
    }

    pub async fn summary(&self) -> Result<Summary, EngineError> {
        self.ask(|reply| Msg::Summary { reply }).await
    }

    /// Committed timeline entries of `name` after sequence `after`.
    pub async fn timeline(
        &self,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, EngineError> {
        let id = self.id_of(name).await?;
        let store = self.ask(|reply| Msg::Store { reply }).await?;
        tokio::task::spawn_blocking(move || store.timeline(id, after, limit))
            .await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::from)
    }

    /// The stored inventory of `name`.
    pub async fn hardware(
        &self,
        name: &str,
    ) -> Result<Option<rivet_model::HardwareDetails>, EngineError> {
        let id = self.id_of(name).await?;
        let store = self.ask(|reply| Msg::Store { reply }).await?;
        tokio::task::spawn_blocking(move || store.hardware(id))
            .await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::from)
    }

    async fn id_of(&self, name: &str) -> Result<HostId, EngineError> {
        self.get(name)
            .await?
            .map(|view| view.id)
            .ok_or_else(|| EngineError::NotFound(name.to_owned()))
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.events.subscribe()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn power_targets(&self) -> Result<Vec<HostTarget>, EngineError> {
        self.ask(|reply| Msg::PowerTargets { reply }).await
    }

    async fn power_observed(&self, observations: Vec<(HostId, bool)>) -> Result<(), EngineError> {
        self.inbox
            .send(Msg::PowerObserved { observations })
            .map_err(|_| EngineError::Stopped)
    }
}

#[async_trait]
impl AgentRegistry for EngineHandle {
    async fn connected(
        &self,
        identity: AgentIdentity,
        token: AgentToken,
    ) -> Result<HostId, AgentRejected> {
        self.ask(|reply| Msg::AgentConnected {
            identity,
            token,
            reply,
        })
        .await
        .map_err(|_| AgentRejected)?
    }

    async fn disconnected(&self, id: HostId) {
        let _ = self.inbox.send(Msg::AgentDisconnected { id });
    }
}

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
