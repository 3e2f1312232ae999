//! Real vendor captures (Dell, HPE, Lenovo, Supermicro, NVIDIA) served by sushy-static:
//! every one yields an inventory in the BareMetalHost shape, and the vendor quirks show in
//! the requests the driver sends (recorded by the proxy in front of sushy-static, which
//! answers every POST and PATCH with 204).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{connect, credentials, endpoint, fast_options, vendor_tree};
use rivet_bmc::redfish::RedfishProvider;
use rivet_bmc::{
    Bios, BmcError, BootDevice, BootMode, BootOverride, BootPersistence, BootTarget, Firmware,
    HealthCheck, Inventory, MediaKind, Power, SecureBoot, VirtualMedia,
};
use rivet_tests::fault_proxy::{Fault, FaultProxy};
use rivet_tests::sushy::SushyStatic;
use serde_json::json;

/// What each capture says about itself, read from its documents by hand.
struct Expected {
    vendor: &'static str,
    system: Option<&'static str>,
    manufacturer: Option<&'static str>,
    model: Option<&'static str>,
    serial: Option<&'static str>,
    ram_mebibytes: Option<u64>,
    cpu_count: Option<u32>,
    cpu_arch: Option<&'static str>,
    /// Enabled interfaces with a MAC address.
    nics: usize,
    bios: Option<&'static str>,
    profile: &'static str,
}

const EXPECTED: &[Expected] = &[
    Expected {
        vendor: "dell",
        system: None,
        manufacturer: Some("Dell Inc."),
        model: Some("PowerEdge R750"),
        serial: Some("CNIVC0014M0388"),
        ram_mebibytes: Some(512 * 1024),
        cpu_count: Some(72),
        cpu_arch: Some("x86_64"),
        nics: 4,
        bios: Some("1.8.2"),
        profile: "dell-idrac",
    },
    Expected {
        vendor: "dell_multi_dpu",
        system: None,
        manufacturer: Some("Dell Inc."),
        model: Some("PowerEdge R750"),
        serial: Some("MXFC40025U031S"),
        ram_mebibytes: Some(128 * 1024),
        cpu_count: Some(72),
        cpu_arch: None,
        nics: 0,
        bios: Some("1.13.2"),
        profile: "dell-idrac",
    },
    Expected {
        vendor: "hpe",
        system: None,
        manufacturer: Some("HPE"),
        model: Some("ProLiant DL385 Gen10 Plus v2"),
        serial: Some("MXQ302099S"),
        ram_mebibytes: Some(1024 * 1024),
        cpu_count: Some(256),
        cpu_arch: Some("x86_64"),
        nics: 7,
        bios: Some("A42 v2.60 (08/11/2022)"),
        profile: "hpe-ilo",
    },
    Expected {
        vendor: "lenovo",
        system: None,
        manufacturer: Some("Lenovo"),
        model: Some("ThinkSystem SR670 V2"),
        serial: Some("J105958B"),
        ram_mebibytes: Some(1024 * 1024),
        cpu_count: Some(128),
        cpu_arch: Some("x86_64"),
        nics: 4,
        bios: Some("U8E122J"),
        profile: "lenovo-xcc",
    },
    Expected {
        vendor: "supermicro",
        system: None,
        manufacturer: Some("Supermicro"),
        model: Some("SYS-821GE-TNHR"),
        serial: Some("S889914X3710910"),
        ram_mebibytes: Some(2048 * 1024),
        cpu_count: Some(128),
        cpu_arch: Some("x86_64"),
        nics: 12,
        bios: Some("1.4"),
        profile: "supermicro",
    },
    Expected {
        vendor: "nvidia_viking",
        system: Some("/redfish/v1/Systems/DGX"),
        manufacturer: Some("NVIDIA"),
        model: Some("DGXH100"),
        serial: Some("1662923610124"),
        ram_mebibytes: Some(2048 * 1024),
        cpu_count: Some(2),
        cpu_arch: None,
        nics: 0,
        bios: Some("1.1.3"),
        profile: "ami",
    },
    Expected {
        vendor: "nvidia_gh200",
        system: Some("/redfish/v1/Systems/System_0"),
        manufacturer: None,
        model: None,
        serial: None,
        ram_mebibytes: Some(960 * 1024),
        cpu_count: Some(2),
        cpu_arch: None,
        nics: 0,
        bios: None,
        profile: "generic",
    },
    Expected {
        vendor: "nvidia_gb200",
        system: Some("/redfish/v1/Systems/System_0"),
        manufacturer: None,
        model: None,
        serial: None,
        ram_mebibytes: Some(960 * 1024),
        cpu_count: Some(2),
        cpu_arch: None,
        nics: 0,
        bios: None,
        profile: "generic",
    },
    Expected {
        vendor: "nvidia_dpu",
        system: None,
        manufacturer: Some("https://www.mellanox.com"),
        model: Some("BlueField-3 SmartNIC Main Card"),
        serial: Some("MT2423600ANG"),
        ram_mebibytes: None,
        cpu_count: None,
        cpu_arch: None,
        nics: 0,
        bios: None,
        profile: "generic",
    },
    Expected {
        vendor: "nvidia_gbswitch",
        system: None,
        manufacturer: Some("NVIDIA"),
        model: Some("N5110_LD"),
        serial: Some("MT2519600UDR"),
        ram_mebibytes: None,
        cpu_count: None,
        cpu_arch: None,
        nics: 0,
        bios: None,
        profile: "generic",
    },
];

