//! Disks from `/sys/block`: identity (model, vendor, serial, WWN), geometry, transport and
//! the stable names users put into root-device hints.

use rivet_model::{Storage, StorageType};
use serde::{Deserialize, Serialize};

use super::pathid::{self, Transport};
use crate::sysfs::SysRoot;

/// Kernel name prefixes that are never installation targets: RAM, loop and compressed-RAM
/// disks, device-mapper and md volumes (their members are listed instead), optical drives,
/// floppies and network block devices.
const NOT_DISKS: &[&str] = &["ram", "loop", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// Where the ramdisk's `/init` lists the block devices it found its boot medium on (the
/// virtual-media ISO), one kernel name per line.
pub const BOOT_MEDIA_FILE: &str = "/run/rivet/boot-media";

/// A disk as BMO records it plus what the agent needs to act on it safely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskInventory {
    #[serde(flatten)]
    pub storage: Storage,
    /// `/dev/sda`.
    pub kernel_name: String,
    /// Every `/dev/disk/by-path` name udev would create, the preferred one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_path: Vec<String>,
    /// The bus the disk hangs off.
    pub transport: Option<Transport>,
    /// The PCI function the disk sits behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub read_only: bool,
    pub removable: bool,
    /// A BMC's virtual CD/floppy or the medium the agent booted from: never a target.
    pub virtual_media: bool,
}

impl DiskInventory {
    /// Size in bytes (0 when unknown).
    pub fn size_bytes(&self) -> u64 {
        self.storage.size_bytes.unwrap_or_default()
    }

    /// Every name the disk answers to: the kernel name, the by-path names, the others.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.kernel_name.as_str())
            .chain(self.storage.name.as_deref())
            .chain(self.storage.alternate_names.iter().map(String::as_str))
    }
}

