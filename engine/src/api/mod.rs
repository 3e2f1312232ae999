//! The REST API over HTTPS (axum on hyper, rustls with aws-lc-rs): hosts, actions,
//! timelines, server-sent events, `/metrics`, `/healthz` and its own OpenAPI document.
//!
//! Everything except `/healthz` and `/openapi.json` needs the bearer token.

pub mod auth;
pub mod error;
mod events;
pub mod hosts;
pub mod openapi;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Summary;
use crate::runtime::EngineHandle;
use crate::sim::{Faults, MachineView, SimLab};
pub use auth::ApiToken;
use error::ApiError;
pub use tls::TlsMaterial;

/// What every handler sees.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    /// The simulated lab, when the engine runs with simulated drivers.
    pub sim: Option<Arc<SimLab>>,
}

/// The API's routes.
pub fn router(state: AppState, token: ApiToken) -> Router {
    let mut protected = Router::new()
        .route("/v1/hosts", get(hosts::list).post(hosts::enroll))
        .route(
            "/v1/hosts/{name}",
            get(hosts::show).patch(hosts::update).delete(hosts::delete),
        )
        .route("/v1/hosts/{name}/timeline", get(hosts::timeline))
        .route("/v1/hosts/{name}/hardware", get(hosts::hardware))
        .route("/v1/hosts/{name}/actions/{action}", post(hosts::action))
        .route("/v1/summary", get(summary))
        .route("/v1/events", get(events::stream))
        .route("/metrics", get(metrics));
    if state.sim.is_some() {
        protected = protected
            .route("/v1/sim/machines/{name}", get(sim_machine))
            .route("/v1/sim/machines/{name}/faults", put(sim_faults));
    }
    let protected =
        protected.route_layer(middleware::from_fn_with_state(token, auth::require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_document))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such endpoint (see /openapi.json)") })
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.engine.summary().await {
        Ok(summary) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "hosts": summary.total})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "stopped", "hosts": 0})),
        ),
    }
}

async fn openapi_document() -> impl IntoResponse {
    Json(openapi::document())
}

async fn summary(State(state): State<AppState>) -> Result<Json<Summary>, ApiError> {
    Ok(Json(state.engine.summary().await?))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let summary = state.engine.summary().await?;
    let text = state.engine.metrics().render(&summary);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

fn lab(state: &AppState) -> Result<&Arc<SimLab>, ApiError> {
    state
        .sim
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the engine does not run simulated drivers"))
}

async fn sim_machine(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<MachineView>, ApiError> {
    lab(&state)?
        .machine(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no simulated machine `{name}`")))
}

async fn sim_faults(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<Faults>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(faults) = body?;
    lab(&state)?.set_faults(&name, faults);
    Ok(StatusCode::NO_CONTENT)
}

/// Serves `router` over TLS on `listener` until the task is dropped. Handshakes run in
/// their own tasks with a time limit, so a slow client holds up no one.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
}

/// Binds `addr`, for callers that want the port before serving.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests;
