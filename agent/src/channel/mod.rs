//! The agent channel: how the agent reaches the engine and takes its commands.
//!
//! - [`params`]: the engine URL, the pinned certificate fingerprint and the token, read
//!   from the kernel command line.
//! - [`pin`]: a rustls verifier that trusts exactly the certificate with that fingerprint.
//! - [`protocol`]: the handshake headers and the JSON messages.
//! - [`session`]: the agent's side as a sans-IO state machine.
//! - [`client`]: the tokio edge — TLS, one long-lived WebSocket, reconnection with back-off,
//!   commands dispatched to a [`client::JobHandler`].
//!
//! The engine's side lives in `rivet-engine` (`drivers::agent_channel`).

pub mod client;
pub mod params;
pub mod pin;
pub mod protocol;
pub mod session;

pub use client::{Client, ClientConfig, ConnectError, JobError, JobHandler, ProgressReporter};
pub use params::{ChannelParams, ParamsError, Token};
pub use pin::Fingerprint;
