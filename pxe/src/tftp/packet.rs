//! The TFTP wire format (RFC 1350) with option extension (RFC 2347).

use std::fmt;

/// The largest block size RFC 2348 allows.
pub const MAX_BLKSIZE: u16 = 65464;

/// TFTP error codes (RFC 1350 §5, RFC 2347 for code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

impl ErrorCode {
    fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTransferId,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionRefused,
            _ => Self::NotDefined,
        }
    }
}

/// The transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    /// Obsolete (RFC 1350 says it must not be used by new servers); parsed to refuse it.
    Mail,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a str,
    pub mode: Mode,
    /// Options in the order the client sent them, names as sent (compare case-insensitively).
    pub options: Vec<(&'a str, &'a str)>,
}

/// A decoded TFTP packet, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Read(Request<'a>),
    Write(Request<'a>),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: ErrorCode, message: String },
    OptionAck(Vec<(&'a str, &'a str)>),
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    #[error("the datagram is {0} bytes, too short for a TFTP packet")]
    TooShort(usize),
    #[error("unknown TFTP opcode {0}")]
    UnknownOpcode(u16),
    #[error("the {0} is not NUL-terminated")]
    Unterminated(&'static str),
    #[error("the {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("the {0} is empty")]
    Empty(&'static str),
    #[error("unknown transfer mode `{0}`")]
    UnknownMode(String),
    #[error("option `{0}` has no value")]
    OptionWithoutValue(String),
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

/// More options than any client sends; a bound so a hostile request costs little.
const MAX_OPTIONS: usize = 16;

/// Reads NUL-terminated strings off the front of a buffer.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self, what: &'static str) -> Result<&'a str, PacketError> {
        let end = self
            .0
            .iter()
            .position(|&byte| byte == 0)
            .ok_or(PacketError::Unterminated(what))?;
        let (field, rest) = self.0.split_at(end);
        self.0 = &rest[1..];
        std::str::from_utf8(field).map_err(|_| PacketError::NotUtf8(what))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_options<'a>(fields: &mut Fields<'a>) -> Result<Vec<(&'a str, &'a str)>, PacketError> {
    let mut options = Vec::new();
    while !fields.is_empty() {
        let name = fields.next("option name")?;
        if name.is_empty() {
            // Some clients pad requests with NULs; nothing meaningful follows.
            break;
        }
        let value = fields
            .next("option value")
            .map_err(|_| PacketError::OptionWithoutValue(name.chars().take(32).collect()))?;
        if options.len() == MAX_OPTIONS {
            return Err(PacketError::TooManyOptions);
        }
        options.push((name, value));
    }
    Ok(options)
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, PacketError> {
    let mut fields = Fields(body);
    let filename = fields.next("file name")?;
    if filename.is_empty() {
        return Err(PacketError::Empty("file name"));
    }
    let mode = fields.next("transfer mode")?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case("mail") {
        Mode::Mail
    } else {
        return Err(PacketError::UnknownMode(mode.chars().take(32).collect()));
    };
    let options = parse_options(&mut fields)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

/// Decodes one datagram.
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    if datagram.len() < 4 {
        return Err(PacketError::TooShort(datagram.len()));
    }
    let opcode = u16::from_be_bytes([datagram[0], datagram[1]]);
    let body = &datagram[2..];
    let number = u16::from_be_bytes([datagram[2], datagram[3]]);
    Ok(match opcode {
        1 => Packet::Read(parse_request(body)?),
        2 => Packet::Write(parse_request(body)?),
        3 => Packet::Data {
            block: number,
            data: &datagram[4..],
        },
        4 => Packet::Ack { block: number },
        5 => {
            // The message is for people; a missing NUL or bad UTF-8 should not hide the code.
            let raw = &datagram[4..];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Packet::Error {
                code: ErrorCode::from_u16(number),
                message: String::from_utf8_lossy(&raw[..end]).into_owned(),
            }
        }
        6 => Packet::OptionAck(parse_options(&mut Fields(body))?),
        other => return Err(PacketError::UnknownOpcode(other)),
    })
}

/// The 4-byte header of a DATA packet.
pub fn data_header(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, 3, hi, lo]
}

/// An ACK packet.
pub fn encode_ack(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, 4, hi, lo]
}

/// An ERROR packet; the message is truncated to keep the packet within 512 bytes.
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len().min(400));
    out.extend_from_slice(&[0, 5]);
    out.extend_from_slice(&(code as u16).to_be_bytes());
    let mut end = message.len().min(400);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    out.extend(message[..end].bytes().filter(|&b| b != 0));
    out.push(0);
    out
}

