//! The error every capability returns.

use std::time::Duration;

use crate::capability::PowerState;

/// Why a BMC operation failed.
///
/// Messages never contain credentials. [`BmcError::is_transient`] tells callers whether
/// retrying later can help (a timeout) or not (a wrong password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BmcError {
    #[error("{provider} does not support {capability}")]
    Unsupported {
        provider: &'static str,
        capability: &'static str,
    },
    #[error("no configured BMC driver offers {capability}")]
    NoProvider { capability: &'static str },
    #[error("the BMC rejected the credentials")]
    Authentication,
    #[error("the BMC did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the BMC: {0}")]
    Connection(String),
    #[error("the BMC refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the BMC sent a response Rivet cannot use: {0}")]
    Protocol(String),
    /// The BMC answered an IPMI request with a non-zero completion code, or refused a step of
    /// RMCP+ session set-up with a non-zero status code.
    #[error("the BMC refused {operation}: {meaning} (IPMI code {code:#04x})")]
    IpmiRefused {
        operation: &'static str,
        code: u8,
        meaning: &'static str,
        /// Whether the code names a passing condition (node busy, out of session slots…).
        transient: bool,
    },
    #[error("power did not reach {wanted:?} within {waited:?}; last seen {last_seen:?}")]
    PowerStateTimeout {
        wanted: PowerState,
        last_seen: PowerState,
        waited: Duration,
    },
}

impl BmcError {
    /// Whether the same request may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            BmcError::Timeout(_) | BmcError::Connection(_) | BmcError::PowerStateTimeout { .. } => {
                true
            }
            BmcError::Rejected { status, .. } => *status >= 500,
            BmcError::IpmiRefused { transient, .. } => *transient,
            BmcError::Unsupported { .. }
            | BmcError::NoProvider { .. }
            | BmcError::Authentication
            | BmcError::Protocol(_) => false,
        }
    }
}
