//! The streaming mapper: qcow2 bytes in, in file order; guest writes out.
//!
//! Two ways to drive it, freely mixed:
//!
//! - **Metadata first** (the source allows random access): give it the L1 table
//!   ([`Mapper::provide_l1`]) and every L2 table ([`Mapper::provide_l2`]), then feed the whole
//!   file once. Every mapping is known before the first data byte, so nothing is ever parked,
//!   and every safety check (bounds, overlaps) has run before anything is written. The
//!   metadata seen again in the stream is compared with what was provided, so the checksum
//!   of the stream covers the mapping too.
//! - **Forward only** (a plain stream): feed the file from its first byte. The mapper learns
//!   the L1 and L2 tables as they pass. Bytes that pass before any known table maps them are
//!   parked, up to a limit, until the table that maps them arrives; once every L2 table has
//!   been seen, nothing more is parked.
//!
//! Host ranges are tracked in sorted maps keyed by host offset: metadata regions, runs of
//! standard data (adjacent clusters merged), compressed clusters. Every insertion checks its
//! neighbours, which is how overlapping and duplicate host clusters are refused.

use std::collections::BTreeMap;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::parking::Parking;
use super::table::{Piece, decode_l1, decode_l2};
use super::{Header, Qcow2Error, Structure};

/// Compressed data is addressed in 512-byte sectors.
const SECTOR: u64 = 512;
/// Bookkeeping cost charged per tracked range against the memory limit.
const ENTRY_COST: u64 = 64;

/// One thing to do to the target, in guest (virtual disk) offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `data` at `guest`.
    Write { guest: u64, data: Bytes },
    /// `len` bytes at `guest` read as zeros.
    Zero { guest: u64, len: u64 },
    /// Inflate `input` into one cluster and write its first `len` bytes at `guest`.
    Inflate { guest: u64, len: u64, input: Bytes },
}

/// What the mapping tables say about the virtual disk, in guest bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MapStats {
    /// Bytes stored uncompressed.
    pub data_bytes: u64,
    /// Bytes stored in compressed clusters.
    pub compressed_bytes: u64,
    /// Compressed clusters.
    pub compressed_clusters: u64,
    /// Bytes that read as zeros (unallocated or zero clusters).
    pub zero_bytes: u64,
}

/// Why a stream could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The image is malformed or unsafe.
    #[error(transparent)]
    Invalid(#[from] Qcow2Error),
    /// Forward-only mapping needed to hold more than allowed.
    #[error(
        "mapping this image in one forward pass needs more than the {limit}-byte parking limit \
         (its tables come after the data they map, e.g. after `qemu-img resize`)"
    )]
    ParkingLimit { limit: u64 },
    /// The stream ended before something the tables reference.
    #[error("the image ends at byte {end} but {what} at host offset {offset:#x} lies beyond it")]
    Truncated {
        what: Structure,
        offset: u64,
        end: u64,
    },
    /// The caller fed bytes out of order (a bug in the caller).
    #[error("bytes fed at offset {got} but the stream is at {expected}")]
    NotSequential { expected: u64, got: u64 },
}

#[derive(Debug)]
enum Region {
    /// Cluster 0: the header prefix we parsed must match the stream.
    Header,
    /// Not needed for reading; skipped.
    RefcountTable,
    /// The L1 table; the first `needed` bytes are assembled.
    L1 { needed: u64, table: Table },
    /// An L2 table mapping guest offsets from `first_guest`.
    L2 { first_guest: u64, table: Table },
}

/// A metadata table as it streams past.
#[derive(Debug, Default)]
struct Table {
    /// Set once the table was provided (or parsed): the stream copy must hash the same.
    digest: Option<[u8; 32]>,
    /// The bytes seen so far in the stream.
    assembly: Vec<u8>,
}

#[derive(Debug)]
struct RegionEntry {
    end: u64,
    region: Region,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    len: u64,
    guest: u64,
    /// Some of the run has already streamed past (its start was trimmed).
    started: bool,
}

#[derive(Debug)]
struct Compressed {
    /// The full descriptor length (sector-rounded; may run past the end of the file).
    len: u64,
    guest: u64,
    guest_len: u64,
    buffer: Vec<u8>,
}

