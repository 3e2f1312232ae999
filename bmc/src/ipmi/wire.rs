//! RMCP and IPMI-over-LAN framing: the bytes on the wire and nothing else.
//!
//! A datagram is an RMCP header, an IPMI session header (the IPMI 1.5 form for pre-session
//! replies, the RMCP+ form for everything else), a payload and, on authenticated RMCP+ packets,
//! an integrity trailer. Decoding never trusts a length field and never panics, so these
//! functions are safe to feed arbitrary datagrams (`fuzz/fuzz_targets/rmcp.rs` does).

use thiserror::Error;

/// RMCP header: version 6, reserved, sequence 0xFF (no RMCP acknowledgement), class IPMI.
const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
const RMCP_CLASS_IPMI: u8 = 0x07;
const AUTH_TYPE_NONE: u8 = 0x00;
const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// The "next header" byte that ends every integrity pad (IPMI 2.0 table 13-8).
const NEXT_HEADER_RMCP: u8 = 0x07;
const PAYLOAD_ENCRYPTED: u8 = 0x80;
const PAYLOAD_AUTHENTICATED: u8 = 0x40;
const PAYLOAD_TYPE_MASK: u8 = 0x3F;
const PAYLOAD_TYPE_OEM: u8 = 0x02;

/// The BMC's address on the IPMB, where every LAN request is addressed.
pub const BMC_SLAVE_ADDRESS: u8 = 0x20;
/// The software ID a remote console uses as its requester address (IPMI 2.0 §5.5).
pub const REMOTE_CONSOLE_ADDRESS: u8 = 0x81;

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("datagram too short for {0}")]
    Truncated(&'static str),
    #[error("not an IPMI datagram (RMCP version {version:#04x}, class {class:#04x})")]
    NotIpmi { version: u8, class: u8 },
    #[error("unsupported session authentication type {0:#04x}")]
    AuthType(u8),
    #[error("the {what} length field says {declared} bytes but only {available} follow")]
    Length {
        what: &'static str,
        declared: usize,
        available: usize,
    },
    #[error("bad {0} checksum in the IPMI message")]
    Checksum(&'static str),
    #[error("OEM-explicit payloads are not supported")]
    OemPayload,
    #[error("malformed integrity trailer")]
    Trailer,
    #[error("encrypted payload of {0} bytes is not an IV plus whole AES blocks")]
    CipherLength(usize),
    #[error("confidentiality pad length {0} is larger than the payload")]
    ConfidentialityPad(u8),
}

/// RMCP+ payload types used by a remote console (IPMI 2.0 table 13-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Ipmi,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
    /// Any other type (SOL, OEM…): decoded so it can be ignored, never produced.
    Other(u8),
}

impl PayloadType {
    fn code(self) -> u8 {
        match self {
            PayloadType::Ipmi => 0x00,
            PayloadType::OpenSessionRequest => 0x10,
            PayloadType::OpenSessionResponse => 0x11,
            PayloadType::Rakp1 => 0x12,
            PayloadType::Rakp2 => 0x13,
            PayloadType::Rakp3 => 0x14,
            PayloadType::Rakp4 => 0x15,
            PayloadType::Other(code) => code & PAYLOAD_TYPE_MASK,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            0x00 => PayloadType::Ipmi,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            other => PayloadType::Other(other),
        }
    }
}

/// A decoded datagram. Slices borrow from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// IPMI 1.5 session format without authentication: how BMCs answer the pre-session
    /// Get Channel Authentication Capabilities request.
    V15 {
        session_id: u32,
        sequence: u32,
        message: &'a [u8],
    },
    RmcpPlus(RmcpPlusPacket<'a>),
}

/// An RMCP+ (IPMI 2.0) packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmcpPlusPacket<'a> {
    pub payload_type: PayloadType,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub sequence: u32,
    /// The payload as sent: still encrypted when `encrypted`.
    pub payload: &'a [u8],
    /// Everything after the payload: the integrity trailer when `authenticated`.
    trailer: &'a [u8],
    /// The datagram from the authentication type byte to the end, which an integrity code
    /// covers (minus the code itself).
    session_bytes: &'a [u8],
}

impl<'a> RmcpPlusPacket<'a> {
    /// Splits the integrity trailer of an authenticated packet into the bytes the code covers
    /// and the code, given the code's length for the session's integrity algorithm.
    pub fn integrity_parts(&self, code_len: usize) -> Result<(&'a [u8], &'a [u8]), CodecError> {
        // Trailer: pad (0–3 bytes), pad length, next header, authentication code.
        let trailer_len = self.trailer.len();
        let fixed = code_len.checked_add(2).ok_or(CodecError::Trailer)?;
        if !self.authenticated || trailer_len < fixed {
            return Err(CodecError::Trailer);
        }
        let pad_len = usize::from(self.trailer[trailer_len - code_len - 2]);
        let next_header = self.trailer[trailer_len - code_len - 1];
        if next_header != NEXT_HEADER_RMCP || trailer_len != pad_len + fixed {
            return Err(CodecError::Trailer);
        }
        let signed_len = self.session_bytes.len() - code_len;
        Ok((
            &self.session_bytes[..signed_len],
            &self.session_bytes[signed_len..],
        ))
    }
}

