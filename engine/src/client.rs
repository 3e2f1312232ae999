//! A typed client for the REST API, used by `rivet host`, the tests and the benchmark.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::error::ErrorBody;
use crate::api::hosts::{Timeline, UpdateRequest};
use crate::metrics::Summary;
use crate::runtime::{EnrollRequest, HostView, ListQuery, Page};

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("cannot reach the engine at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Talks to one engine.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for `base` (`https://host:port`) with `token`, trusting only the PEM
    /// certificates in `ca_file` when given (the system's roots otherwise).
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(256);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| ClientError::Setup(format!("{}: {err}", path.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|err| ClientError::Setup(format!("cannot set up HTTPS: {err}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        response
            .json()
            .await
            .map_err(|source| ClientError::Transport {
                url: format!("{}{path}", self.base),
                source,
            })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => ("http".to_owned(), text),
        };
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }

    pub async fn enroll(&self, request: &EnrollRequest) -> Result<HostView, ClientError> {
        self.call(Method::POST, "/v1/hosts", Some(request)).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<HostView>, ClientError> {
        match self
            .call(Method::GET, &format!("/v1/hosts/{name}"), None::<&()>)
            .await
        {
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            other => other.map(Some),
        }
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page, ClientError> {
        let mut path = format!("/v1/hosts?limit={}", query.limit.unwrap_or(1000));
        if let Some(after) = &query.after {
            path.push_str(&format!("&after={after}"));
        }
        if let Some(state) = query.state {
            let state = state.as_str().replace(' ', "%20");
            path.push_str(&format!("&state={state}"));
        }
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Every host, following the pages.
    pub async fn list_all(&self, mut query: ListQuery) -> Result<Vec<HostView>, ClientError> {
        let mut hosts = Vec::new();
        loop {
            let page = self.list(&query).await?;
            hosts.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(hosts),
            }
        }
    }

    /// `POST /v1/hosts/{name}/actions/{action}` with an optional JSON body.
    pub async fn action(
        &self,
        name: &str,
        action: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<HostView, ClientError> {
        let body = body
            .cloned()
            .unwrap_or(serde_json::Value::Object(Default::default()));
        self.call(
            Method::POST,
            &format!("/v1/hosts/{name}/actions/{action}"),
            Some(&body),
        )
        .await
    }

    pub async fn update(
        &self,
        name: &str,
        update: &UpdateRequest,
    ) -> Result<HostView, ClientError> {
        self.call(Method::PATCH, &format!("/v1/hosts/{name}"), Some(update))
            .await
    }

    pub async fn delete(&self, name: &str) -> Result<HostView, ClientError> {
        self.call(Method::DELETE, &format!("/v1/hosts/{name}"), None::<&()>)
            .await
    }

    pub async fn timeline(&self, name: &str, after: u64) -> Result<Timeline, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/hosts/{name}/timeline?after={after}&limit=10000"),
            None::<&()>,
        )
        .await
    }

    pub async fn summary(&self) -> Result<Summary, ClientError> {
        self.call(Method::GET, "/v1/summary", None::<&()>).await
    }

    /// The Prometheus exposition of `/metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = self.send(Method::GET, "/metrics", None::<&()>).await?;
        response
            .text()
            .await
            .map_err(|source| ClientError::Transport {
                url: format!("{}/metrics", self.base),
                source,
            })
    }

    /// The raw event stream (`text/event-stream`), for `host`'s events or everyone's.
    pub async fn events(&self, host: Option<&str>) -> Result<reqwest::Response, ClientError> {
        let path = match host {
            Some(host) => format!("/v1/events?host={host}"),
            None => "/v1/events".to_owned(),
        };
        self.send(Method::GET, &path, None::<&()>).await
    }

    /// `PUT /v1/sim/machines/{machine}/faults` (simulated drivers only).
    pub async fn set_faults(
        &self,
        machine: &str,
        faults: &crate::sim::Faults,
    ) -> Result<(), ClientError> {
        self.send(
            Method::PUT,
            &format!("/v1/sim/machines/{machine}/faults"),
            Some(faults),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/sim/machines/{machine}` (simulated drivers only).
    pub async fn machine(&self, machine: &str) -> Result<crate::sim::MachineView, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/sim/machines/{machine}"),
            None::<&()>,
        )
        .await
    }
}
