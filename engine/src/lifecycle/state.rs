//! The status vocabulary of a BareMetalHost: provisioning states, operational status and
//! error types, spelled exactly as Metal³ spells them (`metal3-api` §1.7–1.8).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a host is in its lifecycle (`status.provisioning.state`).
///
/// There is no error state: a failure leaves the host where it is with
/// [`OperationalStatus::Error`] and an [`ErrorType`], as BMO does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProvisioningState {
    /// Enrolled without BMC details; nothing can be done until they are given.
    #[serde(rename = "unmanaged")]
    Unmanaged,
    /// Checking BMC access and reading the power state.
    #[serde(rename = "registering")]
    Registering,
    /// Collecting the hardware inventory (in-band through the agent or out-of-band).
    #[serde(rename = "inspecting")]
    Inspecting,
    /// Cleaning disks (and, later, RAID and BIOS settings) before first use.
    #[serde(rename = "preparing")]
    Preparing,
    /// Ready to be provisioned.
    #[serde(rename = "available")]
    Available,
    /// Writing the image and booting the host from disk.
    #[serde(rename = "provisioning")]
    Provisioning,
    /// Running the provisioned image.
    #[serde(rename = "provisioned")]
    Provisioned,
    /// Running something Rivet did not write; only power is managed.
    #[serde(rename = "externally provisioned")]
    ExternallyProvisioned,
    /// Cleaning up after provisioning (or a failed provisioning).
    #[serde(rename = "deprovisioning")]
    Deprovisioning,
    /// Deleting: turning the host off first.
    #[serde(rename = "powering off before delete")]
    PoweringOffBeforeDelete,
    /// Deleting: forgetting the host.
    #[serde(rename = "deleting")]
    Deleting,
}

impl ProvisioningState {
    pub const ALL: [Self; 11] = [
        Self::Unmanaged,
        Self::Registering,
        Self::Inspecting,
        Self::Preparing,
        Self::Available,
        Self::Provisioning,
        Self::Provisioned,
        Self::ExternallyProvisioned,
        Self::Deprovisioning,
        Self::PoweringOffBeforeDelete,
        Self::Deleting,
    ];

    /// The Metal³ spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unmanaged => "unmanaged",
            Self::Registering => "registering",
            Self::Inspecting => "inspecting",
            Self::Preparing => "preparing",
            Self::Available => "available",
            Self::Provisioning => "provisioning",
            Self::Provisioned => "provisioned",
            Self::ExternallyProvisioned => "externally provisioned",
            Self::Deprovisioning => "deprovisioning",
            Self::PoweringOffBeforeDelete => "powering off before delete",
            Self::Deleting => "deleting",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// States whose power follows `online` and where steady-state work (reboots, adoption)
    /// happens.
    pub const fn is_stable(self) -> bool {
        matches!(
            self,
            Self::Available | Self::Provisioned | Self::ExternallyProvisioned
        )
    }

    /// States that hold one of the limited provisioning slots (BMO's `HasCapacity`).
    pub const fn needs_capacity(self) -> bool {
        matches!(
            self,
            Self::Inspecting | Self::Provisioning | Self::Deprovisioning
        )
    }
}

impl fmt::Display for ProvisioningState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a host is doing (`status.operationalStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OperationalStatus {
    #[serde(rename = "OK")]
    Ok,
    /// Enrolled without BMC details.
    #[serde(rename = "discovered")]
    Discovered,
    /// The last operation failed; see the error type and message.
    #[serde(rename = "error")]
    Error,
    /// Waiting for a provisioning slot.
    #[serde(rename = "delayed")]
    Delayed,
    /// Removed from management without deprovisioning.
    #[serde(rename = "detached")]
    Detached,
}

impl OperationalStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Discovered => "discovered",
            Self::Error => "error",
            Self::Delayed => "delayed",
            Self::Detached => "detached",
        }
    }
}

impl fmt::Display for OperationalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a host is in (`status.errorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorType {
    /// BMC access failed on a host that is running a provisioned image.
    #[serde(rename = "provisioned registration error")]
    ProvisionedRegistration,
    #[serde(rename = "registration error")]
    Registration,
    #[serde(rename = "inspection error")]
    Inspection,
    #[serde(rename = "preparation error")]
    Preparation,
    /// Provisioning or deprovisioning failed.
    #[serde(rename = "provisioning error")]
    Provisioning,
    #[serde(rename = "power management error")]
    PowerManagement,
    /// BMO's Go code has it; its CRD enum lacks it (`metal3-api` §1.7).
    #[serde(rename = "detach error")]
    Detach,
}

impl ErrorType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ProvisionedRegistration => "provisioned registration error",
            Self::Registration => "registration error",
            Self::Inspection => "inspection error",
            Self::Preparation => "preparation error",
            Self::Provisioning => "provisioning error",
            Self::PowerManagement => "power management error",
            Self::Detach => "detach error",
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_use_the_metal3_spelling() {
        for state in ProvisioningState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(ProvisioningState::parse(state.as_str()), Some(state));
        }
        assert_eq!(
            serde_json::to_string(&ErrorType::PowerManagement).unwrap(),
            "\"power management error\""
        );
        assert_eq!(
            serde_json::to_string(&OperationalStatus::Ok).unwrap(),
            "\"OK\""
        );
    }
}
