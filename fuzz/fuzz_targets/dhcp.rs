//! The DHCP core on arbitrary datagrams, in both modes and on both ports: it must never
//! panic, every reply must decode, and no address outside what it may give is offered.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::Duration;

use dhcproto::Decodable;
use dhcproto::v4::Message;
use libfuzzer_sys::fuzz_target;
use rivet_pxe::HostTable;
use rivet_pxe::dhcp::{
    AddressPool, BootFiles, DhcpConfig, DhcpMode, DhcpServer, ServerPort, Subnet,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn config(mode: DhcpMode) -> DhcpConfig {
    DhcpConfig {
        mode,
        server: SERVER,
        subnet: Subnet::containing(SERVER, 24),
        pool: AddressPool::new(Ipv4Addr::new(10, 99, 0, 100), Ipv4Addr::new(10, 99, 0, 110)),
        router: Some(SERVER),
        dns: vec![SERVER],
        lease_time: Duration::from_secs(600),
        offer_hold: Duration::from_secs(30),
        decline_hold: Duration::from_secs(60),
        boot_files: BootFiles::default(),
        http: "http://10.99.0.1:8080".parse().expect("a valid literal"),
    }
}

fn hosts() -> &'static HostTable {
    static HOSTS: OnceLock<HostTable> = OnceLock::new();
    HOSTS.get_or_init(|| {
        HostTable::from_json(
            r#"{"unknown": "discover", "agent": {"kernel": "k", "initrds": ["i"]},
                "hosts": [{"mac": "52:54:00:00:00:01", "boot": "agent", "ipv4": "10.99.0.11"},
                          {"mac": "52:54:00:00:00:02", "boot": "local_disk"},
                          {"mac": "52:54:00:00:00:03", "boot": "ignore"}]}"#,
        )
        .expect("a valid literal table")
    })
}

/// A well-formed header for one of the table's hosts (or an unknown one) followed by the
/// fuzzed bytes as options, so the fuzzer spends its time past the structural checks.
fn framed(data: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 240];
    packet[0] = 1;
    packet[1] = 1;
    packet[2] = 6;
    let host = data.first().copied().unwrap_or(0) % 5;
    packet[28..34].copy_from_slice(&[0x52, 0x54, 0, 0, 0, host]);
    packet[236..240].copy_from_slice(&[99, 130, 83, 99]);
    packet.extend_from_slice(data.get(1..).unwrap_or_default());
    packet
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    exercise(&framed(data));
});

fn exercise(data: &[u8]) {
    let source = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 50), 68);
    for mode in [DhcpMode::Authoritative, DhcpMode::Proxy] {
        let mut server = DhcpServer::new(config(mode), []);
        for port in [ServerPort::Dhcp, ServerPort::ProxyBoot] {
            // Twice: the second time sees the state the first left.
            for now in [1_000, 2_000] {
                let Ok(handled) = server.handle(hosts(), data, source, port, now) else {
                    continue;
                };
                if let Some(reply) = handled.reply {
                    let message = Message::from_bytes(&reply.datagram).expect("replies decode");
                    let yiaddr = message.yiaddr();
                    let allowed = yiaddr.is_unspecified()
                        || yiaddr == Ipv4Addr::new(10, 99, 0, 11)
                        || (Ipv4Addr::new(10, 99, 0, 100)..=Ipv4Addr::new(10, 99, 0, 110))
                            .contains(&yiaddr);
                    assert!(allowed, "offered {yiaddr}");
                }
                for record in handled.persist {
                    assert!(record.address != SERVER);
                }
            }
        }
    }
}
