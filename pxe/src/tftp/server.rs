//! The TFTP server's I/O edge: a tokio socket receives requests on the well-known port;
//! each transfer then runs on its own thread with its own socket (the server's transfer
//! ID), driving a [`Transfer`].
//!
//! Why a thread per transfer rather than a task: a transfer is a strict ping-pong (send a
//! window, block until the acknowledgement), so its speed is the server's turnaround. A
//! blocking `recv` is woken by the kernel directly, with no readiness poll and no scheduler
//! hop in between, and each transfer gets its own share of the CPU as tftpd-hpa's
//! process-per-transfer model does. With transfers as tasks on two runtime threads, fifty
//! concurrent clients on the same machine outweighed the server (see the benchmark).
//! Threads are cheap at the concurrency TFTP sees (a rack booting at once), and their
//! number is bounded by [`TftpConfig::max_transfers`].

use std::collections::HashSet;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::packet::{self, ErrorCode, Mode, Packet};
use super::transfer::{Failure, Step, TftpLimits, Transfer, negotiate};
use crate::confine::{ConfineError, ConfinedDir};
use crate::observe::{ObserverHandle, TftpOutcome};

/// Files read for a netascii transfer are converted in memory; larger ones must use octet.
const NETASCII_MAX: u64 = 64 << 20;

/// How much of a file a transfer reads at once (one `pread` per chunk, not per block).
const READ_CHUNK: usize = 1 << 20;

/// Transfer threads need little stack.
const THREAD_STACK: usize = 256 * 1024;

/// How a server behaves; see [`TftpLimits`] for what clients may negotiate.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub listen: SocketAddr,
    pub limits: TftpLimits,
    /// Transfers running at once; further requests get "server busy".
    pub max_transfers: usize,
}

/// A read-only TFTP server.
#[derive(Debug)]
pub struct TftpServer {
    socket: UdpSocket,
    root: ConfinedDir,
    limits: TftpLimits,
    permits: Arc<Semaphore>,
    active: Arc<Mutex<HashSet<SocketAddr>>>,
    observer: Option<ObserverHandle>,
}

/// Tells transfer threads to stop when the server's task ends (they notice within one
/// retransmission timeout).
#[derive(Debug)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl TftpServer {
    /// Binds the request socket.
    pub async fn bind(config: &TftpConfig, root: ConfinedDir) -> io::Result<Self> {
        let socket = UdpSocket::bind(config.listen).await?;
        Ok(Self {
            socket,
            root,
            limits: config.limits,
            permits: Arc::new(Semaphore::new(config.max_transfers.max(1))),
            active: Arc::default(),
            observer: None,
        })
    }

    /// Reports each read request's outcome (sent, or refused and why) to `observer`.
    pub fn observed_by(mut self, observer: ObserverHandle) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The address requests are received on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves requests until the task is dropped or the socket fails.
    pub async fn run(self) -> io::Result<()> {
        let local_ip = self.socket.local_addr()?.ip();
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let mut buffer = vec![0u8; 65536];
        loop {
            let (len, client) = match self.socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                // ICMP errors from earlier sends surface here on Linux; they concern one
                // client, not the server.
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(err) => return Err(err),
            };
            let request = buffer[..len].to_vec();
            {
                let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
                // A retransmitted request while its transfer runs: that transfer already
                // retransmits on its own timer; a second one would only collide with it.
                if !active.insert(client) {
                    continue;
                }
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.forget(client);
                tracing::warn!(%client, "TFTP request refused: too many transfers");
                let _ = self
                    .socket
                    .send_to(
                        &packet::encode_error(ErrorCode::NotDefined, "server busy, retry later"),
                        client,
                    )
                    .await;
                continue;
            };
            let job = Job {
                request,
                client,
                local_ip,
                root: self.root.clone(),
                limits: self.limits,
                stop: stop.clone(),
                observer: self.observer.clone(),
            };
            let active = self.active.clone();
            let spawned = std::thread::Builder::new()
                .name("tftp-transfer".into())
                .stack_size(THREAD_STACK)
                .spawn(move || {
                    if let Err(err) = job.run() {
                        tracing::warn!(client = %job.client, error = %err, "TFTP transfer failed");
                    }
                    active
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&job.client);
                    drop(permit);
                });
            if let Err(err) = spawned {
                tracing::warn!(%client, error = %err, "cannot start a TFTP transfer thread");
                self.forget(client);
            }
        }
    }

    fn forget(&self, client: SocketAddr) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client);
    }
}

