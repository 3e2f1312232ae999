//! `rivet boot`: run the boot services, or print the iPXE script a host would get.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use rivet_pxe::cmdline::RelativePath;
use rivet_pxe::dhcp::{AddressPool, BootFiles, DhcpMode, DhcpPorts};
use rivet_pxe::tftp::TftpLimits;
use rivet_pxe::{
    BootConfig, BootObserver, BootServices, DhcpSettings, HostTable, HostTableHandle, HttpBase,
    HttpSettings, MacAddr, Observation, ObserverHandle, TftpSettings,
};

#[derive(Debug, Args)]
pub(crate) struct BootArgs {
    #[command(subcommand)]
    command: BootCommand,
}

#[derive(Debug, Subcommand)]
enum BootCommand {
    /// Serve DHCP, TFTP, HTTP and IPv6 router advertisements on an interface.
    Serve(Box<ServeArgs>),
    /// Print the iPXE script the host with this MAC address would get.
    Ipxe(IpxeArgs),
}

/// How DHCP takes part on the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// ProxyDHCP: boot information only; another server gives addresses.
    Proxy,
    /// Give addresses (fixed ones from the host table, and `--pool`) and boot information.
    Authoritative,
    /// No DHCP: TFTP and HTTP only (your DHCP server points hosts at /boot.ipxe).
    Off,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The interface facing the machines; its first IPv4 address is the server's.
    #[arg(long, value_name = "IF")]
    interface: Option<String>,

    #[arg(long, value_enum)]
    mode: Mode,

    /// The host table (JSON); reloaded on SIGHUP and when the file changes.
    #[arg(long, value_name = "FILE")]
    hosts: PathBuf,

    /// The TFTP root: iPXE builds for PXE firmware (also served over HTTP under /ipxe/).
    #[arg(long, value_name = "DIR", default_value = "/usr/lib/ipxe")]
    tftp_root: PathBuf,

    /// Files served under /files/: kernels, initrds, ISOs, images.
    #[arg(long, value_name = "DIR")]
    http_root: Option<PathBuf>,

    /// HTTP listen address [default: <server address>:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// TFTP listen address [default: <server address>:69].
    #[arg(long, value_name = "ADDR:PORT")]
    tftp_listen: Option<SocketAddr>,

    /// Do not run TFTP.
    #[arg(long)]
    no_tftp: bool,

    /// The address hosts reach this server at [default: the interface's].
    #[arg(long, value_name = "IPV4")]
    server_ip: Option<Ipv4Addr>,

    /// The base URL in scripts and DHCP replies [default: http://<server address>:<port>].
    #[arg(long, value_name = "URL")]
    http_base: Option<HttpBase>,

    /// Addresses to lease to hosts without a fixed one (authoritative mode).
    #[arg(long, value_name = "FIRST-LAST")]
    pool: Option<Pool>,

    /// Default gateway given to hosts (a host's own `gateway` wins).
    #[arg(long, value_name = "IPV4")]
    router: Option<Ipv4Addr>,

    /// DNS servers given to hosts (repeat or comma-separate).
    #[arg(long, value_name = "IPV4", value_delimiter = ',')]
    dns: Vec<Ipv4Addr>,

    /// Lease time in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    lease_time: u64,

    /// The lease database (authoritative mode).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/rivet/dhcp-leases.redb"
    )]
    lease_db: PathBuf,

    /// iPXE build for x86 BIOS PXE firmware (under the TFTP root).
    #[arg(long, value_name = "FILE", default_value = "undionly.kpxe")]
    bios_file: RelativePath,

    /// iPXE build for x86-64 UEFI firmware (under the TFTP root).
    #[arg(long, value_name = "FILE", default_value = "snponly.efi")]
    efi_file: RelativePath,

    /// iPXE build for 64-bit ARM UEFI firmware (under the TFTP root).
    #[arg(long, value_name = "FILE", default_value = "snponly-arm64.efi")]
    arm64_file: RelativePath,

    /// Largest TFTP block size granted.
    #[arg(long, value_name = "BYTES", default_value_t = 65464)]
    tftp_max_blksize: u16,

    /// Do not send IPv6 router advertisements (iPXE then waits ~13 s for IPv6 per boot).
    #[arg(long)]
    no_router_advertisements: bool,

    /// The DHCP server port (for tests on unprivileged ports).
    #[arg(long, default_value_t = 67, hide = true)]
    dhcp_port: u16,

    /// The ProxyDHCP port.
    #[arg(long, default_value_t = 4011, hide = true)]
    proxy_port: u16,
}

#[derive(Debug, Args)]
struct IpxeArgs {
    /// The host's MAC address.
    mac: MacAddr,