impl Compressed {
    fn last_sector(&self, start: u64) -> u64 {
        (start + self.len - 1) / SECTOR * SECTOR
    }
}

/// The streaming state machine. See the module documentation.
#[derive(Debug)]
pub struct Mapper {
    header: Header,
    header_bytes: Vec<u8>,
    cluster_size: u64,
    file_len: Option<u64>,
    limit: u64,
    cursor: u64,
    regions: BTreeMap<u64, RegionEntry>,
    /// L1 known and parsed.
    l1_known: bool,
    /// L2 tables whose contents are not known yet.
    unknown_l2: usize,
    data: BTreeMap<u64, Run>,
    compressed: BTreeMap<u64, Compressed>,
    parking: Parking,
    stats: MapStats,
}

impl Mapper {
    /// Starts mapping an image whose header was parsed from `head` (the file's first bytes,
    /// at least `header.parsed_len` of them). `file_len` is the file's length if known;
    /// `parking_limit` bounds the memory held for bytes and ranges not yet resolved.
    pub fn new(
        header: &Header,
        head: &[u8],
        file_len: Option<u64>,
        parking_limit: u64,
    ) -> Result<Self, StreamError> {
        let cluster_size = header.cluster_size();
        let mut mapper = Self {
            header: header.clone(),
            header_bytes: head[..header.parsed_len.min(head.len())].to_vec(),
            cluster_size,
            file_len,
            limit: parking_limit,
            cursor: 0,
            regions: BTreeMap::new(),
            l1_known: false,
            unknown_l2: 0,
            data: BTreeMap::new(),
            compressed: BTreeMap::new(),
            parking: Parking::default(),
            stats: MapStats::default(),
        };
        mapper.add_region(0, cluster_size, Region::Header)?;
        let (refcount_offset, refcount_len) = header.refcount_table_range();
        if refcount_len > 0 {
            mapper.add_region(refcount_offset, refcount_len, Region::RefcountTable)?;
        }
        let (l1_offset, l1_needed) = header.l1_range();
        if l1_needed == 0 {
            mapper.l1_known = true;
        } else {
            mapper.check_inside_file(Structure::L1Table, l1_offset, l1_needed)?;
            mapper.add_region(
                l1_offset,
                header.l1_declared_len(),
                Region::L1 {
                    needed: l1_needed,
                    table: Table::default(),
                },
            )?;
        }
        Ok(mapper)
    }

    /// Where the part of the L1 table that maps the disk lies: `(offset, length)`, or `None`
    /// when there is nothing to read (the L1 table is already known).
    pub fn l1_range(&self) -> Option<(u64, u64)> {
        (!self.l1_known).then(|| self.header.l1_range())
    }

    /// Provides the L1 table read out of band (exactly [`Mapper::l1_range`]'s bytes).
    pub fn provide_l1(&mut self, bytes: &[u8], out: &mut Vec<Action>) -> Result<(), StreamError> {
        if self.l1_known {
            return Ok(());
        }
        let (offset, _) = self.header.l1_range();
        self.set_digest(offset, bytes);
        self.parse_l1(bytes, out)?;
        self.check_memory()
    }

    /// Host offsets of the L2 tables whose contents are not known yet (each one cluster).
    pub fn unknown_l2_tables(&self) -> Vec<u64> {
        self.regions
            .iter()
            .filter_map(|(&offset, entry)| match &entry.region {
                Region::L2 { table, .. } if table.digest.is_none() => Some(offset),
                _ => None,
            })
            .collect()
    }

    /// Provides the L2 table at host offset `offset`, read out of band (one cluster).
    pub fn provide_l2(
        &mut self,
        offset: u64,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        let first_guest = match self.regions.get(&offset).map(|entry| &entry.region) {
            Some(Region::L2 {
                first_guest,
                table: Table { digest: None, .. },
            }) => *first_guest,
            _ => return Ok(()),
        };
        self.set_digest(offset, bytes);
        self.parse_l2(first_guest, bytes, out)?;
        self.check_memory()
    }

