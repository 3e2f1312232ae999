//! The HTTP side of network boot: per-host iPXE scripts, and files (kernels, initrds, ISOs,
//! images, iPXE builds) with byte ranges, content types and root confinement.
//!
//! | Route | Serves |
//! |---|---|
//! | `GET /boot/<mac>.ipxe` | the host's script (`52-54-00-…` or `52:54:00:…`), 404 if the table gives it none |
//! | `GET /boot.ipxe` | a script chaining to the per-host one, for DHCP servers Rivet does not run |
//! | `GET /files/<path>` | a file under the HTTP root |
//! | `GET /ipxe/<path>` | an iPXE build (the TFTP root), for UEFI HTTP boot clients |
//!
//! `HEAD` works on every route. [`router`] returns an axum router the engine can nest into
//! its own server; the [`HttpBase`] given to it must then include the nesting prefix.
//!
//! With an [`HttpState::observer`], every request to these routes is reported with its
//! status; the peer's address (for attributing `/files/` and `/ipxe/` fetches to a MAC) is
//! known when the router is served with
//! `into_make_service_with_connect_info::<SocketAddr>()`.

use std::io::SeekFrom;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::confine::{ConfineError, ConfinedDir};
use crate::hosts::HostTableHandle;
use crate::ipxe::{HttpBase, chain_script, script_for};
use crate::mac::MacAddr;
use crate::observe::{HttpFetch, ObserverHandle};

/// What the HTTP routes serve from.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub hosts: HostTableHandle,
    /// Where hosts reach these routes (goes into scripts).
    pub base: HttpBase,
    /// The HTTP root (`/files/`), if any.
    pub files: Option<ConfinedDir>,
    /// The iPXE builds (`/ipxe/`), if any.
    pub ipxe: Option<ConfinedDir>,
    /// Where requests are reported, if anywhere.
    pub observer: Option<ObserverHandle>,
}

/// The boot routes, ready to serve or to nest into another router.
pub fn router(state: HttpState) -> Router {
    let observer = state.observer.clone();
    let routes = Router::new()
        .route("/boot.ipxe", get(generic_script))
        .route("/boot/{name}", get(host_script))
        .route("/files/{*path}", get(files))
        .route("/ipxe/{*path}", get(ipxe_builds))
        .with_state(state);
    match observer {
        Some(observer) => routes.layer(axum::middleware::from_fn(move |request, next| {
            report(observer.clone(), request, next)
        })),
        None => routes,
    }
}

/// Serves `request` and reports it, attributed to the MAC its URL names or its peer's.
async fn report(observer: ObserverHandle, request: Request, next: Next) -> Response {
    let Some((fetch, mac)) = HttpFetch::classify(request.uri().path()) else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .and_then(|ConnectInfo(peer)| match peer.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        });
    let response = next.run(request).await;
    observer.http(fetch, mac, peer, response.status().as_u16());
    response
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn generic_script(State(state): State<HttpState>) -> Response {
    text(StatusCode::OK, chain_script(&state.base))
}

async fn host_script(State(state): State<HttpState>, Path(name): Path<String>) -> Response {
    let Some(mac) = name
        .strip_suffix(".ipxe")
        .and_then(|mac| mac.parse::<MacAddr>().ok())
    else {
        return text(
            StatusCode::NOT_FOUND,
            "expected /boot/<mac>.ipxe, for example /boot/52-54-00-12-34-56.ipxe\n".into(),
        );
    };
    let hosts = state.hosts.hosts();
    match script_for(&hosts, mac, &state.base) {
        Some(script) => {
            tracing::info!(host = %mac, "iPXE script served");
            text(StatusCode::OK, script)
        }
        None => {
            tracing::info!(host = %mac, "iPXE script refused: the host table gives this host no boot");
            text(
                StatusCode::NOT_FOUND,
                format!("#!ipxe\necho Rivet has no boot for {mac}\nexit 1\n"),
            )
        }
    }
}

async fn files(
    State(state): State<HttpState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(state.files.as_ref(), &path, &headers).await
}

async fn ipxe_builds(
    State(state): State<HttpState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(state.ipxe.as_ref(), &path, &headers).await
}

/// A byte range decision for a file of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ranged {
    Full,
    /// `first..=last`.
    Partial(u64, u64),
    Unsatisfiable,
}

