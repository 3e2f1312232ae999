//! Targets: block devices and regular files. Positioned writes (`pwrite`), optional
//! `O_DIRECT` with aligned bounce buffers, zeroing with `fallocate`, `fsync`.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::FallocateFlags;

use crate::error::TargetError;
use crate::progress::TargetKind;

/// Alignment of `O_DIRECT` buffers, offsets and lengths. 4096 satisfies every logical block
/// size in use (512 and 4096) and the memory alignment the kernel asks for.
pub(crate) const ALIGN: u64 = 4096;

/// Zeros to write from, aligned so that `O_DIRECT` can use them without a bounce copy.
#[repr(align(4096))]
struct Zeros([u8; ZEROS_LEN]);
const ZEROS_LEN: usize = 1 << 20;
static ZEROS: Zeros = Zeros([0; ZEROS_LEN]);

/// A buffer whose usable part starts at an [`ALIGN`]-aligned address, without `unsafe`: it
/// over-allocates and skips to the first aligned byte.
#[derive(Debug, Default)]
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    fn slice(&mut self, len: usize) -> &mut [u8] {
        if self.raw.len() < len + ALIGN as usize {
            self.raw = vec![0; len + ALIGN as usize];
        }
        let start = self.raw.as_ptr().align_offset(ALIGN as usize);
        &mut self.raw[start..start + len]
    }
}

thread_local! {
    static BOUNCE: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// An opened target.
#[derive(Debug)]
pub(crate) struct Target {
    path: PathBuf,
    file: File,
    kind: TargetKind,
    capacity: Option<u64>,
    direct: bool,
    created: bool,
    /// Serialises read-modify-write of partial blocks under `O_DIRECT`.
    partial: Mutex<()>,
}

fn is_aligned(value: u64) -> bool {
    value.is_multiple_of(ALIGN)
}

impl Target {
    /// Opens `path` without changing it. Block devices are opened exclusively (`O_EXCL`),
    /// which the kernel refuses while a filesystem on them is mounted or another program
    /// holds them. A missing path becomes a new regular file.
    pub(crate) fn open(
        path: &Path,
        direct: bool,
        source: Option<(u64, u64)>,
    ) -> Result<Self, TargetError> {
        let open_error = |source| TargetError::Open {
            path: path.to_path_buf(),
            source,
        };
        let (kind, created) = match std::fs::metadata(path) {
            Ok(meta) => {
                let file_type = meta.file_type();
                if source == Some((meta.dev(), meta.ino())) {
                    return Err(TargetError::IsSource {
                        path: path.to_path_buf(),
                    });
                }
                if file_type.is_block_device() {
                    (TargetKind::BlockDevice, false)
                } else if file_type.is_file() {
                    (TargetKind::File, false)
                } else {
                    let kind = if file_type.is_dir() {
                        "directory"
                    } else if file_type.is_char_device() {
                        "character device"
                    } else {
                        "special file"
                    };
                    return Err(TargetError::Unsupported {
                        path: path.to_path_buf(),
                        kind,
                    });
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => (TargetKind::File, true),
            Err(err) => return Err(open_error(err)),
        };
        let mut flags = 0;
        if direct {
            flags |= libc::O_DIRECT;
        }
        if kind == TargetKind::BlockDevice {
            flags |= libc::O_EXCL;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(created)
            .custom_flags(flags)
            .open(path)
            .map_err(|err| {
                if err.raw_os_error() == Some(libc::EBUSY) {
                    TargetError::Busy {
                        path: path.to_path_buf(),
                    }
                } else {
                    open_error(err)
                }
            })?;
        let capacity = match kind {
            TargetKind::BlockDevice => {
                use std::io::Seek;
                let mut handle = &file;
                Some(handle.seek(io::SeekFrom::End(0)).map_err(open_error)?)
            }
            TargetKind::File => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            kind,
            capacity,
            direct,
            created,
            partial: Mutex::new(()),
        })
    }

    pub(crate) fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The device size; `None` for regular files.
    pub(crate) fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Whether the file did not exist before.
    pub(crate) fn created(&self) -> bool {
        self.created
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn error(&self, operation: &'static str, source: io::Error) -> TargetError {
        TargetError::Io {
            path: self.path.clone(),
            operation,
            source,
        }
    }

    /// Writes `data` at `offset`.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.direct {
            return self.file.write_all_at(data, offset);
        }
        let len = data.len() as u64;
        if is_aligned(offset) && is_aligned(len) {
            if is_aligned(data.as_ptr() as u64) {
                return self.file.write_all_at(data, offset);
            }
            return BOUNCE.with(|bounce| {
                let mut bounce = bounce.borrow_mut();
                let buf = bounce.slice(data.len());
                buf.copy_from_slice(data);
                self.file.write_all_at(buf, offset)
            });
        }
        self.write_partial_blocks(offset, data)
    }

    /// `O_DIRECT` write of a range that starts or ends inside a block: read the edge blocks,
    /// patch, write the whole span.
    fn write_partial_blocks(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let _guard = self
            .partial
            .lock()
            .map_err(|_| io::Error::other("lock poisoned"))?;
        let start = offset / ALIGN * ALIGN;
        let end = (offset + data.len() as u64).div_ceil(ALIGN) * ALIGN;
        let span = (end - start) as usize;
        let mut buf = AlignedBuf::default();
        let buf = buf.slice(span);
        let head = (offset - start) as usize;
        if head != 0 {
            self.read_block(start, &mut buf[..ALIGN as usize])?;
        }
        let tail_block = span - ALIGN as usize;
        if !(head + data.len()).is_multiple_of(ALIGN as usize) && (tail_block > 0 || head == 0) {
            self.read_block(end - ALIGN, &mut buf[tail_block..])?;
        }
        buf[head..head + data.len()].copy_from_slice(data);
        self.file.write_all_at(buf, start)
    }

    fn read_block(&self, offset: u64, block: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < block.len() {
            match self.file.read_at(&mut block[done..], offset + done as u64) {
                Ok(0) => {
                    // Past the end of a file: reads as zeros.
                    block[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeros. On block devices this is
    /// `FALLOC_FL_ZERO_RANGE` (the same kernel path as `BLKZEROOUT`); on files it punches a
    /// hole. Either falls back to writing zeros where the kernel cannot.
    pub(crate) fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let inner_start = offset.div_ceil(ALIGN) * ALIGN;
        let inner_end = end / ALIGN * ALIGN;
        if inner_start >= inner_end {
            return self.write_zeros(offset, len);
        }
        self.write_zeros(offset, inner_start - offset)?;
        let mode = match self.kind {
            TargetKind::BlockDevice => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            TargetKind::File => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        };
        match rustix::fs::fallocate(&self.file, mode, inner_start, inner_end - inner_start) {
            Ok(()) => {}
            Err(err) if err == rustix::io::Errno::OPNOTSUPP || err == rustix::io::Errno::INVAL => {
                self.write_zeros(inner_start, inner_end - inner_start)?;
            }
            Err(err) => return Err(err.into()),
        }
        self.write_zeros(inner_end, end - inner_end)
    }

    fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(ZEROS_LEN as u64) as usize;
            self.write_at(offset, &ZEROS.0[..n])?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Truncates a regular file to `len` (no-op for block devices).
    pub(crate) fn set_len(&self, len: u64) -> io::Result<()> {
        match self.kind {
            TargetKind::File => self.file.set_len(len),
            TargetKind::BlockDevice => Ok(()),
        }
    }

    /// Flushes everything to stable storage.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}