    /// Whether every mapping is known (the L1 and all L2 tables have been seen).
    pub fn mappings_known(&self) -> bool {
        self.l1_known && self.unknown_l2 == 0
    }

    /// Whether the rest of the stream can no longer produce any action: every mapping is
    /// known and every mapped byte has passed. (The caller still reads the rest to hash it.)
    pub fn is_complete(&self) -> bool {
        self.mappings_known()
            && self.data.is_empty()
            && self.compressed.is_empty()
            && self
                .regions
                .range(self.cursor..)
                .all(|(_, entry)| matches!(entry.region, Region::RefcountTable))
    }

    /// What the tables say so far.
    pub fn stats(&self) -> MapStats {
        self.stats
    }

    /// The most memory the parking buffer ever held.
    pub fn parked_peak(&self) -> u64 {
        self.parking.peak()
    }

    /// How many bytes have been fed.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// Feeds the next bytes of the file, which start at `offset` (the current position).
    pub fn feed(
        &mut self,
        offset: u64,
        chunk: &Bytes,
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        if offset != self.cursor {
            return Err(StreamError::NotSequential {
                expected: self.cursor,
                got: offset,
            });
        }
        let end = offset + chunk.len() as u64;
        while self.cursor < end {
            let start = self.cursor;
            self.step(start, end, chunk, offset, out)?;
            debug_assert!(self.cursor > start, "the mapper must make progress");
        }
        self.check_memory()
    }

    /// Ends the stream: everything the tables reference must have arrived. Bytes of the last
    /// data cluster beyond the end of the file read as zeros, as in QEMU.
    pub fn finish(&mut self, out: &mut Vec<Action>) -> Result<(), StreamError> {
        let end = self.cursor;
        let truncated = |what, offset| StreamError::Truncated { what, offset, end };
        if let Some(file_len) = self.file_len
            && end < file_len
        {
            return Err(truncated(Structure::Data, end));
        }
        if end < self.header_bytes.len() as u64 {
            return Err(truncated(Structure::Header, 0));
        }
        for (&offset, entry) in self.regions.range(end..) {
            match entry.region {
                Region::L1 { .. } if !self.l1_known => {
                    return Err(truncated(Structure::L1Table, offset));
                }
                Region::L2 { .. } => return Err(truncated(Structure::L2Table, offset)),
                _ => {}
            }
        }
        if let Some((&offset, entry)) = self.regions.range(..end).next_back()
            && entry.end > end
        {
            match &entry.region {
                Region::L1 { needed, table } if (table.assembly.len() as u64) < *needed => {
                    return Err(truncated(Structure::L1Table, offset));
                }
                Region::L2 { table, .. } if (table.assembly.len() as u64) < self.cluster_size => {
                    return Err(truncated(Structure::L2Table, offset));
                }
                _ => {}
            }
        }
        for (&offset, run) in std::mem::take(&mut self.data).iter() {
            if !run.started {
                return Err(truncated(Structure::Data, offset));
            }
            out.push(Action::Zero {
                guest: run.guest,
                len: run.len,
            });
        }
        for (offset, cluster) in std::mem::take(&mut self.compressed) {
            if offset >= end {
                return Err(truncated(Structure::CompressedData, offset));
            }
            if offset + cluster.len - end >= SECTOR {
                return Err(truncated(Structure::CompressedData, offset));
            }
            out.push(Action::Inflate {
                guest: cluster.guest,
                len: cluster.guest_len,
                input: Bytes::from(cluster.buffer),
            });
        }
        Ok(())
    }

