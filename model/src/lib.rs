//! Data types shared by every Rivet crate, in the shapes Metal³ defines.
//!
//! The BareMetalHost API (`metal3.io/v1alpha1`) fixes the JSON shape of a host's hardware
//! inventory (`status.hardware`, the `HardwareData` resource) and of root-device hints
//! (`spec.rootDeviceHints`). The out-of-band inventory (`rivet-bmc`), the in-band inventory
//! (`rivet-agent`), the engine and the operator all exchange these, so they live here once,
//! with no behaviour and no dependencies beyond serde.
//!
//! Field names follow the CRD schema exactly (camelCase); absent values are omitted when
//! serialising, as BMO does, and every field is optional when deserialising so that older or
//! partial documents still load.

#![forbid(unsafe_code)]

mod hardware;
mod hints;

pub use hardware::{
    Bios, Cpu, Firmware, HardwareDetails, Lldp, Nic, Storage, StorageType, SystemVendor, Vlan,
};
pub use hints::RootDeviceHints;
