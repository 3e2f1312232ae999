//! The host table: what each machine, known by its MAC address, gets from the boot services.
//!
//! A table is immutable once built and validated; to change it, build a new one and publish
//! it through [`HostTableHandle::set_hosts`], which swaps it atomically for every service.
//! Until the engine feeds the table, it comes from a JSON file (see [`HostTable::from_json`]
//! for the format), reloaded on `SIGHUP` and when the file changes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::cmdline::{Hostname, ImageName, KernelCmdline, RelativePath, SafeUrl, UnsafeValue};
use crate::mac::MacAddr;

/// A kernel or initrd: a file under the HTTP root or an absolute URL elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asset {
    /// Served by Rivet from its HTTP root.
    File(RelativePath),
    /// Fetched by the host from another server.
    Url(SafeUrl),
}

impl Asset {
    /// The name iPXE should give the image: its file name when usable, else `fallback`.
    pub(crate) fn image_name(&self, fallback: String) -> ImageName {
        match self {
            Self::File(path) => ImageName::or_fallback(Some(path.file_name()), fallback),
            Self::Url(url) => ImageName::or_fallback(url.file_name(), fallback),
        }
    }
}

impl FromStr for Asset {
    type Err = UnsafeValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.starts_with("http://") || input.starts_with("https://") {
            input.parse().map(Self::Url)
        } else {
            input.parse().map(Self::File)
        }
    }
}

impl<'de> Deserialize<'de> for Asset {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How to boot Rivet's agent (or any kernel): kernel, initrds and command line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBoot {
    pub kernel: Asset,
    #[serde(default)]
    pub initrds: Vec<Asset>,
    #[serde(default)]
    pub cmdline: KernelCmdline,
}

/// What a known host is told to do when it network-boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    /// Boot the agent (the host's own [`AgentBoot`], or the table's default).
    Agent(Arc<AgentBoot>),
    /// Boot from the first local disk.
    LocalDisk,
    /// Do not answer this host at all: no address, no boot information.
    Ignore,
}

/// What the boot services do for a MAC address that is not in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPolicy {
    /// Stay silent (the default: the segment may have machines that are not ours).
    #[default]
    Ignore,
    /// Give an address from the pool (authoritative mode) but no boot information.
    Address,
    /// Boot the table's default agent, for discovery and inspection.
    Discover,
}

/// A host's fixed IPv4 address, with its prefix length when the host is not on the serving
/// subnet (behind a relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedAddress {
    pub address: Ipv4Addr,
    /// `None`: the serving subnet's prefix.
    pub prefix_len: Option<u8>,
}

impl FixedAddress {
    /// The subnet mask (`255.255.255.0` for /24), if the prefix was given.
    pub fn netmask(&self) -> Option<Ipv4Addr> {
        self.prefix_len.map(prefix_to_mask)
    }
}

/// The mask of a prefix length; lengths above 32 saturate.
pub(crate) fn prefix_to_mask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

