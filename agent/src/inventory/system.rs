//! The system, its firmware and how it booted: DMI (`/sys/class/dmi/id`), `/sys/firmware/efi`
//! and the kernel command line.

use rivet_model::{Bios, Firmware, SystemVendor};
use serde::{Deserialize, Serialize};

use crate::sysfs::SysRoot;

/// How the firmware started the ramdisk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    Bios,
}

/// Identity fields DMI offers beyond BMO's `systemVendor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chassis_serial: Option<String>,
}

fn dmi(sys: &SysRoot, field: &str) -> Option<String> {
    sys.read_trimmed(&format!("/sys/class/dmi/id/{field}"))
}

pub(crate) fn vendor(sys: &SysRoot) -> Option<SystemVendor> {
    let vendor = SystemVendor {
        manufacturer: dmi(sys, "sys_vendor"),
        product_name: dmi(sys, "product_name"),
        serial_number: dmi(sys, "product_serial"),
    };
    (vendor != SystemVendor::default()).then_some(vendor)
}

pub(crate) fn extras(sys: &SysRoot) -> SystemExtras {
    SystemExtras {
        uuid: dmi(sys, "product_uuid").map(|uuid| uuid.to_ascii_lowercase()),
        version: dmi(sys, "product_version"),
        family: dmi(sys, "product_family"),
        sku: dmi(sys, "product_sku"),
        board_vendor: dmi(sys, "board_vendor"),
        board_name: dmi(sys, "board_name"),
        board_serial: dmi(sys, "board_serial"),
        chassis_serial: dmi(sys, "chassis_serial"),
    }
}

pub(crate) fn firmware(sys: &SysRoot) -> Option<Firmware> {
    let bios = Bios {
        date: dmi(sys, "bios_date"),
        vendor: dmi(sys, "bios_vendor"),
        version: dmi(sys, "bios_version"),
    };
    (bios != Bios::default()).then_some(Firmware { bios: Some(bios) })
}

pub(crate) fn boot_mode(sys: &SysRoot) -> BootMode {
    if sys.exists("/sys/firmware/efi") {
        BootMode::Uefi
    } else {
        BootMode::Bios
    }
}

pub(crate) fn hostname(sys: &SysRoot) -> Option<String> {
    sys.read_trimmed("/proc/sys/kernel/hostname")
        .filter(|name| name != "(none)")
}
