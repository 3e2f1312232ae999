//! BMC drivers for Rivet: Redfish and IPMI 2.0 over LAN (RMCP+), behind capability traits.
//!
//! Status: the capability traits, credentials, the error type and the IPMI 2.0 driver ([`ipmi`]:
//! RMCP+ with cipher suites 17 and 3; power, boot device, health) exist; the address parser, the
//! Redfish driver and the provider registry are being built (see the project's issue 4).

#![forbid(unsafe_code)]

pub mod capability;
mod credentials;
mod error;
pub mod ipmi;

pub use capability::{
    ApplyTime, AttributeSchema, AttributeType, Attributes, Bios, BootDevice, BootMode,
    BootOverride, BootPersistence, BootTarget, EventSubscription, Events, Firmware,
    FirmwareComponent, Health, HealthCheck, Inventory, MediaKind, MediaSlot, Power, PowerOffMode,
    PowerState, Provider, SecureBoot, VirtualMedia, wait_for_power_state,
};
pub use credentials::Credentials;
pub use error::BmcError;