/// Where a transfer's bytes come from.
enum Source {
    File {
        file: std::fs::File,
        chunk: Vec<u8>,
        chunk_start: u64,
    },
    Memory(Vec<u8>),
}

impl Source {
    /// The bytes `offset..offset + len`, reading ahead in [`READ_CHUNK`]s.
    fn bytes(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let (bytes, base) = match self {
            Self::Memory(bytes) => (&bytes[..], 0),
            Self::File {
                file,
                chunk,
                chunk_start,
            } => {
                let end = offset + len as u64;
                let cached = offset >= *chunk_start && end <= *chunk_start + chunk.len() as u64;
                if !cached {
                    let want = len.max(READ_CHUNK);
                    chunk.resize(want, 0);
                    let mut filled = 0;
                    while filled < want {
                        match file.read_at(&mut chunk[filled..], offset + filled as u64) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                            Err(err) => return Err(err),
                        }
                    }
                    chunk.truncate(filled);
                    *chunk_start = offset;
                }
                (&chunk[..], *chunk_start)
            }
        };
        let start = usize::try_from(offset.saturating_sub(base))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(len).min(bytes.len());
        Ok(&bytes[start..end])
    }
}

/// Converts to netascii: LF becomes CR LF, a bare CR becomes CR NUL (RFC 1350 / RFC 764).
fn to_netascii(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &byte in bytes {
        match byte {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            other => out.push(other),
        }
    }
    out
}

/// Why a request is refused, as the client is told.
fn refusal(err: &ConfineError) -> (ErrorCode, &'static str) {
    match err {
        ConfineError::NotFound { .. } | ConfineError::NotAFile { .. } => {
            (ErrorCode::FileNotFound, "file not found")
        }
        ConfineError::Refused { .. }
        | ConfineError::Escapes { .. }
        | ConfineError::Denied { .. } => (ErrorCode::AccessViolation, "access violation"),
        _ => (ErrorCode::NotDefined, "cannot read the file"),
    }
}

/// What became of a datagram handed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Sent, or failed in a way that is as good as lost on the wire (ENOBUFS, a local
    /// firewall's EPERM): the retransmission timer recovers.
    Ok,
    /// The client's port is closed (ICMP port unreachable).
    ClientGone,
}

fn transmit(socket: &StdUdpSocket, datagram: &[u8]) -> Sent {
    match socket.send(datagram) {
        Ok(_) => Sent::Ok,
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => Sent::ClientGone,
        Err(err) => {
            tracing::debug!(error = %err, "TFTP datagram not sent; treating it as lost");
            Sent::Ok
        }
    }
}

/// One request, served on its own thread.
struct Job {
    request: Vec<u8>,
    client: SocketAddr,
    local_ip: IpAddr,
    root: ConfinedDir,
    limits: TftpLimits,
    stop: Arc<AtomicBool>,
    observer: Option<ObserverHandle>,
}

impl Job {
    fn observe(&self, file: &str, outcome: TftpOutcome) {
        if let (Some(observer), IpAddr::V4(ip)) = (&self.observer, self.client.ip()) {
            observer.tftp(ip, file, outcome);
        }
    }

