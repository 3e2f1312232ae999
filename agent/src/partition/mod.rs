//! Partition tables (GPT and MBR) as the cleaning and deploy steps need them: where the
//! partitions are, where every copy of the table lives, and the writes that change them.

pub mod gpt;
pub mod mbr;

use std::io;
use std::os::unix::fs::FileExt;

use thiserror::Error;

use crate::disk::Disk;

/// Random access to a disk's bytes; implemented by [`Disk`] and by in-memory images in
/// tests.
pub trait ReadAt {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn size(&self) -> u64;
    fn sector_size(&self) -> u32;
}

impl ReadAt for Disk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file().read_exact_at(buf, offset)
    }

    fn size(&self) -> u64 {
        Disk::size(self)
    }

    fn sector_size(&self) -> u32 {
        self.logical_sector_size()
    }
}

/// An in-memory disk image.
#[derive(Debug, Clone)]
pub struct MemoryDisk {
    pub bytes: Vec<u8>,
    pub sector_size: u32,
}

impl ReadAt for MemoryDisk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let source = self
            .bytes
            .get(start..end)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(source);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn sector_size(&self) -> u32 {
        self.sector_size
    }
}

impl MemoryDisk {
    /// Applies writes (for tests of the table editors).
    pub fn apply(&mut self, writes: &[Write]) {
        for write in writes {
            let start = write.offset as usize;
            self.bytes[start..start + write.bytes.len()].copy_from_slice(&write.bytes);
        }
    }
}

/// Bytes to put at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl Write {
    pub fn new(offset: u64, bytes: Vec<u8>) -> Self {
        Self { offset, bytes }
    }
}

/// Partition-table problems.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("reading the partition table: {0}")]
    Io(#[from] io::Error),
    #[error("{what} does not fit: {detail}")]
    DoesNotFit { what: &'static str, detail: String },
    #[error("the partition table has no free entry")]
    TableFull,
}

/// A partition as cleaning sees it: a byte range and what the table says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
    /// GPT type GUID or MBR type byte, for the protected-partition guard.
    pub kind: PartitionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    Gpt(gpt::Guid),
    Mbr(u8),
}

/// The disk's partitions (GPT, else MBR), empty when it has no table.
pub fn partitions(disk: &dyn ReadAt) -> Result<Vec<PartitionRange>, TableError> {
    let sector = u64::from(disk.sector_size());
    if let Some(table) = gpt::Gpt::read(disk)? {
        return Ok(table
            .entries()
            .into_iter()
            .filter(|e| e.last_lba >= e.first_lba)
            .map(|e| PartitionRange {
                number: e.number,
                offset: e.first_lba * sector,
                len: (e.last_lba - e.first_lba + 1) * sector,
                kind: PartitionKind::Gpt(e.type_guid),
            })
            .collect());
    }
    if let Some(table) = mbr::Mbr::read(disk)? {
        return Ok(table
            .entries
            .into_iter()
            .map(|e| PartitionRange {
                number: e.number,
                offset: e.first_lba * sector,
                len: e.sectors * sector,
                kind: PartitionKind::Mbr(e.kind),
            })
            .collect());
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Disks come from strangers: no byte pattern may make the table or signature
        /// readers panic or read out of bounds.
        #[test]
        fn arbitrary_disk_contents_never_panic(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40_000),
            gpt_at_one in proptest::prelude::any::<bool>(),
            boot_signature in proptest::prelude::any::<bool>(),
        ) {
            // Steer some cases into the interesting paths.
            if gpt_at_one && bytes.len() > 1024 {
                bytes[512..520].copy_from_slice(b"EFI PART");
            }
            if boot_signature && bytes.len() > 512 {
                bytes[510] = 0x55;
                bytes[511] = 0xaa;
            }
            let disk = MemoryDisk { bytes, sector_size: 512 };
            let _ = partitions(&disk);
            let _ = crate::clean::signatures::probe(&disk, 0, disk.size());
            let _ = crate::clean::signatures::probe(&disk, 512, disk.size() / 2);
        }
    }
}
