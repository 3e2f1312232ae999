//! Facts about the serving network interface.

use std::net::Ipv4Addr;

use crate::mac::MacAddr;

/// What the boot services need to know about their interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    /// The first IPv4 address and its prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub mac: Option<MacAddr>,
}

/// Why an interface could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InterfaceError {
    #[error("network interface `{name}` does not exist")]
    NotFound { name: String },
    #[error("cannot list network interfaces: {0}")]
    List(nix::Error),
}

/// Looks up `name`'s index, first IPv4 address and MAC address.
pub fn interface_info(name: &str) -> Result<InterfaceInfo, InterfaceError> {
    let index = nix::net::if_::if_nametoindex(name).map_err(|_| InterfaceError::NotFound {
        name: name.to_owned(),
    })?;
    let mut info = InterfaceInfo {
        name: name.to_owned(),
        index,
        ipv4: None,
        mac: None,
    };
    for entry in nix::ifaddrs::getifaddrs().map_err(InterfaceError::List)? {
        if entry.interface_name != name {
            continue;
        }
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in()
            && info.ipv4.is_none()
        {
            let prefix = entry
                .netmask
                .and_then(|mask| mask.as_sockaddr_in().map(|mask| mask.ip()))
                .map(|mask| u32::from(mask).count_ones() as u8)
                .unwrap_or(32);
            info.ipv4 = Some((v4.ip(), prefix));
        } else if let Some(link) = address.as_link_addr()
            && let Some(octets) = link.addr()
            && octets != [0; 6]
        {
            info.mac = Some(MacAddr::new(octets));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_127_0_0_1_slash_8() {
        let info = interface_info("lo").unwrap();
        assert_eq!(info.ipv4, Some((Ipv4Addr::LOCALHOST, 8)));
        assert!(info.index > 0);
    }

    #[test]
    fn a_missing_interface_is_named() {
        let err = interface_info("rivet-nope0").unwrap_err();
        assert!(err.to_string().contains("rivet-nope0"));
    }
}
