//! A host as the engine keeps it: the desired state (spec, what users and the operator ask
//! for) and the observed state (status, what the engine has done and seen).
//!
//! Secrets — BMC credentials and config-drive data — are not part of this record; the store
//! keeps them sealed in a table of their own and the runtime holds them separately.

use serde::{Deserialize, Serialize};

use rivet_model::RootDeviceHints;

use super::address::{BmcKind, BootMethod};
use super::ids::{HostId, MacAddr};
use super::state::{ErrorType, OperationalStatus, ProvisioningState};
use super::steps::{Operation, Step};
use super::time::Timestamp;

/// A managed host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub id: HostId,
    pub name: String,
    pub spec: HostSpec,
    pub status: HostStatus,
}

/// How to reach the BMC. The credentials live in the sealed secrets table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BmcSpec {
    pub address: String,
    #[serde(default)]
    pub disable_certificate_verification: bool,
}

/// Firmware boot mode (`spec.bootMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BootMode {
    #[default]
    #[serde(rename = "UEFI")]
    Uefi,
    #[serde(rename = "UEFISecureBoot")]
    UefiSecureBoot,
    #[serde(rename = "legacy")]
    Legacy,
}

/// Image checksum algorithm (`spec.image.checksumType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumType {
    Md5,
    Sha256,
    Sha512,
    /// Guess from the length of the hex digest.
    Auto,
}

/// Image format (`spec.image.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    Raw,
    Qcow2,
    Vdi,
    Vmdk,
    LiveIso,
}

/// The image to provision (`spec.image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<ChecksumType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
}

/// What cleaning does before first use and after every deprovisioning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleaningMode {
    /// Wipe partition tables and filesystem signatures (Metal³'s default).
    #[default]
    Metadata,
    /// Overwrite or securely erase whole disks (a Rivet extension; Metal³ does not expose it).
    Erase,
    /// Do not clean.
    Disabled,
}

/// The cleaning policy: a mode, optionally restricted to some disks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleaningPolicy {
    #[serde(default)]
    pub mode: CleaningMode,
    /// Disks to clean (`/dev/…` names or by-path names); empty means every disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
}

/// How inspection is done (`spec.inspectionMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InspectionMode {
    /// In-band, through the agent.
    #[default]
    Agent,
    /// Out-of-band through the BMC (BMO main's `fast`).
    #[serde(alias = "fast")]
    OutOfBand,
    Disabled,
}

/// Reboot style (`reboot.metal3.io` mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootMode {
    /// Ask the OS, then cut power if it does not stop in time.
    Soft,
    Hard,
}

/// What to do with a detached host that is deleted (`baremetalhost.metal3.io/detached`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteAction {
    /// Delete at once, without powering off or cleaning.
    #[default]
    Delete,
    /// Keep the host until it is attached again.
    Delay,
}

/// A detach request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetachSpec {
    #[serde(default)]
    pub delete_action: DeleteAction,
    /// Detach even outside the stable states.
    #[serde(default)]
    pub force: bool,
}

/// What users and the operator want for a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// `None`: the host is unmanaged until BMC details are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<BmcSpec>,
    #[serde(
        default,
        rename = "bootMACAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_mac_address: Option<MacAddr>,
    #[serde(default)]
    pub boot_mode: BootMode,
    /// Desired power in the stable states.
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,
    #[serde(default)]
    pub cleaning: CleaningPolicy,
    #[serde(default)]
    pub externally_provisioned: bool,
    #[serde(default)]
    pub inspection_mode: InspectionMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Set while the host should be detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached: Option<DetachSpec>,
    /// A pending reboot; consumed when the reboot starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootMode>,
    /// A pending re-inspection; consumed when inspection starts.
    #[serde(default)]
    pub inspect_requested: bool,
    /// Take the host over as it runs (provisioned with `image`, or externally provisioned)
    /// instead of inspecting and cleaning it; consumed by the adoption.
    #[serde(default)]
    pub adopt_requested: bool,
    /// Deletion was requested; the host walks the deletion path and is then forgotten.
    #[serde(default)]
    pub deleting: bool,
    /// Bumped whenever the BMC credentials change, so the host registers again.
    #[serde(default)]
    pub credentials_version: u32,
}

impl HostSpec {
    /// A spec for a host with this BMC, online, with every default.
    pub fn new(bmc: Option<BmcSpec>, boot_mac_address: Option<MacAddr>) -> Self {
        Self {
            bmc,
            boot_mac_address,
            boot_mode: BootMode::default(),
            online: true,
            image: None,
            root_device_hints: None,
            cleaning: CleaningPolicy::default(),
            externally_provisioned: false,
            inspection_mode: InspectionMode::default(),
            description: None,
            architecture: None,
            detached: None,
            reboot: None,
            inspect_requested: false,
            adopt_requested: false,
            deleting: false,
            credentials_version: 0,
        }
    }

    /// How the agent boots, from the BMC address; `None` when there is no (valid) address.
    pub fn boot_method(&self) -> Option<BootMethod> {
        let bmc = self.bmc.as_ref()?;
        BmcKind::classify(&bmc.address).ok().map(|kind| kind.boot)
    }
}

