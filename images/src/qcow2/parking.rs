//! The parking buffer: host bytes that passed before anything was known to map them.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Parked byte ranges keyed by host offset. Ranges never overlap.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    pieces: BTreeMap<u64, Bytes>,
    bytes: u64,
    peak: u64,
}

/// Bookkeeping cost charged per parked piece on top of its bytes.
const PIECE_OVERHEAD: u64 = 64;

impl Parking {
    /// Keeps a copy of `data`, which starts at host offset `offset`. The copy matters: a
    /// slice would pin the whole (much larger) input chunk it came from.
    pub(crate) fn park(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len() as u64 + PIECE_OVERHEAD;
        self.peak = self.peak.max(self.bytes);
        self.pieces.insert(offset, Bytes::copy_from_slice(data));
    }

    /// Memory held, including bookkeeping.
    pub(crate) fn held(&self) -> u64 {
        self.bytes
    }

    /// The most ever held.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// Drops everything (once every mapping is known, nothing parked can be needed).
    pub(crate) fn clear(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
    }

    /// Removes `[start, end)` and hands it out in order as `(offset, bytes)` pieces.
    /// Returns `false` if any byte of the range is not parked (then nothing is removed).
    pub(crate) fn take(&mut self, start: u64, end: u64, mut emit: impl FnMut(u64, Bytes)) -> bool {
        if !self.covers(start, end) {
            return false;
        }
        let keys: Vec<u64> = self.overlapping(start, end).map(|(&key, _)| key).collect();
        for key in keys {
            let Some(piece) = self.pieces.remove(&key) else {
                continue;
            };
            self.bytes -= piece.len() as u64 + PIECE_OVERHEAD;
            let piece_end = key + piece.len() as u64;
            let from = start.max(key);
            let to = end.min(piece_end);
            if key < from {
                self.park_slice(key, piece.slice(..(from - key) as usize));
            }
            if to < piece_end {
                self.park_slice(to, piece.slice((to - key) as usize..));
            }
            emit(
                from,
                piece.slice((from - key) as usize..(to - key) as usize),
            );
        }
        true
    }

    /// Appends a copy of `[start, end)` to `out`, leaving it parked. Returns `false` if any
    /// byte of the range is not parked.
    pub(crate) fn copy_into(&self, start: u64, end: u64, out: &mut Vec<u8>) -> bool {
        if !self.covers(start, end) {
            return false;
        }
        for (&key, piece) in self.overlapping(start, end) {
            let from = start.max(key);
            let to = end.min(key + piece.len() as u64);
            out.extend_from_slice(&piece[(from - key) as usize..(to - key) as usize]);
        }
        true
    }

    fn park_slice(&mut self, offset: u64, piece: Bytes) {
        self.bytes += piece.len() as u64 + PIECE_OVERHEAD;
        self.pieces.insert(offset, piece);
    }

    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (&u64, &Bytes)> {
        let first = self
            .pieces
            .range(..=start)
            .next_back()
            .map_or(start, |(&key, _)| key);
        self.pieces
            .range(first..end)
            .filter(move |(key, piece)| **key + piece.len() as u64 > start)
    }

    fn covers(&self, start: u64, end: u64) -> bool {
        let mut next = start;
        for (&key, piece) in self.overlapping(start, end) {
            if key > next {
                return false;
            }
            next = next.max(key + piece.len() as u64);
            if next >= end {
                return true;
            }
        }
        next >= end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_across_pieces_and_keeps_the_rest() {
        let mut parking = Parking::default();
        parking.park(100, &[1; 50]);
        parking.park(150, &[2; 50]);
        let mut got = Vec::new();
        assert!(parking.take(120, 170, |offset, bytes| got.push((offset, bytes.len()))));
        assert_eq!(got, vec![(120, 30), (150, 20)]);
        let mut left = Vec::new();
        assert!(parking.copy_into(100, 120, &mut left));
        assert!(parking.copy_into(170, 200, &mut left));
        assert_eq!(left.len(), 50);
        assert!(!parking.copy_into(110, 130, &mut left));
    }

    #[test]
    fn a_gap_refuses_the_whole_range() {
        let mut parking = Parking::default();
        parking.park(0, &[0; 10]);
        parking.park(20, &[0; 10]);
        assert!(!parking.take(0, 30, |_, _| panic!("nothing may be emitted")));
        assert_eq!(parking.held(), 20 + 2 * PIECE_OVERHEAD);
    }
}
