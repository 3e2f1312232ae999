//! IPMI 2.0 over LAN (RMCP+).
//!
//! PLACEHOLDER: this file only pins the API the Redfish branch calls
//! (`IpmiProvider::connect`). The IPMI branch replaces it wholesale at merge; until then every
//! connection attempt fails with `BmcError::Unsupported`.

use std::time::Duration;

use crate::{BmcError, Credentials, Provider};

/// Where to reach an IPMI BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiTarget {
    pub host: String,
    pub port: u16,
    pub privilege: Privilege,
}

/// IPMI session privilege levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Callback,
    User,
    Operator,
    Administrator,
}

/// Session and retry settings.
#[derive(Debug, Clone)]
pub struct IpmiOptions {
    pub timeout: Duration,
    pub retries: u32,
    pub min_command_interval: Duration,
    pub cipher_suites: Vec<u8>,
}

impl Default for IpmiOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 3,
            min_command_interval: Duration::ZERO,
            cipher_suites: vec![17, 3],
        }
    }
}

/// An IPMI session (placeholder).
#[derive(Debug)]
pub struct IpmiProvider {
    _private: (),
}

impl IpmiProvider {
    /// Placeholder: always fails until the IPMI branch lands.
    pub async fn connect(
        _target: IpmiTarget,
        _credentials: Credentials,
        _options: IpmiOptions,
    ) -> Result<Self, BmcError> {
        Err(BmcError::Unsupported {
            provider: "ipmi",
            capability: "connect",
        })
    }
}

impl Provider for IpmiProvider {
    fn name(&self) -> &'static str {
        "ipmi"
    }
}