/// Decodes the RMCP and session headers of one datagram.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, CodecError> {
    let (rmcp, rest) = split(datagram, 4, "the RMCP header")?;
    if rmcp[0] != RMCP_HEADER[0] || rmcp[3] & 0x1F != RMCP_CLASS_IPMI {
        return Err(CodecError::NotIpmi {
            version: rmcp[0],
            class: rmcp[3],
        });
    }
    match rest.first() {
        Some(&AUTH_TYPE_NONE) => decode_v15(rest),
        Some(&AUTH_TYPE_RMCP_PLUS) => decode_rmcp_plus(rest).map(Packet::RmcpPlus),
        Some(&other) => Err(CodecError::AuthType(other)),
        None => Err(CodecError::Truncated("the session header")),
    }
}

fn decode_v15(session: &[u8]) -> Result<Packet<'_>, CodecError> {
    // auth type, sequence (4), session ID (4), message length (1)
    let (header, rest) = split(session, 10, "the IPMI 1.5 session header")?;
    let sequence = le_u32(&header[1..5]);
    let session_id = le_u32(&header[5..9]);
    let declared = usize::from(header[9]);
    let message = rest.get(..declared).ok_or(CodecError::Length {
        what: "IPMI 1.5 message",
        declared,
        available: rest.len(),
    })?;
    Ok(Packet::V15 {
        session_id,
        sequence,
        message,
    })
}

fn decode_rmcp_plus(session: &[u8]) -> Result<RmcpPlusPacket<'_>, CodecError> {
    // auth type, payload type, session ID (4), sequence (4), payload length (2)
    let (header, rest) = split(session, 12, "the RMCP+ session header")?;
    let type_byte = header[1];
    if type_byte & PAYLOAD_TYPE_MASK == PAYLOAD_TYPE_OEM {
        return Err(CodecError::OemPayload);
    }
    let declared = usize::from(u16::from_le_bytes([header[10], header[11]]));
    if declared > rest.len() {
        return Err(CodecError::Length {
            what: "RMCP+ payload",
            declared,
            available: rest.len(),
        });
    }
    let (payload, trailer) = rest.split_at(declared);
    Ok(RmcpPlusPacket {
        payload_type: PayloadType::from_code(type_byte & PAYLOAD_TYPE_MASK),
        encrypted: type_byte & PAYLOAD_ENCRYPTED != 0,
        authenticated: type_byte & PAYLOAD_AUTHENTICATED != 0,
        session_id: le_u32(&header[2..6]),
        sequence: le_u32(&header[6..10]),
        payload,
        trailer,
        session_bytes: session,
    })
}

/// Frames `message` as an IPMI 1.5 datagram outside any session (authentication type none).
pub fn encode_v15_sessionless(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + message.len());
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_NONE);
    out.extend_from_slice(&[0; 8]); // sequence and session ID are zero outside a session
    out.push(u8::try_from(message.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(message);
    out
}

/// The header fields of an outgoing RMCP+ packet.
#[derive(Debug, Clone, Copy)]
pub struct RmcpPlusHeader {
    pub payload_type: PayloadType,
    pub encrypted: bool,
    pub authenticated: bool,
    pub session_id: u32,
    pub sequence: u32,
}

/// Frames `payload` (already encrypted if the header says so) as an RMCP+ datagram.
///
/// For an authenticated packet the integrity pad, pad length and next-header byte are
/// appended; the caller then computes the code over `&packet[4..]` (see
/// [`integrity_covered`]) and appends it.
pub fn encode_rmcp_plus(header: RmcpPlusHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len() + 24);
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_RMCP_PLUS);
    let mut type_byte = header.payload_type.code();
    if header.encrypted {
        type_byte |= PAYLOAD_ENCRYPTED;
    }
    if header.authenticated {
        type_byte |= PAYLOAD_AUTHENTICATED;
    }
    out.push(type_byte);
    out.extend_from_slice(&header.session_id.to_le_bytes());
    out.extend_from_slice(&header.sequence.to_le_bytes());
    // Payloads are at most a few hundred bytes; the session layer builds them.
    let length = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(payload);
    if header.authenticated {
        // The covered bytes (auth type to next header) must be a multiple of four long.
        let covered = out.len() - RMCP_HEADER.len() + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER_RMCP);
    }
    out
}

/// The part of an outgoing authenticated packet its integrity code covers.
pub fn integrity_covered(packet: &[u8]) -> &[u8] {
    packet.get(RMCP_HEADER.len()..).unwrap_or_default()
}

/// An IPMI request message as carried in a LAN packet (IPMI 2.0 §13.8).
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + data.len());
    out.push(BMC_SLAVE_ADDRESS);
    out.push(netfn << 2); // responder LUN 0
    out.push(checksum(&out[0..2]));
    out.push(REMOTE_CONSOLE_ADDRESS);
    out.push((rq_seq & 0x3F) << 2); // requester LUN 0
    out.push(cmd);
    out.extend_from_slice(data);
    out.push(checksum(&out[3..]));
    out
}

