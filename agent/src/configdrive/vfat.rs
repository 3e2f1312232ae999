//! A small FAT16 writer for config drives on 4 KiB-sector disks (where ISO 9660's 2 KiB
//! blocks do not fit): one volume, a few files, every name with a long-file-name entry so
//! that `meta_data.json` reads back as written. (The `fatfs` crate's released 0.3.6 writes
//! long-name entries in front of `.` and `..`, which `fsck.vfat` rejects.)

use std::collections::BTreeMap;

use super::{Tree, VFAT_LABEL};

const DIR_ENTRY: usize = 32;
const ROOT_ENTRIES: usize = 512;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LONG_NAME: u8 = 0x0f;
/// FAT16 holds between 4085 and 65524 clusters.
const MIN_CLUSTERS: u64 = 4085;
const MAX_CLUSTERS: u64 = 65_524;

#[derive(Debug, Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, Vec<u8>>,
    /// First cluster (0 for the root, whose entries live in the fixed root region).
    cluster: u16,
    clusters: u16,
}

/// Why the volume could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfatError {
    #[error("a FAT16 volume of {bytes} bytes with {sector}-byte sectors is not possible")]
    BadGeometry { bytes: u64, sector: u32 },
    #[error("the files do not fit in the volume")]
    Full,
    #[error("too many entries in one directory")]
    DirectoryFull,
}

/// Builds a FAT16 volume of `bytes` bytes labelled `CONFIG-2` holding `files`.
pub(super) fn build(
    files: &Tree,
    bytes: u64,
    sector: u32,
    unix_time: i64,
) -> Result<Vec<u8>, VfatError> {
    let geometry = Geometry::choose(bytes, sector)?;
    let mut root = Dir::default();
    for (path, contents) in files {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((file, dirs)) = parts.split_last() else {
            continue;
        };
        let mut dir = &mut root;
        for part in dirs {
            dir = dir.dirs.entry((*part).to_owned()).or_default();
        }
        dir.files.insert((*file).to_owned(), contents.clone());
    }
    let stamp = DosTime::from_unix(unix_time);
    let mut volume = Volume {
        image: vec![0u8; geometry.total_sectors as usize * sector as usize],
        geometry,
        next_cluster: 2,
        stamp,
    };
    volume.boot_sector();
    volume.set_fat(0, 0xfff8);
    volume.set_fat(1, 0xffff);
    volume.allocate_dirs(&mut root)?;
    let root_entries = volume.entries(&root, None, None)?;
    if root_entries.len() > ROOT_ENTRIES - 1 {
        return Err(VfatError::DirectoryFull);
    }
    let mut label = vec![0u8; DIR_ENTRY];
    label[..11].copy_from_slice(&padded_label());
    label[11] = ATTR_VOLUME_ID;
    stamp.write(&mut label);
    let root_offset = volume.geometry.root_offset();
    volume.image[root_offset..root_offset + DIR_ENTRY].copy_from_slice(&label);
    let flat: Vec<u8> = root_entries.concat();
    volume.image[root_offset + DIR_ENTRY..root_offset + DIR_ENTRY + flat.len()]
        .copy_from_slice(&flat);
    volume.write_dirs(&root)?;
    Ok(volume.image)
}

fn padded_label() -> [u8; 11] {
    let mut label = [b' '; 11];
    label[..VFAT_LABEL.len()].copy_from_slice(VFAT_LABEL.as_bytes());
    label
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    sector: u32,
    sectors_per_cluster: u32,
    reserved: u32,
    fat_sectors: u32,
    root_sectors: u32,
    total_sectors: u32,
}

