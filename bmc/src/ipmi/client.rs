//! The tokio UDP driver around the sans-IO session: it sends, waits, retransmits, spaces
//! commands and logs in again when a session went stale.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::{BmcError, Credentials};

use super::commands::Request;
use super::crypto::CipherSuite;
use super::session::{Handshake, Progress, Session};
use super::wire::Response;
use super::{IpmiOptions, IpmiTarget};

/// Log in again before a command when the session has been idle this long. ipmi_sim expires
/// sessions after 30 s of silence and the IPMI default is 60 s; a fresh login costs four
/// round trips, a command sent into an expired session costs a whole timeout.
const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(20);
/// Larger than any IPMI-over-LAN datagram Rivet asks for.
const RECEIVE_BUFFER: usize = 2048;

/// An IPMI-over-LAN connection to one BMC, holding one RMCP+ session.
///
/// Commands are sent one at a time (`&mut self`); wrap the client in a mutex to share it.
/// Dropping the client sends Close Session without waiting for the answer.
pub struct Client {
    socket: UdpSocket,
    peer: SocketAddr,
    credentials: Credentials,
    target: IpmiTarget,
    suites: Vec<CipherSuite>,
    options: IpmiOptions,
    session: Option<Session>,
    pacer: Pacer,
    last_answer: Instant,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("username", &self.credentials.username())
            .field("privilege", &self.target.privilege)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Resolves the BMC, logs in and raises the session privilege.
    pub async fn connect(
        target: IpmiTarget,
        credentials: Credentials,
        options: IpmiOptions,
    ) -> Result<Self, BmcError> {
        let suites = options
            .cipher_suites
            .iter()
            .map(|&id| {
                CipherSuite::from_id(id).ok_or(BmcError::Unsupported {
                    provider: "ipmi",
                    capability: "cipher suites other than 17 and 3",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let peer = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|err| BmcError::Connection(format!("cannot resolve {}: {err}", target.host)))?
            .next()
            .ok_or_else(|| BmcError::Connection(format!("{} has no address", target.host)))?;
        let local: SocketAddr = if peer.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|err| BmcError::Connection(format!("cannot open a UDP socket: {err}")))?;
        // A connected socket only hears from the BMC and learns of ICMP port unreachable.
        socket
            .connect(peer)
            .await
            .map_err(|err| BmcError::Connection(format!("cannot reach {peer}: {err}")))?;
        let mut client = Client {
            socket,
            peer,
            credentials,
            suites,
            pacer: Pacer::new(peer, options.min_command_interval),
            options,
            target,
            session: None,
            last_answer: Instant::now(),
        };
        client.log_in().await?;
        Ok(client)
    }

    /// The cipher suite of the current session.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        self.session.as_ref().map(Session::cipher_suite)
    }

    /// Sends `request` and returns the BMC's response, whatever its completion code.
    ///
    /// Waits for the configured command spacing first, logs in again if the session sat
    /// idle too long, and retransmits lost datagrams. If an older session does not answer
    /// at all, Rivet logs in once more and resends: BMCs drop sessions silently.
    pub async fn execute(&mut self, request: &Request) -> Result<Response, BmcError> {
        let fresh = self.ensure_session().await?;
        self.pacer.wait().await;
        let result = self.transact(request).await;
        self.pacer.record(Instant::now());
        match result {
            Err(BmcError::Timeout(waited)) if !fresh => {
                tracing::debug!(
                    bmc = %self.peer,
                    command = request.name,
                    ?waited,
                    "no answer in an existing session; logging in again"
                );
                self.log_in().await?;
                let result = self.transact(request).await;
                self.pacer.record(Instant::now());
                result
            }
            other => other,
        }
    }

    /// Sends Close Session and waits briefly for the answer.
    pub async fn close(mut self) {
        if let Some(mut session) = self.session.take() {
            let datagram = session.close_datagram();
            if self.socket.send(&datagram).await.is_ok() {
                let mut buffer = [0u8; RECEIVE_BUFFER];
                let _ =
                    tokio::time::timeout(self.options.timeout, self.socket.recv(&mut buffer)).await;
            }
        }
    }

    async fn ensure_session(&mut self) -> Result<bool, BmcError> {
        if self.session.is_some() && self.last_answer.elapsed() < SESSION_IDLE_LIMIT {
            return Ok(false);
        }
        self.log_in().await?;
        Ok(true)
    }

    async fn log_in(&mut self) -> Result<(), BmcError> {
        if let Some(mut stale) = self.session.take() {
            // Free the BMC's session slot if it still holds one; do not wait for it.
            let _ = self.socket.send(&stale.close_datagram()).await;
        }
        let mut handshake = Handshake::new(
            self.credentials.clone(),
            self.target.privilege,
            self.suites.clone(),
            StdRng::from_os_rng(),
        )?;
        let mut datagram = handshake.datagram();
        let mut buffer = [0u8; RECEIVE_BUFFER];
        'step: loop {
            for attempt in 0..=self.options.retries {
                if attempt > 0 {
                    datagram = handshake.datagram();
                }
                self.send(&datagram).await?;
                let deadline = Instant::now() + self.attempt_timeout(attempt);
                while let Some(len) =
                    receive(&self.socket, self.peer, deadline, &mut buffer).await?
                {
                    match handshake.handle(&buffer[..len])? {
                        Progress::Send(next) => {
                            datagram = next;
                            continue 'step;
                        }
                        Progress::Ignored(reason) => {
                            tracing::debug!(bmc = %self.peer, step = handshake.step_name(), %reason, "ignored a datagram");
                        }
                        Progress::Established(session) => {
                            tracing::debug!(
                                bmc = %self.peer,
                                suite = session.cipher_suite().id(),
                                "logged in"
                            );
                            self.session = Some(*session);
                            self.last_answer = Instant::now();
                            return Ok(());
                        }
                    }
                }
            }
            tracing::debug!(bmc = %self.peer, step = handshake.step_name(), suite = ?handshake.cipher_suite(), "no answer during login");
            return Err(BmcError::Timeout(self.total_wait()));
        }
    }

