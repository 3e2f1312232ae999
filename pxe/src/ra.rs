//! IPv6 router advertisements that end iPXE's IPv6 autoconfiguration at once.
//!
//! iPXE configures IPv6 alongside DHCPv4 and, on a segment without an IPv6 router, waits
//! for a router advertisement for about 13 seconds before giving up, on every boot. iPXE
//! finishes IPv6 autoconfiguration on the first advertisement it receives while soliciting;
//! one with the "managed" and "other" flags clear and no prefix tells it there is nothing
//! to configure. Router lifetime 0 says "not a default router", so operating systems on the
//! segment do not route through us either.

use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::mac::MacAddr;

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// RFC 4861 §10: solicited advertisements to all-nodes at most this often.
const MIN_GAP: Duration = Duration::from_millis(300);

/// A router advertisement (RFC 4861 §4.2): hop limit 64, no flags, router lifetime 0, no
/// prefixes; with our link-layer address when known. The kernel fills in the checksum.
pub fn router_advertisement(link_address: Option<MacAddr>) -> Vec<u8> {
    let mut packet = vec![
        ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0,  // checksum
        64, // current hop limit
        0,  // M and O flags clear: nothing to get from DHCPv6
        0,
        0, // router lifetime: not a default router
        0,
        0,
        0,
        0, // reachable time: unspecified
        0,
        0,
        0,
        0, // retransmission timer: unspecified
    ];
    if let Some(mac) = link_address {
        // Source link-layer address option: type 1, length 1 (8 octets).
        packet.extend_from_slice(&[1, 1]);
        packet.extend_from_slice(&mac.octets());
    }
    packet
}

/// Whether an ICMPv6 message (without its IPv6 header) is a router solicitation.
pub fn is_router_solicitation(message: &[u8]) -> bool {
    message.len() >= 8 && message[0] == ROUTER_SOLICITATION && message[1] == 0
}

/// Answers router solicitations on `interface` and advertises every `interval`, until the
/// returned future is dropped.
///
/// The raw ICMPv6 socket is served by a blocking thread: registering an arbitrary file
/// descriptor with tokio needs `unsafe` (tokio's `AsyncFd::register`), and one thread for
/// a packet every few seconds costs nothing.
pub async fn advertise(
    interface: &str,
    index: u32,
    link_address: Option<MacAddr>,
    interval: Duration,
) -> io::Result<()> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(index)?;
    socket.set_multicast_loop_v6(false)?;
    socket.join_multicast_v6(&ALL_ROUTERS, index)?;
    socket.set_read_timeout(Some(Duration::from_millis(250)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let interface = interface.to_owned();
    tracing::info!(%interface, "answering IPv6 router solicitations (no prefix, not a default router)");
    tokio::task::spawn_blocking(move || {
        serve_solicitations(&socket, &interface, index, link_address, interval, &stop)
    })
    .await
    .map_err(io::Error::other)?
}

fn serve_solicitations(
    socket: &Socket,
    interface: &str,
    index: u32,
    link_address: Option<MacAddr>,
    interval: Duration,
    stop: &AtomicBool,
) -> io::Result<()> {
    let advertisement = router_advertisement(link_address);
    let destination = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, index));
    let mut last_sent: Option<Instant> = None;
    let mut next_periodic = Instant::now();
    let mut buffer = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let due = Instant::now() >= next_periodic;
        let solicited = match (&*socket).read(&mut buffer) {
            Ok(len) => is_router_solicitation(&buffer[..len]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                false
            }
            Err(err) => return Err(err),
        };
        if !(due || solicited) {
            continue;
        }
        if let Some(last) = last_sent
            && last.elapsed() < MIN_GAP
        {
            std::thread::sleep(MIN_GAP - last.elapsed());
        }
        match socket.send_to(&advertisement, &destination) {
            Ok(_) => {
                last_sent = Some(Instant::now());
                next_periodic = Instant::now() + interval;
                if solicited {
                    tracing::debug!(%interface, "answered a router solicitation");
                }
            }
            // Typically the interface's link-local address is still tentative (DAD); retry
            // at the next solicitation or tick.
            Err(err) => {
                tracing::debug!(%interface, error = %err, "router advertisement not sent yet");
                next_periodic = Instant::now() + Duration::from_secs(1);
            }
        }
    }
    Ok(())
}

/// Tells the blocking thread to stop when the async side goes away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_offers_nothing_to_configure() {
        let mac: MacAddr = "52:54:00:aa:bb:cc".parse().unwrap();
        let packet = router_advertisement(Some(mac));
        assert_eq!(packet.len(), 24);
        assert_eq!(packet[0], 134);
        assert_eq!(packet[5], 0, "M and O flags clear");
        assert_eq!(&packet[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&packet[16..18], &[1, 1]);
        assert_eq!(&packet[18..], &mac.octets());
        assert_eq!(router_advertisement(None).len(), 16);
    }

    #[test]
    fn solicitations_are_recognised() {
        assert!(is_router_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[133, 0, 0]));
        assert!(!is_router_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0]));
    }
}
