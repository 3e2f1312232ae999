//! Progress reporting and the final report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checksum::ChecksumAlgorithm;
use crate::format::{Container, DiskFormat};
use crate::options::ProgressCallback;

/// Where a write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Resolving the checksum, opening the target and the source, detecting the format.
    Opening,
    /// Reading the qcow2 tables ahead of the data (Range requests or file reads).
    Metadata,
    /// The one sequential pass: download, hash, decompress, write.
    Streaming,
    /// Writing the held-back first and last MiB and flushing to stable storage.
    Committing,
    /// Finished and verified.
    Done,
}

/// A progress update.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes of the image as published (compressed, if it is) read so far.
    pub bytes_read: u64,
    /// The published size, when known.
    pub total_bytes: Option<u64>,
    /// Data bytes written to the target so far (zeros skipped or zeroed are not counted).
    pub bytes_written: u64,
    /// Read rate over the last interval, bytes per second.
    pub rate: f64,
    /// Seconds since the write started.
    pub elapsed: f64,
}

/// How the image's bytes were turned into guest writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StreamingMode {
    /// A raw image: written in order as it arrives.
    Sequential,
    /// qcow2 tables read first (Range requests or file reads), then one sequential pass.
    MetadataFirst,
    /// qcow2 mapped while streaming, parking what arrives before its table.
    ForwardOnly,
}

impl std::fmt::Display for StreamingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sequential => "sequential",
            Self::MetadataFirst => "tables first, then one sequential pass",
            Self::ForwardOnly => "forward-only",
        })
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Opening => "opening",
            Self::Metadata => "tables",
            Self::Streaming => "streaming",
            Self::Committing => "committing",
            Self::Done => "done",
        })
    }
}

/// A verified digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedDigest {
    pub algorithm: ChecksumAlgorithm,
    pub hex: String,
}

/// What the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A regular file (zero ranges are holes).
    File,
    /// A block device.
    BlockDevice,
}

/// The result of a successful [`write_image`](crate::write_image).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct WriteReport {
    /// The detected disk format.
    pub format: DiskFormat,
    /// The detected outer compression.
    pub compression: Container,
    /// The virtual disk size written, in bytes.
    pub virtual_size: u64,
    /// Bytes of the image as published.
    pub bytes_read: u64,
    /// Data bytes written to the target.
    pub bytes_written: u64,
    /// Zero bytes zeroed on the target (block devices with [`ZeroPolicy::WriteZeroes`]).
    ///
    /// [`ZeroPolicy::WriteZeroes`]: crate::ZeroPolicy::WriteZeroes
    pub bytes_zeroed: u64,
    /// Zero bytes skipped (holes in files, or a device known to be zeroed).
    pub bytes_skipped: u64,
    /// The verified digest, when a checksum was given.
    pub digest: Option<VerifiedDigest>,
    /// How the image was streamed.
    pub mode: StreamingMode,
    /// The most memory held for out-of-order qcow2 data (0 unless forward-only).
    pub parked_peak: u64,
    /// What the target is.
    pub target: TargetKind,
    /// Wall time.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Shared counters and the callback, throttled to a few updates per second.
pub(crate) struct ProgressState {
    callback: Option<ProgressCallback>,
    started: Instant,
    pub(crate) read: AtomicU64,
    pub(crate) written: AtomicU64,
    total: Mutex<Option<u64>>,
    last: Mutex<(Instant, u64, Phase)>,
}

const INTERVAL: Duration = Duration::from_millis(200);

impl ProgressState {
    pub(crate) fn new(callback: Option<ProgressCallback>) -> Self {
        let now = Instant::now();
        Self {
            callback,
            started: now,
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            total: Mutex::new(None),
            last: Mutex::new((now, 0, Phase::Opening)),
        }
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn set_total(&self, total: Option<u64>) {
        if let Ok(mut slot) = self.total.lock() {
            *slot = total;
        }
    }

    pub(crate) fn add_read(&self, bytes: u64) {
        self.read.fetch_add(bytes, Ordering::Relaxed);
        self.tick(None);
    }

    /// Enters `phase` and reports it at once.
    pub(crate) fn phase(&self, phase: Phase) {
        self.tick(Some(phase));
    }

    fn tick(&self, phase: Option<Phase>) {
        let Some(callback) = &self.callback else {
            return;
        };
        let now = Instant::now();
        let update = {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            let (at, read_then, current) = *last;
            let changed = phase.is_some_and(|phase| phase != current);
            if !changed && now.duration_since(at) < INTERVAL {
                return;
            }
            let read = self.read.load(Ordering::Relaxed);
            let seconds = now.duration_since(at).as_secs_f64();
            let rate = if seconds > 0.0 {
                read.saturating_sub(read_then) as f64 / seconds
            } else {
                0.0
            };
            let phase = phase.unwrap_or(current);
            *last = (now, read, phase);
            Progress {
                phase,
                bytes_read: read,
                total_bytes: self.total.lock().ok().and_then(|total| *total),
                bytes_written: self.written.load(Ordering::Relaxed),
                rate,
                elapsed: now.duration_since(self.started).as_secs_f64(),
            }
        };
        callback(&update);
    }
}

impl std::fmt::Debug for ProgressState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressState").finish_non_exhaustive()
    }
}