impl FromStr for FixedAddress {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, prefix_len) = match input.split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (input, None),
        };
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{input}` is not an IPv4 address"))?;
        let prefix_len = match prefix_len {
            Some(len) => Some(
                len.parse::<u8>()
                    .ok()
                    .filter(|len| (1..=32).contains(len))
                    .ok_or_else(|| format!("`{input}`: the prefix length must be 1 to 32"))?,
            ),
            None => None,
        };
        Ok(Self {
            address,
            prefix_len,
        })
    }
}

/// One machine in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub mac: MacAddr,
    pub boot: BootAction,
    /// A fixed address for authoritative mode.
    pub ipv4: Option<FixedAddress>,
    pub hostname: Option<Hostname>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl Host {
    /// A host with `boot` and no fixed address or names.
    pub fn new(mac: MacAddr, boot: BootAction) -> Self {
        Self {
            mac,
            boot,
            ipv4: None,
            hostname: None,
            gateway: None,
            dns: Vec::new(),
        }
    }
}

/// Why a host table was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostTableError {
    #[error("cannot read the host table {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the host table is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("host {mac} appears twice in the host table")]
    DuplicateMac { mac: MacAddr },
    #[error("address {address} is given to both {first} and {second}")]
    DuplicateAddress {
        address: Ipv4Addr,
        first: MacAddr,
        second: MacAddr,
    },
    #[error(
        "host {mac} boots the agent but neither it nor the table has an `agent` section saying which kernel to boot"
    )]
    NoAgent { mac: MacAddr },
    #[error(
        "unknown hosts are to be discovered but the table has no `agent` section saying which kernel to boot"
    )]
    NoDiscoveryAgent,
    #[error("host {mac}: {reason}")]
    InvalidHost { mac: MacAddr, reason: String },
}

/// An immutable, validated host table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTable {
    hosts: HashMap<MacAddr, Host>,
    by_address: HashMap<Ipv4Addr, MacAddr>,
    unknown: UnknownPolicy,
    default_agent: Option<Arc<AgentBoot>>,
}

/// What the table says about one MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The host is in the table.
    Known(&'a Host),
    /// The host is not in the table; the table's policy for unknown hosts applies.
    Unknown(UnknownPolicy),
}

impl HostTable {
    /// Builds a table, checking that MACs and fixed addresses are unique and that every
    /// host booting the agent knows which agent.
    pub fn new(
        hosts: impl IntoIterator<Item = Host>,
        unknown: UnknownPolicy,
        default_agent: Option<AgentBoot>,
    ) -> Result<Self, HostTableError> {
        let default_agent = default_agent.map(Arc::new);
        if unknown == UnknownPolicy::Discover && default_agent.is_none() {
            return Err(HostTableError::NoDiscoveryAgent);
        }
        let mut table = Self {
            hosts: HashMap::new(),
            by_address: HashMap::new(),
            unknown,
            default_agent,
        };
        for host in hosts {
            if let Some(fixed) = host.ipv4
                && let Some(first) = table.by_address.insert(fixed.address, host.mac)
            {
                return Err(HostTableError::DuplicateAddress {
                    address: fixed.address,
                    first,
                    second: host.mac,
                });
            }
            let mac = host.mac;
            if table.hosts.insert(mac, host).is_some() {
                return Err(HostTableError::DuplicateMac { mac });
            }
        }
        Ok(table)
    }

    /// Parses the JSON host-table format:
    ///
    /// ```json
    /// {
    ///   "unknown": "ignore",
    ///   "agent": {
    ///     "kernel": "agent/vmlinuz",
    ///     "initrds": ["agent/initramfs.cpio.gz"],
    ///     "cmdline": "console=ttyS0 ipa-insecure=1"
    ///   },
    ///   "hosts": [
    ///     { "mac": "52:54:00:12:34:01", "boot": "agent", "ipv4": "10.99.0.11",
    ///       "hostname": "node-1", "gateway": "10.99.0.1", "dns": ["10.99.0.1"] },
    ///     { "mac": "52:54:00:12:34:02", "boot": "local_disk" },
    ///     { "mac": "52:54:00:12:34:03", "boot": "ignore" }
    ///   ]
    /// }
    /// ```
    ///
    /// `unknown` is `ignore` (default), `address` or `discover`. `agent` is the default agent
    /// boot; a host may carry its own `agent` section. Kernel and initrd paths are relative
    /// to the HTTP root unless they are `http(s)://` URLs. `ipv4` may carry a prefix
    /// (`10.1.0.5/24`) when the host is on another subnet behind a relay. Unknown fields
    /// are errors, so typos do not pass silently.
    pub fn from_json(text: &str) -> Result<Self, HostTableError> {
        let file: TableFile = serde_json::from_str(text)?;
        let default_agent = file.agent;
        let mut hosts = Vec::with_capacity(file.hosts.len());
        for entry in file.hosts {
            let boot = match entry.boot {
                BootKind::Agent => {
                    let agent = entry
                        .agent
                        .or_else(|| default_agent.clone())
                        .ok_or(HostTableError::NoAgent { mac: entry.mac })?;
                    BootAction::Agent(Arc::new(agent))
                }
                BootKind::LocalDisk => BootAction::LocalDisk,
                BootKind::Ignore => BootAction::Ignore,
            };
            let ipv4 = entry
                .ipv4
                .map(|text| text.parse::<FixedAddress>())
                .transpose()
                .map_err(|reason| HostTableError::InvalidHost {
                    mac: entry.mac,
                    reason,
                })?;
            hosts.push(Host {
                mac: entry.mac,
                boot,
                ipv4,
                hostname: entry.hostname,
                gateway: entry.gateway,
                dns: entry.dns,
            });
        }
        Self::new(hosts, file.unknown, default_agent)
    }

    /// Reads and parses a JSON host table file.
    pub fn load(path: &Path) -> Result<Self, HostTableError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostTableError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// What the table says about `mac`.
    pub fn lookup(&self, mac: MacAddr) -> Lookup<'_> {
        match self.hosts.get(&mac) {
            Some(host) => Lookup::Known(host),
            None => Lookup::Unknown(self.unknown),
        }
    }

    /// The host `mac`, if it is in the table.
    pub fn host(&self, mac: MacAddr) -> Option<&Host> {
        self.hosts.get(&mac)
    }

    /// The host a fixed address belongs to.
    pub fn owner_of(&self, address: Ipv4Addr) -> Option<MacAddr> {
        self.by_address.get(&address).copied()
    }

    /// The agent a MAC should boot, if any: its own, or the default for discovery.
    pub fn agent_for(&self, mac: MacAddr) -> Option<&AgentBoot> {
        match self.lookup(mac) {
            Lookup::Known(Host {
                boot: BootAction::Agent(agent),
                ..
            }) => Some(agent),
            Lookup::Unknown(UnknownPolicy::Discover) => self.default_agent.as_deref(),
            _ => None,
        }
    }

    /// The policy for unknown hosts.
    pub fn unknown_policy(&self) -> UnknownPolicy {
        self.unknown
    }

    /// How many hosts the table lists.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the table lists no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The hosts, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    unknown: UnknownPolicy,
    #[serde(default)]
    agent: Option<AgentBoot>,
    #[serde(default)]
    hosts: Vec<HostEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BootKind {
    Agent,
    LocalDisk,
    Ignore,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    mac: MacAddr,
    boot: BootKind,
    #[serde(default)]
    agent: Option<AgentBoot>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    hostname: Option<Hostname>,
    #[serde(default)]
    gateway: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
}

