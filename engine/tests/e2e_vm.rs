//! The whole lifecycle on real peers only: `rivet serve` (the real binary, real drivers,
//! authoritative DHCP, TFTP-less iPXE boot over HTTP, the agent channel) in a network
//! namespace; OpenIPMI's `ipmi_sim` as the BMC, whose power state starts and stops a QEMU
//! guest (TCG, SeaBIOS with QEMU's iPXE ROM); the agent image built by
//! `scripts/agent-image.sh` and PXE-booted by that guest; `rivet host` and curl as the
//! clients. Enroll → inspect (the agent's inventory names the disk and NIC QEMU was
//! given) → available → provision a qcow2 made by `qemu-img` → the guest boots the
//! image's boot sector from its disk → deprovision (the disk has no partition table left)
//! → delete.
//!
//! Phase wall times are printed (`e2e phase …`), never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../agent/tests/common/disks.rs"]
mod disks;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::settled;
use rivet_engine::lifecycle::ProvisioningState as S;
use rivet_engine::runtime::HostView;
use rivet_tests::qemu::{GuestBuilder, marker_boot_sector};
use rivet_tests::{
    Daemon, IPMI_PASSWORD, IPMI_USER, IpmiSim, Netns, PowerSwitch, cargo_bin, require_tool,
    scratch_dir, wait_until,
};

const SERVER: &str = "10.99.0.1";
const API: &str = "https://10.99.0.1:8443";
const MAC: &str = "52:54:00:e2:e0:01";
const HOST: &str = "e2e-node";
const DISK_BYTES: u64 = 8 << 30;
const DISK_MARKER: &str = "RIVET-E2E-IMAGE-BOOTED";
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The namespace, the daemon and the clients.
struct Lab {
    ns: Arc<Netns>,
    dir: tempfile::TempDir,
    serve: Daemon,
}

