//! Identifiers: a host's engine-assigned id and MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The engine's identifier for a host: 128 random bits shown as a UUID (version 4 layout).
///
/// This is what BareMetalHost `status.provisioning.ID` carries. Names are chosen by users;
/// ids never change and are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(u128);

impl HostId {
    /// An id from 16 random bytes, with the UUID version and variant bits set.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let raw = u128::from_be_bytes(bytes);
        let versioned = (raw & !(0xf << 76)) | (0x4 << 76);
        Self((versioned & !(0x3 << 62)) | (0x2 << 62))
    }

    pub const fn from_u128(raw: u128) -> Self {
        Self(raw)
    }

    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// A string that is not a host id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host id (expected a UUID such as 0b7c6f4e-2d1a-4c3b-9e8f-1a2b3c4d5e6f)")]
pub struct InvalidHostId(String);

impl FromStr for HostId {
    type Err = InvalidHostId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let groups: Vec<&str> = text.split('-').collect();
        let lengths = [8, 4, 4, 4, 12];
        let shaped = groups.len() == 5
            && groups.iter().zip(lengths).all(|(group, len)| {
                group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit())
            });
        if !shaped {
            return Err(InvalidHostId(text.to_owned()));
        }
        u128::from_str_radix(&groups.concat(), 16)
            .map(Self)
            .map_err(|_| InvalidHostId(text.to_owned()))
    }
}

impl Serialize for HostId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ethernet MAC address, shown as lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex pairs such as 52:54:00:12:34:56)")]
pub struct InvalidMac(String);

impl FromStr for MacAddr {
    type Err = InvalidMac;

    /// Accepts `:` or `-` separators in either case, as BareMetalHost `bootMACAddress` does.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidMac(text.to_owned());
        let separator = if text.contains('-') { '-' } else { ':' };
        let mut octets = [0u8; 6];
        let mut parts = text.split(separator);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 {
                return Err(invalid());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
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
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_look_like_v4_uuids_and_round_trip() {
        let id = HostId::from_random([0xff; 16]);
        let text = id.to_string();
        assert_eq!(text, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(text.parse::<HostId>().unwrap(), id);
        let zero = HostId::from_random([0; 16]).to_string();
        assert_eq!(zero, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn host_ids_reject_malformed_text() {
        for text in [
            "",
            "not-a-uuid",
            "ffffffff-ffff-4fff-bfff-fffffffffff",
            "ffffffffffff4fffbfffffffffffffff",
            "gfffffff-ffff-4fff-bfff-ffffffffffff",
        ] {
            assert!(text.parse::<HostId>().is_err(), "{text}");
        }
    }

    #[test]
    fn macs_parse_both_spellings() {
        let mac: MacAddr = "52:54:00:AB:cd:0F".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), mac);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52:54:00:ab:cd:0g",
            "5254.00ab.cd0f",
            "52:54:00:ab:cd:f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
