//! Inflating compressed clusters.

use flate2::{Decompress, FlushDecompress, Status};
use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective};

use super::ClusterCompression;

/// A compressed cluster that does not inflate to exactly one cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compressed cluster does not decompress to a full cluster: {reason}")]
pub struct DecompressError {
    reason: String,
}

impl DecompressError {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// A reusable decompressor for one image's compressed clusters (one per thread).
pub struct ClusterDecompressor {
    kind: ClusterCompression,
    deflate: Option<Decompress>,
    zstd: Option<DCtx<'static>>,
}

impl std::fmt::Debug for ClusterDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDecompressor")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ClusterDecompressor {
    /// A decompressor for clusters compressed with `kind`.
    pub fn new(kind: ClusterCompression) -> Self {
        Self {
            kind,
            deflate: None,
            zstd: None,
        }
    }

    /// Inflates `input` (the compressed range from the L2 entry, which may carry trailing
    /// bytes of the next cluster) into exactly `output.len()` bytes — one cluster. Output
    /// beyond one cluster is never produced, so a cluster cannot be a decompression bomb.
    pub fn decompress(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), DecompressError> {
        match self.kind {
            ClusterCompression::Deflate => {
                let inflater = self.deflate.get_or_insert_with(|| Decompress::new(false));
                inflate(inflater, input, output)
            }
            ClusterCompression::Zstd => {
                let dctx =
                    match &mut self.zstd {
                        Some(dctx) => dctx,
                        None => self.zstd.insert(DCtx::try_create().ok_or_else(|| {
                            DecompressError::new("cannot allocate a zstd context")
                        })?),
                    };
                unzstd(dctx, input, output)
            }
        }
    }
}

/// One-shot form of [`ClusterDecompressor::decompress`].
pub fn decompress_cluster(
    kind: ClusterCompression,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), DecompressError> {
    ClusterDecompressor::new(kind).decompress(input, output)
}

fn inflate(
    inflater: &mut Decompress,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), DecompressError> {
    inflater.reset(false);
    loop {
        let consumed = inflater.total_in() as usize;
        let produced = inflater.total_out() as usize;
        if produced == output.len() {
            return Ok(());
        }
        let status = inflater
            .decompress(
                &input[consumed..],
                &mut output[produced..],
                FlushDecompress::Finish,
            )
            .map_err(|err| DecompressError::new(format!("deflate: {err}")))?;
        let progressed =
            inflater.total_in() as usize != consumed || inflater.total_out() as usize != produced;
        if inflater.total_out() as usize == output.len() {
            return Ok(());
        }
        if status == Status::StreamEnd || !progressed {
            return Err(DecompressError::new(format!(
                "deflate stream ended after {} of {} bytes",
                inflater.total_out(),
                output.len()
            )));
        }
    }
}

fn unzstd(dctx: &mut DCtx<'_>, input: &[u8], output: &mut [u8]) -> Result<(), DecompressError> {
    dctx.reset(ResetDirective::SessionOnly)
        .map_err(|code| DecompressError::new(zstd_error(code)))?;
    let wanted = output.len();
    let mut out = OutBuffer::around(output);
    let mut inp = InBuffer::around(input);
    while out.pos() < wanted {
        let (in_before, out_before) = (inp.pos(), out.pos());
        let hint = dctx
            .decompress_stream(&mut out, &mut inp)
            .map_err(|code| DecompressError::new(zstd_error(code)))?;
        if out.pos() == wanted {
            break;
        }
        if hint == 0 || (inp.pos() == in_before && out.pos() == out_before) {
            return Err(DecompressError::new(format!(
                "zstd frame ended after {} of {wanted} bytes",
                out.pos()
            )));
        }
    }
    Ok(())
}

fn zstd_error(code: usize) -> String {
    format!("zstd: {}", zstd::zstd_safe::get_error_name(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn inflates_deflate_with_trailing_bytes() {
        let cluster: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut compressed = deflate_raw(&cluster);
        compressed.extend_from_slice(&[0xAA; 300]);
        let mut out = vec![0; 65536];
        decompress_cluster(ClusterCompression::Deflate, &compressed, &mut out).unwrap();
        assert_eq!(out, cluster);
    }

    #[test]
    fn a_short_stream_is_an_error() {
        let compressed = deflate_raw(&[7; 1000]);
        let mut out = vec![0; 4096];
        assert!(decompress_cluster(ClusterCompression::Deflate, &compressed, &mut out).is_err());
        let compressed = zstd::bulk::compress(&[7; 1000], 3).unwrap();
        assert!(decompress_cluster(ClusterCompression::Zstd, &compressed, &mut out).is_err());
    }

    #[test]
    fn inflates_zstd_and_stops_at_one_cluster() {
        let data: Vec<u8> = (0..131072u32).map(|i| (i / 7) as u8).collect();
        let compressed = zstd::bulk::compress(&data, 3).unwrap();
        let mut out = vec![0; 65536];
        let mut decompressor = ClusterDecompressor::new(ClusterCompression::Zstd);
        decompressor.decompress(&compressed, &mut out).unwrap();
        assert_eq!(out, data[..65536]);
        // reusable
        decompressor.decompress(&compressed, &mut out).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = vec![0; 512];
        for kind in [ClusterCompression::Deflate, ClusterCompression::Zstd] {
            assert!(decompress_cluster(kind, &[0xff; 64], &mut out).is_err());
            assert!(decompress_cluster(kind, &[], &mut out).is_err());
        }
    }
}
