//! Deploying an image: choose the root disk, optionally clean it, stream the image onto it
//! with the `rivet-images` pipeline, make the kernel and the GPT agree with what was written,
//! add the config drive, flush, and report what happened.
//!
//! The pipeline verifies the checksum before it writes the image's first and last MiB, and
//! wipes both ends of the disk when anything fails after the disk was touched; this module
//! then asks the kernel to forget the old partitions, so a failed deploy leaves a disk that
//! neither boots nor shows stale partitions.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rivet_images::{
    Checksum, ChecksumAlgorithm, Container, DeclaredFormat, DiskFormat, ImageError, ImageSource,
    Phase, ProgressCallback, StreamingMode, VerifiedDigest, WriteOptions, ZeroPolicy,
};
use serde::Serialize;
use thiserror::Error;

use crate::clean::{self, CleanMode, CleanOptions, CleanTarget, DiskReport, Outcome};
use crate::configdrive::{self, ConfigDrive, ConfigDriveError, Placement};
use crate::disk::{Access, Disk, DiskError};
use crate::hints::{HintSet, SelectError, select_root_disk};
use crate::inventory::DiskInventory;
use crate::shutdown;

/// Why a deploy failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeployError {
    /// No disk matched the root-device hints (or none was large enough without hints).
    #[error(transparent)]
    NoDisk(#[from] SelectError),
    /// The request itself is unusable (bad URL, checksum type or format); nothing was
    /// touched.
    #[error("invalid deploy request: {0}")]
    Request(String),
    /// The config drive could not be read or built; nothing was touched.
    #[error("the config drive: {0}")]
    ConfigDriveSource(#[source] ConfigDriveError),
    /// Cleaning the disk before writing failed.
    #[error("cleaning {disk} before the deploy failed: {reason}")]
    Clean { disk: PathBuf, reason: String },
    /// The image could not be written. When the disk had already been changed, the pipeline
    /// wiped its partition tables at both ends ([`DeployError::disk_wiped`]).
    #[error("writing the image to {disk}")]
    Image {
        disk: PathBuf,
        #[source]
        source: ImageError,
    },
    /// The disk could not be opened; nothing was touched.
    #[error("cannot use {disk}")]
    Open {
        disk: PathBuf,
        #[source]
        source: DiskError,
    },
    /// The image was written but the disk could not be finished (its size, sync).
    #[error("finishing {disk} after the image was written")]
    Finish {
        disk: PathBuf,
        #[source]
        source: DiskError,
    },
    /// The image was written but the config drive could not be added to it.
    #[error("adding the config drive to {disk} after the image was written")]
    ConfigDrive {
        disk: PathBuf,
        #[source]
        source: ConfigDriveError,
    },
    /// The async runtime the pipeline runs on could not start.
    #[error("cannot start the image writer's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl DeployError {
    /// Whether the image failed verification (its checksum did not match).
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, Self::Image { source, .. } if source.is_verification_failure())
    }

    /// Whether the disk was changed and then wiped so that the partial image cannot boot.
    pub fn disk_wiped(&self) -> bool {
        matches!(
            self,
            Self::Image {
                source: ImageError::Wiped { .. },
                ..
            }
        )
    }

    /// The message with every cause, outermost first (`a: b: c`).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub image: ImageSource,
    pub checksum: Option<Checksum>,
    pub format: DeclaredFormat,
    pub config_drive: Option<ConfigDrive>,
    /// Clean the chosen disk first. An erase that leaves the disk reading zeroes lets the
    /// writer skip the image's zero ranges instead of writing them.
    pub clean: Option<CleanOptions>,
}