    /// Handles the bytes from the cursor up to the next boundary (a region, run or
    /// compressed cluster starting or ending, or `end`).
    fn step(
        &mut self,
        p: u64,
        end: u64,
        chunk: &Bytes,
        chunk_offset: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        let slice = |from: u64, to: u64| {
            chunk.slice((from - chunk_offset) as usize..(to - chunk_offset) as usize)
        };

        if let Some((&start, entry)) = self.regions.range(..=p).next_back()
            && entry.end > p
        {
            let to = end.min(entry.end);
            self.cursor = to;
            return self.region_bytes(start, p, &slice(p, to), out);
        }
        let mut bound = end;
        if let Some((&next, _)) = self.regions.range(p..).next() {
            bound = bound.min(next);
        }

        if let Some((&start, run)) = self.data.range(..=p).next_back()
            && start + run.len > p
        {
            debug_assert_eq!(start, p, "runs behind the cursor are trimmed");
            let run = *run;
            let to = bound.min(start + run.len);
            out.push(Action::Write {
                guest: run.guest,
                data: slice(p, to),
            });
            self.data.remove(&start);
            if to < start + run.len {
                self.data.insert(
                    to,
                    Run {
                        len: start + run.len - to,
                        guest: run.guest + (to - start),
                        started: true,
                    },
                );
            }
            self.cursor = to;
            return Ok(());
        }
        if let Some((&next, _)) = self.data.range(p..).next() {
            bound = bound.min(next);
        }

        let window = p.saturating_sub(2 * self.cluster_size + SECTOR);
        let covering: Vec<u64> = self
            .compressed
            .range(window..=p)
            .filter(|(start, cluster)| **start + cluster.len > p)
            .map(|(&start, _)| start)
            .collect();
        if let Some((&next, _)) = self.compressed.range(p + 1..).next() {
            bound = bound.min(next);
        }
        if covering.is_empty() {
            let to = bound;
            if !self.mappings_known() {
                self.parking.park(
                    p,
                    &chunk[(p - chunk_offset) as usize..(to - chunk_offset) as usize],
                );
            }
            self.cursor = to;
            return Ok(());
        }

        let mut to = bound;
        let mut in_every_last_sector = true;
        for start in &covering {
            let cluster = &self.compressed[start];
            to = to.min(start + cluster.len);
            let last = cluster.last_sector(*start);
            if p < last {
                to = to.min(last);
                in_every_last_sector = false;
            }
        }
        let bytes = &chunk[(p - chunk_offset) as usize..(to - chunk_offset) as usize];
        // The final sector of a compressed cluster may also hold the start of another one
        // whose L2 table has not been seen yet: keep it until every table is known.
        if in_every_last_sector && !self.mappings_known() {
            self.parking.park(p, bytes);
        }
        for start in covering {
            let Some(cluster) = self.compressed.get_mut(&start) else {
                continue;
            };
            if cluster.buffer.capacity() == 0 {
                cluster.buffer.reserve_exact(cluster.len as usize);
            }
            cluster.buffer.extend_from_slice(bytes);
            if start + cluster.len == to {
                self.complete_compressed(start, out);
            }
        }
        self.cursor = to;
        Ok(())
    }

    fn complete_compressed(&mut self, start: u64, out: &mut Vec<Action>) {
        if let Some(cluster) = self.compressed.remove(&start) {
            out.push(Action::Inflate {
                guest: cluster.guest,
                len: cluster.guest_len,
                input: Bytes::from(cluster.buffer),
            });
        }
    }

    /// Bytes `[p, p + bytes.len())` of the region starting at `start`.
    fn region_bytes(
        &mut self,
        start: u64,
        p: u64,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        let Some(entry) = self.regions.get_mut(&start) else {
            return Ok(());
        };
        let (table, wanted) = match &mut entry.region {
            Region::Header => {
                return self.check_header_bytes(p, bytes);
            }
            Region::RefcountTable => return Ok(()),
            Region::L1 { needed, table } => (table, *needed),
            Region::L2 { table, .. } => (table, self.cluster_size),
        };
        let have = table.assembly.len() as u64;
        if p - start != have || have >= wanted {
            return Ok(());
        }
        let take = (wanted - have).min(bytes.len() as u64) as usize;
        if have == 0 {
            table.assembly.reserve_exact(wanted as usize);
        }
        table.assembly.extend_from_slice(&bytes[..take]);
        if (table.assembly.len() as u64) < wanted {
            return Ok(());
        }
        self.table_complete(start, out)
    }

    fn check_header_bytes(&self, p: u64, bytes: &[u8]) -> Result<(), StreamError> {
        let known = self.header_bytes.len() as u64;
        if p >= known {
            return Ok(());
        }
        let len = (known - p).min(bytes.len() as u64) as usize;
        if self.header_bytes[p as usize..p as usize + len] != bytes[..len] {
            return Err(Qcow2Error::MetadataChanged {
                what: Structure::Header,
                offset: p,
            }
            .into());
        }
        Ok(())
    }

