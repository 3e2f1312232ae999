//! What goes in and out of the engine: enrolment requests, host views, pages, events and
//! errors. These are also the REST API's bodies.

use std::fmt;
use std::sync::Arc;

use rivet_model::RootDeviceHints;
use serde::{Deserialize, Serialize};

use crate::drivers::AgentProgress;
use crate::lifecycle::{
    BmcKind, BootMode, CleaningPolicy, HostId, HostSpec, HostStatus, ImageSpec, InspectionMode,
    MacAddr, Operation, OperationalStatus, ProvisioningState, Rejected, Step, TimelineEntry,
    Timestamp,
};
use crate::store::StoreError;

/// BMC address and credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcAccess {
    pub address: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub disable_certificate_verification: bool,
}

impl fmt::Debug for BmcAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcAccess")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn yes() -> bool {
    true
}

/// Take a running host over instead of inspecting and cleaning it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Adoption {
    /// The image the host runs; without one it is externally provisioned.
    #[serde(default)]
    pub image: Option<ImageSpec>,
}

/// A request to enroll a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollRequest {
    /// Unique; letters, digits, `.`, `_` and `-`, and not a UUID (the BMO rule).
    pub name: String,
    /// Without it the host is unmanaged until BMC details are given.
    #[serde(default)]
    pub bmc: Option<BmcAccess>,
    /// Required unless the host boots the agent from virtual media.
    #[serde(default, rename = "bootMACAddress")]
    pub boot_mac_address: Option<MacAddr>,
    #[serde(default)]
    pub boot_mode: BootMode,
    #[serde(default = "yes")]
    pub online: bool,
    #[serde(default)]
    pub root_device_hints: Option<RootDeviceHints>,
    #[serde(default)]
    pub cleaning: CleaningPolicy,
    #[serde(default)]
    pub externally_provisioned: bool,
    #[serde(default)]
    pub inspection_mode: InspectionMode,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub adopt: Option<Adoption>,
}

impl EnrollRequest {
    /// A request for a host with this name and BMC, with every default.
    pub fn new(name: impl Into<String>, bmc: Option<BmcAccess>, mac: Option<MacAddr>) -> Self {
        Self {
            name: name.into(),
            bmc,
            boot_mac_address: mac,
            boot_mode: BootMode::default(),
            online: true,
            root_device_hints: None,
            cleaning: CleaningPolicy::default(),
            externally_provisioned: false,
            inspection_mode: InspectionMode::default(),
            description: None,
            architecture: None,
            adopt: None,
        }
    }

    /// Checks what can be checked without the engine's state.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_name(&self.name)?;
        if let Some(bmc) = &self.bmc {
            validate_bmc(bmc, self.boot_mac_address)?;
        }
        Ok(())
    }

    pub(super) fn spec(&self) -> HostSpec {
        let mut spec = HostSpec::new(
            self.bmc.as_ref().map(|bmc| crate::lifecycle::BmcSpec {
                address: bmc.address.trim().to_owned(),
                disable_certificate_verification: bmc.disable_certificate_verification,
            }),
            self.boot_mac_address,
        );
        spec.boot_mode = self.boot_mode;
        spec.online = self.online;
        spec.root_device_hints = self.root_device_hints.clone();
        spec.cleaning = self.cleaning.clone();
        spec.externally_provisioned = self.externally_provisioned;
        spec.inspection_mode = self.inspection_mode;
        spec.description = self.description.clone();
        spec.architecture = self.architecture.clone();
        spec
    }
}

/// Host names follow BareMetalHost's rule: `[A-Za-z0-9._-]`, not a UUID.
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 253 || !name.chars().all(allowed) {
        return Err(EngineError::Invalid(format!(
            "`{name}` is not a valid host name (1–253 of A-Z a-z 0-9 . _ -)"
        )));
    }
    if name.parse::<HostId>().is_ok() {
        return Err(EngineError::Invalid(format!(
            "`{name}` is a UUID; host names must not be (they would be confused with host ids)"
        )));
    }
    Ok(())
}

/// A BMC address the engine can use, with credentials, and a boot MAC when the boot method
/// needs one.
pub fn validate_bmc(bmc: &BmcAccess, mac: Option<MacAddr>) -> Result<(), EngineError> {
    if bmc.username.is_empty() || bmc.password.is_empty() {
        return Err(EngineError::Invalid(
            "BMC credentials need a user name and a password".into(),
        ));
    }
    validate_bmc_address(&bmc.address, mac)
}

/// A BMC address some driver handles, with a boot MAC when its boot method needs one.
pub fn validate_bmc_address(address: &str, mac: Option<MacAddr>) -> Result<(), EngineError> {
    let kind = BmcKind::classify(address).map_err(|err| EngineError::Invalid(err.to_string()))?;
    if kind.needs_boot_mac() && mac.is_none() {
        return Err(EngineError::Invalid(format!(
            "bootMACAddress is required: the agent of a {} host is found by its MAC",
            kind.boot
        )));
    }
    Ok(())
}

/// Where a running operation stands, for people and progress bars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub operation: Operation,
    pub step: Step,
    /// 1-based position of the step in the operation.
    pub index: usize,
    pub total: usize,
    pub description: String,
    pub since: Timestamp,
}

/// A host as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub id: HostId,
    pub name: String,
    pub spec: HostSpec,
    /// The BMC user (the password is never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_username: Option<String>,
    pub status: HostStatus,
    /// What the host waits for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

/// Which hosts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Start after this host name (the previous page's `next`).
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub state: Option<ProvisioningState>,
}

/// One page of hosts, in name order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub items: Vec<HostView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How many hosts match, over all pages.
    pub total: usize,
}

/// What happened to a host, as the event stream carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEvent {
    pub host: String,
    pub id: HostId,
    pub state: ProvisioningState,
    pub operational_status: OperationalStatus,
    #[serde(flatten)]
    pub kind: HostEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum HostEventKind {
    /// A committed timeline entry.
    Timeline { entry: TimelineEntry },
    /// Live progress from the agent (not stored).
    Progress {
        percent: Option<u8>,
        message: String,
    },
    /// The host is gone.
    Deleted,
}

impl HostEventKind {
    pub(super) fn progress(progress: AgentProgress) -> Self {
        Self::Progress {
            percent: progress.percent,
            message: progress.message,
        }
    }
}

/// Secret changes that ride along with a request.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretsUpdate {
    Credentials {
        username: String,
        password: String,
    },
    ConfigDrive {
        user_data: Option<String>,
        network_data: Option<String>,
        meta_data: Option<String>,
    },
}

impl fmt::Debug for SecretsUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credentials { username, .. } => f
                .debug_struct("Credentials")
                .field("username", username)
                .finish_non_exhaustive(),
            Self::ConfigDrive { .. } => f.write_str("ConfigDrive(<redacted>)"),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("no host is named `{0}`")]
    NotFound(String),
    #[error("a host named `{0}` already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    /// The request does not apply to the host as it is.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("the store failed: {0}")]
    Store(Arc<StoreError>),
    #[error("cannot start the engine: {0}")]
    Start(String),
    #[error("the engine has stopped")]
    Stopped,
}

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        Self::Store(Arc::new(err))
    }
}
