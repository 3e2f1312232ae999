//! The real [`BootService`]: `rivet-pxe`'s DHCP, TFTP and HTTP boot services fed from the
//! engine's boot entries.
//!
//! Every `set_entry`/`remove` rebuilds the host table and swaps it into the running
//! services at once. An agent entry boots the configured agent kernel and initrds with the
//! channel parameters on its kernel command line — `rivet.url` (the engine), `rivet.ca`
//! (the SHA-256 of the certificate the agent pins), `rivet.token` and `rivet.host` — and
//! the whole line goes through `rivet-pxe`'s validation, which refuses anything iPXE would
//! read as a command.
//!
//! The iPXE scripts and files are served by the engine on a plain-HTTP listener (iPXE
//! here cannot verify the engine's CA). DHCP, TFTP and that listener report to one
//! `rivet-pxe` observer, which keeps per MAC the last DHCP request, Rivet's answer (or why
//! it stayed silent), the iPXE load, the script fetch and the agent fetch: that is what
//! [`BootService::observations`] reports, so a host whose agent never calls back is
//! explained by the furthest step it reached. TFTP and file fetches are attributed through
//! the addresses DHCP saw; with DHCP off (another server), only script fetches name a MAC.
//!
//! Virtual-media hosts boot a per-host agent ISO ([`agent_iso`]): the configured agent ISO
//! with the host's channel parameters in its `rivet/cmdline` slot, served from memory at an
//! unguessable URL on the same listener, with byte ranges for BMCs that mount rather than
//! download it. Its fetch is the virtual-media host's boot observation.

pub mod agent_iso;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rivet_agent::channel::params::{PARAM_CA, PARAM_HOST, PARAM_TOKEN, PARAM_URL};
use rivet_pxe::dhcp::{AddressPool, DhcpMode};
use rivet_pxe::http::HttpState;
use rivet_pxe::{
    AgentBoot, Asset, BootAction, BootConfig, BootServices, DhcpSettings, Host, HostTable,
    HostTableHandle, HttpBase, ObserverHandle, TftpSettings, UnknownPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use self::agent_iso::{AgentIsoTemplate, HostIso, RangeRequest};
use super::{AgentToken, BootEntry, BootService, DriverError, DriverErrorKind, HostTarget};
use crate::lifecycle::{BootObservations, HostId, MacAddr, Timestamp};

mod observed;

/// Which DHCP server the boot services run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpChoice {
    /// None: another DHCP server points hosts at `<http_base>/boot.ipxe`.
    #[default]
    Off,
    /// ProxyDHCP next to an existing DHCP server.
    Proxy,
    /// Rivet hands out addresses from `dhcp_pool`.
    Authoritative,
}

/// Boot-service settings of `[drivers.real.boot]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootSettings {
    /// Where agents reach the engine's API (`https://<provisioning address>:<port>`).
    pub engine_url: String,
    /// The plain-HTTP listener for iPXE scripts and agent files.
    pub http_listen: SocketAddr,
    /// The URL hosts use for that listener; `http://<server_ip>:<port>` by default.
    pub http_base: Option<String>,
    /// The interface facing the machines (needed for DHCP).
    pub interface: Option<String>,
    pub server_ip: Option<Ipv4Addr>,
    pub dhcp: DhcpChoice,
    /// First and last address of the pool (authoritative DHCP).
    pub dhcp_pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub dhcp_router: Option<Ipv4Addr>,
    pub dhcp_dns: Vec<Ipv4Addr>,
    /// Serve the iPXE builds over TFTP (BIOS and UEFI PXE firmware need it).
    pub tftp: bool,
    pub tftp_listen: SocketAddr,
    /// Where the iPXE builds are (Debian: `/usr/lib/ipxe`); also served at `/ipxe/`.
    pub ipxe_root: PathBuf,
    /// Served at `/files/`: the agent's kernel and initrds.
    pub files_root: Option<PathBuf>,
    /// The agent kernel: a path under `files_root` or an `http(s)://` URL.
    pub agent_kernel: String,
    pub agent_initrds: Vec<String>,
    /// Extra kernel parameters for the agent (console, …).
    pub agent_cmdline: String,
    /// The iPXE build UEFI HTTP boot fetches from `/ipxe/`.
    pub uefi_ipxe: String,
    /// The agent ISO that virtual-media hosts boot, with a `rivet/cmdline` slot (what
    /// `just agent-image` builds): a path under `files_root`, or an absolute path.
    pub agent_iso: PathBuf,
}

