//! L1 and L2 entry decoding: what each guest cluster (or subcluster) reads as.

use super::{Header, Qcow2Error, Structure};

/// Bits 9–55: a cluster-aligned host offset in L1 and standard L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63 of L1 and L2 entries: "refcount is exactly one", irrelevant to reading.
const COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: the cluster is compressed.
const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of standard L2 entries (without extended L2): the cluster reads as zeros.
const ZERO: u64 = 1;
const L1_RESERVED: u64 = !(OFFSET_MASK | COPIED);
const L2_STANDARD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
const SUBCLUSTERS: u64 = 32;
const SECTOR: u64 = 512;

/// What a piece of the guest disk reads as, in guest order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Zeros: an unallocated cluster (no backing file) or an explicit zero cluster.
    Zero { guest: u64, len: u64 },
    /// Bytes stored uncompressed at `host`.
    Data { guest: u64, host: u64, len: u64 },
    /// A compressed cluster stored in `host_len` bytes at `host`; it inflates to one cluster,
    /// of which the first `guest_len` bytes lie inside the virtual disk.
    Compressed {
        guest: u64,
        guest_len: u64,
        host: u64,
        host_len: u64,
    },
}

/// Decodes the first `header.l1_entries_needed()` L1 entries: the host offset of each L2 table,
/// or `None` where the whole L2 range is unallocated.
pub(crate) fn decode_l1(header: &Header, bytes: &[u8]) -> Result<Vec<Option<u64>>, Qcow2Error> {
    let cluster_size = header.cluster_size();
    bytes
        .chunks_exact(8)
        .enumerate()
        .map(|(index, raw)| {
            let entry = be_u64(raw);
            let guest = index as u64 * header.l2_coverage();
            if entry & L1_RESERVED != 0 {
                return Err(Qcow2Error::ReservedBits {
                    what: Structure::L1Table,
                    entry,
                    guest,
                });
            }
            let offset = entry & OFFSET_MASK;
            if offset == 0 {
                return Ok(None);
            }
            check_aligned(Structure::L2Table, offset, cluster_size)?;
            Ok(Some(offset))
        })
        .collect()
}

/// Decodes one L2 table whose first entry maps guest offset `first_guest`, calling `visit`
/// for each piece in guest order. Entries beyond the virtual size are never read, exactly as
/// a guest could never read them.
pub(crate) fn decode_l2(
    header: &Header,
    table: &[u8],
    first_guest: u64,
    mut visit: impl FnMut(Piece) -> Result<(), Qcow2Error>,
) -> Result<(), Qcow2Error> {
    let cluster_size = header.cluster_size();
    let entry_size = header.l2_entry_size() as usize;
    for (index, raw) in table.chunks_exact(entry_size).enumerate() {
        let guest = first_guest + index as u64 * cluster_size;
        if guest >= header.virtual_size {
            break;
        }
        let guest_len = cluster_size.min(header.virtual_size - guest);
        let entry = be_u64(&raw[..8]);
        let bitmap = header.extended_l2.then(|| be_u64(&raw[8..16]));
        if entry & COMPRESSED != 0 {
            if bitmap.is_some_and(|bitmap| bitmap != 0) {
                return Err(Qcow2Error::InvalidSubclusterBitmap {
                    guest,
                    bitmap: bitmap.unwrap_or_default(),
                });
            }
            visit(compressed_piece(header, entry, guest, guest_len)?)?;
            continue;
        }
        let reserved = if header.extended_l2 {
            L2_STANDARD_RESERVED | ZERO
        } else {
            L2_STANDARD_RESERVED
        };
        if entry & reserved != 0 {
            return Err(Qcow2Error::ReservedBits {
                what: Structure::Data,
                entry,
                guest,
            });
        }
        let host = entry & OFFSET_MASK;
        check_aligned(Structure::Data, host, cluster_size)?;
        match bitmap {
            None if entry & ZERO != 0 || host == 0 => visit(Piece::Zero {
                guest,
                len: guest_len,
            })?,
            None => visit(Piece::Data {
                guest,
                host,
                len: guest_len,
            })?,
            Some(bitmap) => subcluster_pieces(header, host, bitmap, guest, guest_len, &mut visit)?,
        }
    }
    Ok(())
}

fn compressed_piece(
    header: &Header,
    entry: u64,
    guest: u64,
    guest_len: u64,
) -> Result<Piece, Qcow2Error> {
    // Bits 0..x-1: byte offset; bits x..61: additional 512-byte sectors, x = 62 - (bits - 8).
    let offset_bits = 62 - (header.cluster_bits - 8);
    let offset_mask = (1u64 << offset_bits) - 1;
    let sectors_mask = (1u64 << (header.cluster_bits - 8)) - 1;
    let host = entry & offset_mask;
    if host & !OFFSET_MASK_56 != 0 {
        return Err(Qcow2Error::ReservedBits {
            what: Structure::CompressedData,
            entry,
            guest,
        });
    }
    let sectors = ((entry >> offset_bits) & sectors_mask) + 1;
    let host_len = sectors * SECTOR - (host % SECTOR);
    Ok(Piece::Compressed {
        guest,
        guest_len,
        host,
        host_len,
    })
}

/// Compressed offsets may use bits 0–55 only.
const OFFSET_MASK_56: u64 = (1 << 56) - 1;

