//! What the engine needs to know about a BMC address: which protocol family drives it and
//! how the host is booted into the agent.
//!
//! Full parsing and validation of BMC addresses belongs to `rivet-bmc`; the engine only
//! classifies the scheme (Metal³'s table in `metal3-api` §1.3), which decides the boot
//! method and whether the host counts against the provisioning capacity.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How the agent reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMethod {
    /// DHCP → iPXE → agent kernel and initramfs over HTTP (needs the provisioning network).
    NetworkBoot,
    /// A per-host agent ISO attached as a virtual CD through the BMC (no provisioning
    /// network; exempt from the capacity limit, as in Metal³).
    VirtualMedia,
    /// The firmware fetches the boot file itself over HTTP(S) from a URL set through the BMC.
    UefiHttp,
}

impl fmt::Display for BootMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetworkBoot => "network boot",
            Self::VirtualMedia => "virtual media",
            Self::UefiHttp => "UEFI HTTP boot",
        })
    }
}

/// The driver family behind an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BmcProtocol {
    Ipmi,
    Redfish,
    /// The engine's in-process simulator (`sim://<machine>`), for tests and benchmarks.
    Simulated,
}

/// The classification of a BMC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BmcKind {
    pub protocol: BmcProtocol,
    pub boot: BootMethod,
}

/// An address whose scheme no driver handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the BMC address is empty")]
    Empty,
    #[error(
        "unknown BMC address scheme `{0}` (known: ipmi, libvirt, redfish, ilo5-redfish, \
         idrac-redfish, redfish-virtualmedia, ilo5-virtualmedia, idrac-virtualmedia, \
         redfish-uefihttp, each optionally +http/+https, and sim, sim+virtualmedia, sim+uefihttp)"
    )]
    UnknownScheme(String),
    #[error("the BMC address `{0}` has no host")]
    NoHost(String),
}

impl BmcKind {
    /// Classifies `address` by its scheme. No scheme (`host`, `host:port`) means IPMI, as in
    /// Metal³.
    pub fn classify(address: &str) -> Result<Self, AddressError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        let Some((scheme, rest)) = address.split_once("://") else {
            // `ipmi:host` is IPMI too; anything else without `://` is a bare host.
            return Ok(Self::new(BmcProtocol::Ipmi, BootMethod::NetworkBoot));
        };
        if rest.trim_matches('/').is_empty() {
            return Err(AddressError::NoHost(address.to_owned()));
        }
        let scheme = scheme.to_ascii_lowercase();
        let base = scheme
            .strip_suffix("+https")
            .or_else(|| scheme.strip_suffix("+http"))
            .unwrap_or(&scheme);
        let kind = match base {
            "ipmi" | "libvirt" => Self::new(BmcProtocol::Ipmi, BootMethod::NetworkBoot),
            "redfish" | "ilo5-redfish" | "idrac-redfish" => {
                Self::new(BmcProtocol::Redfish, BootMethod::NetworkBoot)
            }
            "redfish-virtualmedia" | "ilo5-virtualmedia" | "idrac-virtualmedia" => {
                Self::new(BmcProtocol::Redfish, BootMethod::VirtualMedia)
            }
            "redfish-uefihttp" => Self::new(BmcProtocol::Redfish, BootMethod::UefiHttp),
            "sim" => Self::new(BmcProtocol::Simulated, BootMethod::NetworkBoot),
            "sim+virtualmedia" => Self::new(BmcProtocol::Simulated, BootMethod::VirtualMedia),
            "sim+uefihttp" => Self::new(BmcProtocol::Simulated, BootMethod::UefiHttp),
            _ => return Err(AddressError::UnknownScheme(scheme)),
        };
        Ok(kind)
    }

    const fn new(protocol: BmcProtocol, boot: BootMethod) -> Self {
        Self { protocol, boot }
    }

    /// Whether the agent is found by the boot MAC (DHCP or UEFI HTTP), so a MAC is required.
    pub const fn needs_boot_mac(self) -> bool {
        !matches!(self.boot, BootMethod::VirtualMedia)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_boot_methods() {
        let cases = [
            ("10.0.0.1", BmcProtocol::Ipmi, BootMethod::NetworkBoot),
            ("10.0.0.1:623", BmcProtocol::Ipmi, BootMethod::NetworkBoot),
            (
                "ipmi://10.0.0.1:623",
                BmcProtocol::Ipmi,
                BootMethod::NetworkBoot,
            ),
            (
                "libvirt://192.168.122.1/",
                BmcProtocol::Ipmi,
                BootMethod::NetworkBoot,
            ),
            (
                "redfish://bmc/redfish/v1/Systems/1",
                BmcProtocol::Redfish,
                BootMethod::NetworkBoot,
            ),
            (
                "idrac-redfish+https://bmc/x",
                BmcProtocol::Redfish,
                BootMethod::NetworkBoot,
            ),
            (
                "redfish-virtualmedia+http://bmc:8000/redfish/v1/Systems/1",
                BmcProtocol::Redfish,
                BootMethod::VirtualMedia,
            ),
            (
                "ilo5-virtualmedia://bmc/",
                BmcProtocol::Redfish,
                BootMethod::VirtualMedia,
            ),
            (
                "REDFISH-UEFIHTTP://bmc/1",
                BmcProtocol::Redfish,
                BootMethod::UefiHttp,
            ),
            (
                "sim://rack1-07",
                BmcProtocol::Simulated,
                BootMethod::NetworkBoot,
            ),
            (
                "sim+virtualmedia://m",
                BmcProtocol::Simulated,
                BootMethod::VirtualMedia,
            ),
            (
                "sim+uefihttp://m",
                BmcProtocol::Simulated,
                BootMethod::UefiHttp,
            ),
        ];
        for (address, protocol, boot) in cases {
            let kind = BmcKind::classify(address).unwrap();
            assert_eq!((kind.protocol, kind.boot), (protocol, boot), "{address}");
        }
        assert!(
            !BmcKind::classify("sim+virtualmedia://m")
                .unwrap()
                .needs_boot_mac()
        );
        assert!(
            BmcKind::classify("redfish://bmc/1")
                .unwrap()
                .needs_boot_mac()
        );
    }

    #[test]
    fn unknown_or_empty_addresses_are_refused() {
        assert_eq!(BmcKind::classify("  "), Err(AddressError::Empty));
        assert!(
            matches!(BmcKind::classify("irmc://bmc"), Err(AddressError::UnknownScheme(s)) if s == "irmc")
        );
        assert!(matches!(
            BmcKind::classify("redfish://"),
            Err(AddressError::NoHost(_))
        ));
    }
}
