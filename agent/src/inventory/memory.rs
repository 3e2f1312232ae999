//! Memory: what the OS sees (`/proc/meminfo`) and what is installed (SMBIOS type 17 memory
//! devices, read from `/sys/firmware/dmi/entries`, so no `dmidecode`).

use serde::{Deserialize, Serialize};

use crate::sysfs::SysRoot;

const MIB: u64 = 1024 * 1024;

/// Memory sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryInventory {
    /// Memory available to the kernel, in bytes (`MemTotal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Installed memory in MiB: the sum of the SMBIOS memory devices, else the online memory
    /// blocks, else `MemTotal` rounded up to a MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_mebibytes: Option<u64>,
    /// Where `physical_mebibytes` came from: `smbios`, `memory-blocks` or `meminfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_source: Option<String>,
}

pub(crate) fn collect(sys: &SysRoot) -> MemoryInventory {
    let total_bytes = sys.read("/proc/meminfo").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    });
    let (physical_mebibytes, source) = if let Some(mib) = smbios_mebibytes(sys) {
        (Some(mib), "smbios")
    } else if let Some(mib) = memory_block_mebibytes(sys) {
        (Some(mib), "memory-blocks")
    } else {
        (total_bytes.map(|bytes| bytes.div_ceil(MIB)), "meminfo")
    };
    MemoryInventory {
        total_bytes,
        physical_source: physical_mebibytes.map(|_| source.to_owned()),
        physical_mebibytes,
    }
}

fn smbios_mebibytes(sys: &SysRoot) -> Option<u64> {
    let sizes: Vec<u64> = sys
        .list("/sys/firmware/dmi/entries")
        .into_iter()
        .filter(|name| name.starts_with("17-"))
        .filter_map(|name| sys.read_bytes(&format!("/sys/firmware/dmi/entries/{name}/raw")))
        .filter_map(|raw| memory_device_mebibytes(&raw))
        .collect();
    let total: u64 = sizes.iter().sum();
    (total > 0).then_some(total)
}

/// The size of one SMBIOS type 17 (Memory Device) structure in MiB; `None` for an empty slot
/// or an unknown size (SMBIOS 3.x §7.18.5).
pub(crate) fn memory_device_mebibytes(raw: &[u8]) -> Option<u64> {
    if raw.first() != Some(&17) || raw.len() < 0x0e {
        return None;
    }
    let size = u16::from_le_bytes([raw[0x0c], raw[0x0d]]);
    match size {
        0 | 0xffff => None,
        0x7fff => {
            let extended = raw.get(0x1c..0x20)?;
            let mib = u32::from_le_bytes([extended[0], extended[1], extended[2], extended[3]]);
            Some(u64::from(mib & 0x7fff_ffff))
        }
        // Bit 15 set: the size is in KiB.
        kib if kib & 0x8000 != 0 => Some(u64::from(kib & 0x7fff) / 1024),
        mib => Some(u64::from(mib)),
    }
}

fn memory_block_mebibytes(sys: &SysRoot) -> Option<u64> {
    let block_size = u64::from_str_radix(
        &sys.read_trimmed("/sys/devices/system/memory/block_size_bytes")?,
        16,
    )
    .ok()?;
    let online = sys
        .list("/sys/devices/system/memory")
        .into_iter()
        .filter(|name| name.starts_with("memory"))
        .filter(|name| {
            sys.read_trimmed(&format!("/sys/devices/system/memory/{name}/online"))
                .as_deref()
                == Some("1")
        })
        .count() as u64;
    (online > 0).then(|| online * block_size / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type17(size: u16, extended: u32) -> Vec<u8> {
        let mut raw = vec![0u8; 0x28];
        raw[0] = 17;
        raw[1] = 0x28;
        raw[0x0c..0x0e].copy_from_slice(&size.to_le_bytes());
        raw[0x1c..0x20].copy_from_slice(&extended.to_le_bytes());
        raw
    }

    #[test]
    fn decodes_every_size_encoding() {
        assert_eq!(memory_device_mebibytes(&type17(2048, 0)), Some(2048));
        assert_eq!(memory_device_mebibytes(&type17(0, 0)), None);
        assert_eq!(memory_device_mebibytes(&type17(0xffff, 0)), None);
        assert_eq!(memory_device_mebibytes(&type17(0x7fff, 65536)), Some(65536));
        assert_eq!(memory_device_mebibytes(&type17(0x8000 | 2048, 0)), Some(2));
        assert_eq!(memory_device_mebibytes(&[16, 4]), None);
        assert_eq!(memory_device_mebibytes(&type17(0x7fff, 0)[..0x10]), None);
    }
}