impl DeployRequest {
    /// A request from the strings an operator or the kernel command line gives: an image URL
    /// or path, a checksum (hex digest, or the URL of a checksum file), its algorithm
    /// (`md5`, `sha256`, `sha512`; from the digest's length when absent) and the declared
    /// format (`raw`, `qcow2`, `auto`; the content is checked either way).
    pub fn parse(
        image: &str,
        checksum: Option<&str>,
        checksum_type: Option<&str>,
        format: Option<&str>,
    ) -> Result<Self, DeployError> {
        let invalid = |err: &dyn std::fmt::Display| DeployError::Request(err.to_string());
        let image = ImageSource::parse(image).map_err(|e| invalid(&e))?;
        let algorithm = checksum_type
            .map(ChecksumAlgorithm::from_str)
            .transpose()
            .map_err(|e| invalid(&e))?;
        let checksum = match checksum {
            Some(value) => Some(Checksum::parse(value, algorithm).map_err(|e| invalid(&e))?),
            None if algorithm.is_some() => {
                return Err(DeployError::Request(
                    "a checksum type was given without a checksum".to_owned(),
                ));
            }
            None => None,
        };
        let format = format
            .map(DeclaredFormat::from_str)
            .transpose()
            .map_err(|e| invalid(&e))?
            .unwrap_or_default();
        Ok(Self {
            image,
            checksum,
            format,
            config_drive: None,
            clean: None,
        })
    }
}

/// The disk the image goes to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChosenDisk {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    pub reason: String,
}

impl ChosenDisk {
    /// The disk the root-device hints choose from the inventory (IPA's rule without hints:
    /// the smallest writable disk of at least 4 GiB).
    pub fn select(disks: &[DiskInventory], hints: &HintSet) -> Result<Self, DeployError> {
        let disk = select_root_disk(disks, hints)?;
        let reason = if hints.is_empty() {
            "no root-device hints: the smallest writable disk of at least 4 GiB".to_owned()
        } else {
            format!("matches the root-device hints {hints}")
        };
        Ok(Self::from_inventory(disk, reason))
    }

    /// A disk named explicitly (a device, or an image file standing in for one).
    pub fn named(path: &Path, inventory: Option<&DiskInventory>) -> Self {
        match inventory {
            Some(disk) => Self::from_inventory(disk, "named on the command line".to_owned()),
            None => Self {
                path: path.to_owned(),
                by_path: None,
                serial_number: None,
                reason: "named on the command line".to_owned(),
            },
        }
    }

