//! The engine's loop: the one task that owns every host.
//!
//! It applies events to hosts with the pure lifecycle, gathers the resulting records into a
//! batch, and hands the batch to the store writer while it goes on with the next events.
//! Only when a batch is durable are its side effects released: steps dispatched to the
//! drivers, replies sent to API callers, events published. So nothing is ever done, or
//! acknowledged, that a crash could make the engine forget.
//!
//! Timers live in one priority queue, not in sleeping per-host tasks; steps run as
//! short-lived tasks that report back through the inbox.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::capacity::Capacity;
use super::executor::{self, StepJob};
use super::types::{
    EngineError, EnrollRequest, HostEvent, HostEventKind, HostView, ListQuery, Page, ProgressView,
    SecretsUpdate,
};
use super::{EngineConfig, token};
use crate::drivers::{AgentIdentity, AgentRejected, AgentToken, Drivers, HostTarget};
use crate::lifecycle::{
    self, Activity, Event, Host, HostId, Intent, MacAddr, Output, Policy, StepFailure, StepOutput,
    StepPhase, Timestamp, wait_reason,
};
use crate::metrics::{Metrics, Summary};
use crate::secrets::HostSecrets;
use crate::store::writer::{CommitResult, Writer};
use crate::store::{Batch, Loaded, Store};

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// Requests to the loop.
pub(super) enum Msg {
    Enroll {
        request: Box<EnrollRequest>,
        secrets: HostSecrets,
        reply: Reply<HostView>,
    },
    Request {
        name: String,
        intents: Vec<Intent>,
        secrets: Option<SecretsUpdate>,
        reply: Reply<HostView>,
    },
    Get {
        name: String,
        reply: oneshot::Sender<Option<HostView>>,
    },
    List {
        query: ListQuery,
        reply: oneshot::Sender<Page>,
    },
    Summary {
        reply: oneshot::Sender<Summary>,
    },
    /// A copy of the store for one read; the loop keeps no other copies outside itself.
    Store {
        reply: oneshot::Sender<Store>,
    },
    StepDone {
        id: HostId,
        token: u32,
        result: Result<StepOutput, StepFailure>,
    },
    AgentConnected {
        identity: AgentIdentity,
        token: AgentToken,
        reply: oneshot::Sender<Result<HostId, AgentRejected>>,
    },
    AgentDisconnected {
        id: HostId,
    },
    PowerTargets {
        reply: oneshot::Sender<Vec<HostTarget>>,
    },
    PowerObserved {
        observations: Vec<(HostId, bool)>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What the loop shares with the step tasks.
pub(super) struct Shared {
    pub drivers: Drivers,
    pub config: EngineConfig,
    pub metrics: Arc<Metrics>,
    pub events: broadcast::Sender<HostEvent>,
    pub inbox: mpsc::UnboundedSender<Msg>,
}

/// A side effect held back until its batch is durable.
enum Effect {
    Dispatch { id: HostId, token: u32 },
    Reply(Box<dyn FnOnce(Result<(), EngineError>) + Send>),
    Publish(HostEvent),
}

#[derive(Default)]
struct Pending {
    batch: Batch,
    effects: Vec<Effect>,
}

struct Entry {
    host: Host,
    secrets: Arc<HostSecrets>,
}

pub(super) struct Core {
    shared: Arc<Shared>,
    policy: Policy,
    hosts: HashMap<HostId, Entry>,
    names: BTreeMap<String, HostId>,
    macs: HashMap<MacAddr, HostId>,
    timers: BinaryHeap<Reverse<(Timestamp, HostId)>>,
    capacity: Capacity,
    store: Store,
    writer: Writer,
    pending: Pending,
    in_flight: Option<(oneshot::Receiver<CommitResult>, Vec<Effect>)>,
    /// Events caused by handling another (slot grants), applied before the next message.
    followups: VecDeque<(HostId, Event)>,
}

impl Core {
    pub(super) fn new(shared: Arc<Shared>, store: Store, writer: Writer, loaded: Loaded) -> Self {
        let policy = shared.config.policy.clone();
        let mut core = Self {
            capacity: Capacity::new(shared.config.provisioning_limit),
            shared,
            policy,
            hosts: HashMap::with_capacity(loaded.hosts.len()),
            names: BTreeMap::new(),
            macs: HashMap::new(),
            timers: BinaryHeap::new(),
            store,
            writer,
            pending: Pending::default(),
            in_flight: None,
            followups: VecDeque::new(),
        };
        let mut secrets = loaded.secrets;
        for host in loaded.hosts {
            let host_secrets = secrets.remove(&host.id).unwrap_or_default();
            if host.status.slot {
                core.capacity.hold(host.id);
            }
            core.insert(host, host_secrets);
        }
        core
    }

    fn insert(&mut self, host: Host, secrets: HostSecrets) {
        self.names.insert(host.name.clone(), host.id);
        if let Some(mac) = host.spec.boot_mac_address {
            self.macs.insert(mac, host.id);
        }
        self.hosts.insert(
            host.id,
            Entry {
                host,
                secrets: Arc::new(secrets),
            },
        );
    }

    /// Picks every host up where the last committed state left it.
    pub(super) fn resume_all(&mut self) {
        let now = Timestamp::now();
        let ids: Vec<HostId> = self.names.values().copied().collect();
        let mut resumed = 0usize;
        for id in ids {
            let Some(entry) = self.hosts.get_mut(&id) else {
                continue;
            };
            let busy = entry.host.status.activity != Activity::Idle;
            let out = lifecycle::resume(&mut entry.host, now, &self.policy);
            resumed += usize::from(busy);
            self.absorb(id, out);
        }
        self.drain_followups();
        if !self.hosts.is_empty() {
            tracing::info!(
                hosts = self.hosts.len(),
                resumed,
                "resumed hosts from the store"
            );
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Msg>,
    ) -> Result<(), EngineError> {
        let mut stopping: Option<oneshot::Sender<()>> = None;
        loop {
            // Due timers first: under a steady stream of messages the select below would
            // otherwise always find the inbox ready and starve them.
            let now = Timestamp::now();
            if stopping.is_none()
                && self
                    .timers
                    .peek()
                    .is_some_and(|Reverse((at, _))| *at <= now)
            {
                self.fire_timers();
            }
            self.flush();
            if stopping.is_some() && self.in_flight.is_none() && self.pending.effects.is_empty() {
                break;
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = next_timer.map(|at| at.since(Timestamp::now()));
            tokio::select! {
                biased;
                result = committed(&mut self.in_flight) => {
                    let effects = self.in_flight.take().map(|(_, effects)| effects).unwrap_or_default();
                    if let Err(err) = result {
                        let error = EngineError::Store(err);
                        for effect in effects {
                            if let Effect::Reply(reply) = effect {
                                reply(Err(error.clone()));
                            }
                        }
                        tracing::error!(error = %error, "stopping: the store cannot commit");
                        return Err(error);
                    }
                    self.release(effects);
                }
                msg = inbox.recv(), if stopping.is_none() => {
                    let Some(msg) = msg else { break };
                    if let Some(reply) = self.handle(msg) {
                        stopping = Some(reply);
                        continue;
                    }
                    // Take what else is waiting, so that it all shares the next commit.
                    for _ in 0..4096 {
                        let Ok(msg) = inbox.try_recv() else { break };
                        if let Some(reply) = self.handle(msg) {
                            stopping = Some(reply);
                            break;
                        }
                    }
                }
                () = sleep_for(sleep), if sleep.is_some() && stopping.is_none() => self.fire_timers(),
            }
        }
        // Close the store before saying so, so that it can be opened again at once.
        let Self { writer, store, .. } = self;
        drop(store);
        let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
        if let Some(reply) = stopping {
            let _ = reply.send(());
        }
        Ok(())
    }

    /// Sends the pending batch to the writer when no commit is in flight.
    fn flush(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        if pending.batch.is_empty() {
            // Nothing to make durable: the effects can go at once.
            self.release(pending.effects);
            return;
        }
        let receiver = self.writer.submit(pending.batch);
        self.in_flight = Some((receiver, pending.effects));
    }

    fn release(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Dispatch { id, token } => self.dispatch(id, token),
                Effect::Reply(reply) => reply(Ok(())),
                Effect::Publish(event) => {
                    let _ = self.shared.events.send(event);
                }
            }
        }
    }

    fn handle(&mut self, msg: Msg) -> Option<oneshot::Sender<()>> {
        match msg {
            Msg::Enroll {
                request,
                secrets,
                reply,
            } => self.enroll(*request, secrets, reply),
            Msg::Request {
                name,
                intents,
                secrets,
                reply,
            } => self.request(&name, intents, secrets, reply),
            // Reads are answered once what they show is durable, so that no one ever sees
            // a state a crash could take back (and a timeline read next agrees with it).
            Msg::Get { name, reply } => {
                let view = self.names.get(&name).and_then(|id| self.view(*id));
                self.reply_when_durable(reply, view);
            }
            Msg::List { query, reply } => {
                let page = self.list(&query);
                self.reply_when_durable(reply, page);
            }
            Msg::Summary { reply } => {
                let summary = self.summary();
                self.reply_when_durable(reply, summary);
            }
            Msg::Store { reply } => {
                let _ = reply.send(self.store.clone());
            }
            Msg::StepDone { id, token, result } => {
                self.event(id, Event::StepFinished { token, result });
            }
            Msg::AgentConnected {
                identity,
                token,
                reply,
            } => self.agent_connected(identity, &token, reply),
            Msg::AgentDisconnected { id } => self.event(id, Event::AgentDisconnected),
            Msg::PowerTargets { reply } => {
                let _ = reply.send(self.power_targets());
            }
            Msg::PowerObserved { observations } => {
                for (id, on) in observations {
                    self.event(id, Event::PowerObserved { on });
                }
            }
            Msg::Shutdown { reply } => return Some(reply),
        }
        self.drain_followups();
        None
    }

    // ------------------------------------------------------------------ applying events

    /// Applies an event the host cannot refuse.
    fn event(&mut self, id: HostId, event: Event) {
        let now = Timestamp::now();
        let Some(entry) = self.hosts.get_mut(&id) else {
            return;
        };
        match lifecycle::apply(&mut entry.host, event, now, &self.policy) {
            Ok(out) => self.absorb(id, out),
            Err(rejected) => {
                tracing::warn!(host = %entry.host.name, reason = %rejected, "event refused");
            }
        }
    }

    fn drain_followups(&mut self) {
        while let Some((id, event)) = self.followups.pop_front() {
            self.event(id, event);
        }
    }

    /// Turns a transition's output into records for the batch and held-back effects.
    fn absorb(&mut self, id: HostId, out: Output) {
        self.shared.metrics.record_event(out.changed);
        let mut forget = false;
        for action in out.actions {
            match action {
                lifecycle::Action::RunStep { token, .. } => {
                    self.pending.effects.push(Effect::Dispatch { id, token });
                }
                lifecycle::Action::WakeAt(at) => self.timers.push(Reverse((at, id))),
                lifecycle::Action::AcquireSlot => {
                    if self.capacity.request(id) {
                        self.followups.push_back((id, Event::SlotGranted));
                    }
                }
                lifecycle::Action::ReleaseSlot => {
                    for next in self.capacity.release(id) {
                        self.followups.push_back((next, Event::SlotGranted));
                    }
                }
                lifecycle::Action::StoreHardware(hardware) => {
                    self.pending.batch.hardware.insert(id, hardware);
                }
                lifecycle::Action::Forget => forget = true,
            }
        }
        let Some(entry) = self.hosts.get(&id) else {
            return;
        };
        let (name, state, operational) = (
            entry.host.name.clone(),
            entry.host.status.state,
            entry.host.status.operational_status,
        );
        for timeline_entry in out.timeline {
            self.pending
                .batch
                .timeline
                .push((id, timeline_entry.clone()));
            self.pending.effects.push(Effect::Publish(HostEvent {
                host: name.clone(),
                id,
                state,
                operational_status: operational,
                kind: HostEventKind::Timeline {
                    entry: timeline_entry,
                },
            }));
        }
        if forget {
            self.forget(id);
        } else if out.changed {
            self.pending.batch.hosts.insert(id, entry.host.clone());
        }
    }

    fn forget(&mut self, id: HostId) {
        let Some(entry) = self.hosts.remove(&id) else {
            return;
        };
        self.names.remove(&entry.host.name);
        if let Some(mac) = entry.host.spec.boot_mac_address
            && self.macs.get(&mac) == Some(&id)
        {
            self.macs.remove(&mac);
        }
        for next in self.capacity.release(id) {
            self.followups.push_back((next, Event::SlotGranted));
        }
        let batch = &mut self.pending.batch;
        batch.hosts.remove(&id);
        batch.secrets.remove(&id);
        batch.hardware.remove(&id);
        batch.forget.push(id);
        self.pending.effects.push(Effect::Publish(HostEvent {
            host: entry.host.name.clone(),
            id,
            state: entry.host.status.state,
            operational_status: entry.host.status.operational_status,
            kind: HostEventKind::Deleted,
        }));
        tracing::info!(host = %entry.host.name, "host deleted");
    }

    fn fire_timers(&mut self) {
        let now = Timestamp::now();
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !due.contains(&id) {
                due.push(id);
            }
        }
        for id in due {
            let Some(entry) = self.hosts.get(&id) else {
                continue;
            };
            let boot = match entry.host.progress() {
                Some(progress) if matches!(progress.phase, StepPhase::AwaitingAgent { .. }) => self
                    .shared
                    .drivers
                    .boot
                    .observations(id, entry.host.spec.boot_mac_address, progress.step_started),
                _ => Default::default(),
            };
            self.event(id, Event::Timer { boot });
        }
        self.drain_followups();
    }

    // ------------------------------------------------------------------ steps

    fn dispatch(&mut self, id: HostId, token: u32) {
        let Some(entry) = self.hosts.get(&id) else {
            return;
        };
        let Some(progress) = entry.host.progress().filter(|p| p.token == token) else {
            return; // Superseded before it could start.
        };
        let Some(step) = progress.current_step() else {
            return;
        };
        let job = StepJob::new(&entry.host, &entry.secrets, step, &self.shared);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = executor::run(&shared, job).await;
            shared
                .metrics
                .record_step(step, started.elapsed(), result.is_ok());
            let _ = shared.inbox.send(Msg::StepDone { id, token, result });
        });
    }

    // ------------------------------------------------------------------ requests

    fn enroll(&mut self, request: EnrollRequest, secrets: HostSecrets, reply: Reply<HostView>) {
        let refuse = |reply: Reply<HostView>, err: EngineError| {
            let _ = reply.send(Err(err));
        };
        if let Err(err) = request.validate() {
            return refuse(reply, err);
        }
        if self.names.contains_key(&request.name) {
            return refuse(reply, EngineError::Exists(request.name));
        }
        if let Some(mac) = request.boot_mac_address
            && let Some(owner) = self.macs.get(&mac).and_then(|id| self.hosts.get(id))
        {
            let err = EngineError::Invalid(format!(
                "boot MAC {mac} already belongs to host `{}`",
                owner.host.name
            ));
            return refuse(reply, err);
        }
        let mut bytes = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            return refuse(
                reply,
                EngineError::Start("the system random generator failed".into()),
            );
        }
        let id = HostId::from_random(bytes);
        let now = Timestamp::now();
        let mut host = Host::new(id, request.name.clone(), request.spec(), now);
        let mut outputs = Vec::new();
        match lifecycle::apply(&mut host, Event::Enrolled, now, &self.policy) {
            Ok(out) => outputs.push(out),
            Err(err) => return refuse(reply, err.into()),
        }
        if let Some(adoption) = &request.adopt {
            let intent = Intent::Adopt {
                image: adoption.image.clone(),
            };
            match lifecycle::apply(&mut host, Event::Intent(intent), now, &self.policy) {
                Ok(out) => outputs.push(out),
                Err(err) => return refuse(reply, err.into()),
            }
        }
        tracing::info!(host = %host.name, id = %id, "host enrolled");
        self.pending.batch.secrets.insert(id, secrets.clone());
        self.pending.batch.hosts.insert(id, host.clone());
        self.insert(host, secrets);
        for out in outputs {
            self.absorb(id, out);
        }
        self.drain_followups();
        self.reply_with_view(id, reply);
    }

    fn request(
        &mut self,
        name: &str,
        intents: Vec<Intent>,
        secrets: Option<SecretsUpdate>,
        reply: Reply<HostView>,
    ) {
        let Some(&id) = self.names.get(name) else {
            let _ = reply.send(Err(EngineError::NotFound(name.to_owned())));
            return;
        };
        let Some(entry) = self.hosts.get_mut(&id) else {
            return;
        };
        // Every intent is tried on a draft first, so a request is applied whole or not at all.
        let now = Timestamp::now();
        let mut draft = entry.host.clone();
        let mut outputs = Vec::with_capacity(intents.len());
        for intent in intents {
            match lifecycle::apply(&mut draft, Event::Intent(intent), now, &self.policy) {
                Ok(out) => outputs.push(out),
                Err(rejected) => {
                    self.shared.metrics.record_request(true);
                    let _ = reply.send(Err(rejected.into()));
                    return;
                }
            }
        }
        entry.host = draft;
        if let Some(update) = secrets {
            let secrets = Arc::make_mut(&mut entry.secrets);
            match update {
                SecretsUpdate::Credentials { username, password } => {
                    secrets.bmc_username = username;
                    secrets.bmc_password = password;
                }
                SecretsUpdate::ConfigDrive {
                    user_data,
                    network_data,
                    meta_data,
                } => {
                    secrets.user_data = user_data;
                    secrets.network_data = network_data;
                    secrets.meta_data = meta_data;
                }
            }
            self.pending.batch.secrets.insert(id, secrets.clone());
        }
        for out in outputs {
            self.absorb(id, out);
        }
        self.drain_followups();
        self.reply_with_view(id, reply);
    }

    fn reply_when_durable<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, value: T) {
        if self.in_flight.is_none() && self.pending.batch.is_empty() {
            let _ = reply.send(value);
            return;
        }
        self.pending.effects.push(Effect::Reply(Box::new(move |_| {
            let _ = reply.send(value);
        })));
    }

    /// Replies with the host as it is now, once the batch holding the change is durable.
    fn reply_with_view(&mut self, id: HostId, reply: Reply<HostView>) {
        self.shared.metrics.record_request(false);
        let view = self.view(id);
        self.pending
            .effects
            .push(Effect::Reply(Box::new(move |result| {
                let _ = reply.send(result.and_then(|()| view.ok_or(EngineError::Stopped)));
            })));
    }

    fn agent_connected(
        &mut self,
        identity: AgentIdentity,
        token: &AgentToken,
        reply: oneshot::Sender<Result<HostId, AgentRejected>>,
    ) {
        let id = identity
            .host
            .filter(|id| self.hosts.contains_key(id))
            .or_else(|| {
                identity
                    .macs
                    .iter()
                    .find_map(|mac| self.macs.get(mac).copied())
            });
        let accepted = id.filter(|id| {
            self.hosts.get(id).is_some_and(|entry| {
                let expected = entry.host.status.agent.token_sha256.as_deref();
                expected.is_some_and(|expected| token::verify(token, expected))
            })
        });
        let Some(id) = accepted else {
            tracing::warn!(macs = ?identity.macs, "refused an agent: unknown host or wrong token");
            let _ = reply.send(Err(AgentRejected));
            return;
        };
        self.event(id, Event::AgentConnected);
        self.pending
            .effects
            .push(Effect::Reply(Box::new(move |result| {
                let _ = reply.send(result.map(|()| id).map_err(|_| AgentRejected));
            })));
    }

    // ------------------------------------------------------------------ reads

    fn view(&self, id: HostId) -> Option<HostView> {
        let entry = self.hosts.get(&id)?;
        let host = &entry.host;
        let progress = host.progress().and_then(|progress| {
            let step = progress.current_step()?;
            Some(ProgressView {
                operation: progress.operation,
                step,
                index: progress.index + 1,
                total: progress.steps.len(),
                description: step.describe().to_owned(),
                since: progress.step_started,
            })
        });
        Some(HostView {
            id,
            name: host.name.clone(),
            spec: host.spec.clone(),
            bmc_username: (!entry.secrets.bmc_username.is_empty())
                .then(|| entry.secrets.bmc_username.clone()),
            status: {
                // The token's hash is the engine's business, not the API's.
                let mut status = host.status.clone();
                status.agent.token_sha256 = None;
                status
            },
            waiting_for: wait_reason(host).map(|reason| reason.to_string()),
            progress,
        })
    }

    fn list(&self, query: &ListQuery) -> Page {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let matches = |id: &HostId| {
            query.state.is_none_or(|state| {
                self.hosts
                    .get(id)
                    .is_some_and(|entry| entry.host.status.state == state)
            })
        };
        let total = self.names.values().filter(|id| matches(id)).count();
        let start = match &query.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::with_capacity(limit.min(total));
        let mut next = None;
        for id in self
            .names
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, id)| id)
        {
            if !matches(id) {
                continue;
            }
            if items.len() == limit {
                next = items.last().map(|last: &HostView| last.name.clone());
                break;
            }
            if let Some(view) = self.view(*id) {
                items.push(view);
            }
        }
        Page { items, next, total }
    }

    fn summary(&self) -> Summary {
        let mut summary = Summary {
            total: self.hosts.len(),
            slots_in_use: self.capacity.in_use(),
            slots_waiting: self.capacity.waiting(),
            ..Summary::default()
        };
        for entry in self.hosts.values() {
            let status = &entry.host.status;
            *summary.by_state.entry(status.state).or_insert(0) += 1;
            *summary
                .by_operational_status
                .entry(status.operational_status)
                .or_insert(0) += 1;
        }
        summary
    }

    /// Hosts whose power the sync loop should read: settled, managed, registered.
    fn power_targets(&self) -> Vec<HostTarget> {
        self.hosts
            .values()
            .filter(|entry| {
                let status = &entry.host.status;
                status.state.is_stable()
                    && status.activity == Activity::Idle
                    && status.registered
                    && !status.detached
                    && !entry.host.spec.deleting
                    && entry.host.spec.bmc.is_some()
            })
            .map(|entry| executor::target(&entry.host, &entry.secrets))
            .collect()
    }
}

async fn committed(
    in_flight: &mut Option<(oneshot::Receiver<CommitResult>, Vec<Effect>)>,
) -> CommitResult {
    match in_flight {
        Some((receiver, _)) => receiver.await.unwrap_or_else(|_| {
            Err(Arc::new(crate::store::StoreError::Corrupt(
                "the store writer stopped".into(),
            )))
        }),
        None => std::future::pending().await,
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
