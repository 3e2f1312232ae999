//! BMC drivers for Rivet: Redfish and IPMI 2.0 over LAN (RMCP+), behind capability traits.
//!
//! - [`address`] parses every BMC address a BareMetalHost accepts into a typed
//!   [`BmcAddress`] that says which driver, which boot method and whether a boot MAC is
//!   needed.
//! - [`capability`] defines one small trait per thing a BMC can do; a [`Provider`] hands out
//!   the ones it supports, and [`Bmc`] tries its providers in order with per-provider
//!   timeouts and fallback.
//! - [`redfish`] is a complete Redfish driver: sessions with Basic fallback, bounded retries,
//!   task monitors, ETags, lenient models that survive real vendor documents, and quirk
//!   profiles for Dell iDRAC, HPE iLO, Lenovo XCC, Supermicro and AMI.
//! - [`ipmi`] is IPMI 2.0 over LAN (RMCP+): a sans-IO session with cipher suites 17 and 3,
//!   the chassis and boot-option commands, and a tokio UDP driver; power, boot device, health.
//! - [`connect`] turns an address, credentials and options into a ready [`Bmc`].

#![forbid(unsafe_code)]

pub mod address;
pub mod capability;
mod connect;
mod credentials;
mod error;
pub mod ipmi;
pub mod redfish;
mod registry;

pub use address::{AddressError, BmcAddress, BootMethod, Driver, Protocol, Scheme};
pub use capability::{
    ApplyTime, AttributeSchema, AttributeType, Attributes, Bios, BootDevice, BootMode,
    BootOverride, BootPersistence, BootTarget, EventSubscription, Events, Firmware,
    FirmwareComponent, Health, HealthCheck, Inventory, MediaKind, MediaSlot, Power, PowerOffMode,
    PowerState, Provider, SecureBoot, VirtualMedia, wait_for_power_state,
};
pub use connect::{ConnectOptions, connect};
pub use credentials::Credentials;
pub use error::BmcError;
pub use registry::Bmc;
