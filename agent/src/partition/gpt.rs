//! GUID Partition Table (UEFI 2.10 §5.3): parsing, moving the backup to the end of a disk
//! that grew (an image written to a larger disk), and adding a partition. Pure functions over
//! byte buffers; the caller does the reading and writing ([`Write`]).

use std::fmt;

use super::{ReadAt, TableError, Write};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: usize = 92;

/// A GUID as stored on disk (the first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Linux filesystem data, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
    pub const LINUX_DATA: Guid = Guid([
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ]);

    /// Parses `0FC63DAF-8483-4772-8E79-3D69D8477DE4` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        // The first three fields are stored little-endian.
        bytes[0..4].reverse();
        bytes[4..6].reverse();
        bytes[6..8].reverse();
        Some(Self(bytes))
    }

    /// A random (version 4) GUID from 16 random bytes.
    pub fn from_random(mut bytes: [u8; 16]) -> Self {
        bytes[7] = (bytes[7] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(bytes)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            b[3],
            b[2],
            b[1],
            b[0],
            b[5],
            b[4],
            b[7],
            b[6],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Linux filesystem data.
pub const LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// IBM GPFS (refused by the cleaning guard).
pub const IBM_GPFS: &str = "37AFFC90-EF7D-4E96-91C3-2D7AE055B174";
/// VMware VMFS (refused by the cleaning guard).
pub const VMWARE_VMFS: &str = "AA31E02A-400F-11DB-9590-000C2911D1B8";

/// A GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
    /// The header bytes as read (kept so that unknown fields survive a rewrite).
    raw: Vec<u8>,
}

/// One partition entry in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based, as Linux numbers partitions.
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

/// A validated table: one header (primary or backup) and its entries.
#[derive(Debug, Clone)]
pub struct Gpt {
    pub header: Header,
    pub sector_size: u64,
    /// Where the primary entries live (LBA 2 on every disk we have seen; kept when a table
    /// read from its primary copy says otherwise).
    primary_entries_lba: u64,
    /// The raw entry array (`entry_count * entry_size` bytes).
    entries_raw: Vec<u8>,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn header_crc(raw: &[u8]) -> u32 {
    let size = (u32_at(raw, 12) as usize).clamp(HEADER_SIZE, raw.len());
    let mut copy = raw[..size].to_vec();
    copy[16..20].fill(0);
    crc32fast::hash(&copy)
}

impl Header {
    /// Parses and checks a header sector read from `lba`. `None` when it is not a valid GPT
    /// header (wrong signature, checksum or location).
    pub fn parse(sector: &[u8], lba: u64) -> Option<Self> {
        if sector.len() < HEADER_SIZE || &sector[..8] != SIGNATURE {
            return None;
        }
        let size = u32_at(sector, 12) as usize;
        if size < HEADER_SIZE || size > sector.len() {
            return None;
        }
        if header_crc(sector) != u32_at(sector, 16) || u64_at(sector, 24) != lba {
            return None;
        }
        let entry_size = u32_at(sector, 84);
        let entry_count = u32_at(sector, 80);
        // 128 × 2^n bytes per entry; a sane number of entries (the spec's minimum array is
        // 16 KiB; nobody uses more than a few thousand).
        if entry_size < 128 || !entry_size.is_power_of_two() || entry_count > 65_536 {
            return None;
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&sector[56..72]);
        Some(Self {
            my_lba: lba,
            alternate_lba: u64_at(sector, 32),
            first_usable_lba: u64_at(sector, 40),
            last_usable_lba: u64_at(sector, 48),
            disk_guid: Guid(guid),
            entries_lba: u64_at(sector, 72),
            entry_count,
            entry_size,
            entries_crc: u32_at(sector, 88),
            raw: sector[..size].to_vec(),
        })
    }

    fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    /// The header with new locations, its checksum recomputed, padded to a sector.
    fn encode(&self, sector_size: u64) -> Vec<u8> {
        let mut raw = self.raw.clone();
        raw[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        raw[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        raw[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        raw[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        raw[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        raw[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = header_crc(&raw);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        raw.resize(sector_size as usize, 0);
        raw
    }
}

impl Gpt {
    /// Reads the primary table, or the backup at the last sector when the primary is
    /// damaged. `Ok(None)` when the disk has no valid GPT.
    pub fn read(disk: &dyn ReadAt) -> Result<Option<Self>, TableError> {
        let sector = u64::from(disk.sector_size());
        let sectors = disk.size() / sector;
        if sectors < 3 {
            return Ok(None);
        }
        let mut buf = vec![0u8; sector as usize];
        for lba in [1, sectors - 1] {
            disk.read_at(lba * sector, &mut buf)?;
            let Some(header) = Header::parse(&buf, lba) else {
                continue;
            };
            let entries_offset = header.entries_lba.saturating_mul(sector);
            if entries_offset.saturating_add(header.entries_bytes()) > disk.size() {
                continue;
            }
            let mut entries_raw = vec![0u8; header.entries_bytes() as usize];
            disk.read_at(entries_offset, &mut entries_raw)?;
            if crc32fast::hash(&entries_raw) != header.entries_crc {
                continue;
            }
            let primary_entries_lba = if lba == 1 { header.entries_lba } else { 2 };
            return Ok(Some(Self {
                header,
                sector_size: sector,
                primary_entries_lba,
                entries_raw,
            }));
        }
        Ok(None)
    }

    /// The partitions in use.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries_raw
            .chunks_exact(self.header.entry_size as usize)
            .enumerate()
            .filter_map(|(i, raw)| {
                let mut type_guid = [0u8; 16];
                type_guid.copy_from_slice(&raw[0..16]);
                let type_guid = Guid(type_guid);
                if type_guid.is_zero() {
                    return None;
                }
                let mut unique = [0u8; 16];
                unique.copy_from_slice(&raw[16..32]);
                let units: Vec<u16> = raw[56..128]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|u| *u != 0)
                    .collect();
                Some(Entry {
                    number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    type_guid,
                    unique_guid: Guid(unique),
                    first_lba: u64_at(raw, 32),
                    last_lba: u64_at(raw, 40),
                    name: String::from_utf16_lossy(&units),
                })
            })
            .collect()
    }

    fn entries_sectors(&self) -> u64 {
        self.header.entries_bytes().div_ceil(self.sector_size)
    }

    /// Where the backup header and entries belong on a disk of `disk_sectors` sectors.
    fn backup_layout(&self, disk_sectors: u64) -> (u64, u64) {
        let header_lba = disk_sectors - 1;
        (header_lba, header_lba - self.entries_sectors())
    }

    /// True when the backup is not where the spec puts it on a disk of this size (the
    /// usual case after writing an image smaller than the disk).
    pub fn backup_misplaced(&self, disk_sectors: u64) -> bool {
        let primary = if self.header.my_lba == 1 {
            &self.header
        } else {
            return true;
        };
        primary.alternate_lba != disk_sectors - 1
    }

    /// The writes that make this the primary table of a `disk_sectors`-sector disk with its
    /// backup at the end, the usable area extended to just before the backup entries, and
    /// the protective MBR covering the whole disk. Partitions are unchanged.
    pub fn relocate_backup(&mut self, disk_sectors: u64) -> Result<Vec<Write>, TableError> {
        let (backup_lba, backup_entries_lba) = self.backup_layout(disk_sectors);
        let first_usable = self.primary_entries_lba + self.entries_sectors();
        let last_used = self.entries().iter().map(|e| e.last_lba).max().unwrap_or(0);
        if backup_entries_lba <= first_usable || last_used >= backup_entries_lba {
            return Err(TableError::DoesNotFit {
                what: "the GPT backup",
                detail: format!(
                    "the last partition ends at sector {last_used}, the disk has {disk_sectors}"
                ),
            });
        }
        // The old backup header (where the image ended) would be a second, stale table to
        // anyone scanning the disk for one: zero it, unless a partition claims that sector.
        let old_backup = if self.header.my_lba == 1 {
            self.header.alternate_lba
        } else {
            self.header.my_lba
        };
        let stale_is_free = old_backup > last_used
            && old_backup < disk_sectors
            && old_backup != backup_lba
            && old_backup > first_usable;
        self.header.my_lba = 1;
        self.header.alternate_lba = backup_lba;
        self.header.entries_lba = self.primary_entries_lba;
        self.header.first_usable_lba = self.header.first_usable_lba.max(first_usable);
        self.header.last_usable_lba = backup_entries_lba - 1;
        let mut writes = Vec::new();
        if stale_is_free {
            writes.push(Write::new(
                old_backup * self.sector_size,
                vec![0u8; self.sector_size as usize],
            ));
        }
        writes.extend(self.writes(disk_sectors));
        Ok(writes)
    }

    /// Adds a partition from `first_lba` to `last_lba` inclusive in the first free slot and
    /// returns the writes for both copies.
    pub fn add_partition(
        &mut self,
        disk_sectors: u64,
        first_lba: u64,
        last_lba: u64,
        type_guid: Guid,
        unique_guid: Guid,
        name: &str,
    ) -> Result<(u32, Vec<Write>), TableError> {
        if first_lba < self.header.first_usable_lba
            || last_lba > self.header.last_usable_lba
            || first_lba > last_lba
        {
            return Err(TableError::DoesNotFit {
                what: "the new partition",
                detail: format!(
                    "sectors {first_lba}..={last_lba} are outside the usable area {}..={}",
                    self.header.first_usable_lba, self.header.last_usable_lba
                ),
            });
        }
        if let Some(other) = self
            .entries()
            .into_iter()
            .find(|e| e.first_lba <= last_lba && first_lba <= e.last_lba)
        {
            return Err(TableError::DoesNotFit {
                what: "the new partition",
                detail: format!(
                    "it would overlap partition {} (sectors {}..={})",
                    other.number, other.first_lba, other.last_lba
                ),
            });
        }
        let entry_size = self.header.entry_size as usize;
        let slot = self
            .entries_raw
            .chunks_exact(entry_size)
            .position(|raw| raw[0..16] == [0; 16])
            .ok_or(TableError::TableFull)?;
        let raw = &mut self.entries_raw[slot * entry_size..(slot + 1) * entry_size];
        raw.fill(0);
        raw[0..16].copy_from_slice(&type_guid.0);
        raw[16..32].copy_from_slice(&unique_guid.0);
        raw[32..40].copy_from_slice(&first_lba.to_le_bytes());
        raw[40..48].copy_from_slice(&last_lba.to_le_bytes());
        for (i, unit) in name.encode_utf16().take(36).enumerate() {
            raw[56 + i * 2..58 + i * 2].copy_from_slice(&unit.to_le_bytes());
        }
        let number = u32::try_from(slot + 1).unwrap_or(u32::MAX);
        Ok((number, self.writes(disk_sectors)))
    }

    /// Both copies of the header and entries, as they should be on disk.
    fn writes(&mut self, disk_sectors: u64) -> Vec<Write> {
        let (backup_lba, backup_entries_lba) = self.backup_layout(disk_sectors);
        self.header.entries_crc = crc32fast::hash(&self.entries_raw);
        let mut primary = self.header.clone();
        primary.my_lba = 1;
        primary.alternate_lba = backup_lba;
        primary.entries_lba = self.primary_entries_lba;
        let mut backup = self.header.clone();
        backup.my_lba = backup_lba;
        backup.alternate_lba = 1;
        backup.entries_lba = backup_entries_lba;
        let s = self.sector_size;
        vec![
            Write::new(self.primary_entries_lba * s, self.entries_raw.clone()),
            Write::new(s, primary.encode(s)),
            Write::new(backup_entries_lba * s, self.entries_raw.clone()),
            Write::new(backup_lba * s, backup.encode(s)),
            protective_mbr_size(disk_sectors),
        ]
    }
}

/// The protective MBR's single partition must cover the disk (up to 2^32 - 1 sectors).
fn protective_mbr_size(disk_sectors: u64) -> Write {
    let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    Write::new(446 + 12, size.to_le_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn guids_round_trip_in_mixed_endian() {
        let guid = Guid::parse(LINUX_DATA).unwrap();
        assert_eq!(guid, Guid::LINUX_DATA);
        assert_eq!(guid.0[0], 0xaf, "first field little-endian");
        assert_eq!(guid.to_string(), LINUX_DATA);
        assert_eq!(
            Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4"),
            Some(guid)
        );
        assert_eq!(Guid::parse("not-a-guid"), None);
        assert_eq!(Guid::parse("0FC63DAF84834772-8E79-3D69D8477DE4-"), None);
        let random = Guid::from_random([0xff; 16]);
        assert_eq!(random.to_string().as_bytes()[14], b'4', "version 4");
    }

    #[test]
    fn rejects_headers_with_a_bad_checksum_or_location() {
        let mut sector = vec![0u8; 512];
        sector[..8].copy_from_slice(SIGNATURE);
        sector[12..16].copy_from_slice(&92u32.to_le_bytes());
        sector[24..32].copy_from_slice(&1u64.to_le_bytes());
        sector[80..84].copy_from_slice(&128u32.to_le_bytes());
        sector[84..88].copy_from_slice(&128u32.to_le_bytes());
        let crc = header_crc(&sector);
        sector[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(Header::parse(&sector, 1).is_some());
        assert!(Header::parse(&sector, 2).is_none(), "my_lba must match");
        sector[100] = 1; // beyond the header: not covered by the checksum
        assert!(Header::parse(&sector, 1).is_some());
        sector[60] ^= 1;
        assert!(Header::parse(&sector, 1).is_none(), "checksum");
        assert!(Header::parse(&sector[..50], 1).is_none());
    }
}
