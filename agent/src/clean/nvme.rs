//! NVMe secure erase through admin commands (NVMe Base Specification 2.0: Identify §5.17,
//! Format NVM §5.23, Sanitize §5.24, Sanitize Status log §5.16.1.25), sent with
//! `NVME_IOCTL_ADMIN_CMD` — no `nvme-cli`.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::disk::Disk;
pub use crate::ioctl::NvmeStatus;
use crate::ioctl::{self, NvmeAdminError, NvmePassthruCmd};

const OPCODE_GET_LOG_PAGE: u8 = 0x02;
const OPCODE_IDENTIFY: u8 = 0x06;
const OPCODE_FORMAT_NVM: u8 = 0x80;
const OPCODE_SANITIZE: u8 = 0x84;
const LOG_SANITIZE_STATUS: u32 = 0x81;
/// Formats and sanitizes can take minutes on large drives; the kernel's default admin
/// timeout (60 s) is too short for a user-data erase.
const LONG_COMMAND: Duration = Duration::from_secs(3600);

/// What the controller can do, from Identify Controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// OACS bit 1.
    pub format: bool,
    /// FNA bit 2.
    pub format_crypto_erase: bool,
    /// FNA bit 1: a secure erase by Format NVM erases every namespace.
    pub erase_applies_to_all_namespaces: bool,
    /// SANICAP bits 0–2.
    pub sanitize_crypto: bool,
    pub sanitize_block: bool,
    pub sanitize_overwrite: bool,
}

impl Capabilities {
    /// Parses the 4 KiB Identify Controller data structure.
    pub fn from_identify(data: &[u8]) -> Option<Self> {
        if data.len() < 4096 {
            return None;
        }
        let oacs = u16::from_le_bytes([data[256], data[257]]);
        let sanicap = u32::from_le_bytes([data[328], data[329], data[330], data[331]]);
        let fna = data[524];
        Some(Self {
            format: oacs & 0x2 != 0,
            format_crypto_erase: fna & 0x4 != 0,
            erase_applies_to_all_namespaces: fna & 0x2 != 0,
            sanitize_crypto: sanicap & 0x1 != 0,
            sanitize_block: sanicap & 0x2 != 0,
            sanitize_overwrite: sanicap & 0x4 != 0,
        })
    }

    /// The erase methods to try, strongest first.
    pub fn plan(&self) -> Vec<Method> {
        let mut plan = Vec::new();
        if self.format && self.format_crypto_erase {
            plan.push(Method::FormatCryptoErase);
        }
        if self.sanitize_crypto {
            plan.push(Method::SanitizeCryptoErase);
        }
        if self.sanitize_block {
            plan.push(Method::SanitizeBlockErase);
        }
        if self.format {
            plan.push(Method::FormatUserDataErase);
        }
        plan
    }
}

/// An NVMe erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    FormatCryptoErase,
    FormatUserDataErase,
    SanitizeCryptoErase,
    SanitizeBlockErase,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::FormatCryptoErase => "nvme-format-crypto-erase",
            Method::FormatUserDataErase => "nvme-format-user-data-erase",
            Method::SanitizeCryptoErase => "nvme-sanitize-crypto-erase",
            Method::SanitizeBlockErase => "nvme-sanitize-block-erase",
        }
    }
}

/// The current LBA format index from Identify Namespace (FLBAS bits 3:0 and 6:5), which a
/// format must keep so that the namespace's sector size does not change under the kernel.
pub fn current_lba_format(identify_namespace: &[u8]) -> Option<u32> {
    let flbas = *identify_namespace.get(26)?;
    Some(u32::from(flbas & 0x0f) | (u32::from(flbas >> 5) & 0x3) << 4)
}

/// Command dword 10 of Format NVM: LBA format (bits 3:0, upper bits 13:12) and Secure Erase
/// Settings (bits 11:9).
pub fn format_cdw10(lba_format: u32, secure_erase: u32) -> u32 {
    (lba_format & 0xf) | ((lba_format >> 4) & 0x3) << 12 | (secure_erase & 0x7) << 9
}

