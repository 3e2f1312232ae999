//! The DOS/MBR partition table: the four primary entries, the chain of extended boot
//! records for logical partitions, and adding a primary partition.

use super::{ReadAt, TableError, Write};

/// `0x55 0xAA` at byte 510 ends every MBR and EBR.
pub const BOOT_SIGNATURE_OFFSET: u64 = 510;
/// The protective MBR's partition type.
pub const PROTECTIVE: u8 = 0xee;
/// Linux data.
pub const LINUX: u8 = 0x83;
/// VMware VMFS and vmkcore (refused by the cleaning guard).
pub const VMFS: u8 = 0xfb;
pub const VMKCORE: u8 = 0xfc;
const EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// Logical partitions followed before assuming a loop in a corrupt chain.
const MAX_LOGICAL: usize = 128;

/// One partition, offsets in sectors from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbrEntry {
    /// 1–4 primary, 5… logical (as Linux numbers them).
    pub number: u32,
    pub kind: u8,
    pub first_lba: u64,
    pub sectors: u64,
}

/// A parsed MBR with its logical partitions and where every EBR lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mbr {
    pub entries: Vec<MbrEntry>,
    /// Sector numbers of the extended boot records found.
    pub ebr_lbas: Vec<u64>,
}

fn entry(sector: &[u8], slot: usize) -> (u8, u64, u64) {
    let raw = &sector[446 + slot * 16..446 + (slot + 1) * 16];
    let first = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
    let sectors = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
    (raw[4], u64::from(first), u64::from(sectors))
}

/// Whether a sector ends with the boot signature.
pub fn has_signature(sector: &[u8]) -> bool {
    sector.len() >= 512 && sector[510] == 0x55 && sector[511] == 0xaa
}

impl Mbr {
    /// Parses sector 0 and follows the EBR chain. `Ok(None)` without a boot signature or
    /// with a protective MBR (the disk is GPT), or when the entries make no sense for a
    /// partition table (a FAT boot sector also ends in 0x55AA).
    pub fn read(disk: &dyn ReadAt) -> Result<Option<Self>, TableError> {
        let sector_size = u64::from(disk.sector_size());
        let sectors = disk.size() / sector_size;
        let mut sector0 = vec![0u8; 512];
        disk.read_at(0, &mut sector0)?;
        if !has_signature(&sector0) {
            return Ok(None);
        }
        let mut mbr = Mbr::default();
        for slot in 0..4 {
            let raw = &sector0[446 + slot * 16..446 + (slot + 1) * 16];
            // Boot indicator must be 0x00 or 0x80 in a real table.
            if raw[0] & 0x7f != 0 {
                return Ok(None);
            }
            let (kind, first, count) = entry(&sector0, slot);
            if kind == 0 || count == 0 {
                continue;
            }
            if kind == PROTECTIVE {
                return Ok(None);
            }
            if first >= sectors {
                return Ok(None);
            }
            mbr.entries.push(MbrEntry {
                number: slot as u32 + 1,
                kind,
                first_lba: first,
                sectors: count,
            });
            if EXTENDED.contains(&kind) {
                mbr.follow_chain(disk, first, sectors)?;
            }
        }
        Ok(Some(mbr))
    }

    fn follow_chain(
        &mut self,
        disk: &dyn ReadAt,
        extended_start: u64,
        disk_sectors: u64,
    ) -> Result<(), TableError> {
        let sector_size = u64::from(disk.sector_size());
        let mut ebr_lba = extended_start;
        let mut number = 5;
        let mut buf = vec![0u8; 512];
        for _ in 0..MAX_LOGICAL {
            if ebr_lba >= disk_sectors || self.ebr_lbas.contains(&ebr_lba) {
                break;
            }
            disk.read_at(ebr_lba * sector_size, &mut buf)?;
            if !has_signature(&buf) {
                break;
            }
            self.ebr_lbas.push(ebr_lba);
            let (kind, first, count) = entry(&buf, 0);
            if kind != 0 && count != 0 {
                self.entries.push(MbrEntry {
                    number,
                    kind,
                    first_lba: ebr_lba + first,
                    sectors: count,
                });
                number += 1;
            }
            let (next_kind, next_first, _) = entry(&buf, 1);
            if next_kind == 0 || !EXTENDED.contains(&next_kind) {
                break;
            }
            ebr_lba = extended_start + next_first;
        }
        Ok(())
    }

    /// Adds a primary partition in the first free slot of sector 0; returns its number and
    /// the write of the updated table.
    pub fn add_primary(
        sector0: &[u8],
        first_lba: u64,
        sectors: u64,
        kind: u8,
    ) -> Result<(u32, Write), TableError> {
        let too_big = |what: &str| TableError::DoesNotFit {
            what: "the new MBR partition",
            detail: format!("its {what} does not fit in 32 bits (MBR disks end at 2 TiB)"),
        };
        let first = u32::try_from(first_lba).map_err(|_| too_big("start"))?;
        let count = u32::try_from(sectors).map_err(|_| too_big("size"))?;
        let slot = (0..4)
            .find(|slot| entry(sector0, *slot).0 == 0)
            .ok_or(TableError::TableFull)?;
        for other in 0..4 {
            let (other_kind, other_first, other_count) = entry(sector0, other);
            if other_kind != 0
                && other_first < first_lba + sectors
                && first_lba < other_first + other_count
            {
                return Err(TableError::DoesNotFit {
                    what: "the new MBR partition",
                    detail: format!("it would overlap partition {}", other + 1),
                });
            }
        }
        let mut raw = [0u8; 16];
        // CHS fields say "use LBA" (the maximum), as every tool does for large disks.
        raw[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        raw[4] = kind;
        raw[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        raw[8..12].copy_from_slice(&first.to_le_bytes());
        raw[12..16].copy_from_slice(&count.to_le_bytes());
        Ok((
            slot as u32 + 1,
            Write::new(446 + slot as u64 * 16, raw.to_vec()),
        ))
    }
}
