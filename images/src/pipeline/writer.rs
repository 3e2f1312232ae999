//! The writer thread: raw images in order, qcow2 images through the mapper, compressed
//! clusters inflated on worker threads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;

use super::stream::Chunks;
use crate::error::{ImageError, Refusal};
use crate::format::{DETECTION_LEN, DeclaredFormat, DiskFormat};
use crate::progress::StreamingMode;
use crate::qcow2::{Action, ClusterDecompressor, Header, Mapper, Qcow2Error, StreamError};
use crate::sink::{HOLD, Sink};

/// The largest qcow2 header cluster (2 MiB clusters).
const MAX_HEADER_LEN: usize = 2 << 20;

/// What the writer learned.
#[derive(Debug)]
pub(crate) struct WriterOutcome {
    pub(crate) format: DiskFormat,
    pub(crate) mode: StreamingMode,
    pub(crate) parked_peak: u64,
}

/// What the orchestrator prepared before streaming.
#[derive(Debug)]
pub(crate) enum Plan {
    /// A raw image; the sink has begun.
    Raw,
    /// A qcow2 image whose tables were read first; the sink has begun.
    Qcow2 {
        header: Box<Header>,
        mapper: Box<Mapper>,
        actions: Vec<Action>,
    },
    /// Detect the format inside the stream (compressed, or no random access).
    Detect {
        declared: DeclaredFormat,
        parking_limit: u64,
    },
}

pub(crate) fn stream_error(err: StreamError) -> ImageError {
    match err {
        StreamError::Invalid(err) => Refusal::Qcow2(err).into(),
        StreamError::ParkingLimit { limit } => ImageError::ParkingLimit { limit },
        truncated @ StreamError::Truncated { .. } => ImageError::Corrupt(truncated.to_string()),
        other => ImageError::Internal(other.to_string()),
    }
}

/// Checks a detected format against the declared one and the formats Rivet writes.
pub(crate) fn check_format(
    declared: DeclaredFormat,
    detected: DiskFormat,
) -> Result<(), ImageError> {
    if let Some(reason) = detected.refusal() {
        return Err(Refusal::UnsupportedFormat {
            format: detected,
            reason,
        }
        .into());
    }
    if !declared.accepts(detected) {
        return Err(Refusal::FormatMismatch { declared, detected }.into());
    }
    Ok(())
}

pub(crate) fn run(
    mut chunks: Chunks,
    plan: Plan,
    sink: &Sink,
) -> Result<WriterOutcome, ImageError> {
    match plan {
        Plan::Raw => {
            write_raw(&mut chunks, sink)?;
            Ok(WriterOutcome {
                format: DiskFormat::Raw,
                mode: StreamingMode::Sequential,
                parked_peak: 0,
            })
        }
        Plan::Qcow2 {
            header,
            mapper,
            actions,
        } => {
            let parked_peak = write_qcow2(&mut chunks, sink, &header, *mapper, actions)?;
            Ok(WriterOutcome {
                format: DiskFormat::Qcow2,
                mode: StreamingMode::MetadataFirst,
                parked_peak,
            })
        }
        Plan::Detect {
            declared,
            parking_limit,
        } => {
            let head = chunks.peek(DETECTION_LEN)?;
            if head.is_empty() {
                return Err(Refusal::Empty.into());
            }
            let format = DiskFormat::detect(&head);
            check_format(declared, format)?;
            if format == DiskFormat::Raw {
                sink.begin(None)?;
                write_raw(&mut chunks, sink)?;
                return Ok(WriterOutcome {
                    format,
                    mode: StreamingMode::Sequential,
                    parked_peak: 0,
                });
            }
            let (header, head) = parse_streamed_header(&mut chunks, head)?;
            let mapper = Mapper::new(&header, &head, None, parking_limit).map_err(stream_error)?;
            sink.check_fits(header.virtual_size)?;
            // A qcow2 file is its virtual disk plus tables; twice that (and then some) is
            // more than any real image holds, so a decompressed stream stops there.
            chunks.cap_decompressed(
                header
                    .virtual_size
                    .saturating_mul(2)
                    .saturating_add(64 << 20),
            );
            sink.begin(Some(header.virtual_size))?;
            let parked_peak = write_qcow2(&mut chunks, sink, &header, mapper, Vec::new())?;
            Ok(WriterOutcome {
                format,
                mode: StreamingMode::ForwardOnly,
                parked_peak,
            })
        }
    }
}

pub(crate) fn parse_streamed_header(
    chunks: &mut Chunks,
    mut head: Bytes,
) -> Result<(Header, Bytes), ImageError> {
    loop {
        match Header::parse(&head) {
            Ok(header) => return Ok((header, head)),
            Err(Qcow2Error::Truncated { needed, .. })
                if needed <= MAX_HEADER_LEN && needed > head.len() =>
            {
                let more = chunks.peek(needed)?;
                if more.len() <= head.len() {
                    return Err(Refusal::Qcow2(Qcow2Error::Truncated {
                        needed,
                        available: more.len(),
                    })
                    .into());
                }
                head = more;
            }
            Err(err) => return Err(Refusal::Qcow2(err).into()),
        }
    }
}