    fn run(&self) -> io::Result<()> {
        let client = self.client;
        let socket = StdUdpSocket::bind((self.local_ip, 0))?;
        socket.connect(client)?;
        let refuse = |code, message: &str| {
            transmit(&socket, &packet::encode_error(code, message));
            Ok(())
        };
        let request = match packet::parse(&self.request) {
            Ok(Packet::Read(request)) => request,
            Ok(Packet::Write(request)) => {
                tracing::info!(%client, file = request.filename, "TFTP write refused (read-only server)");
                return refuse(ErrorCode::AccessViolation, "this server is read-only");
            }
            Ok(other) => {
                tracing::debug!(%client, packet = ?other, "TFTP packet on the request port ignored");
                return Ok(());
            }
            Err(err) => {
                tracing::debug!(%client, error = %err, "malformed TFTP request");
                return refuse(ErrorCode::IllegalOperation, "malformed request");
            }
        };
        if request.mode == Mode::Mail {
            return refuse(ErrorCode::IllegalOperation, "mail mode is not supported");
        }
        let name = request.filename;
        let served = match self.root.open_file(name) {
            Ok(served) => served,
            Err(err) => {
                tracing::info!(%client, file = %name, error = %err, "TFTP request refused");
                let (code, message) = refusal(&err);
                self.observe(name, TftpOutcome::Refused(message));
                return refuse(code, message);
            }
        };
        let (mut source, size) = if request.mode == Mode::Netascii {
            if served.len > NETASCII_MAX {
                return refuse(
                    ErrorCode::NotDefined,
                    "file too large for netascii mode; use octet",
                );
            }
            let mut raw = Vec::new();
            (&served.file).read_to_end(&mut raw)?;
            let converted = to_netascii(&raw);
            let size = converted.len() as u64;
            (Source::Memory(converted), size)
        } else {
            (
                Source::File {
                    file: served.file,
                    chunk: Vec::new(),
                    chunk_start: 0,
                },
                served.len,
            )
        };

        let started = Instant::now();
        let negotiated = negotiate(&request, &self.limits, size);
        let (blksize, windowsize) = (negotiated.blksize, negotiated.windowsize);
        // A blocking receive waits at most one retransmission timeout; the transfer decides
        // from the clock whether that was a real timeout.
        socket.set_read_timeout(Some(negotiated.timeout.max(Duration::from_millis(10))))?;
        let (mut transfer, mut step) = Transfer::start(negotiated, &self.limits, size, started);
        let mut packet = Vec::with_capacity(4 + transfer.blksize());
        let mut incoming = vec![0u8; 2048];
        let mut retransmissions = 0u64;
        loop {
            let sent = match step {
                Step::SendOack => transmit(&socket, transfer.oack()),
                Step::SendBlocks { first, last } => {
                    let (window_start, _) = transfer.block_span(first);
                    let (last_offset, last_len) = transfer.block_span(last);
                    let window_len =
                        usize::try_from(last_offset - window_start).unwrap_or(0) + last_len;
                    let window = source.bytes(window_start, window_len)?;
                    let mut sent = Sent::Ok;
                    for block in first..=last {
                        let (offset, len) = transfer.block_span(block);
                        let start = usize::try_from(offset - window_start).unwrap_or(usize::MAX);
                        let data = window
                            .get(start..start.saturating_add(len))
                            .unwrap_or_default();
                        packet.clear();
                        packet.extend_from_slice(&packet::data_header(Transfer::wire_block(block)));
                        packet.extend_from_slice(data);
                        sent = transmit(&socket, &packet);
                        if sent == Sent::ClientGone {
                            break;
                        }
                    }
                    sent
                }
                Step::Wait => Sent::Ok,
                Step::Done => {
                    tracing::info!(
                        %client, file = %name, bytes = size, blksize, windowsize,
                        retransmissions, elapsed_ms = started.elapsed().as_millis() as u64,
                        "TFTP transfer complete"
                    );
                    self.observe(name, TftpOutcome::Sent { bytes: size });
                    return Ok(());
                }
                Step::Failed { reason, error } => {
                    if matches!(reason, Failure::ClientError { .. }) {
                        // Routine: EDK2 asks for `tsize` only, then aborts to fetch for real.
                        tracing::debug!(%client, file = %name, reason = %reason, "TFTP transfer ended by the client");
                    } else {
                        tracing::info!(%client, file = %name, reason = %reason, "TFTP transfer abandoned");
                    }
                    if let Some((code, message)) = error {
                        transmit(&socket, &packet::encode_error(code, message));
                    }
                    return Ok(());
                }
            };
            if sent == Sent::ClientGone {
                tracing::info!(%client, file = %name, "TFTP client went away");
                return Ok(());
            }
            if self.stop.load(Ordering::Relaxed) {
                tracing::info!(%client, file = %name, "TFTP transfer stopped: the server is shutting down");
                return Ok(());
            }
            step = match socket.recv(&mut incoming) {
                Ok(len) => {
                    let now = Instant::now();
                    match transfer.on_datagram(&incoming[..len], now) {
                        // Stray datagrams must not postpone a due retransmission forever.
                        Step::Wait if now >= transfer.deadline() => {
                            retransmissions += 1;
                            transfer.on_timeout(now)
                        }
                        step => step,
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let step = transfer.on_timeout(Instant::now());
                    if matches!(step, Step::SendBlocks { .. } | Step::SendOack) {
                        retransmissions += 1;
                    }
                    step
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => Step::Wait,
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(%client, file = %name, "TFTP client went away");
                    return Ok(());
                }
                Err(err) => return Err(err),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netascii_conversion() {
        assert_eq!(to_netascii(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
    }
}
