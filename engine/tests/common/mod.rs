//! A `rivet serve` daemon for the integration tests, started from the real binary.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rivet_engine::client::{Client, ClientError};
use rivet_engine::lifecycle::{Activity, ProvisioningState};
use rivet_engine::runtime::{BmcAccess, EnrollRequest, HostView};
use rivet_tests::{ChildGuard, cargo_bin, free_tcp_port, scratch_dir, tcp_port_open, wait_until};

/// A daemon and everything it needs.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    process: Option<ChildGuard>,
    pub starts: u32,
}

impl Daemon {
    /// Writes a configuration with `extra` appended (TOML) and starts `rivet serve`.
    pub fn start(name: &str, extra: &str) -> Self {
        Self::start_on(name, free_tcp_port(), extra)
    }

    /// [`Daemon::start`] with the API on `port` (for configurations that name it).
    pub fn start_on(name: &str, port: u16, extra: &str) -> Self {
        let dir = scratch_dir(name);
        let config = format!(
            "state_dir = \"state\"\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\n\
             {extra}\n"
        );
        std::fs::write(dir.path().join("rivet.toml"), config).expect("write the configuration");
        let mut daemon = Self {
            dir,
            port,
            process: None,
            starts: 0,
        };
        daemon.spawn();
        daemon
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .expect("open the log");
        let mut command = Command::new(cargo_bin("rivet"));
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(self.dir.path().join("rivet.toml"))
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let mut process = ChildGuard::spawn("rivet serve", &mut command);
        self.starts += 1;
        let addr = ([127, 0, 0, 1], self.port).into();
        let token = self.state_dir().join("api-token");
        wait_until("rivet serve to listen", Duration::from_secs(60), || {
            process.assert_running();
            tcp_port_open(addr) && token.exists()
        });
        self.process = Some(process);
    }

    /// SIGKILL, then start again on the same state.
    pub fn kill_and_restart(&mut self) {
        if let Some(process) = self.process.take() {
            process.signal(libc::SIGKILL);
            drop(process);
        }
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        let token = std::fs::read_to_string(self.state_dir().join("api-token")).expect("token");
        Client::new(
            &self.url(),
            &token,
            Some(&self.state_dir().join("tls/ca.pem")),
        )
        .expect("client")
    }

    /// `rivet host …` against this daemon.
    pub fn host_command(&self, args: &[&str]) -> std::process::Output {
        Command::new(cargo_bin("rivet"))
            .arg("host")
            .args(args)
            .env("RIVET_URL", self.url())
            .env("RIVET_STATE_DIR", self.state_dir())
            .env_remove("RIVET_TOKEN")
            .env_remove("RUST_LOG")
            .output()
            .expect("run rivet host")
    }
}

/// An enrolment of simulated machine `name` with boot MAC `…:n`.
pub fn sim_host(name: &str, n: u16, password: &str) -> EnrollRequest {
    let [hi, lo] = n.to_be_bytes();
    let mac = format!("52:54:00:10:{hi:02x}:{lo:02x}")
        .parse()
        .expect("mac");
    EnrollRequest::new(
        name,
        Some(BmcAccess {
            address: format!("sim://{name}"),
            username: "admin".into(),
            password: password.into(),
            disable_certificate_verification: false,
        }),
        Some(mac),
    )
}

/// Polls `name` until `done` holds; fails with the host's last view after `timeout`.
pub async fn wait_for(
    client: &Client,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&HostView) -> bool,
) -> HostView {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        match client.get(name).await {
            Ok(Some(view)) if done(&view) => return view,
            Ok(view) => last = view,
            Err(ClientError::Transport { .. }) => {}
            Err(err) => panic!("{name}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never got {what} within {timeout:?}; last seen: {last:#?}");
}

/// Settled in `state`.
pub fn settled(state: ProvisioningState) -> impl Fn(&HostView) -> bool {
    move |view| view.status.state == state && view.status.activity == Activity::Idle
}

pub fn journal(state_dir: &Path) -> Vec<rivet_engine::sim::Record> {
    rivet_engine::sim::read_journal(&state_dir.join("sim.log")).expect("read the simulator journal")
}