/// Writes a raw stream in order. The last `2 × HOLD` bytes are kept back until the stream
/// ends, so that the size (and with it the held-back tail region) is known before any byte
/// of that region would be written.
fn write_raw(chunks: &mut Chunks, sink: &Sink) -> Result<u64, ImageError> {
    let mut delayed: VecDeque<Bytes> = VecDeque::new();
    let mut delayed_len = 0u64;
    let mut offset = 0u64;
    while let Some(chunk) = chunks.next_chunk()? {
        delayed_len += chunk.len() as u64;
        delayed.push_back(chunk);
        while let Some(front) = delayed.front()
            && delayed_len - front.len() as u64 >= 2 * HOLD
        {
            let front = delayed.pop_front().unwrap_or_default();
            sink.write(offset, &front)?;
            offset += front.len() as u64;
            delayed_len -= front.len() as u64;
        }
    }
    let total = offset + delayed_len;
    if total == 0 {
        return Err(Refusal::Empty.into());
    }
    match sink.virtual_size() {
        Some(size) if size != total => {
            return Err(ImageError::Corrupt(format!(
                "the image has {total} bytes but {size} were announced"
            )));
        }
        Some(_) => {}
        None => sink.set_virtual_size(total)?,
    }
    for chunk in delayed {
        sink.write(offset, &chunk)?;
        offset += chunk.len() as u64;
    }
    Ok(total)
}

type Job = (u64, u64, Bytes);

/// Maps a qcow2 stream and writes it. Returns the most memory parked.
fn write_qcow2(
    chunks: &mut Chunks,
    sink: &Sink,
    header: &Header,
    mut mapper: Mapper,
    initial: Vec<Action>,
) -> Result<u64, ImageError> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let failure: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers * 8);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..workers {
            let queue = Arc::clone(&queue);
            let failure = &failure;
            scope.spawn(move || inflate_worker(&queue, sink, header, failure));
        }
        drop(queue);
        let result = feed_all(chunks, sink, &mut mapper, initial, &jobs, &failure);
        drop(jobs);
        result
    })?;
    // The scope has joined every worker.
    if let Some(err) = failure.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(err);
    }
    Ok(mapper.parked_peak())
}

fn feed_all(
    chunks: &mut Chunks,
    sink: &Sink,
    mapper: &mut Mapper,
    initial: Vec<Action>,
    jobs: &mpsc::SyncSender<Job>,
    failure: &Mutex<Option<ImageError>>,
) -> Result<(), ImageError> {
    let worker_failed = || failure.lock().map(|slot| slot.is_some()).unwrap_or(true);
    let mut actions = initial;
    // A worker's failure is reported by the caller after the join.
    if !dispatch(&mut actions, sink, jobs)? {
        return Ok(());
    }
    let mut offset = 0u64;
    while let Some(chunk) = chunks.next_chunk()? {
        mapper
            .feed(offset, &chunk, &mut actions)
            .map_err(stream_error)?;
        offset += chunk.len() as u64;
        if !dispatch(&mut actions, sink, jobs)? || worker_failed() {
            return Ok(());
        }
    }
    mapper.finish(&mut actions).map_err(stream_error)?;
    dispatch(&mut actions, sink, jobs)?;
    Ok(())
}

/// Carries out actions; `Ok(false)` when the workers have stopped (one failed).
fn dispatch(
    actions: &mut Vec<Action>,
    sink: &Sink,
    jobs: &mpsc::SyncSender<Job>,
) -> Result<bool, ImageError> {
    for action in actions.drain(..) {
        match action {
            Action::Write { guest, data } => sink.write(guest, &data)?,
            Action::Zero { guest, len } => sink.zero(guest, len)?,
            Action::Inflate { guest, len, input } => {
                if jobs.send((guest, len, input)).is_err() {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

fn inflate_worker(
    queue: &Mutex<mpsc::Receiver<Job>>,
    sink: &Sink,
    header: &Header,
    failure: &Mutex<Option<ImageError>>,
) {
    let mut decompressor = ClusterDecompressor::new(header.compression);
    let mut cluster = vec![0u8; header.cluster_size() as usize];
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((guest, len, input)) = job else {
            return;
        };
        let result = decompressor
            .decompress(&input, &mut cluster)
            .map_err(|err| {
                ImageError::Corrupt(format!("cluster at guest offset {guest:#x}: {err}"))
            })
            .and_then(|()| sink.write(guest, &cluster[..len as usize]));
        if let Err(err) = result {
            if let Ok(mut slot) = failure.lock() {
                slot.get_or_insert(err);
            }
            return;
        }
    }
}
