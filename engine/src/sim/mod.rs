//! Simulated drivers: an in-process lab of fake machines behind the three driver seams,
//! for tests and benchmarks. **Not for real hardware.**
//!
//! The BMC, boot-service and agent simulators share one [`SimLab`], so they behave like
//! parts of the same machine room: powering a machine on with a network boot makes it
//! "send" a DHCP request to the simulated boot services, fetch the agent if its MAC is
//! set to boot the agent, and after the boot latency the agent connects to the engine with
//! the token it was handed. Latencies are configurable; faults (a BMC that does not answer
//! or wants another password, a network where DHCP never arrives) are injected per machine.
//!
//! Machines are named by their BMC address, `sim://<name>` (network boot),
//! `sim+virtualmedia://<name>` or `sim+uefihttp://<name>`; they come into existence the
//! first time the engine talks to them. With a journal, the lab's state is appended to a
//! file as it changes and replayed at start-up: machines keep running while the daemon is
//! killed and restarted, as real hardware does.
//!
//! Real hardware faults that no simulator can produce honestly are not simulated here; the
//! fault tests that need a real peer (an HTTP server returning 404) use one.

mod agent;
mod bmc;
mod boot;
mod world;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drivers::{AgentRegistry, Drivers};
use world::{Journal, World};
pub use world::{MachineView, Record, read_journal};

/// How the simulated lab behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Time each BMC call takes, in milliseconds.
    pub bmc_latency_ms: u64,
    /// Time from power-on to the agent connecting, in milliseconds.
    pub boot_latency_ms: u64,
    /// Time each agent command (inspect, clean, deploy) takes, in milliseconds.
    pub agent_latency_ms: u64,
    /// Fetch `http(s)://` images for real when deploying, and verify their checksum.
    pub fetch_images: bool,
    /// Append the lab's state changes to this file and replay them at start-up.
    pub journal: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bmc_latency_ms: 5,
            boot_latency_ms: 50,
            agent_latency_ms: 20,
            fetch_images: false,
            journal: None,
        }
    }
}

/// Faults injected into one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// The BMC does not answer (connection refused).
    pub bmc_unreachable: bool,
    /// The BMC accepts only this password (any password when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmc_password: Option<String>,
    /// Network boots never reach DHCP, so the agent never calls back.
    pub no_dhcp: bool,
}

/// The simulated machine room.
pub struct SimLab {
    config: SimConfig,
    world: Mutex<World>,
    journal: Option<Mutex<Journal>>,
    registry: OnceLock<Arc<dyn AgentRegistry>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for SimLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLab")
            .field("config", &self.config)
            .field("attached", &self.registry.get().is_some())
            .finish_non_exhaustive()
    }
}

/// A lab that cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the simulator journal {path}: {source}")]
pub struct SimError {
    path: PathBuf,
    source: std::io::Error,
}

impl SimLab {
    /// A lab with `config`, replaying its journal if it has one.
    pub fn new(config: SimConfig) -> Result<Arc<Self>, SimError> {
        let mut world = World::default();
        let journal = match &config.journal {
            Some(path) => {
                let replayed = world::replay(path, &mut world).map_err(|source| SimError {
                    path: path.clone(),
                    source,
                })?;
                if replayed > 0 {
                    tracing::info!(records = replayed, "replayed the simulator journal");
                }
                let journal = Journal::open(path).map_err(|source| SimError {
                    path: path.clone(),
                    source,
                })?;
                Some(Mutex::new(journal))
            }
            None => None,
        };
        Ok(Arc::new(Self {
            config,
            world: Mutex::new(world),
            journal,
            registry: OnceLock::new(),
            http: reqwest::Client::new(),
        }))
    }

    /// The three simulated drivers over this lab.
    pub fn drivers(self: &Arc<Self>) -> Drivers {
        Drivers {
            bmc: Arc::new(bmc::SimBmc(self.clone())),
            boot: Arc::new(boot::SimBoot(self.clone())),
            agent: Arc::new(agent::SimAgent(self.clone())),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Replaces the faults of machine `name`.
    pub fn set_faults(&self, name: &str, faults: Faults) {
        self.with_world(|world| world.machine(name).faults = faults);
    }

    /// The state of machine `name`, if the engine ever talked to it.
    pub fn machine(&self, name: &str) -> Option<MachineView> {
        self.with_world(|world| world.machines.get(name).map(|m| m.view(name)))
    }

    /// Every machine's state.
    pub fn machines(&self) -> HashMap<String, MachineView> {
        self.with_world(|world| {
            world
                .machines
                .iter()
                .map(|(name, m)| (name.clone(), m.view(name)))
                .collect()
        })
    }

    fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        // A panic while holding the lock poisons it; the world is still consistent enough
        // for a simulator, so go on with it.
        let mut world = self
            .world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut world)
    }

    /// Appends `record` to the journal, if there is one.
    fn log(&self, record: &Record) {
        if let Some(journal) = &self.journal {
            let mut journal = journal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(err) = journal.append(record) {
                tracing::warn!(error = %err, "cannot append to the simulator journal");
            }
        }
    }

    async fn pause(millis: u64) {
        if millis > 0 {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }
}

/// The machine name in a simulated BMC address (`sim://rack1-07` → `rack1-07`).
pub fn machine_name(address: &str) -> &str {
    address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/')
}

#[cfg(test)]
mod tests;
