//! Local files.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{CHUNK, Fanout, PumpError};
use crate::error::{ImageError, SourceError};
use crate::format::DETECTION_LEN;
use crate::pool::BufferPool;
use crate::progress::ProgressState;

#[derive(Debug)]
pub(super) struct FileSource {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    identity: (u64, u64),
}

impl FileSource {
    /// Opens a regular file. Devices, FIFOs and directories are refused: `/dev/zero` as an
    /// "image" would hash forever, and a disk is not an image.
    pub(super) async fn open(path: &Path) -> Result<(Self, Bytes), ImageError> {
        let path = path.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            let io = |source| SourceError::Io {
                path: path.clone(),
                source,
            };
            let file = File::open(&path).map_err(io)?;
            let meta = file.metadata().map_err(io)?;
            let kind = meta.file_type();
            let refused = if kind.is_dir() {
                Some("a directory")
            } else if kind.is_block_device() {
                Some("a block device")
            } else if kind.is_char_device() {
                Some("a character device")
            } else if kind.is_fifo() {
                Some("a FIFO")
            } else if kind.is_socket() {
                Some("a socket")
            } else {
                None
            };
            if let Some(kind) = refused {
                return Err(SourceError::NotAFile { path, kind });
            }
            let mut head = vec![0u8; DETECTION_LEN.min(meta.len() as usize)];
            file.read_exact_at(&mut head, 0).map_err(io)?;
            Ok((
                Self {
                    identity: (meta.dev(), meta.ino()),
                    len: meta.len(),
                    file: Arc::new(file),
                    path,
                },
                Bytes::from(head),
            ))
        })
        .await
        .map_err(|err| ImageError::Internal(err.to_string()))??;
        Ok(opened)
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    pub(super) async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, ImageError> {
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let available = self.len.saturating_sub(offset).min(len) as usize;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; available];
            file.read_exact_at(&mut buf, offset)
                .map_err(|source| SourceError::Io { path, source })?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|err| ImageError::Internal(err.to_string()))?
    }

    /// Reads the file start to end on a blocking thread.
    pub(super) async fn pump(
        self,
        fanout: Fanout,
        progress: Arc<ProgressState>,
        pool: BufferPool,
    ) -> Result<u64, PumpError> {
        let Self {
            path, file, len, ..
        } = self;
        tokio::task::spawn_blocking(move || read_all(&path, &file, len, &fanout, &progress, &pool))
            .await
            .map_err(|err| PumpError::Failed(ImageError::Internal(err.to_string())))?
    }
}

fn read_all(
    path: &Path,
    file: &File,
    len: u64,
    fanout: &Fanout,
    progress: &ProgressState,
    pool: &BufferPool,
) -> Result<u64, PumpError> {
    // A hint for deeper read-ahead on a cold file; failing to give it changes nothing.
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Sequential);
    let mut reader = file;
    let mut total = 0u64;
    loop {
        let mut buf = pool.take();
        // `take` + `read_to_end` reads into uninitialised capacity: no zeroing per chunk.
        let read = (&mut reader)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .map_err(|source| {
                ImageError::from(SourceError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            })?;
        if read == 0 {
            break;
        }
        total += read as u64;
        progress.add_read(read as u64);
        fanout.blocking_send(pool.freeze(buf))?;
    }
    if total != len {
        return Err(PumpError::Failed(
            SourceError::Inconsistent {
                url: path.display().to_string(),
                reason: format!("the file changed size while being read ({len} → {total} bytes)"),
            }
            .into(),
        ));
    }
    fanout.blocking_end()?;
    Ok(total)
}