fn subcluster_pieces(
    header: &Header,
    host: u64,
    bitmap: u64,
    guest: u64,
    guest_len: u64,
    visit: &mut impl FnMut(Piece) -> Result<(), Qcow2Error>,
) -> Result<(), Qcow2Error> {
    let allocated = bitmap & 0xffff_ffff;
    let zero = bitmap >> 32;
    if allocated & zero != 0 || (allocated != 0 && host == 0) {
        return Err(Qcow2Error::InvalidSubclusterBitmap { guest, bitmap });
    }
    let sub_size = header.cluster_size() / SUBCLUSTERS;
    let mut index = 0;
    while index < SUBCLUSTERS {
        let is_allocated = allocated & (1 << index) != 0;
        let run_start = index;
        while index < SUBCLUSTERS && (allocated & (1 << index) != 0) == is_allocated {
            index += 1;
        }
        let offset = run_start * sub_size;
        if offset >= guest_len {
            break;
        }
        let len = ((index - run_start) * sub_size).min(guest_len - offset);
        visit(if is_allocated {
            Piece::Data {
                guest: guest + offset,
                host: host + offset,
                len,
            }
        } else {
            Piece::Zero {
                guest: guest + offset,
                len,
            }
        })?;
    }
    Ok(())
}

fn check_aligned(what: Structure, offset: u64, cluster_size: u64) -> Result<(), Qcow2Error> {
    if offset.is_multiple_of(cluster_size) {
        Ok(())
    } else {
        Err(Qcow2Error::Misaligned {
            what,
            offset,
            alignment: cluster_size,
        })
    }
}

fn be_u64(raw: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&raw[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::ClusterCompression;

    fn header(cluster_bits: u32, virtual_size: u64, extended_l2: bool) -> Header {
        Header {
            version: 3,
            cluster_bits,
            virtual_size,
            l1_table_offset: 3 << cluster_bits,
            l1_size: 1,
            refcount_table_offset: 1 << cluster_bits,
            refcount_table_clusters: 1,
            snapshots: 0,
            dirty: false,
            extended_l2,
            compression: ClusterCompression::Deflate,
            parsed_len: 112,
        }
    }

    fn pieces(header: &Header, entries: &[u64]) -> Result<Vec<Piece>, Qcow2Error> {
        let table: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
        let mut found = Vec::new();
        decode_l2(header, &table, 0, |piece| {
            found.push(piece);
            Ok(())
        })?;
        Ok(found)
    }

    #[test]
    fn standard_zero_and_unallocated_entries() {
        let h = header(16, 3 << 16, false);
        let found = pieces(&h, &[COPIED | 0x50000, 0, 0x60000 | ZERO]).unwrap();
        assert_eq!(
            found,
            vec![
                Piece::Data {
                    guest: 0,
                    host: 0x50000,
                    len: 65536
                },
                Piece::Zero {
                    guest: 65536,
                    len: 65536
                },
                Piece::Zero {
                    guest: 131072,
                    len: 65536
                },
            ]
        );
    }

    #[test]
    fn the_last_cluster_is_cut_at_the_virtual_size() {
        let h = header(16, 65536 + 1000, false);
        let found = pieces(&h, &[0x50000, 0x60000, 0x70000]).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[1],
            Piece::Data {
                guest: 65536,
                host: 0x60000,
                len: 1000
            }
        );
    }

    #[test]
    fn compressed_descriptor_offsets_and_lengths() {
        let h = header(16, 65536, false);
        // 64 KiB clusters: offset in bits 0..53, sector count in bits 54..61.
        let entry = COMPRESSED | (2u64 << 54) | 0x41234;
        let found = pieces(&h, &[entry]).unwrap();
        assert_eq!(
            found,
            vec![Piece::Compressed {
                guest: 0,
                guest_len: 65536,
                host: 0x41234,
                host_len: 3 * 512 - 0x34,
            }]
        );
    }

    #[test]
    fn misaligned_and_reserved_entries_are_refused() {
        let h = header(16, 65536, false);
        assert!(matches!(
            pieces(&h, &[0x50200]),
            Err(Qcow2Error::Misaligned { .. })
        ));
        assert!(matches!(
            pieces(&h, &[0x50000 | (1 << 57)]),
            Err(Qcow2Error::ReservedBits { .. })
        ));
    }

    #[test]
    fn subcluster_bitmaps_split_a_cluster() {
        let h = header(16, 65536, true);
        // subclusters 0-1 allocated, 2 zero, the rest unallocated
        let bitmap = 0b11 | (0b100 << 32);
        let found = pieces(&h, &[0x50000, bitmap]).unwrap();
        assert_eq!(
            found,
            vec![
                Piece::Data {
                    guest: 0,
                    host: 0x50000,
                    len: 4096
                },
                Piece::Zero {
                    guest: 4096,
                    len: 65536 - 4096
                },
            ]
        );
        assert!(matches!(
            pieces(&h, &[0x50000, 1 | (1 << 32)]),
            Err(Qcow2Error::InvalidSubclusterBitmap { .. })
        ));
        assert!(matches!(
            pieces(&h, &[0, 1]),
            Err(Qcow2Error::InvalidSubclusterBitmap { .. })
        ));
    }
}
