//! The seams between the engine and the world: BMCs, boot services and agents.
//!
//! The runtime executes lifecycle steps through these three traits and nothing else. They
//! are implemented by the simulators in [`crate::sim`] and by the real drivers here:
//! [`bmc`] (Redfish/IPMI through `rivet-bmc`), [`boot`] (the `rivet-pxe` boot services) and
//! [`agent_channel`] (one TLS WebSocket per agent on the API listener).

pub mod agent_channel;
pub mod bmc;
pub mod boot;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rivet_bmc::Credentials;
use rivet_model::{HardwareDetails, RootDeviceHints};

use crate::lifecycle::{
    BootMethod, BootMode, BootObservations, CleaningPolicy, FailureClass, HostId, ImageSpec,
    MacAddr, StepFailure, Timestamp,
};

/// How to reach one host's BMC.
#[derive(Clone)]
pub struct BmcTarget {
    pub address: String,
    pub credentials: Credentials,
    /// Verify the BMC's TLS certificate (on unless the host says otherwise).
    pub verify_tls: bool,
}

impl fmt::Debug for BmcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcTarget")
            .field("address", &self.address)
            .field("username", &self.credentials.username())
            .field("verify_tls", &self.verify_tls)
            .finish_non_exhaustive()
    }
}

/// Everything a driver needs to know about the host it acts on.
#[derive(Debug, Clone)]
pub struct HostTarget {
    pub id: HostId,
    pub name: Arc<str>,
    pub boot_mac: Option<MacAddr>,
    pub boot_method: BootMethod,
    pub boot_mode: BootMode,
    pub bmc: BmcTarget,
}

/// How to turn a host off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// Ask the operating system (ACPI power button).
    Soft,
    /// Cut power.
    Hard,
}

/// Where the host boots next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootInstruction {
    /// Once from the network (PXE, then iPXE from the boot services).
    Network,
    /// Once from this ISO, attached as a virtual CD (ejecting what was there).
    VirtualMedia { iso_url: String },
    /// Once over UEFI HTTP from this URL.
    UefiHttp { url: String },
    /// From the local disk from now on, with virtual media ejected.
    Disk,
}

/// A per-deployment agent token: 32 random bytes, URL-safe base64. It travels on the
/// agent's kernel command line (or inside its ISO) and in a request header; the engine
/// stores only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken(<redacted>)")
    }
}

/// What the boot services answer for a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEntry {
    /// Boot the agent, handing it this token.
    Agent { host: HostId, token: AgentToken },
    /// Boot from the local disk (iPXE `exit`/`sanboot`).
    Disk,
}

/// Data for the config drive.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigDrive {
    pub user_data: Option<String>,
    pub network_data: Option<String>,
    /// The engine's defaults (`uuid`, `name`, `local-hostname`) merged with the host's.
    pub meta_data: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for ConfigDrive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigDrive")
            .field("user_data", &self.user_data.as_ref().map(|_| "<redacted>"))
            .field(
                "network_data",
                &self.network_data.as_ref().map(|_| "<redacted>"),
            )
            .field("meta_data_keys", &self.meta_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What to write to a host's disk.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub image: ImageSpec,
    pub root_device_hints: Option<RootDeviceHints>,
    pub boot_mode: BootMode,
    pub config_drive: ConfigDrive,
}

/// Progress an agent reports while it works; shown live, not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProgress {
    pub percent: Option<u8>,
    pub message: String,
}

/// Where agent progress goes.
pub type ProgressSink = Arc<dyn Fn(AgentProgress) + Send + Sync>;

/// Why a driver call failed; the kind decides whether the step is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub kind: DriverErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverErrorKind {
    /// No answer: connection refused, reset, DNS. Retried.
    Unreachable,
    /// Too slow, or a 5xx. Retried.
    Timeout,
    /// The BMC rejected the credentials.
    Credentials,
    /// The step needs the agent and none is connected for the host.
    AgentNotConnected,
    /// The driver cannot do this for this host (no virtual media, no out-of-band inventory).
    Unsupported,
    /// Anything else; the operation fails (image 404, checksum mismatch, disk error).
    Failed,
}

