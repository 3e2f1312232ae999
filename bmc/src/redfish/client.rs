//! The Redfish transport: authentication, retries, limits.
//!
//! - **Authentication**: a SessionService token when the service advertises one, HTTP Basic
//!   otherwise (or when the session login fails). A 401 in the middle of a session logs in
//!   again once and repeats the request. Rejected credentials are never tried twice (BMCs
//!   lock accounts): a session login refusing them is final, and under Basic a 401 is retried
//!   once only after the same credentials have already worked. The public service root is
//!   read without credentials.
//! - **Retries**: only what is safe. Requests that never reached the BMC (connect errors) are
//!   retried whatever their method; idempotent methods (GET, PATCH, PUT, DELETE) are also
//!   retried on 5xx, timeouts and broken connections; a POST (an action) is retried only on
//!   503 or on a vendor "busy" answer from the quirk profile. Every retry loop is bounded.
//! - **Limits**: bodies larger than the configured maximum are refused; links that would
//!   leave the BMC's origin are refused (a hostile BMC must not redirect our credentials).
//!
//! Secrets (password, session token) are never logged and never appear in errors.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::model::{self, ErrorBody};
use super::retry::{Attempt, BusyRule, RetryPolicy, Tries};
use super::{AuthMode, RedfishOptions};
use crate::{BmcError, Credentials};

/// A string that must not be printed.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
enum Auth {
    Basic,
    Session {
        token: Secret,
        /// The session resource, deleted on logout.
        location: Option<String>,
        /// Where to log in again.
        sessions_path: String,
    },
}

#[derive(Debug)]
struct AuthState {
    auth: Auth,
    /// Bumped on every login, so that concurrent requests that all saw the same 401 log in
    /// only once.
    generation: u64,
}

/// One HTTP answer, body already read (and bounded).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    auth: Mutex<AuthState>,
    retry: RetryPolicy,
    busy_rules: Vec<BusyRule>,
    max_body: usize,
    request_timeout: Duration,
    /// Set once an authenticated request succeeded: only then is a 401 under Basic taken as
    /// a BMC hiccup worth one retry rather than a wrong password (retrying those locks
    /// accounts).
    credentials_proven: AtomicBool,
}

impl Client {
    pub(crate) fn new(
        base_url: &str,
        credentials: Credentials,
        options: &RedfishOptions,
    ) -> Result<Self, BmcError> {
        let base = Url::parse(base_url)
            .map_err(|err| BmcError::Setup(format!("Redfish base URL `{base_url}`: {err}")))?;
        let mut headers = HeaderMap::new();
        headers.insert("OData-Version", HeaderValue::from_static("4.0"));
        headers.insert("Accept", HeaderValue::from_static("application/json"));
        // Compressed bodies break some BMCs' ETags (sushy's experience).
        headers.insert("Accept-Encoding", HeaderValue::from_static("identity"));
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("rivet-bmc/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        if options.disable_certificate_verification {
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else if !options.ca_certificates_pem.is_empty() {
            let mut roots = Vec::new();
            for pem in &options.ca_certificates_pem {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|err| BmcError::Setup(format!("CA certificate: {err}")))?;
                if certs.is_empty() {
                    return Err(BmcError::Setup(
                        "the CA certificate file holds no PEM certificate".into(),
                    ));
                }
                roots.extend(certs);
            }
            builder = builder.tls_certs_only(roots);
        }
        let http = builder
            .build()
            .map_err(|err| BmcError::Setup(format!("HTTP client: {err}")))?;
        Ok(Self {
            http,
            base,
            credentials,
            auth: Mutex::new(AuthState {
                auth: Auth::Basic,
                generation: 0,
            }),
            retry: options.retry.clone(),
            busy_rules: Vec::new(),
            max_body: options.max_response_bytes,
            request_timeout: options.request_timeout,
            credentials_proven: AtomicBool::new(false),
        })
    }

    /// Vendor "busy, try later" answers to retry (from the quirk profile).
    pub(crate) fn set_busy_rules(&mut self, rules: Vec<BusyRule>) {
        self.busy_rules = rules;
    }