    /// The host table (JSON).
    #[arg(long, value_name = "FILE")]
    hosts: PathBuf,

    /// The base URL the script's downloads use, e.g. http://10.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    http_base: HttpBase,
}

/// `FIRST-LAST`.
#[derive(Debug, Clone, Copy)]
struct Pool(AddressPool);

impl FromStr for Pool {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (first, last) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}`: expected FIRST-LAST, e.g. 10.0.0.100-10.0.0.200"))?;
        let parse = |text: &str| {
            text.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("`{text}` is not an IPv4 address"))
        };
        AddressPool::new(parse(first)?, parse(last)?)
            .map(Pool)
            .ok_or_else(|| format!("`{text}`: the first address is after the last"))
    }
}

pub(crate) fn run(args: BootArgs) -> anyhow::Result<()> {
    match args.command {
        BootCommand::Serve(args) => serve(*args),
        BootCommand::Ipxe(args) => print_script(&args),
    }
}

fn print_script(args: &IpxeArgs) -> anyhow::Result<()> {
    let table = HostTable::load(&args.hosts)?;
    match rivet_pxe::ipxe::script_for(&table, args.mac, &args.http_base) {
        Some(script) => {
            print!("{script}");
            Ok(())
        }
        None => bail!(
            "the host table gives {} no boot (it is marked `ignore`, or unknown without discovery)",
            args.mac
        ),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let table = HostTable::load(&args.hosts)?;
    tracing::info!(hosts = table.len(), file = %args.hosts.display(), "host table loaded");
    let interface_ip = match &args.interface {
        Some(name) => rivet_pxe::net::interface_info(name)?.ipv4.map(|(ip, _)| ip),
        None => None,
    };
    let server_ip = args.server_ip.or(interface_ip);
    let bind_ip = server_ip.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4);
    let dhcp = match args.mode {
        Mode::Off => None,
        mode => Some(DhcpSettings {
            pool: args.pool.map(|pool| pool.0),
            router: args.router,
            dns: args.dns.clone(),
            lease_time: Duration::from_secs(args.lease_time),
            lease_db: Some(args.lease_db.clone()),
            boot_files: BootFiles {
                bios: args.bios_file.clone(),
                efi_x64: args.efi_file.clone(),
                efi_arm64: args.arm64_file.clone(),
            },
            ports: DhcpPorts {
                dhcp: args.dhcp_port,
                proxy_boot: args.proxy_port,
            },
            ..DhcpSettings::new(if mode == Mode::Proxy {
                DhcpMode::Proxy
            } else {
                DhcpMode::Authoritative
            })
        }),
    };
    let config = BootConfig {
        interface: args.interface.clone(),
        server_ip: args.server_ip,
        http_base: args.http_base.clone(),
        dhcp,
        tftp: (!args.no_tftp).then(|| TftpSettings {
            listen: args.tftp_listen.unwrap_or(SocketAddr::new(bind_ip, 69)),
            root: args.tftp_root.clone(),
            limits: TftpLimits {
                max_blksize: args.tftp_max_blksize,
                ..TftpLimits::default()
            },
            max_transfers: 1024,
        }),
        http: Some(HttpSettings {
            listen: args.listen.unwrap_or(SocketAddr::new(bind_ip, 8080)),
            files_root: args.http_root.clone(),
            ipxe_root: Some(args.tftp_root.clone()),
        }),
        router_advertisements: !args.no_router_advertisements && args.interface.is_some(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let hosts = HostTableHandle::new(table);
        let watcher = hosts.watch_file(args.hosts.clone(), Duration::from_secs(2));
        let observer = ObserverHandle::new(Arc::new(LogObservations));
        let mut services = BootServices::start_observed(config, hosts, observer)
            .await
            .context("starting the boot services")?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        let outcome = tokio::select! {
            result = services.wait() => result.context("a boot service failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate.recv() => Ok(()),
        };
        watcher.abort();
        services.shutdown().await;
        tracing::info!("boot services stopped");
        outcome
    })
}

/// Logs what each machine asked for and got, at debug level: a per-MAC trail (with the
/// reason for every unanswered DHCP request) without an engine.
struct LogObservations;

impl BootObserver for LogObservations {
    fn observe(&self, seen: &Observation) {
        tracing::debug!(host = ?seen.mac, ip = ?seen.ip, event = ?seen.kind, "boot observation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse_and_reject_nonsense() {
        let pool: Pool = "10.0.0.100-10.0.0.200".parse().unwrap();
        assert_eq!(pool.0.first(), Ipv4Addr::new(10, 0, 0, 100));
        for bad in ["10.0.0.1", "10.0.0.9-10.0.0.1", "a-b"] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
    }
}