pub(crate) fn collect(sys: &SysRoot) -> Vec<DiskInventory> {
    let boot_media: Vec<String> = sys
        .read(BOOT_MEDIA_FILE)
        .map(|text| text.lines().map(|l| l.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut disks: Vec<DiskInventory> = sys
        .list("/sys/block")
        .into_iter()
        .filter(|name| !NOT_DISKS.iter().any(|prefix| name.starts_with(prefix)))
        .filter(|name| !is_nvme_path_device(name))
        .filter_map(|name| disk(sys, &name, &boot_media))
        .collect();
    disks.sort_by_key(|disk| natural_key(&disk.kernel_name));
    disks
}

fn disk(sys: &SysRoot, name: &str, boot_media: &[String]) -> Option<DiskInventory> {
    let dir = format!("/sys/block/{name}");
    let sectors: u64 = sys.read_number(&format!("{dir}/size"))?;
    if sectors == 0 {
        // Empty card readers and drives without media.
        return None;
    }
    let attr = |relative: &str| sys.read_trimmed(&format!("{dir}/{relative}"));
    let flag = |relative: &str| attr(relative).as_deref() == Some("1");
    let path = pathid::device_path(sys, name);
    let rotational = flag("queue/rotational");
    let is_nvme = name.starts_with("nvme") || path.transport == Transport::Nvme;
    let model = attr("device/model");
    // Only SCSI-speaking devices have a vendor string: virtio's `device/vendor` is the virtio
    // vendor id, and libata reports every ATA disk's vendor as "ATA", which identifies nothing.
    let vendor = attr("device/vendor")
        .filter(|_| !matches!(path.transport, Transport::Virtio | Transport::Nvme))
        .filter(|vendor| vendor != "ATA");
    let serial = attr("serial")
        .or_else(|| attr("device/serial"))
        .or_else(|| {
            sys.read_bytes(&format!("{dir}/device/vpd_pg80"))
                .and_then(|page| vpd_serial(&page))
        });
    let wwid = attr("wwid").or_else(|| attr("device/wwid"));
    let wwn = wwid
        .as_deref()
        .map(|wwid| Wwn::from_wwid(wwid, is_nvme))
        .unwrap_or_default();
    let hctl = if path.transport == Transport::Nvme {
        None
    } else {
        sys.list(&format!("{dir}/device/scsi_device"))
            .into_iter()
            .next()
    };

    let dev = format!("/dev/{name}");
    let mut by_path: Vec<String> = Vec::new();
    if let Some(id_path) = &path.id_path {
        by_path.push(format!("/dev/disk/by-path/{id_path}"));
        if let Some(compat) = &path.ata_compat {
            by_path.push(format!("/dev/disk/by-path/{compat}"));
        }
        // udev's legacy link for virtio disks.
        if name.starts_with("vd") && id_path.starts_with("pci-") {
            by_path.push(format!("/dev/disk/by-path/virtio-{id_path}"));
        }
    }
    let preferred = by_path.first().cloned().unwrap_or_else(|| dev.clone());
    let mut alternate_names: Vec<String> = std::iter::once(dev.clone())
        .chain(by_path.iter().cloned())
        .filter(|n| *n != preferred)
        .collect();
    if let Some(with_extension) = &wwn.with_extension {
        let prefix = if is_nvme { "nvme" } else { "wwn" };
        alternate_names.push(format!("/dev/disk/by-id/{prefix}-{with_extension}"));
    }

    let virtual_media = boot_media.iter().any(|media| media == name)
        || (path.transport == Transport::Usb && looks_like_virtual_media(&vendor, &model));
    Some(DiskInventory {
        storage: Storage {
            name: Some(preferred),
            alternate_names,
            rotational: Some(rotational),
            kind: Some(if is_nvme {
                StorageType::Nvme
            } else if rotational {
                StorageType::Hdd
            } else {
                StorageType::Ssd
            }),
            size_bytes: Some(sectors * 512),
            vendor,
            model,
            serial_number: serial,
            wwn: wwn.wwn,
            wwn_vendor_extension: wwn.vendor_extension,
            wwn_with_extension: wwn.with_extension,
            hctl,
        },
        kernel_name: dev,
        by_path,
        transport: Some(path.transport),
        pci_address: path.pci_address,
        logical_sector_size: sys
            .read_number(&format!("{dir}/queue/logical_block_size"))
            .unwrap_or(512),
        physical_sector_size: sys
            .read_number(&format!("{dir}/queue/physical_block_size"))
            .unwrap_or(512),
        read_only: flag("ro"),
        removable: flag("removable"),
        virtual_media,
    })
}

/// With NVMe multipathing each controller's path to a namespace (`nvme0c0n1`) is a hidden
/// block device next to the namespace (`nvme0n1`) that everyone uses.
fn is_nvme_path_device(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.strip_prefix('c')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// BMC virtual media shows up as a USB disk or floppy named like this (AMI/Supermicro
/// "Virtual Floppy", iDRAC "VIRTUAL DISK", iLO "Virtual DVD-ROM", XCC "Remote Disk" …).
fn looks_like_virtual_media(vendor: &Option<String>, model: &Option<String>) -> bool {
    [vendor, model].into_iter().flatten().any(|text| {
        let text = text.to_ascii_lowercase();
        text.contains("virtual") || text.contains("remote disk") || text.contains("lcdrive")
    })
}

/// The serial number in a SCSI Unit Serial Number VPD page (0x80).
fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.get(1) != Some(&0x80) {
        return None;
    }
    let length = usize::from(*page.get(3)?);
    let serial = page.get(4..4 + length)?;
    let text = String::from_utf8_lossy(serial).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The world-wide name in the three forms Ironic and BMO use.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wwn {
    wwn: Option<String>,
    vendor_extension: Option<String>,
    with_extension: Option<String>,
}

impl Wwn {
    /// From the kernel's `wwid` attribute. NAA identifiers become `0x…` as udev's `ID_WWN`
    /// does (a 16-byte NAA 6 splits into the WWN and its vendor extension); NVMe identifiers
    /// (`eui.…`, `nvme.…`, `uuid.…`) stay as the kernel spells them, which is again udev's
    /// `ID_WWN` for NVMe. Other SCSI designators (`t10.…`) carry no WWN.
    fn from_wwid(wwid: &str, nvme: bool) -> Self {
        let wwid = wwid.trim();
        if nvme {
            return Self {
                wwn: Some(wwid.to_owned()),
                vendor_extension: None,
                with_extension: Some(wwid.to_owned()),
            };
        }
        let Some(hex) = wwid.strip_prefix("naa.") else {
            return Self::default();
        };
        let hex = hex.to_ascii_lowercase();
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Self::default();
        }
        match hex.len() {
            16 => Self {
                wwn: Some(format!("0x{hex}")),
                vendor_extension: None,
                with_extension: Some(format!("0x{hex}")),
            },
            32 => Self {
                wwn: Some(format!("0x{}", &hex[..16])),
                vendor_extension: Some(format!("0x{}", &hex[16..])),
                with_extension: Some(format!("0x{hex}")),
            },
            _ => Self::default(),
        }
    }
}

/// Orders `sdb` before `sdaa` and `nvme2n1` before `nvme10n1`, as the kernel enumerates.
pub(crate) fn natural_key(name: &str) -> (String, usize, Vec<(String, u64)>) {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    let family: String = name
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .take(2)
        .collect();
    let mut chunks = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                chunks.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    chunks.push((text, digits.parse().unwrap_or(0)));
    let letters = name.chars().filter(|c| c.is_ascii_alphabetic()).count();
    (family, letters, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_naa_identifiers_like_udev() {
        let short = Wwn::from_wwid("naa.5000C500A0B1C2D3", false);
        assert_eq!(short.wwn.as_deref(), Some("0x5000c500a0b1c2d3"));
        assert_eq!(short.with_extension.as_deref(), Some("0x5000c500a0b1c2d3"));
        assert_eq!(short.vendor_extension, None);
        let long = Wwn::from_wwid("naa.600a0b800011223344556677deadbeef", false);
        assert_eq!(long.wwn.as_deref(), Some("0x600a0b8000112233"));
        assert_eq!(long.vendor_extension.as_deref(), Some("0x44556677deadbeef"));
        assert_eq!(
            long.with_extension.as_deref(),
            Some("0x600a0b800011223344556677deadbeef")
        );
        assert_eq!(
            Wwn::from_wwid("t10.ATA     QEMU HARDDISK", false),
            Wwn::default()
        );
        assert_eq!(Wwn::from_wwid("naa.xyz", false), Wwn::default());
        let nvme = Wwn::from_wwid("eui.0123456789abcdef", true);
        assert_eq!(nvme.wwn.as_deref(), Some("eui.0123456789abcdef"));
    }

    #[test]
    fn reads_the_unit_serial_number_page() {
        let mut page = vec![0, 0x80, 0, 6];
        page.extend_from_slice(b"SN-42 ");
        assert_eq!(vpd_serial(&page).as_deref(), Some("SN-42"));
        assert_eq!(vpd_serial(&[0, 0x83, 0, 0]), None);
        assert_eq!(vpd_serial(&[0, 0x80, 0, 9, b'x']), None);
    }

    #[test]
    fn orders_names_as_the_kernel_enumerates() {
        let mut names = vec![
            "sdaa", "vda", "sdb", "nvme10n1", "sda", "nvme2n1", "nvme0n2",
        ];
        names.sort_by_key(|name| natural_key(name));
        assert_eq!(
            names,
            vec![
                "nvme0n2", "nvme2n1", "nvme10n1", "sda", "sdb", "sdaa", "vda"
            ]
        );
    }

    #[test]
    fn hides_nvme_multipath_path_devices() {
        assert!(is_nvme_path_device("nvme0c0n1"));
        assert!(is_nvme_path_device("nvme12c3n2"));
        assert!(!is_nvme_path_device("nvme0n1"));
        assert!(!is_nvme_path_device("sdc"));
    }

    #[test]
    fn recognises_bmc_virtual_media() {
        let some = |s: &str| Some(s.to_owned());
        assert!(looks_like_virtual_media(
            &some("AMI"),
            &some("Virtual Floppy0")
        ));
        assert!(looks_like_virtual_media(&some("iDRAC"), &some("LCDRIVE")));
        assert!(!looks_like_virtual_media(
            &some("ATA"),
            &some("Samsung SSD")
        ));
    }
}
