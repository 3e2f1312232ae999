//! The engine's side of the agent channel: an [`AgentDriver`] over WebSockets that agents
//! open to `GET /v1/agent/connect` on the API's TLS listener.
//!
//! - **Admission.** The upgrade request carries the per-deployment token in
//!   `Authorization: Bearer …` and the agent's MAC addresses (and host id, if it knows it)
//!   in `rivet-agent-*` headers. The handler asks the [`AgentRegistry`] — the engine looks
//!   the host up and compares the token's SHA-256 with the stored one in constant time —
//!   before upgrading: an unknown agent gets `401` and never a WebSocket. The token is
//!   never logged and never part of a URL.
//! - **Commands.** Each driver call sends a command with a fresh request id and waits for
//!   the result with a per-command time limit; progress messages go to the step's
//!   [`ProgressSink`].
//! - **Disconnects.** When a connection drops the registry hears `disconnected`, but a
//!   command in flight is not failed at once: the agent keeps working and reconnects, the
//!   command is sent again on the new connection (the agent ignores a command it is
//!   already running and repeats a result it already has), and only if no connection comes
//!   back within the reconnect grace does the call fail with `AgentNotConnected`.
//! - **Liveness.** The engine pings every `keepalive` and drops a connection that has
//!   been silent for three of them; that is transport keep-alive on one open connection,
//!   not polling.

mod server;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rivet_agent::channel::protocol::{
    CleanMode, CleanPolicy, Command, ConfigDriveData, DeployJob, EngineMessage, FailureKind,
    ImageSource, Outcome,
};
use rivet_model::HardwareDetails;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{
    AgentDriver, AgentProgress, AgentRegistry, DeployRequest, DriverError, DriverErrorKind,
    HostTarget, ProgressSink,
};
use crate::lifecycle::{CleaningMode, CleaningPolicy, HostId};

/// Time limits of the agent channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSettings {
    /// Seconds between pings on an idle connection.
    pub keepalive_secs: u64,
    /// How long a command in flight waits for a dropped agent to come back.
    pub reconnect_grace_secs: u64,
    pub inspect_timeout_secs: u64,
    /// Metadata cleaning (partition tables and signatures).
    pub clean_timeout_secs: u64,
    /// Whole-disk erasure.
    pub erase_timeout_secs: u64,
    pub deploy_timeout_secs: u64,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            keepalive_secs: 15,
            reconnect_grace_secs: 120,
            inspect_timeout_secs: 600,
            clean_timeout_secs: 1800,
            erase_timeout_secs: 86_400,
            deploy_timeout_secs: 14_400,
        }
    }
}

/// How long a command may wait while an agent that is being admitted finishes its
/// handshake (the engine can dispatch a step a moment before the session is installed).
const ATTACH_GRACE: Duration = Duration::from_secs(2);
/// How long `release` waits for the agent to acknowledge.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent channel: an [`AgentDriver`] plus the route agents connect to.
#[derive(Debug, Clone)]
pub struct AgentChannel {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ChannelSettings,
    registry: OnceLock<Arc<dyn AgentRegistry>>,
    state: Mutex<State>,
    next_id: AtomicU64,
    next_generation: AtomicU64,
    /// Admissions under way (between the registry's answer and the session's install).
    admitting: AtomicUsize,
    /// Bumped whenever a session comes or goes, to wake waiting commands.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentChannel")
            .field("settings", &self.settings)
            .field("attached", &self.registry.get().is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<HostId, Live>,
    pending: HashMap<u64, Pending>,
}

/// One connected agent.
struct Live {
    generation: u64,
    outbox: mpsc::UnboundedSender<EngineMessage>,
}

/// A command waiting for its result.
struct Pending {
    host: HostId,
    progress: Option<ProgressSink>,
    reply: Option<oneshot::Sender<Outcome>>,
}

impl AgentChannel {
    pub fn new(settings: ChannelSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                registry: OnceLock::new(),
                state: Mutex::new(State::default()),
                next_id: AtomicU64::new(1),
                next_generation: AtomicU64::new(1),
                admitting: AtomicUsize::new(0),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// The route agents connect to, to be merged into the API router (it sits outside
    /// the API's bearer-token check: agents prove themselves with their own token).
    pub fn router(&self) -> axum::Router {
        server::router(self.clone())
    }

    /// Hosts with an agent connected now.
    pub fn connected_hosts(&self) -> Vec<HostId> {
        self.inner
            .with_state(|state| state.sessions.keys().copied().collect())
    }

    async fn call(
        &self,
        host: &HostTarget,
        command: Command,
        progress: Option<ProgressSink>,
        limit: Duration,
    ) -> Result<Outcome, DriverError> {
        let inner = &self.inner;
        let name = command.name();
        let mut changes = inner.changed.subscribe();
        let (generation, outbox) = self.wait_for_session(host, &mut changes).await?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, mut result) = oneshot::channel();
        inner.with_state(|state| {
            state.pending.insert(
                id,
                Pending {
                    host: host.id,
                    progress,
                    reply: Some(reply),
                },
            )
        });
        let _forget = PendingGuard { inner, id };
        let message = EngineMessage::Command { id, command };
        // A send fails only if the session just ended; the grace below covers that.
        let _ = outbox.send(message.clone());
        tracing::debug!(host = %host.name, id, command = name, "sent a command to the agent");
        let deadline = Instant::now() + limit;
        let grace = Duration::from_secs(inner.settings.reconnect_grace_secs);
        let mut sent_on = Some(generation);
        let mut gone_since: Option<Instant> = None;
        loop {
            let now_on = inner.generation_of(host.id);
            match now_on {
                None => {
                    gone_since.get_or_insert_with(Instant::now);
                }
                Some(generation) => {
                    gone_since = None;
                    if sent_on != Some(generation) {
                        // A new connection: the agent may have restarted and lost the
                        // command, so send it again; a live agent ignores the repeat.
                        sent_on = Some(generation);
                        inner.send_to(host.id, message.clone());
                    }
                }
            }
            let gone_until = gone_since.map(|since| since + grace);
            tokio::select! {
                outcome = &mut result => {
                    return outcome.map_err(|_| not_connected(host, "the channel shut down"));
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(DriverError::new(
                        DriverErrorKind::Timeout,
                        format!("the agent on {} did not finish {name} within {limit:?}", host.name),
                    ));
                }
                () = sleep_until_opt(gone_until) => {
                    return Err(not_connected(
                        host,
                        &format!("the agent went away during {name} and did not come back within {grace:?}"),
                    ));
                }
                _ = changes.changed() => {}
            }
        }
    }