/// The live host table every service reads, swapped atomically as a whole.
///
/// Clones share the same table. Readers take a cheap snapshot with [`HostTableHandle::hosts`];
/// a packet or request is always answered from one consistent table.
#[derive(Debug, Clone)]
pub struct HostTableHandle {
    sender: Arc<watch::Sender<Arc<HostTable>>>,
}

impl HostTableHandle {
    /// A handle publishing `table`.
    pub fn new(table: HostTable) -> Self {
        let (sender, _) = watch::channel(Arc::new(table));
        Self {
            sender: Arc::new(sender),
        }
    }

    /// Replaces the table; the next packet or request every service handles sees it.
    pub fn set_hosts(&self, table: HostTable) {
        let hosts = table.len();
        self.sender.send_replace(Arc::new(table));
        tracing::info!(hosts, "host table replaced");
    }

    /// The current table.
    pub fn hosts(&self) -> Arc<HostTable> {
        self.sender.borrow().clone()
    }

    /// A receiver that is notified when the table changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HostTable>> {
        self.sender.subscribe()
    }

    /// Reloads `path` on `SIGHUP` and whenever its modification time, size or inode changes
    /// (checked every `poll`), until the returned task is aborted. A table that fails to
    /// load is logged and the previous one stays in force.
    pub fn watch_file(&self, path: PathBuf, poll: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        // Taken now, not when the task first runs, so an edit made in between is seen.
        let mut last = file_identity(&path);
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = ticker.tick() => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let current = file_identity(&path);
                if !forced && current == last {
                    continue;
                }
                last = current;
                match HostTable::load(&path) {
                    Ok(table) => handle.set_hosts(table),
                    Err(err) => tracing::error!(
                        path = %path.display(),
                        error = %err,
                        "host table not reloaded; the previous one stays in force"
                    ),
                }
            }
        })
    }
}

