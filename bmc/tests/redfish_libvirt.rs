//! sushy-tools' libvirt driver on a real QEMU domain (TCG) under a private libvirtd: power
//! really starts and stops the machine, a boot override really changes what it boots
//! (iPXE from the NIC, then a GRUB ISO through virtual media), and BIOS settings and a
//! firmware update persist in the domain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{connect, fast_options};
use rivet_bmc::redfish::RedfishProvider;
use rivet_bmc::{
    ApplyTime, Bios, BmcError, BootDevice, BootMode, BootOverride, BootPersistence, BootTarget,
    Firmware, Inventory, MediaKind, Power, PowerOffMode, PowerState, SecureBoot, VirtualMedia,
    wait_for_power_state,
};
use rivet_tests::libvirt::Libvirtd;
use rivet_tests::sushy::{HttpFileServer, SushyDriver, SushyEmulator};
use rivet_tests::{require_tool, scratch_dir};
use serde_json::json;

const DOMAIN: &str = "rivet-node0";
const UUID: &str = "15b5d396-7e49-45dc-b1fb-a7fe689878a7";
const MAC: &str = "52:54:00:aa:00:01";
const MARKER: &str = "RIVET-VMEDIA-BOOTED";

struct Lab {
    libvirt: Libvirtd,
    _sushy: SushyEmulator,
    serial: std::path::PathBuf,
    bmc: RedfishProvider,
}

async fn lab() -> Lab {
    let libvirt = Libvirtd::start();
    let serial = libvirt.define_domain(DOMAIN, UUID, MAC);
    let sushy = SushyEmulator::start(SushyDriver::Libvirt(libvirt.uri()), None);
    let bmc = connect(
        &sushy.base_url(),
        Some(&format!("/redfish/v1/Systems/{UUID}")),
        fast_options(),
    )
    .await;
    Lab {
        libvirt,
        _sushy: sushy,
        serial,
        bmc,
    }
}

impl Lab {
    fn serial(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits for `marker` to appear on the console after byte `from`.
    fn wait_for_console(&self, marker: &str, from: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial();
            if serial.get(from..).is_some_and(|s| s.contains(marker)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{marker} did not appear within {timeout:?}; console tail:\n{}",
                &serial[serial.len().saturating_sub(2000)..]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `<boot order='1'/>` device: `network`, `cdrom` or `disk`.
    fn first_boot_device(&self) -> &'static str {
        let xml = self.libvirt.domain_xml(DOMAIN);
        let first = xml
            .find("<boot order='1'/>")
            .unwrap_or_else(|| panic!("no boot order in:\n{xml}"));
        let opening = xml[..first]
            .rfind("<interface")
            .max(xml[..first].rfind("<disk"))
            .unwrap();
        let element = &xml[opening..first];
        if element.starts_with("<interface") {
            "network"
        } else if element.contains("device='cdrom'") {
            "cdrom"
        } else {
            "disk"
        }
    }
}

/// A UEFI-bootable ISO whose GRUB prints [`MARKER`] on the console.
fn marker_iso(dir: &Path) -> std::path::PathBuf {
    let grub = require_tool("grub-mkrescue");
    require_tool("xorriso");
    require_tool("mformat");
    let root = dir.join("iso-root/boot/grub");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("grub.cfg"),
        format!("set timeout=0\necho {MARKER}\nsleep 600\n"),
    )
    .unwrap();
    let iso = dir.join("marker.iso");
    let out = Command::new(grub)
        .args(["-d", "/usr/lib/grub/x86_64-efi", "-o"])
        .arg(&iso)
        .arg(dir.join("iso-root"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-mkrescue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

#[tokio::test]
async fn vm_power_and_boot_overrides_drive_a_real_qemu_domain() {
    let lab = lab().await;
    let bmc = &lab.bmc;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // Network boot under UEFI: sushy rewrites the loader and the boot order.
    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Uefi),
        http_boot_uri: None,
    })
    .await
    .unwrap();
    assert_eq!(lab.first_boot_device(), "network");
    assert!(lab.libvirt.domain_xml(DOMAIN).contains("OVMF_CODE_4M.fd"));
    let before = lab.serial().len();
    bmc.power_on().await.unwrap();
    wait_for_power_state(
        bmc,
        PowerState::On,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    assert_eq!(lab.libvirt.domain_state(DOMAIN), "running");
    lab.wait_for_console("iPXE", before, Duration::from_secs(180));
    bmc.power_off(PowerOffMode::Hard).await.unwrap();
    wait_for_power_state(
        bmc,
        PowerState::Off,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    assert_eq!(lab.libvirt.domain_state(DOMAIN), "shut off");

    // Virtual media: sushy downloads the ISO into the pool and attaches it; booting the CD
    // runs our GRUB.
    let scratch = scratch_dir("vmedia");
    marker_iso(scratch.path());
    let files = HttpFileServer::serve(scratch.path());
    bmc.insert_media(&files.url("marker.iso"), MediaKind::Cd)
        .await
        .unwrap();
    let slots = bmc.media_status().await.unwrap();
    assert!(
        slots
            .iter()
            .any(|s| s.inserted && s.kinds.contains(&MediaKind::Cd))
    );
    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Cd,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Uefi),
        http_boot_uri: None,
    })
    .await
    .unwrap();
    assert_eq!(lab.first_boot_device(), "cdrom");
    let before = lab.serial().len();
    bmc.power_cycle().await.unwrap();
    assert_eq!(lab.libvirt.domain_state(DOMAIN), "running");
    lab.wait_for_console(MARKER, before, Duration::from_secs(180));