#[tokio::test]
async fn every_vendor_capture_yields_an_inventory_in_the_metal3_shape() {
    let peers: Vec<SushyStatic> = EXPECTED
        .iter()
        .map(|e| SushyStatic::serve(&vendor_tree(e.vendor), None))
        .collect();
    let checks = EXPECTED
        .iter()
        .zip(&peers)
        .map(|(expected, peer)| async move {
            let provider = connect(&peer.base_url(), expected.system, fast_options()).await;
            let details = provider
                .inventory()
                .await
                .unwrap_or_else(|err| panic!("{}: {err}", expected.vendor));
            let vendor = details.system_vendor.clone().unwrap_or_default();
            let v = expected.vendor;
            assert_eq!(vendor.manufacturer.as_deref(), expected.manufacturer, "{v}");
            assert_eq!(vendor.product_name.as_deref(), expected.model, "{v}");
            assert_eq!(vendor.serial_number.as_deref(), expected.serial, "{v}");
            assert_eq!(details.ram_mebibytes, expected.ram_mebibytes, "{v}");
            let cpu = details.cpu.clone().unwrap_or_default();
            assert_eq!(cpu.count, expected.cpu_count, "{v}");
            assert_eq!(cpu.arch.as_deref(), expected.cpu_arch, "{v}");
            assert_eq!(details.nics.len(), expected.nics, "{v}: {:?}", details.nics);
            for nic in &details.nics {
                let mac = nic.mac.as_deref().unwrap();
                assert_eq!(mac, mac.to_lowercase(), "{v}");
                assert_eq!(mac.len(), 17, "{v}");
            }
            let bios = details.firmware.as_ref().and_then(|f| f.bios.as_ref());
            assert_eq!(
                bios.and_then(|b| b.version.as_deref()),
                expected.bios,
                "{v}"
            );
            assert_eq!(provider.profile().name, expected.profile, "{v}");
            // The shape must serialise to what a BareMetalHost status accepts.
            let json = serde_json::to_value(&details).unwrap();
            let again: rivet_model::HardwareDetails = serde_json::from_value(json).unwrap();
            assert_eq!(again, details, "{v}");
        });
    futures::future::join_all(checks).await;
}