/// The last failure (`status.errorType` and `status.errorMessage`, with what failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
    pub operation: Operation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    pub at: Timestamp,
    /// When the failed operation or step is retried (exponential back-off).
    pub retry_at: Timestamp,
}

/// Start and end of the last run of each main operation (`status.operationHistory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationMetric {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationHistory {
    pub register: OperationMetric,
    pub inspect: OperationMetric,
    pub provision: OperationMetric,
    pub deprovision: OperationMetric,
}

impl OperationHistory {
    pub fn metric_mut(&mut self, operation: Operation) -> Option<&mut OperationMetric> {
        match operation {
            Operation::Register => Some(&mut self.register),
            Operation::Inspect => Some(&mut self.inspect),
            Operation::Provision => Some(&mut self.provision),
            Operation::Deprovision => Some(&mut self.deprovision),
            _ => None,
        }
    }
}

/// The agent session of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSession {
    /// SHA-256 of the current per-deployment token, hex; the token itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Whether an agent with that token is connected now. Not trusted across restarts.
    #[serde(default)]
    pub connected: bool,
}

/// Where the current step of a running operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum StepPhase {
    /// Handed to the runtime; its outcome has not come back yet.
    InFlight,
    /// Waiting for the agent to connect until `deadline`.
    AwaitingAgent { deadline: Timestamp },
    /// Failed with a transient error; runs again at `at`.
    Retrying { at: Timestamp },
}

/// A running operation: its plan and the cursor into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub operation: Operation,
    pub steps: Vec<Step>,
    /// Index of the current step in `steps`.
    pub index: usize,
    /// Attempts of the current step so far (0 for the first).
    pub attempt: u16,
    pub started: Timestamp,
    pub step_started: Timestamp,
    /// Identifies the dispatch whose outcome is awaited; older outcomes are ignored.
    pub token: u32,
    #[serde(flatten)]
    pub phase: StepPhase,
    /// For provisioning: the image URL being written, to notice a change of mind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_image: Option<String>,
}

impl Progress {
    pub fn current_step(&self) -> Option<Step> {
        self.steps.get(self.index).copied()
    }
}

/// What the host is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Activity {
    /// Nothing; the lifecycle decides what is next on the next event.
    #[default]
    Idle,
    /// Waiting for a provisioning slot before entering `target` to run `operation`.
    #[serde(rename_all = "camelCase")]
    Delayed {
        operation: Operation,
        target: ProvisioningState,
        since: Timestamp,
    },
    Running(Progress),
    /// `operation` failed and runs again at `until`.
    #[serde(rename_all = "camelCase")]
    Backoff {
        operation: Operation,
        until: Timestamp,
    },
}

/// What the engine has done and seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub state: ProvisioningState,
    pub operational_status: OperationalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HostError>,
    /// Failures since the last success of the failing operation; drives the back-off.
    pub error_count: u32,
    /// Last known power; `None` until the BMC has been read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powered_on: Option<bool>,
    /// The image on the disk (`status.provisioning.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    /// BMC access was validated with the current credentials.
    pub registered: bool,
    /// The host is provisioned or externally provisioned and the engine has taken it over.
    pub adopted: bool,
    /// The host is detached: nothing is done to it until it is attached again.
    pub detached: bool,
    /// An inventory is stored for this host.
    pub has_hardware: bool,
    /// CPU architecture, from the spec or inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    pub agent: AgentSession,
    /// Holds one of the limited provisioning slots.
    pub slot: bool,
    pub activity: Activity,
    pub operation_history: OperationHistory,
    pub last_updated: Timestamp,
    /// Sequence number of the host's last timeline entry.
    pub timeline_seq: u64,
    /// Counter behind [`Progress::token`].
    pub dispatches: u32,
}

impl Host {
    /// A freshly enrolled host: registering, or unmanaged without BMC details.
    pub fn new(id: HostId, name: impl Into<String>, spec: HostSpec, now: Timestamp) -> Self {
        let state = if spec.bmc.is_some() {
            ProvisioningState::Registering
        } else {
            ProvisioningState::Unmanaged
        };
        let operational_status = if spec.bmc.is_some() {
            OperationalStatus::Ok
        } else {
            OperationalStatus::Discovered
        };
        let architecture = spec.architecture.clone();
        Self {
            id,
            name: name.into(),
            spec,
            status: HostStatus {
                state,
                operational_status,
                error: None,
                error_count: 0,
                powered_on: None,
                image: None,
                registered: false,
                adopted: false,
                detached: false,
                has_hardware: false,
                architecture,
                agent: AgentSession::default(),
                slot: false,
                activity: Activity::Idle,
                operation_history: OperationHistory::default(),
                last_updated: now,
                timeline_seq: 0,
                dispatches: 0,
            },
        }
    }

    /// The running operation's progress, if any.
    pub fn progress(&self) -> Option<&Progress> {
        match &self.status.activity {
            Activity::Running(progress) => Some(progress),
            _ => None,
        }
    }
}