impl Lab {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `rivet host …` inside the namespace; fails the test unless it succeeds.
    fn host(&self, args: &[&str]) -> Output {
        let out = self
            .ns
            .command(cargo_bin("rivet"))
            .arg("host")
            .args(args)
            .env("RIVET_URL", API)
            .env("RIVET_STATE_DIR", self.state())
            .env("RIVET_BMC_PASSWORD", IPMI_PASSWORD)
            .env_remove("RIVET_TOKEN")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rivet host {args:?} failed: {}{}\nserve log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.serve.log(), 40)
        );
        out
    }

    /// `GET path` on the API with curl inside the namespace: (status, body).
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let token = std::fs::read_to_string(self.state().join("api-token")).unwrap();
        let out = self
            .ns
            .command(require_tool("curl"))
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.state().join("tls/ca.pem"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{API}{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {path}: {out:?}");
        let text = out.stdout;
        let split = text.iter().rposition(|&b| b == b'\n').unwrap();
        let status = std::str::from_utf8(&text[split + 1..])
            .unwrap()
            .parse()
            .unwrap();
        (status, text[..split].to_vec())
    }

    fn view(&self) -> Option<HostView> {
        match self.get(&format!("/v1/hosts/{HOST}")) {
            (200, body) => Some(serde_json::from_slice(&body).unwrap()),
            (404, _) => None,
            (status, body) => panic!("GET host: {status} {}", String::from_utf8_lossy(&body)),
        }
    }

    fn wait_settled(&self, state: S) {
        let done = settled(state);
        wait_until(&format!("{HOST} to be {state:?}"), PHASE_TIMEOUT, || {
            let view = self.view();
            if let Some(error) = view
                .as_ref()
                .filter(|v| v.status.error_count >= 3)
                .and_then(|v| v.status.error.as_ref())
            {
                panic!(
                    "{HOST} failed: {error:?}\nserve log:\n{}",
                    tail(&self.serve.log(), 60)
                );
            }
            view.as_ref().is_some_and(&done)
        });
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The agent's kernel and initramfs, built from the workspace's `rivet-agent`.
fn build_agent_image(out: &Path) {
    let status = Command::new(rivet_tests::workspace_root().join("scripts/agent-image.sh"))
        .args(["--fast", "--no-iso", "--binary"])
        .arg(cargo_bin("rivet-agent"))
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/agent-image.sh failed");
}

/// The image: [`disks::deploy_image`]'s GPT disk with a boot sector that prints
/// [`DISK_MARKER`] in the protective MBR's boot code, as a qcow2 made by `qemu-img`.
fn make_image(dir: &Path, files: &Path) -> (PathBuf, String) {
    let raw = disks::deploy_image(dir);
    let code = marker_boot_sector(DISK_MARKER);
    let mut bytes = std::fs::read(&raw).unwrap();
    // Boot code only: the protective MBR's partition entry and signature stay sgdisk's.
    bytes[..440].copy_from_slice(&code[..440]);
    std::fs::write(&raw, bytes).unwrap();
    let qcow2 = files.join("os.qcow2");
    disks::qemu_img_convert(&raw, "qcow2", &qcow2);
    let sum = disks::run("sha256sum", &[qcow2.to_str().unwrap()]).stdout;
    let digest = String::from_utf8(sum).unwrap()[..64].to_owned();
    (raw, digest)
}

fn guest(ns: &Netns, dir: &Path, disk: &Path, n: usize, boot_device: &str) -> GuestBuilder {
    // Network first when the BMC says PXE, the disk first otherwise (bootindex: `-boot`
    // does not reach -device NICs).
    let (nic, disk_index) = if boot_device == "pxe" { (1, 2) } else { (2, 1) };
    let port = dir.join("sercon-port.bin");
    std::fs::write(&port, 0x3f8u16.to_le_bytes()).unwrap();
    GuestBuilder::new(&format!("e2e-{n}"))
        .in_netns(ns)
        .memory_mib(1024)
        .arg("-netdev")
        .arg("tap,id=n0,ifname=tap0,script=no,downscript=no")
        .arg("-device")
        .arg(format!(
            "virtio-net-pci,netdev=n0,mac={MAC},bootindex={nic}"
        ))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
        .arg("-device")
        .arg(format!(
            "virtio-blk-pci,drive=d0,serial=E2E-ROOT,bootindex={disk_index}"
        ))
        // SeaBIOS and iPXE print on the serial console too.
        .arg("-fw_cfg")
        .arg(format!("name=etc/sercon-port,file={}", port.display()))
}

/// The first 440 bytes: the MBR's boot code.
fn boot_code(path: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let mut code = vec![0; 440];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut code)
        .unwrap();
    code
}

/// The `meta_data.json` of the config drive the agent added as partition 3.
fn config_drive_meta_data(disk: &Path, scratch: &Path) -> serde_json::Value {
    let info = disks::run("sgdisk", &["-i", "3", disk.to_str().unwrap()]).stdout;
    let info = String::from_utf8(info).unwrap();
    let number_after = |label: &str| -> u64 {
        let line = info
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} in sgdisk -i 3:\n{info}"));
        line[label.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let offset = number_after("First sector:") * 512;
    let size = number_after("Partition size:") * 512;
    let files = disks::config_drive_files(disk, offset, size, scratch);
    let text = std::fs::read(files.join("openstack/latest/meta_data.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn serve_config(dir: &Path, files: &Path) -> PathBuf {
    let config = format!(
        r#"state_dir = "{state}"
[api]
listen = "{SERVER}:8443"
[engine]
backoff_base_ms = 1000
backoff_max_ms = 4000
power_poll_interval_ms = 200
power_sync_interval_secs = 0
soft_power_off_timeout_secs = 2
[drivers]
kind = "real"
[drivers.real.bmc]
ipmi_min_command_interval_ms = 0
[drivers.real.boot]
engine_url = "{API}"
http_listen = "{SERVER}:8080"
interface = "br0"
server_ip = "{SERVER}"
dhcp = "authoritative"
dhcp_pool = ["10.99.0.100", "10.99.0.150"]
files_root = "{files}"
agent_kernel = "agent/vmlinuz"
agent_initrds = ["agent/initramfs.img"]
agent_cmdline = "console=ttyS0 quiet panic=-1"
"#,
        state = dir.join("state").display(),
        files = files.display(),
    );
    let path = dir.join("rivet.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn vm_netns_a_pxe_booted_agent_takes_a_host_from_enroll_to_delete() {
    let started = Instant::now();
    let mut phase_start = Instant::now();
    let phase = |name: &str, since: &mut Instant| {
        eprintln!("e2e phase {name}: {:.1} s", since.elapsed().as_secs_f64());
        *since = Instant::now();
    };

    let ns = Arc::new(Netns::new("e2e"));
    ns.add_bridge("br0", &format!("{SERVER}/24"));
    ns.add_tap("tap0", "br0");
    let dir = scratch_dir("e2e");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    build_agent_image(&files.join("agent"));
    let (raw_image, digest) = make_image(dir.path(), &files);
    let disk = dir.path().join("disk.raw");
    disks::sparse_file(&disk, DISK_BYTES);

    let sim = IpmiSim::start_in(&ns);
    let switch = PowerSwitch::attach(sim.state_dir(), {
        let (ns, dir, disk) = (ns.clone(), dir.path().to_owned(), disk.clone());
        move |n, boot_device| guest(&ns, &dir, &disk, n, boot_device).start(&dir)
    });

    let config = serve_config(dir.path(), &files);
    let mut command = ns.command(cargo_bin("rivet"));
    command
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG");
    let mut serve = Daemon::spawn("rivet-serve", dir.path(), &mut command);
    serve.wait_for_log("serving the API", Duration::from_secs(60));
    let lab = Lab {
        ns: ns.clone(),
        dir,
        serve,
    };
    phase(
        "setup (agent image, qcow2, netns, ipmi_sim, rivet serve)",
        &mut phase_start,
    );

    // Enroll: the engine registers the BMC, boots the agent over the network, inspects.
    let bmc = format!("ipmi://127.0.0.1:{}", sim.port());
    lab.host(&[
        "enroll",
        HOST,
        "--bmc",
        &bmc,
        "--username",
        IPMI_USER,
        "--mac",
        MAC,
    ]);
    let agent_serial = switch.wait_for_serial(0, "connected to the engine", PHASE_TIMEOUT);
    assert_eq!(switch.power_ons()[0].boot_device, "pxe");
    assert!(
        agent_serial.contains("rivet-agent ready"),
        "{}",
        tail(&agent_serial, 40)
    );
    assert!(
        agent_serial.contains(&format!("/boot/{}.ipxe", MAC.replace(':', "-"))),
        "iPXE fetched the host's script: {}",
        tail(&agent_serial, 60)
    );
    phase("enroll → agent connected (PXE boot)", &mut phase_start);
    lab.wait_settled(S::Available);
    phase(
        "agent connected → available (inspect, clean)",
        &mut phase_start,
    );

    let (status, hardware) = lab.get(&format!("/v1/hosts/{HOST}/hardware"));
    assert_eq!(status, 200);
    let hardware: serde_json::Value = serde_json::from_slice(&hardware).unwrap();
    let nics = hardware["nics"].as_array().unwrap();
    assert!(
        nics.iter().any(|nic| nic["mac"] == MAC),
        "the NIC QEMU was given: {hardware}"
    );
    let storage = hardware["storage"].as_array().unwrap();
    assert!(
        storage
            .iter()
            .any(|d| d["sizeBytes"] == DISK_BYTES && d["serialNumber"] == "E2E-ROOT"),
        "the disk QEMU was given: {hardware}"
    );

    // Provision: the agent writes the image, the engine boots the host from its disk.
    phase_start = Instant::now();
    let image_url = format!("http://{SERVER}:8080/files/os.qcow2");
    lab.host(&[
        "provision",
        HOST,
        "--image",
        &image_url,
        "--checksum",
        &digest,
        "--checksum-type",
        "sha256",
        "--format",
        "qcow2",
    ]);
    lab.wait_settled(S::Provisioned);
    phase(
        "provision (deploy, boot to disk, power cycle)",
        &mut phase_start,
    );
    wait_until(
        "the guest to be powered on from its disk",
        PHASE_TIMEOUT,
        || {
            switch
                .power_ons()
                .last()
                .is_some_and(|on| on.boot_device != "pxe")
        },
    );
    let booted = switch.power_ons().len() - 1;
    switch.wait_for_serial(booted, DISK_MARKER, PHASE_TIMEOUT);
    assert_eq!(sim.power(), "1");
    phase("provisioned → image's boot sector ran", &mut phase_start);
    disks::assert_deployed(&raw_image, &disk);
    assert_eq!(
        boot_code(&disk),
        boot_code(&raw_image),
        "the image's boot code"
    );
    let meta_data = config_drive_meta_data(&disk, lab.dir.path());
    assert_eq!(meta_data["name"], HOST, "{meta_data}");

    // Deprovision: the agent boots again and cleans the disk's metadata.
    phase_start = Instant::now();
    lab.host(&["deprovision", HOST]);
    lab.wait_settled(S::Available);
    phase("deprovision (agent boot, metadata clean)", &mut phase_start);
    disks::assert_unbootable(&disk);
    // The engine's own account of every step, for the phase breakdown.
    let timeline = lab.host(&["timeline", HOST]).stdout;
    eprintln!("{}", String::from_utf8_lossy(&timeline));

    // Delete: powered off, the agent released, the host gone.
    phase_start = Instant::now();
    lab.host(&["delete", HOST]);
    wait_until("the host to be deleted", PHASE_TIMEOUT, || {
        lab.view().is_none()
    });
    wait_until("the machine to be off", PHASE_TIMEOUT, || {
        sim.power() == "0"
    });
    phase("delete", &mut phase_start);

    let boots: Vec<String> = switch
        .power_ons()
        .into_iter()
        .map(|on| on.boot_device)
        .collect();
    assert_eq!(
        boots,
        ["pxe", "default", "pxe"],
        "inspection and deprovisioning boot the agent, the provisioned host its disk"
    );
    let log = lab.serve.log();
    assert!(log.contains("agent connected"), "{}", tail(&log, 40));
    eprintln!("e2e total {:.1} s", started.elapsed().as_secs_f64());
}
