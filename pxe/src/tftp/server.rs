//! The TFTP server's I/O edge: a tokio socket on the well-known port, and one task with its
//! own socket (the server's transfer ID) per transfer, driving a [`Transfer`].

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::packet::{self, ErrorCode, Mode, Packet};
use super::transfer::{Failure, Step, TftpLimits, Transfer, negotiate};
use crate::confine::{ConfineError, ConfinedDir};

/// Files read for a netascii transfer are converted in memory; larger ones must use octet.
const NETASCII_MAX: u64 = 64 << 20;

/// How much of a file a transfer reads at once: large enough that the blocking-pool round
/// trip is negligible per block, small enough that 500 transfers fit easily in memory.
const READ_CHUNK: usize = 1 << 20;

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
        })
    }

    /// The address requests are received on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves requests until the task is dropped or the socket fails.
    pub async fn run(self) -> io::Result<()> {
        let local_ip = self.socket.local_addr()?.ip();
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
            let root = self.root.clone();
            let limits = self.limits;
            let active = self.active.clone();
            tokio::spawn(async move {
                if let Err(err) = serve(&request, client, local_ip, &root, &limits).await {
                    tracing::warn!(%client, error = %err, "TFTP transfer failed");
                }
                active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&client);
                drop(permit);
            });
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
        file: Arc<std::fs::File>,
        chunk: Vec<u8>,
        chunk_start: u64,
    },
    Memory(Vec<u8>),
}

impl Source {
    /// The bytes `offset..offset + len`, reading ahead in [`READ_CHUNK`]s.
    async fn bytes(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        match self {
            Self::Memory(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(len).min(bytes.len());
                Ok(&bytes[start..end])
            }
            Self::File {
                file,
                chunk,
                chunk_start,
            } => {
                let end = offset + len as u64;
                let cached = offset >= *chunk_start && end <= *chunk_start + chunk.len() as u64;
                if !cached {
                    let want = len.max(READ_CHUNK);
                    let file = file.clone();
                    let mut buffer = std::mem::take(chunk);
                    *chunk = tokio::task::spawn_blocking(move || {
                        buffer.resize(want, 0);
                        let mut filled = 0;
                        while filled < want {
                            match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                                Ok(0) => break,
                                Ok(n) => filled += n,
                                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                                Err(err) => return Err(err),
                            }
                        }
                        buffer.truncate(filled);
                        Ok(buffer)
                    })
                    .await
                    .map_err(io::Error::other)??;
                    *chunk_start = offset;
                }
                let start = usize::try_from(offset - *chunk_start).unwrap_or(usize::MAX);
                let start = start.min(chunk.len());
                let end = start.saturating_add(len).min(chunk.len());
                Ok(&chunk[start..end])
            }
        }
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

async fn transmit(socket: &UdpSocket, datagram: &[u8]) -> Sent {
    match socket.send(datagram).await {
        Ok(_) => Sent::Ok,
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => Sent::ClientGone,
        Err(err) => {
            tracing::debug!(error = %err, "TFTP datagram not sent; treating it as lost");
            Sent::Ok
        }
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

async fn serve(
    request: &[u8],
    client: SocketAddr,
    local_ip: IpAddr,
    root: &ConfinedDir,
    limits: &TftpLimits,
) -> io::Result<()> {
    let socket = UdpSocket::bind((local_ip, 0)).await?;
    socket.connect(client).await?;
    let send_error = |code, message: &str| {
        let packet = packet::encode_error(code, message);
        let socket = &socket;
        async move { socket.send(&packet).await.map(drop) }
    };
    let request = match packet::parse(request) {
        Ok(Packet::Read(request)) => request,
        Ok(Packet::Write(request)) => {
            tracing::info!(%client, file = request.filename, "TFTP write refused (read-only server)");
            return send_error(ErrorCode::AccessViolation, "this server is read-only").await;
        }
        Ok(other) => {
            tracing::debug!(%client, packet = ?other, "TFTP packet on the request port ignored");
            return Ok(());
        }
        Err(err) => {
            tracing::debug!(%client, error = %err, "malformed TFTP request");
            return send_error(ErrorCode::IllegalOperation, "malformed request").await;
        }
    };
    if request.mode == Mode::Mail {
        return send_error(ErrorCode::IllegalOperation, "mail mode is not supported").await;
    }
    let name = request.filename.to_owned();
    let opened = {
        let root = root.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || root.open_file(&name))
            .await
            .map_err(io::Error::other)?
    };
    let served = match opened {
        Ok(served) => served,
        Err(err) => {
            tracing::info!(%client, file = %name, error = %err, "TFTP request refused");
            let (code, message) = refusal(&err);
            return send_error(code, message).await;
        }
    };
    let (mut source, size) = if request.mode == Mode::Netascii {
        if served.len > NETASCII_MAX {
            return send_error(
                ErrorCode::NotDefined,
                "file too large for netascii mode; use octet",
            )
            .await;
        }
        let file = served.file;
        let raw = tokio::task::spawn_blocking(move || {
            let mut raw = Vec::new();
            io::Read::read_to_end(&mut &file, &mut raw).map(|_| raw)
        })
        .await
        .map_err(io::Error::other)??;
        let converted = to_netascii(&raw);
        let size = converted.len() as u64;
        (Source::Memory(converted), size)
    } else {
        (
            Source::File {
                file: Arc::new(served.file),
                chunk: Vec::new(),
                chunk_start: 0,
            },
            served.len,
        )
    };

    let started = Instant::now();
    let negotiated = negotiate(&request, limits, size);
    let (blksize, windowsize) = (negotiated.blksize, negotiated.windowsize);
    let (mut transfer, mut step) = Transfer::start(negotiated, limits, size, started);
    let mut packet = Vec::with_capacity(4 + transfer.blksize());
    let mut incoming = vec![0u8; 1024];
    let mut retransmissions = 0u64;
    loop {
        let sent = match step {
            Step::SendOack => transmit(&socket, transfer.oack()).await,
            Step::SendBlocks { first, last } => {
                let (window_start, _) = transfer.block_span(first);
                let (last_offset, last_len) = transfer.block_span(last);
                let window_len =
                    usize::try_from(last_offset - window_start).unwrap_or(0) + last_len;
                let window = source.bytes(window_start, window_len).await?;
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
                    sent = transmit(&socket, &packet).await;
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
                    transmit(&socket, &packet::encode_error(code, message)).await;
                }
                return Ok(());
            }
        };
        if sent == Sent::ClientGone {
            tracing::info!(%client, file = %name, "TFTP client went away");
            return Ok(());
        }
        let deadline = tokio::time::Instant::from_std(transfer.deadline());
        step = tokio::select! {
            received = socket.recv(&mut incoming) => match received {
                Ok(len) => transfer.on_datagram(&incoming[..len], Instant::now()),
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(%client, file = %name, "TFTP client went away");
                    return Ok(());
                }
                Err(err) => return Err(err),
            },
            () = tokio::time::sleep_until(deadline) => {
                let step = transfer.on_timeout(Instant::now());
                if matches!(step, Step::SendBlocks { .. } | Step::SendOack) {
                    retransmissions += 1;
                }
                step
            }
        };
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