    async fn transact(&mut self, request: &Request) -> Result<Response, BmcError> {
        let Some(session) = self.session.as_mut() else {
            return Err(BmcError::Protocol("no RMCP+ session is open".into()));
        };
        let rq_seq = session.next_rq_seq();
        let mut buffer = [0u8; RECEIVE_BUFFER];
        for attempt in 0..=self.options.retries {
            let datagram = session.seal(request, rq_seq);
            send(&self.socket, self.peer, &datagram).await?;
            let deadline = Instant::now() + attempt_timeout(&self.options, attempt);
            while let Some(len) = receive(&self.socket, self.peer, deadline, &mut buffer).await? {
                match session.open(&buffer[..len]) {
                    Ok(response)
                        if response.rq_seq == rq_seq && request.is_answered_by(&response) =>
                    {
                        self.last_answer = Instant::now();
                        return Ok(response);
                    }
                    Ok(stale) => tracing::debug!(
                        bmc = %self.peer,
                        rq_seq = stale.rq_seq,
                        "ignored a response to an earlier request"
                    ),
                    Err(err) => {
                        tracing::debug!(bmc = %self.peer, %err, "ignored a datagram");
                    }
                }
            }
            if attempt < self.options.retries {
                tracing::debug!(bmc = %self.peer, command = request.name, attempt, "no answer; retransmitting");
            }
        }
        // The BMC may have dropped the session; the next command logs in again.
        self.session = None;
        Err(BmcError::Timeout(self.total_wait()))
    }

    async fn send(&self, datagram: &[u8]) -> Result<(), BmcError> {
        send(&self.socket, self.peer, datagram).await
    }

    fn attempt_timeout(&self, attempt: u32) -> Duration {
        attempt_timeout(&self.options, attempt)
    }

    /// The time all attempts of one exchange wait together.
    fn total_wait(&self) -> Duration {
        (0..=self.options.retries)
            .map(|attempt| self.attempt_timeout(attempt))
            .sum()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut session) = self.session.take() {
            // Best effort and non-blocking: the BMC frees the slot, or times it out later.
            let _ = self.socket.try_send(&session.close_datagram());
        }
    }
}

