use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which datagrams a [`LossyRelay`] mistreats, counted separately in each direction
/// (1st, 2nd, 3rd… datagram from the client; 1st, 2nd… from the server). Zero means never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop every n-th datagram (`1` drops everything).
    pub drop_every: u32,
    /// Send every n-th forwarded datagram twice.
    pub duplicate_every: u32,
    /// Hold every n-th forwarded datagram back until the next one in the same direction has
    /// passed (so the two arrive swapped), or for 150 ms if none follows.
    pub delay_every: u32,
}

/// What a relay did so far, both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub forwarded: u32,
    pub dropped: u32,
    pub duplicated: u32,
    pub delayed: u32,
}

/// A UDP relay on 127.0.0.1 between one client and one server that drops, duplicates and
/// reorders datagrams on a fixed, counted schedule.
///
/// **Test-only fault injector.** Real peers (ipmi_sim, pyghmi) never lose packets on
/// loopback, and a lossy network is the fault IPMI clients must survive, so this is the one
/// place where the tests stand something of their own between two real programs. The
/// schedule counts datagrams instead of rolling dice, so a run is reproducible.
#[derive(Debug)]
pub struct LossyRelay {
    addr: SocketAddr,
    server_side: UdpSocket,
    faults: Arc<Mutex<Faults>>,
    stats: Arc<Mutex<RelayStats>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl LossyRelay {
    /// Starts relaying between whoever sends to [`LossyRelay::addr`] and `server`.
    pub fn start(server: SocketAddr, faults: Faults) -> Self {
        let client_side = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay");
        let server_side = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay");
        server_side
            .connect(server)
            .expect("connect the relay to the server");
        for socket in [&client_side, &server_side] {
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("set a read timeout");
        }
        let addr = client_side.local_addr().expect("relay address");
        let faults = Arc::new(Mutex::new(faults));
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();

        let upstream = {
            let receive = client_side.try_clone().expect("clone socket");
            let send = server_side.try_clone().expect("clone socket");
            let client = Arc::clone(&client);
            let mut direction = Direction::new(&faults, &stats, &stop);
            std::thread::spawn(move || {
                direction.run(
                    || {
                        let mut buffer = [0u8; 4096];
                        let (len, from) = receive.recv_from(&mut buffer).ok()?;
                        *client.lock().expect("relay lock") = Some(from);
                        Some(buffer[..len].to_vec())
                    },
                    |datagram| {
                        let _ = send.send(datagram);
                    },
                );
            })
        };
        let server_side_handle = server_side.try_clone().expect("clone socket");
        let downstream = {
            let receive = server_side;
            let send = client_side;
            let mut direction = Direction::new(&faults, &stats, &stop);
            std::thread::spawn(move || {
                direction.run(
                    || {
                        let mut buffer = [0u8; 4096];
                        let len = receive.recv(&mut buffer).ok()?;
                        Some(buffer[..len].to_vec())
                    },
                    |datagram| {
                        if let Some(client) = *client.lock().expect("relay lock") {
                            let _ = send.send_to(datagram, client);
                        }
                    },
                );
            })
        };
        Self {
            addr,
            server_side: server_side_handle,
            faults,
            stats,
            stop,
            threads: vec![upstream, downstream],
        }
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends everything from now on to `server` instead, as if the BMC had restarted and
    /// forgotten its sessions.
    pub fn redirect(&self, server: SocketAddr) {
        self.server_side
            .connect(server)
            .expect("connect the relay to the new server");
    }

    /// Changes the schedule from now on (counters keep running).
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("relay lock") = faults;
    }

    pub fn stats(&self) -> RelayStats {
        *self.stats.lock().expect("relay lock")
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One direction of the relay: counts datagrams and applies the schedule.
struct Direction {
    faults: Arc<Mutex<Faults>>,
    stats: Arc<Mutex<RelayStats>>,
    stop: Arc<AtomicBool>,
    count: u32,
    forwarded: u32,
    held: Option<(Vec<u8>, Instant)>,
}

const HOLD_AT_MOST: Duration = Duration::from_millis(150);

impl Direction {
    fn new(
        faults: &Arc<Mutex<Faults>>,
        stats: &Arc<Mutex<RelayStats>>,
        stop: &Arc<AtomicBool>,
    ) -> Self {
        Self {
            faults: Arc::clone(faults),
            stats: Arc::clone(stats),
            stop: Arc::clone(stop),
            count: 0,
            forwarded: 0,
            held: None,
        }
    }

    fn run(&mut self, mut receive: impl FnMut() -> Option<Vec<u8>>, mut send: impl FnMut(&[u8])) {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(datagram) = receive() else {
                if let Some((held, since)) = self.held.take() {
                    if since.elapsed() >= HOLD_AT_MOST {
                        send(&held);
                    } else {
                        self.held = Some((held, since));
                    }
                }
                continue;
            };
            let faults = *self.faults.lock().expect("relay lock");
            self.count += 1;
            let mut stats = self.stats.lock().expect("relay lock");
            if hits(faults.drop_every, self.count) {
                stats.dropped += 1;
                continue;
            }
            self.forwarded += 1;
            stats.forwarded += 1;
            if hits(faults.delay_every, self.forwarded) && self.held.is_none() {
                stats.delayed += 1;
                self.held = Some((datagram, Instant::now()));
                continue;
            }
            send(&datagram);
            if hits(faults.duplicate_every, self.forwarded) {
                stats.duplicated += 1;
                send(&datagram);
            }
            if let Some((held, _)) = self.held.take() {
                send(&held);
            }
        }
    }
}

fn hits(every: u32, count: u32) -> bool {
    every != 0 && count.is_multiple_of(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_drops_and_reorders_on_schedule() {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let relay = LossyRelay::start(
            server.local_addr().unwrap(),
            Faults {
                drop_every: 3,
                delay_every: 4,
                ..Faults::default()
            },
        );
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for n in 1..=6u8 {
            client.send_to(&[n], relay.addr()).unwrap();
            // Keep the order of arrival at the relay deterministic.
            std::thread::sleep(Duration::from_millis(30));
        }
        let mut seen = Vec::new();
        let mut buffer = [0u8; 8];
        while let Ok(len) = server.recv(&mut buffer) {
            seen.push(buffer[..len].to_vec());
            if seen.len() == 4 {
                break;
            }
        }
        // 3 and 6 dropped; 5 is the 4th forwarded, held until 150 ms pass.
        assert_eq!(seen, [vec![1], vec![2], vec![4], vec![5]]);
        let stats = relay.stats();
        assert_eq!((stats.dropped, stats.delayed), (2, 1));
    }
}