    /// A table finished assembling from the stream: verify it or parse it.
    fn table_complete(&mut self, start: u64, out: &mut Vec<Action>) -> Result<(), StreamError> {
        let Some(entry) = self.regions.get_mut(&start) else {
            return Ok(());
        };
        let (what, first_guest, table) = match &mut entry.region {
            Region::L1 { table, .. } => (Structure::L1Table, None, table),
            Region::L2 { first_guest, table } => (Structure::L2Table, Some(*first_guest), table),
            Region::Header | Region::RefcountTable => return Ok(()),
        };
        let bytes = std::mem::take(&mut table.assembly);
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(expected) = table.digest {
            if expected != digest {
                return Err(Qcow2Error::MetadataChanged {
                    what,
                    offset: start,
                }
                .into());
            }
            return Ok(());
        }
        table.digest = Some(digest);
        match first_guest {
            None => self.parse_l1(&bytes, out),
            Some(first_guest) => self.parse_l2(first_guest, &bytes, out),
        }
    }

    fn set_digest(&mut self, start: u64, bytes: &[u8]) {
        if let Some(entry) = self.regions.get_mut(&start)
            && let Region::L1 { table, .. } | Region::L2 { table, .. } = &mut entry.region
        {
            table.digest = Some(Sha256::digest(bytes).into());
        }
    }

    fn parse_l1(&mut self, bytes: &[u8], out: &mut Vec<Action>) -> Result<(), StreamError> {
        let coverage = self.header.l2_coverage();
        let virtual_size = self.header.virtual_size;
        let tables = decode_l1(&self.header, bytes)?;
        self.l1_known = true;
        let mut present = Vec::new();
        for (index, table) in tables.into_iter().enumerate() {
            let first_guest = index as u64 * coverage;
            let len = coverage.min(virtual_size - first_guest);
            match table {
                None => {
                    self.stats.zero_bytes += len;
                    push_zero(out, first_guest, len);
                }
                Some(offset) => {
                    self.check_inside_file(Structure::L2Table, offset, self.cluster_size)?;
                    self.add_region(
                        offset,
                        self.cluster_size,
                        Region::L2 {
                            first_guest,
                            table: Table::default(),
                        },
                    )?;
                    self.unknown_l2 += 1;
                    present.push(offset);
                }
            }
        }
        // Tables that already streamed past were parked: take them back now that every
        // table's location is known (so their mappings are checked against all of them).
        for offset in present {
            if offset >= self.cursor {
                continue;
            }
            let until = self.cursor.min(offset + self.cluster_size);
            let mut assembly = Vec::with_capacity(self.cluster_size as usize);
            if !self
                .parking
                .take(offset, until, |_, piece| assembly.extend_from_slice(&piece))
            {
                return Err(Qcow2Error::AlreadyConsumed { guest: 0, offset }.into());
            }
            if let Some(RegionEntry {
                region: Region::L2 { table, .. },
                ..
            }) = self.regions.get_mut(&offset)
            {
                table.assembly = assembly;
            }
            if until == offset + self.cluster_size {
                self.table_complete(offset, out)?;
            }
        }
        self.sweep();
        Ok(())
    }

    fn parse_l2(
        &mut self,
        first_guest: u64,
        bytes: &[u8],
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        let mut pieces = Vec::new();
        decode_l2(&self.header, bytes, first_guest, |piece| {
            pieces.push(piece);
            Ok(())
        })?;
        self.unknown_l2 = self.unknown_l2.saturating_sub(1);
        let mut run: Option<(u64, Run)> = None;
        for piece in pieces {
            match piece {
                Piece::Zero { guest, len } => {
                    self.stats.zero_bytes += len;
                    push_zero(out, guest, len);
                }
                Piece::Data { guest, host, len } => {
                    self.stats.data_bytes += len;
                    match &mut run {
                        Some((start, current))
                            if *start + current.len == host
                                && current.guest + current.len == guest =>
                        {
                            current.len += len;
                        }
                        _ => {
                            if let Some((start, current)) = run.take() {
                                self.insert_data(start, current, out)?;
                            }
                            run = Some((
                                host,
                                Run {
                                    len,
                                    guest,
                                    started: false,
                                },
                            ));
                        }
                    }
                }
                Piece::Compressed {
                    guest,
                    guest_len,
                    host,
                    host_len,
                } => {
                    self.stats.compressed_bytes += guest_len;
                    self.stats.compressed_clusters += 1;
                    self.insert_compressed(host, host_len, guest, guest_len, out)?;
                }
            }
        }
        if let Some((start, current)) = run {
            self.insert_data(start, current, out)?;
        }
        self.sweep();
        Ok(())
    }

