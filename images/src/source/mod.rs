//! Image sources: local files and HTTP(S). Each is opened once (learning its length, whether
//! it allows random access, and its first bytes), may serve a few random reads (qcow2
//! tables), and is then pumped once, sequentially, into the pipeline's channels.

mod file;
mod http;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::ImageError;
use crate::format::DETECTION_LEN;
use crate::options::{HttpOptions, ImageSource};
use crate::pool::BufferPool;
use crate::progress::ProgressState;

pub(crate) use http::{HttpSource, fetch_small};

/// Chunks handed to the pipeline are at least this large (except the last), so per-chunk
/// costs (channel hops, hashing calls, syscalls) stay negligible.
pub(crate) const CHUNK: usize = 1 << 20;

/// A message on a pipeline channel.
#[derive(Debug)]
pub(crate) enum Msg {
    Data(Bytes),
    /// The source ended normally. A channel that closes without it was aborted.
    End,
}

/// Sends every chunk to every consumer (the hasher and the writer), in order.
#[derive(Debug)]
pub(crate) struct Fanout {
    senders: Vec<mpsc::Sender<Msg>>,
}

/// A consumer stopped listening (it failed; its error is the one to report).
#[derive(Debug)]
pub(crate) struct Closed;

impl Fanout {
    pub(crate) fn new(senders: Vec<mpsc::Sender<Msg>>) -> Self {
        Self { senders }
    }

    async fn send(&self, chunk: Bytes) -> Result<(), Closed> {
        for sender in &self.senders {
            sender
                .send(Msg::Data(chunk.clone()))
                .await
                .map_err(|_| Closed)?;
        }
        Ok(())
    }

    fn blocking_send(&self, chunk: Bytes) -> Result<(), Closed> {
        for sender in &self.senders {
            sender
                .blocking_send(Msg::Data(chunk.clone()))
                .map_err(|_| Closed)?;
        }
        Ok(())
    }

    async fn end(&self) -> Result<(), Closed> {
        for sender in &self.senders {
            sender.send(Msg::End).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    fn blocking_end(&self) -> Result<(), Closed> {
        for sender in &self.senders {
            sender.blocking_send(Msg::End).map_err(|_| Closed)?;
        }
        Ok(())
    }
}

/// Why pumping stopped early.
#[derive(Debug)]
pub(crate) enum PumpError {
    /// A consumer stopped.
    Closed,
    /// Reading failed.
    Failed(ImageError),
}

impl From<Closed> for PumpError {
    fn from(_: Closed) -> Self {
        Self::Closed
    }
}

impl From<ImageError> for PumpError {
    fn from(err: ImageError) -> Self {
        Self::Failed(err)
    }
}

impl From<crate::error::SourceError> for PumpError {
    fn from(err: crate::error::SourceError) -> Self {
        Self::Failed(err.into())
    }
}

/// Joins small network reads into chunks of at least [`CHUNK`] / 2 bytes (never more than
/// [`CHUNK`], so pooled buffers never grow).
#[derive(Debug)]
struct Coalescer {
    pool: BufferPool,
    pending: Vec<u8>,
}

impl Coalescer {
    fn new(pool: BufferPool) -> Self {
        Self {
            pool,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, bytes: Bytes) -> Option<Bytes> {
        if self.pending.is_empty() && bytes.len() >= CHUNK / 2 {
            return Some(bytes);
        }
        if self.pending.capacity() == 0 {
            self.pending = self.pool.take();
        }
        self.pending.extend_from_slice(&bytes);
        (self.pending.len() >= CHUNK / 2)
            .then(|| self.flush())
            .flatten()
    }

    fn flush(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pool.freeze(std::mem::take(&mut self.pending)))
    }
}

/// An opened source.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The published length, when known.
    pub(crate) len: Option<u64>,
    /// Whether [`Opened::read_at`] works (a file, or a server honouring Range).
    pub(crate) random_access: bool,
    /// The first bytes (up to [`DETECTION_LEN`]; fewer only if the image is shorter).
    pub(crate) head: Bytes,
    reader: Reader,
}

#[derive(Debug)]
enum Reader {
    File(file::FileSource),
    Http(Box<HttpSource>),
}

impl Opened {
    pub(crate) async fn open(source: &ImageSource, http: &HttpOptions) -> Result<Self, ImageError> {
        match source {
            ImageSource::File(path) => {
                let (file, head) = file::FileSource::open(path).await?;
                Ok(Self {
                    len: Some(file.len()),
                    random_access: true,
                    head,
                    reader: Reader::File(file),
                })
            }
            ImageSource::Http(url) => {
                let (http, head) = HttpSource::open(url, http).await?;
                Ok(Self {
                    len: http.len(),
                    random_access: http.supports_ranges(),
                    head,
                    reader: Reader::Http(Box::new(http)),
                })
            }
        }
    }

    /// Reads `len` bytes at `offset` (only when `random_access`). Short only at the end.
    pub(crate) async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, ImageError> {
        match &self.reader {
            Reader::File(file) => file.read_at(offset, len).await,
            Reader::Http(http) => http.read_range(offset, len).await,
        }
    }

    /// The identity of a local source, to refuse writing an image onto itself.
    pub(crate) fn local_identity(&self) -> Option<(u64, u64)> {
        match &self.reader {
            Reader::File(file) => Some(file.identity()),
            Reader::Http(_) => None,
        }
    }

    /// Streams the whole image, from its first byte, into `fanout`.
    pub(crate) async fn pump(
        self,
        fanout: Fanout,
        progress: Arc<ProgressState>,
        pool: BufferPool,
    ) -> Result<u64, PumpError> {
        match self.reader {
            Reader::File(file) => file.pump(fanout, progress, pool).await,
            Reader::Http(http) => http.pump(fanout, progress, pool).await,
        }
    }
}

/// The head to keep from a prefix that may be longer than needed.
fn head_of(bytes: &Bytes) -> Bytes {
    bytes.slice(..bytes.len().min(DETECTION_LEN))
}