#[tokio::test]
async fn a_service_with_several_systems_needs_one_named() {
    let peer = SushyStatic::serve(&vendor_tree("nvidia_viking"), None);
    let err = RedfishProvider::connect(
        &endpoint(&peer.base_url(), None),
        credentials(),
        fast_options(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("manages 2 systems"), "{err}");
    assert!(err.contains("/redfish/v1/Systems/DGX"), "{err}");
    let err = RedfishProvider::connect(
        &endpoint(&peer.base_url(), Some("/redfish/v1/Systems/Nope")),
        credentials(),
        fast_options(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no system at /redfish/v1/Systems/Nope"),
        "{err}"
    );
    assert!(err.contains("HGX_Baseboard_0"), "{err}");
}

#[tokio::test]
async fn reads_power_boot_health_bios_firmware_and_media_from_a_dell_capture() {
    let peer = SushyStatic::serve(&vendor_tree("dell"), None);
    let dell = connect(&peer.base_url(), None, fast_options()).await;
    assert_eq!(dell.power_state().await.unwrap(), rivet_bmc::PowerState::On);
    assert_eq!(dell.boot_override().await.unwrap(), None);
    assert_eq!(dell.health().await.unwrap(), rivet_bmc::Health::Ok);
    assert!(!dell.secure_boot_enabled().await.unwrap());
    let attributes = dell.bios_attributes().await.unwrap();
    assert_eq!(attributes.len(), 455);
    assert_eq!(attributes["AcPwrRcvryUserDelay"], json!(120));
    let schema = dell.bios_schema().await.unwrap();
    let boot_mode = schema.iter().find(|a| a.name == "BootMode").unwrap();
    assert!(boot_mode.allowable_values.contains(&"Uefi".to_owned()));
    let firmware = dell.firmware_components().await.unwrap();
    let idrac = firmware
        .iter()
        .find(|c| c.id.contains("iDRAC.Embedded.1-1") && c.id.starts_with("Installed"))
        .unwrap();
    assert_eq!(idrac.version.as_deref(), Some("6.00.30.00"));
    let slots = dell.media_status().await.unwrap();
    // iDRAC 6 has slots under both the system and the manager; the system's come first.
    assert_eq!(slots.len(), 2);
    assert!(
        slots[0]
            .id
            .starts_with("/redfish/v1/Systems/System.Embedded.1/VirtualMedia/")
    );
    assert!(slots.iter().all(|s| !s.inserted));
}

const ETAG_EXT1: &str = "\"4ad76310d5e92ae95a1\"";

/// A proxy in front of sushy-static serving `vendor`, recording what the driver sends.
fn recorded(vendor: &str) -> (SushyStatic, FaultProxy) {
    let peer = SushyStatic::serve(&vendor_tree(vendor), None);
    let proxy = FaultProxy::start(peer.addr());
    (peer, proxy)
}

#[tokio::test]
async fn supermicro_inserts_media_without_default_flags_and_boots_it_as_usbcd() {
    let (_peer, proxy) = recorded("supermicro");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    bmc.insert_media("http://images.example/boot.iso", MediaKind::Cd)
        .await
        .unwrap();
    let inserts = proxy.matching("POST", "VirtualMedia.InsertMedia");
    assert_eq!(inserts.len(), 1);
    assert_eq!(
        inserts[0].path,
        "/redfish/v1/Managers/1/VirtualMedia/VirtualMedia1/Actions/VirtualMedia.InsertMedia"
    );
    assert_eq!(
        inserts[0].json(),
        json!({"Image": "http://images.example/boot.iso"})
    );

    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Cd,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Uefi),
        http_boot_uri: None,
    })
    .await
    .unwrap();
    let patches = proxy.matching("PATCH", "/redfish/v1/Systems/1");
    let boot = &patches[0].json()["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "UsbCd");
    // Supermicro needs Enabled every time, even unchanged.
    assert_eq!(boot["BootSourceOverrideEnabled"], "Once");
}

#[tokio::test]
async fn lenovo_inserts_media_by_patch_with_if_match_on_an_ext_slot() {
    let (_peer, proxy) = recorded("lenovo");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    bmc.insert_media("https://images.example/boot.iso", MediaKind::Cd)
        .await
        .unwrap();
    assert!(proxy.matching("POST", "InsertMedia").is_empty());
    let patches = proxy.matching("PATCH", "/VirtualMedia/");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].path, "/redfish/v1/Managers/1/VirtualMedia/EXT1");
    assert_eq!(
        patches[0].json(),
        json!({"Image": "https://images.example/boot.iso", "Inserted": true, "WriteProtected": true})
    );
    // The ETag the capture carries for Managers/1/VirtualMedia/EXT1.
    assert_eq!(
        patches[0].headers.get("if-match").map(String::as_str),
        Some(ETAG_EXT1)
    );
}

