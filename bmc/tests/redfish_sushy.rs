//! sushy-tools' emulator with its fake driver: power that lands 1–11 s after the request,
//! boot overrides, virtual media that the emulator really downloads, HTTP Basic, TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{connect, credentials, endpoint, fast_options};
use rivet_bmc::redfish::RedfishProvider;
use rivet_bmc::{
    BmcError, BootDevice, BootMode, BootOverride, BootPersistence, BootTarget, Credentials,
    MediaKind, Power, PowerOffMode, PowerState, VirtualMedia, wait_for_power_state,
};
use rivet_tests::scratch_dir;
use rivet_tests::sushy::{FakeSystem, HttpFileServer, SushyDriver, SushyEmulator, TlsFiles};

fn system_path(system: &FakeSystem) -> String {
    format!("/redfish/v1/Systems/{}", system.uuid)
}

async fn settle(bmc: &RedfishProvider, target: PowerState) {
    // The fake driver applies changes after up to 11 s.
    wait_for_power_state(
        bmc,
        target,
        Duration::from_secs(40),
        Duration::from_millis(250),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));
}

#[tokio::test]
async fn power_changes_land_seconds_later_and_are_polled_to_completion() {
    let off = FakeSystem::numbered(1);
    let on = FakeSystem {
        powered_on: true,
        ..FakeSystem::numbered(2)
    };
    let cycled = FakeSystem {
        powered_on: true,
        ..FakeSystem::numbered(3)
    };
    let sushy = SushyEmulator::start(
        SushyDriver::Fake(vec![off.clone(), on.clone(), cycled.clone()]),
        None,
    );
    // Each scenario ends by waiting for the final state the emulator reports.
    let base = sushy.base_url();
    // Three independent scenarios at once: the emulator's delays overlap.
    let power_on = async {
        let bmc = connect(&base, Some(&system_path(&off)), fast_options()).await;
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        bmc.power_on().await.unwrap();
        settle(&bmc, PowerState::On).await;
        // Asking again for the state it is in is harmless.
        bmc.power_on().await.unwrap();
    };
    let power_off = async {
        let bmc = connect(&base, Some(&system_path(&on)), fast_options()).await;
        bmc.power_off(PowerOffMode::Hard).await.unwrap();
        settle(&bmc, PowerState::Off).await;
    };
    let power_cycle = async {
        let bmc = connect(&base, Some(&system_path(&cycled)), fast_options()).await;
        // Off, wait until the emulator reports off, on.
        bmc.power_cycle().await.unwrap();
        settle(&bmc, PowerState::On).await;
    };
    tokio::join!(power_on, power_off, power_cycle);
}

#[tokio::test]
async fn boot_overrides_round_trip() {
    let system = FakeSystem::numbered(4);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), None);
    let bmc = connect(
        &sushy.base_url(),
        Some(&system_path(&system)),
        fast_options(),
    )
    .await;
    for (target, mode) in [
        (BootTarget::Pxe, Some(BootMode::Uefi)),
        (BootTarget::Cd, None),
        (BootTarget::Disk, Some(BootMode::Legacy)),
    ] {
        bmc.set_boot_override(&BootOverride {
            target,
            persistence: BootPersistence::Once,
            mode,
            http_boot_uri: None,
        })
        .await
        .unwrap();
        let read = bmc.boot_override().await.unwrap().unwrap();
        assert_eq!(read.target, target);
        if let Some(mode) = mode {
            assert_eq!(read.mode, Some(mode));
        }
        // sushy-tools ignores BootSourceOverrideEnabled and always reports Continuous.
        assert_eq!(read.persistence, BootPersistence::Persistent);
    }
    let err = bmc
        .set_boot_override(&BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: None,
            http_boot_uri: Some("http://x/boot.efi".into()),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::InvalidRequest(_)), "{err}");
}

#[tokio::test]
async fn virtual_media_is_downloaded_attached_and_ejected() {
    let system = FakeSystem::numbered(5);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), None);
    let images = scratch_dir("images");
    std::fs::write(images.path().join("boot.iso"), vec![0u8; 64 * 1024]).unwrap();
    let files = HttpFileServer::serve(images.path());
    let bmc = connect(
        &sushy.base_url(),
        Some(&system_path(&system)),
        fast_options(),
    )
    .await;
    let url = files.url("boot.iso");
    bmc.insert_media(&url, MediaKind::Cd).await.unwrap();
    let slots = bmc.media_status().await.unwrap();
    let cd = slots
        .iter()
        .find(|s| s.kinds.contains(&MediaKind::Cd))
        .unwrap();
    assert!(cd.inserted);
    assert_eq!(cd.image.as_deref(), Some(url.as_str()));
    // Inserting again replaces the image (the stale one is ejected first).
    bmc.insert_media(&url, MediaKind::Cd).await.unwrap();
    bmc.eject_media(MediaKind::Cd).await.unwrap();
    let slots = bmc.media_status().await.unwrap();
    assert!(
        slots.iter().all(|s| !s.inserted && s.image.is_none()),
        "{slots:?}"
    );
    // An image the emulator cannot download is the BMC's refusal, reported as such.
    let err = bmc
        .insert_media(&files.url("missing.iso"), MediaKind::Cd)
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Rejected { .. }), "{err}");
    let err = bmc
        .insert_media("not a url", MediaKind::Cd)
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::InvalidRequest(_)), "{err}");
}