/// What identifies a version of a file cheaply: editors replace files (new inode) or rewrite
/// them (new mtime and often size).
fn file_identity(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "unknown": "discover",
      "agent": {"kernel": "agent/vmlinuz", "initrds": ["agent/initrd.img"], "cmdline": "console=ttyS0"},
      "hosts": [
        {"mac": "52:54:00:00:00:01", "boot": "agent", "ipv4": "10.99.0.11", "hostname": "node-1",
         "gateway": "10.99.0.1", "dns": ["10.99.0.1", "1.1.1.1"]},
        {"mac": "52:54:00:00:00:02", "boot": "local_disk", "ipv4": "10.1.0.5/24"},
        {"mac": "52:54:00:00:00:03", "boot": "ignore"},
        {"mac": "52:54:00:00:00:04", "boot": "agent",
         "agent": {"kernel": "https://mirror.example/vmlinuz", "cmdline": "quiet"}}
      ]
    }"#;

    fn mac(last: u8) -> MacAddr {
        MacAddr::new([0x52, 0x54, 0, 0, 0, last])
    }

    #[test]
    fn the_documented_format_parses() {
        let table = HostTable::from_json(SAMPLE).unwrap();
        assert_eq!(table.len(), 4);
        let Lookup::Known(host) = table.lookup(mac(1)) else {
            panic!("host 1 missing")
        };
        assert_eq!(host.hostname.as_ref().unwrap().as_str(), "node-1");
        assert_eq!(host.dns.len(), 2);
        assert_eq!(table.owner_of(Ipv4Addr::new(10, 99, 0, 11)), Some(mac(1)));
        assert_eq!(
            table.host(mac(2)).unwrap().ipv4.unwrap().netmask(),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(table.host(mac(3)).unwrap().boot, BootAction::Ignore);
        let own = table.agent_for(mac(4)).unwrap();
        assert!(matches!(own.kernel, Asset::Url(_)));
        assert_eq!(own.cmdline.as_str(), "quiet");
        // Unknown hosts get the default agent because the policy is `discover`.
        let discovered = table.agent_for(mac(99)).unwrap();
        assert_eq!(discovered.cmdline.as_str(), "console=ttyS0");
        assert_eq!(table.agent_for(mac(2)), None);
    }

    #[test]
    fn mistakes_are_reported_with_what_to_fix() {
        let cases = [
            (
                r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "agent"}]}"#,
                "has an `agent` section",
            ),
            (
                r#"{"unknown": "discover"}"#,
                "unknown hosts are to be discovered",
            ),
            (
                r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "ignore"},
                              {"mac": "52-54-00-00-00-01", "boot": "ignore"}]}"#,
                "appears twice",
            ),
            (
                r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "ignore", "ipv4": "10.0.0.1"},
                              {"mac": "52:54:00:00:00:02", "boot": "ignore", "ipv4": "10.0.0.1"}]}"#,
                "given to both",
            ),
            (
                r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "ignore", "ipv4": "10.0.0.1/33"}]}"#,
                "prefix length",
            ),
            (
                r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "reboot"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "ignore", "ipv6": "::1"}]}"#,
                "unknown field",
            ),
            (
                r#"{"agent": {"kernel": "../../etc/shadow"}}"#,
                "must stay under the root",
            ),
            (
                r#"{"agent": {"kernel": "k", "cmdline": "quiet\nshell"}}"#,
                "control character",
            ),
            (
                r#"{"hosts": [{"mac": "zz", "boot": "ignore"}]}"#,
                "not a MAC",
            ),
        ];
        for (json, expected) in cases {
            let err = HostTable::from_json(json).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn an_empty_table_ignores_everyone() {
        let table = HostTable::from_json("{}").unwrap();
        assert!(table.is_empty());
        assert_eq!(table.lookup(mac(1)), Lookup::Unknown(UnknownPolicy::Ignore));
    }

    #[tokio::test]
    async fn the_handle_swaps_tables_and_notifies_subscribers() {
        let handle = HostTableHandle::new(HostTable::default());
        let mut changes = handle.subscribe();
        handle.set_hosts(HostTable::from_json(SAMPLE).unwrap());
        changes.changed().await.unwrap();
        assert_eq!(changes.borrow().len(), 4);
        assert_eq!(handle.hosts().len(), 4);
    }

    #[tokio::test]
    async fn the_file_watcher_reloads_good_tables_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.json");
        std::fs::write(&path, "{}").unwrap();
        let handle = HostTableHandle::new(HostTable::load(&path).unwrap());
        let mut changes = handle.subscribe();
        let watcher = handle.watch_file(path.clone(), Duration::from_millis(20));

        std::fs::write(&path, SAMPLE).unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handle.hosts().len(), 4);

        // A broken edit is refused; the table in force does not change.
        std::fs::write(&path, "{\"hosts\": [").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(handle.hosts().len(), 4);
        watcher.abort();
    }
}