impl Geometry {
    fn choose(bytes: u64, sector: u32) -> Result<Self, VfatError> {
        let bad = VfatError::BadGeometry { bytes, sector };
        if !(512..=4096).contains(&sector) || !sector.is_power_of_two() {
            return Err(bad);
        }
        let total_sectors = u32::try_from(bytes / u64::from(sector)).map_err(|_| bad)?;
        let root_sectors = (ROOT_ENTRIES * DIR_ENTRY) as u32 / sector;
        for sectors_per_cluster in [1u32, 2, 4, 8, 16, 32, 64] {
            if sectors_per_cluster * sector > 32 * 1024 {
                break;
            }
            // Two FATs of two bytes per cluster, solved iteratively.
            let mut fat_sectors = 1u32;
            loop {
                let data = total_sectors.saturating_sub(1 + 2 * fat_sectors + root_sectors);
                let clusters = data / sectors_per_cluster;
                let needed = ((clusters + 2) * 2).div_ceil(sector);
                if needed <= fat_sectors {
                    break;
                }
                fat_sectors = needed;
            }
            let data = total_sectors.saturating_sub(1 + 2 * fat_sectors + root_sectors);
            let clusters = u64::from(data / sectors_per_cluster);
            if (MIN_CLUSTERS..=MAX_CLUSTERS).contains(&clusters) {
                return Ok(Self {
                    sector,
                    sectors_per_cluster,
                    reserved: 1,
                    fat_sectors,
                    root_sectors,
                    total_sectors,
                });
            }
        }
        Err(VfatError::BadGeometry { bytes, sector })
    }

    fn cluster_bytes(&self) -> usize {
        (self.sectors_per_cluster * self.sector) as usize
    }

    fn fat_offset(&self, copy: u32) -> usize {
        ((self.reserved + copy * self.fat_sectors) * self.sector) as usize
    }

    fn root_offset(&self) -> usize {
        self.fat_offset(2)
    }

    fn data_offset(&self) -> usize {
        self.root_offset() + (self.root_sectors * self.sector) as usize
    }

    fn clusters(&self) -> u32 {
        (self.total_sectors - self.reserved - 2 * self.fat_sectors - self.root_sectors)
            / self.sectors_per_cluster
    }
}

struct Volume {
    image: Vec<u8>,
    geometry: Geometry,
    next_cluster: u32,
    stamp: DosTime,
}

