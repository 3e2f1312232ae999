//! An open disk: a block device (opened exclusively, so nothing mounted or assembled on it is
//! touched) or a regular file standing in for one (image files in tests and standalone use).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::ioctl::{self, RangeOp};

/// Why a disk could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DiskError {
    #[error("{path}: does not exist")]
    NotFound { path: PathBuf },
    #[error(
        "{path}: in use (mounted, swapped on, or a member of an active RAID or LVM volume); \
         stop whatever holds it first"
    )]
    Busy { path: PathBuf },
    #[error("{path}: is read-only")]
    ReadOnly { path: PathBuf },
    #[error("{path}: is neither a block device nor a regular file")]
    NotADisk { path: PathBuf },
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Whether the disk may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// An open disk.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    size: u64,
    logical_sector: u32,
    physical_sector: u32,
    block_device: bool,
}

impl Disk {
    /// Opens `path`. Block devices are opened with `O_EXCL`, which the kernel refuses while
    /// the device is mounted or held by md, device-mapper or swap.
    pub fn open(path: &Path, access: Access) -> Result<Self, DiskError> {
        let io_err = |action: &'static str| {
            let path = path.to_owned();
            move |source: io::Error| DiskError::Io {
                path,
                action,
                source,
            }
        };
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => DiskError::NotFound {
                path: path.to_owned(),
            },
            _ => io_err("stat")(source),
        })?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.is_file() {
            return Err(DiskError::NotADisk {
                path: path.to_owned(),
            });
        }
        let mut options = OpenOptions::new();
        options.read(true).write(access == Access::ReadWrite);
        if block_device {
            options.custom_flags(nix::libc::O_EXCL | nix::libc::O_CLOEXEC);
        }
        let file = options
            .open(path)
            .map_err(|source| match source.raw_os_error() {
                Some(nix::libc::EBUSY) => DiskError::Busy {
                    path: path.to_owned(),
                },
                Some(nix::libc::EROFS | nix::libc::EACCES) if access == Access::ReadWrite => {
                    DiskError::ReadOnly {
                        path: path.to_owned(),
                    }
                }
                _ => io_err("open")(source),
            })?;
        let (size, logical_sector, physical_sector) = if block_device {
            let size = ioctl::size_bytes(file.as_fd()).map_err(io_err("read its size"))?;
            let (logical, physical) =
                ioctl::sector_sizes(file.as_fd()).map_err(io_err("read its sector size"))?;
            if access == Access::ReadWrite
                && ioctl::read_only(file.as_fd()).map_err(io_err("read its read-only flag"))?
            {
                return Err(DiskError::ReadOnly {
                    path: path.to_owned(),
                });
            }
            (size, logical, physical)
        } else {
            (meta.len(), 512, 512)
        };
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            logical_sector,
            physical_sector,
            block_device,
        })
    }

    /// Treats a regular file as a disk with `sector_size`-byte sectors (for 4Kn tests and
    /// images built for such disks).
    pub fn with_sector_size(mut self, sector_size: u32) -> Self {
        if !self.block_device {
            self.logical_sector = sector_size;
            self.physical_sector = sector_size;
        }
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn logical_sector_size(&self) -> u32 {
        self.logical_sector
    }

    pub fn physical_sector_size(&self) -> u32 {
        self.physical_sector
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The underlying file, for the image writer.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.io_error("read", e))
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io_error("write", e))
    }

    /// Writes zeroes over `len` bytes at `offset` with ordinary writes (for small regions;
    /// whole-device erasure uses [`Disk::zero_out`]).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_at(offset + done, &zeroes[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Discards a range: `BLKDISCARD` on a block device, a punched hole in a file.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.range_op(RangeOp::Discard, offset, len)
    }

    /// Securely discards a range (`BLKSECDISCARD`); files do not support it.
    pub fn secure_discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.range_op(RangeOp::SecureDiscard, offset, len)
    }

    /// Zeroes a range with the device's write-zeroes support (`BLKZEROOUT`, which the kernel
    /// falls back to writing zero pages for); a zero-filled range in a file.
    pub fn zero_out(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.range_op(RangeOp::ZeroOut, offset, len)
    }

    fn range_op(&self, op: RangeOp, offset: u64, len: u64) -> Result<(), DiskError> {
        let action = match op {
            RangeOp::Discard => "discard",
            RangeOp::SecureDiscard => "secure discard",
            RangeOp::ZeroOut => "zero out",
        };
        if self.block_device {
            return ioctl::range(self.file.as_fd(), op, offset, len)
                .map_err(|e| self.io_error(action, e));
        }
        let (Ok(offset_i), Ok(len_i)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(self.io_error(action, io::Error::from(io::ErrorKind::InvalidInput)));
        };
        use nix::fcntl::{FallocateFlags, fallocate};
        let flags = match op {
            RangeOp::Discard => {
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            }
            RangeOp::ZeroOut => {
                FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            }
            RangeOp::SecureDiscard => {
                return Err(self.io_error(action, io::Error::from(io::ErrorKind::Unsupported)));
            }
        };
        fallocate(&self.file, flags, offset_i, len_i)
            .map_err(|e| self.io_error(action, io::Error::from_raw_os_error(e as i32)))
    }

    /// Flushes written data to stable storage.
    pub fn sync(&self) -> Result<(), DiskError> {
        self.file.sync_all().map_err(|e| self.io_error("sync", e))
    }

    /// Tells the kernel the partition table changed (block devices only).
    pub fn reread_partitions(&self) -> Result<(), DiskError> {
        if !self.block_device {
            return Ok(());
        }
        ioctl::reread_partitions(self.file.as_fd())
            .map_err(|e| self.io_error("re-read the partition table", e))
    }

    /// Drops cached pages so that a read shows what the device now holds (after a discard
    /// or an NVMe format, which bypass the page cache).
    pub fn drop_cache(&self) -> Result<(), DiskError> {
        if !self.block_device {
            return Ok(());
        }
        ioctl::flush_buffers(self.file.as_fd()).map_err(|e| self.io_error("flush buffers", e))
    }
}
