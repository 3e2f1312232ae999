//! What a DHCP request says about the machine sending it: its identity, whether it is a
//! network-boot client, which firmware and architecture it runs, and whether it is iPXE.

use dhcproto::v4::{DhcpOption, HType, Message, OptionCode};

use super::leases::ClientId;
use crate::mac::MacAddr;

/// The network-boot flavour announced in the vendor class (option 60).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootClient {
    /// `PXEClient…`: PXE ROMs, EDK2's PXE driver, iPXE.
    Pxe,
    /// `HTTPClient…`: UEFI HTTP boot.
    Http,
    /// Anything else (an operating system's DHCP client).
    None,
}

/// The pre-boot environment, from option 93 (IANA "Processor Architecture Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// 0: x86 BIOS.
    Bios,
    /// 6 (and 15 over HTTP): 32-bit x86 UEFI.
    EfiIa32,
    /// 7 or 9 (and 16 over HTTP): x86-64 UEFI. RFC 4578 swapped 7 and 9 (erratum 4624);
    /// firmware in the field sends 7, older iPXE 9.
    EfiX64,
    /// 10 (and 18 over HTTP): 32-bit ARM UEFI.
    EfiArm32,
    /// 11 (and 19 over HTTP): 64-bit ARM UEFI.
    EfiArm64,
    /// Any other code.
    Other(u16),
}

impl Firmware {
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => Self::Bios,
            6 | 15 => Self::EfiIa32,
            7 | 9 | 16 => Self::EfiX64,
            10 | 18 => Self::EfiArm32,
            11 | 19 => Self::EfiArm64,
            other => Self::Other(other),
        }
    }
}

/// The facts about a request the server decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The Ethernet address, when the hardware is Ethernet (htype 1, hlen 6).
    pub mac: Option<MacAddr>,
    pub id: ClientId,
    pub boot: BootClient,
    /// The first architecture in option 93, if sent.
    pub firmware: Option<Firmware>,
    /// iPXE identifies itself with user class "iPXE" (option 77) and its own option 175.
    pub ipxe: bool,
    /// The client machine identifier (option 97), echoed to PXE clients.
    pub uuid: Option<Vec<u8>>,
}

impl ClientInfo {
    pub fn from_message(message: &Message) -> Self {
        let chaddr = message.chaddr();
        let mac = (message.htype() == HType::Eth && chaddr.len() == 6).then(|| {
            let mut octets = [0u8; 6];
            octets.copy_from_slice(chaddr);
            MacAddr::new(octets)
        });
        let options = message.opts();
        let id = match options.get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(bytes)) if !bytes.is_empty() => {
                ClientId::from_option(bytes)
            }
            _ => ClientId::from_hardware(u8::from(message.htype()), chaddr),
        };
        let boot = match options.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(b"PXEClient") => {
                BootClient::Pxe
            }
            Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(b"HTTPClient") => {
                BootClient::Http
            }
            _ => BootClient::None,
        };
        let firmware = match options.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(arch)) => {
                Some(Firmware::from_code(u16::from(*arch)))
            }
            _ => None,
        };
        let user_class_is_ipxe = matches!(
            options.get(OptionCode::UserClass),
            Some(DhcpOption::UserClass(class)) if class.windows(4).any(|w| w == b"iPXE")
        );
        let ipxe = user_class_is_ipxe || options.get(OptionCode::Unknown(175)).is_some();
        let uuid = match options.get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(uuid)) => Some(uuid.clone()),
            _ => None,
        };
        Self {
            mac,
            id,
            boot,
            firmware,
            ipxe,
            uuid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, UnknownOption};
    use std::net::Ipv4Addr;

    fn message(options: Vec<DhcpOption>) -> Message {
        let mut message = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 0x12, 0x34, 0x56],
        );
        for option in options {
            message.opts_mut().insert(option);
        }
        message
    }

    #[test]
    fn a_bios_pxe_rom() {
        let info = ClientInfo::from_message(&message(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(0)),
            DhcpOption::ClientMachineIdentifier(vec![0; 17]),
        ]));
        assert_eq!(info.mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert_eq!(info.boot, BootClient::Pxe);
        assert_eq!(info.firmware, Some(Firmware::Bios));
        assert!(!info.ipxe);
        assert_eq!(info.uuid.as_deref(), Some(&[0u8; 17][..]));
        assert_eq!(
            info.id,
            ClientId::from_hardware(1, &[0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
    }

    #[test]
    fn ipxe_is_recognised_by_user_class_or_option_175() {
        let by_class = ClientInfo::from_message(&message(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003010".to_vec()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ]));
        assert!(by_class.ipxe);
        let by_option =
            ClientInfo::from_message(&message(vec![DhcpOption::Unknown(UnknownOption::new(
                OptionCode::Unknown(175),
                vec![177, 5, 1, 0x1a, 0xf4, 0x10, 0],
            ))]));
        assert!(by_option.ipxe);
    }

    #[test]
    fn uefi_http_boot_and_architectures() {
        let info = ClientInfo::from_message(&message(vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(16)),
            DhcpOption::ClientIdentifier(vec![0xff, 1, 2, 3]),
        ]));
        assert_eq!(info.boot, BootClient::Http);
        assert_eq!(info.firmware, Some(Firmware::EfiX64));
        assert_eq!(info.id, ClientId::from_option(&[0xff, 1, 2, 3]));
        for (code, firmware) in [
            (7, Firmware::EfiX64),
            (9, Firmware::EfiX64),
            (11, Firmware::EfiArm64),
            (19, Firmware::EfiArm64),
            (6, Firmware::EfiIa32),
            (10, Firmware::EfiArm32),
            (42, Firmware::Other(42)),
        ] {
            assert_eq!(Firmware::from_code(code), firmware);
        }
    }

    #[test]
    fn an_operating_system_client() {
        let info = ClientInfo::from_message(&message(vec![DhcpOption::ClassIdentifier(
            b"udhcp 1.35.0".to_vec(),
        )]));
        assert_eq!(info.boot, BootClient::None);
        assert_eq!(info.firmware, None);
    }
}