/// Sanitize progress from the Sanitize Status log page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SanitizeState {
    InProgress { fraction: f64 },
    Succeeded,
    Failed,
    NeverRun,
}

pub fn sanitize_state(log: &[u8]) -> Option<SanitizeState> {
    if log.len() < 4 {
        return None;
    }
    let progress = u16::from_le_bytes([log[0], log[1]]);
    let status = u16::from_le_bytes([log[2], log[3]]) & 0x7;
    Some(match status {
        0 => SanitizeState::NeverRun,
        1 | 4 => SanitizeState::Succeeded,
        2 => SanitizeState::InProgress {
            fraction: f64::from(progress) / 65536.0,
        },
        _ => SanitizeState::Failed,
    })
}

/// Why an NVMe erase did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NvmeError {
    #[error("{command}: the controller refused it: {status}")]
    Refused {
        command: &'static str,
        status: NvmeStatus,
    },
    #[error("{command}: {source}")]
    Io {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("sanitize failed (the Sanitize Status log reports a failure)")]
    SanitizeFailed,
    #[error("unexpected Identify data")]
    BadIdentify,
}

impl NvmeError {
    /// The controller said "not supported" (invalid field or opcode): try the next method.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, NvmeError::Refused { status, .. }
            if status.is_invalid_field() || status.is_invalid_opcode())
    }
}

fn admin(
    disk: &Disk,
    command: &'static str,
    cmd: NvmePassthruCmd,
    data: Option<&mut [u8]>,
) -> Result<u32, NvmeError> {
    ioctl::nvme_admin(disk.file().as_fd(), cmd, data).map_err(|err| match err {
        NvmeAdminError::Status(status) => NvmeError::Refused { command, status },
        NvmeAdminError::Io(source) => NvmeError::Io { command, source },
    })
}

/// The namespace id of an NVMe namespace block device; `None` for anything else.
pub fn namespace_id(disk: &Disk) -> Option<u32> {
    if !disk.is_block_device() {
        return None;
    }
    ioctl::nvme_namespace_id(disk.file().as_fd()).ok()
}

/// Identify Controller.
pub fn identify_controller(disk: &Disk) -> Result<Capabilities, NvmeError> {
    let mut data = vec![0u8; 4096];
    admin(
        disk,
        "Identify Controller",
        NvmePassthruCmd {
            opcode: OPCODE_IDENTIFY,
            cdw10: 1,
            ..Default::default()
        },
        Some(&mut data),
    )?;
    Capabilities::from_identify(&data).ok_or(NvmeError::BadIdentify)
}

fn identify_namespace(disk: &Disk, nsid: u32) -> Result<Vec<u8>, NvmeError> {
    let mut data = vec![0u8; 4096];
    admin(
        disk,
        "Identify Namespace",
        NvmePassthruCmd {
            opcode: OPCODE_IDENTIFY,
            nsid,
            cdw10: 0,
            ..Default::default()
        },
        Some(&mut data),
    )?;
    Ok(data)
}

