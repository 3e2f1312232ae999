//! The qcow2 header and header extensions: parsing and the safety checks that decide whether
//! an image may be written at all.

use super::{Qcow2Error, Structure};

/// The qcow2 magic, `QFI\xfb`.
pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";

const V2_HEADER_LEN: usize = 72;
const V3_MIN_HEADER_LEN: usize = 104;
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const MIN_EXTENDED_L2_CLUSTER_BITS: u32 = 14;
/// QEMU refuses L1 tables larger than 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;
/// L1/L2 entries hold 56-bit host offsets; no populated guest cluster can lie beyond this.
const MAX_VIRTUAL_SIZE: u64 = 1 << 56;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = INCOMPAT_DIRTY
    | INCOMPAT_CORRUPT
    | INCOMPAT_DATA_FILE
    | INCOMPAT_COMPRESSION
    | INCOMPAT_EXTENDED_L2;

const EXT_END: u32 = 0;
const EXT_FULL_DISK_ENCRYPTION: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// How compressed clusters are compressed (one type per image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterCompression {
    /// Raw deflate (the default, "zlib" in QEMU's terms).
    Deflate,
    /// Zstandard (compression type 1).
    Zstd,
}

impl std::fmt::Display for ClusterCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Deflate => "deflate (zlib)",
            Self::Zstd => "zstd",
        })
    }
}

/// A parsed and vetted qcow2 header.
///
/// Only images Rivet can write safely parse: everything the safety inspector refuses is an
/// error from [`Header::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size (9 to 21).
    pub cluster_bits: u32,
    /// The size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Where the active L1 table starts in the file.
    pub l1_table_offset: u64,
    /// Number of entries in the active L1 table.
    pub l1_size: u32,
    /// Where the refcount table starts in the file.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots (their tables are ignored: only the active state is read).
    pub snapshots: u32,
    /// The image was not closed cleanly (refcounts may be stale; the mapping is unaffected).
    pub dirty: bool,
    /// L2 entries are 128 bits with subcluster bitmaps.
    pub extended_l2: bool,
    /// How compressed clusters are compressed.
    pub compression: ClusterCompression,
    /// Length of the header plus its extensions: the bytes [`Header::parse`] looked at.
    pub parsed_len: usize,
}

