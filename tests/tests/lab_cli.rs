//! `rivet lab`: a namespace with a QEMU host behind OpenIPMI's `ipmi_sim`, driven through
//! `rivet bmc` (and so through ipmi_sim's chassis control), and `down` leaving nothing.
//!
//! The lab's agent boot files here are the test kernel and a marker initramfs: these
//! tests power the VM on but never wait for what it boots (the full flow is `just demo`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rivet_tests::qemu::{guest_kernel, marker_initramfs};
use rivet_tests::{cargo_bin, iso, require_root, require_tool, scratch_dir};
use serde_json::Value;

fn rivet(args: &[&str]) -> Output {
    Command::new(cargo_bin("rivet"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A lab taken down when the test ends, whatever happened.
struct Lab {
    name: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(prefix: &str) -> Self {
        require_root();
        for tool in [
            "ip",
            "qemu-system-x86_64",
            "qemu-img",
            "ipmi_sim",
            "busybox",
        ] {
            require_tool(tool);
        }
        let dir = scratch_dir("lab");
        let images = dir.path().join("agent");
        std::fs::create_dir(&images).unwrap();
        std::fs::copy(guest_kernel(), images.join("vmlinuz")).unwrap();
        marker_initramfs(&images.join("initramfs.img"), "RIVET-LAB-TEST", "true");
        Self {
            name: format!("{prefix}{}", std::process::id() % 100_000),
            dir,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn up(&self) -> Output {
        self.up_command().output().unwrap()
    }

    /// `lab up --bmc <bmc>` with sushy-emulator on PATH.
    fn up_redfish(&self, bmc: &str) -> Output {
        self.up_command()
            .args(["--bmc", bmc])
            .env("PATH", path_with_sushy())
            .output()
            .unwrap()
    }

    fn up_command(&self) -> Command {
        let state = self.state_dir();
        let images = self.dir.path().join("agent");
        let mut command = Command::new(cargo_bin("rivet"));
        command.args([
            "lab",
            "up",
            "--name",
            &self.name,
            "--state-dir",
            state.to_str().unwrap(),
            "--image-dir",
            images.to_str().unwrap(),
        ]);
        command
    }

    fn status(&self) -> Value {
        let out = rivet(&["lab", "status", "--json", "--name", &self.name]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
    }

    fn netns(&self) -> String {
        format!("rivet-{}", self.name)
    }

    /// `rivet <args>` inside the lab's namespace, with the lab's BMC password.
    fn in_lab(&self, args: &[&str]) -> Output {
        let password = std::fs::read_to_string(self.state_dir().join("bmc-password")).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.netns()])
            .arg(cargo_bin("rivet"))
            .args(args)
            .env("RIVET_BMC_PASSWORD", password)
            .output()
            .unwrap()
    }

    fn power(&self, address: &str, action: &str) -> String {
        let out = self.in_lab(&["bmc", "--address", address, "-u", "admin", "power", action]);
        assert!(out.status.success(), "power {action}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = rivet(&["lab", "down", "--name", &self.name]);
    }
}

fn running(pid: &Value) -> bool {
    let Some(pid) = pid.as_i64() else {
        return false;
    };
    // Gone, or a zombie waiting for its parent to reap it: either way not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
        })
        .unwrap_or(false)
}

#[test]
fn vm_netns_lab_up_runs_an_ipmi_host_and_down_removes_everything() {
    let lab = Lab::new("ci");
    let out = lab.up();
    assert!(out.status.success(), "lab up: {}", text(&out));
    assert!(Path::new("/run/netns").join(lab.netns()).exists());

    let status = lab.status();
    assert_eq!(status["engine_running"], true, "{status}");
    let host = &status["hosts"][0];
    assert_eq!(host["name"], "node-1", "{status}");
    assert_eq!(host["bmc_running"], true, "{status}");
    assert!(host["qemu_pid"].is_null(), "enrolled powered off: {status}");
    let address = host["bmc_address"].as_str().unwrap().to_owned();

    // The engine enrolled it, read its power through ipmi_sim and left it off.
    let url = status["api_url"].as_str().unwrap();
    let engine_dir = status["engine_state_dir"].as_str().unwrap();
    let shown = lab.in_lab(&[
        "host",
        "--url",
        url,
        "--state-dir",
        engine_dir,
        "--json",
        "show",
        "node-1",
    ]);
    assert!(shown.status.success(), "{}", text(&shown));
    let view: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(view["status"]["state"], "available", "{view}");
    assert_eq!(view["status"]["poweredOn"], false, "{view}");

    // Power through the BMC starts and stops the VM's QEMU.
    assert_eq!(lab.power(&address, "status"), "off");
    lab.power(&address, "on");
    let qemu = lab.status()["hosts"][0]["qemu_pid"].clone();
    assert!(running(&qemu), "QEMU runs after power on: {qemu}");
    assert_eq!(lab.power(&address, "status"), "on");

    // A second lab of the same name is refused and the first is untouched.
    let again = lab.up();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already up"),
        "{}",
        text(&again)
    );
    assert_eq!(lab.status()["engine_running"], true);

    let before = lab.status();
    let (engine, bmc) = (&before["engine_pid"], &before["hosts"][0]["bmc_pid"]);
    assert!(running(engine) && running(bmc), "{before}");
    let down = rivet(&["lab", "down", "--name", &lab.name]);
    assert!(down.status.success(), "lab down: {}", text(&down));
    assert!(!Path::new("/run/netns").join(lab.netns()).exists());
    assert!(!running(&qemu), "QEMU is gone");
    assert!(!running(engine), "the engine is gone");
    assert!(!running(bmc), "ipmi_sim is gone");
    assert!(!lab.state_dir().exists(), "the lab's files are gone");
    let status = rivet(&["lab", "status", "--name", &lab.name]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));

    // Down again: nothing to do, and it says so.
    let again = rivet(&["lab", "down", "--name", &lab.name]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to do"));
}

/// PATH with the venv's `sushy-emulator` first: `rivet lab` finds it there, as it would for
/// a user who installed it.
fn path_with_sushy() -> String {
    for tool in ["libvirtd", "virsh", "setpriv"] {
        require_tool(tool);
    }
    let sushy = rivet_tests::venv_tool("sushy-emulator");
    format!(
        "{}:{}",
        sushy.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The agent ISO under the lab's image directory: with the slot, or from before it.
fn agent_iso(lab: &Lab, slot: bool) {
    let cmdline = if slot {
        iso::cmdline_slot("")
    } else {
        "rivet.job=inventory\n".to_owned()
    };
    iso::agent_iso(&lab.dir.path().join("agent/rivet-agent.iso"), &cmdline);
}

#[test]
fn vm_netns_lab_up_runs_a_redfish_host_and_down_removes_everything() {
    let lab = Lab::new("rf");
    let out = lab.up_redfish("redfish");
    assert!(out.status.success(), "lab up: {}", text(&out));

    let status = lab.status();
    assert_eq!(status["bmc"], "redfish", "{status}");
    let (libvirtd, emulator) = (status["libvirtd_pid"].clone(), status["sushy_pid"].clone());
    assert!(running(&libvirtd) && running(&emulator), "{status}");
    let host = &status["hosts"][0];
    let address = host["bmc_address"].as_str().unwrap().to_owned();
    assert!(
        address.starts_with("redfish+http://10.77.0.1:8000/redfish/v1/Systems/"),
        "{status}"
    );
    assert_eq!(
        host["bmc_pid"], emulator,
        "every host sits behind the one emulator"
    );
    assert!(host["qemu_pid"].is_null(), "enrolled powered off: {status}");

    // Redfish power through sushy starts the libvirt domain's QEMU.
    assert_eq!(lab.power(&address, "status"), "off");
    lab.power(&address, "on");
    let qemu = lab.status()["hosts"][0]["qemu_pid"].clone();
    assert!(running(&qemu), "QEMU runs after power on: {qemu}");

    let down = rivet(&["lab", "down", "--name", &lab.name]);
    assert!(down.status.success(), "lab down: {}", text(&down));
    assert!(!Path::new("/run/netns").join(lab.netns()).exists());
    for (what, pid) in [
        ("QEMU", &qemu),
        ("libvirtd", &libvirtd),
        ("sushy", &emulator),
    ] {
        assert!(!running(pid), "{what} is gone");
    }
    assert!(!lab.state_dir().exists(), "the lab's files are gone");
}

#[test]
fn vm_netns_a_virtual_media_lab_serves_the_agent_iso_its_bmc_can_insert() {
    let lab = Lab::new("vm");
    agent_iso(&lab, true);
    let out = lab.up_redfish("redfish-virtualmedia");
    assert!(out.status.success(), "lab up: {}", text(&out));
    let status = lab.status();
    let address = status["hosts"][0]["bmc_address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        address.starts_with("redfish-virtualmedia+http://10.77.0.1:8000/"),
        "{status}"
    );
    // The engine serves the ISO, and sushy can put it into the lab's libvirt pool and the
    // domain's CD drive (what the engine asks for when it boots the agent).
    let iso_url = "http://10.77.0.1:8080/files/agent/rivet-agent.iso";
    let inserted = lab.in_lab(&[
        "bmc",
        "--address",
        &address,
        "-u",
        "admin",
        "vmedia",
        "insert",
        iso_url,
    ]);
    assert!(inserted.status.success(), "insert: {}", text(&inserted));
    let slots = lab.in_lab(&[
        "bmc",
        "--address",
        &address,
        "-u",
        "admin",
        "vmedia",
        "status",
    ]);
    assert!(
        String::from_utf8_lossy(&slots.stdout).contains("rivet-agent.iso"),
        "{}",
        text(&slots)
    );
    let down = rivet(&["lab", "down", "--name", &lab.name]);
    assert!(down.status.success(), "lab down: {}", text(&down));
    assert!(!lab.state_dir().exists());
}

#[test]
fn netns_a_virtual_media_lab_refuses_an_agent_iso_that_cannot_carry_parameters() {
    let lab = Lab::new("old");
    agent_iso(&lab, false);
    let out = lab.up_redfish("redfish-virtualmedia");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no rivet/cmdline slot") && stderr.contains("rebuild it"),
        "{}",
        text(&out)
    );
    assert!(!Path::new("/run/netns").join(lab.netns()).exists());
    let status = rivet(&["lab", "status", "--name", &lab.name]);
    assert_eq!(status.status.code(), Some(1), "nothing was recorded");
}

#[test]
fn netns_down_of_an_unknown_lab_is_a_clear_no_op() {
    require_root();
    let out = rivet(&["lab", "down", "--name", "never-made-lab"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no lab named never-made-lab is up"),
        "{}",
        text(&out)
    );
}

#[test]
fn netns_lab_up_refuses_bad_requests_before_making_anything() {
    let lab = Lab::new("bad");
    // A name that would escape the registry or make a bad interface name.
    let out = rivet(&["lab", "up", "--name", "../etc"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid lab name"));

    // A state directory holding someone's files is never taken (down would remove it).
    std::fs::create_dir(lab.state_dir()).unwrap();
    std::fs::write(lab.state_dir().join("keep.txt"), "mine").unwrap();
    let out = lab.up();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert!(lab.state_dir().join("keep.txt").exists());
    assert!(!Path::new("/run/netns").join(lab.netns()).exists());
    let status = rivet(&["lab", "status", "--name", &lab.name]);
    assert_eq!(status.status.code(), Some(1), "no lab was recorded");
}

#[test]
fn netns_a_lab_that_fails_half_way_is_rolled_back() {
    // Fault injection no peer gives on demand: a BMC emulator that dies at start. An
    // `ipmi_sim` earlier on PATH exits at once, after the namespace, tap and disk exist.
    let lab = Lab::new("rb");
    let bin = lab.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("ipmi_sim");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'ipmi_sim: cannot start (injected)'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = lab.up_command().env("PATH", path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot start (injected)"),
        "the BMC's log is shown: {stderr}"
    );
    assert!(
        stderr.contains("everything it had made was removed"),
        "{stderr}"
    );
    assert!(!Path::new("/run/netns").join(lab.netns()).exists());
    assert!(!lab.state_dir().exists());
    let status = rivet(&["lab", "status", "--name", &lab.name]);
    assert_eq!(status.status.code(), Some(1), "the lab is not recorded");
    // The name is free again.
    let out = lab.up();
    assert!(out.status.success(), "{}", text(&out));
}