#[tokio::test]
async fn a_persistent_override_on_a_once_only_bmc_is_reapplied_before_power_on() {
    // Lenovo XCC allows only Once and Disabled.
    let (_peer, proxy) = recorded("lenovo");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Persistent,
        mode: None,
        http_boot_uri: None,
    })
    .await
    .unwrap();
    proxy.clear_log();
    bmc.power_on().await.unwrap();
    let sent: Vec<(String, String)> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        sent,
        [
            ("PATCH".to_owned(), "/redfish/v1/Systems/1".to_owned()),
            (
                "POST".to_owned(),
                "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset".to_owned()
            ),
        ]
    );
    let patch = &proxy.matching("PATCH", "/redfish/v1/Systems/1")[0];
    assert_eq!(patch.json()["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(patch.json()["Boot"]["BootSourceOverrideEnabled"], "Once");
}

#[tokio::test]
async fn dell_virtual_media_boots_through_the_idrac_configuration_import() {
    let (_peer, proxy) = recorded("dell");
    // The idrac-virtualmedia scheme forces Dell's path whatever the firmware.
    let address = rivet_bmc::BmcAddress::parse(&format!(
        "idrac-virtualmedia+http://{}",
        &proxy.base_url()[7..]
    ))
    .unwrap();
    let options = rivet_bmc::ConnectOptions {
        redfish: fast_options(),
        ..Default::default()
    };
    let bmc = rivet_bmc::connect(&address, credentials(), options)
        .await
        .unwrap();
    bmc.insert_media("http://images.example/boot.iso", MediaKind::Cd)
        .await
        .unwrap();
    let inserts = proxy.matching("POST", "InsertMedia");
    assert_eq!(
        inserts[0].path,
        "/redfish/v1/Systems/System.Embedded.1/VirtualMedia/1/Actions/VirtualMedia.InsertMedia"
    );
    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Cd,
        persistence: BootPersistence::Once,
        mode: None,
        http_boot_uri: None,
    })
    .await
    .unwrap();
    let imports = proxy.matching("POST", "ImportSystemConfiguration");
    assert_eq!(imports.len(), 1);
    assert_eq!(
        imports[0].path,
        "/redfish/v1/Managers/iDRAC.Embedded.1/Actions/Oem/EID_674_Manager.ImportSystemConfiguration"
    );
    let buffer = imports[0].json()["ImportBuffer"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        buffer.contains("ServerBoot.1#FirstBootDevice\">VCD-DVD<"),
        "{buffer}"
    );
    assert!(
        buffer.contains("ServerBoot.1#BootOnce\">Enabled<"),
        "{buffer}"
    );
    assert!(
        proxy
            .matching("PATCH", "/redfish/v1/Systems/System.Embedded.1")
            .is_empty()
    );
}

#[tokio::test]
async fn hpe_boot_changes_refused_during_post_are_retried() {
    let (_peer, proxy) = recorded("hpe");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    let during_post = json!({"error": {"code": "iLO.0.10.ExtendedInfo",
        "@Message.ExtendedInfo": [{"MessageId": "iLO.2.15.UnableToModifyDuringSystemPOST"}]}});
    proxy.inject(
        Some("PATCH"),
        "/redfish/v1/Systems/1",
        Fault::json(400, during_post.to_string()),
        2,
    );
    bmc.set_boot_override(&BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: None,
        http_boot_uri: None,
    })
    .await
    .unwrap();
    let patches = proxy.matching("PATCH", "/redfish/v1/Systems/1");
    assert_eq!(
        patches.iter().map(|p| p.status).collect::<Vec<_>>(),
        [400, 400, 204]
    );
}

#[tokio::test]
async fn a_generic_bmc_does_not_retry_a_refused_boot_change() {
    // The same refusal from a BMC without the iLO profile is final.
    let (_peer, proxy) = recorded("nvidia_dpu");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    proxy.inject(
        Some("PATCH"),
        "/redfish/v1/Systems/Bluefield",
        Fault::json(
            400,
            json!({"error": {"message": "UnableToModifyDuringSystemPOST"}}).to_string(),
        ),
        1,
    );
    let err = bmc
        .set_boot_override(&BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: None,
            http_boot_uri: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, BmcError::Rejected { status: 400, .. }),
        "{err}"
    );
    assert_eq!(proxy.matching("PATCH", "/redfish/v1/Systems").len(), 1);
}

