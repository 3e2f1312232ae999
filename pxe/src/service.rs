//! The whole service set — DHCP, TFTP, HTTP and router advertisements — started together in
//! the caller's tokio runtime.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use rivet_pxe::{BootConfig, BootServices, HostTable, HostTableHandle};
//! let hosts = HostTableHandle::new(HostTable::default());
//! let config = BootConfig::default(); // fill in the interface, DHCP, TFTP and HTTP settings
//! let mut services = BootServices::start(config, hosts.clone()).await?;
//! // …later, from the engine: hosts.set_hosts(new_table);
//! services.wait().await?; // returns only if a service fails
//! # Ok(()) }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::confine::{ConfineError, ConfinedDir};
use crate::dhcp::{
    AddressPool, BootFiles, DhcpConfig, DhcpMode, DhcpPorts, DhcpServer, DhcpService, LeaseStore,
    StoreError, Subnet,
};
use crate::hosts::HostTableHandle;
use crate::http::{HttpState, router};
use crate::ipxe::HttpBase;
use crate::net::{InterfaceError, interface_info};
use crate::observe::ObserverHandle;
use crate::tftp::{TftpConfig, TftpLimits, TftpServer};

/// DHCP settings.
#[derive(Debug, Clone)]
pub struct DhcpSettings {
    pub mode: DhcpMode,
    pub pool: Option<AddressPool>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_time: Duration,
    /// The lease database; required in authoritative mode.
    pub lease_db: Option<PathBuf>,
    pub boot_files: BootFiles,
    pub ports: DhcpPorts,
}

impl DhcpSettings {
    /// Defaults for `mode`: no pool, one-hour leases, Debian's iPXE file names.
    pub fn new(mode: DhcpMode) -> Self {
        Self {
            mode,
            pool: None,
            router: None,
            dns: Vec::new(),
            lease_time: Duration::from_secs(3600),
            lease_db: None,
            boot_files: BootFiles::default(),
            ports: DhcpPorts::default(),
        }
    }
}

/// TFTP settings.
#[derive(Debug, Clone)]
pub struct TftpSettings {
    pub listen: SocketAddr,
    /// Usually the iPXE builds (Debian: `/usr/lib/ipxe`).
    pub root: PathBuf,
    pub limits: TftpLimits,
    pub max_transfers: usize,
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Kernels, initrds, images (`/files/`).
    pub files_root: Option<PathBuf>,
    /// iPXE builds for UEFI HTTP boot (`/ipxe/`); usually the TFTP root.
    pub ipxe_root: Option<PathBuf>,
}

/// Everything [`BootServices::start`] needs. Services left `None` are not started.
#[derive(Debug, Clone, Default)]
pub struct BootConfig {
    /// The interface facing the machines: DHCP and router advertisements are bound to it
    /// and its first IPv4 address is the server's unless `server_ip` says otherwise.
    pub interface: Option<String>,
    pub server_ip: Option<Ipv4Addr>,
    /// Where hosts reach the HTTP routes; defaults to `http://<server_ip>:<http port>`.
    /// Required when HTTP is served by someone else (the engine nesting [`router`]).
    pub http_base: Option<HttpBase>,
    pub dhcp: Option<DhcpSettings>,
    pub tftp: Option<TftpSettings>,
    pub http: Option<HttpSettings>,
    /// Answer IPv6 router solicitations so iPXE does not wait ~13 s for IPv6.
    pub router_advertisements: bool,
}

