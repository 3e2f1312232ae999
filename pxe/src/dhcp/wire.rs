//! Decoding DHCPv4 requests safely.
//!
//! The wire format is dhcproto's, but dhcproto 0.15 trusts some lengths: option 81 shorter
//! than 3 bytes or option 151 of length 0 underflow a subtraction, options 80, 94 and
//! 152–155 of the wrong length trip `debug_assert!`s, and `Message::chaddr` slices by an
//! unchecked `hlen`. In a build with debug assertions or overflow checks (tests, fuzzing)
//! each of these is a panic a single packet could trigger. [`decode_request`] screens the
//! raw bytes first — structure, cookie, `hlen`, every option's bounds and the lengths those
//! decoders assume — and only then hands the packet to dhcproto.

use dhcproto::v4::{Message, Opcode};
use dhcproto::{Decodable, Decoder};

/// Offset of the options (after the fixed header and the magic cookie).
const OPTIONS_OFFSET: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Why a datagram was not treated as a DHCP request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    #[error("{0} bytes is too short for a DHCP message (at least 240)")]
    TooShort(usize),
    #[error("not a BOOTREQUEST (op {0})")]
    NotARequest(u8),
    #[error("hardware address length {0} exceeds 16")]
    HardwareAddressLength(u8),
    #[error("the magic cookie is missing")]
    NoMagicCookie,
    #[error("option {code} runs past the end of the packet")]
    TruncatedOption { code: u8 },
    #[error("option {code} has length {len}, which is invalid for it")]
    OptionLength { code: u8, len: usize },
    #[error("the packet does not decode: {0}")]
    Decode(String),
}

/// Whether a run of option `code` with total length `len` is acceptable to dhcproto's
/// decoders without tripping their assumptions.
fn length_ok(code: u8, len: usize) -> bool {
    match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    }
}

/// Walks the options the way dhcproto does (consecutive occurrences of one code are
/// concatenated, RFC 3396) and checks every run.
fn screen_options(options: &[u8]) -> Result<(), Malformed> {
    let mut run: Option<(u8, usize)> = None;
    let mut at = 0;
    let finish = |run: Option<(u8, usize)>| match run {
        Some((code, len)) if !length_ok(code, len) => Err(Malformed::OptionLength { code, len }),
        _ => Ok(()),
    };
    while let Some(&code) = options.get(at) {
        match code {
            0 => {
                finish(run.take())?;
                at += 1;
            }
            255 => break,
            _ => {
                let len = usize::from(
                    *options
                        .get(at + 1)
                        .ok_or(Malformed::TruncatedOption { code })?,
                );
                if at + 2 + len > options.len() {
                    return Err(Malformed::TruncatedOption { code });
                }
                run = match run {
                    Some((previous, total)) if previous == code => Some((code, total + len)),
                    other => {
                        finish(other)?;
                        Some((code, len))
                    }
                };
                at += 2 + len;
            }
        }
    }
    finish(run)
}

/// Screens and decodes a datagram received on a DHCP server port.
pub fn decode_request(datagram: &[u8]) -> Result<Message, Malformed> {
    if datagram.len() < OPTIONS_OFFSET {
        return Err(Malformed::TooShort(datagram.len()));
    }
    if datagram[0] != 1 {
        return Err(Malformed::NotARequest(datagram[0]));
    }
    if datagram[2] > 16 {
        return Err(Malformed::HardwareAddressLength(datagram[2]));
    }
    if datagram[236..240] != MAGIC_COOKIE {
        return Err(Malformed::NoMagicCookie);
    }
    screen_options(&datagram[OPTIONS_OFFSET..])?;
    let message = Message::decode(&mut Decoder::new(datagram))
        .map_err(|err| Malformed::Decode(err.to_string()))?;
    if message.opcode() != Opcode::BootRequest {
        return Err(Malformed::NotARequest(datagram[0]));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(options: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; OPTIONS_OFFSET];
        bytes[0] = 1;
        bytes[1] = 1;
        bytes[2] = 6;
        bytes[28..34].copy_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
        bytes[236..240].copy_from_slice(&MAGIC_COOKIE);
        bytes.extend_from_slice(options);
        bytes
    }

    #[test]
    fn a_minimal_discover_decodes() {
        let message = decode_request(&packet(&[53, 1, 1, 255])).unwrap();
        assert_eq!(message.chaddr(), [0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(
            message.opts().msg_type(),
            Some(dhcproto::v4::MessageType::Discover)
        );
    }

    #[test]
    fn structural_damage_is_rejected() {
        assert_eq!(decode_request(&[1; 100]), Err(Malformed::TooShort(100)));
        let mut reply = packet(&[255]);
        reply[0] = 2;
        assert_eq!(decode_request(&reply), Err(Malformed::NotARequest(2)));
        let mut long_hlen = packet(&[255]);
        long_hlen[2] = 200;
        assert_eq!(
            decode_request(&long_hlen),
            Err(Malformed::HardwareAddressLength(200))
        );
        let mut no_cookie = packet(&[255]);
        no_cookie[236] = 0;
        assert_eq!(decode_request(&no_cookie), Err(Malformed::NoMagicCookie));
        assert_eq!(
            decode_request(&packet(&[53, 1, 1, 12, 200, b'x'])),
            Err(Malformed::TruncatedOption { code: 12 })
        );
        assert_eq!(
            decode_request(&packet(&[53, 1, 1, 12])),
            Err(Malformed::TruncatedOption { code: 12 })
        );
    }

    #[test]
    fn lengths_dhcproto_would_panic_on_are_rejected() {
        for options in [
            &[81, 2, 0, 0, 255][..],
            &[81, 1, 0, 81, 1, 0, 255][..], // concatenated: still 2 bytes
            &[151, 0, 255][..],
            &[94, 2, 1, 2, 255][..],
            &[80, 1, 0, 255][..],
            &[152, 3, 0, 0, 0, 255][..],
        ] {
            assert!(
                matches!(
                    decode_request(&packet(options)),
                    Err(Malformed::OptionLength { .. })
                ),
                "{options:?}"
            );
        }
        // Split by a pad, the runs are separate, and each is checked.
        assert!(decode_request(&packet(&[81, 3, 0, 0, 0, 0, 81, 1, 0, 255])).is_err());
        // Valid lengths pass.
        assert!(decode_request(&packet(&[81, 3, 0, 0, 0, 94, 3, 1, 2, 0, 80, 0, 255])).is_ok());
    }

    #[test]
    fn options_after_the_end_marker_are_ignored() {
        assert!(decode_request(&packet(&[53, 1, 1, 255, 81, 0])).is_ok());
    }
}
