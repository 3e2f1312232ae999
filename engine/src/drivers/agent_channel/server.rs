//! The HTTP edge: admission of agents at `GET /v1/agent/connect` and one task per
//! WebSocket moving messages between the socket and the channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use rivet_agent::channel::protocol::{
    AgentMessage, CONNECT_PATH, Hello, MAX_MESSAGE_BYTES, SUBPROTOCOL,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{AgentChannel, Delivery, Inner};
use crate::drivers::{AgentIdentity, AgentProgress, AgentToken};
use crate::lifecycle::{HostId, MacAddr};

pub(super) fn router(channel: AgentChannel) -> Router {
    Router::new()
        .route(CONNECT_PATH, get(connect))
        .with_state(channel)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": status.as_u16(), "message": message}});
    (status, axum::Json(body)).into_response()
}

/// The bearer token of the request, if it has exactly one well-formed one.
fn bearer(headers: &HeaderMap) -> Option<AgentToken> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| AgentToken::new(token.to_owned()))
}

fn identity(headers: &HeaderMap) -> Result<AgentIdentity, String> {
    let hello = Hello::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .map_err(|err| err.to_string())?;
    let macs = hello
        .macs
        .iter()
        .map(|mac| mac.parse::<MacAddr>().map_err(|err| err.to_string()))
        .collect::<Result<_, _>>()?;
    let host = hello
        .host
        .map(|host| host.parse::<HostId>().map_err(|err| err.to_string()))
        .transpose()?;
    Ok(AgentIdentity { host, macs })
}

fn speaks_our_protocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == SUBPROTOCOL)
}

async fn connect(
    State(channel): State<AgentChannel>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let inner = channel.inner.clone();
    let Some(registry) = inner.registry.get().cloned() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the engine is starting");
    };
    let Ok(upgrade) = upgrade else {
        return refuse(StatusCode::UPGRADE_REQUIRED, "this endpoint is a WebSocket");
    };
    if !speaks_our_protocol(&headers) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("the agent must speak the {SUBPROTOCOL} subprotocol"),
        );
    }
    let Some(token) = bearer(&headers) else {
        return refuse(StatusCode::UNAUTHORIZED, "an agent token is required");
    };
    let identity = match identity(&headers) {
        Ok(identity) => identity,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
    };
    inner.admitting.fetch_add(1, Ordering::AcqRel);
    let admitted = registry.connected(identity.clone(), token).await;
    let session = admitted.map(|host| (host, inner.install(host)));
    inner.admitting.fetch_sub(1, Ordering::AcqRel);
    inner.bump();
    let Ok((host, (generation, outbox))) = session else {
        // The engine logged the refusal (MACs only); the token is never logged.
        return refuse(StatusCode::UNAUTHORIZED, "no host expects this agent");
    };
    tracing::info!(%host, macs = ?identity.macs, generation, "agent connected");
    let failed = inner.clone();
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(move |err| {
            tracing::debug!(%host, error = %err, "agent upgrade failed");
            tokio::spawn(async move { failed.remove(host, Some(generation)).await });
        })
        .on_upgrade(move |socket| run(inner, host, generation, socket, outbox))
}

/// Moves messages until the socket ends, the agent falls silent, or the session is
/// replaced or released (its outbox closes).
async fn run(
    inner: Arc<Inner>,
    host: HostId,
    generation: u64,
    socket: WebSocket,
    mut outbox: mpsc::UnboundedReceiver<super::EngineMessage>,
) {
    let keepalive = Duration::from_secs(inner.settings.keepalive_secs.max(1));
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut heard = Instant::now();
    let reason = loop {
        tokio::select! {
            message = outbox.recv() => {
                let Some(message) = message else {
                    let _ = sink.send(Message::Close(None)).await;
                    break "replaced or released".to_owned();
                };
                if let Err(err) = sink.send(Message::text(message.encode())).await {
                    break format!("cannot send: {err}");
                }
            }
            frame = stream.next() => {
                heard = Instant::now();
                let text = match frame {
                    None => break "closed".to_owned(),
                    Some(Err(err)) => break err.to_string(),
                    Some(Ok(Message::Close(_))) => break "closed by the agent".to_owned(),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                };
                match AgentMessage::decode(text.as_str()) {
                    Ok(AgentMessage::Progress { id, percent, message }) => inner.deliver(
                        host,
                        id,
                        Delivery::Progress(AgentProgress { percent, message }),
                    ),
                    Ok(AgentMessage::Result { id, outcome }) => {
                        inner.deliver(host, id, Delivery::Result(outcome));
                    }
                    Err(err) => {
                        tracing::warn!(%host, error = %err, "the agent broke the protocol");
                        break "protocol violation".to_owned();
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > keepalive * 3 {
                    break format!("silent for {:?}", heard.elapsed());
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break "cannot ping".to_owned();
                }
            }
        }
    };
    tracing::info!(%host, generation, %reason, "agent disconnected");
    inner.remove(host, Some(generation)).await;
}
