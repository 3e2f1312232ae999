//! `write_image`: the orchestration. Async at the edges (HTTP), CPU work on threads:
//!
//! ```text
//!            ┌──────────────► hasher thread (md5/sha256/sha512 of the bytes as published)
//! source ────┤
//! (pump)     └──────────────► writer thread: gzip/zstd → raw or qcow2 mapper → sink → target
//!                                                              └── inflate workers (qcow2 -c)
//! ```
//!
//! The source is read exactly once, in order. Nothing that matters is decided after bytes
//! were written without the target being wiped on failure.

mod stream;
mod writer;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::checksum::ChecksumError;
use crate::checksum::{ExpectedDigest, Hasher, parse_checksum_file};
use crate::error::{ImageError, Refusal};
use crate::format::{Container, DiskFormat};
use crate::options::{ChecksumValue, HttpOptions, ImageSource, WriteOptions};
use crate::pool::BufferPool;
use crate::progress::{Phase, ProgressState, VerifiedDigest, WriteReport};
use crate::qcow2::{Action, Header, Mapper, Qcow2Error};
use crate::sink::Sink;
use crate::source::CHUNK;
use crate::source::{Fanout, Msg, Opened, PumpError, fetch_small};
use crate::target::Target;

pub(crate) use writer::{check_format, parse_streamed_header as streamed_header, stream_error};

/// The writer's view of a source channel, decompressed.
pub(crate) fn chunks(
    rx: mpsc::Receiver<Msg>,
    container: Container,
    pool: BufferPool,
) -> Result<stream::Chunks, ImageError> {
    stream::Chunks::new(stream::ChannelReader::new(rx), container, pool)
}

/// Buffers for one write: chunks in flight on both channels, in the decoder and in the
/// writer, with room to spare.
pub(crate) fn buffer_pool() -> BufferPool {
    BufferPool::new(CHUNK, 4 * CHANNEL_DEPTH)
}

/// Channel depth per consumer, in chunks of about 1 MiB.
const CHANNEL_DEPTH: usize = 4;
/// Checksum files larger than this are refused.
const CHECKSUM_FILE_LIMIT: u64 = 1 << 20;
/// L2 tables closer than this are read with one ranged request.
const METADATA_MERGE_GAP: u64 = 1 << 20;
/// The largest single metadata read.
const METADATA_MAX_READ: u64 = 16 << 20;
/// The largest qcow2 header cluster.
const MAX_HEADER_LEN: u64 = 2 << 20;

/// Writes the image at `source` to `target` (a block device or a regular file) in one pass,
/// verifying it inline. See the crate documentation.
pub async fn write_image(
    source: &ImageSource,
    target: &Path,
    options: &WriteOptions,
) -> Result<WriteReport, ImageError> {
    let progress = Arc::new(ProgressState::new(options.progress.clone()));
    progress.phase(Phase::Opening);
    let expected = resolve_checksum(source, options).await?;
    let opened = Opened::open(source, &options.http).await?;
    progress.set_total(opened.len);
    let target = Target::open(target, options.direct_io, opened.local_identity())?;
    let sink = Arc::new(Sink::new(
        target,
        options.zero_policy,
        options.size_limit,
        Arc::clone(&progress),
    ));
    let result = run(opened, &sink, expected, options, &progress).await;
    match result {
        Ok(report) => Ok(report),
        Err(err) if sink.modified() => {
            tracing::warn!(error = %err, "write failed after the target was modified; wiping it");
            let wiping = Arc::clone(&sink);
            match tokio::task::spawn_blocking(move || wiping.wipe()).await {
                Ok(Ok(())) => Err(ImageError::Wiped {
                    cause: Box::new(err),
                }),
                Ok(Err(wipe)) => Err(ImageError::WipeFailed {
                    cause: Box::new(err),
                    wipe: std::io::Error::other(wipe),
                }),
                Err(join) => Err(ImageError::WipeFailed {
                    cause: Box::new(err),
                    wipe: std::io::Error::other(join.to_string()),
                }),
            }
        }
        Err(err) => {
            if sink.target().created() {
                let _ = std::fs::remove_file(sink.target().path());
            }
            Err(err)
        }
    }
}

