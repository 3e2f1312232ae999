//! The sink: guest writes and zero ranges in, target writes out.
//!
//! Three jobs besides forwarding:
//! - **Bounds**: nothing is written past the virtual size, or past the target's capacity
//!   while the size is still unknown (decompression bombs stop there).
//! - **Zeros**: zero ranges are skipped (holes in files, or a device known to be zeroed) or
//!   zeroed on the device; zero blocks inside data are found and treated the same way.
//! - **Hold-back**: the first and last MiB of the image — where partition tables and boot
//!   code live — are kept in memory and written only by [`Sink::commit`], after the checksum
//!   verified. Until then the target's ends are zeros, so an interrupted or unverified write
//!   cannot boot, even if the process dies before it can wipe anything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{ImageError, Refusal, TargetError};
use crate::options::ZeroPolicy;
use crate::progress::{ProgressState, TargetKind};
use crate::target::{ALIGN, Target};

/// Bytes held back at each end of the image.
pub(crate) const HOLD: u64 = 1 << 20;

/// Zero runs shorter than this inside data are written as data when zeroing (a syscall per
/// 4 KiB would cost more than writing it).
const MIN_ZEROED_RUN: u64 = 64 << 10;

#[derive(Debug)]
struct Held {
    start: u64,
    bytes: Vec<u8>,
}

impl Held {
    fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            bytes: vec![0; (end - start) as usize],
        }
    }

    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Copies the part of `[guest, guest + data.len())` that falls inside.
    fn absorb(&mut self, guest: u64, data: &[u8]) {
        let from = guest.max(self.start);
        let to = (guest + data.len() as u64).min(self.end());
        if from < to {
            self.bytes[(from - self.start) as usize..(to - self.start) as usize]
                .copy_from_slice(&data[(from - guest) as usize..(to - guest) as usize]);
        }
    }
}

/// Byte counts for the report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SinkCounts {
    pub(crate) written: u64,
    pub(crate) zeroed: u64,
    pub(crate) skipped: u64,
}

#[derive(Debug)]
pub(crate) struct Sink {
    target: Target,
    skip_zeros: bool,
    /// Where writes must stop while the virtual size is unknown.
    limit: u64,
    virtual_size: OnceLock<u64>,
    head: Mutex<Held>,
    tail: Mutex<Option<Held>>,
    modified: AtomicBool,
    written: AtomicU64,
    zeroed: AtomicU64,
    skipped: AtomicU64,
    progress: Arc<ProgressState>,
}

