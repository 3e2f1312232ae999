//! Redfish peers from sushy-tools: `sushy-emulator` (fake and libvirt drivers) and
//! `sushy-static` (recorded mockups), plus a plain HTTP file server for the images a BMC
//! downloads. Each runs on a free loopback port and is killed when dropped.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::{Netns, free_tcp_port, tcp_port_open};
use crate::paths::scratch_dir;
use crate::process::ChildGuard;
use crate::tools::venv_tool;

/// The user sushy-emulator accepts (HTTP Basic; it has no SessionService).
pub const SUSHY_USERNAME: &str = "admin";
/// Its password.
pub const SUSHY_PASSWORD: &str = "password";
/// `admin:password`, bcrypt with 5 rounds (sushy accepts bcrypt hashes only).
const HTPASSWD: &str = "admin:$2b$05$aOIlzqmcfc7MvFY8vmiOguEYibDe4vBmfgEDJxjFCFfxv.osgD/p6\n";

/// A system for the fake driver.
#[derive(Debug, Clone)]
pub struct FakeSystem {
    pub uuid: String,
    pub name: String,
    pub powered_on: bool,
    /// MAC and IP of each NIC.
    pub nics: Vec<(String, String)>,
}

impl FakeSystem {
    /// A powered-off system with one NIC; `n` makes the UUID, name and MAC distinct.
    pub fn numbered(n: u8) -> Self {
        Self {
            uuid: format!("27946b59-9e44-4fa7-8e91-f3527a1ef0{n:02x}"),
            name: format!("fake-node-{n}"),
            powered_on: false,
            nics: vec![(format!("52:54:00:00:00:{n:02x}"), format!("10.99.0.{n}"))],
        }
    }
}

/// What sushy-emulator drives.
#[derive(Debug, Clone)]
pub enum SushyDriver {
    /// In-memory systems whose power changes land 1–11 s after the request.
    Fake(Vec<FakeSystem>),
    /// Real libvirt domains behind this URI.
    Libvirt(String),
}

/// Where [`SushyEmulator::start_in`] listens inside its namespace (on 127.0.0.1).
pub const SUSHY_NETNS_PORT: u16 = 8000;

/// A PEM certificate and key for TLS peers.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A running `sushy-emulator`.
#[derive(Debug)]
pub struct SushyEmulator {
    port: u16,
    tls: bool,
    log: PathBuf,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl SushyEmulator {
    /// Starts the emulator with HTTP Basic authentication (`admin`/`password`).
    pub fn start(driver: SushyDriver, tls: Option<TlsFiles>) -> Self {
        Self::launch(driver, tls, None)
    }

    /// Starts the emulator inside `ns`, on its loopback at [`SUSHY_NETNS_PORT`] (plain HTTP).
    pub fn start_in(ns: &Netns, driver: SushyDriver) -> Self {
        Self::launch(driver, None, Some(ns))
    }

    fn launch(driver: SushyDriver, tls: Option<TlsFiles>, ns: Option<&Netns>) -> Self {
        let program = venv_tool("sushy-emulator");
        let dir = scratch_dir("sushy");
        // A fresh namespace has every port free.
        let port = if ns.is_some() {
            SUSHY_NETNS_PORT
        } else {
            free_tcp_port()
        };
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, HTPASSWD).expect("write htpasswd");
        // Python config files expand nothing, so every path is written out in full.
        let mut config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{htpasswd}'\n",
            state = dir.path().join("state").display(),
            htpasswd = htpasswd.display(),
        );
        match &driver {
            SushyDriver::Fake(systems) => {
                config.push_str(
                    "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_FAKE_SYSTEMS = [\n",
                );
                for system in systems {
                    let nics: Vec<String> = system
                        .nics
                        .iter()
                        .map(|(mac, ip)| format!("{{'mac': '{mac}', 'ip': '{ip}'}}"))
                        .collect();
                    let _ = writeln!(
                        config,
                        "    {{'uuid': '{}', 'name': '{}', 'power_state': '{}', 'nics': [{}]}},",
                        system.uuid,
                        system.name,
                        if system.powered_on { "On" } else { "Off" },
                        nics.join(", ")
                    );
                }
                config.push_str("]\n");
            }
            SushyDriver::Libvirt(uri) => {
                // Legacy needs a path too: without one sushy writes a `<loader>` with none,
                // which libvirt refuses ("no loader path specified").
                let _ = write!(
                    config,
                    "SUSHY_EMULATOR_LIBVIRT_URI = '{uri}'\n\
                     SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False\n\
                     SUSHY_EMULATOR_BOOT_LOADER_MAP = {{\n\
                     \x20   'UEFI': {{'x86_64': '/usr/share/OVMF/OVMF_CODE_4M.fd'}},\n\
                     \x20   'Legacy': {{'x86_64': '/usr/share/seabios/bios-256k.bin'}}}}\n\
                     SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = '/usr/share/OVMF/OVMF_VARS_4M.fd'\n"
                );
            }
        }
        if let Some(tls) = &tls {
            let _ = write!(
                config,
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                tls.certificate.display(),
                tls.key.display()
            );
        }
        let config_path = dir.path().join("emulator.conf");
        std::fs::write(&config_path, config).expect("write the sushy-emulator config");
        let log = dir.path().join("emulator.log");
        let mut command = match ns {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        };
        command.arg("--config").arg(&config_path);
        let ready = match ns {
            // The port is not reachable from here; the web server says when it listens.
            Some(_) => Ready::LogLine("Running on"),
            None => Ready::Port(port),
        };
        let child = spawn_logged("sushy-emulator", &mut command, &log, ready);
        Self {
            port,
            tls: tls.is_some(),
            log,
            _child: child,
            _dir: dir,
        }
    }

    /// `http[s]://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        base_url(self.port, self.tls)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The emulator's own log (requests and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running `sushy-static`, serving a recorded mockup tree read-only: GET returns the
