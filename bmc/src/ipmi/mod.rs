//! IPMI 2.0 over LAN ("lanplus"): a native, async RMCP+ client.
//!
//! Layers, bottom up:
//! - [`wire`]: RMCP, IPMI 1.5 and RMCP+ session framing and IPMI message checksums;
//! - `crypto`: cipher suites 17 (HMAC-SHA256 / HMAC-SHA256-128 / AES-CBC-128) and 3
//!   (HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128): RAKP codes, key derivation, integrity codes
//!   compared in constant time, AES-CBC with IPMI's padding;
//! - `rakp`: the Open Session and RAKP 1–4 payloads;
//! - [`Handshake`] and [`Session`]: the sans-IO session state machine (datagrams in,
//!   datagrams out; no socket, no clock);
//! - [`commands`]: request builders and response decoders;
//! - [`Client`]: the tokio UDP driver (retransmission, timeouts, command spacing, re-login);
//! - [`IpmiProvider`]: the `Power`, `BootDevice` and `HealthCheck` capabilities.
//!
//! What Rivet does on a login, in order: Get Channel Authentication Capabilities (refusing
//! BMCs without IPMI 2.0 or with a BMC key, Kg, set), RMCP+ Open Session proposing the first
//! configured cipher suite (default 17, then 3; a refusal that means "not this suite" moves to
//! the next one), RAKP 1–4 (the BMC's RAKP 2 code proves it knows the password before Rivet
//! reveals anything derived from it), then Set Session Privilege Level, because sessions start
//! at User and chassis commands need Operator or more. The session then stays open: later
//! commands cost one datagram each way.

mod client;
pub mod commands;
mod crypto;
mod provider;
mod rakp;
mod session;
pub mod wire;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::time::Duration;

pub use client::Client;
pub use commands::{
    BootDeviceSelector, BootFlags, ChassisAction, ChassisStatus, DeviceId, Request,
};
pub use crypto::CipherSuite;
pub use provider::{IpmiProvider, chassis_health};
pub use session::{Handshake, Progress, Session, SessionError};
pub use wire::Response;

/// The standard RMCP port.
pub const DEFAULT_PORT: u16 = 623;

/// Where a BMC's IPMI-over-LAN service listens, and the privilege Rivet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiTarget {
    pub host: String,
    pub port: u16,
    pub privilege: Privilege,
}

impl IpmiTarget {
    /// `host` on the standard port, as Administrator (what chassis and boot commands need
    /// on most BMCs, and what Ironic asks for).
    pub fn new(host: impl Into<String>) -> Self {
        IpmiTarget {
            host: host.into(),
            port: DEFAULT_PORT,
            privilege: Privilege::Administrator,
        }
    }
}

/// IPMI session privilege levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Callback,
    User,
    Operator,
    Administrator,
}

impl Privilege {
    pub(crate) fn code(self) -> u8 {
        match self {
            Privilege::Callback => 1,
            Privilege::User => 2,
            Privilege::Operator => 3,
            Privilege::Administrator => 4,
        }
    }
}

/// How Rivet talks to one BMC.
#[derive(Debug, Clone)]
pub struct IpmiOptions {
    /// How long to wait for the first answer to a datagram. Each retransmission waits one
    /// `timeout` longer than the previous attempt, as ipmitool does, so a slow BMC gets
    /// more time while a lost datagram is resent quickly.
    pub timeout: Duration,
    /// Retransmissions after the first attempt before giving up with a timeout.
    pub retries: u32,
    /// Minimum time from the end of one command to the start of the next on this BMC,
    /// counted across every provider in the process that talks to it. Ironic waits 5 s (`[ipmi] min_command_interval`) because it starts a new ipmitool
    /// session per command and some BMCs drown in them; Rivet keeps its session open, so
    /// lower values are usually safe. The benchmark uses zero.
    pub min_command_interval: Duration,
    /// RMCP+ cipher suites to propose, in order of preference. Rivet implements 17 and 3.
    pub cipher_suites: Vec<u8>,
}

impl Default for IpmiOptions {
    /// ipmitool's lanplus defaults (1 s, 4 retries), Ironic's 5-second spacing, suites 17
    /// then 3 (Metal³ configures `cipher_suite_versions = 3,17` and Ironic tries 17 first).
    fn default() -> Self {
        IpmiOptions {
            timeout: Duration::from_secs(1),
            retries: 4,
            min_command_interval: Duration::from_secs(5),
            cipher_suites: vec![17, 3],
        }
    }
}
