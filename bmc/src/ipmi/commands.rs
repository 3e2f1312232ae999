//! The IPMI commands Rivet sends, as request builders and response decoders.
//!
//! Builders return a [`Request`]; decoders take the data bytes of a successful response
//! (completion code already checked by [`Response::into_data`]).

use crate::BmcError;

use super::Privilege;
use super::wire::Response;

const NETFN_CHASSIS: u8 = 0x00;
const NETFN_APP: u8 = 0x06;

/// An IPMI request: network function, command and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// The command's name in the IPMI specification, for errors and logs.
    pub name: &'static str,
}

impl Request {
    /// Any command, for callers that need one Rivet has no builder for.
    pub fn raw(netfn: u8, cmd: u8, data: Vec<u8>) -> Self {
        Request {
            netfn,
            cmd,
            data,
            name: "raw request",
        }
    }

    /// Whether `response` answers this request (same command, response network function).
    pub(crate) fn is_answered_by(&self, response: &Response) -> bool {
        response.cmd == self.cmd && response.netfn == self.netfn | 1
    }
}

impl Response {
    /// The response data if the completion code is zero, otherwise the error it names.
    pub fn into_data(self, request: &Request) -> Result<Vec<u8>, BmcError> {
        if self.completion_code == 0 {
            Ok(self.data)
        } else {
            Err(completion_error(request.name, self.completion_code))
        }
    }
}

/// The error for a non-zero completion code (IPMI 2.0 table 5-2).
pub(crate) fn completion_error(operation: &'static str, code: u8) -> BmcError {
    let (meaning, transient) = match code {
        0xC0 => ("node busy", true),
        0xC1 => ("invalid command", false),
        0xC2 => ("command invalid for the given LUN", false),
        0xC3 => ("timeout while processing the command", true),
        0xC4 => ("out of space", true),
        0xC5 => ("reservation cancelled or invalid reservation ID", true),
        0xC6 => ("request data truncated", false),
        0xC7 => ("request data length invalid", false),
        0xC8 => ("request data field length limit exceeded", false),
        0xC9 => ("parameter out of range", false),
        0xCA => ("cannot return the number of requested data bytes", false),
        0xCB => ("requested sensor, data or record not present", false),
        0xCC => ("invalid data field in request", false),
        0xCD => ("command illegal for the sensor or record type", false),
        0xCE => ("command response could not be provided", true),
        0xCF => ("cannot execute a duplicated request", false),
        0xD0 => ("SDR repository in update mode", true),
        0xD1 => ("device in firmware update mode", true),
        0xD2 => ("BMC initialization in progress", true),
        0xD3 => ("destination unavailable", true),
        0xD4 => ("insufficient privilege level", false),
        0xD5 => ("command not supported in the present state", false),
        0xD6 => ("command sub-function disabled or unavailable", false),
        0xFF => ("unspecified error", true),
        0x80..=0xBE => ("command-specific error", false),
        _ => ("unknown completion code", false),
    };
    BmcError::IpmiRefused {
        operation,
        code,
        meaning,
        transient,
    }
}

/// Get Channel Authentication Capabilities for the channel the request arrives on, asking
/// for the IPMI 2.0 extended data.
pub(crate) fn get_channel_auth_capabilities(privilege: Privilege) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: 0x38,
        data: vec![0x8E, privilege.code()],
        name: "Get Channel Authentication Capabilities",
    }
}

/// What Get Channel Authentication Capabilities says about RMCP+ logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthCapabilities {
    pub ipmi_v2: bool,
    /// A BMC key (Kg) is configured: two-key logins, which Rivet does not do.
    pub kg_set: bool,
}

impl AuthCapabilities {
    pub(crate) fn decode(data: &[u8]) -> Result<Self, BmcError> {
        if data.len() < 8 {
            return Err(BmcError::Protocol(format!(
                "Get Channel Authentication Capabilities returned {} bytes, expected 8",
                data.len()
            )));
        }
        // Byte 1 bit 7: extended capabilities present; byte 3 bit 1: IPMI 2.0 supported.
        Ok(AuthCapabilities {
            ipmi_v2: data[1] & 0x80 != 0 && data[3] & 0x02 != 0,
            kg_set: data[2] & 0x20 != 0,
        })
    }
}

