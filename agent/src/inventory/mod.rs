//! Hardware inventory straight from sysfs, procfs and the SMBIOS tables the kernel exports —
//! no `lshw`, `lsblk` or `dmidecode`.
//!
//! [`Inventory`] serialises as a BareMetalHost `HardwareDetails` document (so BMO-shaped
//! consumers read it unchanged) with the extra fields IPA reports added alongside: boot mode,
//! memory detail, per-disk sector sizes, transport, read-only and virtual-media flags,
//! per-NIC driver, ids, carrier and every address. [`Inventory::hardware_details`] drops the
//! extras.

mod cpu;
mod disks;
mod memory;
mod nics;
mod pathid;
mod summary;
mod system;

use rivet_model::{Firmware, HardwareDetails, SystemVendor};
use serde::{Deserialize, Serialize};

pub use cpu::CpuInventory;
pub(crate) use disks::natural_key;
pub use disks::{BOOT_MEDIA_FILE, DiskInventory};
pub use memory::MemoryInventory;
pub use nics::{InterfaceAddress, NicInventory};
pub use pathid::Transport;
pub use system::{BootMode, SystemExtras};

use crate::cmdline::KernelCommandLine;
use crate::sysfs::SysRoot;

/// Everything the agent knows about the machine it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_vendor: Option<SystemVendor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_mebibytes: Option<u64>,
    #[serde(default)]
    pub nics: Vec<NicInventory>,
    #[serde(default)]
    pub storage: Vec<DiskInventory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuInventory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    // What IPA reports beyond HardwareDetails.
    pub boot_mode: BootMode,
    /// The MAC address the host network-booted from, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxe_interface: Option<String>,
    pub memory: MemoryInventory,
    pub system: SystemExtras,
}

impl Inventory {
    /// Reads the inventory under `sys`. `addresses` are the interfaces' IP addresses
    /// ([`live_addresses`] on a running host); the kernel command line comes from `sys`.
    pub fn collect(sys: &SysRoot, addresses: &[InterfaceAddress]) -> Self {
        let cmdline = KernelCommandLine::parse(&sys.read("/proc/cmdline").unwrap_or_default());
        let boot_mac = cmdline.boot_mac();
        let memory = memory::collect(sys);
        Self {
            system_vendor: system::vendor(sys),
            firmware: system::firmware(sys),
            ram_mebibytes: memory.physical_mebibytes,
            nics: nics::collect(sys, addresses, boot_mac.as_deref()),
            storage: disks::collect(sys),
            cpu: cpu::collect(sys),
            hostname: system::hostname(sys),
            boot_mode: system::boot_mode(sys),
            pxe_interface: boot_mac,
            memory,
            system: system::extras(sys),
        }
    }

    /// The running machine.
    pub fn collect_live() -> Self {
        Self::collect(&SysRoot::live(), &live_addresses())
    }

    /// The inventory in the BareMetalHost `HardwareDetails` shape, extras dropped.
    pub fn hardware_details(&self) -> HardwareDetails {
        HardwareDetails {
            system_vendor: self.system_vendor.clone(),
            firmware: self.firmware.clone(),
            ram_mebibytes: self.ram_mebibytes,
            nics: self.nics.iter().map(|nic| nic.nic.clone()).collect(),
            storage: self
                .storage
                .iter()
                .map(|disk| disk.storage.clone())
                .collect(),
            cpu: self.cpu.as_ref().map(|cpu| cpu.cpu.clone()),
            hostname: self.hostname.clone(),
        }
    }

    /// The disk answering to `name` (kernel name, by-path or by-id name, or `sda` alone).
    pub fn disk(&self, name: &str) -> Option<&DiskInventory> {
        let full = if name.starts_with('/') {
            name.to_owned()
        } else {
            format!("/dev/{name}")
        };
        self.storage
            .iter()
            .find(|disk| disk.names().any(|candidate| candidate == full))
    }
}

/// The IP addresses configured on this host's interfaces (link-local IPv6 included).
pub fn live_addresses() -> Vec<InterfaceAddress> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter_map(|entry| {
            let address = entry.address?;
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else {
                std::net::IpAddr::V6(address.as_sockaddr_in6()?.ip())
            };
            Some(InterfaceAddress {
                interface: entry.interface_name,
                address: ip,
            })
        })
        .collect()
}
