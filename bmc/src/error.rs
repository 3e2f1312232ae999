//! The error every capability returns.

use std::fmt;
use std::time::Duration;

use crate::address::AddressError;
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
    #[error("invalid BMC address: {0}")]
    InvalidAddress(#[from] AddressError),
    /// The request is well-formed but cannot apply to this BMC (a boot target it does not
    /// offer, a read-only BIOS attribute, a value outside the allowed range…).
    #[error("{0}")]
    InvalidRequest(String),
    /// TLS or other client set-up failed before anything was sent.
    #[error("cannot set up the BMC client: {0}")]
    Setup(String),
    /// A long-running BMC task (firmware update, configuration job) ended badly.
    #[error("the BMC task {task} ended in state {state}: {message}")]
    TaskFailed {
        task: String,
        state: String,
        message: String,
    },
    /// Every provider that offers a capability failed; each failure is listed.
    #[error(
        "{capability} failed with every BMC driver: {}",
        ProviderFailures(failures)
    )]
    AllProvidersFailed {
        capability: &'static str,
        failures: Vec<(&'static str, BmcError)>,
    },
}

struct ProviderFailures<'a>(&'a [(&'static str, BmcError)]);

impl fmt::Display for ProviderFailures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (provider, err)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{provider}: {err}")?;
        }
        Ok(())
    }
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
            BmcError::AllProvidersFailed { failures, .. } => {
                failures.iter().any(|(_, err)| err.is_transient())
            }
            BmcError::Unsupported { .. }
            | BmcError::NoProvider { .. }
            | BmcError::Authentication
            | BmcError::Protocol(_)
            | BmcError::InvalidAddress(_)
            | BmcError::InvalidRequest(_)
            | BmcError::Setup(_)
            | BmcError::TaskFailed { .. } => false,
        }
    }

    /// Whether the failure proves the BMC did nothing, so another driver may safely try an
    /// operation that must not run twice (a reset, a power cycle).
    pub fn proves_nothing_happened(&self) -> bool {
        match self {
            BmcError::Unsupported { .. }
            | BmcError::NoProvider { .. }
            | BmcError::Authentication
            | BmcError::InvalidAddress(_)
            | BmcError::InvalidRequest(_)
            | BmcError::Setup(_) => true,
            BmcError::Rejected { status, .. } => (400..500).contains(status),
            // A completion code is the BMC's answer that it did not carry the command out.
            BmcError::IpmiRefused { .. } => true,
            BmcError::AllProvidersFailed { failures, .. } => failures
                .iter()
                .all(|(_, err)| err.proves_nothing_happened()),
            BmcError::Timeout(_)
            | BmcError::Connection(_)
            | BmcError::Protocol(_)
            | BmcError::PowerStateTimeout { .. }
            | BmcError::TaskFailed { .. } => false,
        }
    }

    /// The HTTP status of a refusal, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            BmcError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_failures_list_every_provider() {
        let err = BmcError::AllProvidersFailed {
            capability: "power",
            failures: vec![
                ("redfish", BmcError::Timeout(Duration::from_secs(3))),
                ("ipmi", BmcError::Authentication),
            ],
        };
        let text = err.to_string();
        assert!(text.contains("redfish: the BMC did not answer"), "{text}");
        assert!(
            text.contains("ipmi: the BMC rejected the credentials"),
            "{text}"
        );
        assert!(err.is_transient());
        assert!(!err.proves_nothing_happened());
    }
}