impl Default for BootSettings {
    fn default() -> Self {
        Self {
            engine_url: String::new(),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            http_base: None,
            interface: None,
            server_ip: None,
            dhcp: DhcpChoice::Off,
            dhcp_pool: None,
            dhcp_router: None,
            dhcp_dns: Vec::new(),
            tftp: false,
            tftp_listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            ipxe_root: PathBuf::from("/usr/lib/ipxe"),
            files_root: None,
            agent_kernel: "rivet-agent/vmlinuz".into(),
            agent_initrds: vec!["rivet-agent/initramfs.img".into()],
            agent_cmdline: "console=ttyS0,115200 console=tty0".into(),
            uefi_ipxe: "snponly.efi".into(),
            agent_iso: PathBuf::from("rivet-agent/rivet-agent.iso"),
        }
    }
}

/// Boot services that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootSetupError {
    #[error("drivers.real.boot.{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("cannot listen on {addr} for the boot HTTP server: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the engine's certificate fingerprint: {0}")]
    Fingerprint(#[from] rivet_agent::channel::pin::FingerprintError),
    #[error(transparent)]
    Services(#[from] rivet_pxe::BootError),
}

fn invalid(field: &'static str, message: impl std::fmt::Display) -> BootSetupError {
    BootSetupError::Invalid {
        field,
        message: message.to_string(),
    }
}

/// The boot services, fed by the engine.
pub struct RealBoot {
    hosts: HostTableHandle,
    entries: Mutex<BTreeMap<rivet_pxe::MacAddr, Host>>,
    agent: AgentTemplate,
    base: HttpBase,
    uefi_ipxe: String,
    seen: Arc<observed::BootLog>,
    isos: Arc<Mutex<IsoShelf>>,
    iso_path: Option<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
    http_addr: SocketAddr,
}

/// The agent ISO template and the per-host ISOs made from it.
#[derive(Debug, Default)]
struct IsoShelf {
    /// The template as last read, with the file's size and modification time then: a
    /// rebuilt ISO is picked up by the next host that needs one.
    template: Option<(std::fs::Metadata, AgentIsoTemplate)>,
    /// The URL nonce of each host's current ISO.
    by_host: HashMap<HostId, String>,
    by_nonce: HashMap<String, (HostId, HostIso)>,
    fetched: HashMap<HostId, Timestamp>,
}

impl IsoShelf {
    fn put(&mut self, host: HostId, nonce: String, iso: HostIso) {
        if let Some(old) = self.by_host.insert(host, nonce.clone()) {
            self.by_nonce.remove(&old);
        }
        self.by_nonce.insert(nonce, (host, iso));
    }
}

fn unchanged(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

impl std::fmt::Debug for RealBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealBoot")
            .field("base", &self.base.as_str())
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for RealBoot {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every agent boot shares.
#[derive(Debug, Clone)]
struct AgentTemplate {
    kernel: Asset,
    initrds: Vec<Asset>,
    /// The configured parameters plus the engine URL and CA fingerprint.
    cmdline: String,
}

impl RealBoot {
    /// Starts the configured services. `ca_fingerprint` is the SHA-256 of the certificate
    /// agents pin (the engine's CA, or its configured certificate); `state_dir` holds the
    /// DHCP lease database.
    pub async fn start(
        settings: &BootSettings,
        ca_fingerprint: &str,
        state_dir: &std::path::Path,
    ) -> Result<Arc<Self>, BootSetupError> {
        let engine_url = url::Url::parse(&settings.engine_url)
            .ok()
            .filter(|url| url.scheme() == "https" && url.host_str().is_some())
            .ok_or_else(|| {
                invalid(
                    "engine_url",
                    "must be the https:// URL agents reach the engine at",
                )
            })?;
        let ca = rivet_agent::channel::Fingerprint::parse(ca_fingerprint)?;
        let agent = AgentTemplate {
            kernel: settings
                .agent_kernel
                .parse()
                .map_err(|err| invalid("agent_kernel", err))?,
            initrds: settings
                .agent_initrds
                .iter()
                .map(|initrd| initrd.parse())
                .collect::<Result<_, _>>()
                .map_err(|err| invalid("agent_initrds", err))?,
            cmdline: format!(
                "{} {PARAM_URL}={} {PARAM_CA}={ca}",
                settings.agent_cmdline,
                engine_url.as_str().trim_end_matches('/')
            ),
        };
        // Validate the shared part now, so a bad setting fails the start, not each boot.
        agent
            .cmdline
            .parse::<rivet_pxe::cmdline::KernelCmdline>()
            .map_err(|err| invalid("agent_cmdline", err))?;
        settings
            .uefi_ipxe
            .parse::<rivet_pxe::cmdline::RelativePath>()
            .map_err(|err| invalid("uefi_ipxe", err))?;

        let listener = tokio::net::TcpListener::bind(settings.http_listen)
            .await
            .map_err(|source| BootSetupError::Listen {
                addr: settings.http_listen,
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| BootSetupError::Listen {
                addr: settings.http_listen,
                source,
            })?;
        let base_text = match (&settings.http_base, settings.server_ip) {
            (Some(base), _) => base.clone(),
            (None, Some(ip)) => format!("http://{ip}:{}", http_addr.port()),
            (None, None) if !http_addr.ip().is_unspecified() => format!("http://{http_addr}"),
            (None, None) => {
                return Err(invalid(
                    "http_base",
                    "give http_base or server_ip: hosts need an address for the boot HTTP server",
                ));
            }
        };
        let base: HttpBase = base_text.parse().map_err(|err| invalid("http_base", err))?;

        let hosts = HostTableHandle::new(HostTable::default());
        let config = BootConfig {
            interface: settings.interface.clone(),
            server_ip: settings.server_ip,
            http_base: Some(base.clone()),
            dhcp: dhcp_settings(settings, state_dir)?,
            tftp: settings.tftp.then(|| TftpSettings {
                listen: settings.tftp_listen,
                root: settings.ipxe_root.clone(),
                limits: rivet_pxe::tftp::TftpLimits::default(),
                max_transfers: 64,
            }),
            // The engine serves HTTP itself (below), to see who fetches what.
            http: None,
            router_advertisements: settings.interface.is_some(),
        };
        let seen = Arc::new(observed::BootLog::default());
        let observer = ObserverHandle::new(seen.clone());
        let mut services =
            BootServices::start_observed(config, hosts.clone(), observer.clone()).await?;
        let open = |path: &PathBuf, field| {
            rivet_pxe::confine::ConfinedDir::open(path).map_err(|err| invalid(field, err))
        };
        let state = HttpState {
            hosts: hosts.clone(),
            base: base.clone(),
            files: settings
                .files_root
                .as_ref()
                .map(|root| open(root, "files_root"))
                .transpose()?,
            ipxe: settings
                .ipxe_root
                .exists()
                .then(|| open(&settings.ipxe_root, "ipxe_root"))
                .transpose()?,
            observer: Some(observer),
        };
        let isos = Arc::new(Mutex::new(IsoShelf::default()));
        let iso_routes = axum::Router::new()
            .route(ISO_ROUTE, axum::routing::get(serve_iso))
            .with_state(isos.clone());
        // The peer address attributes file fetches to the MAC DHCP gave it.
        let router = rivet_pxe::http::router(state)
            .merge(iso_routes)
            .into_make_service_with_connect_info::<SocketAddr>();
        let http = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(error = %err, "the boot HTTP server stopped");
            }
        });
        let watch = tokio::spawn(async move {
            if let Err(err) = services.wait().await {
                tracing::error!(error = %err, "a boot service stopped");
            }
        });
        tracing::info!(%http_addr, base = %base, dhcp = ?settings.dhcp, tftp = settings.tftp, "boot services running");
        Ok(Arc::new(Self {
            hosts,
            entries: Mutex::default(),
            agent,
            base,
            uefi_ipxe: settings.uefi_ipxe.clone(),
            seen,
            isos,
            iso_path: match &settings.files_root {
                _ if settings.agent_iso.is_absolute() => Some(settings.agent_iso.clone()),
                Some(root) => Some(root.join(&settings.agent_iso)),
                None => None,
            },
            tasks: vec![http, watch],
            http_addr,
        }))
    }

    /// Where the boot HTTP server listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The host table the services answer from now.
    pub fn table(&self) -> Arc<HostTable> {
        self.hosts.hosts()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<rivet_pxe::MacAddr, Host>> {
        // A map of plain values: a panic elsewhere cannot leave it half-changed.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to the entries and publishes the new table.
    fn publish(
        &self,
        change: impl FnOnce(&mut BTreeMap<rivet_pxe::MacAddr, Host>),
    ) -> Result<(), DriverError> {
        let mut entries = self.entries();
        let mut next = entries.clone();
        change(&mut next);
        let table = HostTable::new(next.values().cloned(), UnknownPolicy::Ignore, None)
            .map_err(|err| DriverError::new(DriverErrorKind::Failed, err.to_string()))?;
        *entries = next;
        self.hosts.set_hosts(table);
        Ok(())
    }

    /// The agent's full parameters for one host. They hold the token: never log them.
    fn host_cmdline(&self, host: HostId, token: &AgentToken) -> String {
        format!(
            "{} {PARAM_TOKEN}={} {PARAM_HOST}={host}",
            self.agent.cmdline,
            token.expose()
        )
    }

    /// The ISO template, read again when the file changed since the last read.
    async fn iso_template(&self, host: &HostTarget) -> Result<AgentIsoTemplate, DriverError> {
        let unsupported = |why: String| {
            DriverError::new(
                DriverErrorKind::Unsupported,
                format!(
                    "{}: cannot boot the agent by virtual media: {why}",
                    host.name
                ),
            )
        };
        let path = self.iso_path.as_ref().ok_or_else(|| {
            unsupported(
                "no agent ISO is configured (set drivers.real.boot.files_root or an absolute agent_iso)".into(),
            )
        })?;
        let metadata = tokio::fs::metadata(path)
            .await
            .map_err(|err| unsupported(format!("the agent ISO {}: {err}", path.display())))?;
        if let Some((seen, template)) = &self.isos().template
            && unchanged(seen, &metadata)
        {
            return Ok(template.clone());
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|err| unsupported(format!("the agent ISO {}: {err}", path.display())))?;
        let template = AgentIsoTemplate::parse(Bytes::from(bytes))
            .map_err(|err| unsupported(format!("{}: {err}", path.display())))?;
        tracing::info!(path = %path.display(), bytes = template.len(), "agent ISO template loaded");
        self.isos().template = Some((metadata, template.clone()));
        Ok(template)
    }

    fn isos(&self) -> std::sync::MutexGuard<'_, IsoShelf> {
        lock(&self.isos)
    }

    fn agent_boot(&self, host: HostId, token: &AgentToken) -> Result<AgentBoot, DriverError> {
        let cmdline = self.host_cmdline(host, token);
        // Never echo the line back: it holds the token.
        let cmdline = cmdline.parse().map_err(|_| {
            DriverError::new(
                DriverErrorKind::Failed,
                format!("the agent kernel command line for host {host} is not safe for iPXE"),
            )
        })?;
        Ok(AgentBoot {
            kernel: self.agent.kernel.clone(),
            initrds: self.agent.initrds.clone(),
            cmdline,
        })
    }
}

fn dhcp_settings(
    settings: &BootSettings,
    state_dir: &std::path::Path,
) -> Result<Option<DhcpSettings>, BootSetupError> {
    let mode = match settings.dhcp {
        DhcpChoice::Off => return Ok(None),
        DhcpChoice::Proxy => DhcpMode::Proxy,
        DhcpChoice::Authoritative => DhcpMode::Authoritative,
    };
    let mut dhcp = DhcpSettings::new(mode);
    dhcp.pool = match settings.dhcp_pool {
        Some((first, last)) => Some(
            AddressPool::new(first, last)
                .ok_or_else(|| invalid("dhcp_pool", "the first address is after the last"))?,
        ),
        None => None,
    };
    dhcp.router = settings.dhcp_router;
    dhcp.dns = settings.dhcp_dns.clone();
    if mode == DhcpMode::Authoritative {
        dhcp.lease_db = Some(state_dir.join("dhcp-leases"));
    }
    Ok(Some(dhcp))
}

/// Where per-host ISOs are served: `/iso/<nonce>/rivet-agent.iso` (some BMCs want the
/// name to end in `.iso`).
const ISO_ROUTE: &str = "/iso/{nonce}/rivet-agent.iso";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere cannot leave them half-changed.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves a host's ISO (or the byte range asked for) from the template's memory.
async fn serve_iso(
    State(isos): State<Arc<Mutex<IsoShelf>>>,
    UrlPath(nonce): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let iso = {
        let mut shelf = lock(&isos);
        let Some((host, iso)) = shelf.by_nonce.get(&nonce).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        shelf.fetched.insert(host, Timestamp::now());
        iso
    };
    let len = iso.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let (status, pieces, content_range) = match agent_iso::parse_range(range, len) {
        RangeRequest::Whole => (StatusCode::OK, iso.chunks().to_vec(), None),
        RangeRequest::Part(part) => (
            StatusCode::PARTIAL_CONTENT,
            iso.slice(part.clone()),
            Some(format!("bytes {}-{}/{len}", part.start, part.end - 1)),
        ),
        RangeRequest::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
    };
    let body_len: usize = pieces.iter().map(Bytes::len).sum();
    let body = axum::body::Body::from_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-iso9660-image"),
    );
    headers.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(body_len));
    if let Some(value) = content_range.and_then(|v| header::HeaderValue::try_from(v).ok()) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

fn pxe_mac(mac: MacAddr) -> rivet_pxe::MacAddr {
    rivet_pxe::MacAddr::new(mac.octets())
}

#[async_trait]
impl BootService for RealBoot {
    async fn set_entry(&self, mac: MacAddr, entry: BootEntry) -> Result<(), DriverError> {
        let action = match entry {
            BootEntry::Agent { host, token } => {
                BootAction::Agent(Arc::new(self.agent_boot(host, &token)?))
            }
            BootEntry::Disk => BootAction::LocalDisk,
        };
        let mac = pxe_mac(mac);
        self.publish(|entries| {
            entries.insert(mac, Host::new(mac, action));
        })
    }

    async fn remove(&self, mac: MacAddr) -> Result<(), DriverError> {
        let mac = pxe_mac(mac);
        self.publish(|entries| {
            entries.remove(&mac);
        })
    }

    async fn agent_iso(
        &self,
        host: &HostTarget,
        token: &AgentToken,
    ) -> Result<String, DriverError> {
        let template = self.iso_template(host).await?;
        let iso = template
            .render(&self.host_cmdline(host.id, token))
            .map_err(|err| {
                DriverError::new(DriverErrorKind::Failed, format!("{}: {err}", host.name))
            })?;
        // The URL is the only thing between the network and the token inside the ISO, so
        // it is as unguessable as the token (128 random bits).
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| {
            DriverError::new(
                DriverErrorKind::Failed,
                "the system random generator failed",
            )
        })?;
        let nonce = hex::encode(nonce);
        let url = format!(
            "{}{}",
            self.base.as_str().trim_end_matches('/'),
            ISO_ROUTE.replace("{nonce}", &nonce)
        );
        self.isos().put(host.id, nonce, iso);
        Ok(url)
    }

    fn uefi_http_url(&self, _host: &HostTarget) -> String {
        // The iPXE build; it then asks DHCP again and fetches the host's script by MAC.
        format!(
            "{}/ipxe/{}",
            self.base.as_str().trim_end_matches('/'),
            self.uefi_ipxe
        )
    }

    fn observations(
        &self,
        host: HostId,
        mac: Option<MacAddr>,
        since: Timestamp,
    ) -> BootObservations {
        let mut seen = mac
            .map(|mac| self.seen.observations(mac, since))
            .unwrap_or_default();
        let iso_fetched = self
            .isos()
            .fetched
            .get(&host)
            .copied()
            .filter(|&at| at >= since);
        seen.agent_fetched = seen.agent_fetched.max(iso_fetched);
        seen
    }
}
