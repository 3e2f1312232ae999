//! HTTP(S) sources: a ranged probe to learn the length and Range support, ranged reads for
//! qcow2 tables, and one sequential GET that resumes with `Range` (guarded by `If-Range`)
//! when the connection drops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_RANGE, ETAG, HeaderMap, HeaderValue, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{Client, Response, StatusCode};
use url::Url;

use super::{Coalescer, Fanout, PumpError, head_of};
use crate::error::{ImageError, SourceError, redact_url};
use crate::format::DETECTION_LEN;
use crate::options::HttpOptions;
use crate::pool::BufferPool;
use crate::progress::ProgressState;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The outcome of one attempt.
enum Attempt {
    /// Worth retrying (connection trouble, timeouts, 5xx, 408, 429).
    Retry(String),
    /// Retrying cannot help.
    Fatal(ImageError),
}

impl From<ImageError> for Attempt {
    fn from(err: ImageError) -> Self {
        Self::Fatal(err)
    }
}

/// A response being continued after the probe (the server ignored Range).
#[derive(Debug)]
struct Continuing {
    response: Response,
    prefix: Bytes,
}

#[derive(Debug)]
pub(crate) struct HttpSource {
    client: Client,
    url: Url,
    shown: String,
    len: Option<u64>,
    ranges: bool,
    /// A strong ETag or Last-Modified date for `If-Range`, so a resumed or ranged read can
    /// never splice two versions of the file.
    validator: Option<HeaderValue>,
    options: HttpOptions,
    continuing: Mutex<Option<Continuing>>,
}

