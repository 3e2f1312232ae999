//! The daemon's configuration file (`rivet serve --config <file>`), in TOML.
//!
//! ```toml
//! state_dir = "/var/lib/rivet"
//!
//! [api]
//! listen = "127.0.0.1:8443"
//! # tls_cert = "/etc/rivet/api.pem"   # with tls_key; generated under state_dir/tls otherwise
//! # tls_key = "/etc/rivet/api-key.pem"
//! # token_file = "/etc/rivet/api-token"  # default: state_dir/api-token, generated
//! # hostnames = ["rivet.example.net"]    # extra names in the generated certificate
//!
//! [engine]
//! provisioning_limit = 20
//!
//! [drivers]
//! kind = "simulated"   # or "real": Redfish/IPMI, rivet-pxe and the agent channel
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drivers::agent_channel::ChannelSettings;
use crate::drivers::bmc::BmcSettings;
use crate::drivers::boot::BootSettings;
use crate::lifecycle::{Backoff, Policy};
use crate::runtime::EngineConfig;
use crate::sim::SimConfig;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Where the store, the keys and the generated certificate live.
    pub state_dir: PathBuf,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub engine: EngineSettings,
    pub drivers: DriversConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub hostnames: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            token_file: None,
            hostnames: Vec::new(),
        }
    }
}

