//! The secret part of a host: BMC credentials and config-drive data. Kept apart from the
//! host record, sealed at rest, never logged and never returned by the API.

use std::fmt;

use rivet_bmc::Credentials;
use serde::{Deserialize, Serialize};

/// A host's secrets.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSecrets {
    #[serde(default)]
    pub bmc_username: String,
    #[serde(default)]
    pub bmc_password: String,
    /// Cloud-init user data for the config drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// OpenStack `network_data.json` for the config drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
    /// Extra meta data merged into the config drive's `meta_data.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
}

impl HostSecrets {
    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.bmc_username.clone(), self.bmc_password.clone())
    }
}

impl fmt::Debug for HostSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        f.debug_struct("HostSecrets")
            .field("bmc_username", &self.bmc_username)
            .field("bmc_password", &"<redacted>")
            .field("user_data", &present(&self.user_data))
            .field("network_data", &present(&self.network_data))
            .field("meta_data", &present(&self.meta_data))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_every_secret() {
        let secrets = HostSecrets {
            bmc_username: "admin".into(),
            bmc_password: "hunter2".into(),
            user_data: Some("#cloud-config\npassword: s3cret".into()),
            network_data: None,
            meta_data: Some("{\"k\":\"v\"}".into()),
        };
        let shown = format!("{secrets:?}");
        assert!(shown.contains("admin"));
        for secret in ["hunter2", "s3cret", "\"k\""] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
