//! Capability traits: one small trait per thing a BMC can do.
//!
//! A driver (Redfish, IPMI, …) implements [`Provider`] and hands out the capabilities it
//! supports. Callers ask for a capability, never for a protocol, so a host whose Redfish
//! service cannot do something may still get it from IPMI (see the registry).
//!
//! Mutating methods *request* a change and return once the BMC accepted it. BMCs apply
//! power changes seconds later; use [`wait_for_power_state`] when the caller needs the
//! new state to be visible.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use rivet_model::HardwareDetails;
use serde::{Deserialize, Serialize};

use crate::BmcError;

/// Observed chassis power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerState {
    On,
    Off,
    /// Redfish reports transitions; IPMI never does.
    PoweringOn,
    PoweringOff,
}

/// How to turn a host off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerOffMode {
    /// Ask the operating system to shut down (ACPI power button).
    Soft,
    /// Cut power now.
    Hard,
}

#[async_trait]
pub trait Power: Send + Sync {
    async fn power_state(&self) -> Result<PowerState, BmcError>;
    async fn power_on(&self) -> Result<(), BmcError>;
    async fn power_off(&self, mode: PowerOffMode) -> Result<(), BmcError>;
    /// Warm reset without passing through "off" (Redfish `ForceRestart`, IPMI hard reset).
    async fn reset(&self) -> Result<(), BmcError>;
    /// Off, then on again.
    async fn power_cycle(&self) -> Result<(), BmcError>;
}

/// Polls `power` until it reports `target` or `timeout` passes.
pub async fn wait_for_power_state(
    power: &dyn Power,
    target: PowerState,
    timeout: Duration,
    interval: Duration,
) -> Result<(), BmcError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = power.power_state().await?;
        if state == target {
            return Ok(());
        }
        if tokio::time::Instant::now() + interval > deadline {
            return Err(BmcError::PowerStateTimeout {
                wanted: target,
                last_seen: state,
                waited: timeout,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// Where the next boot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootTarget {
    Pxe,
    Disk,
    Cd,
    UefiHttp,
    BiosSetup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootPersistence {
    /// The next boot only.
    Once,
    /// Every boot until changed.
    Persistent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    Uefi,
    Legacy,
}

/// A boot-source override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootOverride {
    pub target: BootTarget,
    pub persistence: BootPersistence,
    /// `None` leaves the firmware's current mode alone.
    pub mode: Option<BootMode>,
    /// For [`BootTarget::UefiHttp`]: the URL the firmware fetches (Redfish `HttpBootUri`).
    pub http_boot_uri: Option<String>,
}

#[async_trait]
pub trait BootDevice: Send + Sync {
    async fn set_boot_override(&self, boot: &BootOverride) -> Result<(), BmcError>;
    /// The override in effect, or `None` when the firmware follows its own boot order.
    async fn boot_override(&self) -> Result<Option<BootOverride>, BmcError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaKind {
    Cd,
    Floppy,
    Usb,
}

/// One virtual-media slot as the BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaSlot {
    /// The BMC's identifier for the slot (a Redfish resource path, for instance).
    pub id: String,
    pub kinds: Vec<MediaKind>,
    pub inserted: bool,
    pub image: Option<String>,
    pub write_protected: Option<bool>,
}

#[async_trait]
pub trait VirtualMedia: Send + Sync {
    /// Inserts `image_url` into a free slot that takes `kind`, ejecting stale media first.
    async fn insert_media(&self, image_url: &str, kind: MediaKind) -> Result<(), BmcError>;
    /// Ejects whatever is in the slots that take `kind`; ejecting an empty slot succeeds.
    async fn eject_media(&self, kind: MediaKind) -> Result<(), BmcError>;
    async fn media_status(&self) -> Result<Vec<MediaSlot>, BmcError>;
}

#[async_trait]
pub trait Inventory: Send + Sync {
    /// Out-of-band inventory in the BareMetalHost shape; fields the BMC does not expose stay empty.
    async fn inventory(&self) -> Result<HardwareDetails, BmcError>;
}

/// The type of a BIOS attribute, as FirmwareSchema names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttributeType {
    Enumeration,
    String,
    Integer,
    Boolean,
    Password,
}

/// Validation metadata for one BIOS attribute (the FirmwareSchema shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeSchema {
    pub name: String,
    pub attribute_type: Option<AttributeType>,
    pub allowable_values: Vec<String>,
    pub lower_bound: Option<i64>,
    pub upper_bound: Option<i64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub read_only: bool,
    pub reset_required: bool,
    pub unique: bool,
}

