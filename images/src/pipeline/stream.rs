//! The writer's input: chunks from the source channel, optionally through a gzip or zstd
//! decoder, with a cap on how far a decompressed stream may expand.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{ImageError, Refusal};
use crate::format::Container;
use crate::pool::BufferPool;
use crate::source::{CHUNK, Msg};

/// The source stopped without reaching its end (its own error is reported instead).
#[derive(Debug, thiserror::Error)]
#[error("the source stopped before its end")]
pub(crate) struct SourceAborted;

/// Reads the published bytes from the pipeline channel.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Msg>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Msg>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, SourceAborted> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        loop {
            match self.rx.blocking_recv() {
                Some(Msg::Data(bytes)) if bytes.is_empty() => {}
                Some(Msg::Data(bytes)) => return Ok(Some(bytes)),
                Some(Msg::End) => return Ok(None),
                None => return Err(SourceAborted),
            }
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.current.is_empty() {
            match self.next_chunk() {
                Ok(Some(bytes)) => self.current = bytes,
                Ok(None) => {}
                Err(aborted) => return Err(io::Error::other(aborted)),
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        let _ = self.current.split_to(amount.min(self.current.len()));
    }
}

/// A stream of the image's (decompressed) bytes in file order.
pub(crate) struct Chunks {
    inner: Inner,
    pool: BufferPool,
    /// Bytes put back after peeking.
    pushed_back: VecDeque<Bytes>,
    produced: u64,
    cap: Option<u64>,
    container: Container,
}

enum Inner {
    Plain(ChannelReader),
    Decoded(Box<dyn Read + Send>),
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("container", &self.container)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl Chunks {
    pub(crate) fn new(
        reader: ChannelReader,
        container: Container,
        pool: BufferPool,
    ) -> Result<Self, ImageError> {
        let inner = match container {
            Container::None => Inner::Plain(reader),
            Container::Gzip => {
                Inner::Decoded(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
            }
            Container::Zstd => Inner::Decoded(Box::new(
                zstd::stream::read::Decoder::with_buffer(reader)
                    .map_err(|err| ImageError::Corrupt(format!("zstd: {err}")))?,
            )),
            other => return Err(Refusal::UnsupportedCompression(other).into()),
        };
        Ok(Self {
            inner,
            pool,
            pushed_back: VecDeque::new(),
            produced: 0,
            cap: None,
            container,
        })
    }

    /// Refuses to produce more than `cap` decompressed bytes (only for outer compression:
    /// a plain stream is bounded by the source itself).
    pub(crate) fn cap_decompressed(&mut self, cap: u64) {
        if self.container != Container::None {
            self.cap = Some(cap);
        }
    }

    /// Returns bytes to the front of the stream.
    pub(crate) fn push_back(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.produced -= bytes.len() as u64;
            self.pushed_back.push_front(bytes);
        }
    }

    /// The next chunk, `None` at the end.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Bytes>, ImageError> {
        let chunk = match self.pushed_back.pop_front() {
            Some(bytes) => Some(bytes),
            None => match &mut self.inner {
                Inner::Plain(reader) => reader.next_chunk().map_err(|_| aborted())?,
                Inner::Decoded(decoder) => {
                    read_decoded(decoder.as_mut(), self.container, &self.pool)?
                }
            },
        };
        if let Some(bytes) = &chunk {
            self.produced += bytes.len() as u64;
            if let Some(cap) = self.cap
                && self.produced > cap
            {
                return Err(Refusal::ExpandsTooFar { limit: cap }.into());
            }
        }
        Ok(chunk)
    }

    /// Reads at least `len` bytes (fewer only at the end) and pushes them back.
    pub(crate) fn peek(&mut self, len: usize) -> Result<Bytes, ImageError> {
        let mut gathered = Vec::new();
        let mut total = 0;
        while total < len {
            match self.next_chunk()? {
                Some(bytes) => {
                    total += bytes.len();
                    gathered.push(bytes);
                }
                None => break,
            }
        }
        let joined = if gathered.len() == 1 {
            gathered[0].clone()
        } else {
            Bytes::from(gathered.concat())
        };
        for bytes in gathered.into_iter().rev() {
            self.push_back(bytes);
        }
        Ok(joined)
    }
}

fn aborted() -> ImageError {
    ImageError::Internal(SourceAborted.to_string())
}

fn read_decoded(
    decoder: &mut dyn Read,
    container: Container,
    pool: &BufferPool,
) -> Result<Option<Bytes>, ImageError> {
    let mut buf = pool.take();
    match decoder.take(CHUNK as u64).read_to_end(&mut buf) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(pool.freeze(buf))),
        Err(err)
            if err
                .get_ref()
                .is_some_and(|inner| inner.is::<SourceAborted>()) =>
        {
            Err(aborted())
        }
        Err(err) => Err(ImageError::Corrupt(format!("{container} stream: {err}"))),
    }
}
