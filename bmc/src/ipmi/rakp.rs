//! Session-setup payloads: RMCP+ Open Session and RAKP messages 1–4 (IPMI 2.0 §13.17–13.23).

use super::crypto::CipherSuite;
use super::wire::{CodecError, le_u32};

/// RMCP+ Open Session Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenSessionRequest {
    pub tag: u8,
    pub max_privilege: u8,
    pub console_session_id: u32,
    pub suite: CipherSuite,
}

impl OpenSessionRequest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (auth, integrity, confidentiality) = self.suite.algorithms();
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&[self.tag, self.max_privilege, 0, 0]);
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        for (payload_type, algorithm) in [(0, auth), (1, integrity), (2, confidentiality)] {
            // type, reserved ×2, payload length 8, algorithm, reserved ×3
            out.extend_from_slice(&[payload_type, 0, 0, 8, algorithm, 0, 0, 0]);
        }
        out
    }
}

/// RMCP+ Open Session Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenSessionResponse {
    pub tag: u8,
    pub status: u8,
    /// Absent from the two-byte error responses some BMCs (ipmi_sim) send.
    pub console_session_id: Option<u32>,
    /// Present when `status` is zero.
    pub accepted: Option<AcceptedSession>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptedSession {
    pub bmc_session_id: u32,
    /// (authentication, integrity, confidentiality) algorithm numbers the BMC chose.
    pub algorithms: (u8, u8, u8),
}

impl OpenSessionResponse {
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        // An error response may stop right after the status byte.
        if payload.len() < 2 {
            return Err(CodecError::Truncated("an Open Session response"));
        }
        let status = payload[1];
        let accepted = if status == 0 {
            if payload.len() < 36 {
                return Err(CodecError::Truncated("an Open Session response"));
            }
            Some(AcceptedSession {
                bmc_session_id: le_u32(&payload[8..12]),
                algorithms: (payload[16] & 0x3F, payload[24] & 0x3F, payload[32] & 0x3F),
            })
        } else {
            None
        };
        Ok(OpenSessionResponse {
            tag: payload[0],
            status,
            console_session_id: payload.get(4..8).map(le_u32),
            accepted,
        })
    }
}

/// RAKP Message 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rakp1<'a> {
    pub tag: u8,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    pub role: u8,
    pub username: &'a [u8],
}

impl Rakp1<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.username.len());
        out.extend_from_slice(&[self.tag, 0, 0, 0]);
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.console_random);
        out.extend_from_slice(&[self.role, 0, 0]);
        out.push(u8::try_from(self.username.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.username);
        out
    }
}

/// RAKP Message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rakp2 {
    pub tag: u8,
    pub status: u8,
    /// Absent from two-byte error responses.
    pub console_session_id: Option<u32>,
    /// Present when `status` is zero.
    pub accepted: Option<Rakp2Accepted>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rakp2Accepted {
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth_code: Vec<u8>,
}

impl Rakp2 {
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        if payload.len() < 2 {
            return Err(CodecError::Truncated("RAKP message 2"));
        }
        let status = payload[1];
        let accepted = if status == 0 {
            if payload.len() < 40 {
                return Err(CodecError::Truncated("RAKP message 2"));
            }
            let mut bmc_random = [0u8; 16];
            bmc_random.copy_from_slice(&payload[8..24]);
            let mut bmc_guid = [0u8; 16];
            bmc_guid.copy_from_slice(&payload[24..40]);
            Some(Rakp2Accepted {
                bmc_random,
                bmc_guid,
                auth_code: payload[40..].to_vec(),
            })
        } else {
            None
        };
        Ok(Rakp2 {
            tag: payload[0],
            status,
            console_session_id: payload.get(4..8).map(le_u32),
            accepted,
        })
    }
}

/// RAKP Message 3 (always sent with status zero: Rivet reports a bad RAKP 2 by giving up).
pub(crate) fn encode_rakp3(tag: u8, bmc_session_id: u32, auth_code: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + auth_code.len());
    out.extend_from_slice(&[tag, 0, 0, 0]);
    out.extend_from_slice(&bmc_session_id.to_le_bytes());
    out.extend_from_slice(auth_code);
    out
}

/// RAKP Message 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rakp4 {
    pub tag: u8,
    pub status: u8,
    /// Absent from two-byte error responses.
    pub console_session_id: Option<u32>,
    pub icv: Vec<u8>,
}

impl Rakp4 {
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        if payload.len() < 2 {
            return Err(CodecError::Truncated("RAKP message 4"));
        }
        Ok(Rakp4 {
            tag: payload[0],
            status: payload[1],
            console_session_id: payload.get(4..8).map(le_u32),
            icv: payload.get(8..).unwrap_or_default().to_vec(),
        })
    }
}

/// What an RMCP+ / RAKP status code means (IPMI 2.0 table 13-15).
pub(crate) fn status_meaning(status: u8) -> &'static str {
    match status {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite matches the proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown RMCP+ status",
    }
}

/// Whether an Open Session status means "try another cipher suite" (the statuses Ironic
/// walks back on, plus the algorithm-specific ones it reports through ipmitool's wording).
pub(crate) fn status_rejects_suite(status: u8) -> bool {
    matches!(
        status,
        0x04 | 0x05 | 0x06 | 0x07 | 0x09 | 0x10 | 0x11 | 0x12
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_session_request_layout() {
        let encoded = OpenSessionRequest {
            tag: 5,
            max_privilege: 4,
            console_session_id: 0x1122_3344,
            suite: CipherSuite::Suite17,
        }
        .encode();
        assert_eq!(encoded.len(), 32);
        assert_eq!(&encoded[..8], &[5, 4, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&encoded[8..16], &[0, 0, 0, 8, 3, 0, 0, 0]);
        assert_eq!(&encoded[16..24], &[1, 0, 0, 8, 4, 0, 0, 0]);
        assert_eq!(&encoded[24..32], &[2, 0, 0, 8, 1, 0, 0, 0]);
    }

    #[test]
    fn open_session_error_response_may_be_short() {
        // ipmi_sim answers an unknown algorithm with just the tag and status.
        let short = OpenSessionResponse::decode(&[7, 0x04]).unwrap();
        assert_eq!(short.status, 0x04);
        assert_eq!(short.console_session_id, None);
        assert_eq!(short.accepted, None);
        let long = OpenSessionResponse::decode(&[7, 0x04, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(long.console_session_id, Some(1));
        assert!(OpenSessionResponse::decode(&[7]).is_err());
        // A success status needs the whole 36 bytes.
        assert!(OpenSessionResponse::decode(&[7, 0, 0, 0, 1, 0, 0, 0]).is_err());
    }

    #[test]
    fn rakp2_fields() {
        let mut payload = vec![9, 0, 0, 0, 1, 2, 3, 4];
        payload.extend_from_slice(&[0xAA; 16]);
        payload.extend_from_slice(&[0xBB; 16]);
        payload.extend_from_slice(&[0xCC; 20]);
        let rakp2 = Rakp2::decode(&payload).unwrap();
        assert_eq!(rakp2.console_session_id, Some(0x0403_0201));
        let accepted = rakp2.accepted.unwrap();
        assert_eq!(accepted.bmc_random, [0xAA; 16]);
        assert_eq!(accepted.bmc_guid, [0xBB; 16]);
        assert_eq!(accepted.auth_code, [0xCC; 20]);
        assert!(Rakp2::decode(&payload[..39]).is_err());
    }
}