#[tokio::test]
async fn dell_power_on_refused_right_after_power_off_is_retried() {
    let (_peer, proxy) = recorded("dell");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    let conflict = json!({"error": {"@Message.ExtendedInfo": [
        {"MessageId": "Base.1.12.ActionParameterValueConflict", "Message": "busy"}]}});
    proxy.inject(
        Some("POST"),
        "ComputerSystem.Reset",
        Fault::json(409, conflict.to_string()),
        2,
    );
    bmc.power_on().await.unwrap();
    let posts = proxy.matching("POST", "ComputerSystem.Reset");
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [409, 409, 204]
    );
    assert_eq!(posts[2].json(), json!({"ResetType": "On"}));
}

#[tokio::test]
async fn supermicro_reset_types_come_from_its_action_info() {
    // Supermicro lists reset types only in ResetActionInfo.
    let (_peer, proxy) = recorded("supermicro");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    bmc.power_off(rivet_bmc::PowerOffMode::Soft)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let posts = proxy.matching("POST", "ComputerSystem.Reset");
    assert_eq!(posts[0].json(), json!({"ResetType": "GracefulShutdown"}));
}

#[tokio::test]
async fn dell_bios_changes_are_checked_against_its_registry_then_staged() {
    let (_peer, proxy) = recorded("dell");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    let bad: rivet_bmc::Attributes = serde_json::from_value(json!({
        "BootMode": "Floppy", "SystemModelName": "x", "NoSuchThing": 1, "AcPwrRcvryUserDelay": 60
    }))
    .unwrap();
    let err = bmc.apply_bios(&bad).await.unwrap_err().to_string();
    assert!(err.contains("BootMode cannot be Floppy"), "{err}");
    assert!(err.contains("SystemModelName is read-only"), "{err}");
    assert!(err.contains("no attribute NoSuchThing"), "{err}");
    assert!(
        err.contains("AcPwrRcvryUserDelay must be between 120 and 600"),
        "{err}"
    );
    assert!(
        proxy.matching("PATCH", "Bios").is_empty(),
        "nothing is sent"
    );

    let good: rivet_bmc::Attributes =
        serde_json::from_value(json!({"BootMode": "Bios", "AcPwrRcvryUserDelay": 300})).unwrap();
    let applied = bmc.apply_bios(&good).await.unwrap();
    assert_eq!(applied, rivet_bmc::ApplyTime::OnReset);
    let patch = &proxy.matching("PATCH", "/Bios/Settings")[0];
    assert_eq!(
        patch.path,
        "/redfish/v1/Systems/System.Embedded.1/Bios/Settings"
    );
    assert_eq!(
        patch.json(),
        json!({"Attributes": {"AcPwrRcvryUserDelay": 300, "BootMode": "Bios"},
               "@Redfish.SettingsApplyTime": {"ApplyTime": "OnReset"}})
    );
}

#[tokio::test]
async fn a_session_login_without_a_token_falls_back_to_basic() {
    // sushy-static answers the session POST with 204 and no X-Auth-Token.
    let (_peer, proxy) = recorded("hpe");
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    assert!(!bmc.uses_session().await);
    let login = proxy.matching("POST", "/redfish/v1/SessionService/Sessions");
    assert_eq!(login.len(), 1);
    assert_eq!(login[0].json()["UserName"], "admin");
    bmc.power_state().await.unwrap();
    let last = proxy.requests().pop().unwrap();
    assert!(last.headers["authorization"].starts_with("Basic "));
}

#[tokio::test]
async fn a_link_that_leaves_the_bmc_is_not_followed() {
    let (_peer, proxy) = recorded("hpe");
    proxy.inject(
        Some("GET"),
        "/redfish/v1/Systems",
        Fault::json(
            200,
            json!({"Members": [{"@odata.id": "http://198.51.100.7/redfish/v1/Systems/1"}]})
                .to_string(),
        ),
        1,
    );
    let err = RedfishProvider::connect(
        &endpoint(&proxy.base_url(), None),
        credentials(),
        fast_options(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("outside its own address"), "{err}");
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !r.path.contains("198.51.100.7"))
    );
}