/// Set Session Privilege Level: sessions start at User and must be raised explicitly.
pub(crate) fn set_session_privilege(privilege: Privilege) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: 0x3B,
        data: vec![privilege.code()],
        name: "Set Session Privilege Level",
    }
}

/// Close Session for the session with the BMC's ID `bmc_session_id`.
pub(crate) fn close_session(bmc_session_id: u32) -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: 0x3C,
        data: bmc_session_id.to_le_bytes().to_vec(),
        name: "Close Session",
    }
}

/// Get Device ID.
pub fn get_device_id() -> Request {
    Request {
        netfn: NETFN_APP,
        cmd: 0x01,
        data: Vec::new(),
        name: "Get Device ID",
    }
}

/// The answer to Get Device ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    pub device_id: u8,
    pub device_revision: u8,
    /// Major and minor (decoded from BCD) firmware revision.
    pub firmware_revision: (u8, u8),
    /// Major and minor IPMI version, e.g. (2, 0).
    pub ipmi_version: (u8, u8),
    /// IANA enterprise number of the manufacturer (Supermicro is 10876).
    pub manufacturer_id: u32,
    pub product_id: u16,
}

impl DeviceId {
    pub fn decode(data: &[u8]) -> Result<Self, BmcError> {
        if data.len() < 11 {
            return Err(short("Get Device ID", data.len(), 11));
        }
        let bcd = |byte: u8| (byte >> 4) * 10 + (byte & 0x0F);
        Ok(DeviceId {
            device_id: data[0],
            device_revision: data[1] & 0x0F,
            firmware_revision: (data[2] & 0x7F, bcd(data[3])),
            ipmi_version: (data[4] & 0x0F, data[4] >> 4),
            manufacturer_id: u32::from_le_bytes([data[6], data[7], data[8] & 0x0F, 0]),
            product_id: u16::from_le_bytes([data[9], data[10]]),
        })
    }
}

/// Get Chassis Status.
pub fn get_chassis_status() -> Request {
    Request {
        netfn: NETFN_CHASSIS,
        cmd: 0x01,
        data: Vec::new(),
        name: "Get Chassis Status",
    }
}

/// The answer to Get Chassis Status (IPMI 2.0 table 28-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    pub power_on: bool,
    pub power_overload: bool,
    pub interlock: bool,
    pub power_fault: bool,
    pub power_control_fault: bool,
    pub chassis_intrusion: bool,
    pub drive_fault: bool,
    pub cooling_fault: bool,
}

impl ChassisStatus {
    pub fn decode(data: &[u8]) -> Result<Self, BmcError> {
        if data.len() < 3 {
            return Err(short("Get Chassis Status", data.len(), 3));
        }
        let (power, misc) = (data[0], data[2]);
        Ok(ChassisStatus {
            power_on: power & 0x01 != 0,
            power_overload: power & 0x02 != 0,
            interlock: power & 0x04 != 0,
            power_fault: power & 0x08 != 0,
            power_control_fault: power & 0x10 != 0,
            chassis_intrusion: misc & 0x01 != 0,
            drive_fault: misc & 0x04 != 0,
            cooling_fault: misc & 0x08 != 0,
        })
    }
}

/// The Chassis Control actions (IPMI 2.0 table 28-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChassisAction {
    PowerDown = 0x00,
    PowerUp = 0x01,
    PowerCycle = 0x02,
    HardReset = 0x03,
    PulseDiagnosticInterrupt = 0x04,
    /// ACPI soft shutdown (emulated over-temperature power button).
    SoftShutdown = 0x05,
}

/// Chassis Control.
pub fn chassis_control(action: ChassisAction) -> Request {
    Request {
        netfn: NETFN_CHASSIS,
        cmd: 0x02,
        data: vec![action as u8],
        name: "Chassis Control",
    }
}