impl Volume {
    fn boot_sector(&mut self) {
        let g = self.geometry;
        let b = &mut self.image;
        b[0..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
        b[3..11].copy_from_slice(b"RIVET   ");
        b[11..13].copy_from_slice(&(g.sector as u16).to_le_bytes());
        b[13] = g.sectors_per_cluster as u8;
        b[14..16].copy_from_slice(&(g.reserved as u16).to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&(ROOT_ENTRIES as u16).to_le_bytes());
        match u16::try_from(g.total_sectors) {
            Ok(small) => b[19..21].copy_from_slice(&small.to_le_bytes()),
            Err(_) => b[32..36].copy_from_slice(&g.total_sectors.to_le_bytes()),
        }
        b[21] = 0xf8;
        b[22..24].copy_from_slice(&(g.fat_sectors as u16).to_le_bytes());
        b[24..26].copy_from_slice(&32u16.to_le_bytes());
        b[26..28].copy_from_slice(&64u16.to_le_bytes());
        b[36] = 0x80;
        b[38] = 0x29;
        // The volume serial number, from the time as DOS formatters do.
        let serial = u32::from(self.stamp.date) << 16 | u32::from(self.stamp.time);
        b[39..43].copy_from_slice(&serial.to_le_bytes());
        b[43..54].copy_from_slice(&padded_label());
        b[54..62].copy_from_slice(b"FAT16   ");
        b[510] = 0x55;
        b[511] = 0xaa;
    }

    fn set_fat(&mut self, cluster: u32, value: u16) {
        for copy in 0..2 {
            let at = self.geometry.fat_offset(copy) + cluster as usize * 2;
            self.image[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
    }

    /// Reserves a chain of `count` clusters and returns the first.
    fn allocate(&mut self, count: u32) -> Result<u16, VfatError> {
        let count = count.max(1);
        let first = self.next_cluster;
        let last = first + count - 1;
        if last >= self.geometry.clusters() + 2 {
            return Err(VfatError::Full);
        }
        for cluster in first..last {
            self.set_fat(cluster, (cluster + 1) as u16);
        }
        self.set_fat(last, 0xffff);
        self.next_cluster = last + 1;
        u16::try_from(first).map_err(|_| VfatError::Full)
    }

    /// Gives every directory below the root its clusters (sized for its entries).
    fn allocate_dirs(&mut self, dir: &mut Dir) -> Result<(), VfatError> {
        for child in dir.dirs.values_mut() {
            let entries = 2 + child.dirs.len() * 6 + child.files.len() * 6;
            let clusters = (entries * DIR_ENTRY).div_ceil(self.geometry.cluster_bytes()) as u32;
            child.cluster = self.allocate(clusters)?;
            child.clusters = clusters as u16;
            self.allocate_dirs(child)?;
        }
        Ok(())
    }

    /// The entries of `dir` (with `.` and `..` when it is not the root), allocating and
    /// writing file data as it goes.
    fn entries(
        &mut self,
        dir: &Dir,
        own: Option<u16>,
        parent: Option<u16>,
    ) -> Result<Vec<Vec<u8>>, VfatError> {
        let mut out = Vec::new();
        if let Some(own) = own {
            out.push(self.short_entry(*b".          ", ATTR_DIRECTORY, own, 0));
            out.push(self.short_entry(*b"..         ", ATTR_DIRECTORY, parent.unwrap_or(0), 0));
        }
        let mut used: Vec<[u8; 11]> = Vec::new();
        for (name, child) in &dir.dirs {
            let short = short_name(name, &used);
            used.push(short);
            out.extend(long_entries(name, &short));
            out.push(self.short_entry(short, ATTR_DIRECTORY, child.cluster, 0));
        }
        for (name, contents) in &dir.files {
            let short = short_name(name, &used);
            used.push(short);
            let cluster = if contents.is_empty() {
                0
            } else {
                let clusters = contents.len().div_ceil(self.geometry.cluster_bytes()) as u32;
                let first = self.allocate(clusters)?;
                let at = self.cluster_offset(first);
                self.image[at..at + contents.len()].copy_from_slice(contents);
                first
            };
            out.extend(long_entries(name, &short));
            out.push(self.short_entry(short, 0x20, cluster, contents.len() as u32));
        }
        Ok(out)
    }

    fn write_dirs(&mut self, dir: &Dir) -> Result<(), VfatError> {
        self.write_children(dir, 0)
    }

    fn write_children(&mut self, dir: &Dir, own: u16) -> Result<(), VfatError> {
        for child in dir.dirs.values() {
            let entries = self
                .entries(child, Some(child.cluster), Some(own))?
                .concat();
            let capacity = child.clusters as usize * self.geometry.cluster_bytes();
            if entries.len() > capacity {
                return Err(VfatError::DirectoryFull);
            }
            let at = self.cluster_offset(child.cluster);
            self.image[at..at + entries.len()].copy_from_slice(&entries);
            self.write_children(child, child.cluster)?;
        }
        Ok(())
    }

    fn cluster_offset(&self, cluster: u16) -> usize {
        self.geometry.data_offset() + (usize::from(cluster) - 2) * self.geometry.cluster_bytes()
    }

    fn short_entry(&self, name: [u8; 11], attr: u8, cluster: u16, size: u32) -> Vec<u8> {
        let mut e = vec![0u8; DIR_ENTRY];
        e[..11].copy_from_slice(&name);
        e[11] = attr;
        self.stamp.write(&mut e);
        e[26..28].copy_from_slice(&cluster.to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }
}

/// An 8.3 name unique in its directory: `META_D~1JSO`.
fn short_name(name: &str, used: &[[u8; 11]]) -> [u8; 11] {
    let clean = |s: &str| -> Vec<u8> {
        s.bytes()
            .map(|b| b.to_ascii_uppercase())
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .collect()
    };
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (clean(stem), clean(ext)),
        _ => (clean(name), Vec::new()),
    };
    for n in 1..1000u32 {
        let tail = format!("~{n}");
        let keep = 8usize.saturating_sub(tail.len()).min(stem.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&stem[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let ext_len = ext.len().min(3);
        short[8..8 + ext_len].copy_from_slice(&ext[..ext_len]);
        if !used.contains(&short) {
            return short;
        }
    }
    [b'_'; 11]
}

/// The long-file-name entries for `name`, last part first, as they precede the short entry.
fn long_entries(name: &str, short: &[u8; 11]) -> Vec<Vec<u8>> {
    let checksum = short
        .iter()
        .fold(0u8, |sum, b| sum.rotate_right(1).wrapping_add(*b));
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xffff);
        }
    }
    let parts: Vec<&[u16]> = units.chunks(13).collect();
    let count = parts.len();
    let mut entries = Vec::with_capacity(count);
    for (i, part) in parts.iter().enumerate().rev() {
        let mut e = vec![0u8; DIR_ENTRY];
        e[0] = (i + 1) as u8 | if i + 1 == count { 0x40 } else { 0 };
        e[11] = ATTR_LONG_NAME;
        e[13] = checksum;
        let slots = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (slot, unit) in slots.zip(part.iter()) {
            e[slot..slot + 2].copy_from_slice(&unit.to_le_bytes());
        }
        entries.push(e);
    }
    entries
}

/// A DOS date and time (local time is not known in the ramdisk; UTC is written).
#[derive(Debug, Clone, Copy)]
struct DosTime {
    date: u16,
    time: u16,
}

impl DosTime {
    fn from_unix(unix: i64) -> Self {
        let (year, month, day, hour, minute, second) = super::civil_from_unix(unix);
        let year = year.clamp(1980, 2107) as u32;
        Self {
            date: (((year - 1980) << 9) | (month << 5) | day) as u16,
            time: ((hour << 11) | (minute << 5) | (second / 2)) as u16,
        }
    }

    fn write(&self, entry: &mut [u8]) {
        for at in [14, 22] {
            entry[at..at + 2].copy_from_slice(&self.time.to_le_bytes());
        }
        for at in [16, 18, 24] {
            entry[at..at + 2].copy_from_slice(&self.date.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_unique_8_3() {
        let first = short_name("meta_data.json", &[]);
        assert_eq!(&first, b"META_D~1JSO");
        assert_eq!(&short_name("meta_data.jsonx", &[first]), b"META_D~2JSO");
        assert_eq!(&short_name("user_data", &[]), b"USER_D~1   ");
        assert_eq!(&short_name("latest", &[]), b"LATEST~1   ");
    }

    #[test]
    fn long_names_split_into_13_unit_entries_last_first() {
        let short = short_name("network_data.json", &[]);
        let entries = long_entries("network_data.json", &short);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0][0], 0x42, "last entry first, flagged");
        assert_eq!(entries[1][0], 0x01);
        assert_eq!(entries[1][1], b'n');
    }

    #[test]
    fn geometry_fits_fat16_for_both_sector_sizes() {
        for sector in [512, 4096] {
            let g = Geometry::choose(64 << 20, sector).unwrap_or_else(|e| panic!("{e}"));
            let clusters = u64::from(g.clusters());
            assert!(
                (MIN_CLUSTERS..=MAX_CLUSTERS).contains(&clusters),
                "{clusters}"
            );
        }
        assert!(Geometry::choose(64 << 20, 1000).is_err());
        assert!(
            Geometry::choose(1 << 20, 4096).is_err(),
            "too small for FAT16"
        );
    }

    #[test]
    fn dates_are_dos_encoded() {
        let t = DosTime::from_unix(1_700_000_000); // 2023-11-14 22:13:20
        assert_eq!(t.date, ((2023 - 1980) << 9) | (11 << 5) | 14);
        assert_eq!(t.time, (22 << 11) | (13 << 5) | 10);
    }
}
