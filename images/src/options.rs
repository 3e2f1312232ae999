//! What callers pass in: the source, the checksum, options for writing and for HTTP.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::checksum::ChecksumAlgorithm;
use crate::error::{ImageError, redact_url};
use crate::format::DeclaredFormat;
use crate::progress::Progress;

/// Where an image (or a checksum file) comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An `http://` or `https://` URL.
    Http(url::Url),
    /// A local regular file.
    File(PathBuf),
}

impl ImageSource {
    /// Parses an `http(s)://` URL, a `file://` URL or a local path.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidSource {
            input: redact_input(input),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(invalid("empty"));
        }
        match input.split_once("://") {
            Some((scheme, _)) => {
                let url = url::Url::parse(input).map_err(|err| invalid(&err.to_string()))?;
                match scheme.to_ascii_lowercase().as_str() {
                    "http" | "https" => {
                        if url.host_str().is_none_or(str::is_empty) {
                            return Err(invalid("the URL has no host"));
                        }
                        Ok(Self::Http(url))
                    }
                    "file" => url
                        .to_file_path()
                        .map(Self::File)
                        .map_err(|()| invalid("not a local file URL")),
                    other => Err(invalid(&format!(
                        "unsupported scheme {other:?} (use http, https, file or a path)"
                    ))),
                }
            }
            None => Ok(Self::File(PathBuf::from(input))),
        }
    }

    /// The image's file name (the last path segment), used to find it in checksum files.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Self::Http(url) => url
                .path_segments()?
                .next_back()
                .filter(|name| !name.is_empty())
                .map(|name| {
                    percent_encoding::percent_decode_str(name)
                        .decode_utf8_lossy()
                        .into_owned()
                }),
            Self::File(path) => path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
        }
    }
}

impl FromStr for ImageSource {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Shows URLs without credentials or query strings.
impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(url) => f.write_str(&redact_url(url)),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(_) => write!(f, "Http({self})"),
            Self::File(path) => write!(f, "File({path:?})"),
        }
    }
}

fn redact_input(input: &str) -> String {
    match url::Url::parse(input) {
        Ok(url) => redact_url(&url),
        Err(_) if input.contains('@') || input.contains('?') => "<redacted>".to_owned(),
        Err(_) => input.to_owned(),
    }
}

/// The expected checksum: a hex digest or the location of a checksum file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The digest or where to find it.
    pub value: ChecksumValue,
    /// The algorithm; `None` picks it from the digest's length (or a BSD-style line).
    pub algorithm: Option<ChecksumAlgorithm>,
}

/// Where the expected digest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumValue {
    /// The digest in hex.
    Hex(String),
    /// A GNU (`sha256sum`) or BSD (`SHA256 (name) = …`) checksum file listing the image by
    /// its file name.
    File(ImageSource),
}

impl Checksum {
    /// Interprets `value` as a hex digest if it is one, else as a URL or path of a checksum
    /// file.
    pub fn parse(value: &str, algorithm: Option<ChecksumAlgorithm>) -> Result<Self, ImageError> {
        let value = value.trim();
        let is_hex = !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
        let value = if is_hex {
            ChecksumValue::Hex(value.to_owned())
        } else {
            ChecksumValue::File(ImageSource::parse(value)?)
        };
        Ok(Self { value, algorithm })
    }
}

/// What to do with guest ranges that read as zeros, on block devices. (Regular files are
/// truncated first and keep such ranges as holes.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZeroPolicy {
    /// Zero them on the device (`fallocate(FALLOC_FL_ZERO_RANGE)`, the kernel's BLKZEROOUT
    /// path: WRITE ZEROES/unmap where the device offers it, written zeros otherwise).
    #[default]
    WriteZeroes,
    /// Skip them: the device is known to read zeros already (it was wiped or discarded with
    /// zeroing by the caller, e.g. during cleaning).
    AssumeZeroed,
}

/// How to fetch over HTTP.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Time allowed to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Longest silence allowed while reading a response.
    pub read_timeout: Duration,
    /// Retries after a failed request or an interrupted body (resuming with Range where the
    /// server supports it).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one (at most 30 s).
    pub retry_backoff: Duration,
    /// Extra trusted CA certificates (PEM) on top of the system's.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            retries: 5,
            retry_backoff: Duration::from_secs(1),
            extra_root_certificates: Vec::new(),
        }
    }
}

/// Receives [`Progress`] updates (a few per second and at every phase change).
pub type ProgressCallback = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options for [`write_image`](crate::write_image). Start from `WriteOptions::default()` and
/// set what you need (`WriteOptions { checksum: Some(..), ..Default::default() }`).
#[derive(Clone)]
pub struct WriteOptions {
    /// The format the image must have (the content is always checked).
    pub format: DeclaredFormat,
    /// The digest the image as published must have. Without one, nothing is verified.
    pub checksum: Option<Checksum>,
    /// What to do with zero ranges on block devices.
    pub zero_policy: ZeroPolicy,
    /// Write with `O_DIRECT` (bypassing the page cache).
    pub direct_io: bool,
    /// The most memory a forward-only qcow2 read may hold for data that arrives before the
    /// tables mapping it, plus the cluster map itself.
    pub parking_limit: u64,
    /// For regular-file targets, the largest image accepted (block devices are limited by
    /// their size). `None`: no limit.
    pub size_limit: Option<u64>,
    /// HTTP settings.
    pub http: HttpOptions,
    /// Progress updates.
    pub progress: Option<ProgressCallback>,
}

/// The default parking limit: 256 MiB.
pub const DEFAULT_PARKING_LIMIT: u64 = 256 << 20;

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            format: DeclaredFormat::Auto,
            checksum: None,
            zero_policy: ZeroPolicy::WriteZeroes,
            direct_io: false,
            parking_limit: DEFAULT_PARKING_LIMIT,
            size_limit: None,
            http: HttpOptions::default(),
            progress: None,
        }
    }
}

impl fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteOptions")
            .field("format", &self.format)
            .field("checksum", &self.checksum)
            .field("zero_policy", &self.zero_policy)
            .field("direct_io", &self.direct_io)
            .field("parking_limit", &self.parking_limit)
            .field("size_limit", &self.size_limit)
            .field("http", &self.http)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_urls_and_paths() {
        assert!(matches!(
            ImageSource::parse("https://example.com/a.img").unwrap(),
            ImageSource::Http(_)
        ));
        assert_eq!(
            ImageSource::parse("file:///var/lib/a.img").unwrap(),
            ImageSource::File("/var/lib/a.img".into())
        );
        assert_eq!(
            ImageSource::parse("./a.img").unwrap(),
            ImageSource::File("./a.img".into())
        );
        let err = ImageSource::parse("ftp://user:pw@host/a.img").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(ImageSource::parse("http://").is_err());
        assert!(ImageSource::parse("").is_err());
    }

    #[test]
    fn file_names_are_decoded() {
        let source = ImageSource::parse("http://h/dir/my%20disk.qcow2?sig=x").unwrap();
        assert_eq!(source.file_name().as_deref(), Some("my disk.qcow2"));
        assert_eq!(source.to_string(), "http://h/dir/my%20disk.qcow2?redacted");
    }

    #[test]
    fn checksums_are_hex_or_a_location() {
        let hex = Checksum::parse(&"ab".repeat(32), None).unwrap();
        assert!(matches!(hex.value, ChecksumValue::Hex(_)));
        let url = Checksum::parse("https://h/SHA256SUMS", None).unwrap();
        assert!(matches!(
            url.value,
            ChecksumValue::File(ImageSource::Http(_))
        ));
    }
}
