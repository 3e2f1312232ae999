//! `inspect`: what an image is and whether Rivet would write it, without writing anything.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{ImageError, Refusal};
use crate::format::{Container, DETECTION_LEN, DeclaredFormat, DiskFormat, PartitionTable};
use crate::options::{DEFAULT_PARKING_LIMIT, HttpOptions, ImageSource};
use crate::pipeline::{check_format, read_header, read_tables, stream_error};
use crate::progress::ProgressState;
use crate::qcow2::{ClusterCompression, Header, MapStats, Mapper};
use crate::source::{Fanout, Opened};

/// qcow2 details.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Qcow2Summary {
    pub version: u32,
    pub cluster_size: u64,
    pub cluster_compression: ClusterCompression,
    pub extended_l2: bool,
    pub snapshots: u32,
    pub dirty: bool,
    /// What the L1/L2 tables map, when they were read (random-access sources only).
    pub map: Option<MapStats>,
}

/// The result of [`inspect`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Inspection {
    /// The size as published, when known.
    pub source_size: Option<u64>,
    /// Whether the source allows random reads (a file, or an HTTP server honouring Range).
    pub random_access: bool,
    /// Outer compression.
    pub compression: Container,
    /// The disk format inside.
    pub format: DiskFormat,
    /// For raw images: the partition table at the start.
    pub partition_table: Option<PartitionTable>,
    /// The virtual disk size, when known without decompressing everything.
    pub virtual_size: Option<u64>,
    /// For qcow2 images.
    pub qcow2: Option<Qcow2Summary>,
    /// Whether every L1/L2 table was read and checked (bounds, overlaps). Otherwise the
    /// tables are checked while writing, before the first byte of data lands.
    pub tables_checked: bool,
    /// Whether [`write_image`](crate::write_image) would accept the image.
    pub safe: bool,
    /// Why not, in words.
    pub reason: Option<String>,
    /// Why not, typed.
    #[serde(skip)]
    pub refusal: Option<Refusal>,
}

impl Inspection {
    fn refuse(&mut self, refusal: Refusal) {
        self.safe = false;
        self.reason = Some(refusal.to_string());
        self.refusal = Some(refusal);
    }
}

/// Inspects the image at `source`: detects the outer compression and the disk format from
/// the content, parses a qcow2 header and (when the source allows random reads and the
/// image is not compressed) every L1/L2 table, and gives the safety verdict `write_image`
/// would reach. Reads only what it needs.
pub async fn inspect(source: &ImageSource, http: &HttpOptions) -> Result<Inspection, ImageError> {
    let opened = Opened::open(source, http).await?;
    let container = Container::detect(&opened.head);
    let mut inspection = Inspection {
        source_size: opened.len,
        random_access: opened.random_access,
        compression: container,
        format: DiskFormat::Raw,
        partition_table: None,
        virtual_size: None,
        qcow2: None,
        tables_checked: false,
        safe: true,
        reason: None,
        refusal: None,
    };
    if opened.head.is_empty() {
        inspection.refuse(Refusal::Empty);
        return Ok(inspection);
    }
    if !container.is_supported() {
        inspection.refuse(Refusal::UnsupportedCompression(container));
        return Ok(inspection);
    }
    let mut tables = None;
    let (format, header, head) = if container == Container::None {
        let format = DiskFormat::detect(&opened.head);
        let header = if format == DiskFormat::Qcow2 {
            let header = read_header(&opened).await;
            if let Ok((header, head)) = &header
                && opened.random_access
            {
                tables = Some(check_tables(&opened, header, head).await);
            }
            Some(header)
        } else {
            None
        };
        (format, header, opened.head.clone())
    } else {
        decompressed_head(opened, container).await?
    };
    inspection.format = format;
    if let Err(ImageError::Refused(refusal)) = check_format(DeclaredFormat::Auto, format) {
        inspection.refuse(refusal);
        return Ok(inspection);
    }
    let header = match header {
        None => {
            inspection.partition_table = Some(PartitionTable::detect(&head));
            if container == Container::None {
                inspection.virtual_size = inspection.source_size;
            }
            return Ok(inspection);
        }
        Some(Ok((header, _))) => header,
        Some(Err(ImageError::Refused(refusal))) => {
            inspection.refuse(refusal);
            return Ok(inspection);
        }
        Some(Err(other)) => return Err(other),
    };
    inspection.virtual_size = Some(header.virtual_size);
    inspection.qcow2 = Some(Qcow2Summary {
        version: header.version,
        cluster_size: header.cluster_size(),
        cluster_compression: header.compression,
        extended_l2: header.extended_l2,
        snapshots: header.snapshots,
        dirty: header.dirty,
        map: None,
    });
    match tables {
        Some(Ok(stats)) => {
            inspection.tables_checked = true;
            if let Some(summary) = inspection.qcow2.as_mut() {
                summary.map = Some(stats);
            }
        }
        Some(Err(ImageError::Refused(refusal))) => inspection.refuse(refusal),
        Some(Err(other)) => return Err(other),
        None => {}
    }
    Ok(inspection)
}

async fn check_tables(
    opened: &Opened,
    header: &Header,
    head: &[u8],
) -> Result<MapStats, ImageError> {
    let mut mapper =
        Mapper::new(header, head, opened.len, DEFAULT_PARKING_LIMIT).map_err(stream_error)?;
    let mut actions = Vec::new();
    read_tables(opened, header, &mut mapper, &mut actions).await?;
    Ok(mapper.stats())
}

type DetectedHead = (
    DiskFormat,
    Option<Result<(Header, bytes::Bytes), ImageError>>,
    bytes::Bytes,
);

/// Streams just enough of a compressed image to see what is inside.
async fn decompressed_head(
    opened: Opened,
    container: Container,
) -> Result<DetectedHead, ImageError> {
    let (tx, rx) = mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunks = crate::pipeline::chunks(rx, container, crate::pipeline::buffer_pool())?;
        let head = chunks.peek(DETECTION_LEN)?;
        let format = DiskFormat::detect(&head);
        let header = (format == DiskFormat::Qcow2)
            .then(|| crate::pipeline::streamed_header(&mut chunks, head.clone()));
        Ok::<_, ImageError>((format, header, head))
    });
    let progress = Arc::new(ProgressState::new(None));
    // The reader stops listening once it has seen enough; the pump then ends early.
    let pumped = opened
        .pump(
            Fanout::new(vec![tx]),
            progress,
            crate::pipeline::buffer_pool(),
        )
        .await;
    let detected = reader
        .await
        .map_err(|err| ImageError::Internal(err.to_string()))?;
    match (detected, pumped) {
        (Ok(detected), _) => Ok(detected),
        (Err(_), Err(crate::source::PumpError::Failed(err))) | (Err(err), _) => Err(err),
    }
}