async fn run(
    opened: Opened,
    sink: &Arc<Sink>,
    expected: Option<ExpectedDigest>,
    options: &WriteOptions,
    progress: &Arc<ProgressState>,
) -> Result<WriteReport, ImageError> {
    if opened.head.is_empty() {
        return Err(Refusal::Empty.into());
    }
    let container = Container::detect(&opened.head);
    if !container.is_supported() {
        return Err(Refusal::UnsupportedCompression(container).into());
    }
    let detect_in_stream = writer::Plan::Detect {
        declared: options.format,
        parking_limit: options.parking_limit,
    };
    let plan = if container == Container::None {
        // Refuse what the head already shows, before anything is read further.
        let format = DiskFormat::detect(&opened.head);
        check_format(options.format, format)?;
        match (format, opened.random_access) {
            (DiskFormat::Raw, _) => {
                sink.begin(opened.len)?;
                writer::Plan::Raw
            }
            (_, true) => prepare_qcow2(&opened, sink, options.parking_limit, progress).await?,
            (_, false) => detect_in_stream,
        }
    } else {
        detect_in_stream
    };

    let (writer_tx, writer_rx) = mpsc::channel(CHANNEL_DEPTH);
    let mut senders = vec![writer_tx];
    let hasher = expected.as_ref().map(|expected| {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        senders.push(tx);
        let algorithm = expected.algorithm();
        tokio::task::spawn_blocking(move || hash(rx, algorithm))
    });
    let pool = buffer_pool();
    let writer_sink = Arc::clone(sink);
    let writer_pool = pool.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let chunks = chunks(writer_rx, container, writer_pool)?;
        writer::run(chunks, plan, &writer_sink)
    });

    progress.phase(Phase::Streaming);
    let pumped = opened
        .pump(Fanout::new(senders), Arc::clone(progress), pool)
        .await;
    let written = writer
        .await
        .map_err(|err| ImageError::Internal(format!("writer thread: {err}")))?;
    let digest = match hasher {
        Some(hasher) => hasher
            .await
            .map_err(|err| ImageError::Internal(format!("hasher thread: {err}")))?,
        None => None,
    };
    let bytes_read = match (pumped, written) {
        (Err(PumpError::Failed(err)), _) | (_, Err(err)) => return Err(err),
        (Err(PumpError::Closed), Ok(_)) => {
            return Err(ImageError::Internal("the hasher stopped early".into()));
        }
        (Ok(bytes), Ok(outcome)) => (bytes, outcome),
    };
    let (bytes_read, outcome) = bytes_read;

    let verified = match (&expected, digest) {
        (Some(expected), Some(actual)) => {
            if !expected.matches(&actual) {
                return Err(ImageError::ChecksumMismatch {
                    algorithm: expected.algorithm(),
                    expected: expected.hex(),
                    actual: hex::encode(actual),
                });
            }
            Some(VerifiedDigest {
                algorithm: expected.algorithm(),
                hex: expected.hex(),
            })
        }
        (Some(_), None) => return Err(ImageError::Internal("no digest was computed".into())),
        (None, _) => None,
    };

    progress.phase(Phase::Committing);
    let committing = Arc::clone(sink);
    tokio::task::spawn_blocking(move || committing.commit())
        .await
        .map_err(|err| ImageError::Internal(format!("commit: {err}")))??;
    progress.phase(Phase::Done);

    let counts = sink.counts();
    let report = WriteReport {
        format: outcome.format,
        compression: container,
        virtual_size: sink.virtual_size().unwrap_or_default(),
        bytes_read,
        bytes_written: counts.written,
        bytes_zeroed: counts.zeroed,
        bytes_skipped: counts.skipped,
        digest: verified,
        mode: outcome.mode,
        parked_peak: outcome.parked_peak,
        target: sink.target().kind(),
        elapsed: progress.started().elapsed(),
    };
    tracing::debug!(
        format = %report.format,
        compression = %report.compression,
        virtual_size = report.virtual_size,
        bytes_read = report.bytes_read,
        bytes_written = report.bytes_written,
        mode = %report.mode,
        verified = report.digest.is_some(),
        seconds = report.elapsed.as_secs_f64(),
        "image written"
    );
    Ok(report)
}

/// For a qcow2 with random access: reads and vets its tables up front, then begins the sink
/// (the first change to the target).
async fn prepare_qcow2(
    opened: &Opened,
    sink: &Sink,
    parking_limit: u64,
    progress: &ProgressState,
) -> Result<writer::Plan, ImageError> {
    progress.phase(Phase::Metadata);
    let (header, head) = read_header(opened).await?;
    sink.check_fits(header.virtual_size)?;
    let mut mapper =
        Mapper::new(&header, &head, opened.len, parking_limit).map_err(stream_error)?;
    let mut actions = Vec::new();
    read_tables(opened, &header, &mut mapper, &mut actions).await?;
    sink.begin(Some(header.virtual_size))?;
    Ok(writer::Plan::Qcow2 {
        header: Box::new(header),
        mapper: Box::new(mapper),
        actions,
    })
}

