//! The tokio edge of the agent channel: TLS to the engine (trusting only the pinned
//! certificate), one WebSocket kept open, reconnection with jittered exponential back-off,
//! and commands dispatched to the caller's [`JobHandler`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rivet_model::HardwareDetails;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::params::ChannelParams;
use super::pin;
use super::protocol::{
    AgentMessage, CONNECT_PATH, CleanPolicy, DeployJob, EngineMessage, FailureKind, Hello,
    MAX_MESSAGE_BYTES, Outcome, SUBPROTOCOL,
};
use super::session::{Action, Job, Session};

/// A job that failed, and whether retrying could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub kind: FailureKind,
    pub message: String,
}

impl JobError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Sends a job's progress to the engine (dropped while disconnected: progress is shown
/// live, not stored).
#[derive(Debug, Clone)]
pub struct ProgressReporter {
    id: u64,
    events: mpsc::UnboundedSender<JobEvent>,
}

impl ProgressReporter {
    pub fn report(&self, percent: Option<u8>, message: impl Into<String>) {
        let _ = self.events.send(JobEvent::Progress {
            id: self.id,
            percent,
            message: message.into(),
        });
    }
}

/// The agent's real work, supplied by the caller.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn inspect(&self) -> Result<HardwareDetails, JobError>;
    async fn clean(&self, policy: &CleanPolicy, progress: ProgressReporter)
    -> Result<(), JobError>;
    async fn deploy(&self, job: &DeployJob, progress: ProgressReporter) -> Result<(), JobError>;
}

#[derive(Debug)]
enum JobEvent {
    Progress {
        id: u64,
        percent: Option<u8>,
        message: String,
    },
    Finished {
        id: u64,
        outcome: Outcome,
    },
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("cannot reach the engine at {address}: {source}")]
    Unreachable {
        address: String,
        source: std::io::Error,
    },
    #[error("the engine did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the engine's certificate is not the pinned one or does not verify: {0}")]
    UntrustedCertificate(String),
    #[error("the engine refused this agent (HTTP {0}): unknown host or wrong token")]
    Rejected(u16),
    #[error("the engine answered the upgrade with HTTP {0}")]
    Status(u16),
    #[error("agent-channel handshake failed: {0}")]
    Handshake(String),
}

/// How the client connects and retries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub params: ChannelParams,
    /// The machine's MAC addresses (lowercase, colon-separated).
    pub macs: Vec<String>,
    pub agent_version: String,
    pub connect_timeout: Duration,
    /// Reconnect when the engine has been silent this long (it pings far more often).
    pub idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(params: ChannelParams, macs: Vec<String>) -> Self {
        Self {
            params,
            macs,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            macs: self.macs.clone(),
            host: self.params.host.clone(),
            agent_version: self.agent_version.clone(),
        }
    }
}

type Socket = WebSocketStream<TlsStream<TcpStream>>;

/// An open channel.
#[derive(Debug)]
pub struct Connection(Socket);

/// The agent's client.
#[derive(Clone)]
pub struct Client {
    config: ClientConfig,
    tls: TlsConnector,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, rustls::Error> {
        let tls = TlsConnector::from(Arc::new(pin::client_config(config.params.ca)?));
        Ok(Self { config, tls })
    }