/// An OACK packet acknowledging `options`.
pub fn encode_oack<N: AsRef<str>, V: fmt::Display>(options: &[(N, V)]) -> Vec<u8> {
    let mut out = vec![0, 6];
    for (name, value) in options {
        out.extend_from_slice(name.as_ref().as_bytes());
        out.push(0);
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(0);
    }
    out
}

/// A read request, as clients send it (used by tests and fuzzing seeds).
pub fn encode_read_request(filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0, 1];
    for field in [filename, mode] {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_requests_with_options_round_trip() {
        let bytes = encode_read_request(
            "pxelinux.0",
            "OCTET",
            &[("blksize", "1468"), ("tsize", "0"), ("windowsize", "8")],
        );
        let Packet::Read(request) = parse(&bytes).unwrap() else {
            panic!("not a read request")
        };
        assert_eq!(request.filename, "pxelinux.0");
        assert_eq!(request.mode, Mode::Octet);
        assert_eq!(
            request.options,
            [("blksize", "1468"), ("tsize", "0"), ("windowsize", "8")]
        );
    }

    #[test]
    fn acks_data_errors_and_oacks_decode() {
        assert_eq!(parse(&encode_ack(7)).unwrap(), Packet::Ack { block: 7 });
        let mut data = data_header(0xfffe).to_vec();
        data.extend_from_slice(b"abc");
        assert_eq!(
            parse(&data).unwrap(),
            Packet::Data {
                block: 0xfffe,
                data: b"abc"
            }
        );
        assert_eq!(
            parse(&encode_error(ErrorCode::FileNotFound, "no such file")).unwrap(),
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "no such file".into()
            }
        );
        // An error without its terminating NUL still yields the code.
        assert!(matches!(
            parse(&[0, 5, 0, 8, b'x']).unwrap(),
            Packet::Error {
                code: ErrorCode::OptionRefused,
                ..
            }
        ));
        assert_eq!(
            parse(&encode_oack(&[("blksize", 1468)])).unwrap(),
            Packet::OptionAck(vec![("blksize", "1468")])
        );
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        let cases: &[(&[u8], PacketError)] = &[
            (b"", PacketError::TooShort(0)),
            (b"\x00\x01a", PacketError::TooShort(3)),
            (b"\x00\x09abcd", PacketError::UnknownOpcode(9)),
            (b"\x00\x01file", PacketError::Unterminated("file name")),
            (
                b"\x00\x01file\x00octet",
                PacketError::Unterminated("transfer mode"),
            ),
            (b"\x00\x01\x00octet\x00", PacketError::Empty("file name")),
            (
                b"\x00\x01f\x00binary\x00",
                PacketError::UnknownMode("binary".into()),
            ),
            (
                b"\x00\x01\xff\xfe\x00octet\x00",
                PacketError::NotUtf8("file name"),
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00",
                PacketError::OptionWithoutValue("blksize".into()),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(bytes).as_ref(), Err(expected), "{bytes:?}");
        }
        let mut many = vec![0, 1, b'f', 0, b'o', b'c', b't', b'e', b't', 0];
        for _ in 0..=MAX_OPTIONS {
            many.extend_from_slice(b"x\x001\x00");
        }
        assert_eq!(parse(&many), Err(PacketError::TooManyOptions));
    }

    #[test]
    fn error_messages_are_bounded_and_nul_free() {
        let packet = encode_error(ErrorCode::NotDefined, &"é\0".repeat(1000));
        assert!(packet.len() <= 405);
        let message = &packet[4..packet.len() - 1];
        assert!(!message.contains(&0));
        assert_eq!(packet.last(), Some(&0));
    }
}
