//! Out-of-band inventory in the BareMetalHost `HardwareDetails` shape.
//!
//! Fetching walks the system's processor, Ethernet-interface and storage collections;
//! [`assemble_inventory`] is the pure mapping from those documents to the Metal³ shape, so it
//! is tested on real vendor captures and fuzzed without a network.

use std::collections::BTreeSet;

use async_trait::async_trait;
use rivet_model::{
    Bios, Cpu, Firmware, HardwareDetails, Nic, Storage as Disk, StorageType, SystemVendor,
};

use super::model::{ComputerSystem, Drive, EthernetInterface, Processor, SimpleStorage, Storage};
use super::{RedfishProvider, or_skip};
use crate::BmcError;
use crate::capability::Inventory;

/// Maps Redfish documents to `HardwareDetails`. Fields the BMC does not expose stay empty.
/// Drives come from `Storage`; `SimpleStorage` devices are used only when there are none.
pub fn assemble_inventory(
    system: &ComputerSystem,
    processors: &[Processor],
    interfaces: &[EthernetInterface],
    drives: &[Drive],
    simple_storage: &[SimpleStorage],
) -> HardwareDetails {
    let present = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let vendor = SystemVendor {
        manufacturer: present(&system.manufacturer),
        product_name: present(&system.model),
        serial_number: present(&system.serial_number),
    };
    let bios_version = present(&system.bios_version);
    let ram_mebibytes = system
        .memory_summary
        .as_ref()
        .and_then(|m| m.total_gib)
        .filter(|gib| *gib > 0.0)
        .map(|gib| (gib * 1024.0).round() as u64);
    let mut storage: Vec<Disk> = drives.iter().map(disk_from_drive).collect();
    if storage.is_empty() {
        storage = simple_storage
            .iter()
            .flat_map(|s| &s.devices)
            .filter(|d| d.capacity_bytes.is_some_and(|c| c > 0))
            .filter(|d| d.status.as_ref().and_then(|s| s.state.as_deref()) != Some("Absent"))
            .map(|d| Disk {
                name: present(&d.name),
                size_bytes: d.capacity_bytes,
                vendor: present(&d.manufacturer),
                model: present(&d.model),
                ..Disk::default()
            })
            .collect();
    }
    storage.sort_by(|a, b| {
        (&a.name, &a.serial_number, &a.wwn).cmp(&(&b.name, &b.serial_number, &b.wwn))
    });
    HardwareDetails {
        system_vendor: (vendor != SystemVendor::default()).then_some(vendor),
        firmware: bios_version.map(|version| Firmware {
            bios: Some(Bios {
                version: Some(version),
                ..Bios::default()
            }),
        }),
        ram_mebibytes,
        nics: nics(interfaces),
        storage,
        cpu: cpu(system, processors),
        hostname: present(&system.host_name),
    }
}

fn cpu(system: &ComputerSystem, processors: &[Processor]) -> Option<Cpu> {
    let cpus: Vec<&Processor> = processors
        .iter()
        .filter(|p| p.processor_type.as_deref().is_none_or(|t| t == "CPU"))
        .filter(|p| p.status.as_ref().and_then(|s| s.state.as_deref()) != Some("Absent"))
        .collect();
    let summary = system.processor_summary.as_ref();
    let first = cpus.first();
    let threads: Option<u64> = if !cpus.is_empty() && cpus.iter().all(|p| p.total_threads.is_some())
    {
        Some(cpus.iter().filter_map(|p| p.total_threads).sum())
    } else {
        None
    };
    let count = summary
        .and_then(|s| s.logical_processor_count)
        .or(threads)
        .or_else(|| summary.and_then(|s| s.count))
        .filter(|c| *c > 0)
        .and_then(|c| u32::try_from(c).ok());
    let model = summary
        .and_then(|s| s.model.clone())
        .or_else(|| first.and_then(|p| p.model.clone()))
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty());
    let arch = first.and_then(|p| architecture(p));
    let clock = first.and_then(|p| p.max_speed_mhz.or(p.operating_speed_mhz));
    if count.is_none() && model.is_none() && arch.is_none() {
        return None;
    }
    Some(Cpu {
        arch: arch.map(str::to_owned),
        model,
        clock_megahertz: clock.filter(|c| *c > 0.0),
        flags: Vec::new(),
        count,
    })
}

