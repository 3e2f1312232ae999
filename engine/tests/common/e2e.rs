//! What the end-to-end tests share: `rivet serve` with real drivers in a namespace, the
//! clients that talk to it there, the agent image, and the disk image they provision.
//! Included with `#[path]` by the tests that boot real machines (they also include the
//! agent tests' `disks` helpers as `crate::disks`).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivet_engine::lifecycle::ProvisioningState as S;
use rivet_engine::runtime::HostView;
use rivet_tests::qemu::marker_boot_sector;
use rivet_tests::{Daemon, Netns, cargo_bin, require_tool, wait_until};

use crate::common::settled;
use crate::disks;

pub const SERVER: &str = "10.99.0.1";
pub const API: &str = "https://10.99.0.1:8443";
pub const DISK_BYTES: u64 = 8 << 30;
pub const DISK_MARKER: &str = "RIVET-E2E-IMAGE-BOOTED";
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// Who gives the machines their addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcp {
    /// Rivet, from 10.99.0.100–150.
    Authoritative,
    /// Another server (the test's dnsmasq); Rivet answers as ProxyDHCP with boot
    /// information only.
    Proxy,
}

/// The namespace, the daemon and the clients.
pub struct Lab {
    pub ns: Arc<Netns>,
    pub dir: tempfile::TempDir,
    pub serve: Daemon,
    /// The host the test drives.
    pub host: &'static str,
    pub bmc_password: String,
}