impl Header {
    /// Parses the start of a qcow2 file.
    ///
    /// `bytes` must hold the header and its extension area (normally a few hundred bytes;
    /// never more than the first cluster). When it is too short, the error is
    /// [`Qcow2Error::Truncated`] with the length needed, and the caller may retry with more.
    pub fn parse(bytes: &[u8]) -> Result<Self, Qcow2Error> {
        let field = Fields(bytes);
        if bytes.len() < 4 {
            return Err(truncated(4, bytes));
        }
        if bytes[..4] != MAGIC {
            return Err(Qcow2Error::NotQcow2);
        }
        if bytes.len() < V2_HEADER_LEN {
            return Err(truncated(V2_HEADER_LEN, bytes));
        }
        let version = field.u32(4);
        if version != 2 && version != 3 {
            return Err(Qcow2Error::UnsupportedVersion(version));
        }
        let backing_file_offset = field.u64(8);
        let backing_file_size = field.u32(16);
        let cluster_bits = field.u32(20);
        let virtual_size = field.u64(24);
        let crypt_method = field.u32(32);
        let l1_size = field.u32(36);
        let l1_table_offset = field.u64(40);
        let refcount_table_offset = field.u64(48);
        let refcount_table_clusters = field.u32(56);
        let snapshots = field.u32(60);

        // The attacks first: whatever else is wrong, an image that points at another file is
        // reported as such.
        if backing_file_offset != 0 {
            return Err(Qcow2Error::BackingFile {
                name: backing_file_name(bytes, backing_file_offset, backing_file_size),
            });
        }
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Qcow2Error::InvalidClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;

        let (incompatible, refcount_order, header_length, compression_type) = if version == 3 {
            if bytes.len() < V3_MIN_HEADER_LEN {
                return Err(truncated(V3_MIN_HEADER_LEN, bytes));
            }
            let header_length = field.u32(100);
            if (header_length as usize) < V3_MIN_HEADER_LEN
                || header_length % 8 != 0
                || u64::from(header_length) > cluster_size
            {
                return Err(Qcow2Error::InvalidHeaderLength(header_length));
            }
            if bytes.len() < header_length as usize {
                return Err(truncated(header_length as usize, bytes));
            }
            let compression_type = if header_length as usize > V3_MIN_HEADER_LEN {
                bytes[V3_MIN_HEADER_LEN]
            } else {
                0
            };
            (
                field.u64(72),
                field.u32(96),
                header_length as usize,
                compression_type,
            )
        } else {
            (0, 4, V2_HEADER_LEN, 0)
        };

        let extensions = parse_extensions(bytes, header_length, cluster_size)?;
        if incompatible & INCOMPAT_DATA_FILE != 0 || extensions.data_file.is_some() {
            return Err(Qcow2Error::ExternalDataFile {
                name: extensions.data_file,
            });
        }
        if crypt_method != 0 {
            return Err(Qcow2Error::Encrypted {
                method: crypt_method,
            });
        }
        if extensions.encryption_header {
            return Err(Qcow2Error::Encrypted { method: 2 });
        }
        let unknown = incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Qcow2Error::UnknownIncompatibleFeatures { bits: unknown });
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(Qcow2Error::MarkedCorrupt);
        }
        let compression = match (incompatible & INCOMPAT_COMPRESSION != 0, compression_type) {
            (false, 0) => ClusterCompression::Deflate,
            (true, 1) => ClusterCompression::Zstd,
            (true, 0) | (false, _) => return Err(Qcow2Error::CompressionTypeMismatch),
            (true, other) => return Err(Qcow2Error::UnknownCompressionType(other)),
        };
        let extended_l2 = incompatible & INCOMPAT_EXTENDED_L2 != 0;
        if extended_l2 && cluster_bits < MIN_EXTENDED_L2_CLUSTER_BITS {
            return Err(Qcow2Error::ExtendedL2ClusterTooSmall(cluster_bits));
        }
        if refcount_order > 6 {
            return Err(Qcow2Error::InvalidRefcountOrder(refcount_order));
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::VirtualSizeTooLarge(virtual_size));
        }

        let header = Self {
            version,
            cluster_bits,
            virtual_size,
            l1_table_offset,
            l1_size,
            refcount_table_offset,
            refcount_table_clusters,
            snapshots,
            dirty: incompatible & INCOMPAT_DIRTY != 0,
            extended_l2,
            compression,
            parsed_len: extensions.end,
        };
        let needed = header.l1_entries_needed();
        if u64::from(l1_size) < needed {
            return Err(Qcow2Error::L1TooSmall {
                entries: l1_size,
                needed,
            });
        }
        if u64::from(l1_size) * 8 > MAX_L1_BYTES {
            return Err(Qcow2Error::L1TooLarge { entries: l1_size });
        }
        if l1_size > 0 && l1_table_offset % cluster_size != 0 {
            return Err(Qcow2Error::Misaligned {
                what: Structure::L1Table,
                offset: l1_table_offset,
                alignment: cluster_size,
            });
        }
        if refcount_table_offset % cluster_size != 0 {
            return Err(Qcow2Error::Misaligned {
                what: Structure::RefcountTable,
                offset: refcount_table_offset,
                alignment: cluster_size,
            });
        }
        Ok(header)
    }

    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 entries.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 { 16 } else { 8 }
    }

    /// Guest clusters mapped by one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Guest bytes covered by one L2 table (one L1 entry).
    pub fn l2_coverage(&self) -> u64 {
        self.l2_entries() * self.cluster_size()
    }

    /// L1 entries the virtual size needs; entries beyond these are never read.
    pub fn l1_entries_needed(&self) -> u64 {
        self.virtual_size.div_ceil(self.l2_coverage())
    }

    /// The byte range of the part of the L1 table that maps the virtual disk.
    pub fn l1_range(&self) -> (u64, u64) {
        (self.l1_table_offset, self.l1_entries_needed() * 8)
    }

    /// The byte range of the whole L1 table as declared (for overlap checks).
    pub(crate) fn l1_declared_len(&self) -> u64 {
        u64::from(self.l1_size) * 8
    }

    /// The byte range of the refcount table.
    pub(crate) fn refcount_table_range(&self) -> (u64, u64) {
        (
            self.refcount_table_offset,
            u64::from(self.refcount_table_clusters) * self.cluster_size(),
        )
    }
}

fn truncated(needed: usize, bytes: &[u8]) -> Qcow2Error {
    Qcow2Error::Truncated {
        needed,
        available: bytes.len(),
    }
}

