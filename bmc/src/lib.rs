//! BMC drivers for Rivet: Redfish and IPMI 2.0 over LAN (RMCP+), behind capability traits.

#![forbid(unsafe_code)]

pub mod address;
pub mod capability;
mod credentials;
mod error;
pub mod ipmi;
mod registry;

pub use address::{BmcAddress, BootMethod, Driver, Protocol, Scheme};
pub use capability::{
    ApplyTime, AttributeSchema, AttributeType, Attributes, Bios, BootDevice, BootMode,
    BootOverride, BootPersistence, BootTarget, EventSubscription, Events, Firmware,
    FirmwareComponent, Health, HealthCheck, Inventory, MediaKind, MediaSlot, Power, PowerOffMode,
    PowerState, Provider, SecureBoot, VirtualMedia, wait_for_power_state,
};
pub use credentials::Credentials;
pub use error::BmcError;
pub use registry::Bmc;
