//! Disk cleaning: `metadata` (every partition-table copy and every file-system, RAID, LVM or
//! encryption signature at both ends of the disk and of each partition) and `erase` (NVMe
//! crypto erase, secure discard, write-zeroes, verified discard or plain zeroing, strongest
//! first). Disks are cleaned in parallel, each with a report entry saying what was done, how,
//! and how long it took.

pub mod nvme;
pub mod signatures;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use self::signatures::{PROTECTED, Signature};
use crate::disk::{Access, Disk, DiskError};
use crate::inventory::DiskInventory;
use crate::partition::gpt::{self, Guid};
use crate::partition::{self, PartitionKind, PartitionRange, mbr};
use crate::shutdown;

/// How thoroughly to clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanMode {
    /// Remove everything that identifies partitions, file systems and volumes.
    Metadata,
    /// Make every byte unrecoverable.
    Erase,
}

/// Cleaning policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    pub mode: CleanMode,
    /// Report read-only disks as skipped instead of failing on them.
    pub skip_read_only: bool,
    /// Clean even disks with GPFS, VMFS or GFS2 volumes (shared storage of other clusters).
    pub force: bool,
    /// Disks cleaned at once (IPA uses 4).
    pub parallel: usize,
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self {
            mode: CleanMode::Metadata,
            skip_read_only: false,
            force: false,
            parallel: 4,
        }
    }
}

/// A disk to clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanTarget {
    pub path: PathBuf,
    pub read_only: bool,
    pub virtual_media: bool,
}

impl CleanTarget {
    /// A disk the inventory found.
    pub fn from_inventory(disk: &DiskInventory) -> Self {
        Self {
            path: PathBuf::from(&disk.kernel_name),
            read_only: disk.read_only,
            virtual_media: disk.virtual_media,
        }
    }

    /// A device or image file named on the command line.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_only: false,
            virtual_media: false,
        }
    }
}

/// What happened to one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Skipped,
}

/// One disk's entry in the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskReport {
    pub disk: String,
    /// `metadata`, `nvme-format-crypto-erase`, `secure-discard`, `zero-out`, `discard`,
    /// `overwrite` … or `none` when nothing was done.
    pub method: String,
    pub result: Outcome,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was wiped (metadata mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wiped: Vec<Signature>,
    /// Methods tried before the one that worked, and why they were passed over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanReport {
    pub mode: CleanMode,
    pub disks: Vec<DiskReport>,
}

impl CleanReport {
    /// True when no disk failed.
    pub fn succeeded(&self) -> bool {
        self.disks.iter().all(|d| d.result != Outcome::Failed)
    }
}

/// Why a disk was not cleaned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CleanError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{0}")]
    Table(#[from] partition::TableError),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to clean: it holds {what}, which is usually another cluster's shared storage; \
         clean with force to override"
    )]
    Protected { what: String },
    #[error("read-only disk refused (skip read-only disks to pass over them)")]
    ReadOnly,
    #[error("{what} survived cleaning at byte {offset}: the disk did not keep what was written")]
    Survived { what: String, offset: u64 },
    #[error("every erase method failed: {0}")]
    EraseFailed(String),
}

/// Progress of a long operation: `(disk, bytes done, bytes total)`.
pub type ProgressFn<'a> = dyn Fn(&Path, u64, u64) + Sync + 'a;

/// Cleans `targets` as `options` say, `options.parallel` at a time.
pub fn clean(
    targets: &[CleanTarget],
    options: CleanOptions,
    progress: &ProgressFn<'_>,
) -> CleanReport {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, DiskReport)>> = Mutex::new(Vec::new());
    let workers = options.parallel.clamp(1, targets.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(target) = targets.get(index) else {
                        break;
                    };
                    let report = clean_one(target, options, progress);
                    if let Ok(mut results) = results.lock() {
                        results.push((index, report));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(index, _)| *index);
    CleanReport {
        mode: options.mode,
        disks: results.into_iter().map(|(_, report)| report).collect(),
    }
}

