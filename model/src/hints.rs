//! `RootDeviceHints`: how a user tells the agent which disk receives the image.

use serde::{Deserialize, Serialize};

/// Root-device hints as BareMetalHost `spec.rootDeviceHints` carries them.
///
/// Every given field must match. String fields may also carry Ironic's operator grammar
/// (`"<in> ACME"`, `"s== SN1"`, …); interpreting them is the agent's job, not this type's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootDeviceHints {
    /// `/dev/<name>` or `/dev/disk/by-path/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hctl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size_gigabytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_with_extension: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn_vendor_extension: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
}

impl RootDeviceHints {
    /// True when no hint is given, so the default disk choice applies.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bmh_spelling() {
        let hints: RootDeviceHints = serde_json::from_str(
            r#"{"deviceName": "/dev/sda", "minSizeGigabytes": 20, "rotational": false,
                "wwnWithExtension": "0x50", "serialNumber": "S"}"#,
        )
        .unwrap();
        assert_eq!(hints.device_name.as_deref(), Some("/dev/sda"));
        assert_eq!(hints.min_size_gigabytes, Some(20));
        assert_eq!(hints.rotational, Some(false));
        assert!(!hints.is_empty());
        assert!(RootDeviceHints::default().is_empty());
    }

    #[test]
    fn negative_size_is_an_error() {
        assert!(serde_json::from_str::<RootDeviceHints>(r#"{"minSizeGigabytes": -1}"#).is_err());
    }
}
