//! Config drives: the files cloud-init and cloudbase-init read on first boot
//! (`openstack/latest/meta_data.json`, `user_data`, `network_data.json`, …) in a partition at
//! the end of the disk labelled `config-2` — ISO 9660 with Joliet names normally, VFAT
//! labelled `CONFIG-2` on 4 KiB-sector disks (ISO 9660 needs 2 KiB blocks), at most 64 MiB.

pub mod iso9660;
pub mod vfat;

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::disk::{Disk, DiskError};
use crate::partition::gpt::{Gpt, Guid};
use crate::partition::{self, TableError, Write, mbr};

pub use iso9660::Tree;

/// The size of the partition created for a config drive, and the limit on its contents.
pub const PARTITION_BYTES: u64 = 64 << 20;
/// The ISO 9660 volume identifier cloud-init looks for.
pub const ISO_LABEL: &str = "config-2";
/// The VFAT label cloud-init looks for.
pub const VFAT_LABEL: &str = "CONFIG-2";
const MIB: u64 = 1 << 20;
const MAX_FILES: usize = 1000;
const MAX_DEPTH: usize = 8;

/// Config drive problems.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigDriveError {
    #[error("config drive source {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config drive file {path:?} is not allowed: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("config drive contents are {bytes} bytes; the limit is {limit}")]
    TooBig { bytes: u64, limit: u64 },
    #[error("config drive has no files")]
    Empty,
    #[error("config drive JSON: {0}")]
    Json(String),
    #[error("the disk has no partition table, so there is nowhere to add a config drive")]
    NoPartitionTable,
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("building the VFAT file system: {0}")]
    Vfat(#[from] vfat::VfatError),
}

/// The files of a config drive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDrive {
    files: Tree,
}

/// Files that belong under `openstack/latest/` when a directory holds them loose.
const LOOSE_FILES: &[&str] = &[
    "meta_data.json",
    "user_data",
    "network_data.json",
    "vendor_data.json",
    "vendor_data2.json",
];

