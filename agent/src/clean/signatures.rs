//! On-disk signatures that make a disk or partition recognisable — file systems, RAID and LVM
//! members, encrypted volumes, ISO images — and exactly which bytes to zero so that nothing
//! (libblkid, udev, the kernel's md autodetect, an installer) recognises them any more. The
//! locations follow each format's specification and match what `wipefs` reports.
//!
//! Partition tables are handled by the caller (they are found by parsing, not probing).

use std::io;

use crate::partition::ReadAt;

/// A signature found in a region.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    /// libblkid's name for what was found (`ext4`, `LVM2_member`, `linux_raid_member` …).
    pub kind: &'static str,
    /// Absolute byte offset on the disk.
    pub offset: u64,
    /// How many bytes at `offset` identify it (and get zeroed).
    pub len: u64,
}

/// Formats whose presence stops cleaning unless forced: other clusters' shared storage (IPA's
/// guard against wiping a GPFS, VMFS or GFS2 volume someone else still uses).
pub const PROTECTED: &[&str] = &["VMFS_volume_member", "VMFS", "gfs2"];

const MIB: u64 = 1 << 20;
const MD_MAGIC: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

/// A region of the disk (the whole disk or one partition).
struct Region<'a> {
    disk: &'a dyn ReadAt,
    start: u64,
    len: u64,
    found: Vec<Signature>,
}

impl Region<'_> {
    /// Bytes at a region-relative offset; `None` beyond the region or the disk.
    fn bytes(&self, at: u64, n: usize) -> io::Result<Option<Vec<u8>>> {
        if at.checked_add(n as u64).is_none_or(|end| end > self.len) {
            return Ok(None);
        }
        let mut buf = vec![0u8; n];
        match self.disk.read_at(self.start + at, &mut buf) {
            Ok(()) => Ok(Some(buf)),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn is(&self, at: u64, magic: &[u8]) -> io::Result<bool> {
        Ok(self.bytes(at, magic.len())?.as_deref() == Some(magic))
    }

    fn add(&mut self, kind: &'static str, at: u64, len: u64) {
        self.found.push(Signature {
            kind,
            offset: self.start + at,
            len,
        });
    }

    /// Records `magic` at `at` if present.
    fn check(&mut self, kind: &'static str, at: u64, magic: &[u8]) -> io::Result<bool> {
        let present = self.is(at, magic)?;
        if present {
            self.add(kind, at, magic.len() as u64);
        }
        Ok(present)
    }
}

/// Every signature in `len` bytes at `start`.
pub fn probe(disk: &dyn ReadAt, start: u64, len: u64) -> io::Result<Vec<Signature>> {
    let mut r = Region {
        disk,
        start,
        len,
        found: Vec::new(),
    };
    ext(&mut r)?;
    r.check("xfs", 0, b"XFSB")?;
    for mirror in [64 * 1024, 64 * MIB, 256 * 1024 * MIB] {
        r.check("btrfs", mirror + 0x40, b"_BHRfS_M")?;
    }
    for page in [4096u64, 8192, 16384, 65536] {
        if !r.check("swap", page - 10, b"SWAPSPACE2")? {
            r.check("swap", page - 10, b"SWAP-SPACE")?;
        }
    }
    for sector in 0..4u64 {
        if r.is(sector * 512, b"LABELONE")? && r.is(sector * 512 + 0x18, b"LVM2 001")? {
            r.add("LVM2_member", sector * 512, 8);
            r.add("LVM2_member", sector * 512 + 0x18, 8);
        }
    }
    md(&mut r)?;
    if r.check("crypto_LUKS", 0, b"LUKS\xba\xbe")? {
        // LUKS2 keeps a second header at one of these offsets.
        for shift in 0..9 {
            r.check("crypto_LUKS", 0x4000 << shift, b"SKUL\xba\xbe")?;
        }
    }
    vfat(&mut r)?;
    r.check("ntfs", 3, b"NTFS    ")?;
    iso9660(&mut r)?;
    r.check("squashfs", 0, b"hsqs")?;
    r.check("f2fs", 0x400, &0xf2f5_2010_u32.to_le_bytes())?;
    r.check("bcache", 4096 + 24, &BCACHE_MAGIC)?;
    r.check("gfs2", 0x10000, &0x0116_1970_u32.to_be_bytes())?;
    r.check("VMFS_volume_member", MIB, &0xc001_d00d_u32.to_le_bytes())?;
    r.check("VMFS", 2 * MIB, &0x2fab_f15e_u32.to_le_bytes())?;
    Ok(r.found)
}

fn ext(r: &mut Region<'_>) -> io::Result<()> {
    let Some(sb) = r.bytes(1024, 1024)? else {
        return Ok(());
    };
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Ok(());
    }
    let word = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let (compat, incompat) = (word(0x5c), word(0x60));
    // extents, 64bit or flex_bg make it ext4; a journal ext3.
    let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    r.add(kind, 1024 + 0x38, 2);
    Ok(())
}