/// An IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response network function (the request's plus one).
    pub netfn: u8,
    pub cmd: u8,
    /// The requester sequence number the BMC echoed, used to match a response to its request.
    pub rq_seq: u8,
    pub completion_code: u8,
    pub data: Vec<u8>,
}

/// Decodes an IPMI response message, checking both checksums.
pub fn decode_response(message: &[u8]) -> Result<Response, CodecError> {
    // rqAddr, netFn/rqLUN, checksum, rsAddr, rqSeq/rsLUN, cmd, completion code, …, checksum
    if message.len() < 8 {
        return Err(CodecError::Truncated("an IPMI response message"));
    }
    if sum(&message[..3]) != 0 {
        return Err(CodecError::Checksum("header"));
    }
    if sum(&message[3..]) != 0 {
        return Err(CodecError::Checksum("body"));
    }
    Ok(Response {
        netfn: message[1] >> 2,
        cmd: message[5],
        rq_seq: message[4] >> 2,
        completion_code: message[6],
        data: message[7..message.len() - 1].to_vec(),
    })
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// The two's-complement checksum that makes `bytes` plus itself sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(sum(bytes))
}

fn split<'a>(
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CodecError> {
    if bytes.len() < at {
        return Err(CodecError::Truncated(what));
    }
    Ok(bytes.split_at(at))
}

/// A little-endian u32 from exactly four bytes (callers slice them from checked headers).
pub(crate) fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksums_sum_to_zero() {
        // Get Channel Authentication Capabilities, as every lanplus client sends it first.
        let message = encode_request(0x06, 0x38, 0, &[0x8E, 0x04]);
        assert_eq!(
            message,
            [0x20, 0x18, 0xC8, 0x81, 0x00, 0x38, 0x8E, 0x04, 0xB5]
        );
        assert_eq!(sum(&message[..3]), 0);
        assert_eq!(sum(&message[3..]), 0);
    }

    #[test]
    fn decodes_a_response_and_rejects_a_corrupted_one() {
        let mut message = vec![0x81, 0x1C, 0x63, 0x20, 0x08, 0x38, 0x00, 0x01, 0x80];
        message.push(checksum(&message[3..]));
        let response = decode_response(&message).unwrap();
        assert_eq!(response.netfn, 0x07);
        assert_eq!(response.rq_seq, 2);
        assert_eq!(response.data, [0x01, 0x80]);

        message[7] ^= 1;
        assert_eq!(decode_response(&message), Err(CodecError::Checksum("body")));
        assert!(matches!(
            decode_response(&message[..5]),
            Err(CodecError::Truncated(_))
        ));
    }

    #[test]
    fn sessionless_v15_round_trip() {
        let datagram = encode_v15_sessionless(&[1, 2, 3]);
        assert_eq!(
            decode(&datagram).unwrap(),
            Packet::V15 {
                session_id: 0,
                sequence: 0,
                message: &[1, 2, 3]
            }
        );
    }

    #[test]
    fn authenticated_packet_pads_to_four_bytes_and_splits_back() {
        let header = RmcpPlusHeader {
            payload_type: PayloadType::Ipmi,
            encrypted: true,
            authenticated: true,
            session_id: 0x0102_0304,
            sequence: 7,
        };
        for payload_len in 0..8 {
            let mut datagram = encode_rmcp_plus(header, &vec![0xAB; payload_len]);
            assert_eq!(integrity_covered(&datagram).len() % 4, 0);
            datagram.extend_from_slice(&[0xEE; 12]);
            let Packet::RmcpPlus(packet) = decode(&datagram).unwrap() else {
                panic!("expected RMCP+");
            };
            assert_eq!(packet.payload_type, PayloadType::Ipmi);
            assert!(packet.encrypted && packet.authenticated);
            assert_eq!(packet.session_id, 0x0102_0304);
            assert_eq!(packet.sequence, 7);
            assert_eq!(packet.payload.len(), payload_len);
            let (covered, code) = packet.integrity_parts(12).unwrap();
            assert_eq!(code, [0xEE; 12]);
            assert_eq!(covered, &datagram[4..datagram.len() - 12]);
            assert_eq!(packet.integrity_parts(16), Err(CodecError::Trailer));
        }
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        let mut datagram = encode_rmcp_plus(
            RmcpPlusHeader {
                payload_type: PayloadType::Ipmi,
                encrypted: false,
                authenticated: false,
                session_id: 0,
                sequence: 0,
            },
            &[1, 2, 3],
        );
        datagram[14] = 0xFF; // payload length low byte
        assert!(matches!(decode(&datagram), Err(CodecError::Length { .. })));
        assert!(matches!(
            decode(&[0x06, 0x00, 0xFF, 0x07]),
            Err(CodecError::Truncated(_))
        ));
        assert!(matches!(
            decode(&[0x06, 0x00, 0xFF, 0x06, 0x00]),
            Err(CodecError::NotIpmi { .. })
        ));
        assert_eq!(
            decode(&[0x06, 0x00, 0xFF, 0x07, 0x02]),
            Err(CodecError::AuthType(0x02))
        );
    }
}