    /// Once every table is known, nothing parked can ever be needed again.
    fn sweep(&mut self) {
        if self.mappings_known() {
            self.parking.clear();
        }
    }

    fn insert_data(
        &mut self,
        host: u64,
        run: Run,
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        let end = host + run.len;
        if let Some(file_len) = self.file_len
            && host >= file_len
        {
            return Err(Qcow2Error::OutsideFile {
                what: Structure::Data,
                offset: host,
                len: run.len,
                file_len,
            }
            .into());
        }
        self.check_region_overlap(host, end, Structure::Data)?;
        if let Some((&other, other_run)) = self.data.range(..end).next_back()
            && other + other_run.len > host
        {
            if other == host {
                return Err(Qcow2Error::DuplicateHostCluster { offset: host }.into());
            }
            return Err(overlap(Structure::Data, other, Structure::Data, host));
        }
        if let Some(other) = self.compressed_overlapping(host, end) {
            return Err(overlap(
                Structure::CompressedData,
                other,
                Structure::Data,
                host,
            ));
        }
        let mut run = run;
        let mut host = host;
        // The part of the last cluster beyond the end of the file reads as zeros.
        if let Some(file_len) = self.file_len
            && end > file_len
        {
            let zeros = end - file_len;
            run.len -= zeros;
            push_zero(out, run.guest + run.len, zeros);
        }
        if host < self.cursor {
            let until = self.cursor.min(host + run.len);
            let guest = run.guest;
            let taken = self.parking.take(host, until, |offset, piece| {
                out.push(Action::Write {
                    guest: guest + (offset - host),
                    data: piece,
                });
            });
            if !taken {
                return Err(Qcow2Error::AlreadyConsumed {
                    guest,
                    offset: host,
                }
                .into());
            }
            run.guest += until - host;
            run.len -= until - host;
            host = until;
        }
        if run.len > 0 {
            self.data.insert(host, run);
        }
        Ok(())
    }

    fn insert_compressed(
        &mut self,
        host: u64,
        len: u64,
        guest: u64,
        guest_len: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), StreamError> {
        if let Some(file_len) = self.file_len {
            if host >= file_len {
                return Err(Qcow2Error::OutsideFile {
                    what: Structure::CompressedData,
                    offset: host,
                    len,
                    file_len,
                }
                .into());
            }
            // Only the final, partly used sector may run past the end of the file.
            if host + len >= file_len + SECTOR {
                return Err(Qcow2Error::CompressedLength { offset: host, len }.into());
            }
        }
        let end = host + len;
        self.check_region_overlap(host, end, Structure::CompressedData)?;
        if let Some((&other, run)) = self.data.range(..end).next_back()
            && other + run.len > host
        {
            return Err(overlap(
                Structure::Data,
                other,
                Structure::CompressedData,
                host,
            ));
        }
        // Compressed clusters may share a sector: the next one may start inside the final
        // sector of the previous one, never earlier.
        if let Some((&prev, cluster)) = self.compressed.range(..=host).next_back() {
            if prev == host {
                return Err(Qcow2Error::DuplicateHostCluster { offset: host }.into());
            }
            if prev + cluster.len > host && host < cluster.last_sector(prev) {
                return Err(overlap(
                    Structure::CompressedData,
                    prev,
                    Structure::CompressedData,
                    host,
                ));
            }
        }
        let last_sector = (end - 1) / SECTOR * SECTOR;
        if let Some((&next, _)) = self.compressed.range(host + 1..).next()
            && next < end
            && next < last_sector
        {
            return Err(overlap(
                Structure::CompressedData,
                host,
                Structure::CompressedData,
                next,
            ));
        }
        let mut cluster = Compressed {
            len,
            guest,
            guest_len,
            buffer: Vec::new(),
        };
        let effective_end = self.file_len.map_or(end, |file_len| end.min(file_len));
        if host < self.cursor {
            let until = self.cursor.min(effective_end);
            cluster.buffer.reserve_exact(len as usize);
            if !self.parking.copy_into(host, until, &mut cluster.buffer) {
                return Err(Qcow2Error::AlreadyConsumed {
                    guest,
                    offset: host,
                }
                .into());
            }
            if until == effective_end {
                out.push(Action::Inflate {
                    guest,
                    len: guest_len,
                    input: Bytes::from(cluster.buffer),
                });
                return Ok(());
            }
        }
        if effective_end < end {
            // Stop collecting at the end of the file.
            cluster.len = effective_end - host;
        }
        self.compressed.insert(host, cluster);
        Ok(())
    }