/// Parses the qcow2 header from the head, reading more of the first cluster if its
/// extensions need it.
pub(crate) async fn read_header(opened: &Opened) -> Result<(Header, Bytes), ImageError> {
    let mut head = opened.head.clone();
    loop {
        match Header::parse(&head) {
            Ok(header) => return Ok((header, head)),
            Err(Qcow2Error::Truncated { needed, .. })
                if opened.random_access
                    && (needed as u64) <= MAX_HEADER_LEN
                    && needed > head.len()
                    && opened.len.is_none_or(|len| len > head.len() as u64) =>
            {
                head = opened.read_at(0, needed as u64).await?;
            }
            Err(err) => return Err(Refusal::Qcow2(err).into()),
        }
    }
}

/// Reads the L1 table and every L2 table with random reads (adjacent tables in one read).
pub(crate) async fn read_tables(
    opened: &Opened,
    header: &Header,
    mapper: &mut Mapper,
    actions: &mut Vec<Action>,
) -> Result<(), ImageError> {
    if let Some((offset, len)) = mapper.l1_range() {
        let table = opened.read_at(offset, len).await?;
        if (table.len() as u64) < len {
            return Err(ImageError::Corrupt("the L1 table is cut short".into()));
        }
        mapper.provide_l1(&table, actions).map_err(stream_error)?;
    }
    let cluster = header.cluster_size();
    let tables = mapper.unknown_l2_tables();
    let mut index = 0;
    while index < tables.len() {
        let start = tables[index];
        let mut end = start + cluster;
        let mut last = index;
        while let Some(&next) = tables.get(last + 1) {
            if next > end + METADATA_MERGE_GAP || next + cluster - start > METADATA_MAX_READ {
                break;
            }
            end = next + cluster;
            last += 1;
        }
        let bytes = opened.read_at(start, end - start).await?;
        for &table in &tables[index..=last] {
            let from = (table - start) as usize;
            let Some(slice) = bytes.get(from..from + cluster as usize) else {
                return Err(ImageError::Corrupt(format!(
                    "the L2 table at {table:#x} is cut short"
                )));
            };
            mapper
                .provide_l2(table, slice, actions)
                .map_err(stream_error)?;
        }
        index = last + 1;
    }
    Ok(())
}

fn hash(
    mut rx: mpsc::Receiver<Msg>,
    algorithm: crate::checksum::ChecksumAlgorithm,
) -> Option<Vec<u8>> {
    let mut hasher = Hasher::new(algorithm);
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(bytes)) => hasher.update(&bytes),
            Some(Msg::End) => return Some(hasher.finish()),
            None => return None,
        }
    }
}

/// Turns the caller's checksum into an expected digest, fetching a checksum file if needed.
pub(crate) async fn resolve_checksum(
    source: &ImageSource,
    options: &WriteOptions,
) -> Result<Option<ExpectedDigest>, ImageError> {
    let Some(checksum) = &options.checksum else {
        return Ok(None);
    };
    let hex_and_algorithm = match &checksum.value {
        ChecksumValue::Hex(hex) => (hex.clone(), checksum.algorithm),
        ChecksumValue::File(location) => {
            let text = fetch_checksum_file(location, &options.http).await?;
            let text = std::str::from_utf8(&text).map_err(|_| ChecksumError::NotText)?;
            let name = source.file_name().ok_or_else(|| ChecksumError::NotListed {
                file_name: source.to_string(),
            })?;
            let entry = parse_checksum_file(text, &name)?;
            let algorithm = match (checksum.algorithm, entry.algorithm) {
                (Some(requested), Some(found)) if requested != found => {
                    return Err(ChecksumError::AlgorithmConflict { requested, found }.into());
                }
                (Some(requested), _) => Some(requested),
                (None, found) => found,
            };
            (entry.hex, algorithm)
        }
    };
    Ok(Some(ExpectedDigest::from_hex(
        &hex_and_algorithm.0,
        hex_and_algorithm.1,
    )?))
}

async fn fetch_checksum_file(
    location: &ImageSource,
    http: &HttpOptions,
) -> Result<Bytes, ImageError> {
    match location {
        ImageSource::Http(url) => {
            fetch_small(url, http, CHECKSUM_FILE_LIMIT)
                .await
                .map_err(|err| match err {
                    ImageError::Checksum(err) => err.into(),
                    other => ChecksumError::Fetch(other.to_string()).into(),
                })
        }
        ImageSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let file = std::fs::File::open(&path)
                    .map_err(|err| ChecksumError::Fetch(format!("{}: {err}", path.display())))?;
                let mut text = Vec::new();
                file.take(CHECKSUM_FILE_LIMIT + 1)
                    .read_to_end(&mut text)
                    .map_err(|err| ChecksumError::Fetch(format!("{}: {err}", path.display())))?;
                if text.len() as u64 > CHECKSUM_FILE_LIMIT {
                    return Err(ChecksumError::FileTooLarge {
                        limit: CHECKSUM_FILE_LIMIT,
                    }
                    .into());
                }
                Ok(Bytes::from(text))
            })
            .await
            .map_err(|err| ImageError::Internal(err.to_string()))?
        }
    }
}
