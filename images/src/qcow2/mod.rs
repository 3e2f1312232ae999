//! qcow2 (versions 2 and 3) as a sans-IO core: pure functions and a state machine over byte
//! slices, so the whole parser can be fuzzed and tested without files or sockets.
//!
//! - [`Header::parse`] reads and vets the header and its extensions (the safety inspector:
//!   backing files, external data files, encryption, unknown incompatible features…).
//! - [`Mapper`] turns the image's bytes, fed in file order, into [`Action`]s — "write these
//!   bytes at this guest offset", "these guest bytes are zero", "inflate this compressed
//!   cluster" — either after the L1 and L2 tables were provided up front (random access) or
//!   learning them as they pass (forward-only, with a bounded parking buffer).
//! - [`decompress_cluster`] inflates one compressed cluster (deflate or zstd).
//!
//! Layout facts come from QEMU's `docs/interop/qcow2.txt`.

mod cluster;
mod header;
mod mapper;
mod parking;
mod table;

use std::fmt;

pub use cluster::{ClusterDecompressor, DecompressError, decompress_cluster};
pub(crate) use header::MAGIC;
pub use header::{ClusterCompression, Header};
pub use mapper::{Action, MapStats, Mapper, StreamError};

/// Which qcow2 structure an offset or range belongs to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Structure {
    /// The header cluster (cluster 0).
    Header,
    /// The active L1 table.
    L1Table,
    /// An L2 table.
    L2Table,
    /// The refcount table.
    RefcountTable,
    /// A standard (uncompressed) data cluster or subcluster.
    Data,
    /// A compressed data cluster.
    CompressedData,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "the header cluster",
            Self::L1Table => "the L1 table",
            Self::L2Table => "an L2 table",
            Self::RefcountTable => "the refcount table",
            Self::Data => "a data cluster",
            Self::CompressedData => "a compressed cluster",
        })
    }
}

/// Why a qcow2 image is refused. Every variant is a property of the image itself, so every
/// one of them means "this image is unsafe or unsupported", never "try again".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Qcow2Error {
    #[error("not a qcow2 image (bad magic)")]
    NotQcow2,
    #[error("the qcow2 header is truncated: {needed} bytes are needed, {available} are present")]
    Truncated { needed: usize, available: usize },
    #[error("qcow2 version {0} is not supported (only versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error(
        "the image has a backing file{}; images that read other files are refused (CVE-2024-44082)",
        name.as_deref().map(|n| format!(" ({n:?})")).unwrap_or_default()
    )]
    BackingFile { name: Option<String> },
    #[error(
        "the image keeps its data in an external data file{}; such images read other files and are refused (CVE-2024-44082)",
        name.as_deref().map(|n| format!(" ({n:?})")).unwrap_or_default()
    )]
    ExternalDataFile { name: Option<String> },
    #[error("the image is encrypted (method {method}); encrypted images are not supported")]
    Encrypted { method: u32 },
    #[error("the image uses unknown incompatible features (bits {bits:#x}); refusing to guess")]
    UnknownIncompatibleFeatures { bits: u64 },
    #[error("the image is marked corrupt by QEMU (incompatible feature bit 1)")]
    MarkedCorrupt,
    #[error("cluster_bits {0} is outside what qcow2 allows (9 to 21: 512 B to 2 MiB clusters)")]
    InvalidClusterBits(u32),
    #[error(
        "extended L2 entries need clusters of at least 16 KiB, this image has cluster_bits {0}"
    )]
    ExtendedL2ClusterTooSmall(u32),
    #[error("invalid header length {0}")]
    InvalidHeaderLength(u32),
    #[error("invalid refcount order {0} (at most 6)")]
    InvalidRefcountOrder(u32),
    #[error("unknown compressed-cluster compression type {0}")]
    UnknownCompressionType(u8),
    #[error("the compression-type feature bit and the compression type field disagree")]
    CompressionTypeMismatch,
    #[error("malformed header extension at byte {offset}: {reason}")]
    HeaderExtension { offset: usize, reason: &'static str },
    #[error("virtual size {0} bytes is beyond what qcow2 can address")]
    VirtualSizeTooLarge(u64),
    #[error("the L1 table has {entries} entries but the virtual size needs {needed}")]
    L1TooSmall { entries: u32, needed: u64 },
    #[error("the L1 table has {entries} entries, more than QEMU's 32 MiB limit")]
    L1TooLarge { entries: u32 },
    #[error("{what} offset {offset:#x} is not aligned to the {alignment}-byte cluster size")]
    Misaligned {
        what: Structure,
        offset: u64,
        alignment: u64,
    },
    #[error("reserved bits are set in {what} entry {entry:#018x} (guest offset {guest:#x})")]
    ReservedBits {
        what: Structure,
        entry: u64,
        guest: u64,
    },
    #[error("invalid subcluster bitmap {bitmap:#018x} for guest offset {guest:#x}")]
    InvalidSubclusterBitmap { guest: u64, bitmap: u64 },
    #[error(
        "{what} at host offset {offset:#x} (length {len}) lies outside the {file_len}-byte image file"
    )]
    OutsideFile {
        what: Structure,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error(
        "{first} at host offset {first_offset:#x} and {second} at host offset {second_offset:#x} overlap"
    )]
    Overlap {
        first: Structure,
        first_offset: u64,
        second: Structure,
        second_offset: u64,
    },
    #[error("two guest clusters map to the same host cluster at offset {offset:#x}")]
    DuplicateHostCluster { offset: u64 },
    #[error(
        "guest offset {guest:#x} maps to host bytes at {offset:#x} that already passed as other data or metadata (overlapping host clusters)"
    )]
    AlreadyConsumed { guest: u64, offset: u64 },
    #[error("compressed cluster at host offset {offset:#x} has an invalid length {len}")]
    CompressedLength { offset: u64, len: u64 },
    #[error(
        "{what} at host offset {offset:#x} changed between the metadata reads and the sequential download"
    )]
    MetadataChanged { what: Structure, offset: u64 },
}
