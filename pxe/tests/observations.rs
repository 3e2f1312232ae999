//! Per-MAC observations against real clients in a network namespace: busybox udhcpc asks
//! for an address as a PXE client, atftp reads the iPXE build, curl fetches the host's
//! script and kernel; and an unknown MAC under the `ignore` policy is seen but not answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use dhcproto::v4::MessageType;
use rivet_pxe::dhcp::{AddressPool, DhcpMode, Silence};
use rivet_pxe::observe::{BootOffered, DhcpAnswer, HttpFetch, TftpOutcome};
use rivet_pxe::tftp::TftpLimits;
use rivet_pxe::{
    BootConfig, BootObserver, BootServices, DhcpSettings, HostTable, HostTableHandle, HttpSettings,
    MacAddr, Observation, ObservationKind, ObserverHandle, TftpSettings,
};
use rivet_tests::{Netns, PXE_BIOS_CLASS, scratch_dir, udhcpc, wait_until};

const KNOWN: &str = "52:54:00:89:00:01";
const UNKNOWN: &str = "52:54:00:89:00:99";
const TABLE: &str = r#"{
  "unknown": "ignore",
  "agent": {"kernel": "vmlinuz", "initrds": [], "cmdline": "console=ttyS0"},
  "hosts": [{"mac": "52:54:00:89:00:01", "boot": "agent"}]
}"#;

#[derive(Default)]
struct Recorder(Mutex<Vec<Observation>>);

impl BootObserver for Recorder {
    fn observe(&self, observation: &Observation) {
        self.0.lock().unwrap().push(observation.clone());
    }
}

impl Recorder {
    fn any(&self, matches: impl Fn(&Observation) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(matches)
    }
}

#[test]
fn netns_observations_name_the_mac_behind_dhcp_tftp_and_http() {
    let server = Netns::new("pxo");
    let client = Netns::new("pxo");
    server.link_client("vs", "10.89.0.1/24", &client, "vc", KNOWN);

    let dir = scratch_dir("pxe-observe");
    let tftp_root = dir.path().join("tftp");
    let files = dir.path().join("files");
    std::fs::create_dir(&tftp_root).unwrap();
    std::fs::create_dir(&files).unwrap();
    let ipxe: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(tftp_root.join("undionly.kpxe"), &ipxe).unwrap();
    std::fs::write(files.join("vmlinuz"), b"kernel").unwrap();

    let recorder = Arc::new(Recorder::default());
    let observer = ObserverHandle::new(recorder.clone());
    let mut dhcp = DhcpSettings::new(DhcpMode::Authoritative);
    dhcp.pool = AddressPool::new(Ipv4Addr::new(10, 89, 0, 100), Ipv4Addr::new(10, 89, 0, 110));
    dhcp.lease_db = Some(dir.path().join("leases.redb"));
    let config = BootConfig {
        interface: Some("vs".into()),
        dhcp: Some(dhcp),
        tftp: Some(TftpSettings {
            listen: "0.0.0.0:69".parse().unwrap(),
            root: tftp_root,
            limits: TftpLimits::default(),
            max_transfers: 4,
        }),
        http: Some(HttpSettings {
            listen: "10.89.0.1:8080".parse().unwrap(),
            files_root: Some(files),
            ipxe_root: None,
        }),
        ..BootConfig::default()
    };
    let hosts = HostTableHandle::new(HostTable::from_json(TABLE).unwrap());
    let (started, is_started) = mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let services = server.spawn_inside(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut services = BootServices::start_observed(config, hosts, observer)
                .await
                .unwrap();
            started.send(()).unwrap();
            tokio::select! {
                _ = stopped => {}
                failed = services.wait() => panic!("a boot service stopped: {failed:?}"),
            }
            services.shutdown().await;
        });
    });
    is_started
        .recv_timeout(Duration::from_secs(30))
        .expect("the boot services start");

    let known: MacAddr = KNOWN.parse().unwrap();
    let address =
        udhcpc(&client, "vc", Some(PXE_BIOS_CLASS), 5).expect("the known host gets an address");
    assert!(recorder.any(|seen| seen.mac == Some(known)
        && seen.kind
            == ObservationKind::Dhcp {
                message: MessageType::Discover,
                answer: DhcpAnswer::Replied {
                    reply: MessageType::Offer,
                    address: Some(address),
                    boot: Some(BootOffered::IpxeOverTftp),
                },
            }));
    assert!(recorder.any(|seen| seen.mac == Some(known)
        && matches!(
            seen.kind,
            ObservationKind::Dhcp {
                message: MessageType::Request,
                answer: DhcpAnswer::Replied {
                    reply: MessageType::Ack,
                    ..
                },
            }
        )));

    // TFTP and /files/ carry no MAC: the address DHCP gave names it.
    client.exec_checked(&["ip", "addr", "add", &format!("{address}/24"), "dev", "vc"]);
    let fetched = dir.path().join("fetched.kpxe");
    let tftp = client.output(&[
        "atftp",
        "--get",
        "-r",
        "undionly.kpxe",
        "-l",
        fetched.to_str().unwrap(),
        "10.89.0.1",
        "69",
    ]);
    assert!(tftp.status.success(), "atftp: {tftp:?}");
    assert_eq!(std::fs::read(&fetched).unwrap(), ipxe);
    let missing = client.output(&[
        "atftp",
        "--get",
        "-r",
        "snponly.efi",
        "-l",
        "/dev/null",
        "10.89.0.1",
        "69",
    ]);
    assert!(!missing.status.success());
    for path in ["/boot/52-54-00-89-00-01.ipxe", "/files/vmlinuz"] {
        let curl = client.output(&[
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            &format!("http://10.89.0.1:8080{path}"),
        ]);
        assert!(curl.status.success(), "curl {path}: {curl:?}");
    }
    wait_until(
        "the TFTP and HTTP observations",
        Duration::from_secs(10),
        || {
            let attributed = |kind: ObservationKind| {
                recorder.any(|seen| {
                    seen.mac == Some(known) && seen.ip == Some(address) && seen.kind == kind
                })
            };
            attributed(ObservationKind::Tftp {
                file: "undionly.kpxe".into(),
                outcome: TftpOutcome::Sent {
                    bytes: ipxe.len() as u64,
                },
            }) && attributed(ObservationKind::Tftp {
                file: "snponly.efi".into(),
                outcome: TftpOutcome::Refused("file not found"),
            }) && attributed(ObservationKind::Http {
                fetch: HttpFetch::Script,
                status: 200,
            }) && attributed(ObservationKind::Http {
                fetch: HttpFetch::File,
                status: 200,
            })
        },
    );

    // An unknown MAC under the `ignore` policy: seen, and silent because it is unknown.
    client.exec_checked(&["ip", "addr", "flush", "dev", "vc"]);
    client.exec_checked(&["ip", "link", "set", "vc", "address", UNKNOWN]);
    assert_eq!(udhcpc(&client, "vc", Some(PXE_BIOS_CLASS), 2), None);
    let unknown: MacAddr = UNKNOWN.parse().unwrap();
    assert!(recorder.any(|seen| seen.mac == Some(unknown)
        && seen.kind
            == ObservationKind::Dhcp {
                message: MessageType::Discover,
                answer: DhcpAnswer::Silent(Silence::NotForUs("unknown host")),
            }));
    assert!(
        !recorder.any(|seen| seen.mac == Some(unknown)
            && matches!(
                seen.kind,
                ObservationKind::Dhcp {
                    answer: DhcpAnswer::Replied { .. },
                    ..
                }
            )),
        "the unknown host was answered"
    );

    stop.send(()).unwrap();
    services.join().unwrap();
}