    /// One attempt: TCP, TLS against the pinned certificate, WebSocket upgrade with the
    /// token in the `Authorization` header.
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let limit = self.config.connect_timeout;
        tokio::time::timeout(limit, self.connect_inner())
            .await
            .map_err(|_| ConnectError::Timeout(limit))?
    }

    async fn connect_inner(&self) -> Result<Connection, ConnectError> {
        let url = &self.config.params.url;
        let host = url
            .host_str()
            .ok_or_else(|| ConnectError::Handshake("the engine URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(443);
        // `host_str` keeps the brackets of an IPv6 literal; neither TCP nor TLS wants them.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let address = format!("{host}:{port}");
        let tcp =
            TcpStream::connect((bare, port))
                .await
                .map_err(|source| ConnectError::Unreachable {
                    address: address.clone(),
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|err| ConnectError::Handshake(format!("bad server name {bare}: {err}")))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|err| {
            match err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::InvalidCertificate(cert)) => {
                    ConnectError::UntrustedCertificate(format!("{cert:?}"))
                }
                _ => ConnectError::Unreachable {
                    address: address.clone(),
                    source: err,
                },
            }
        })?;
        let mut connect_url = url.clone();
        connect_url.set_path(CONNECT_PATH);
        connect_url.set_query(None);
        let _ = connect_url.set_scheme("wss");
        let mut request = connect_url
            .as_str()
            .into_client_request()
            .map_err(|err| ConnectError::Handshake(err.to_string()))?;
        let headers = request.headers_mut();
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", self.config.params.token.expose()))
                .map_err(|_| ConnectError::Handshake("the token is not a header value".into()))?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        for (name, value) in self.config.hello().headers() {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| ConnectError::Handshake(format!("bad {name} header")))?;
            headers.insert(name, value);
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        match tokio_tungstenite::client_async_with_config(request, tls, Some(ws_config)).await {
            Ok((socket, _)) => Ok(Connection(socket)),
            Err(tungstenite::Error::Http(response)) => Err(match response.status() {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    ConnectError::Rejected(response.status().as_u16())
                }
                status => ConnectError::Status(status.as_u16()),
            }),
            Err(err) => Err(ConnectError::Handshake(err.to_string())),
        }
    }

    /// Keeps the channel open and serves commands until the engine releases the agent, or
    /// refuses it after having accepted it: its token is per deployment, so an engine that
    /// no longer knows it has finished with this agent (detached or deleted the host while
    /// the link was down) and will not know it again. Other connection failures are logged
    /// and retried with back-off; they never end the loop.
    pub async fn run<H: JobHandler>(&self, handler: Arc<H>) {
        let mut session = Session::new();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut job: Option<JoinHandle<()>> = None;
        let mut delay = self.config.backoff_initial;
        let mut accepted_before = false;
        loop {
            match self.connect().await {
                Ok(Connection(socket)) => {
                    tracing::info!(url = %self.config.params.url, "connected to the engine");
                    accepted_before = true;
                    delay = self.config.backoff_initial;
                    let ended = self
                        .serve(
                            socket,
                            &mut session,
                            &handler,
                            &events_tx,
                            &mut events,
                            &mut job,
                        )
                        .await;
                    if session.is_released() {
                        if let Some(job) = job.take() {
                            job.abort();
                        }
                        tracing::info!("the engine released this agent");
                        return;
                    }
                    tracing::warn!(reason = %ended, "lost the engine; reconnecting");
                }
                Err(ConnectError::Rejected(status)) if accepted_before => {
                    if let Some(job) = job.take() {
                        job.abort();
                    }
                    tracing::info!(
                        status,
                        "the engine no longer accepts this agent's token: it is done with it"
                    );
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?delay, "cannot connect to the engine");
                }
            }
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }

    /// Serves one connection; returns why it ended.
    async fn serve<H: JobHandler>(
        &self,
        mut socket: Socket,
        session: &mut Session,
        handler: &Arc<H>,
        events_tx: &mpsc::UnboundedSender<JobEvent>,
        events: &mut mpsc::UnboundedReceiver<JobEvent>,
        job: &mut Option<JoinHandle<()>>,
    ) -> String {
        for message in session.connected() {
            if let Err(err) = send(&mut socket, &message).await {
                return err;
            }
        }
        loop {
            tokio::select! {
                frame = tokio::time::timeout(self.config.idle_timeout, socket.next()) => {
                    let text = match frame {
                        Err(_) => return format!("silent for {:?}", self.config.idle_timeout),
                        Ok(None) => return "connection closed".into(),
                        Ok(Some(Err(err))) => return err.to_string(),
                        Ok(Some(Ok(Message::Close(frame)))) => {
                            return format!("closed by the engine ({frame:?})");
                        }
                        Ok(Some(Ok(Message::Text(text)))) => text,
                        // Pings are answered by tungstenite; nothing else is expected.
                        Ok(Some(Ok(_))) => continue,
                    };
                    let message = match EngineMessage::decode(text.as_str()) {
                        Ok(message) => message,
                        Err(err) => {
                            tracing::warn!(error = %err, "ignored a message from the engine");
                            continue;
                        }
                    };
                    for action in session.received(message) {
                        match action {
                            Action::Start { id, job: work } => {
                                *job = Some(spawn_job(handler.clone(), id, work, events_tx.clone()));
                            }
                            Action::Send(message) => {
                                if let Err(err) = send(&mut socket, &message).await {
                                    return err;
                                }
                            }
                            Action::Stop => {
                                let _ = socket.close(None).await;
                                return "released".into();
                            }
                        }
                    }
                }
                Some(event) = events.recv() => {
                    let message = match event {
                        JobEvent::Progress { id, percent, message } => {
                            session.progress(id, percent, message)
                        }
                        JobEvent::Finished { id, outcome } => session.finished(id, outcome),
                    };
                    if let Some(message) = message
                        && let Err(err) = send(&mut socket, &message).await
                    {
                        return err;
                    }
                }
            }
        }
    }
}

async fn send(socket: &mut Socket, message: &AgentMessage) -> Result<(), String> {
    socket
        .send(Message::text(message.encode()))
        .await
        .map_err(|err| format!("cannot send: {err}"))
}

fn spawn_job<H: JobHandler>(
    handler: Arc<H>,
    id: u64,
    job: Job,
    events: mpsc::UnboundedSender<JobEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let progress = ProgressReporter {
            id,
            events: events.clone(),
        };
        let outcome = match &job {
            Job::Inspect => handler.inspect().await.map(|inventory| Outcome::Inspected {
                inventory: Box::new(inventory),
            }),
            Job::Clean(policy) => handler
                .clean(policy, progress)
                .await
                .map(|()| Outcome::Done),
            Job::Deploy(deploy) => handler
                .deploy(deploy, progress)
                .await
                .map(|()| Outcome::Done),
        };
        let outcome = outcome.unwrap_or_else(|err| Outcome::Failed {
            kind: err.kind,
            message: err.message,
        });
        let _ = events.send(JobEvent::Finished { id, outcome });
    })
}

/// `delay` ±25 %, so agents that lost the engine together do not return together.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let spread = if aws_lc_rs::rand::fill(&mut byte).is_ok() {
        f64::from(byte[0]) / 255.0
    } else {
        0.5
    };
    delay.mul_f64(0.75 + spread * 0.5)
}
