//! The DHCP service's I/O edge: sockets bound to the serving interface, the core driven by
//! one task, and a lease writer task that group-commits lease changes before releasing the
//! replies that depend on them.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::leases::LeaseRecord;
use super::server::{DhcpServer, Reply, ServerPort};
use super::store::LeaseStore;
use crate::hosts::HostTableHandle;
use crate::observe::ObserverHandle;

/// Lease changes waiting for a commit, at most; beyond this the server is overloaded and
/// drops requests (clients retry) rather than queueing without bound.
const MAX_PENDING: usize = 16_384;
/// Lease changes per commit, at most.
const MAX_BATCH: usize = 4096;

/// The UDP ports the service listens on (67 and 4011 outside tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpPorts {
    pub dhcp: u16,
    pub proxy_boot: u16,
}

impl Default for DhcpPorts {
    fn default() -> Self {
        Self {
            dhcp: 67,
            proxy_boot: 4011,
        }
    }
}

/// A UDP socket on `port` of every address, receiving broadcasts, limited to `interface`.
pub(crate) fn bind_udp(
    interface: Option<&str>,
    address: Ipv4Addr,
    port: u16,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if let Some(interface) = interface {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot bind to interface {interface}: {err}"),
                )
            })?;
    }
    socket.set_broadcast(true)?;
    // Bursts of thousands of requests (a rack powering on, a load test) must not overflow.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(address, port)).into())
        .map_err(|err| io::Error::new(err.kind(), format!("cannot bind UDP port {port}: {err}")))?;
    UdpSocket::from_std(socket.into())
}

/// The sockets replies leave from.
#[derive(Debug)]
struct Sockets {
    dhcp: UdpSocket,
    proxy_boot: UdpSocket,
}

impl Sockets {
    async fn send(&self, reply: &Reply) {
        let socket = match reply.from {
            ServerPort::ProxyBoot => &self.proxy_boot,
            ServerPort::Dhcp => &self.dhcp,
        };
        if let Err(err) = socket.send_to(&reply.datagram, reply.to).await {
            tracing::warn!(to = %reply.to, kind = ?reply.kind, error = %err, "DHCP reply not sent");
        }
    }
}

/// A reply waiting for its lease to be durable.
#[derive(Debug)]
struct PendingReply {
    records: Vec<LeaseRecord>,
    reply: Option<Reply>,
}

/// The running DHCP service.
#[derive(Debug)]
pub struct DhcpService {
    server: DhcpServer,
    store: Option<Arc<LeaseStore>>,
    hosts: HostTableHandle,
    sockets: Arc<Sockets>,
    observer: Option<ObserverHandle>,
}

impl DhcpService {
    /// Binds the sockets on `interface`: port 67 always, 4011 too (ProxyDHCP requests; in
    /// authoritative mode for firmware that asks there anyway).
    ///
    /// `store` is required for durable leases; without it (proxy mode) lease changes are
    /// kept in memory only.
    pub fn bind(
        server: DhcpServer,
        store: Option<LeaseStore>,
        hosts: HostTableHandle,
        interface: Option<&str>,
        ports: DhcpPorts,
    ) -> io::Result<Self> {
        let dhcp = bind_udp(interface, Ipv4Addr::UNSPECIFIED, ports.dhcp)?;
        let proxy_boot = bind_udp(interface, Ipv4Addr::UNSPECIFIED, ports.proxy_boot)?;
        Ok(Self {
            server,
            store: store.map(Arc::new),
            hosts,
            sockets: Arc::new(Sockets { dhcp, proxy_boot }),
            observer: None,
        })
    }

    /// Reports every decodable DHCP message, and what was done about it, to `observer`.
    pub fn observed_by(mut self, observer: ObserverHandle) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves until the task is dropped or a socket fails.
    pub async fn run(mut self) -> io::Result<()> {
        let (pending, commits) = mpsc::channel::<PendingReply>(MAX_PENDING);
        let writer = self
            .store
            .clone()
            .map(|store| tokio::spawn(write_leases(store, commits, self.sockets.clone())));
        let _abort_writer = AbortOnDrop(writer);
        let sockets = self.sockets.clone();
        let mut dhcp_buffer = vec![0u8; 65536];
        let mut boot_buffer = vec![0u8; 65536];
        loop {
            let (len, source, port, from_boot) = tokio::select! {
                received = sockets.dhcp.recv_from(&mut dhcp_buffer) => {
                    let (len, source) = received?;
                    (len, source, ServerPort::Dhcp, false)
                }
                received = sockets.proxy_boot.recv_from(&mut boot_buffer) => {
                    let (len, source) = received?;
                    (len, source, ServerPort::ProxyBoot, true)
                }
            };
            let SocketAddr::V4(source) = source else {
                continue;
            };
            let datagram = if from_boot {
                &boot_buffer[..len]
            } else {
                &dhcp_buffer[..len]
            };
            let at = SystemTime::now();
            let now = at
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0);
            let hosts = self.hosts.hosts();
            let exchange = self.server.exchange(&hosts, datagram, source, port, now);
            if let (Some(observer), Some(request)) = (&self.observer, exchange.request) {
                observer.dhcp(request, &exchange.result, at);
            }
            match exchange.result {
                Ok(handled) if handled.persist.is_empty() || self.store.is_none() => {
                    if let Some(reply) = handled.reply {
                        sockets.send(&reply).await;
                    }
                }
                Ok(handled) => {
                    let job = PendingReply {
                        records: handled.persist,
                        reply: handled.reply,
                    };
                    if pending.try_send(job).is_err() {
                        tracing::warn!(
                            "lease writer is behind; dropping a request (the client will retry)"
                        );
                    }
                }
                Err(silence) => {
                    tracing::debug!(%source, reason = %silence, "DHCP request not answered")
                }
            }
        }
    }
}

/// Commits queued lease changes in batches and sends each reply once its batch is durable.
async fn write_leases(
    store: Arc<LeaseStore>,
    mut commits: mpsc::Receiver<PendingReply>,
    sockets: Arc<Sockets>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while commits.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let records: Vec<LeaseRecord> = batch
            .iter()
            .flat_map(|pending| pending.records.iter().cloned())
            .collect();
        let store = store.clone();
        let committed = tokio::task::spawn_blocking(move || store.commit(&records)).await;
        match committed {
            Ok(Ok(())) => {
                for pending in batch.drain(..) {
                    if let Some(reply) = pending.reply {
                        sockets.send(&reply).await;
                    }
                }
            }
            Ok(Err(err)) => {
                tracing::error!(
                    error = %err, dropped = batch.len(),
                    "lease commit failed; the affected clients get no answer and will retry"
                );
                batch.clear();
            }
            Err(err) => {
                tracing::error!(error = %err, "lease commit task failed");
                batch.clear();
            }
        }
    }
}

/// Aborts a spawned task when dropped, so the writer never outlives the service.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