impl ConfigDrive {
    /// The files in `dir`: a tree with an `openstack/` directory is taken as it is; otherwise
    /// the usual files (`meta_data.json`, `user_data`, `network_data.json`,
    /// `vendor_data.json`, `vendor_data2.json`) go under `openstack/latest/`. Only regular
    /// files are read; links are refused rather than followed.
    pub fn from_dir(dir: &Path) -> Result<Self, ConfigDriveError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ConfigDriveError::Read { path, source }
        };
        let mut drive = Self::default();
        if dir.join("openstack").is_dir() {
            drive.add_tree(dir, String::new(), 0)?;
        } else {
            for name in LOOSE_FILES {
                let path = dir.join(name);
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_file() => {
                        let bytes = std::fs::read(&path).map_err(read_err(&path))?;
                        drive.insert(&format!("openstack/latest/{name}"), bytes)?;
                    }
                    Ok(_) => {
                        return Err(ConfigDriveError::BadPath {
                            path: path.display().to_string(),
                            why: "not a regular file",
                        });
                    }
                    Err(_) => {}
                }
            }
        }
        drive.check()?;
        Ok(drive)
    }

    /// A directory ([`ConfigDrive::from_dir`]) or a file holding Ironic's JSON form
    /// ([`ConfigDrive::from_ironic_json`]).
    pub fn load(path: &Path) -> Result<Self, ConfigDriveError> {
        if path.is_dir() {
            return Self::from_dir(path);
        }
        let text = std::fs::read(path).map_err(|source| ConfigDriveError::Read {
            path: path.to_owned(),
            source,
        })?;
        let json = serde_json::from_slice(&text)
            .map_err(|e| ConfigDriveError::Json(format!("{}: {e}", path.display())))?;
        Self::from_ironic_json(&json)
    }

    fn add_tree(
        &mut self,
        dir: &Path,
        prefix: String,
        depth: usize,
    ) -> Result<(), ConfigDriveError> {
        if depth > MAX_DEPTH {
            return Err(ConfigDriveError::BadPath {
                path: prefix,
                why: "nested too deep",
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigDriveError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = format!("{prefix}{name}");
            let path = entry.path();
            let meta =
                std::fs::symlink_metadata(&path).map_err(|source| ConfigDriveError::Read {
                    path: path.clone(),
                    source,
                })?;
            if meta.is_dir() {
                self.add_tree(&path, format!("{relative}/"), depth + 1)?;
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).map_err(|source| ConfigDriveError::Read {
                    path: path.clone(),
                    source,
                })?;
                self.insert(&relative, bytes)?;
            } else {
                return Err(ConfigDriveError::BadPath {
                    path: relative,
                    why: "not a regular file or directory (links are not followed)",
                });
            }
        }
        Ok(())
    }

    /// Ironic's JSON form: `{"meta_data": {…}, "user_data": "…" or {…}, "network_data":
    /// {…}, "vendor_data": {…}}`.
    pub fn from_ironic_json(value: &serde_json::Value) -> Result<Self, ConfigDriveError> {
        let object = value
            .as_object()
            .ok_or_else(|| ConfigDriveError::Json("expected an object".to_owned()))?;
        let mut drive = Self::default();
        for (key, file) in [
            ("meta_data", "meta_data.json"),
            ("network_data", "network_data.json"),
            ("vendor_data", "vendor_data.json"),
        ] {
            if let Some(v) = object.get(key).filter(|v| !v.is_null()) {
                let bytes =
                    serde_json::to_vec(v).map_err(|e| ConfigDriveError::Json(e.to_string()))?;
                drive.insert(&format!("openstack/latest/{file}"), bytes)?;
            }
        }
        match object.get("user_data") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(text)) => {
                drive.insert("openstack/latest/user_data", text.as_bytes().to_vec())?;
            }
            Some(other) => {
                let bytes =
                    serde_json::to_vec(other).map_err(|e| ConfigDriveError::Json(e.to_string()))?;
                drive.insert("openstack/latest/user_data", bytes)?;
            }
        }
        for key in object.keys() {
            if !["meta_data", "network_data", "vendor_data", "user_data"].contains(&key.as_str()) {
                return Err(ConfigDriveError::Json(format!("unknown key {key:?}")));
            }
        }
        drive.check()?;
        Ok(drive)
    }

    /// Adds one file after checking its path: relative, no `.` or `..`, portable names.
    pub fn insert(&mut self, path: &str, contents: Vec<u8>) -> Result<(), ConfigDriveError> {
        let bad = |why| ConfigDriveError::BadPath {
            path: path.to_owned(),
            why,
        };
        if path.is_empty() || path.starts_with('/') {
            return Err(bad("must be a relative path"));
        }
        let mut depth = 0;
        for name in path.split('/') {
            if name.is_empty() || name == "." || name == ".." {
                return Err(bad("no empty, '.', '..' or absolute components"));
            }
            let portable = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !portable || name.len() > 64 {
                return Err(bad(
                    "names are letters, digits, '.', '_' and '-', at most 64",
                ));
            }
            depth += 1;
        }
        if depth > MAX_DEPTH {
            return Err(bad("nested too deep"));
        }
        if self.files.len() >= MAX_FILES {
            return Err(bad("too many files"));
        }
        self.files.insert(path.to_owned(), contents);
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigDriveError> {
        if self.files.is_empty() {
            return Err(ConfigDriveError::Empty);
        }
        let bytes: u64 = self.files.values().map(|f| f.len() as u64).sum();
        // Room for the file system's own structures.
        let limit = PARTITION_BYTES - 4 * MIB;
        if bytes > limit {
            return Err(ConfigDriveError::TooBig { bytes, limit });
        }
        Ok(())
    }

    pub fn files(&self) -> &Tree {
        &self.files
    }

    /// The drive as an ISO 9660 image labelled `config-2`.
    pub fn iso9660(&self, unix_time: i64) -> Vec<u8> {
        iso9660::build(&self.files, ISO_LABEL, unix_time)
    }

    /// The drive as a FAT16 file system of `bytes` bytes with `sector_size`-byte sectors,
    /// labelled `CONFIG-2`.
    pub fn vfat(
        &self,
        bytes: u64,
        sector_size: u32,
        unix_time: i64,
    ) -> Result<Vec<u8>, ConfigDriveError> {
        Ok(vfat::build(&self.files, bytes, sector_size, unix_time)?)
    }
}

/// The file system a config drive was written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Iso9660,
    Vfat,
}

/// Where a config drive went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub partition: u32,
    pub offset: u64,
    pub size: u64,
    pub filesystem: Filesystem,
    /// False when an existing `config-2` partition was reused.
    pub created: bool,
}

/// Moves a GPT's backup to the end of the disk when it is elsewhere (an image smaller than
/// the disk was written). Returns whether anything changed.
pub fn fix_gpt_backup(disk: &Disk) -> Result<bool, ConfigDriveError> {
    let Some(mut table) = Gpt::read(disk)? else {
        return Ok(false);
    };
    let sectors = disk.size() / u64::from(disk.logical_sector_size());
    if !table.backup_misplaced(sectors) {
        return Ok(false);
    }
    apply(disk, &table.relocate_backup(sectors)?)?;
    disk.sync()?;
    Ok(true)
}

fn apply(disk: &Disk, writes: &[Write]) -> Result<(), DiskError> {
    for write in writes {
        disk.write_at(write.offset, &write.bytes)?;
    }
    Ok(())
}

