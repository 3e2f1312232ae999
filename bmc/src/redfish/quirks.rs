//! Vendor quirk profiles: what differs between BMCs, as data.
//!
//! A profile is chosen from the system's manufacturer and model (and the service root's
//! vendor), or forced by the address (`idrac-*` schemes). The driver consults it at the
//! few places where vendors disagree; everywhere else it follows the Redfish standard.
//! Sources: Ironic/sushy's vendor handling and bmclib's fixes (see the BMC chapter).

use super::retry::BusyRule;

/// A BMC family with known deviations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Generic,
    /// Dell iDRAC 9/10.
    Dell,
    /// HPE iLO 5/6.
    Hpe,
    /// Lenovo XClarity Controller.
    Lenovo,
    Supermicro,
    /// AMI MegaRAC and its OEMs (ASRock Rack, NVIDIA DGX).
    Ami,
}

/// How an image gets into a virtual-media slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaInsert {
    /// `VirtualMedia.InsertMedia`; `with_flags` sends `Inserted`/`WriteProtected` too.
    Action { with_flags: bool },
    /// PATCH `Image`/`Inserted`/`WriteProtected` on the slot with `If-Match` (Lenovo XCC).
    Patch,
}

/// Where to look for virtual-media slots first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaLocation {
    /// `Systems/{id}/VirtualMedia`, then the managers' (newer BMCs; iDRAC10 has only these).
    SystemsFirst,
    /// The managers' collections first.
    ManagersFirst,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuirkProfile {
    pub vendor: Vendor,
    /// Shown in logs and `rivet bmc health`.
    pub name: &'static str,
    pub media_insert: MediaInsert,
    pub media_location: MediaLocation,
    /// Prefer slots whose Id starts with this (Lenovo's `EXT*` slots take remote images).
    pub preferred_slot_prefix: Option<&'static str>,
    /// The override target that boots virtual media (Supermicro: `UsbCd`).
    pub cd_boot_target: &'static str,
    /// Send `BootSourceOverrideEnabled` even when it does not change. Most BMCs reject
    /// re-setting it to its current value; Supermicro requires it every time.
    pub always_send_override_enabled: bool,
    /// Send target, enabled and mode together in every boot PATCH (AMI, ASRock Rack).
    pub send_full_boot_override: bool,
    /// The boot mode falls back to legacy after setting the device; set it again.
    pub resync_boot_mode: bool,
    /// Answers that mean "busy, try again later".
    pub busy: Vec<BusyRule>,
    /// Boot virtual CD through Dell's configuration import (the plain `Cd` target boots the
    /// physical drive on iDRAC firmware outside 6.x–7.x).
    pub dell_virtual_cd_boot: bool,
}

impl QuirkProfile {
    /// The profile for a BMC, from what it says about itself. `forced` wins (the `idrac-*`
    /// schemes force Dell); `manager_firmware` refines Dell's virtual-CD handling.
    pub fn select(
        forced: Option<Vendor>,
        manufacturer: Option<&str>,
        model: Option<&str>,
        service_vendor: Option<&str>,
    ) -> Self {
        let vendor = forced.unwrap_or_else(|| detect(manufacturer, service_vendor));
        let model = model.unwrap_or_default();
        match vendor {
            Vendor::Generic => generic(),
            Vendor::Dell => Self {
                vendor,
                name: "dell-idrac",
                busy: vec![
                    BusyRule {
                        status: 409,
                        needle: "ActionParameterValueConflict",
                        attempts: 6,
                        reason: "iDRAC refuses power-on right after power-off",
                    },
                    BusyRule {
                        status: 400,
                        needle: "SYS518",
                        attempts: 6,
                        reason: "iDRAC is busy with another job",
                    },
                ],
                ..generic()
            },
            Vendor::Hpe => Self {
                vendor,
                name: "hpe-ilo",
                busy: vec![
                    BusyRule {
                        status: 400,
                        needle: "UnableToModifyDuringSystemPOST",
                        attempts: 6,
                        reason: "iLO cannot change boot settings during POST",
                    },
                    BusyRule {
                        status: 400,
                        needle: "InvalidOperationForSystemState",
                        attempts: 6,
                        reason: "iLO is in a transitional system state",
                    },
                ],
                ..generic()
            },
            Vendor::Lenovo => Self {
                vendor,
                name: "lenovo-xcc",
                media_insert: MediaInsert::Patch,
                media_location: MediaLocation::ManagersFirst,
                preferred_slot_prefix: Some("EXT"),
                ..generic()
            },
            Vendor::Supermicro => Self {
                vendor,
                name: "supermicro",
                media_insert: MediaInsert::Action { with_flags: false },
                // The one model that boots virtual media as a plain CD.
                cd_boot_target: if model.eq_ignore_ascii_case("ARS-111GL-NHR") {
                    "Cd"
                } else {
                    "UsbCd"
                },
                always_send_override_enabled: true,
                resync_boot_mode: true,
                ..generic()
            },
            Vendor::Ami => Self {
                vendor,
                name: "ami",
                send_full_boot_override: true,
                ..generic()
            },
        }
    }