/// Big-endian field reads at offsets the caller has already bounds-checked.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&self, at: usize) -> u32 {
        let mut raw = [0; 4];
        raw.copy_from_slice(&self.0[at..at + 4]);
        u32::from_be_bytes(raw)
    }

    fn u64(&self, at: usize) -> u64 {
        let mut raw = [0; 8];
        raw.copy_from_slice(&self.0[at..at + 8]);
        u64::from_be_bytes(raw)
    }
}

/// The backing file name, if it lies within the bytes given (only used in the message).
fn backing_file_name(bytes: &[u8], offset: u64, size: u32) -> Option<String> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size.min(1023)).ok()?)?;
    bytes
        .get(start..end)
        .map(|name| String::from_utf8_lossy(name).into_owned())
}

struct Extensions {
    data_file: Option<String>,
    encryption_header: bool,
    /// Where the extension area ends (after the end marker).
    end: usize,
}

fn parse_extensions(
    bytes: &[u8],
    start: usize,
    cluster_size: u64,
) -> Result<Extensions, Qcow2Error> {
    let limit = usize::try_from(cluster_size).unwrap_or(usize::MAX);
    let mut found = Extensions {
        data_file: None,
        encryption_header: false,
        end: start,
    };
    let mut at = start;
    loop {
        if at + 8 > limit {
            return Err(Qcow2Error::HeaderExtension {
                offset: at,
                reason: "the extension area runs past the first cluster without an end marker",
            });
        }
        if at + 8 > bytes.len() {
            return Err(truncated(at + 8, bytes));
        }
        let field = Fields(bytes);
        let kind = field.u32(at);
        let len = field.u32(at + 4) as usize;
        if kind == EXT_END {
            found.end = at + 8;
            return Ok(found);
        }
        let data_start = at + 8;
        let padded = len.div_ceil(8) * 8;
        let next = data_start
            .checked_add(padded)
            .filter(|&next| next <= limit)
            .ok_or(Qcow2Error::HeaderExtension {
                offset: at,
                reason: "extension data runs past the first cluster",
            })?;
        if next > bytes.len() {
            return Err(truncated(next, bytes));
        }
        match kind {
            EXT_DATA_FILE => {
                found.data_file = Some(
                    String::from_utf8_lossy(&bytes[data_start..data_start + len]).into_owned(),
                );
            }
            EXT_FULL_DISK_ENCRYPTION => found.encryption_header = true,
            // Backing format, feature names, bitmaps and unknown extensions change nothing
            // about how the active guest data reads.
            _ => {}
        }
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header (64 KiB clusters, 1 GiB, L1 at cluster 3).
    pub(crate) fn v3_header() -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[36..40].copy_from_slice(&2u32.to_be_bytes());
        h[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        h[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h
    }

    #[test]
    fn parses_a_plain_v3_header() {
        let header = Header::parse(&v3_header()).unwrap();
        assert_eq!(header.cluster_size(), 65536);
        assert_eq!(header.l1_entries_needed(), 2);
        assert_eq!(header.compression, ClusterCompression::Deflate);
        assert_eq!(header.parsed_len, 120);
    }

    #[test]
    fn a_backing_file_is_refused_with_its_name() {
        let mut h = v3_header();
        h[8..16].copy_from_slice(&200u64.to_be_bytes());
        h[16..20].copy_from_slice(&11u32.to_be_bytes());
        h[200..211].copy_from_slice(b"/etc/passwd");
        assert_eq!(
            Header::parse(&h),
            Err(Qcow2Error::BackingFile {
                name: Some("/etc/passwd".into())
            })
        );
    }

    #[test]
    fn unknown_incompatible_bits_are_refused() {
        let mut h = v3_header();
        h[72..80].copy_from_slice(&(1u64 << 20).to_be_bytes());
        assert_eq!(
            Header::parse(&h),
            Err(Qcow2Error::UnknownIncompatibleFeatures { bits: 1 << 20 })
        );
    }

    #[test]
    fn a_short_buffer_asks_for_more() {
        let h = v3_header();
        assert_eq!(
            Header::parse(&h[..80]),
            Err(Qcow2Error::Truncated {
                needed: 104,
                available: 80
            })
        );
    }

    #[test]
    fn an_extension_without_end_marker_is_refused() {
        let mut h = vec![0u8; 65536];
        h[..512].copy_from_slice(&v3_header());
        let mut at = 112;
        while at + 8 <= h.len() {
            h[at..at + 4].copy_from_slice(&0x1234u32.to_be_bytes());
            at += 8;
        }
        assert!(matches!(
            Header::parse(&h),
            Err(Qcow2Error::HeaderExtension { .. })
        ));
    }
}