fn clean_one(target: &CleanTarget, options: CleanOptions, progress: &ProgressFn<'_>) -> DiskReport {
    let started = Instant::now();
    let mut report = DiskReport {
        disk: target.path.display().to_string(),
        method: "none".to_owned(),
        result: Outcome::Succeeded,
        duration_ms: 0,
        error: None,
        wiped: Vec::new(),
        notes: Vec::new(),
    };
    let skip = |report: &mut DiskReport, why: &str| {
        report.result = Outcome::Skipped;
        report.notes.push(why.to_owned());
    };
    let outcome = if target.virtual_media {
        skip(
            &mut report,
            "virtual media or the agent's boot medium: never cleaned",
        );
        Ok(())
    } else if target.read_only && options.skip_read_only {
        skip(&mut report, "read-only: skipped by policy");
        Ok(())
    } else if target.read_only {
        Err(CleanError::ReadOnly)
    } else {
        let _work = shutdown::coordinator().begin(&target.path);
        match Disk::open(&target.path, Access::ReadWrite) {
            Err(DiskError::ReadOnly { .. }) if options.skip_read_only => {
                skip(&mut report, "read-only: skipped by policy");
                Ok(())
            }
            Err(DiskError::ReadOnly { .. }) => Err(CleanError::ReadOnly),
            Err(err) => Err(err.into()),
            Ok(disk) => match options.mode {
                CleanMode::Metadata => {
                    report.method = "metadata".to_owned();
                    wipe_metadata(&disk, options.force).map(|wiped| report.wiped = wiped)
                }
                CleanMode::Erase => erase(&disk, options.force, progress, &mut report),
            },
        }
    };
    if let Err(err) = outcome {
        tracing::error!(disk = %target.path.display(), error = %err, "cleaning failed");
        report.result = Outcome::Failed;
        report.error = Some(err.to_string());
    } else if report.result == Outcome::Succeeded {
        tracing::info!(disk = %target.path.display(), method = %report.method, "cleaned");
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

fn read_err(disk: &Disk) -> impl Fn(std::io::Error) -> CleanError + '_ {
    move |source| CleanError::Read {
        path: disk.path().to_owned(),
        source,
    }
}

/// The signatures on the disk and in each of its partitions, partitions last-first as IPA
/// does; and the partitions themselves.
fn survey(disk: &Disk) -> Result<(Vec<PartitionRange>, Vec<Signature>), CleanError> {
    let partitions = partition::partitions(disk)?;
    let mut found = Vec::new();
    for part in partitions.iter().rev() {
        found.extend(signatures::probe(disk, part.offset, part.len).map_err(read_err(disk))?);
    }
    found.extend(signatures::probe(disk, 0, disk.size()).map_err(read_err(disk))?);
    Ok((partitions, found))
}

/// IPA's guard: partitions typed or formatted as another cluster's shared storage.
fn protected(partitions: &[PartitionRange], found: &[Signature]) -> Option<String> {
    let gpfs = Guid::parse(gpt::IBM_GPFS);
    let vmfs = Guid::parse(gpt::VMWARE_VMFS);
    for part in partitions {
        let what = match part.kind {
            PartitionKind::Gpt(guid) if Some(guid) == gpfs => Some("an IBM GPFS partition"),
            PartitionKind::Gpt(guid) if Some(guid) == vmfs => Some("a VMware VMFS partition"),
            PartitionKind::Mbr(mbr::VMFS | mbr::VMKCORE) => Some("a VMware partition"),
            _ => None,
        };
        if let Some(what) = what {
            return Some(format!("{what} (partition {})", part.number));
        }
    }
    found
        .iter()
        .find(|s| PROTECTED.contains(&s.kind))
        .map(|s| format!("a {} signature at byte {}", s.kind, s.offset))
}

/// Where copies of partition tables live: the MBR (or protective MBR), both GPT headers
/// and entry arrays (and a stale backup wherever the primary says it is), every EBR.
fn table_copies(disk: &Disk) -> Result<Vec<Signature>, CleanError> {
    let size = disk.size();
    let sector = u64::from(disk.logical_sector_size());
    let sectors = size / sector;
    let mut copies = Vec::new();
    let mut first = vec![0u8; 512];
    disk.read_at(0, &mut first)?;
    if mbr::has_signature(&first) {
        let protective = first[446 + 4] == mbr::PROTECTIVE;
        copies.push(Signature {
            kind: if protective { "PMBR" } else { "dos" },
            offset: 446,
            len: 66,
        });
    }
    if let Some(table) = mbr::Mbr::read(disk)? {
        for lba in table.ebr_lbas {
            copies.push(Signature {
                kind: "dos",
                offset: lba * sector + 446,
                len: 66,
            });
        }
    }
    let mut header_lbas = vec![1, sectors.saturating_sub(1)];
    let mut buf = vec![0u8; sector as usize];
    let mut i = 0;
    while i < header_lbas.len() {
        let lba = header_lbas[i];
        i += 1;
        if lba == 0 || lba >= sectors {
            continue;
        }
        disk.read_at(lba * sector, &mut buf)?;
        if &buf[..8] != b"EFI PART" {
            continue;
        }
        copies.push(Signature {
            kind: "gpt",
            offset: lba * sector,
            len: sector,
        });
        // Trust the header's layout only as far as it stays on the disk.
        let field = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let alternate = field(32);
        if !header_lbas.contains(&alternate) {
            header_lbas.push(alternate);
        }
        let entries_lba = field(72);
        let count = u64::from(u32::from_le_bytes([buf[80], buf[81], buf[82], buf[83]]));
        let entry_size = u64::from(u32::from_le_bytes([buf[84], buf[85], buf[86], buf[87]]));
        let bytes = count.saturating_mul(entry_size).min(1 << 20);
        if entries_lba > 0 && entries_lba.saturating_mul(sector).saturating_add(bytes) <= size {
            copies.push(Signature {
                kind: "gpt",
                offset: entries_lba * sector,
                len: bytes,
            });
        }
    }
    Ok(copies)
}

/// Removes every partition table and signature; returns what was wiped.
pub fn wipe_metadata(disk: &Disk, force: bool) -> Result<Vec<Signature>, CleanError> {
    let (partitions, found) = survey(disk)?;
    if !force && let Some(what) = protected(&partitions, &found) {
        return Err(CleanError::Protected { what });
    }
    let mut wiped = found;
    wiped.extend(table_copies(disk)?);
    for signature in &wiped {
        disk.write_zeroes(signature.offset, signature.len)?;
    }
    // As IPA does: zero the primary GPT area and the last sectors whatever was found there,
    // so that a damaged table nobody recognises is gone too.
    let sector = u64::from(disk.logical_sector_size());
    let head = if sector == 512 { 34 * 512 } else { 6 * sector };
    let tail = if sector == 512 { 33 * 512 } else { 5 * sector };
    disk.write_zeroes(0, head.min(disk.size()))?;
    let tail_start = disk.size().saturating_sub(tail);
    disk.write_zeroes(tail_start, disk.size() - tail_start)?;
    disk.sync()?;
    settle(disk);
    // What was there must be gone, at both ends of the disk and of every former partition.
    let mut leftovers = signatures::probe(disk, 0, disk.size()).map_err(read_err(disk))?;
    for part in &partitions {
        leftovers.extend(signatures::probe(disk, part.offset, part.len).map_err(read_err(disk))?);
    }
    if !partition::partitions(disk)?.is_empty() {
        return Err(CleanError::Survived {
            what: "a partition table".to_owned(),
            offset: 0,
        });
    }
    if let Some(left) = leftovers.first() {
        return Err(CleanError::Survived {
            what: format!("a {} signature", left.kind),
            offset: left.offset,
        });
    }
    Ok(wiped)
}

/// Lets the kernel forget the old partitions; failure only means a stale view until reboot.
/// Devices that cannot hold partitions at all (a loop device without partition scanning)
/// answer `EINVAL`, which is not worth a warning.
fn settle(disk: &Disk) {
    if let Err(err) = disk.drop_cache().and_then(|()| disk.reread_partitions()) {
        let unpartitionable = matches!(&err, DiskError::Io { source, .. }
            if source.raw_os_error() == Some(nix::libc::EINVAL));
        if unpartitionable {
            tracing::debug!(disk = %disk.path().display(), "the device holds no partitions");
        } else {
            tracing::warn!(disk = %disk.path().display(), error = %err, "the kernel kept its old view of the disk");
        }
    }
}

/// Erases the whole disk with the strongest method it supports.
fn erase(
    disk: &Disk,
    force: bool,
    progress: &ProgressFn<'_>,
    report: &mut DiskReport,
) -> Result<(), CleanError> {
    let (partitions, found) = survey(disk)?;
    if !force && let Some(what) = protected(&partitions, &found) {
        return Err(CleanError::Protected { what });
    }
    let size = disk.size();
    let path = disk.path().to_owned();
    let method = erase_with_fallbacks(
        disk,
        &mut |done| progress(&path, done, size),
        &mut report.notes,
    )?;
    report.method = method.to_owned();
    disk.sync()?;
    settle(disk);
    if !partition::partitions(disk)?.is_empty() {
        return Err(CleanError::Survived {
            what: "a partition table".to_owned(),
            offset: 0,
        });
    }
    if let Some(left) = signatures::probe(disk, 0, size)
        .map_err(read_err(disk))?
        .first()
    {
        return Err(CleanError::Survived {
            what: format!("a {} signature", left.kind),
            offset: left.offset,
        });
    }
    Ok(())
}

const ZERO_CHUNK: u64 = 1 << 30;

fn erase_with_fallbacks(
    disk: &Disk,
    progress: &mut dyn FnMut(u64),
    notes: &mut Vec<String>,
) -> Result<&'static str, CleanError> {
    let size = disk.size();
    if let Some(nsid) = nvme::namespace_id(disk) {
        match nvme::identify_controller(disk) {
            Ok(caps) => {
                if caps.erase_applies_to_all_namespaces {
                    notes.push("this controller erases every namespace at once".to_owned());
                }
                for method in caps.plan() {
                    match nvme::erase(disk, nsid, method, &mut |f| {
                        progress((f * size as f64) as u64)
                    }) {
                        Ok(()) => return Ok(method.name()),
                        Err(err) => notes.push(format!("{}: {err}", method.name())),
                    }
                }
                if caps.plan().is_empty() {
                    notes.push(
                        "the NVMe controller supports neither Format NVM nor Sanitize".to_owned(),
                    );
                }
            }
            Err(err) => notes.push(format!("NVMe Identify: {err}")),
        }
    }
    if disk.is_block_device() {
        match disk.secure_discard(0, size) {
            Ok(()) => {
                progress(size);
                return Ok("secure-discard");
            }
            Err(err) => notes.push(format!("secure-discard: {}", root_cause(&err))),
        }
    }
    // Write-zeroes offload is as fast as a discard and guaranteed to read back as zeroes.
    let offloaded = !disk.is_block_device() || write_zeroes_offloaded(disk.path());
    if !offloaded {
        match discard_verified(disk) {
            Ok(true) => {
                progress(size);
                return Ok("discard");
            }
            Ok(false) => {
                notes.push("discard: the device does not read back zeroes afterwards".to_owned())
            }
            Err(err) => notes.push(format!("discard: {}", root_cause(&err))),
        }
    }
    let mut done = 0;
    let mut zero_out_works = true;
    while done < size {
        let n = ZERO_CHUNK.min(size - done);
        if zero_out_works {
            if let Err(err) = disk.zero_out(done, n) {
                if done == 0 {
                    notes.push(format!("zero-out: {}", root_cause(&err)));
                    zero_out_works = false;
                    continue;
                }
                return Err(err.into());
            }
        } else {
            disk.write_zeroes(done, n)?;
        }
        done += n;
        progress(done);
    }
    Ok(if zero_out_works {
        "zero-out"
    } else {
        "overwrite"
    })
}

fn root_cause(err: &DiskError) -> String {
    match err {
        DiskError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Whether the block layer can zero ranges without writing them (queue/write_zeroes_max_bytes).
fn write_zeroes_offloaded(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let attr = format!("/sys/dev/block/{major}:{minor}/queue/write_zeroes_max_bytes");
    std::fs::read_to_string(attr)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .is_some_and(|bytes| bytes > 0)
}

/// Discards the whole disk and checks that it reads back zeroes: at both ends (where the
/// metadata was), and at 62 places between.
fn discard_verified(disk: &Disk) -> Result<bool, DiskError> {
    let size = disk.size();
    disk.discard(0, size)?;
    disk.drop_cache()?;
    const SAMPLE: u64 = 64 * 1024;
    let mut buf = vec![0u8; SAMPLE as usize];
    let last = size.saturating_sub(SAMPLE);
    let sector = u64::from(disk.logical_sector_size());
    for i in 0..64u64 {
        let offset = (last / 63 * i).min(last) / sector * sector;
        let n = SAMPLE.min(size - offset) as usize;
        disk.read_at(offset, &mut buf[..n])?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
    Ok(true)
}
