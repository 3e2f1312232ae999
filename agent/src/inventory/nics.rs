//! Network interfaces from `/sys/class/net`: physical NICs only (those with a device behind
//! them), their PCI identity, link state, speed and addresses.

use std::net::IpAddr;

use rivet_model::Nic;
use serde::{Deserialize, Serialize};

use crate::sysfs::SysRoot;

/// A NIC as BMO records it plus what IPA reports besides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicInventory {
    #[serde(flatten)]
    pub nic: Nic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub has_carrier: bool,
    /// Link speed in Mb/s when the driver knows it (`speedGbps` rounds it down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_addresses: Vec<String>,
}

/// One address configured on an interface (from `getifaddrs` on a live host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpAddr,
}

pub(crate) fn collect(
    sys: &SysRoot,
    addresses: &[InterfaceAddress],
    boot_mac: Option<&str>,
) -> Vec<NicInventory> {
    sys.list("/sys/class/net")
        .into_iter()
        .filter(|name| name != "lo")
        // Bridges, bonds, VLANs and tunnels have no device; inventory is about hardware.
        .filter(|name| sys.exists(&format!("/sys/class/net/{name}/device")))
        .map(|name| nic(sys, &name, addresses, boot_mac))
        .collect()
}

fn nic(
    sys: &SysRoot,
    name: &str,
    addresses: &[InterfaceAddress],
    boot_mac: Option<&str>,
) -> NicInventory {
    let dir = format!("/sys/class/net/{name}");
    let mac = sys
        .read_trimmed(&format!("{dir}/address"))
        .map(|mac| mac.to_ascii_lowercase());
    let pci = pci_function(sys, &format!("{dir}/device"));
    let id = |attr: &str| {
        pci.as_ref()
            .and_then(|pci| sys.read_trimmed(&format!("{pci}/{attr}")))
    };
    let vendor_id = id("vendor");
    let device_id = id("device");
    let speed_mbps = sys
        .read_trimmed(&format!("{dir}/speed"))
        .and_then(|speed| speed.parse::<i64>().ok())
        .filter(|speed| *speed > 0)
        .and_then(|speed| u32::try_from(speed).ok());
    let mine = addresses.iter().filter(|a| a.interface == name);
    let ipv4: Vec<String> = mine
        .clone()
        .filter(|a| a.address.is_ipv4())
        .map(|a| a.address.to_string())
        .collect();
    let ipv6: Vec<String> = mine
        .filter(|a| a.address.is_ipv6())
        .map(|a| a.address.to_string())
        .collect();
    let pxe = match (boot_mac, &mac) {
        (Some(boot), Some(mac)) => Some(boot.eq_ignore_ascii_case(mac)),
        _ => None,
    };
    NicInventory {
        nic: Nic {
            name: Some(name.to_owned()),
            model: match (&vendor_id, &device_id) {
                (Some(vendor), Some(device)) => Some(format!("{vendor} {device}")),
                _ => None,
            },
            mac,
            ip: ipv4.first().or(ipv6.first()).cloned(),
            speed_gbps: speed_mbps.map(|mbps| mbps / 1000),
            pxe,
            pci_address: pci
                .as_ref()
                .and_then(|pci| pci.rsplit('/').next().map(str::to_owned)),
            ..Nic::default()
        },
        driver: sys.link_name(&format!("{dir}/device/driver")),
        vendor_id,
        device_id,
        has_carrier: sys.read_trimmed(&format!("{dir}/carrier")).as_deref() == Some("1"),
        speed_mbps,
        mtu: sys.read_number(&format!("{dir}/mtu")),
        ipv4_addresses: ipv4,
        ipv6_addresses: ipv6,
    }
}

/// The PCI function at or above `device` (a virtio NIC's device is `virtioN`, whose parent is
/// the PCI function), as a resolved sysfs path.
fn pci_function(sys: &SysRoot, device: &str) -> Option<String> {
    let mut path = sys.resolve(device)?;
    loop {
        if sys.link_name(&format!("{path}/subsystem")).as_deref() == Some("pci") {
            return Some(path);
        }
        let (parent, _) = path.rsplit_once('/')?;
        if parent.len() <= "/sys/devices".len() {
            return None;
        }
        path = parent.to_owned();
    }
}