const BOOT_PARAM_VALID_BIT_CLEARING: u8 = 3;
const BOOT_PARAM_FLAGS: u8 = 5;

/// Set System Boot Options parameter 3 with bit 3 set: the BMC must not clear the boot
/// flags' valid bit when its 60-second timer runs out (Ironic's `raw 0x00 0x08 0x03 0x08`),
/// so an override survives a host that takes longer than a minute to reset.
pub fn keep_boot_flags_past_timeout() -> Request {
    Request {
        netfn: NETFN_CHASSIS,
        cmd: 0x08,
        data: vec![BOOT_PARAM_VALID_BIT_CLEARING, 0x08],
        name: "Set System Boot Options (valid-bit clearing)",
    }
}

/// Set System Boot Options parameter 5, the boot flags.
pub fn set_boot_flags(flags: BootFlags) -> Request {
    let mut data = vec![BOOT_PARAM_FLAGS];
    data.extend_from_slice(&flags.encode());
    Request {
        netfn: NETFN_CHASSIS,
        cmd: 0x08,
        data,
        name: "Set System Boot Options (boot flags)",
    }
}

/// Get System Boot Options parameter 5.
pub fn get_boot_flags() -> Request {
    Request {
        netfn: NETFN_CHASSIS,
        cmd: 0x09,
        data: vec![BOOT_PARAM_FLAGS, 0, 0],
        name: "Get System Boot Options (boot flags)",
    }
}

/// The boot device selector, bits 5–2 of boot flags data byte 2 (IPMI 2.0 table 28-14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDeviceSelector {
    NoOverride,
    Pxe,
    Disk,
    DiskSafeMode,
    DiagnosticPartition,
    Cd,
    BiosSetup,
    RemoteFloppy,
    RemoteCd,
    /// "Primary remote media"; Supermicro uses it for the UEFI hard disk.
    PrimaryRemoteMedia,
    RemoteDisk,
    Floppy,
    Reserved(u8),
}

impl BootDeviceSelector {
    fn code(self) -> u8 {
        match self {
            BootDeviceSelector::NoOverride => 0x0,
            BootDeviceSelector::Pxe => 0x1,
            BootDeviceSelector::Disk => 0x2,
            BootDeviceSelector::DiskSafeMode => 0x3,
            BootDeviceSelector::DiagnosticPartition => 0x4,
            BootDeviceSelector::Cd => 0x5,
            BootDeviceSelector::BiosSetup => 0x6,
            BootDeviceSelector::RemoteFloppy => 0x7,
            BootDeviceSelector::RemoteCd => 0x8,
            BootDeviceSelector::PrimaryRemoteMedia => 0x9,
            BootDeviceSelector::RemoteDisk => 0xB,
            BootDeviceSelector::Floppy => 0xF,
            BootDeviceSelector::Reserved(code) => code & 0x0F,
        }
    }

    fn from_code(code: u8) -> Self {
        match code & 0x0F {
            0x0 => BootDeviceSelector::NoOverride,
            0x1 => BootDeviceSelector::Pxe,
            0x2 => BootDeviceSelector::Disk,
            0x3 => BootDeviceSelector::DiskSafeMode,
            0x4 => BootDeviceSelector::DiagnosticPartition,
            0x5 => BootDeviceSelector::Cd,
            0x6 => BootDeviceSelector::BiosSetup,
            0x7 => BootDeviceSelector::RemoteFloppy,
            0x8 => BootDeviceSelector::RemoteCd,
            0x9 => BootDeviceSelector::PrimaryRemoteMedia,
            0xB => BootDeviceSelector::RemoteDisk,
            0xF => BootDeviceSelector::Floppy,
            other => BootDeviceSelector::Reserved(other),
        }
    }
}

/// Boot flags (System Boot Options parameter 5), the parts provisioning uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// The BMC applies the flags on the next boot(s); cleared once consumed or expired.
    pub valid: bool,
    /// Every boot rather than the next one only.
    pub persistent: bool,
    /// Boot in UEFI mode rather than legacy BIOS mode.
    pub uefi: bool,
    pub device: BootDeviceSelector,
}