    /// Logs in according to `mode`. `sessions_path` comes from the service root.
    pub(crate) async fn login(
        &self,
        mode: AuthMode,
        sessions_path: Option<&str>,
    ) -> Result<(), BmcError> {
        let sessions_path = match (mode, sessions_path) {
            (AuthMode::Basic, _) => return Ok(()),
            (_, Some(path)) => path.to_owned(),
            (AuthMode::Session, None) => {
                return Err(BmcError::Protocol(
                    "session authentication was required but the service advertises no \
                     SessionService"
                        .into(),
                ));
            }
            (AuthMode::Auto, None) => {
                tracing::debug!("no SessionService advertised; using HTTP Basic");
                return Ok(());
            }
        };
        match self.create_session(&sessions_path).await {
            Ok(()) => Ok(()),
            // Credentials the BMC rejects are not tried again over Basic: BMCs lock accounts
            // after a few failures. Only "no usable sessions here" falls back.
            Err(BmcError::Authentication) => Err(BmcError::Authentication),
            Err(err) if mode == AuthMode::Auto && !err.is_transient() => {
                tracing::debug!(error = %err, "session login unavailable; using HTTP Basic");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    async fn create_session(&self, sessions_path: &str) -> Result<(), BmcError> {
        let url = self.url(sessions_path)?;
        let body = serde_json::json!({
            "UserName": self.credentials.username(),
            "Password": self.credentials.password(),
        });
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|err| self.transport_error(&err, sessions_path))?;
        let status = response.status();
        let token = response
            .headers()
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let location = response
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| self.same_origin_path(loc).ok());
        match (status, token) {
            (s, Some(token)) if s.is_success() && !token.is_empty() => {
                let mut state = self.auth.lock().await;
                state.auth = Auth::Session {
                    token: Secret(token),
                    location,
                    sessions_path: sessions_path.to_owned(),
                };
                state.generation += 1;
                tracing::debug!("Redfish session established");
                Ok(())
            }
            (s, _) if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => {
                Err(BmcError::Authentication)
            }
            (s, _) if s.is_success() => Err(BmcError::Protocol(
                "the session login answered without an X-Auth-Token".into(),
            )),
            (s, _) => Err(BmcError::Rejected {
                status: s.as_u16(),
                message: "session login refused".into(),
            }),
        }
    }

    /// Deletes the session, if there is one. Failures only matter to the BMC's session
    /// table, which expires sessions anyway, so they are logged, not returned.
    pub(crate) async fn logout(&self) {
        let mut state = self.auth.lock().await;
        if let Auth::Session {
            token,
            location: Some(location),
            ..
        } = &state.auth
            && let Ok(url) = self.url(location)
        {
            let result = self
                .http
                .delete(url)
                .header("X-Auth-Token", &token.0)
                .send()
                .await;
            if let Err(err) = result {
                tracing::debug!(error = %err, "session logout failed");
            }
        }
        state.auth = Auth::Basic;
    }

    /// Whether requests currently use a session token.
    pub(crate) async fn uses_session(&self) -> bool {
        matches!(self.auth.lock().await.auth, Auth::Session { .. })
    }

    /// GET and decode; any non-2xx answer is an error.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, BmcError> {
        let reply = self.get_reply(path).await?;
        decode(path, &reply.body)
    }