/// Runs one erase method to completion; `progress` gets a fraction for sanitize.
pub fn erase(
    disk: &Disk,
    nsid: u32,
    method: Method,
    progress: &mut dyn FnMut(f64),
) -> Result<(), NvmeError> {
    let timeout_ms = u32::try_from(LONG_COMMAND.as_millis()).unwrap_or(u32::MAX);
    match method {
        Method::FormatCryptoErase | Method::FormatUserDataErase => {
            let lba_format = current_lba_format(&identify_namespace(disk, nsid)?)
                .ok_or(NvmeError::BadIdentify)?;
            let ses = if method == Method::FormatCryptoErase {
                2
            } else {
                1
            };
            admin(
                disk,
                "Format NVM",
                NvmePassthruCmd {
                    opcode: OPCODE_FORMAT_NVM,
                    nsid,
                    cdw10: format_cdw10(lba_format, ses),
                    timeout_ms,
                    ..Default::default()
                },
                None,
            )?;
            progress(1.0);
            Ok(())
        }
        Method::SanitizeCryptoErase | Method::SanitizeBlockErase => {
            let action = if method == Method::SanitizeCryptoErase {
                4
            } else {
                2
            };
            admin(
                disk,
                "Sanitize",
                NvmePassthruCmd {
                    opcode: OPCODE_SANITIZE,
                    cdw10: action,
                    timeout_ms,
                    ..Default::default()
                },
                None,
            )?;
            wait_for_sanitize(disk, progress)
        }
    }
}

fn wait_for_sanitize(disk: &Disk, progress: &mut dyn FnMut(f64)) -> Result<(), NvmeError> {
    let deadline = Instant::now() + LONG_COMMAND * 24;
    loop {
        let mut log = vec![0u8; 512];
        // NUMDL (bits 31:16) counts dwords minus one.
        let numd = (512 / 4 - 1) << 16;
        admin(
            disk,
            "Get Log Page (Sanitize Status)",
            NvmePassthruCmd {
                opcode: OPCODE_GET_LOG_PAGE,
                nsid: 0xffff_ffff,
                cdw10: numd | LOG_SANITIZE_STATUS,
                ..Default::default()
            },
            Some(&mut log),
        )?;
        match sanitize_state(&log) {
            Some(SanitizeState::Succeeded) => {
                progress(1.0);
                return Ok(());
            }
            Some(SanitizeState::InProgress { fraction }) => progress(fraction),
            Some(SanitizeState::Failed) | None => return Err(NvmeError::SanitizeFailed),
            // Just after the command some controllers still report the previous state.
            Some(SanitizeState::NeverRun) => {}
        }
        if Instant::now() > deadline {
            return Err(NvmeError::SanitizeFailed);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capabilities_from_identify_controller() {
        let mut data = vec![0u8; 4096];
        data[256] = 0x2; // OACS: Format NVM
        data[524] = 0x4; // FNA: crypto erase
        data[328] = 0x3; // SANICAP: crypto + block
        let caps = Capabilities::from_identify(&data).unwrap_or_default();
        assert!(caps.format && caps.format_crypto_erase && caps.sanitize_crypto);
        assert_eq!(
            caps.plan(),
            vec![
                Method::FormatCryptoErase,
                Method::SanitizeCryptoErase,
                Method::SanitizeBlockErase,
                Method::FormatUserDataErase
            ]
        );
        assert_eq!(Capabilities::from_identify(&data[..100]), None);
        assert!(Capabilities::default().plan().is_empty());
    }

    #[test]
    fn encodes_format_and_decodes_namespace_formats() {
        assert_eq!(format_cdw10(0, 2), 0x400);
        assert_eq!(format_cdw10(1, 1), 0x201);
        assert_eq!(format_cdw10(0x13, 0), 0x1003);
        let mut ns = vec![0u8; 4096];
        ns[26] = 0x01;
        assert_eq!(current_lba_format(&ns), Some(1));
        ns[26] = 0x21; // upper bits 6:5 = 1
        assert_eq!(current_lba_format(&ns), Some(0x11));
    }

    #[test]
    fn decodes_sanitize_status() {
        assert_eq!(
            sanitize_state(&[0, 0x80, 2, 0]),
            Some(SanitizeState::InProgress { fraction: 0.5 })
        );
        assert_eq!(
            sanitize_state(&[0, 0, 1, 0]),
            Some(SanitizeState::Succeeded)
        );
        assert_eq!(sanitize_state(&[0, 0, 3, 0]), Some(SanitizeState::Failed));
        assert_eq!(sanitize_state(&[0, 0]), None);
    }
}