/// The Linux name of a processor's architecture (what in-band inspection reports).
fn architecture(processor: &Processor) -> Option<&'static str> {
    match processor.instruction_set.as_deref() {
        Some("x86-64") => return Some("x86_64"),
        Some("x86") => return Some("i686"),
        Some("ARM-A64") => return Some("aarch64"),
        Some("ARM-A32") => return Some("armv7l"),
        Some("PowerISA") => return Some("ppc64le"),
        _ => {}
    }
    match processor.processor_architecture.as_deref() {
        // Servers that say only "x86" or "ARM" are 64-bit ones in practice.
        Some("x86") => Some("x86_64"),
        Some("ARM") => Some("aarch64"),
        Some("Power") => Some("ppc64le"),
        _ => None,
    }
}

/// `aa:bb:cc:dd:ee:ff`, lower case; `None` for anything that is not a usable MAC.
pub(crate) fn normalize_mac(raw: &str) -> Option<String> {
    let hex: String = raw.chars().filter(char::is_ascii_hexdigit).collect();
    let separators_ok = raw
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '-' | '.'));
    if hex.len() != 12 || !separators_ok || hex.chars().all(|c| c == '0') {
        return None;
    }
    let lower = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &lower[i * 2..i * 2 + 2]).collect();
    Some(pairs.join(":"))
}

