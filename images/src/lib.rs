//! Rivet's streaming image pipeline: an image from HTTP(S) or a local file goes to a block
//! device or a regular file in **one forward pass with bounded memory** — hashed inline
//! (md5, sha256, sha512 over the bytes as published), decompressed inline (gzip, zstd),
//! decoded inline (raw, or qcow2 versions 2 and 3 with every cluster size from 512 B to
//! 2 MiB, zero and unallocated clusters, deflate- and zstd-compressed clusters, extended L2
//! entries, relocated L1 tables) and written at guest offsets. `qemu-img` is never run.
//!
//! # Using the library
//!
//! Two entry points:
//!
//! - [`write_image`]`(source, target, options) -> Result<WriteReport, ImageError>`
//! - [`inspect`]`(source, http_options) -> Result<Inspection, ImageError>`
//!
//! ```no_run
//! use std::path::Path;
//! use rivet_images::{Checksum, ImageSource, WriteOptions, ZeroPolicy, write_image};
//!
//! # async fn deploy() -> Result<(), rivet_images::ImageError> {
//! let source = ImageSource::parse("https://images.example.com/ubuntu-24.04.qcow2")?;
//! let options = WriteOptions {
//!     // a hex digest, or the URL of a SHA256SUMS-style file listing the image by name
//!     checksum: Some(Checksum::parse("https://images.example.com/SHA256SUMS", None)?),
//!     // the device was zeroed while cleaning: skip zero ranges instead of writing them
//!     zero_policy: ZeroPolicy::AssumeZeroed,
//!     progress: Some(std::sync::Arc::new(|p: &rivet_images::Progress| {
//!         tracing::info!(read = p.bytes_read, written = p.bytes_written, "writing image");
//!     })),
//!     ..WriteOptions::default()
//! };
//! let report = write_image(&source, Path::new("/dev/sda"), &options).await?;
//! println!("{} {} bytes, sha256 verified: {}", report.format, report.virtual_size,
//!     report.digest.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # What a write does
//!
//! 1. Resolves the expected checksum (fetching a checksum file if given one).
//! 2. Opens the source with a ranged probe (`Range: bytes=0-65535`): a `206` means random
//!    access, a `200` means the server ignores Range and that response becomes the stream.
//!    Opens the target without changing it (block devices with `O_EXCL`, so a mounted disk
//!    is refused).
//! 3. Detects the format **from the content** and refuses what it must (see below) before
//!    the target is touched.
//! 4. For a qcow2 source with random access (a file, or an HTTP server honouring Range):
//!    reads the header, the L1 table and every L2 table first, checks every mapping (bounds,
//!    overlaps, duplicates), then streams the whole file once. Without random access (or
//!    inside gzip/zstd): maps forward-only, parking data that arrives before its L2 table up
//!    to [`WriteOptions::parking_limit`].
//! 5. Streams: one thread hashes the published bytes, one decompresses and maps and writes
//!    (`pwrite` at guest offsets), worker threads inflate compressed clusters. All-zero
//!    ranges become holes in files; on block devices they are zeroed
//!    (`FALLOC_FL_ZERO_RANGE`, the kernel's `BLKZEROOUT` path) or skipped when the caller
//!    says the device is already zeroed ([`ZeroPolicy`]).
//! 6. The first and last MiB of the image (partition tables, boot code) are held in memory
//!    and written only after the checksum verified, then `fsync`. On any failure after the
//!    target was changed, the first and last MiB of the image and of the device are zeroed
//!    again ([`ImageError::Wiped`]), so a partial image can never boot.
//!
//! Memory stays bounded whatever the image size: a few MiB of chunks in flight, the two
//! held MiB, one cluster per inflate worker, and the qcow2 cluster map (about 64 bytes per
//! run of contiguous clusters; counted against the parking limit).
//!
//! # Safety inspector
//!
//! Refused with [`ImageError::Refused`]: qcow2 with a backing file, an external data file,
//! encryption, unknown incompatible features, the corrupt bit, version 1; L1/L2/data
//! offsets outside the file; overlapping or duplicate host clusters; compressed clusters
//! with impossible lengths; a virtual size larger than the target; ISO, VMDK, VDI, VHD(X),
//! QED and LUKS content; xz and bzip2 compression; content that differs from the declared
//! format (a qcow2 declared raw is refused, not written as raw). Decompressed streams stop
//! at the target's size. The qcow2 parser ([`qcow2`]) is sans-IO and fuzzed.
//!
//! # Not supported
//!
//! Internal snapshots are ignored (only the active state is written); images needing a
//! backing chain are refused; formats other than raw and qcow2 are refused.

pub mod checksum;
mod error;
pub mod format;
mod inspect;
mod options;
mod pipeline;
mod pool;
mod progress;
pub mod qcow2;
mod sink;
mod source;
mod target;

pub use checksum::{ChecksumAlgorithm, ChecksumError};
pub use error::{ImageError, Refusal, SourceError, TargetError};
pub use format::{Container, DeclaredFormat, DiskFormat, PartitionTable};
pub use inspect::{Inspection, Qcow2Summary, inspect};
pub use options::{
    Checksum, ChecksumValue, DEFAULT_PARKING_LIMIT, HttpOptions, ImageSource, ProgressCallback,
    WriteOptions, ZeroPolicy,
};
pub use pipeline::write_image;
pub use progress::{Phase, Progress, StreamingMode, TargetKind, VerifiedDigest, WriteReport};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_futures_can_be_spawned() {
        fn is_send<T: Send>(_: &T) {}
        let source = ImageSource::parse("http://example.com/a.img").unwrap();
        let options = WriteOptions::default();
        let target = std::path::Path::new("/nonexistent");
        is_send(&write_image(&source, target, &options));
        is_send(&inspect(&source, &options.http));
    }
}