    /// The outbox of `host`'s session, waiting briefly if an agent is being admitted.
    async fn wait_for_session(
        &self,
        host: &HostTarget,
        changes: &mut watch::Receiver<u64>,
    ) -> Result<(u64, mpsc::UnboundedSender<EngineMessage>), DriverError> {
        let inner = &self.inner;
        let give_up = Instant::now() + ATTACH_GRACE;
        loop {
            changes.borrow_and_update();
            let outbox = inner.with_state(|state| {
                state
                    .sessions
                    .get(&host.id)
                    .map(|live| (live.generation, live.outbox.clone()))
            });
            if let Some(session) = outbox {
                return Ok(session);
            }
            if inner.admitting.load(Ordering::Acquire) == 0 || Instant::now() >= give_up {
                return Err(not_connected(host, "no agent is connected"));
            }
            let _ = tokio::time::timeout_at(give_up, changes.changed()).await;
        }
    }
}

fn not_connected(host: &HostTarget, why: &str) -> DriverError {
    DriverError::new(
        DriverErrorKind::AgentNotConnected,
        format!("{why} (host {})", host.name),
    )
}

async fn sleep_until_opt(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// Forgets a pending command however the call ends (including being cancelled).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner
            .with_state(|state| state.pending.remove(&self.id));
    }
}

impl Inner {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // The state is a pair of maps that every critical section leaves consistent, so a
        // panic elsewhere while holding the lock does not make it unusable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    fn generation_of(&self, host: HostId) -> Option<u64> {
        self.with_state(|state| state.sessions.get(&host).map(|live| live.generation))
    }

    fn send_to(&self, host: HostId, message: EngineMessage) {
        self.with_state(|state| {
            if let Some(live) = state.sessions.get(&host) {
                let _ = live.outbox.send(message);
            }
        });
    }

    fn bump(&self) {
        self.changed
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// Installs a new session for `host`, replacing (and so closing) any older one.
    fn install(&self, host: HostId) -> (u64, mpsc::UnboundedReceiver<EngineMessage>) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let (outbox, inbox) = mpsc::unbounded_channel();
        self.with_state(|state| state.sessions.insert(host, Live { generation, outbox }));
        self.bump();
        (generation, inbox)
    }

    /// Removes `host`'s session if it is still `generation` (or any, with `None`);
    /// reports the disconnect to the registry if one was removed.
    async fn remove(&self, host: HostId, generation: Option<u64>) {
        let removed = self.with_state(|state| {
            let current = state.sessions.get(&host).map(|live| live.generation);
            let matches = current.is_some() && (generation.is_none() || current == generation);
            matches && state.sessions.remove(&host).is_some()
        });
        if removed {
            self.bump();
            if let Some(registry) = self.registry.get() {
                registry.disconnected(host).await;
            }
        }
    }

    /// Routes a message from `host`'s agent to the command it answers.
    /// An agent can only answer the commands sent to its own host.
    fn deliver(&self, host: HostId, id: u64, event: Delivery) {
        // Take what is needed under the lock; call out (sink, reply) after releasing it.
        let handled = match event {
            Delivery::Progress(progress) => self
                .with_state(|state| {
                    let pending = state.pending.get(&id).filter(|p| p.host == host)?;
                    pending.progress.clone()
                })
                .map(|sink| sink(progress)),
            Delivery::Result(outcome) => self
                .with_state(|state| {
                    let pending = state.pending.get_mut(&id).filter(|p| p.host == host)?;
                    pending.reply.take()
                })
                .map(|reply| {
                    let _ = reply.send(outcome);
                }),
        };
        if handled.is_none() {
            tracing::debug!(%host, id, "ignored a message for no pending command");
        }
    }
}

