//! Errors. Every message says what went wrong and, where there is one, what to do.

use std::io;
use std::path::PathBuf;

use crate::checksum::{ChecksumAlgorithm, ChecksumError};
use crate::format::{Container, DeclaredFormat, DiskFormat};
use crate::qcow2::Qcow2Error;

/// Why [`write_image`](crate::write_image) or [`inspect`](crate::inspect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The source string is not a usable URL or path.
    #[error("invalid image source {input:?}: {reason}")]
    InvalidSource { input: String, reason: String },
    /// Reading the image failed (network, HTTP status, file system).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The image is unsafe or in a format Rivet does not write. (The reason is part of the
    /// message, not a separate source, so error chains print it once.)
    #[error("image refused: {0}")]
    Refused(Refusal),
    /// The image's digest differs from the expected one.
    #[error(
        "checksum mismatch: expected {algorithm} {expected}, but the image as downloaded has {actual}"
    )]
    ChecksumMismatch {
        algorithm: ChecksumAlgorithm,
        expected: String,
        actual: String,
    },
    /// The expected checksum could not be determined.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// The image's content is damaged (bad compressed data, truncated file).
    #[error("the image is corrupt: {0}")]
    Corrupt(String),
    /// A forward-only read of this qcow2 needed more memory than allowed.
    #[error(
        "this qcow2 image cannot be streamed forward-only within the {limit}-byte parking limit: \
         its tables come after the data they map (for example after `qemu-img resize`). \
         Serve it from an HTTP server that supports Range requests, rewrite it with \
         `qemu-img convert -O qcow2`, or raise the parking limit"
    )]
    ParkingLimit { limit: u64 },
    /// Writing to the target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Something failed after the target was modified; the target was wiped.
    #[error(
        "writing failed after the target was modified; its partition tables were wiped at both ends so the partial image cannot boot"
    )]
    Wiped {
        #[source]
        cause: Box<ImageError>,
    },
    /// Something failed after the target was modified, and wiping it failed too.
    #[error(
        "writing failed after the target was modified, and wiping it failed too ({wipe}); do not boot from it"
    )]
    WipeFailed {
        #[source]
        cause: Box<ImageError>,
        wipe: io::Error,
    },
    /// An internal task failed unexpectedly (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    /// The underlying error, looking through [`ImageError::Wiped`] and
    /// [`ImageError::WipeFailed`].
    pub fn root(&self) -> &ImageError {
        match self {
            Self::Wiped { cause } | Self::WipeFailed { cause, .. } => cause.root(),
            other => other,
        }
    }

    /// Whether the image failed verification (a checksum mismatch).
    pub fn is_verification_failure(&self) -> bool {
        matches!(self.root(), Self::ChecksumMismatch { .. })
    }

    /// Whether the image was refused as unsafe or unsupported.
    pub fn is_refusal(&self) -> bool {
        matches!(self.root(), Self::Refused(_))
    }

    /// Whether the target was modified before the failure (it is then wiped, or the wipe
    /// failed).
    pub fn target_modified(&self) -> bool {
        matches!(self, Self::Wiped { .. } | Self::WipeFailed { .. })
    }
}

impl From<Refusal> for ImageError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// Why an image is refused. Retrying cannot help: the image itself must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The qcow2 header or tables are unsafe or invalid.
    #[error(transparent)]
    Qcow2(#[from] Qcow2Error),
    /// A format Rivet does not write (ISO, VMDK, VDI…).
    #[error("the image is {format}: {reason}")]
    UnsupportedFormat {
        format: DiskFormat,
        reason: &'static str,
    },
    /// An outer compression Rivet does not decompress.
    #[error("{0}-compressed images are not supported (use gzip or zstd)")]
    UnsupportedCompression(Container),
    /// The content is not what the caller declared.
    #[error("the image was declared {declared} but its content is {detected}")]
    FormatMismatch {
        declared: DeclaredFormat,
        detected: DiskFormat,
    },
    /// The image does not fit on the target.
    #[error("the image needs {needed} bytes but the target holds only {available}")]
    TooLarge { needed: u64, available: u64 },
    /// A compressed stream expanded beyond what the image can need.
    #[error(
        "the decompressed stream exceeds {limit} bytes, more than this image can need; refusing a possible decompression bomb"
    )]
    ExpandsTooFar { limit: u64 },
    /// The image has no content at all.
    #[error("the image is empty")]
    Empty,
}

/// Reading the image failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The server answered with an error status.
    #[error("{url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The transfer failed, after retrying.
    #[error("{url}: {message} (after {attempts} attempts)")]
    Transfer {
        url: String,
        attempts: u32,
        message: String,
    },
    /// TLS failed (an untrusted or invalid certificate); retrying cannot help.
    #[error("{url}: TLS failed: {message}")]
    Tls { url: String, message: String },
    /// The server's answers contradict each other (content changed, bad ranges).
    #[error("{url}: {reason}")]
    Inconsistent { url: String, reason: String },
    /// The HTTP client could not be set up (TLS configuration).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A local source that is not a regular file (device, FIFO, directory).
    #[error("{}: {kind}; only regular files can be image sources", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
}

/// Writing to the target failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The target cannot be opened.
    #[error("cannot open target {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The block device is in use (mounted, or held by another program).
    #[error("target {} is in use (mounted, part of a RAID/LVM, or opened exclusively by another program)", path.display())]
    Busy { path: PathBuf },
    /// The target is neither a regular file nor a block device.
    #[error("target {} is a {kind}; write to a block device or a regular file", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    /// The target is the source itself.
    #[error("target {} is the image source itself", path.display())]
    IsSource { path: PathBuf },
    /// An I/O operation on the target failed.
    #[error("{operation} on target {} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A URL with its credentials and query removed, for messages and logs: image URLs often
/// carry tokens (signed URLs, `user:password@`).
pub(crate) fn redact_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(Some("redacted"));
    }
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_credentials_and_tokens() {
        let url =
            url::Url::parse("https://user:secret@example.com/a/disk.img?sig=TOKEN#x").unwrap();
        let shown = redact_url(&url);
        assert!(!shown.contains("secret") && !shown.contains("TOKEN") && !shown.contains("user"));
        assert!(shown.starts_with("https://example.com/a/disk.img"));
    }

    #[test]
    fn root_looks_through_wiping() {
        let err = ImageError::Wiped {
            cause: Box::new(ImageError::ChecksumMismatch {
                algorithm: ChecksumAlgorithm::Sha256,
                expected: "a".into(),
                actual: "b".into(),
            }),
        };
        assert!(err.is_verification_failure());
        assert!(err.target_modified());
        assert!(!err.is_refusal());
    }
}