fn attempt_timeout(options: &IpmiOptions, attempt: u32) -> Duration {
    options.timeout.saturating_mul(attempt.saturating_add(1))
}

async fn send(socket: &UdpSocket, peer: SocketAddr, datagram: &[u8]) -> Result<(), BmcError> {
    socket
        .send(datagram)
        .await
        .map(drop)
        .map_err(|err| io_error(peer, &err))
}

/// The next datagram from the BMC, or `None` once `deadline` passes.
async fn receive(
    socket: &UdpSocket,
    peer: SocketAddr,
    deadline: Instant,
    buffer: &mut [u8],
) -> Result<Option<usize>, BmcError> {
    match tokio::time::timeout_at(deadline, socket.recv(buffer)).await {
        Err(_elapsed) => Ok(None),
        Ok(Ok(len)) => Ok(Some(len)),
        Ok(Err(err)) => Err(io_error(peer, &err)),
    }
}

fn io_error(peer: SocketAddr, err: &io::Error) -> BmcError {
    if err.kind() == io::ErrorKind::ConnectionRefused {
        BmcError::Connection(format!(
            "{peer} refused the datagram (ICMP port unreachable): nothing serves IPMI over LAN there"
        ))
    } else {
        BmcError::Connection(format!("UDP to {peer}: {err}"))
    }
}

/// When the last command to each BMC ended, shared by every client in the process, so the
/// spacing holds however many providers talk to one BMC (Ironic keeps the same table).
static LAST_COMMAND: LazyLock<Mutex<HashMap<SocketAddr, Instant>>> = LazyLock::new(Mutex::default);

/// Keeps a minimum interval between the end of one command to a BMC and the start of the
/// next.
#[derive(Debug)]
struct Pacer {
    peer: SocketAddr,
    interval: Duration,
}

impl Pacer {
    fn new(peer: SocketAddr, interval: Duration) -> Self {
        Pacer { peer, interval }
    }

    /// When the next command may start; `None` if no command has gone to this BMC yet.
    fn ready_at(&self) -> Option<Instant> {
        let table = LAST_COMMAND.lock().unwrap_or_else(PoisonError::into_inner);
        table.get(&self.peer).map(|done| *done + self.interval)
    }

    fn record(&self, done: Instant) {
        let mut table = LAST_COMMAND.lock().unwrap_or_else(PoisonError::into_inner);
        let last = table.entry(self.peer).or_insert(done);
        *last = (*last).max(done);
    }

    async fn wait(&self) {
        if let Some(ready) = self.ready_at() {
            tokio::time::sleep_until(ready).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_is_per_bmc_and_shared_by_every_client() {
        let bmc: SocketAddr = "192.0.2.1:623".parse().unwrap();
        let other: SocketAddr = "192.0.2.2:623".parse().unwrap();
        let first = Pacer::new(bmc, Duration::from_secs(5));
        let second = Pacer::new(bmc, Duration::from_secs(5));
        assert_eq!(first.ready_at(), None, "the first command goes at once");
        let done = Instant::now();
        first.record(done);
        assert_eq!(second.ready_at(), Some(done + Duration::from_secs(5)));
        first.record(done - Duration::from_secs(1));
        assert_eq!(
            second.ready_at(),
            Some(done + Duration::from_secs(5)),
            "never backwards"
        );
        assert_eq!(Pacer::new(other, Duration::from_secs(5)).ready_at(), None);
    }

    #[test]
    fn each_retransmission_waits_longer() {
        let options = IpmiOptions {
            timeout: Duration::from_millis(300),
            retries: 2,
            ..IpmiOptions::default()
        };
        let waits: Vec<_> = (0..=options.retries)
            .map(|attempt| attempt_timeout(&options, attempt))
            .collect();
        assert_eq!(waits, [300, 600, 900].map(Duration::from_millis).to_vec());
    }
}