impl Sink {
    pub(crate) fn new(
        target: Target,
        policy: ZeroPolicy,
        size_limit: Option<u64>,
        progress: Arc<ProgressState>,
    ) -> Self {
        let skip_zeros = target.kind() == TargetKind::File || policy == ZeroPolicy::AssumeZeroed;
        let limit = target.capacity().or(size_limit).unwrap_or(u64::MAX);
        Self {
            target,
            skip_zeros,
            limit,
            virtual_size: OnceLock::new(),
            head: Mutex::new(Held::new(0, HOLD)),
            tail: Mutex::new(None),
            modified: AtomicBool::new(false),
            written: AtomicU64::new(0),
            zeroed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            progress,
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the target has been changed.
    pub(crate) fn modified(&self) -> bool {
        self.modified.load(Ordering::SeqCst)
    }

    pub(crate) fn virtual_size(&self) -> Option<u64> {
        self.virtual_size.get().copied()
    }

    pub(crate) fn counts(&self) -> SinkCounts {
        SinkCounts {
            written: self.written.load(Ordering::Relaxed),
            zeroed: self.zeroed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    fn io(&self, operation: &'static str, err: std::io::Error) -> ImageError {
        self.target.error(operation, err).into()
    }

    /// Checks that an image of `size` bytes fits, before anything is changed.
    pub(crate) fn check_fits(&self, size: u64) -> Result<(), ImageError> {
        if size > self.limit {
            return Err(Refusal::TooLarge {
                needed: size,
                available: self.limit,
            }
            .into());
        }
        Ok(())
    }

    /// The first change to the target: truncate a file, or zero a device's ends (old
    /// partition tables must not survive next to a half-written image).
    pub(crate) fn begin(&self, virtual_size: Option<u64>) -> Result<(), ImageError> {
        if let Some(size) = virtual_size {
            self.check_fits(size)?;
        }
        self.modified.store(true, Ordering::SeqCst);
        match self.target.kind() {
            TargetKind::File => {
                self.target
                    .set_len(0)
                    .and_then(|()| self.target.set_len(virtual_size.unwrap_or(0)))
                    .map_err(|err| self.io("truncate", err))?;
            }
            TargetKind::BlockDevice => {
                let capacity = self.target.capacity().unwrap_or(0);
                self.target
                    .zero(0, HOLD.min(capacity))
                    .map_err(|err| self.io("zeroing the start", err))?;
                let end_start = capacity.saturating_sub(HOLD) / ALIGN * ALIGN;
                self.target
                    .zero(end_start, capacity - end_start)
                    .map_err(|err| self.io("zeroing the end", err))?;
            }
        }
        if let Some(size) = virtual_size {
            self.set_virtual_size(size)?;
        }
        Ok(())
    }

    /// Fixes the virtual size (at the start, or at the end of a raw stream of unknown size).
    pub(crate) fn set_virtual_size(&self, size: u64) -> Result<(), ImageError> {
        self.check_fits(size)?;
        if self.virtual_size.set(size).is_err() {
            return Ok(());
        }
        if let Ok(mut head) = self.head.lock() {
            head.bytes.truncate(HOLD.min(size) as usize);
        }
        let tail_start = (size.saturating_sub(HOLD) / ALIGN * ALIGN).max(HOLD);
        if tail_start < size {
            if self.target.kind() == TargetKind::BlockDevice {
                self.target
                    .zero(tail_start, size - tail_start)
                    .map_err(|err| self.io("zeroing the image's end", err))?;
            }
            if let Ok(mut tail) = self.tail.lock() {
                *tail = Some(Held::new(tail_start, size));
            }
        }
        Ok(())
    }

    /// Writes guest bytes.
    pub(crate) fn write(&self, guest: u64, data: &[u8]) -> Result<(), ImageError> {
        let end = guest + data.len() as u64;
        let limit = self.virtual_size().unwrap_or(self.limit);
        if end > limit {
            return Err(Refusal::TooLarge {
                needed: end,
                available: limit,
            }
            .into());
        }
        let mut middle_start = guest;
        let mut middle_end = end;
        if guest < HOLD {
            if let Ok(mut head) = self.head.lock() {
                head.absorb(guest, data);
            }
            middle_start = HOLD.min(end);
        }
        if let Ok(mut tail) = self.tail.lock()
            && let Some(tail) = tail.as_mut()
            && end > tail.start
        {
            tail.absorb(guest, data);
            middle_end = middle_end.min(tail.start).max(middle_start);
        }
        if middle_start < middle_end {
            let slice = &data[(middle_start - guest) as usize..(middle_end - guest) as usize];
            self.write_data(middle_start, slice)?;
        }
        Ok(())
    }

    /// Guest bytes that read as zeros.
    pub(crate) fn zero(&self, guest: u64, len: u64) -> Result<(), ImageError> {
        let end = guest + len;
        let start = guest.max(HOLD);
        let tail_start = self
            .tail
            .lock()
            .ok()
            .and_then(|tail| tail.as_ref().map(|tail| tail.start))
            .unwrap_or(u64::MAX);
        let end = end.min(tail_start);
        if start < end {
            self.zero_range(start, end - start)?;
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        if self.skip_zeros {
            self.skipped.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        self.target
            .zero(offset, len)
            .map_err(|err| self.io("zeroing", err))?;
        self.zeroed.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Writes data, treating all-zero 4 KiB blocks (at absolute 4 KiB boundaries) as zero
    /// ranges.
    fn write_data(&self, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        let min_zero_run = if self.skip_zeros {
            ALIGN
        } else {
            MIN_ZEROED_RUN
        };
        let end = offset + data.len() as u64;
        let mut at = offset;
        let mut data_start = offset;
        while at < end {
            let block_end = ((at / ALIGN + 1) * ALIGN).min(end);
            if !is_zero(&data[(at - offset) as usize..(block_end - offset) as usize]) {
                at = block_end;
                continue;
            }
            // A zero run: find where it ends.
            let zero_start = at;
            at = block_end;
            while at < end {
                let next = (at + ALIGN).min(end);
                if !is_zero(&data[(at - offset) as usize..(next - offset) as usize]) {
                    break;
                }
                at = next;
            }
            if at - zero_start >= min_zero_run || (zero_start == offset && at == end) {
                self.emit_data(
                    data_start,
                    &data[(data_start - offset) as usize..(zero_start - offset) as usize],
                )?;
                self.zero_range(zero_start, at - zero_start)?;
                data_start = at;
            }
        }
        self.emit_data(data_start, &data[(data_start - offset) as usize..])
    }

    fn emit_data(&self, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        if data.is_empty() {
            return Ok(());
        }
        self.target
            .write_at(offset, data)
            .map_err(|err| self.io("write", err))?;
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.progress
            .written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// After verification: writes the held-back end, then the held-back start, flushing
    /// before and after so the boot sector is the last thing to reach the disk.
    pub(crate) fn commit(&self) -> Result<(), ImageError> {
        let size = self
            .virtual_size()
            .ok_or_else(|| ImageError::Internal("commit before the size was known".into()))?;
        let tail = self.tail.lock().ok().and_then(|mut tail| tail.take());
        if let Some(tail) = tail {
            self.write_data(tail.start, &tail.bytes)?;
        }
        self.target.sync().map_err(|err| self.io("fsync", err))?;
        let head = self
            .head
            .lock()
            .map(|mut head| std::mem::take(&mut head.bytes))
            .unwrap_or_default();
        self.write_data(0, &head)?;
        self.target
            .set_len(size)
            .map_err(|err| self.io("truncate", err))?;
        self.target.sync().map_err(|err| self.io("fsync", err))
    }

    /// After a failure: zeroes the first and last MiB of the image and of the device, so no
    /// firmware finds a partition table or boot code.
    pub(crate) fn wipe(&self) -> Result<(), TargetError> {
        let io = |err| self.target.error("wipe", err);
        let mut ranges = vec![(0, HOLD)];
        if let Some(size) = self.virtual_size() {
            ranges.push((size.saturating_sub(HOLD), size));
        }
        if let Some(capacity) = self.target.capacity() {
            ranges.push((capacity.saturating_sub(HOLD) / ALIGN * ALIGN, capacity));
        }
        let extent = self
            .target
            .capacity()
            .or_else(|| self.virtual_size())
            .unwrap_or(HOLD);
        for (start, end) in ranges {
            let end = end.min(extent);
            if start < end {
                self.target.zero(start, end - start).map_err(io)?;
            }
        }
        self.target.sync().map_err(io)
    }
}

/// Whether `bytes` are all zero (compared with a zero block through `memcmp`, which is
/// vectorised).
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    static ZERO_BLOCK: [u8; ALIGN as usize] = [0; ALIGN as usize];
    bytes
        .chunks(ALIGN as usize)
        .all(|chunk| chunk == &ZERO_BLOCK[..chunk.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 10000]));
        let mut data = vec![0; 10000];
        data[9999] = 1;
        assert!(!is_zero(&data));
        assert!(is_zero(&[]));
    }

    #[test]
    fn held_regions_absorb_their_part() {
        let mut held = Held::new(100, 200);
        held.absorb(50, &[1; 100]);
        assert_eq!(&held.bytes[..50], &[1; 50]);
        assert_eq!(held.bytes[50], 0);
        held.absorb(190, &[2; 100]);
        assert_eq!(&held.bytes[90..], &[2; 10]);
    }
}