impl BootFlags {
    fn encode(self) -> [u8; 5] {
        let mut first = 0u8;
        if self.valid {
            first |= 0x80;
        }
        if self.persistent {
            first |= 0x40;
        }
        if self.uefi {
            first |= 0x20;
        }
        [first, self.device.code() << 2, 0, 0, 0]
    }

    /// Decodes the data of a Get System Boot Options response for parameter 5.
    pub fn decode(data: &[u8]) -> Result<Self, BmcError> {
        // parameter version, parameter selector (bit 7: invalid/locked), five data bytes
        if data.len() < 4 {
            return Err(short("Get System Boot Options", data.len(), 7));
        }
        if data[1] & 0x7F != BOOT_PARAM_FLAGS {
            return Err(BmcError::Protocol(format!(
                "asked for boot parameter 5, the BMC answered parameter {}",
                data[1] & 0x7F
            )));
        }
        let (first, second) = (data[2], data[3]);
        Ok(BootFlags {
            valid: first & 0x80 != 0,
            persistent: first & 0x40 != 0,
            uefi: first & 0x20 != 0,
            device: BootDeviceSelector::from_code(second >> 2),
        })
    }
}

fn short(command: &str, got: usize, wanted: usize) -> BmcError {
    BmcError::Protocol(format!(
        "{command} returned {got} data bytes, expected at least {wanted}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_bytes_match_ironics_raw_commands() {
        // Ironic: raw 0x00 0x08 0x05 0xe0 0x04 0 0 0 (UEFI PXE, persistent),
        // 0xa0 0x08 (UEFI disk, once), 0xa0 0x14 (CD), 0xa0 0x18 (BIOS setup).
        let cases = [
            (true, BootDeviceSelector::Pxe, [0xE0, 0x04]),
            (false, BootDeviceSelector::Disk, [0xA0, 0x08]),
            (false, BootDeviceSelector::Cd, [0xA0, 0x14]),
            (false, BootDeviceSelector::BiosSetup, [0xA0, 0x18]),
            (false, BootDeviceSelector::PrimaryRemoteMedia, [0xA0, 0x24]),
        ];
        for (persistent, device, bytes) in cases {
            let request = set_boot_flags(BootFlags {
                valid: true,
                persistent,
                uefi: true,
                device,
            });
            assert_eq!(request.data, [5, bytes[0], bytes[1], 0, 0, 0]);
            let decoded = BootFlags::decode(&[1, 5, bytes[0], bytes[1], 0, 0, 0]).unwrap();
            assert_eq!(decoded.device, device);
            assert_eq!(decoded.persistent, persistent);
            assert!(decoded.valid && decoded.uefi);
        }
    }

    #[test]
    fn chassis_status_fault_bits() {
        let status = ChassisStatus::decode(&[0x01 | 0x08, 0, 0x08]).unwrap();
        assert!(status.power_on && status.power_fault && status.cooling_fault);
        assert!(!status.power_overload && !status.drive_fault);
        assert!(ChassisStatus::decode(&[1, 0]).is_err());
    }

    #[test]
    fn device_id_decodes_bcd_and_manufacturer() {
        // ipmi_sim's `mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02`.
        let data = [
            0x00, 0x03, 0x09, 0x08, 0x02, 0x9F, 0x91, 0x12, 0x00, 0x02, 0x0F,
        ];
        let id = DeviceId::decode(&data).unwrap();
        assert_eq!(id.firmware_revision, (9, 8));
        assert_eq!(id.ipmi_version, (2, 0));
        assert_eq!(id.manufacturer_id, 0x1291);
        assert_eq!(id.product_id, 0x0F02);
    }

    #[test]
    fn completion_codes_say_whether_to_retry() {
        let busy = completion_error("Chassis Control", 0xC0);
        assert!(busy.is_transient());
        let privilege = completion_error("Chassis Control", 0xD4);
        assert!(!privilege.is_transient());
        assert!(privilege.to_string().contains("insufficient privilege"));
    }
}