    /// Whether Dell's import path must boot virtual CD, given the iDRAC firmware version.
    pub fn with_manager_firmware(mut self, firmware: Option<&str>, forced: bool) -> Self {
        if self.vendor == Vendor::Dell {
            let major = firmware
                .and_then(|v| v.split('.').next())
                .and_then(|m| m.parse::<u32>().ok());
            self.dell_virtual_cd_boot = forced || !matches!(major, Some(6..=7));
        }
        self
    }
}

fn generic() -> QuirkProfile {
    QuirkProfile {
        vendor: Vendor::Generic,
        name: "generic",
        media_insert: MediaInsert::Action { with_flags: true },
        media_location: MediaLocation::SystemsFirst,
        preferred_slot_prefix: None,
        cd_boot_target: "Cd",
        always_send_override_enabled: false,
        send_full_boot_override: false,
        resync_boot_mode: false,
        busy: Vec::new(),
        dell_virtual_cd_boot: false,
    }
}

fn detect(manufacturer: Option<&str>, service_vendor: Option<&str>) -> Vendor {
    let text = format!(
        "{} {}",
        manufacturer.unwrap_or_default(),
        service_vendor.unwrap_or_default()
    )
    .to_ascii_lowercase();
    // Whole words only: "ami" must not match "Dynamic Systems".
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let has = |names: &[&str]| words.iter().any(|w| names.contains(w));
    if has(&["dell"]) {
        Vendor::Dell
    } else if has(&["hpe", "hewlett"]) {
        Vendor::Hpe
    } else if has(&["lenovo"]) {
        Vendor::Lenovo
    } else if has(&["supermicro"]) {
        Vendor::Supermicro
    } else if has(&["ami", "asrock", "asrockrack"]) {
        Vendor::Ami
    } else {
        Vendor::Generic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_follow_manufacturer_and_model() {
        let dell = QuirkProfile::select(None, Some("Dell Inc."), Some("PowerEdge R750"), None);
        assert_eq!(dell.name, "dell-idrac");
        let sm = QuirkProfile::select(None, Some("Supermicro"), Some("SYS-821GE-TNHR"), None);
        assert_eq!(sm.cd_boot_target, "UsbCd");
        assert_eq!(sm.media_insert, MediaInsert::Action { with_flags: false });
        let sm_cd = QuirkProfile::select(None, Some("Supermicro"), Some("ARS-111GL-NHR"), None);
        assert_eq!(sm_cd.cd_boot_target, "Cd");
        let lenovo = QuirkProfile::select(None, Some("Lenovo"), None, None);
        assert_eq!(lenovo.media_insert, MediaInsert::Patch);
        let dgx = QuirkProfile::select(None, Some("NVIDIA"), Some("DGXH100"), Some("AMI"));
        assert!(dgx.send_full_boot_override);
        let forced = QuirkProfile::select(Some(Vendor::Dell), Some("Sushy Emulator"), None, None);
        assert_eq!(forced.vendor, Vendor::Dell);
        assert_eq!(
            QuirkProfile::select(None, Some("Sushy Emulator"), None, None).vendor,
            Vendor::Generic
        );
        assert_eq!(
            QuirkProfile::select(None, Some("Dynamic Systems"), None, None).vendor,
            Vendor::Generic
        );
    }

    #[test]
    fn dell_virtual_cd_boot_depends_on_firmware() {
        let dell = || QuirkProfile::select(Some(Vendor::Dell), None, None, None);
        assert!(
            !dell()
                .with_manager_firmware(Some("6.00.30.00"), false)
                .dell_virtual_cd_boot
        );
        assert!(
            dell()
                .with_manager_firmware(Some("5.10.50.00"), false)
                .dell_virtual_cd_boot
        );
        assert!(
            dell()
                .with_manager_firmware(Some("1.10.0"), false)
                .dell_virtual_cd_boot
        );
        assert!(
            dell()
                .with_manager_firmware(Some("7.10.30.00"), true)
                .dell_virtual_cd_boot
        );
        let hpe = QuirkProfile::select(Some(Vendor::Hpe), None, None, None);
        assert!(
            !hpe.with_manager_firmware(Some("2.72"), true)
                .dell_virtual_cd_boot
        );
    }
}