    fn compressed_overlapping(&self, start: u64, end: u64) -> Option<u64> {
        let window = start.saturating_sub(2 * self.cluster_size + SECTOR);
        self.compressed
            .range(window..end)
            .find(|(other, cluster)| **other + cluster.len > start)
            .map(|(&other, _)| other)
    }

    fn check_inside_file(&self, what: Structure, offset: u64, len: u64) -> Result<(), StreamError> {
        match self.file_len {
            Some(file_len) if offset.checked_add(len).is_none_or(|end| end > file_len) => {
                Err(Qcow2Error::OutsideFile {
                    what,
                    offset,
                    len,
                    file_len,
                }
                .into())
            }
            _ => Ok(()),
        }
    }

    fn check_region_overlap(
        &self,
        start: u64,
        end: u64,
        what: Structure,
    ) -> Result<(), StreamError> {
        if let Some((&other, entry)) = self.regions.range(..end).next_back()
            && entry.end > start
        {
            return Err(overlap(entry.region.structure(), other, what, start));
        }
        Ok(())
    }

    fn add_region(&mut self, start: u64, len: u64, region: Region) -> Result<(), StreamError> {
        let what = region.structure();
        let end = start.checked_add(len).ok_or(Qcow2Error::OutsideFile {
            what,
            offset: start,
            len,
            file_len: self.file_len.unwrap_or(u64::MAX),
        })?;
        if let Some((&other, entry)) = self.regions.range(..end).next_back()
            && entry.end > start
        {
            if other == start && what == entry.region.structure() {
                return Err(Qcow2Error::DuplicateHostCluster { offset: start }.into());
            }
            return Err(overlap(entry.region.structure(), other, what, start));
        }
        self.regions.insert(start, RegionEntry { end, region });
        Ok(())
    }

    fn check_memory(&self) -> Result<(), StreamError> {
        let entries = (self.regions.len() + self.data.len() + self.compressed.len()) as u64;
        let held = self.parking.held() + entries * ENTRY_COST;
        if held > self.limit {
            return Err(StreamError::ParkingLimit { limit: self.limit });
        }
        Ok(())
    }
}

impl Region {
    fn structure(&self) -> Structure {
        match self {
            Self::Header => Structure::Header,
            Self::RefcountTable => Structure::RefcountTable,
            Self::L1 { .. } => Structure::L1Table,
            Self::L2 { .. } => Structure::L2Table,
        }
    }
}

fn overlap(
    first: Structure,
    first_offset: u64,
    second: Structure,
    second_offset: u64,
) -> StreamError {
    Qcow2Error::Overlap {
        first,
        first_offset,
        second,
        second_offset,
    }
    .into()
}

/// Appends a zero action, merging it with the previous one when adjacent.
fn push_zero(out: &mut Vec<Action>, guest: u64, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(Action::Zero {
        guest: previous,
        len: previous_len,
    }) = out.last_mut()
        && *previous + *previous_len == guest
    {
        *previous_len += len;
        return;
    }
    out.push(Action::Zero { guest, len });
}