enum Delivery {
    Progress(AgentProgress),
    Result(Outcome),
}

/// Maps the agent's failure onto what the lifecycle does with it.
fn failure(host: &HostTarget, command: &str, kind: FailureKind, message: &str) -> DriverError {
    let kind_here = match kind {
        FailureKind::Transient | FailureKind::Busy => DriverErrorKind::Timeout,
        FailureKind::Unsupported => DriverErrorKind::Unsupported,
        _ => DriverErrorKind::Failed,
    };
    DriverError::new(
        kind_here,
        format!("{command} on {} failed: {message}", host.name),
    )
}

fn expect_done(host: &HostTarget, command: &str, outcome: Outcome) -> Result<(), DriverError> {
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::Failed { kind, message } => Err(failure(host, command, kind, &message)),
        Outcome::Inspected { .. } => Err(DriverError::new(
            DriverErrorKind::Failed,
            format!(
                "the agent on {} answered {command} with an inventory",
                host.name
            ),
        )),
    }
}

fn clean_policy(cleaning: &CleaningPolicy) -> CleanPolicy {
    CleanPolicy {
        mode: match cleaning.mode {
            CleaningMode::Erase => CleanMode::Erase,
            // `disabled` never reaches the agent: the lifecycle plans no clean step.
            CleaningMode::Metadata | CleaningMode::Disabled => CleanMode::Metadata,
        },
        disks: cleaning.disks.clone(),
    }
}

/// The engine's types in their wire spelling (the serde names both sides share).
fn wire_name(value: &impl Serialize) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => Some(name),
        _ => None,
    }
}

fn deploy_job(deploy: &DeployRequest) -> DeployJob {
    DeployJob {
        image: ImageSource {
            url: deploy.image.url.clone(),
            checksum: deploy.image.checksum.clone(),
            checksum_type: deploy.image.checksum_type.as_ref().and_then(wire_name),
            format: deploy.image.format.as_ref().and_then(wire_name),
        },
        root_device_hints: deploy.root_device_hints.clone(),
        boot_mode: wire_name(&deploy.boot_mode).unwrap_or_else(|| "UEFI".into()),
        config_drive: ConfigDriveData {
            user_data: deploy.config_drive.user_data.clone(),
            network_data: deploy.config_drive.network_data.clone(),
            meta_data: deploy.config_drive.meta_data.clone(),
        },
    }
}

#[async_trait]
impl AgentDriver for AgentChannel {
    fn attach(&self, registry: Arc<dyn AgentRegistry>) {
        let _ = self.inner.registry.set(registry);
    }

    async fn inspect(&self, host: &HostTarget) -> Result<HardwareDetails, DriverError> {
        let limit = Duration::from_secs(self.inner.settings.inspect_timeout_secs);
        match self.call(host, Command::Inspect, None, limit).await? {
            Outcome::Inspected { inventory } => Ok(*inventory),
            Outcome::Failed { kind, message } => Err(failure(host, "inspect", kind, &message)),
            Outcome::Done => Err(DriverError::new(
                DriverErrorKind::Failed,
                format!(
                    "the agent on {} answered inspect without an inventory",
                    host.name
                ),
            )),
        }
    }

    async fn clean(
        &self,
        host: &HostTarget,
        cleaning: &CleaningPolicy,
        progress: ProgressSink,
    ) -> Result<(), DriverError> {
        let settings = &self.inner.settings;
        let secs = match cleaning.mode {
            CleaningMode::Erase => settings.erase_timeout_secs,
            CleaningMode::Metadata | CleaningMode::Disabled => settings.clean_timeout_secs,
        };
        let command = Command::Clean {
            policy: clean_policy(cleaning),
        };
        let outcome = self
            .call(host, command, Some(progress), Duration::from_secs(secs))
            .await?;
        expect_done(host, "clean", outcome)
    }

    async fn deploy(
        &self,
        host: &HostTarget,
        deploy: &DeployRequest,
        progress: ProgressSink,
    ) -> Result<(), DriverError> {
        let limit = Duration::from_secs(self.inner.settings.deploy_timeout_secs);
        let command = Command::Deploy(Box::new(deploy_job(deploy)));
        let outcome = self.call(host, command, Some(progress), limit).await?;
        expect_done(host, "deploy", outcome)
    }

    async fn release(&self, host: &HostTarget) {
        if self.inner.generation_of(host.id).is_none() {
            return;
        }
        if let Err(err) = self
            .call(host, Command::Release, None, RELEASE_TIMEOUT)
            .await
        {
            tracing::debug!(host = %host.name, error = %err, "the agent did not acknowledge its release");
        }
        self.inner.remove(host.id, None).await;
    }
}