/// Writes `drive` into a `config-2` partition: an existing one is reused, otherwise one of
/// [`PARTITION_BYTES`] is added at the end of the disk (after fixing a misplaced GPT backup;
/// on MBR disks below the 2 TiB limit).
pub fn write_to_disk(
    disk: &Disk,
    drive: &ConfigDrive,
    unix_time: i64,
) -> Result<Placement, ConfigDriveError> {
    let sector = u64::from(disk.logical_sector_size());
    let filesystem = if sector >= 4096 {
        Filesystem::Vfat
    } else {
        Filesystem::Iso9660
    };
    let partitions = partition::partitions(disk)?;
    if partitions.is_empty() {
        return Err(ConfigDriveError::NoPartitionTable);
    }
    let existing = partitions
        .iter()
        .find(|p| p.len >= MIB && is_config_drive(disk, p.offset).unwrap_or(false));
    let (number, offset, size, created) = match existing {
        Some(p) => (p.number, p.offset, p.len, false),
        None => {
            let (number, offset, size) = add_partition(disk)?;
            (number, offset, size, true)
        }
    };
    let contents = match filesystem {
        Filesystem::Iso9660 => drive.iso9660(unix_time),
        Filesystem::Vfat => drive.vfat(
            size.min(PARTITION_BYTES),
            disk.logical_sector_size(),
            unix_time,
        )?,
    };
    if contents.len() as u64 > size {
        return Err(ConfigDriveError::TooBig {
            bytes: contents.len() as u64,
            limit: size,
        });
    }
    // Whatever the partition's sectors held before (an md superblock at its end, an old
    // file system) must not be found next to the new volume.
    disk.write_zeroes(offset, size.min(MIB))?;
    disk.write_zeroes(offset + size - size.min(MIB), size.min(MIB))?;
    disk.write_at(offset, &contents)?;
    disk.sync()?;
    if let Err(err) = disk.reread_partitions() {
        tracing::warn!(error = %err, "the kernel did not re-read the partition table; it sees the config drive after a reboot");
    }
    Ok(Placement {
        partition: number,
        offset,
        size,
        filesystem,
        created,
    })
}

/// Adds a [`PARTITION_BYTES`] partition at the end of the disk, 1 MiB-aligned; returns its
/// number, offset and size in bytes.
fn add_partition(disk: &Disk) -> Result<(u32, u64, u64), ConfigDriveError> {
    let sector = u64::from(disk.logical_sector_size());
    let sectors = disk.size() / sector;
    let size_sectors = PARTITION_BYTES / sector;
    let align = MIB / sector;
    if let Some(mut table) = Gpt::read(disk)? {
        if table.backup_misplaced(sectors) {
            apply(disk, &table.relocate_backup(sectors)?)?;
        }
        let last = table.header.last_usable_lba;
        let first = (last + 1).saturating_sub(size_sectors) / align * align;
        let (number, writes) = table.add_partition(
            sectors,
            first,
            last,
            Guid::LINUX_DATA,
            Guid::from_random(random_bytes()),
            ISO_LABEL,
        )?;
        apply(disk, &writes)?;
        return Ok((number, first * sector, (last - first + 1) * sector));
    }
    let mut sector0 = vec![0u8; 512];
    disk.read_at(0, &mut sector0)?;
    if !mbr::has_signature(&sector0) {
        return Err(ConfigDriveError::NoPartitionTable);
    }
    // MBR addresses 2^32 sectors: on a bigger disk the drive ends at that limit.
    let end = sectors.min(1 << 32);
    let first = end.saturating_sub(size_sectors) / align * align;
    let count = end - first;
    let (number, write) = mbr::Mbr::add_primary(&sector0, first, count, mbr::LINUX)?;
    disk.write_at(write.offset, &write.bytes)?;
    Ok((number, first * sector, count * sector))
}

/// A UTC calendar date and time from Unix time: `(year, month, day, hour, minute, second)`
/// (Howard Hinnant's days-to-civil algorithm).
fn civil_from_unix(seconds: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    );
    (year, month, day, hour, minute, second)
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = urandom.read_exact(&mut bytes);
    }
    bytes
}

/// Whether a partition at `offset` holds a config drive (either label).
fn is_config_drive(disk: &Disk, offset: u64) -> Result<bool, DiskError> {
    let mut pvd = vec![0u8; 72];
    if disk.read_at(offset + 0x8000, &mut pvd).is_ok()
        && &pvd[1..6] == b"CD001"
        && String::from_utf8_lossy(&pvd[40..72])
            .trim()
            .eq_ignore_ascii_case(ISO_LABEL)
    {
        return Ok(true);
    }
    let mut boot = vec![0u8; 512];
    disk.read_at(offset, &mut boot)?;
    let label_at = if &boot[0x52..0x57] == b"FAT32" {
        0x47
    } else {
        0x2b
    };
    Ok(mbr::has_signature(&boot)
        && String::from_utf8_lossy(&boot[label_at..label_at + 11]).trim() == VFAT_LABEL)
}