    bmc.power_off(PowerOffMode::Hard).await.unwrap();
    wait_for_power_state(
        bmc,
        PowerState::Off,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    bmc.eject_media(MediaKind::Cd).await.unwrap();
    assert!(
        bmc.media_status()
            .await
            .unwrap()
            .iter()
            .all(|s| !s.inserted)
    );
}

#[tokio::test]
async fn bios_settings_and_firmware_updates_persist_in_the_libvirt_domain() {
    let lab = lab().await;
    let bmc = &lab.bmc;
    let attributes = bmc.bios_attributes().await.unwrap();
    assert_eq!(attributes["ProcTurboMode"], json!("Enabled"));
    let schema = bmc.bios_schema().await.unwrap();
    assert!(
        schema
            .iter()
            .find(|a| a.name == "NumCores")
            .unwrap()
            .read_only
    );

    let change: rivet_bmc::Attributes =
        serde_json::from_value(json!({"ProcTurboMode": "Disabled", "SerialNumber": "RIVET-1"}))
            .unwrap();
    assert_eq!(bmc.apply_bios(&change).await.unwrap(), ApplyTime::OnReset);
    let attributes = bmc.bios_attributes().await.unwrap();
    assert_eq!(attributes["ProcTurboMode"], json!("Disabled"));
    assert_eq!(attributes["SerialNumber"], json!("RIVET-1"));
    assert!(lab.libvirt.domain_xml(DOMAIN).contains("RIVET-1"));

    let refused: rivet_bmc::Attributes =
        serde_json::from_value(json!({"ProcTurboMode": "Sometimes", "NumCores": 12})).unwrap();
    let err = bmc.apply_bios(&refused).await.unwrap_err();
    assert!(matches!(err, BmcError::InvalidRequest(_)), "{err}");

    let version = |details: rivet_model::HardwareDetails| {
        details.firmware.unwrap().bios.unwrap().version.unwrap()
    };
    assert_eq!(version(bmc.inventory().await.unwrap()), "1.0.0");
    // sushy answers 204 with a Location naming its (completed) task.
    bmc.update_firmware(
        "http://images.example/bios-1.1.0.bin",
        &[format!("/redfish/v1/Systems/{UUID}")],
    )
    .await
    .unwrap();
    assert_eq!(version(bmc.inventory().await.unwrap()), "1.1.0");
    assert!(!bmc.secure_boot_enabled().await.unwrap());
}