/// Why the boot services could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error(transparent)]
    Interface(#[from] InterfaceError),
    #[error("{0}")]
    Config(String),
    #[error("{service}: {source}")]
    Io {
        service: &'static str,
        source: io::Error,
    },
    #[error("{service} root: {source}")]
    Root {
        service: &'static str,
        source: ConfineError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running services.
#[derive(Debug)]
pub struct BootServices {
    tasks: JoinSet<(&'static str, io::Result<()>)>,
    tftp_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    http_base: Option<HttpBase>,
}

impl BootServices {
    /// Binds every configured service (so address conflicts and bad roots are reported
    /// here, before anything runs) and starts them on the current tokio runtime.
    pub async fn start(config: BootConfig, hosts: HostTableHandle) -> Result<Self, BootError> {
        Self::launch(config, hosts, None).await
    }

    /// [`start`](Self::start), with `observer` registered before the first datagram: DHCP,
    /// TFTP and HTTP report what each machine asked for and got (see [`crate::observe`]).
    /// Give the same handle to an HTTP router served elsewhere
    /// ([`HttpState::observer`](crate::http::HttpState::observer)) so its fetches are
    /// attributed through the addresses this DHCP saw.
    pub async fn start_observed(
        config: BootConfig,
        hosts: HostTableHandle,
        observer: ObserverHandle,
    ) -> Result<Self, BootError> {
        Self::launch(config, hosts, Some(observer)).await
    }

    async fn launch(
        config: BootConfig,
        hosts: HostTableHandle,
        observer: Option<ObserverHandle>,
    ) -> Result<Self, BootError> {
        let interface = config
            .interface
            .as_deref()
            .map(interface_info)
            .transpose()?;
        let interface_v4 = interface.as_ref().and_then(|info| info.ipv4);
        let server_ip = config.server_ip.or(interface_v4.map(|(ip, _)| ip));
        let http_base = match (&config.http_base, &config.http, server_ip) {
            (Some(base), _, _) => Some(base.clone()),
            (None, Some(http), Some(ip)) => Some(
                format!("http://{ip}:{}", http.listen.port())
                    .parse()
                    .map_err(|err| BootError::Config(format!("HTTP base URL: {err}")))?,
            ),
            _ => None,
        };
        let mut tasks = JoinSet::new();

        if let Some(settings) = &config.dhcp {
            let info = interface.as_ref().ok_or_else(|| {
                BootError::Config("DHCP needs the serving interface (--interface)".into())
            })?;
            let (ip, prefix) = match (config.server_ip, info.ipv4) {
                (Some(ip), Some((_, prefix))) => (ip, prefix),
                (_, Some(v4)) => v4,
                (_, None) => {
                    return Err(BootError::Config(format!(
                        "interface {} has no IPv4 address; DHCP needs one",
                        info.name
                    )));
                }
            };
            let http = http_base.clone().ok_or_else(|| {
                BootError::Config("DHCP needs an HTTP base URL for iPXE scripts".into())
            })?;
            let subnet = Subnet::containing(ip, prefix);
            if let Some(pool) = settings.pool
                && !(subnet.contains(pool.first()) && subnet.contains(pool.last()))
            {
                return Err(BootError::Config(format!(
                    "the pool {}-{} is not inside {}/{}, the subnet of {}",
                    pool.first(),
                    pool.last(),
                    subnet.network,
                    subnet.prefix_len,
                    info.name
                )));
            }
            let (store, leases) = match (settings.mode, &settings.lease_db) {
                (DhcpMode::Authoritative, Some(path)) => {
                    let (store, leases) = LeaseStore::open(path)?;
                    tracing::info!(path = %path.display(), leases = leases.len(), "lease database opened");
                    (Some(store), leases)
                }
                (DhcpMode::Authoritative, None) => {
                    return Err(BootError::Config(
                        "authoritative DHCP needs a lease database (--lease-db)".into(),
                    ));
                }
                (DhcpMode::Proxy, _) => (None, Vec::new()),
            };
            let core = DhcpServer::new(
                DhcpConfig {
                    mode: settings.mode,
                    server: ip,
                    subnet,
                    pool: settings.pool,
                    router: settings.router,
                    dns: settings.dns.clone(),
                    lease_time: settings.lease_time,
                    offer_hold: Duration::from_secs(30),
                    decline_hold: Duration::from_secs(3600),
                    boot_files: settings.boot_files.clone(),
                    http,
                },
                leases,
            );
            let mut service =
                DhcpService::bind(core, store, hosts.clone(), Some(&info.name), settings.ports)
                    .map_err(|source| BootError::Io {
                        service: "DHCP",
                        source,
                    })?;
            if let Some(observer) = &observer {
                service = service.observed_by(observer.clone());
            }
            tracing::info!(interface = %info.name, server = %ip, mode = ?settings.mode, "DHCP serving");
            tasks.spawn(async move { ("DHCP", service.run().await) });
        }

        let mut tftp_addr = None;
        if let Some(settings) = &config.tftp {
            let root = ConfinedDir::open(&settings.root).map_err(|source| BootError::Root {
                service: "TFTP",
                source,
            })?;
            let mut server = TftpServer::bind(
                &TftpConfig {
                    listen: settings.listen,
                    limits: settings.limits,
                    max_transfers: settings.max_transfers,
                },
                root,
            )
            .await
            .map_err(|source| BootError::Io {
                service: "TFTP",
                source,
            })?;
            let addr = server.local_addr().map_err(|source| BootError::Io {
                service: "TFTP",
                source,
            })?;
            if let Some(observer) = &observer {
                server = server.observed_by(observer.clone());
            }
            tracing::info!(%addr, root = %settings.root.display(), "TFTP serving");
            tftp_addr = Some(addr);
            tasks.spawn(async move { ("TFTP", server.run().await) });
        }

        let mut http_addr = None;
        if let Some(settings) = &config.http {
            let base = http_base.clone().ok_or_else(|| {
                BootError::Config(
                    "HTTP needs a server address (--interface or --server-ip) or a base URL".into(),
                )
            })?;
            let open = |path: &Option<PathBuf>, service| {
                path.as_deref()
                    .map(ConfinedDir::open)
                    .transpose()
                    .map_err(|source| BootError::Root { service, source })
            };
            let state = HttpState {
                hosts: hosts.clone(),
                base: base.clone(),
                files: open(&settings.files_root, "HTTP")?,
                ipxe: open(&settings.ipxe_root, "HTTP iPXE")?,
                observer: observer.clone(),
            };
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|source| BootError::Io {
                    service: "HTTP",
                    source,
                })?;
            let addr = listener.local_addr().map_err(|source| BootError::Io {
                service: "HTTP",
                source,
            })?;
            tracing::info!(%addr, %base, "HTTP serving");
            http_addr = Some(addr);
            let app = router(state);
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            tasks.spawn(async move { ("HTTP", axum::serve(listener, app).await) });
        }

        if config.router_advertisements {
            match &interface {
                Some(info) => {
                    let (name, index, mac) = (info.name.clone(), info.index, info.mac);
                    tasks.spawn(async move {
                        let result =
                            crate::ra::advertise(&name, index, mac, Duration::from_secs(10)).await;
                        if let Err(err) = &result {
                            // Not fatal: boots only get slower.
                            tracing::warn!(interface = %name, error = %err, "router advertisements stopped; iPXE will wait for IPv6 on each boot");
                            return ("router advertisements", Ok(()));
                        }
                        ("router advertisements", result)
                    });
                }
                None => tracing::warn!(
                    "router advertisements need --interface; iPXE will wait for IPv6 on each boot"
                ),
            }
        }

        Ok(Self {
            tasks,
            tftp_addr,
            http_addr,
            http_base,
        })
    }

    /// Where TFTP listens, if it runs.
    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        self.tftp_addr
    }

    /// Where HTTP listens, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The base URL hosts are given.
    pub fn http_base(&self) -> Option<&HttpBase> {
        self.http_base.as_ref()
    }

    /// Waits until a service fails (its error) or all have ended.
    pub async fn wait(&mut self) -> Result<(), BootError> {
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((service, Err(source))) => return Err(BootError::Io { service, source }),
                Err(err) => {
                    return Err(BootError::Io {
                        service: "boot services",
                        source: io::Error::other(err),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops every service.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}
