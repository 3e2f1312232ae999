use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::net::{Netns, free_udp_port};
use crate::process::{ChildGuard, wait_until};
use crate::tools::require_tool;

/// The user every simulated BMC knows (administrator).
pub const IPMI_USER: &str = "admin";
/// Its password.
pub const IPMI_PASSWORD: &str = "password";
/// A second user, limited to the Operator privilege.
pub const IPMI_OPERATOR: &str = "operator";

/// The `chassis_control` program: ipmi_sim runs it as `<program> <state dir> get <param>…`
/// or `… set <param> <value>…`; it keeps power and boot device in files (replaced
/// atomically, so a test never reads one half-written) and appends every `set` to
/// `control.log`.
const CHASSIS_CONTROL: &str = r#"#!/bin/sh
dir=$1; shift
op=$1; shift
case $op in
get)
  for param in "$@"; do
    case $param in
      power) echo "power:$(cat "$dir/power")" ;;
      boot) echo "boot:$(cat "$dir/boot")" ;;
      *) echo "unknown parameter $param" >&2; exit 1 ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    echo "$1 $2" >> "$dir/control.log"
    case $1 in
      power|boot) echo "$2" > "$dir/$1.new" && mv "$dir/$1.new" "$dir/$1" ;;
      reset|shutdown|identify) ;;
      *) echo "unknown parameter $1" >&2; exit 1 ;;
    esac
    shift 2
  done ;;
*) echo "unknown operation $op" >&2; exit 1 ;;
esac
"#;

/// An OpenIPMI `ipmi_sim` on 127.0.0.1 with a LAN channel (cipher suites 0–11, no 17), an
/// administrator and an operator user, and power and boot device delegated to a
/// `chassis_control` script whose state the test can read. Killed on drop.
#[derive(Debug)]
pub struct IpmiSim {
    dir: tempfile::TempDir,
    port: u16,
    _process: ChildGuard,
}

impl IpmiSim {
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// [`IpmiSim::start`] inside `netns`, on the namespace's 127.0.0.1: for a daemon under
    /// test that runs there too.
    pub fn start_in(netns: &Netns) -> Self {
        Self::launch(Some(netns))
    }

    fn launch(netns: Option<&Netns>) -> Self {
        let ipmi_sim = require_tool("ipmi_sim");
        require_tool("ipmitool");
        let dir = crate::scratch_dir("ipmi-sim");
        let root = dir.path();
        std::fs::write(root.join("power"), "0\n").unwrap();
        std::fs::write(root.join("boot"), "none\n").unwrap();
        std::fs::write(root.join("control.log"), "").unwrap();
        let control = root.join("chassis-control");
        std::fs::write(&control, CHASSIS_CONTROL).unwrap();
        make_executable(&control);
        std::fs::create_dir(root.join("state")).unwrap();

        let port = free_udp_port();
        let config = format!(
            r#"name "rivet-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    lan_config_program "/bin/true"
  endlan
  chassis_control "{control} {root}"
  user 2 true "{IPMI_USER}" "{IPMI_PASSWORD}" admin 10 none md2 md5 straight
  user 3 true "{IPMI_OPERATOR}" "{IPMI_PASSWORD}" operator 10 none md2 md5 straight
"#,
            control = control.display(),
            root = root.display(),
        );
        std::fs::write(root.join("lan.conf"), config).unwrap();
        // Manufacturer 0x1291 and product 0x0f02, as OpenIPMI's examples use.
        std::fs::write(
            root.join("bmc.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .unwrap();
        let log = std::fs::File::create(root.join("ipmi_sim.log")).unwrap();
        let mut command = match netns {
            Some(netns) => netns.command(ipmi_sim),
            None => Command::new(ipmi_sim),
        };
        let mut process = ChildGuard::spawn(
            "ipmi_sim",
            command
                .arg("-c")
                .arg(root.join("lan.conf"))
                .arg("-f")
                .arg(root.join("bmc.emu"))
                .arg("-s")
                .arg(root.join("state"))
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        // `ip netns exec` execs ipmi_sim in place, so the child's /proc/<pid>/net is the
        // namespace's view.
        let pid = process.id();
        wait_for_daemon(
            "ipmi_sim",
            &mut process,
            &root.join("ipmi_sim.log"),
            || match netns {
                Some(_) => udp_port_taken_in(&format!("/proc/{pid}/net"), port),
                None => udp_port_taken(port),
            },
        );
        Self {
            dir,
            port,
            _process: process,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The power state the chassis_control script holds: `"1"` or `"0"`.
    pub fn power(&self) -> String {
        self.read("power")
    }

    /// Sets the power state behind the simulator's back (as if someone pressed the button).
    pub fn set_power(&self, on: bool) {
        std::fs::write(
            self.dir.path().join("power"),
            if on { "1\n" } else { "0\n" },
        )
        .unwrap();
    }

    /// The boot device the chassis_control script holds (`none`, `pxe`, `default`, `cdrom`,
    /// `bios`).
    pub fn boot(&self) -> String {
        self.read("boot")
    }

    /// Every `set` ipmi_sim passed to chassis_control, one `param value` per line.
    pub fn control_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control.log")).unwrap()
    }

    /// Runs `ipmitool -I lanplus -C 3` as the administrator against this simulator (suite 3:
    /// without `-C`, ipmitool spends ~10 s asking ipmi_sim for its cipher suites).
    pub fn ipmitool(&self, args: &[&str]) -> Output {
        ipmitool(self.port, "3", args)
    }

    /// The directory holding the chassis_control state (`power`, `boot`).
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap()
            .trim()
            .to_owned()
    }
}

/// Runs `ipmitool -I lanplus -C <suite>` as the administrator against 127.0.0.1:`port`; the
/// password travels in the environment (`-E`), as Ironic does with a file.
pub fn ipmitool(port: u16, suite: &str, args: &[&str]) -> Output {
    let port = port.to_string();
    Command::new(require_tool("ipmitool"))
        .args(["-I", "lanplus", "-C", suite, "-H", "127.0.0.1", "-p", &port])
        .args(["-U", IPMI_USER, "-E", "-R", "2", "-N", "1"])
        .args(args)
        .env("IPMI_PASSWORD", IPMI_PASSWORD)
        .output()
        .expect("run ipmitool")
}

/// Whether some socket is bound to UDP `port`, read from `/proc/net/udp{,6}` so that probing
/// never holds the port itself (a probe by binding could steal it from a starting daemon).
pub fn udp_port_taken(port: u16) -> bool {
    udp_port_taken_in("/proc/net", port)
}

/// [`udp_port_taken`] in the network namespace whose `/proc/…/net` is `proc_net`.
fn udp_port_taken_in(proc_net: &str, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["udp", "udp6"].iter().any(|table| {
        std::fs::read_to_string(format!("{proc_net}/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().nth(1))
            .any(|local| local.ends_with(&wanted))
    })
}

/// Waits until `ready` holds, failing with the daemon's log if it exits first.
pub(crate) fn wait_for_daemon(
    name: &str,
    process: &mut ChildGuard,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) {
    wait_until(&format!("{name} to start"), Duration::from_secs(20), || {
        if let Some(status) = process.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} exited with {status}:\n{log}");
        }
        ready()
    });
}

pub(crate) fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_bound_udp_port_without_binding_it() {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(udp_port_taken(port));
        drop(socket);
        assert!(!udp_port_taken(port));
    }
}
