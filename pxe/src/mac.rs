//! Ethernet MAC addresses as the host table, DHCP and URLs spell them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address.
///
/// Parses `52:54:00:12:34:56`, `52-54-00-12-34-56` and `525400123456` (any case); displays
/// lower-case with colons. [`MacAddr::hyphenated`] is the form used in URLs, where a colon
/// would need escaping in some clients.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The address with these six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// `52-54-00-12-34-56`: the form iPXE produces with `${mac:hexhyp}`.
    pub fn hyphenated(&self) -> String {
        self.join('-')
    }

    fn join(&self, separator: char) -> String {
        let mut out = String::with_capacity(17);
        for (i, octet) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            out.push_str(&format!("{octet:02x}"));
        }
        out
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join(':'))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a MAC address (expected six hexadecimal octets such as 52:54:00:12:34:56)"
)]
pub struct ParseMacError {
    input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseMacError {
            input: input.chars().take(64).collect(),
        };
        let digits: Vec<u8> = if input.len() == 12 {
            input.bytes().collect()
        } else {
            // Exactly one separator kind, between every octet.
            let separator = input.as_bytes().get(2).copied().ok_or_else(error)?;
            if separator != b':' && separator != b'-' {
                return Err(error());
            }
            let parts: Vec<&str> = input.split(separator as char).collect();
            if parts.len() != 6 || parts.iter().any(|part| part.len() != 2) {
                return Err(error());
            }
            parts.concat().into_bytes()
        };
        // from_str_radix alone would accept a leading `+`.
        if digits.len() != 12 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(error());
        }
        let mut octets = [0u8; 6];
        for (octet, pair) in octets.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| error())?;
            *octet = u8::from_str_radix(pair, 16).map_err(|_| error())?;
        }
        Ok(Self(octets))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_spellings_and_prints_one() {
        for text in ["52:54:00:AB:cd:01", "52-54-00-ab-CD-01", "525400abcd01"] {
            let mac: MacAddr = text.parse().unwrap();
            assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
            assert_eq!(mac.hyphenated(), "52-54-00-ab-cd-01");
        }
    }

    #[test]
    fn rejects_near_misses() {
        for text in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "52:54-00:ab:cd:01",
            "5:254:00:ab:cd:01",
            "52:54:00:ab:cd:0g",
            "+2:54:00:ab:cd:01",
            "525400abcd0é",
        ] {
            assert!(text.parse::<MacAddr>().is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let mac: MacAddr = serde_json::from_str("\"52:54:00:12:34:56\"").unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"52:54:00:12:34:56\""
        );
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }
}