fn nics(interfaces: &[EthernetInterface]) -> Vec<Nic> {
    let mut seen = BTreeSet::new();
    let mut nics: Vec<Nic> = interfaces
        .iter()
        .filter(|i| i.interface_enabled != Some(false))
        .filter(|i| {
            !matches!(
                i.status.as_ref().and_then(|s| s.state.as_deref()),
                Some("Absent" | "Disabled")
            )
        })
        .filter_map(|i| {
            let mac = i
                .mac_address
                .as_deref()
                .and_then(normalize_mac)
                .or_else(|| i.permanent_mac_address.as_deref().and_then(normalize_mac))?;
            if !seen.insert(mac.clone()) {
                return None;
            }
            let ip = i
                .ipv4_addresses
                .iter()
                .chain(&i.ipv6_addresses)
                .filter_map(|a| a.address.as_deref())
                .find(|a| !a.is_empty() && *a != "0.0.0.0" && *a != "::")
                .map(str::to_owned);
            Some(Nic {
                name: i.id.clone().or_else(|| i.name.clone()),
                mac: Some(mac),
                ip,
                speed_gbps: i
                    .speed_mbps
                    .filter(|s| *s >= 1000)
                    .and_then(|s| u32::try_from(s / 1000).ok()),
                vlan_id: i
                    .vlan
                    .as_ref()
                    .filter(|v| v.enabled == Some(true))
                    .and_then(|v| v.id)
                    .and_then(|id| i32::try_from(id).ok()),
                ..Nic::default()
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name).then(a.mac.cmp(&b.mac)));
    nics
}

fn disk_from_drive(drive: &Drive) -> Disk {
    let media = drive.media_type.as_deref();
    let nvme = drive
        .protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("NVMe"));
    let kind = match media {
        _ if nvme => Some(StorageType::Nvme),
        Some("SSD") => Some(StorageType::Ssd),
        Some("HDD") => Some(StorageType::Hdd),
        _ => None,
    };
    let wwn = drive
        .identifiers
        .iter()
        .find(|id| id.durable_name_format.as_deref() == Some("NAA"))
        .and_then(|id| id.durable_name.as_deref())
        .map(|name| {
            let hex = name.trim_start_matches("0x").to_ascii_lowercase();
            format!("0x{hex}")
        });
    let text = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Disk {
        name: text(&drive.name).or_else(|| text(&drive.id)),
        rotational: match media {
            Some("HDD") => Some(true),
            Some("SSD") => Some(false),
            _ if nvme => Some(false),
            _ => None,
        },
        kind,
        size_bytes: drive.capacity_bytes,
        vendor: text(&drive.manufacturer),
        model: text(&drive.model),
        serial_number: text(&drive.serial_number),
        wwn,
        ..Disk::default()
    }
}

impl RedfishProvider {
    async fn drives(&self, system: &ComputerSystem) -> Result<Vec<Drive>, BmcError> {
        let Some(storage) = system.storage.as_ref().and_then(|l| l.path()) else {
            return Ok(Vec::new());
        };
        let controllers: Vec<Storage> = self.members(storage).await?;
        let mut drives = Vec::new();
        for controller in controllers {
            for link in controller.drives.iter().filter_map(|d| d.path()) {
                match self.client.get::<Drive>(link).await {
                    Ok(drive) => drives.push(drive),
                    Err(err) if super::skippable(&err) => {
                        tracing::warn!(path = link, error = %err, "skipping an unreadable drive");
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(drives)
    }
}

#[async_trait]
impl Inventory for RedfishProvider {
    async fn inventory(&self) -> Result<HardwareDetails, BmcError> {
        let system = self.system().await?;
        let link =
            |l: &Option<super::model::Link>| l.as_ref().and_then(|l| l.path()).map(str::to_owned);
        // Secondary collections are best effort: BMCs link resources they cannot serve
        // (iLO's adapters before the OS boots, sushy's Storage with the fake driver).
        let (processors, interfaces, drives) = futures::try_join!(
            async {
                match link(&system.processors) {
                    Some(path) => or_skip("processors", self.members::<Processor>(&path).await),
                    None => Ok(Vec::new()),
                }
            },
            async {
                match link(&system.ethernet_interfaces) {
                    Some(path) => or_skip(
                        "Ethernet interfaces",
                        self.members::<EthernetInterface>(&path).await,
                    ),
                    None => Ok(Vec::new()),
                }
            },
            async { or_skip("storage", self.drives(&system).await) },
        )?;
        let simple = match (drives.is_empty(), link(&system.simple_storage)) {
            (true, Some(path)) => {
                or_skip("simple storage", self.members::<SimpleStorage>(&path).await)?
            }
            _ => Vec::new(),
        };
        Ok(assemble_inventory(
            &system,
            &processors,
            &interfaces,
            &drives,
            &simple,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redfish::model::decode;

    #[test]
    fn macs_are_normalised_and_junk_refused() {
        assert_eq!(
            normalize_mac("B8:3F:D2:D7:F7:4A").as_deref(),
            Some("b8:3f:d2:d7:f7:4a")
        );
        assert_eq!(
            normalize_mac("b8-3f-d2-d7-f7-4a").as_deref(),
            Some("b8:3f:d2:d7:f7:4a")
        );
        assert_eq!(normalize_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalize_mac("not a mac"), None);
        assert_eq!(normalize_mac("b8:3f:d2:d7:f7"), None);
    }

    #[test]
    fn the_metal3_shape_comes_out_of_a_minimal_system() {
        let system: ComputerSystem = decode(
            br#"{"Manufacturer": "Contoso ", "Model": "3500", "SerialNumber": "",
                 "BiosVersion": "P79 v1.45", "HostName": "web483",
                 "MemorySummary": {"TotalSystemMemoryGiB": 0.5},
                 "ProcessorSummary": {"Count": 2, "Model": "Multi-Core Intel(R) Xeon(R)  "}}"#,
        )
        .unwrap();
        let cpu: Processor = decode(
            br#"{"ProcessorType": "CPU", "ProcessorArchitecture": "x86", "InstructionSet": "x86-64",
                 "MaxSpeedMHz": 3700, "TotalThreads": 16}"#,
        )
        .unwrap();
        let gpu: Processor = decode(br#"{"ProcessorType": "GPU", "TotalThreads": 9000}"#).unwrap();
        let nic: EthernetInterface = decode(
            br#"{"Id": "1", "MACAddress": "12:44:6A:3B:04:11", "SpeedMbps": 25000,
                 "IPv4Addresses": [{"Address": "0.0.0.0"}, {"Address": "192.168.0.10"}],
                 "VLAN": {"VLANEnable": true, "VLANId": 101}}"#,
        )
        .unwrap();
        let drive: Drive = decode(
            br#"{"Name": "Drive 1", "CapacityBytes": 899527000000, "MediaType": "SSD",
                 "Protocol": "NVMe", "Identifiers": [{"DurableNameFormat": "NAA", "DurableName": "32ADF365C6C1B7BD"}]}"#,
        )
        .unwrap();
        let details = assemble_inventory(&system, &[cpu, gpu], &[nic], &[drive], &[]);
        let json = serde_json::to_value(&details).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "systemVendor": {"manufacturer": "Contoso", "productName": "3500"},
                "firmware": {"bios": {"version": "P79 v1.45"}},
                "ramMebibytes": 512,
                "nics": [{"name": "1", "mac": "12:44:6a:3b:04:11", "ip": "192.168.0.10",
                          "speedGbps": 25, "vlanId": 101}],
                "storage": [{"name": "Drive 1", "rotational": false, "type": "NVME",
                             "sizeBytes": 899527000000u64, "wwn": "0x32adf365c6c1b7bd"}],
                "cpu": {"arch": "x86_64", "model": "Multi-Core Intel(R) Xeon(R)",
                        "clockMegahertz": 3700.0, "count": 16},
                "hostname": "web483"
            })
        );
    }
}