impl Lab {
    /// Starts `rivet serve` in `ns` with [`serve_config`]; `files` is its `files_root`.
    pub fn start(
        ns: Arc<Netns>,
        dir: tempfile::TempDir,
        files: &Path,
        dhcp: Dhcp,
        host: &'static str,
        bmc_password: &str,
    ) -> Self {
        let config = serve_config(dir.path(), files, dhcp);
        let mut command = ns.command(cargo_bin("rivet"));
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG");
        let mut serve = Daemon::spawn("rivet-serve", dir.path(), &mut command);
        serve.wait_for_log("serving the API", Duration::from_secs(60));
        Self {
            ns,
            dir,
            serve,
            host,
            bmc_password: bmc_password.to_owned(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `rivet host …` inside the namespace; fails the test unless it succeeds.
    pub fn rivet_host(&self, args: &[&str]) -> Output {
        let out = self
            .ns
            .command(cargo_bin("rivet"))
            .arg("host")
            .args(args)
            .env("RIVET_URL", API)
            .env("RIVET_STATE_DIR", self.state())
            .env("RIVET_BMC_PASSWORD", &self.bmc_password)
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
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
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

    pub fn view(&self) -> Option<HostView> {
        match self.get(&format!("/v1/hosts/{}", self.host)) {
            (200, body) => Some(serde_json::from_slice(&body).unwrap()),
            (404, _) => None,
            (status, body) => panic!("GET host: {status} {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Waits until the host settles in `state`; fails with the error and the daemon's log
    /// once the host has failed three times.
    pub fn wait_settled(&self, state: S) {
        let done = settled(state);
        wait_until(
            &format!("{} to be {state:?}", self.host),
            PHASE_TIMEOUT,
            || {
                let view = self.view();
                self.fail_on_errors(view.as_ref());
                view.as_ref().is_some_and(&done)
            },
        );
    }

    /// Fails the test once the host has failed three times in a row.
    pub fn fail_if_failing(&self) {
        self.fail_on_errors(self.view().as_ref());
    }

    fn fail_on_errors(&self, view: Option<&HostView>) {
        if let Some(error) = view
            .filter(|v| v.status.error_count >= 3)
            .and_then(|v| v.status.error.as_ref())
        {
            panic!(
                "{} failed: {error:?}\nserve log:\n{}",
                self.host,
                tail(&self.serve.log(), 60)
            );
        }
    }

    /// The host's inventory as the API serves it.
    pub fn hardware(&self) -> serde_json::Value {
        let (status, hardware) = self.get(&format!("/v1/hosts/{}/hardware", self.host));
        assert_eq!(status, 200);
        serde_json::from_slice(&hardware).unwrap()
    }

    /// Checks the inventory names the NIC (`mac`) and the [`DISK_BYTES`] disk with serial
    /// `E2E-ROOT` that the machine was given.
    pub fn assert_inventory(&self, mac: &str) {
        let hardware = self.hardware();
        let nics = hardware["nics"].as_array().unwrap();
        assert!(
            nics.iter().any(|nic| nic["mac"] == mac),
            "the NIC the machine was given: {hardware}"
        );
        let storage = hardware["storage"].as_array().unwrap();
        assert!(
            storage
                .iter()
                .any(|d| d["sizeBytes"] == DISK_BYTES && d["serialNumber"] == "E2E-ROOT"),
            "the disk the machine was given: {hardware}"
        );
    }

    /// `rivet host provision` of the image [`make_image`] put under `files`.
    pub fn provision(&self, digest: &str) {
        let image_url = format!("http://{SERVER}:8080/files/os.qcow2");
        let host = self.host;
        self.rivet_host(&[
            "provision",
            host,
            "--image",
            &image_url,
            "--checksum",
            digest,
            "--checksum-type",
            "sha256",
            "--format",
            "qcow2",
        ]);
    }
}

/// Prints how long a phase took (never asserted) and starts the next.
pub struct Phases {
    since: Instant,
    started: Instant,
}

impl Phases {
    pub fn start() -> Self {
        Self {
            since: Instant::now(),
            started: Instant::now(),
        }
    }

    pub fn end(&mut self, name: &str) {
        eprintln!(
            "e2e phase {name}: {:.1} s",
            self.since.elapsed().as_secs_f64()
        );
        self.since = Instant::now();
    }

    pub fn restart(&mut self) {
        self.since = Instant::now();
    }

    pub fn total(&self) {
        eprintln!("e2e total {:.1} s", self.started.elapsed().as_secs_f64());
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The agent's kernel and initramfs (and its ISO with `iso`), built from the workspace's
/// `rivet-agent`.
pub fn build_agent_image(out: &Path, iso: bool) {
    let mut command = Command::new(rivet_tests::workspace_root().join("scripts/agent-image.sh"));
    command.arg("--fast");
    if !iso {
        command.arg("--no-iso");
    }
    let status = command
        .arg("--binary")
        .arg(cargo_bin("rivet-agent"))
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/agent-image.sh failed");
}

/// The image: [`disks::deploy_image`]'s GPT disk made bootable both ways to print
/// [`DISK_MARKER`]: by BIOS through boot code in the protective MBR, and by UEFI through a
/// GRUB built by `grub-mkstandalone` at `\EFI\BOOT\BOOTX64.EFI` on its ESP. Converted to
/// `files/os.qcow2` by `qemu-img`; returns the raw image and the qcow2's SHA-256.
pub fn make_image(dir: &Path, files: &Path) -> (PathBuf, String) {
    let raw = disks::deploy_image(dir);
    let code = marker_boot_sector(DISK_MARKER);
    let mut bytes = std::fs::read(&raw).unwrap();
    // Boot code only: the protective MBR's partition entry and signature stay sgdisk's.
    bytes[..440].copy_from_slice(&code[..440]);
    std::fs::write(&raw, bytes).unwrap();
    let config = dir.join("marker-grub.cfg");
    std::fs::write(&config, format!("echo {DISK_MARKER}\nsleep 600\n")).unwrap();
    let loader = dir.join("BOOTX64.EFI");
    disks::run(
        "grub-mkstandalone",
        &[
            "-O",
            "x86_64-efi",
            "-o",
            loader.to_str().unwrap(),
            "--install-modules=normal echo sleep configfile",
            "--modules=",
            "--locales=",
            "--fonts=",
            "--themes=",
            &format!("boot/grub/grub.cfg={}", config.display()),
        ],
    );
    // The ESP is partition 1, at 1 MiB.
    let esp = format!("{}@@{}", raw.display(), 1 << 20);
    disks::run("mmd", &["-i", &esp, "::/EFI", "::/EFI/BOOT"]);
    disks::run(
        "mcopy",
        &[
            "-i",
            &esp,
            loader.to_str().unwrap(),
            "::/EFI/BOOT/BOOTX64.EFI",
        ],
    );
    let qcow2 = files.join("os.qcow2");
    disks::qemu_img_convert(&raw, "qcow2", &qcow2);
    let sum = disks::run("sha256sum", &[qcow2.to_str().unwrap()]).stdout;
    let digest = String::from_utf8(sum).unwrap()[..64].to_owned();
    (raw, digest)
}

/// The first 440 bytes: the MBR's boot code.
pub fn boot_code(path: &Path) -> Vec<u8> {
    use std::io::Read as _;
    let mut code = vec![0; 440];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut code)
        .unwrap();
    code
}

/// The `meta_data.json` of the config drive the agent added as partition 3.
pub fn config_drive_meta_data(disk: &Path, scratch: &Path) -> serde_json::Value {
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

/// `rivet serve`'s configuration: the API and boot services on [`SERVER`] on `br0`,
/// DHCP as `dhcp` says, the agent under `files/agent`, short engine timings.
pub fn serve_config(dir: &Path, files: &Path, dhcp: Dhcp) -> PathBuf {
    let dhcp = match dhcp {
        Dhcp::Authoritative => {
            "dhcp = \"authoritative\"\ndhcp_pool = [\"10.99.0.100\", \"10.99.0.150\"]"
        }
        Dhcp::Proxy => "dhcp = \"proxy\"",
    };
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
{dhcp}
files_root = "{files}"
agent_kernel = "agent/vmlinuz"
agent_initrds = ["agent/initramfs.img"]
agent_cmdline = "console=ttyS0 quiet panic=-1"
agent_iso = "agent/rivet-agent.iso"
"#,
        state = dir.join("state").display(),
        files = files.display(),
    );
    let path = dir.join("rivet.toml");
    std::fs::write(&path, config).unwrap();
    path
}