impl DriverError {
    pub fn new(kind: DriverErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// How the lifecycle treats this failure.
    pub fn class(&self) -> FailureClass {
        match self.kind {
            DriverErrorKind::Unreachable | DriverErrorKind::Timeout => FailureClass::Transient,
            DriverErrorKind::Credentials => FailureClass::Credentials,
            DriverErrorKind::AgentNotConnected => FailureClass::AgentGone,
            DriverErrorKind::Unsupported | DriverErrorKind::Failed => FailureClass::Fatal,
        }
    }
}

impl From<DriverError> for StepFailure {
    fn from(err: DriverError) -> Self {
        StepFailure::new(err.class(), err.message)
    }
}

/// Power and boot through a host's BMC. Mutating calls return once the BMC accepted the
/// request; the runtime polls [`BmcDriver::power_state`] to see it take effect.
#[async_trait]
pub trait BmcDriver: Send + Sync + fmt::Debug {
    /// `true` when the host is on.
    async fn power_state(&self, host: &HostTarget) -> Result<bool, DriverError>;
    async fn power_on(&self, host: &HostTarget) -> Result<(), DriverError>;
    async fn power_off(&self, host: &HostTarget, mode: PowerOff) -> Result<(), DriverError>;
    async fn set_boot(&self, host: &HostTarget, boot: &BootInstruction) -> Result<(), DriverError>;
    /// Out-of-band inventory.
    async fn inventory(&self, host: &HostTarget) -> Result<HardwareDetails, DriverError>;
}

/// The boot services' host table and artefacts.
#[async_trait]
pub trait BootService: Send + Sync + fmt::Debug {
    /// What the boot services answer for `mac` from now on.
    async fn set_entry(&self, mac: MacAddr, entry: BootEntry) -> Result<(), DriverError>;
    /// Stops answering for `mac`.
    async fn remove(&self, mac: MacAddr) -> Result<(), DriverError>;
    /// Builds (or reuses) the per-host agent ISO carrying `token` and returns its URL.
    async fn agent_iso(&self, host: &HostTarget, token: &AgentToken)
    -> Result<String, DriverError>;
    /// The URL a UEFI HTTP boot of `host` fetches.
    fn uefi_http_url(&self, host: &HostTarget) -> String;
    /// What the boot services have seen of `host` since `since`, to explain a silent agent.
    fn observations(
        &self,
        host: HostId,
        mac: Option<MacAddr>,
        since: Timestamp,
    ) -> BootObservations;
}

/// How a connecting agent identifies itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Set when the agent knows it (virtual-media ISOs carry it).
    pub host: Option<HostId>,
    /// The MAC addresses of the machine the agent runs on.
    pub macs: Vec<MacAddr>,
}

/// An agent the engine would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no host expects an agent with this identity and token")]
pub struct AgentRejected;

/// The engine's side of the agent channel: the channel reports connections here.
#[async_trait]
pub trait AgentRegistry: Send + Sync {
    /// An agent connected; the engine looks the host up and checks the token.
    async fn connected(
        &self,
        identity: AgentIdentity,
        token: AgentToken,
    ) -> Result<HostId, AgentRejected>;
    /// The agent of `host` went away.
    async fn disconnected(&self, host: HostId);
}

/// Commands to the agent running on a host.
#[async_trait]
pub trait AgentDriver: Send + Sync + fmt::Debug {
    /// Reports agent connections to `registry` from now on.
    fn attach(&self, registry: Arc<dyn AgentRegistry>);
    async fn inspect(&self, host: &HostTarget) -> Result<HardwareDetails, DriverError>;
    async fn clean(
        &self,
        host: &HostTarget,
        cleaning: &CleaningPolicy,
        progress: ProgressSink,
    ) -> Result<(), DriverError>;
    async fn deploy(
        &self,
        host: &HostTarget,
        deploy: &DeployRequest,
        progress: ProgressSink,
    ) -> Result<(), DriverError>;
    /// Ends the agent session of `host`; its token is no longer accepted.
    async fn release(&self, host: &HostTarget);
}

/// The drivers an engine runs with.
#[derive(Debug, Clone)]
pub struct Drivers {
    pub bmc: Arc<dyn BmcDriver>,
    pub boot: Arc<dyn BootService>,
    pub agent: Arc<dyn AgentDriver>,
}