/// Interprets a `Range` header (RFC 9110 §14.2). Multiple ranges and syntax errors fall
/// back to the whole file, which the RFC allows.
fn parse_range(value: &str, len: u64) -> Ranged {
    let value = value.trim();
    let Some(spec) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Full;
    };
    // `Some(None)`: absent; `None`: not a number.
    let number = |text: &str| -> Option<Option<u64>> {
        let text = text.trim();
        if text.is_empty() {
            Some(None)
        } else if text.bytes().all(|byte| byte.is_ascii_digit()) {
            text.parse().ok().map(Some)
        } else {
            None
        }
    };
    let (Some(first), Some(last)) = (number(first), number(last)) else {
        return Ranged::Full;
    };
    match (first, last) {
        (None, None) => Ranged::Full,
        (None, Some(suffix)) if suffix == 0 || len == 0 => Ranged::Unsatisfiable,
        (None, Some(suffix)) => Ranged::Partial(len.saturating_sub(suffix), len - 1),
        (Some(first), Some(last)) if last < first => Ranged::Full,
        (Some(first), _) if first >= len => Ranged::Unsatisfiable,
        (Some(first), Some(last)) => Ranged::Partial(first, last.min(len - 1)),
        (Some(first), None) => Ranged::Partial(first, len - 1),
    }
}

/// Content types for what boot servers serve; anything else is a byte stream.
fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("ipxe" | "txt" | "cfg" | "conf" | "sh") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        Some("iso") => "application/x-iso9660-image",
        Some("efi") => "application/efi",
        Some("gz" | "tgz") => "application/gzip",
        Some("zst") => "application/zstd",
        Some("xz") => "application/x-xz",
        Some("bz2") => "application/x-bzip2",
        Some("tar") => "application/x-tar",
        Some("cpio") => "application/x-cpio",
        Some("html") => "text/html; charset=utf-8",
        Some("sha256" | "sha512" | "md5" | "sig" | "asc") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn refusal(err: &ConfineError) -> StatusCode {
    match err {
        ConfineError::NotFound { .. } | ConfineError::NotAFile { .. } => StatusCode::NOT_FOUND,
        ConfineError::Refused { .. }
        | ConfineError::Escapes { .. }
        | ConfineError::Denied { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn serve(dir: Option<&ConfinedDir>, path: &str, headers: &HeaderMap) -> Response {
    let Some(dir) = dir else {
        return text(
            StatusCode::NOT_FOUND,
            "no directory is served here\n".into(),
        );
    };
    let opened = {
        let dir = dir.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || dir.open_file(&path)).await
    };
    let served = match opened {
        Ok(Ok(served)) => served,
        Ok(Err(err)) => {
            let status = refusal(&err);
            tracing::info!(path, %status, error = %err, "HTTP file refused");
            return text(status, format!("{err}\n"));
        }
        Err(err) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"));
        }
    };
    let len = served.len;
    let modified_ns = served
        .modified
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    let inode = served.file.metadata().map(|meta| meta.ino()).unwrap_or(0);
    let etag = format!("\"{inode:x}-{len:x}-{modified_ns:x}\"");

    let header_text = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    if let Some(candidates) = header_text(header::IF_NONE_MATCH)
        && candidates
            .split(',')
            .any(|candidate| candidate.trim() == etag || candidate.trim() == "*")
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut ranged = header_text(header::RANGE)
        .map(|range| parse_range(range, len))
        .unwrap_or(Ranged::Full);
    // If-Range: a resumed download of a file that changed gets the whole new file.
    if header_text(header::IF_RANGE).is_some_and(|tag| tag.trim() != etag) {
        ranged = Ranged::Full;
    }
    let (status, start, count) = match ranged {
        Ranged::Full => (StatusCode::OK, 0, len),
        Ranged::Partial(first, last) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        Ranged::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
    };
    let mut file = tokio::fs::File::from_std(served.file);
    if start > 0
        && let Err(err) = file.seek(SeekFrom::Start(start)).await
    {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"));
    }
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(count), 256 * 1024));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        response_headers.insert(header::CONTENT_RANGE, value);
    }
    tracing::debug!(path, bytes = count, %status, "HTTP file served");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let len = 1000;
        assert_eq!(parse_range("bytes=0-99", len), Ranged::Partial(0, 99));
        assert_eq!(parse_range("bytes=900-", len), Ranged::Partial(900, 999));
        assert_eq!(
            parse_range("bytes=900-5000", len),
            Ranged::Partial(900, 999)
        );
        assert_eq!(parse_range("bytes=-100", len), Ranged::Partial(900, 999));
        assert_eq!(parse_range("bytes=-5000", len), Ranged::Partial(0, 999));
        assert_eq!(parse_range("bytes=1000-", len), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", len), Ranged::Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Ranged::Unsatisfiable);
        // Ignored (whole file): syntax errors, reversed ranges, multiple ranges, other units.
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=-",
            "items=0-1",
            "bytes=+1-2",
            "bytes=1",
        ] {
            assert_eq!(parse_range(ignored, len), Ranged::Full, "{ignored}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("agent/initramfs.cpio.gz"), "application/gzip");
        assert_eq!(content_type("rhcos.ISO"), "application/x-iso9660-image");
        assert_eq!(content_type("snponly.efi"), "application/efi");
        assert_eq!(content_type("vmlinuz"), "application/octet-stream");
        assert_eq!(content_type("image.qcow2"), "application/octet-stream");
        assert_eq!(content_type("boot.ipxe"), "text/plain; charset=utf-8");
    }
}