/// Engine tuning; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Hosts inspecting, provisioning or deprovisioning at once (0: no limit).
    pub provisioning_limit: usize,
    /// Keep the agent running between inspection, preparation and provisioning.
    pub fast_track: bool,
    pub agent_timeout_secs: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Seconds between power reads of settled hosts (0: off).
    pub power_sync_interval_secs: u64,
    pub power_sync_batch: usize,
    pub power_sync_concurrency: usize,
    pub soft_power_off_timeout_secs: u64,
    pub power_wait_timeout_secs: u64,
    pub power_poll_interval_ms: u64,
    pub store_cache_mib: usize,
    pub timeline_limit: u64,
    /// The key that seals secrets (default: state_dir/secrets.key, created 0600).
    pub key_file: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let engine = EngineConfig::new("");
        let policy = Policy::default();
        Self {
            provisioning_limit: engine.provisioning_limit,
            fast_track: policy.fast_track,
            agent_timeout_secs: policy.agent_timeout.as_secs(),
            backoff_base_ms: millis(policy.backoff.base),
            backoff_max_ms: millis(policy.backoff.max),
            power_sync_interval_secs: engine.power_sync_interval.as_secs(),
            power_sync_batch: engine.power_sync_batch,
            power_sync_concurrency: engine.power_sync_concurrency,
            soft_power_off_timeout_secs: engine.soft_power_off_timeout.as_secs(),
            power_wait_timeout_secs: engine.power_wait_timeout.as_secs(),
            power_poll_interval_ms: millis(engine.power_poll_interval),
            store_cache_mib: engine.store_cache_bytes >> 20,
            timeline_limit: engine.timeline_limit,
            key_file: None,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Which drivers the engine runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriversConfig {
    pub kind: DriverKind,
    /// Settings of the simulated lab (`kind = "simulated"`).
    #[serde(default)]
    pub simulated: SimConfig,
    /// Settings of the real drivers (`kind = "real"`).
    #[serde(default)]
    pub real: RealDrivers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// The in-process simulators, for tests, benchmarks and demos without hardware.
    Simulated,
    /// Redfish/IPMI BMCs, the rivet-pxe boot services and the agent channel.
    #[serde(alias = "hardware")]
    Real,
}

/// `[drivers.real]`: BMCs, boot services and the agent channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealDrivers {
    pub bmc: BmcSettings,
    pub boot: BootSettings,
    pub agent: ChannelSettings,
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        // Relative paths are relative to the file, not to wherever the daemon started.
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| err.to_string())
    }

    fn resolve(&mut self, base: &Path) {
        let absolute = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        absolute(&mut self.state_dir);
        for path in [
            &mut self.api.tls_cert,
            &mut self.api.tls_key,
            &mut self.api.token_file,
            &mut self.engine.key_file,
            &mut self.drivers.simulated.journal,
            &mut self.drivers.real.boot.files_root,
        ]
        .into_iter()
        .flatten()
        {
            absolute(path);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "api.tls_cert and api.tls_key go together: give both or neither".into(),
            ));
        }
        if self.drivers.kind == DriverKind::Real && self.drivers.real.boot.engine_url.is_empty() {
            return Err(ConfigError::Invalid(
                "drivers.real.boot.engine_url is required: the https:// URL agents reach this \
                 engine's API at (its provisioning-network address and the API port)"
                    .into(),
            ));
        }
        if self.engine.power_sync_batch == 0 || self.engine.power_sync_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "engine.power_sync_batch and engine.power_sync_concurrency must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        let settings = &self.engine;
        let mut engine = EngineConfig::new(&self.state_dir);
        engine.key_file = settings.key_file.clone();
        engine.store_cache_bytes = settings.store_cache_mib << 20;
        engine.policy = Policy {
            fast_track: settings.fast_track,
            agent_timeout: Duration::from_secs(settings.agent_timeout_secs),
            backoff: Backoff {
                base: Duration::from_millis(settings.backoff_base_ms),
                max: Duration::from_millis(settings.backoff_max_ms),
            },
            ..Policy::default()
        };
        engine.provisioning_limit = settings.provisioning_limit;
        engine.power_sync_interval = Duration::from_secs(settings.power_sync_interval_secs);
        engine.power_sync_batch = settings.power_sync_batch;
        engine.power_sync_concurrency = settings.power_sync_concurrency;
        engine.soft_power_off_timeout = Duration::from_secs(settings.soft_power_off_timeout_secs);
        engine.power_wait_timeout = Duration::from_secs(settings.power_wait_timeout_secs);
        engine.power_poll_interval = Duration::from_millis(settings.power_poll_interval_ms);
        engine.timeline_limit = settings.timeline_limit;
        engine
    }

    pub fn token_path(&self) -> PathBuf {
        self.api
            .token_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("api-token"))
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.state_dir.join("tls")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_every_default() {
        let config =
            ServeConfig::parse("state_dir = \"/var/lib/rivet\"\n[drivers]\nkind = \"simulated\"\n")
                .unwrap();
        assert_eq!(config.api.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(config.engine.provisioning_limit, 20);
        let engine = config.engine_config();
        assert_eq!(engine.policy.agent_timeout, Duration::from_secs(1800));
        assert_eq!(engine.store_cache_bytes, 16 << 20);
        assert_eq!(config.token_path(), Path::new("/var/lib/rivet/api-token"));
    }

    #[test]
    fn every_setting_is_read() {
        let text = r#"
            state_dir = "state"
            [api]
            listen = "0.0.0.0:9000"
            hostnames = ["rivet.lab"]
            [engine]
            provisioning_limit = 0
            fast_track = false
            agent_timeout_secs = 30
            backoff_base_ms = 100
            backoff_max_ms = 1000
            power_sync_interval_secs = 0
            [drivers]
            kind = "simulated"
            [drivers.simulated]
            bmc_latency_ms = 0
            journal = "sim.log"
        "#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rivet.toml");
        std::fs::write(&path, text).unwrap();
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(config.state_dir, dir.path().join("state"));
        assert_eq!(
            config.drivers.simulated.journal,
            Some(dir.path().join("sim.log"))
        );
        let engine = config.engine_config();
        assert!(!engine.policy.fast_track);
        assert_eq!(engine.provisioning_limit, 0);
        assert_eq!(engine.power_sync_interval, Duration::ZERO);
        assert_eq!(engine.policy.backoff.max, Duration::from_secs(1));
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = ServeConfig::parse(
            "state_dir = \"s\"\nstate_dri = 1\n[drivers]\nkind = \"simulated\"\n",
        )
        .unwrap_err();
        assert!(unknown.contains("state_dri"), "{unknown}");
        let kind =
            ServeConfig::parse("state_dir = \"s\"\n[drivers]\nkind = \"magic\"\n").unwrap_err();
        assert!(kind.contains("magic"), "{kind}");
        let mut half_tls =
            ServeConfig::parse("state_dir = \"s\"\n[drivers]\nkind = \"simulated\"\n").unwrap();
        half_tls.api.tls_cert = Some("c.pem".into());
        assert!(
            half_tls
                .validate()
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
        let no_url = ServeConfig::parse("state_dir = \"s\"\n[drivers]\nkind = \"real\"\n").unwrap();
        assert!(
            no_url
                .validate()
                .unwrap_err()
                .to_string()
                .contains("engine_url")
        );
    }

    #[test]
    fn real_drivers_are_configured_in_their_tables() {
        let text = r#"
            state_dir = "/var/lib/rivet"
            [drivers]
            kind = "real"
            [drivers.real.bmc]
            ipmi_fallback = true
            [drivers.real.boot]
            engine_url = "https://10.0.0.1:8443"
            server_ip = "10.0.0.1"
            dhcp = "proxy"
            files_root = "agent"
            [drivers.real.agent]
            reconnect_grace_secs = 30
        "#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rivet.toml");
        std::fs::write(&path, text).unwrap();
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(config.drivers.kind, DriverKind::Real);
        let real = &config.drivers.real;
        assert!(real.bmc.ipmi_fallback);
        assert_eq!(real.boot.dhcp, crate::drivers::boot::DhcpChoice::Proxy);
        assert_eq!(real.boot.files_root, Some(dir.path().join("agent")));
        assert_eq!(real.agent.reconnect_grace_secs, 30);
        assert_eq!(real.agent.keepalive_secs, 15);
        // The phase-1 spelling still reads.
        let old =
            ServeConfig::parse("state_dir = \"s\"\n[drivers]\nkind = \"hardware\"\n").unwrap();
        assert_eq!(old.drivers.kind, DriverKind::Real);
    }
}
