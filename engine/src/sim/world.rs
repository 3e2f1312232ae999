//! The simulated machines' state and its journal.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Faults;
use crate::lifecycle::{BootObservations, HostId, MacAddr};

/// Where a simulated machine boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Boot {
    Network,
    Cd,
    UefiHttp,
    Disk,
}

/// What the simulated boot services answer for a MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    Agent { host: HostId, token: String },
    Disk,
}

/// One machine.
#[derive(Debug, Clone, Default)]
pub(super) struct Machine {
    pub power: bool,
    /// Where the next boot goes, once.
    pub next_boot: Option<Boot>,
    /// Where boots go otherwise.
    pub persistent: Option<Boot>,
    pub media: Option<String>,
    /// The image on the disk.
    pub disk: Option<String>,
    /// The token of the agent running on the machine, if one is.
    pub agent: Option<String>,
    /// The token of the agent the machine is booting, until it is up.
    pub booting: Option<String>,
    pub mac: Option<MacAddr>,
    pub host: Option<HostId>,
    pub faults: Faults,
    /// Bumped at every power change, so that a boot in progress can tell it was overtaken.
    pub generation: u64,
}

/// A machine as tests and the sim API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineView {
    pub name: String,
    pub powered_on: bool,
    pub disk: Option<String>,
    pub agent_running: bool,
    pub faults: Faults,
}

impl Machine {
    pub(super) fn view(&self, name: &str) -> MachineView {
        MachineView {
            name: name.to_owned(),
            powered_on: self.power,
            disk: self.disk.clone(),
            agent_running: self.agent.is_some(),
            faults: self.faults.clone(),
        }
    }
}

/// The whole room.
#[derive(Debug, Default)]
pub(super) struct World {
    pub machines: HashMap<String, Machine>,
    pub entries: HashMap<MacAddr, Entry>,
    /// Agent ISO URL → (host, token).
    pub isos: HashMap<String, (HostId, String)>,
    pub seen: HashMap<HostId, BootObservations>,
}

impl World {
    pub(super) fn machine(&mut self, name: &str) -> &mut Machine {
        self.machines.entry(name.to_owned()).or_default()
    }

    pub(super) fn apply(&mut self, record: &Record) {
        match record {
            Record::Link { m, mac, host } => {
                let machine = self.machine(m);
                machine.mac = *mac;
                machine.host = Some(*host);
            }
            Record::Power { m, on } => {
                let machine = self.machine(m);
                machine.power = *on;
                machine.generation += 1;
                if !on {
                    machine.agent = None;
                    machine.booting = None;
                }
            }
            Record::NextBoot { m, boot } => self.machine(m).next_boot = *boot,
            Record::Persistent { m, boot } => self.machine(m).persistent = Some(*boot),
            Record::Media { m, url } => self.machine(m).media = url.clone(),
            Record::Agent { m, token } => {
                let machine = self.machine(m);
                machine.agent = token.clone();
                machine.booting = None;
            }
            Record::Booting { m, token } => self.machine(m).booting = Some(token.clone()),
            Record::Entry { mac, entry } => match entry {
                Some(entry) => {
                    self.entries.insert(*mac, entry.clone());
                }
                None => {
                    self.entries.remove(mac);
                }
            },
            Record::Iso { url, host, token } => {
                self.isos.insert(url.clone(), (*host, token.clone()));
            }
            Record::Deployed { m, image } => self.machine(m).disk = Some(image.clone()),
            Record::Cleaned { m } => self.machine(m).disk = None,
            Record::Inspect { .. } | Record::Clean { .. } | Record::Deploy { .. } => {}
        }
    }
}

/// One change to the lab, as journalled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Record {
    Link {
        m: String,
        mac: Option<MacAddr>,
        host: HostId,
    },
    Power {
        m: String,
        on: bool,
    },
    NextBoot {
        m: String,
        boot: Option<Boot>,
    },
    Persistent {
        m: String,
        boot: Boot,
    },
    Media {
        m: String,
        url: Option<String>,
    },
    /// The agent booted with `token`, or went away.
    Agent {
        m: String,
        token: Option<String>,
    },
    /// The machine started booting an agent with `token`.
    Booting {
        m: String,
        token: String,
    },
    Entry {
        mac: MacAddr,
        entry: Option<Entry>,
    },
    Iso {
        url: String,
        host: HostId,
        token: String,
    },
    /// Agent commands as they start (for tests that check what ran, in what order).
    Inspect {
        m: String,
    },
    Clean {
        m: String,
    },
    Deploy {
        m: String,
    },
    Deployed {
        m: String,
        image: String,
    },
    Cleaned {
        m: String,
    },
}

/// The append-only journal file. Lines survive the process being killed (they are in the
/// page cache); they do not survive a power cut, which a simulator does not need.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
}

impl Journal {
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file })
    }

    pub(super) fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// Applies every record of the journal at `path` to `world`; a torn last line (the
/// process died mid-write) is ignored. Returns how many records were applied.
pub(super) fn replay(path: &Path, world: &mut World) -> std::io::Result<usize> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut applied = 0;
    for line in BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => {
                world.apply(&record);
                applied += 1;
            }
            Err(_) => tracing::warn!("skipping a torn line in the simulator journal"),
        }
    }
    Ok(applied)
}

/// Reads a journal back, for tests.
pub fn read_journal(path: &Path) -> std::io::Result<Vec<Record>> {
    let file = File::open(path)?;
    BufReader::new(file)
        .lines()
        .filter_map(|line| {
            line.map(|line| serde_json::from_str(&line).ok())
                .transpose()
        })
        .collect()
}