/// Linux software RAID superblocks: 1.1 at the start, 1.2 at 4 KiB, 1.0 near the end (8 KiB
/// before it, 4 KiB-aligned), 0.90 in the last 64 KiB-aligned 64 KiB block.
fn md(r: &mut Region<'_>) -> io::Result<()> {
    let end_1_0 = r.len.saturating_sub(8192) & !4095;
    let end_0_90 = (r.len & !65535).saturating_sub(65536);
    for (at, major) in [(0, 1u32), (4096, 1), (end_1_0, 1), (end_0_90, 0)] {
        if r.len < 65536 * 2 && major == 0 {
            continue;
        }
        if r.is(at, &MD_MAGIC)? && r.is(at + 4, &major.to_le_bytes())? {
            r.add("linux_raid_member", at, 4);
        }
    }
    Ok(())
}

/// A FAT boot sector: wipefs zeroes the type string, the jump instruction and the boot
/// signature, since libblkid accepts a FAT volume on several of its features.
fn vfat(r: &mut Region<'_>) -> io::Result<()> {
    let Some(boot) = r.bytes(0, 512)? else {
        return Ok(());
    };
    if boot[510..512] != [0x55, 0xaa] {
        return Ok(());
    }
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    if !(512..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
        return Ok(());
    }
    let label_at = if boot[0x52..0x57] == *b"FAT32" || boot[0x52..0x57] == *b"MSWIN" {
        0x52
    } else if boot[0x36..0x39] == *b"FAT" || boot[0x36..0x3b] == *b"MSDOS" {
        0x36
    } else {
        return Ok(());
    };
    r.add("vfat", label_at, 8);
    r.add("vfat", 0, 3);
    r.add("vfat", 510, 2);
    Ok(())
}

/// ISO 9660: every volume descriptor's `CD001` (the primary, Joliet, El Torito …) up to the
/// set terminator.
fn iso9660(r: &mut Region<'_>) -> io::Result<()> {
    for i in 0..32u64 {
        let at = 0x8000 + i * 2048;
        let Some(header) = r.bytes(at, 6)? else {
            break;
        };
        if &header[1..6] != b"CD001" {
            break;
        }
        r.add("iso9660", at + 1, 5);
        if header[0] == 255 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::partition::MemoryDisk;

    fn disk_with(size: usize, patches: &[(usize, &[u8])]) -> MemoryDisk {
        let mut bytes = vec![0u8; size];
        for (at, data) in patches {
            bytes[*at..*at + data.len()].copy_from_slice(data);
        }
        MemoryDisk {
            bytes,
            sector_size: 512,
        }
    }

    fn kinds(found: &[Signature]) -> Vec<(&'static str, u64)> {
        found.iter().map(|s| (s.kind, s.offset)).collect()
    }

    #[test]
    fn finds_md_superblocks_of_every_version_at_both_ends() {
        let size = 4 * 1024 * 1024 + 12345;
        let end_1_0 = (size - 8192) & !4095;
        let end_0_90 = (size & !65535) - 65536;
        let v1 = [&MD_MAGIC[..], &1u32.to_le_bytes()].concat();
        let v0 = [&MD_MAGIC[..], &0u32.to_le_bytes()].concat();
        let disk = disk_with(size, &[(4096, &v1), (end_1_0, &v1), (end_0_90, &v0)]);
        let found = probe(&disk, 0, size as u64).unwrap();
        assert_eq!(
            kinds(&found),
            vec![
                ("linux_raid_member", 4096),
                ("linux_raid_member", end_1_0 as u64),
                ("linux_raid_member", end_0_90 as u64)
            ]
        );
    }

    #[test]
    fn offsets_are_relative_to_the_region_and_stay_inside_it() {
        let disk = disk_with(1 << 20, &[(65536, b"XFSB")]);
        let found = probe(&disk, 65536, 4096).unwrap();
        assert_eq!(kinds(&found), vec![("xfs", 65536)]);
        // A region that ends before a signature's offset does not see it or read past it.
        assert!(probe(&disk, 0, 1000).unwrap().is_empty());
        assert!(probe(&disk, (1 << 20) - 100, 5000).unwrap().is_empty());
    }

    #[test]
    fn a_fat_boot_sector_needs_its_type_string() {
        let mut boot = vec![0u8; 512];
        boot[11..13].copy_from_slice(&512u16.to_le_bytes());
        boot[510] = 0x55;
        boot[511] = 0xaa;
        let mbr_only = disk_with(1 << 16, &[(0, &boot)]);
        assert!(probe(&mbr_only, 0, 1 << 16).unwrap().is_empty());
        boot[0x52..0x5a].copy_from_slice(b"FAT32   ");
        let fat = disk_with(1 << 16, &[(0, &boot)]);
        assert_eq!(
            kinds(&probe(&fat, 0, 1 << 16).unwrap()),
            vec![("vfat", 0x52), ("vfat", 0), ("vfat", 510)]
        );
    }

    #[test]
    fn every_iso_volume_descriptor_is_found() {
        let disk = disk_with(
            1 << 16,
            &[
                (0x8000, b"\x01CD001"),
                (0x8800, b"\x02CD001"),
                (0x9000, b"\xffCD001"),
                (0x9800, b"\x01CD001"),
            ],
        );
        let found = probe(&disk, 0, 1 << 16).unwrap();
        assert_eq!(
            kinds(&found),
            vec![
                ("iso9660", 0x8001),
                ("iso9660", 0x8801),
                ("iso9660", 0x9001)
            ]
        );
    }
}
