//! DMTF's published mockups (DSP2043) served by sushy-static: resource shapes the vendor
//! captures lack — drives behind Storage, SimpleStorage devices, actions on manager media,
//! reset types only in ActionInfo, several systems behind one service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{connect, credentials, dmtf_tree, endpoint, fast_options};
use rivet_bmc::redfish::RedfishProvider;
use rivet_bmc::{
    BmcError, BootDevice, BootMode, BootOverride, BootPersistence, BootTarget, EventSubscription,
    Events, Inventory, MediaKind, Power, VirtualMedia,
};
use rivet_model::StorageType;
use rivet_tests::fault_proxy::FaultProxy;
use rivet_tests::sushy::SushyStatic;
use serde_json::json;

#[tokio::test]
async fn drives_and_simple_storage_become_the_storage_list() {
    let rackmount = SushyStatic::serve(&dmtf_tree("public-rackmount1"), None);
    let local = SushyStatic::serve(&dmtf_tree("public-localstorage"), None);
    let tower = SushyStatic::serve(&dmtf_tree("public-tower"), None);

    let details = connect(&rackmount.base_url(), None, fast_options())
        .await
        .inventory()
        .await
        .unwrap();
    // No Storage: the SimpleStorage devices that are present and sized.
    let sizes: Vec<u64> = details
        .storage
        .iter()
        .filter_map(|d| d.size_bytes)
        .collect();
    assert_eq!(sizes, [8_000_000_000_000, 4_000_000_000_000]);
    assert_eq!(details.hostname.as_deref(), Some("web483"));
    assert_eq!(details.cpu.unwrap().count, Some(16));
    let vlan = details.nics.iter().find(|n| n.vlan_id.is_some()).unwrap();
    assert_eq!(vlan.mac.as_deref(), Some("aa:bb:cc:dd:ee:00"));
    assert_eq!(vlan.vlan_id, Some(101));

    let details = connect(&local.base_url(), None, fast_options())
        .await
        .inventory()
        .await
        .unwrap();
    assert_eq!(details.storage.len(), 4);
    for drive in &details.storage {
        assert_eq!(drive.kind, Some(StorageType::Hdd));
        assert_eq!(drive.rotational, Some(true));
        assert_eq!(drive.size_bytes, Some(899_527_000_064));
        assert!(drive.wwn.as_deref().unwrap().starts_with("0x"));
    }

    let details = connect(&tower.base_url(), None, fast_options())
        .await
        .inventory()
        .await
        .unwrap();
    assert!(!details.storage.is_empty());
    assert!(!details.nics.is_empty());
}

#[tokio::test]
async fn stale_media_is_ejected_first_and_action_targets_are_followed_verbatim() {
    let peer = SushyStatic::serve(&dmtf_tree("public-telemetry"), None);
    let proxy = FaultProxy::start(peer.addr());
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    bmc.insert_media("http://images.example/boot.iso", MediaKind::Cd)
        .await
        .unwrap();
    let sent: Vec<(String, String, serde_json::Value)> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("VirtualMedia"))
        .map(|r| (r.method.clone(), r.path.clone(), r.json()))
        .collect();
    assert_eq!(
        sent,
        [
            (
                "POST".to_owned(),
                "/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VM.EjectMedia".to_owned(),
                json!({})
            ),
            (
                "POST".to_owned(),
                "/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VM.InsertMedia".to_owned(),
                json!({"Image": "http://images.example/boot.iso", "Inserted": true,
                       "WriteProtected": true})
            ),
        ]
    );
}

#[tokio::test]
async fn slots_without_actions_take_a_patch() {
    let peer = SushyStatic::serve(&dmtf_tree("public-rackmount1"), None);
    let proxy = FaultProxy::start(peer.addr());
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    bmc.eject_media(MediaKind::Floppy).await.unwrap();
    let patches = proxy.matching("PATCH", "/VirtualMedia/Floppy1");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].json(), json!({"Image": null, "Inserted": false}));
}

#[tokio::test]
async fn reset_types_and_boot_overrides_read_from_the_telemetry_mockup() {
    let peer = SushyStatic::serve(&dmtf_tree("public-telemetry"), None);
    let proxy = FaultProxy::start(peer.addr());
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    assert_eq!(
        bmc.boot_override().await.unwrap(),
        Some(BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: Some(BootMode::Uefi),
            http_boot_uri: None,
        })
    );
    bmc.reset().await.unwrap();
    let reset = &proxy.matching("POST", "ComputerSystem.Reset")[0];
    assert_eq!(reset.json(), json!({"ResetType": "ForceRestart"}));
}

#[tokio::test]
async fn a_boot_target_the_bmc_does_not_list_is_refused_before_sending() {
    let peer = SushyStatic::serve(&dmtf_tree("public-rackmount1"), None);
    let proxy = FaultProxy::start(peer.addr());
    let bmc = connect(&proxy.base_url(), None, fast_options()).await;
    let err = bmc
        .set_boot_override(&BootOverride {
            target: BootTarget::UefiHttp,
            persistence: BootPersistence::Once,
            mode: None,
            http_boot_uri: Some("http://boot.example/ipxe.efi".into()),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not offer boot target UefiHttp"), "{err}");
    assert!(err.contains("Pxe, Cd, Usb, Hdd"), "{err}");
    assert!(proxy.matching("PATCH", "/").is_empty());
}

#[tokio::test]
async fn a_bladed_chassis_needs_its_system_named() {
    let peer = SushyStatic::serve(&dmtf_tree("public-bladed"), None);
    let err = RedfishProvider::connect(
        &endpoint(&peer.base_url(), None),
        credentials(),
        fast_options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::InvalidRequest(_)), "{err}");
    assert!(err.to_string().contains("manages 4 systems"), "{err}");
    let blade = connect(
        &peer.base_url(),
        Some("/redfish/v1/Systems/529QB9450R6"),
        fast_options(),
    )
    .await;
    assert_eq!(blade.system_path(), "/redfish/v1/Systems/529QB9450R6");
    blade.power_state().await.unwrap();
}

#[tokio::test]
async fn event_subscriptions_need_a_location_and_stay_inside_their_collection() {
    let peer = SushyStatic::serve(&dmtf_tree("public-rackmount1"), None);
    let bmc = connect(&peer.base_url(), None, fast_options()).await;
    let subscription = EventSubscription {
        destination: "https://rivet.example/events".into(),
        context: Some("host-1".into()),
        http_headers: Default::default(),
    };
    // sushy-static accepts the POST with 204 but creates nothing, so there is no id.
    let err = bmc.subscribe(&subscription).await.unwrap_err().to_string();
    assert!(err.contains("no Location"), "{err}");
    let err = bmc
        .unsubscribe("/redfish/v1/Systems/437XR1138R2")
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::InvalidRequest(_)), "{err}");
    let bad = EventSubscription {
        destination: "not a url".into(),
        ..subscription
    };
    assert!(matches!(
        bmc.subscribe(&bad).await,
        Err(BmcError::InvalidRequest(_))
    ));
}