#[tokio::test]
async fn wrong_credentials_and_absent_bmcs_fail_clearly() {
    let system = FakeSystem::numbered(6);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), None);
    let err = RedfishProvider::connect(
        &endpoint(&sushy.base_url(), Some(&system_path(&system))),
        Credentials::new("admin", "not-the-password"),
        fast_options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Authentication), "{err}");
    assert!(!err.to_string().contains("not-the-password"));

    let nobody = format!("http://127.0.0.1:{}", rivet_tests::free_tcp_port());
    let err = RedfishProvider::connect(&endpoint(&nobody, None), credentials(), fast_options())
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Connection(_)), "{err}");
    assert!(err.is_transient());
}

/// A CA and a certificate for 127.0.0.1 signed by it, written as PEM files.
fn certificates(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Rivet test CA {name}"));
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &ca).unwrap();
    let certificate = dir.join(format!("{name}-cert.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    std::fs::write(&certificate, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        TlsFiles {
            certificate,
            key: key_path,
        },
        ca.pem().into_bytes(),
    )
}

#[tokio::test]
async fn tls_is_verified_unless_disabled_and_custom_cas_are_honoured() {
    let dir = scratch_dir("tls");
    let (files, ca) = certificates(dir.path(), "bmc");
    let (_, other_ca) = certificates(dir.path(), "other");
    let system = FakeSystem::numbered(7);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), Some(files));
    let base = sushy.base_url();
    assert!(base.starts_with("https://"));
    let path = system_path(&system);
    let target = endpoint(&base, Some(&path));

    // The test CA is not in the system roots: verification refuses the BMC.
    let err = RedfishProvider::connect(&target, credentials(), fast_options())
        .await
        .unwrap_err();
    assert!(matches!(err, BmcError::Connection(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // disableCertificateVerification.
    let insecure = RedfishProvider::connect(
        &target,
        credentials(),
        rivet_bmc::redfish::RedfishOptions {
            disable_certificate_verification: true,
            ..fast_options()
        },
    )
    .await
    .unwrap();
    insecure.power_state().await.unwrap();

    // The right CA verifies; another CA does not.
    let trusted = RedfishProvider::connect(
        &target,
        credentials(),
        rivet_bmc::redfish::RedfishOptions {
            ca_certificates_pem: vec![ca],
            ..fast_options()
        },
    )
    .await
    .unwrap();
    trusted.power_state().await.unwrap();
    let err = RedfishProvider::connect(
        &target,
        credentials(),
        rivet_bmc::redfish::RedfishOptions {
            ca_certificates_pem: vec![other_ca],
            ..fast_options()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Connection(_)), "{err}");

    let err = RedfishProvider::connect(
        &target,
        credentials(),
        rivet_bmc::redfish::RedfishOptions {
            ca_certificates_pem: vec![b"not a certificate".to_vec()],
            ..fast_options()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BmcError::Setup(_)), "{err}");
}

#[tokio::test]
async fn an_ipmi_fallback_that_cannot_connect_is_dropped() {
    let system = FakeSystem::numbered(8);
    let sushy = SushyEmulator::start(SushyDriver::Fake(vec![system.clone()]), None);
    let address = rivet_bmc::BmcAddress::parse(&format!(
        "redfish+http://{}{}",
        &sushy.base_url()["http://".len()..],
        system_path(&system)
    ))
    .unwrap();
    let options = rivet_bmc::ConnectOptions {
        redfish: fast_options(),
        ipmi: rivet_bmc::ipmi::IpmiOptions {
            timeout: Duration::from_millis(300),
            retries: 0,
            ..Default::default()
        },
        ipmi_fallback: true,
        call_timeout: Duration::from_secs(30),
    };
    // Nothing answers IPMI on this host's port 623: Redfish alone serves the host.
    let bmc = rivet_bmc::connect(&address, credentials(), options)
        .await
        .unwrap();
    assert_eq!(bmc.provider_names(), ["redfish"]);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}