pub(crate) fn client(options: &HttpOptions) -> Result<Client, SourceError> {
    let mut builder = Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .user_agent(concat!("rivet-images/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(10));
    for pem in &options.extra_root_certificates {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|err| SourceError::Client(format!("bad CA certificate: {err}")))?;
        builder = builder.tls_certs_merge(certificates);
    }
    builder
        .build()
        // The causes matter here: "builder error" alone does not say that, for example,
        // the system has no CA certificates for the platform verifier to load.
        .map_err(|err| SourceError::Client(describe(err)))
}

/// Describes a reqwest error without its URL (which may carry credentials).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Whether a request failed in the TLS handshake (certificate trouble): not worth retrying.
fn is_tls_error(err: &reqwest::Error) -> bool {
    std::error::Error::source(err).is_some_and(contains_tls_error)
}

fn contains_tls_error(err: &(dyn std::error::Error + 'static)) -> bool {
    if err.is::<rustls::Error>() {
        return true;
    }
    // TLS errors surface inside (nested) io::Errors, whose `source()` skips what they wrap.
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && contains_tls_error(inner)
    {
        return true;
    }
    err.source().is_some_and(contains_tls_error)
}

fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

fn validator(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(ETAG)
        .filter(|etag| !etag.as_bytes().starts_with(b"W/"))
        .or_else(|| headers.get(LAST_MODIFIED))
        .cloned()
}

impl HttpSource {
    pub(crate) async fn open(
        url: &Url,
        options: &HttpOptions,
    ) -> Result<(Self, Bytes), ImageError> {
        let client = client(options)?;
        let mut source = Self {
            client,
            url: url.clone(),
            shown: redact_url(url),
            len: None,
            ranges: false,
            validator: None,
            options: options.clone(),
            continuing: Mutex::new(None),
        };
        let head = source.retrying(|source| Box::pin(source.probe())).await?;
        let (head, update) = head;
        source.len = update.len;
        source.ranges = update.ranges;
        source.validator = update.validator;
        if let Some(continuing) = update.continuing
            && let Ok(mut slot) = source.continuing.lock()
        {
            *slot = Some(continuing);
        }
        tracing::debug!(url = %source.shown, len = ?source.len, ranges = source.ranges, "opened HTTP source");
        Ok((source, head))
    }

    pub(crate) fn len(&self) -> Option<u64> {
        self.len
    }

    pub(crate) fn supports_ranges(&self) -> bool {
        self.ranges
    }

    async fn send(&self, range: Option<String>, if_range: bool) -> Result<Response, Attempt> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(ACCEPT_ENCODING, "identity");
        if let Some(range) = range {
            request = request.header(RANGE, range);
            if if_range && let Some(validator) = &self.validator {
                request = request.header(IF_RANGE, validator.clone());
            }
        }
        let response = request.send().await.map_err(|err| {
            if is_tls_error(&err) {
                Attempt::Fatal(
                    SourceError::Tls {
                        url: self.shown.clone(),
                        message: describe(err),
                    }
                    .into(),
                )
            } else {
                Attempt::Retry(describe(err))
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(Attempt::Retry(format!("HTTP {status}")));
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(response);
        }
        Err(Attempt::Fatal(
            SourceError::Status {
                url: self.shown.clone(),
                status: status.as_u16(),
            }
            .into(),
        ))
    }

    fn inconsistent(&self, reason: impl Into<String>) -> ImageError {
        SourceError::Inconsistent {
            url: self.shown.clone(),
            reason: reason.into(),
        }
        .into()
    }

    /// `GET Range: bytes=0-…`: a 206 means random access; a 200 means the server ignores
    /// Range, and its body becomes the sequential stream.
    async fn probe(&self) -> Result<(Bytes, Probe), Attempt> {
        let mut response = self
            .send(Some(format!("bytes=0-{}", DETECTION_LEN - 1)), false)
            .await?;
        let headers = response.headers().clone();
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let (start, _, total) = content_range(&headers)
                    .ok_or_else(|| self.inconsistent("206 without a valid Content-Range"))?;
                if start != 0 {
                    return Err(self
                        .inconsistent("the server returned the wrong range")
                        .into());
                }
                let body = read_body(&mut response, DETECTION_LEN).await?;
                Ok((
                    head_of(&body),
                    Probe {
                        len: total,
                        ranges: true,
                        validator: validator(&headers),
                        continuing: None,
                    },
                ))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Ok((
                Bytes::new(),
                Probe {
                    len: Some(0),
                    ranges: true,
                    validator: None,
                    continuing: None,
                },
            )),
            _ => {
                let len = response.content_length();
                let prefix = read_body(&mut response, DETECTION_LEN).await?;
                Ok((
                    head_of(&prefix),
                    Probe {
                        len,
                        ranges: false,
                        validator: validator(&headers),
                        continuing: Some(Continuing { response, prefix }),
                    },
                ))
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails fatally, or the retries are used up.
    async fn retrying<T>(
        &self,
        mut attempt: impl for<'a> FnMut(
            &'a Self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, Attempt>> + Send + 'a>,
        >,
    ) -> Result<T, ImageError> {
        let mut failures = 0;
        loop {
            match attempt(self).await {
                Ok(value) => return Ok(value),
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(message)) => {
                    self.after_failure(&mut failures, message, None).await?;
                }
            }
        }
    }

    /// Counts a failure: gives up once the retries are used up, otherwise waits (doubling
    /// each time) before the next attempt.
    async fn after_failure(
        &self,
        failures: &mut u32,
        message: String,
        position: Option<u64>,
    ) -> Result<(), ImageError> {
        *failures += 1;
        if *failures > self.options.retries {
            return Err(SourceError::Transfer {
                url: self.shown.clone(),
                attempts: *failures,
                message,
            }
            .into());
        }
        tracing::warn!(url = %self.shown, ?position, attempt = *failures, error = %message, "retrying");
        tokio::time::sleep(self.backoff(*failures)).await;
        Ok(())
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.options
            .retry_backoff
            .saturating_mul(factor)
            .min(MAX_BACKOFF)
    }

    /// Reads `[offset, offset + len)` (clipped to the file) with a ranged GET.
    pub(crate) async fn read_range(&self, offset: u64, len: u64) -> Result<Bytes, ImageError> {
        let wanted = match self.len {
            Some(total) => total.saturating_sub(offset).min(len),
            None => len,
        };
        if wanted == 0 {
            return Ok(Bytes::new());
        }
        self.retrying(|source| {
            Box::pin(async move {
                let mut response = source
                    .send(
                        Some(format!("bytes={offset}-{}", offset + wanted - 1)),
                        true,
                    )
                    .await?;
                if response.status() != StatusCode::PARTIAL_CONTENT {
                    return Err(source
                        .inconsistent("the file changed or stopped honouring Range requests")
                        .into());
                }
                match content_range(response.headers()) {
                    Some((start, _, total)) if start == offset && total == source.len => {}
                    _ => {
                        return Err(source
                            .inconsistent("the server returned the wrong range")
                            .into());
                    }
                }
                let body = read_body(&mut response, wanted as usize).await?;
                if body.len() as u64 != wanted {
                    return Err(Attempt::Retry(format!(
                        "short ranged read ({} of {wanted} bytes)",
                        body.len()
                    )));
                }
                Ok(body)
            })
        })
        .await
    }

    /// A response positioned at byte `position` of the file, plus bytes already read past it.
    async fn resume(&self, position: u64) -> Result<(Response, Option<Bytes>), Attempt> {
        if position > 0 && self.ranges {
            let response = self.send(Some(format!("bytes={position}-")), true).await?;
            match response.status() {
                StatusCode::PARTIAL_CONTENT => {
                    return match content_range(response.headers()) {
                        Some((start, _, total)) if start == position && total == self.len => {
                            Ok((response, None))
                        }
                        _ => Err(self
                            .inconsistent("the server resumed at the wrong offset")
                            .into()),
                    };
                }
                StatusCode::OK if self.validator.is_some() => {
                    return Err(self
                        .inconsistent("the file changed on the server during the download")
                        .into());
                }
                StatusCode::OK => return self.skip(response, position).await,
                _ => {
                    return Err(self
                        .inconsistent(format!("cannot resume: HTTP {}", response.status()))
                        .into());
                }
            }
        }
        let response = self.send(None, false).await?;
        if let (Some(expected), Some(got)) = (self.len, response.content_length())
            && expected != got
        {
            return Err(self
                .inconsistent(format!(
                    "the file changed on the server ({expected} → {got} bytes)"
                ))
                .into());
        }
        if position == 0 {
            return Ok((response, None));
        }
        // No Range support: read and discard what we already have.
        self.skip(response, position).await
    }

    async fn skip(
        &self,
        mut response: Response,
        position: u64,
    ) -> Result<(Response, Option<Bytes>), Attempt> {
        let mut skipped = 0u64;
        while skipped < position {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    let len = bytes.len() as u64;
                    if skipped + len > position {
                        let keep = bytes.slice((position - skipped) as usize..);
                        return Ok((response, Some(keep)));
                    }
                    skipped += len;
                }
                Ok(None) => {
                    return Err(Attempt::Retry(
                        "the body ended before the resume point".into(),
                    ));
                }
                Err(err) => return Err(Attempt::Retry(describe(err))),
            }
        }
        Ok((response, None))
    }

    /// The one sequential pass.
    pub(crate) async fn pump(
        self,
        fanout: Fanout,
        progress: Arc<ProgressState>,
        pool: BufferPool,
    ) -> Result<u64, PumpError> {
        let mut coalescer = Coalescer::new(pool);
        let mut position = 0u64;
        let continuing = self.continuing.lock().ok().and_then(|mut slot| slot.take());
        let mut response = match continuing {
            Some(Continuing { response, prefix }) => {
                position = prefix.len() as u64;
                progress.add_read(position);
                if let Some(chunk) = coalescer.push(prefix) {
                    fanout.send(chunk).await?;
                }
                response
            }
            None => {
                self.retrying(|source| {
                    Box::pin(async move { source.resume(0).await.map(|(response, _)| response) })
                })
                .await?
            }
        };
        let mut failures = 0u32;
        loop {
            let failure = match response.chunk().await {
                Ok(Some(bytes)) => {
                    failures = 0;
                    position += bytes.len() as u64;
                    if self.len.is_some_and(|len| position > len) {
                        return Err(self
                            .inconsistent("the server sent more bytes than announced")
                            .into());
                    }
                    progress.add_read(bytes.len() as u64);
                    if let Some(chunk) = coalescer.push(bytes) {
                        fanout.send(chunk).await?;
                    }
                    continue;
                }
                Ok(None) => match self.len {
                    Some(len) if position < len => {
                        format!("the body ended at byte {position} of {len}")
                    }
                    _ => break,
                },
                Err(err) => describe(err),
            };
            // Resume where the stream broke, as long as retries remain.
            let mut message = failure;
            loop {
                self.after_failure(&mut failures, message, Some(position))
                    .await?;
                match self.resume(position).await {
                    Ok((resumed, leftover)) => {
                        response = resumed;
                        if let Some(bytes) = leftover {
                            position += bytes.len() as u64;
                            progress.add_read(bytes.len() as u64);
                            if let Some(chunk) = coalescer.push(bytes) {
                                fanout.send(chunk).await?;
                            }
                        }
                        break;
                    }
                    Err(Attempt::Fatal(err)) => return Err(err.into()),
                    Err(Attempt::Retry(retry)) => message = retry,
                }
            }
        }
        if let Some(chunk) = coalescer.flush() {
            fanout.send(chunk).await?;
        }
        fanout.end().await?;
        Ok(position)
    }
}

struct Probe {
    len: Option<u64>,
    ranges: bool,
    validator: Option<HeaderValue>,
    continuing: Option<Continuing>,
}

/// Reads a response body up to `limit` bytes (at least; the last chunk may overshoot).
async fn read_body(response: &mut Response, limit: usize) -> Result<Bytes, Attempt> {
    let mut body = BytesMut::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            Ok(None) => break,
            Err(err) => return Err(Attempt::Retry(describe(err))),
        }
    }
    Ok(body.freeze())
}

/// Fetches a small document (a checksum file), at most `limit` bytes.
pub(crate) async fn fetch_small(
    url: &Url,
    options: &HttpOptions,
    limit: u64,
) -> Result<Bytes, ImageError> {
    let (source, head) = HttpSource::open(url, options).await?;
    if source.len.is_some_and(|len| len > limit) {
        return Err(crate::checksum::ChecksumError::FileTooLarge { limit }.into());
    }
    if source.len == Some(head.len() as u64) {
        return Ok(head);
    }
    source
        .retrying(|source| {
            Box::pin(async move {
                let mut response = source.send(None, false).await?;
                let body = read_body(&mut response, limit as usize + 1).await?;
                if body.len() as u64 > limit {
                    return Err(Attempt::Fatal(
                        crate::checksum::ChecksumError::FileTooLarge { limit }.into(),
                    ));
                }
                Ok(body)
            })
        })
        .await
}