/// recorded documents, any POST or PATCH answers 204 and changes nothing, no authentication.
#[derive(Debug)]
pub struct SushyStatic {
    port: u16,
    tls: bool,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl SushyStatic {
    /// Serves `mockup`, the directory holding the tree's `index.json` files (the content of
    /// `/redfish/v1`).
    pub fn serve(mockup: &Path, tls: Option<TlsFiles>) -> Self {
        assert!(
            mockup.join("index.json").is_file(),
            "{} is not a mockup tree (no index.json)",
            mockup.display()
        );
        let program = venv_tool("sushy-static");
        let dir = scratch_dir("sushy-static");
        let port = free_tcp_port();
        let mut command = Command::new(program);
        command
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m"])
            .arg(mockup);
        if let Some(tls) = &tls {
            command
                .arg("-c")
                .arg(&tls.certificate)
                .arg("-k")
                .arg(&tls.key);
        }
        let log = dir.path().join("static.log");
        let child = spawn_logged("sushy-static", &mut command, &log, Ready::Port(port));
        Self {
            port,
            tls: tls.is_some(),
            _child: child,
            _dir: dir,
        }
    }

    pub fn base_url(&self) -> String {
        base_url(self.port, self.tls)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// Python's `http.server` serving a directory, for images a BMC downloads.
#[derive(Debug)]
pub struct HttpFileServer {
    port: u16,
    _child: ChildGuard,
}

impl HttpFileServer {
    pub fn serve(dir: &Path) -> Self {
        let python = venv_tool("python3");
        let port = free_tcp_port();
        let log = dir.join(".http-server.log");
        let mut command = Command::new(python);
        command
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir);
        let child = spawn_logged("http.server", &mut command, &log, Ready::Port(port));
        Self {
            port,
            _child: child,
        }
    }

    /// The URL of `name` in the served directory.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

fn base_url(port: u16, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{port}")
}

/// How [`spawn_logged`] knows a server is up.
enum Ready {
    /// It accepts connections on this loopback port.
    Port(u16),
    /// Its log has a line containing this.
    LogLine(&'static str),
}

/// Starts `command` with its output in `log` and waits until it is ready; fails the test
/// with the log if it exits or never gets there.
fn spawn_logged(name: &str, command: &mut Command, log: &Path, ready: Ready) -> ChildGuard {
    let file = std::fs::File::create(log).expect("create a log file");
    let err = file.try_clone().expect("clone the log file handle");
    command.stdin(Stdio::null()).stdout(file).stderr(err);
    let mut child = ChildGuard::spawn(name, command);
    let is_ready = || match ready {
        Ready::Port(port) => tcp_port_open(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        Ready::LogLine(line) => std::fs::read_to_string(log).is_ok_and(|text| text.contains(line)),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !is_ready() {
        if let Some(status) = child.try_wait() {
            panic!(
                "{name} exited ({status}) before listening; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} was not ready within 60 s; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