    fn from_inventory(disk: &DiskInventory, reason: String) -> Self {
        Self {
            path: PathBuf::from(&disk.kernel_name),
            by_path: disk.storage.name.clone(),
            serial_number: disk.storage.serial_number.clone(),
            reason,
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployReport {
    pub disk: ChosenDisk,
    /// The disk's size in bytes.
    pub disk_size: u64,
    /// The image as given (credentials and query strings redacted).
    pub image: String,
    pub format: DiskFormat,
    pub compression: Container,
    pub virtual_size: u64,
    /// Bytes of the image as published (downloaded or read).
    pub bytes_read: u64,
    /// Data bytes written to the disk.
    pub bytes_written: u64,
    /// Zero ranges zeroed on the disk.
    pub bytes_zeroed: u64,
    /// Zero ranges skipped (holes in a file, or a disk erased to zeroes just before).
    pub bytes_skipped: u64,
    pub streaming: StreamingMode,
    pub zero_policy: ZeroPolicy,
    /// Whether a checksum was given and matched.
    pub checksum_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<VerifiedDigest>,
    /// The cleaning done first, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleaned: Option<DiskReport>,
    /// Whether the kernel re-read the partition table (block devices; false for files).
    pub partition_table_reread: bool,
    /// Whether the GPT backup was moved to the end of a disk larger than the image.
    pub gpt_backup_moved: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_drive: Option<Placement>,
    /// Seconds spent writing the image.
    #[serde(serialize_with = "seconds")]
    pub write_duration: Duration,
    /// Seconds for the whole deploy.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((duration.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Erase methods after which every byte reads back as zero (crypto erase and secure discard
/// make the data unreadable, not necessarily zero).
fn reads_zeroes(report: &DiskReport) -> bool {
    report.result == Outcome::Succeeded
        && matches!(report.method.as_str(), "zero-out" | "overwrite" | "discard")
}

/// Deploys `request` onto `disk`. Blocking: runs the pipeline on its own runtime, so it must
/// not be called from inside an async runtime.
pub fn deploy(
    disk: &ChosenDisk,
    request: &DeployRequest,
    progress: Option<ProgressCallback>,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let path = disk.path.clone();
    // Registered from the start (a clean comes first), finishing once the image is
    // verified, and gone when this returns: the progress callback holds it weakly, so a
    // callback the pipeline kept could not leave the disk looking busy, to be wiped by a
    // later power-off.
    let work = Arc::new(shutdown::coordinator().begin(&path));
    let (disk_size, is_file) = Disk::open(&path, Access::ReadWrite)
        .map(|disk| (disk.size(), !disk.is_block_device()))
        .map_err(|source| DeployError::Open {
            disk: path.clone(),
            source,
        })?;

    let cleaned = match request.clean {
        None => None,
        Some(options) => {
            let report = clean::clean(&[CleanTarget::from_path(&path)], options, &|_, _, _| {})
                .disks
                .pop();
            match report {
                Some(report) if report.result == Outcome::Succeeded => Some(report),
                other => {
                    return Err(DeployError::Clean {
                        disk: path,
                        reason: other
                            .and_then(|r| r.error)
                            .unwrap_or_else(|| "the disk was not cleaned".to_owned()),
                    });
                }
            }
        }
    };
    let zero_policy = match (&cleaned, request.clean.map(|c| c.mode)) {
        (Some(report), Some(CleanMode::Erase)) if reads_zeroes(report) => ZeroPolicy::AssumeZeroed,
        _ => ZeroPolicy::WriteZeroes,
    };
    tracing::info!(disk = %path.display(), image = %request.image, ?zero_policy, "deploying");

    let options = WriteOptions {
        format: request.format,
        checksum: request.checksum.clone(),
        zero_policy,
        progress: Some(gate_commit(Arc::downgrade(&work), progress)),
        // A file standing in for a disk would otherwise grow to fit any image.
        size_limit: is_file.then_some(disk_size),
        ..WriteOptions::default()
    };
    let write_started = Instant::now();
    let written = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DeployError::Runtime)?
        .block_on(rivet_images::write_image(&request.image, &path, &options));
    let write_duration = write_started.elapsed();
    let written = match written {
        Ok(report) => report,
        Err(source) => {
            if source.target_modified() {
                forget_partitions(&path, disk_size);
            }
            return Err(DeployError::Image { disk: path, source });
        }
    };

    let finish = |source| DeployError::Finish {
        disk: path.clone(),
        source,
    };
    // A file standing in for a disk was cut to the image's size; give it back its own.
    restore_file_size(&path, disk_size).map_err(finish)?;
    let target = Disk::open(&path, Access::ReadWrite).map_err(finish)?;
    let with_drive = |source| DeployError::ConfigDrive {
        disk: path.clone(),
        source,
    };
    let gpt_backup_moved = configdrive::fix_gpt_backup(&target).map_err(with_drive)?;
    let config_drive = match &request.config_drive {
        Some(drive) => {
            Some(configdrive::write_to_disk(&target, drive, unix_now()).map_err(with_drive)?)
        }
        None => None,
    };
    target.sync().map_err(finish)?;
    let partition_table_reread = target.is_block_device() && reread(&target);

    Ok(DeployReport {
        disk: disk.clone(),
        disk_size,
        image: request.image.to_string(),
        format: written.format,
        compression: written.compression,
        virtual_size: written.virtual_size,
        bytes_read: written.bytes_read,
        bytes_written: written.bytes_written,
        bytes_zeroed: written.bytes_zeroed,
        bytes_skipped: written.bytes_skipped,
        streaming: written.mode,
        zero_policy,
        checksum_verified: written.digest.is_some(),
        digest: written.digest,
        cleaned,
        partition_table_reread,
        gpt_backup_moved,
        config_drive,
        write_duration,
        duration: started.elapsed(),
    })
}

/// Forwards the pipeline's progress, and tells the shutdown coordinator when the verified
/// image starts being committed: from then on a power-off lets the deploy finish, before
/// that it wipes the disk's ends.
fn gate_commit(
    work: Weak<shutdown::DiskWork<'static>>,
    progress: Option<ProgressCallback>,
) -> ProgressCallback {
    Arc::new(move |update: &rivet_images::Progress| {
        if update.phase == Phase::Committing
            && let Some(work) = work.upgrade()
        {
            work.finishing();
        }
        if let Some(progress) = &progress {
            progress(update);
        }
    })
}

/// Asks the kernel to re-read the partition table; false (with a warning) if it would not.
fn reread(disk: &Disk) -> bool {
    match disk.reread_partitions() {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(disk = %disk.path().display(), error = %err,
                "the kernel did not re-read the partition table; it sees the new one after a reboot");
            false
        }
    }
}

/// After a failed write the pipeline wiped the disk's tables; the kernel must drop the
/// partitions it still remembers, or they would stay usable until a reboot.
fn forget_partitions(path: &Path, expected_size: u64) {
    match Disk::open(path, Access::ReadWrite) {
        Ok(disk) if disk.is_block_device() => {
            reread(&disk);
        }
        Ok(_) => {
            // A file standing in for a disk keeps its size, so a later deploy sees the
            // same disk.
            if let Err(err) = restore_file_size(path, expected_size) {
                tracing::warn!(disk = %path.display(), error = %err, "could not restore the file's size");
            }
        }
        Err(err) => {
            tracing::warn!(disk = %path.display(), error = %err, "could not reopen the wiped disk");
        }
    }
}

/// Grows a regular file back to `size` (the pipeline truncates file targets to the image).
fn restore_file_size(path: &Path, size: u64) -> Result<(), DiskError> {
    let io = |action, source| DiskError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let meta = std::fs::metadata(path).map_err(|e| io("stat", e))?;
    if meta.is_file() && meta.len() < size {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| file.set_len(size))
            .map_err(|e| io("restore its size", e))?;
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_checked_before_anything_is_touched() {
        let ok = DeployRequest::parse(
            "http://10.0.2.2:8080/disk.qcow2",
            Some(&"ab".repeat(32)),
            Some("sha256"),
            Some("qcow2"),
        )
        .unwrap();
        assert_eq!(ok.format, DeclaredFormat::Qcow2);
        assert_eq!(
            ok.checksum.unwrap().algorithm,
            Some(ChecksumAlgorithm::Sha256)
        );
        for (image, checksum, kind, format) in [
            ("ftp://host/disk.img", None, None, None),
            ("http://h/d.img", Some("abc"), Some("crc32"), None),
            ("http://h/d.img", None, Some("sha256"), None),
            ("http://h/d.img", None, None, Some("vmdk")),
        ] {
            let err = DeployRequest::parse(image, checksum, kind, format).unwrap_err();
            assert!(matches!(err, DeployError::Request(_)), "{err}");
        }
        let secret = DeployRequest::parse("ftp://user:hunter2@h/d.img", None, None, None)
            .unwrap_err()
            .chain();
        assert!(!secret.contains("hunter2"), "{secret}");
    }

    #[test]
    fn only_erasures_that_read_back_zeroes_let_zero_ranges_be_skipped() {
        let report = |method: &str, result| DiskReport {
            disk: "/dev/vda".to_owned(),
            method: method.to_owned(),
            result,
            duration_ms: 1,
            error: None,
            wiped: Vec::new(),
            notes: Vec::new(),
        };
        assert!(reads_zeroes(&report("zero-out", Outcome::Succeeded)));
        assert!(reads_zeroes(&report("discard", Outcome::Succeeded)));
        assert!(!reads_zeroes(&report("zero-out", Outcome::Failed)));
        assert!(!reads_zeroes(&report("secure-discard", Outcome::Succeeded)));
        assert!(!reads_zeroes(&report(
            "nvme-format-crypto-erase",
            Outcome::Succeeded
        )));
        assert!(!reads_zeroes(&report("metadata", Outcome::Succeeded)));
    }
}