    /// GET and decode, returning the ETag too (header first, then `@odata.etag`).
    pub(crate) async fn get_with_etag<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, Option<String>), BmcError> {
        let reply = self.get_reply(path).await?;
        let etag = reply.header("ETag").map(str::to_owned).or_else(|| {
            serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("@odata.etag")?.as_str().map(str::to_owned))
        });
        Ok((decode(path, &reply.body)?, etag))
    }

    /// GET without credentials: the service root is public by specification, and credentials
    /// are only sent where they are needed. A BMC that wants them anyway gets them.
    pub(crate) async fn get_public<T: DeserializeOwned>(&self, path: &str) -> Result<T, BmcError> {
        let url = self.url(path)?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|err| self.transport_error(&err, path));
        match response {
            Ok(response) if response.status().is_success() => match self.read(response).await {
                Ok(reply) => decode(path, &reply.body),
                Err(_) => self.get(path).await,
            },
            // Unauthorized, or a transport hiccup: the normal path retries and authenticates.
            _ => self.get(path).await,
        }
    }

    pub(crate) async fn get_reply(&self, path: &str) -> Result<Reply, BmcError> {
        let reply = self.send(Method::GET, path, None, None).await?;
        success(reply, &Method::GET, path)
    }

    /// POST a JSON body; non-2xx is an error.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Reply, BmcError> {
        success(
            self.send(Method::POST, path, Some(body), None).await?,
            &Method::POST,
            path,
        )
    }

    /// PATCH a JSON body, with `If-Match` when an ETag is given; non-2xx is an error.
    pub(crate) async fn patch(
        &self,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<Reply, BmcError> {
        success(
            self.send(Method::PATCH, path, Some(body), if_match).await?,
            &Method::PATCH,
            path,
        )
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<Reply, BmcError> {
        success(
            self.send(Method::DELETE, path, None, None).await?,
            &Method::DELETE,
            path,
        )
    }

    /// Sends one request with authentication, retries and the body limit; returns whatever
    /// final status the BMC gave.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, BmcError> {
        let url = self.url(path)?;
        let idempotent = method != Method::POST;
        let mut tries = Tries::default();
        let mut auth_retried = false;
        loop {
            let (auth, generation) = {
                let state = self.auth.lock().await;
                (state.auth.clone(), state.generation)
            };
            let mut request = self.http.request(method.clone(), url.clone());
            request = match &auth {
                Auth::Basic => request.basic_auth(
                    self.credentials.username(),
                    Some(self.credentials.password()),
                ),
                Auth::Session { token, .. } => request.header("X-Auth-Token", &token.0),
            };
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(etag) = if_match {
                request = request.header("If-Match", etag);
            }
            let outcome = match request.send().await {
                Ok(response) => self.read(response).await,
                Err(err) => Err(ReadFailure::Transport(err)),
            };
            let reply = match outcome {
                Ok(reply) => reply,
                Err(ReadFailure::TooLarge) => {
                    return Err(BmcError::Protocol(format!(
                        "the response from {path} is larger than {} bytes",
                        self.max_body
                    )));
                }
                Err(ReadFailure::Transport(err)) => {
                    let error = self.transport_error(&err, path);
                    let attempt = if err.is_connect() {
                        Attempt::NotSent
                    } else {
                        Attempt::Broken
                    };
                    match self
                        .retry
                        .next(&mut tries, idempotent, attempt, &self.busy_rules)
                    {
                        Some(retry) => {
                            tracing::debug!(%method, path, error = %error, delay = ?retry.delay, reason = retry.reason, "retrying");
                            tokio::time::sleep(retry.delay).await;
                            continue;
                        }
                        None => return Err(error),
                    }
                }
            };
            let status = reply.status;
            if status == StatusCode::UNAUTHORIZED {
                let session = matches!(auth, Auth::Session { .. });
                let proven = self.credentials_proven.load(Ordering::Relaxed);
                if auth_retried || !(session || proven) {
                    return Err(BmcError::Authentication);
                }
                auth_retried = true;
                self.reauthenticate(generation).await?;
                continue;
            }
            if status.is_success() {
                self.credentials_proven.store(true, Ordering::Relaxed);
                return Ok(reply);
            }
            let text = String::from_utf8_lossy(&reply.body);
            let attempt = Attempt::Answered {
                status: status.as_u16(),
                body: &text,
                retry_after: retry_after(&reply),
            };
            match self
                .retry
                .next(&mut tries, idempotent, attempt, &self.busy_rules)
            {
                Some(retry) => {
                    tracing::info!(%method, path, status = status.as_u16(), delay = ?retry.delay, reason = retry.reason, "retrying");
                    tokio::time::sleep(retry.delay).await;
                }
                None => return Ok(reply),
            }
        }
    }

    async fn reauthenticate(&self, seen_generation: u64) -> Result<(), BmcError> {
        let sessions_path = {
            let state = self.auth.lock().await;
            if state.generation != seen_generation {
                // Someone else logged in again meanwhile.
                return Ok(());
            }
            match &state.auth {
                Auth::Session { sessions_path, .. } => sessions_path.clone(),
                // Under Basic there is nothing to renew; the request is simply tried again.
                Auth::Basic => return Ok(()),
            }
        };
        tracing::info!("Redfish session expired; logging in again");
        self.create_session(&sessions_path).await
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<Reply, ReadFailure> {
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body as u64)
        {
            return Err(ReadFailure::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(ReadFailure::Transport)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(ReadFailure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn transport_error(&self, err: &reqwest::Error, path: &str) -> BmcError {
        if err.is_timeout() {
            BmcError::Timeout(self.request_timeout)
        } else {
            BmcError::Connection(format!("{path}: {}", describe(err)))
        }
    }

    /// Resolves a path (or same-origin URL) from the BMC against the base URL.
    fn url(&self, path: &str) -> Result<Url, BmcError> {
        let path = self.same_origin_path(path)?;
        self.base
            .join(&path)
            .map_err(|err| BmcError::Protocol(format!("invalid resource path `{path}`: {err}")))
    }

    /// Accepts `/path` or an absolute URL on the BMC's own origin; refuses everything else.
    pub(crate) fn same_origin_path(&self, link: &str) -> Result<String, BmcError> {
        if link.starts_with('/') && !link.starts_with("//") {
            return Ok(link.to_owned());
        }
        let url = Url::parse(link)
            .map_err(|_| BmcError::Protocol(format!("`{link}` is not a resource path")))?;
        if url.origin() != self.base.origin() {
            return Err(BmcError::Protocol(format!(
                "the BMC linked to `{}`, outside its own address; refusing to follow",
                url.origin().ascii_serialization()
            )));
        }
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(path)
    }
}

#[derive(Debug)]
enum ReadFailure {
    Transport(reqwest::Error),
    TooLarge,
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, BmcError> {
    model::decode(body).map_err(|err| BmcError::Protocol(format!("{path}: {err}")))
}

/// Turns a non-2xx reply into `Rejected`, with the request and the BMC's own message and
/// message ids.
fn success(reply: Reply, method: &Method, path: &str) -> Result<Reply, BmcError> {
    if reply.status.is_success() {
        return Ok(reply);
    }
    Err(BmcError::Rejected {
        status: reply.status.as_u16(),
        message: format!("{method} {path}: {}", error_message(&reply)),
    })
}

/// The most useful text in an error body: extended messages with their ids, else the
/// top-level message, else the status reason.
pub(crate) fn error_message(reply: &Reply) -> String {
    let detail = model::decode::<ErrorBody>(&reply.body)
        .ok()
        .and_then(|body| body.error);
    let mut parts = Vec::new();
    if let Some(detail) = &detail {
        let mut ids = Vec::new();
        for info in &detail.extended_info {
            // Bare ids are gathered after the top-level message instead.
            match (&info.message, &info.message_id) {
                (None, Some(id)) => ids.push(id.clone()),
                _ => parts.extend(info.describe()),
            }
        }
        if parts.is_empty() {
            if let Some(message) = &detail.message {
                parts.push(message.clone());
            }
            if ids.is_empty() {
                ids.extend(detail.code.clone());
            }
        }
        if !ids.is_empty() {
            parts.push(format!("({})", ids.join(", ")));
        }
    }
    if parts.is_empty() {
        let text = String::from_utf8_lossy(&reply.body);
        let text = text.trim();
        let printable = !text.is_empty()
            && text.len() <= 200
            && text.chars().all(|c| !c.is_control() || c == '\n');
        parts.push(if printable {
            text.to_owned()
        } else {
            reply
                .status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned()
        });
    }
    parts.join(" ")
}

fn retry_after(reply: &Reply) -> Option<Duration> {
    reply
        .header("Retry-After")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The error with its causes, which reqwest keeps in the source chain. URLs in reqwest
/// errors never carry our credentials: we send them in headers only.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn error_messages_keep_the_bmc_words_and_ids() {
        let sushy = r#"{"error": {"code": "Base.1.0.GeneralError", "message": "Fake system nope was not found",
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError"}]}}"#;
        assert_eq!(
            error_message(&reply(404, sushy)),
            "Fake system nope was not found (Base.1.0.GeneralError)"
        );
        let dell = r#"{"error": {"@Message.ExtendedInfo": [
            {"Message": "Unable to complete the operation.", "MessageId": "IDRAC.2.8.SYS518"},
            {"Message": "Retry later."}]}}"#;
        assert_eq!(
            error_message(&reply(400, dell)),
            "Unable to complete the operation. (IDRAC.2.8.SYS518) Retry later."
        );
        assert_eq!(
            error_message(&reply(502, "<html>bad gateway</html>")),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(&reply(503, "")), "Service Unavailable");
        assert_eq!(
            error_message(&reply(500, "\u{1}binary\u{2}")),
            "Internal Server Error"
        );
    }

    #[test]
    fn only_same_origin_links_are_followed() {
        let client = Client::new(
            "https://10.0.0.5:8443",
            Credentials::new("u", "p"),
            &RedfishOptions::default(),
        )
        .unwrap();
        assert_eq!(
            client.same_origin_path("/redfish/v1/Systems/1").unwrap(),
            "/redfish/v1/Systems/1"
        );
        assert_eq!(
            client
                .same_origin_path("https://10.0.0.5:8443/redfish/v1/TaskService/Tasks/1?x=1")
                .unwrap(),
            "/redfish/v1/TaskService/Tasks/1?x=1"
        );
        for hostile in [
            "http://10.0.0.5:8443/redfish/v1",
            "https://10.0.0.6:8443/redfish/v1",
            "//evil.example/redfish/v1",
            "redfish/v1/relative",
        ] {
            assert!(client.same_origin_path(hostile).is_err(), "{hostile}");
        }
    }
}