/// When a settings change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyTime {
    Immediate,
    OnReset,
}

pub type Attributes = BTreeMap<String, serde_json::Value>;

#[async_trait]
pub trait Bios: Send + Sync {
    async fn bios_attributes(&self) -> Result<Attributes, BmcError>;
    async fn bios_schema(&self) -> Result<Vec<AttributeSchema>, BmcError>;
    async fn apply_bios(&self, changes: &Attributes) -> Result<ApplyTime, BmcError>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareComponent {
    pub id: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub updateable: bool,
}

#[async_trait]
pub trait Firmware: Send + Sync {
    async fn firmware_components(&self) -> Result<Vec<FirmwareComponent>, BmcError>;
    /// Starts an update from `image_url` and follows it to completion.
    async fn update_firmware(&self, image_url: &str, targets: &[String]) -> Result<(), BmcError>;
}

#[async_trait]
pub trait SecureBoot: Send + Sync {
    async fn secure_boot_enabled(&self) -> Result<bool, BmcError>;
    async fn set_secure_boot(&self, enabled: bool) -> Result<(), BmcError>;
}

/// An event subscription to create on the BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSubscription {
    pub destination: String,
    pub context: Option<String>,
    /// Sent with every event; may carry secrets, so never logged.
    #[serde(skip_serializing)]
    pub http_headers: BTreeMap<String, String>,
}

#[async_trait]
pub trait Events: Send + Sync {
    /// Returns the BMC's identifier for the new subscription.
    async fn subscribe(&self, subscription: &EventSubscription) -> Result<String, BmcError>;
    async fn unsubscribe(&self, id: &str) -> Result<(), BmcError>;
}

/// A BMC's health rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    Ok,
    Warning,
    Critical,
}

#[async_trait]
pub trait HealthCheck: Send + Sync {
    async fn health(&self) -> Result<Health, BmcError>;
}

/// A driver for one BMC. Each accessor returns the capability when this driver has it.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Short name for logs and errors: `"redfish"`, `"ipmi"`.
    fn name(&self) -> &'static str;
    fn power(&self) -> Option<&dyn Power> {
        None
    }
    fn boot_device(&self) -> Option<&dyn BootDevice> {
        None
    }
    fn virtual_media(&self) -> Option<&dyn VirtualMedia> {
        None
    }
    fn inventory(&self) -> Option<&dyn Inventory> {
        None
    }
    fn bios(&self) -> Option<&dyn Bios> {
        None
    }
    fn firmware(&self) -> Option<&dyn Firmware> {
        None
    }
    fn secure_boot(&self) -> Option<&dyn SecureBoot> {
        None
    }
    fn events(&self) -> Option<&dyn Events> {
        None
    }
    fn health(&self) -> Option<&dyn HealthCheck> {
        None
    }
    /// Releases what the provider holds on the BMC (a Redfish session, an IPMI session).
    /// BMCs have small session tables, so short-lived callers should close; the default
    /// holds nothing.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Reports a scripted sequence of states, then the last one forever.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<PowerState>>);

    #[async_trait]
    impl Power for Scripted {
        async fn power_state(&self) -> Result<PowerState, BmcError> {
            let mut states = self.0.lock().unwrap();
            Ok(if states.len() > 1 {
                states.remove(0)
            } else {
                states[0]
            })
        }
        async fn power_on(&self) -> Result<(), BmcError> {
            Ok(())
        }
        async fn power_off(&self, _: PowerOffMode) -> Result<(), BmcError> {
            Ok(())
        }
        async fn reset(&self) -> Result<(), BmcError> {
            Ok(())
        }
        async fn power_cycle(&self) -> Result<(), BmcError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_through_transitions() {
        let power = Scripted(Mutex::new(vec![
            PowerState::Off,
            PowerState::PoweringOn,
            PowerState::On,
        ]));
        wait_for_power_state(
            &power,
            PowerState::On,
            Duration::from_secs(10),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_the_last_state_seen() {
        let power = Scripted(Mutex::new(vec![PowerState::Off]));
        let err = wait_for_power_state(
            &power,
            PowerState::On,
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                BmcError::PowerStateTimeout {
                    last_seen: PowerState::Off,
                    ..
                }
            ),
            "{err}"
        );
    }
}
