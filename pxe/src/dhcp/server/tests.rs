use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
    relay::{RelayAgentInformation, RelayInfo},
};
use dhcproto::{Decodable, Encodable};

use super::*;
use crate::hosts::HostTable;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn config(mode: DhcpMode) -> DhcpConfig {
    DhcpConfig {
        mode,
        server: SERVER,
        subnet: Subnet::containing(SERVER, 24),
        pool: AddressPool::new(Ipv4Addr::new(10, 99, 0, 100), Ipv4Addr::new(10, 99, 0, 103)),
        router: Some(SERVER),
        dns: vec![Ipv4Addr::new(10, 99, 0, 53)],
        lease_time: Duration::from_secs(3600),
        offer_hold: Duration::from_secs(30),
        decline_hold: Duration::from_secs(600),
        boot_files: BootFiles::default(),
        http: "http://10.99.0.1:8080".parse().unwrap(),
    }
}

fn table(json: &str) -> HostTable {
    HostTable::from_json(json).unwrap()
}

const HOSTS: &str = r#"{
  "unknown": "address",
  "agent": {"kernel": "vmlinuz", "initrds": ["initrd.img"]},
  "hosts": [
    {"mac": "52:54:00:00:00:01", "boot": "agent", "ipv4": "10.99.0.11", "hostname": "node-1"},
    {"mac": "52:54:00:00:00:02", "boot": "local_disk"},
    {"mac": "52:54:00:00:00:03", "boot": "ignore"},
    {"mac": "52:54:00:00:00:04", "boot": "agent", "ipv4": "10.99.0.102"}
  ]
}"#;

fn mac(last: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, last]
}

/// A client request under construction.
struct Request(Message);

impl Request {
    fn new(last: u8, kind: MessageType) -> Self {
        let mut message = Message::new_with_id(
            0x1234_0000 + u32::from(last),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac(last),
        );
        message.opts_mut().insert(DhcpOption::MessageType(kind));
        Self(message)
    }

    fn pxe(mut self, arch: u16) -> Self {
        let class = format!("PXEClient:Arch:{arch:05}:UNDI:002001");
        self.0
            .opts_mut()
            .insert(DhcpOption::ClassIdentifier(class.into_bytes()));
        self.0
            .opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
                arch,
            )));
        self.0
            .opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(vec![0, 7, 7, 7]));
        self
    }

    fn http_boot(mut self) -> Self {
        self.0.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
        ));
        self.0
            .opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(Architecture::from(16)));
        self
    }

    fn ipxe(mut self) -> Self {
        self = self.pxe(7);
        self.0
            .opts_mut()
            .insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        self.0
            .opts_mut()
            .insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::Unknown(175),
                vec![19, 1, 1],
            )));
        self
    }

    fn option(mut self, option: DhcpOption) -> Self {
        self.0.opts_mut().insert(option);
        self
    }

    fn server_id(self, server: Ipv4Addr) -> Self {
        self.option(DhcpOption::ServerIdentifier(server))
    }

    fn requested(self, address: Ipv4Addr) -> Self {
        self.option(DhcpOption::RequestedIpAddress(address))
    }

    fn ciaddr(mut self, address: Ipv4Addr) -> Self {
        self.0.set_ciaddr(address);
        self
    }

    fn relayed(mut self, relay: Ipv4Addr) -> Self {
        self.0.set_giaddr(relay);
        let mut info = RelayAgentInformation::default();
        info.insert(RelayInfo::AgentCircuitId(b"port-7".to_vec()));
        self.0
            .opts_mut()
            .insert(DhcpOption::RelayAgentInformation(info));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.to_vec().unwrap()
    }
}

struct Harness {
    server: DhcpServer,
    hosts: HostTable,
    now: u64,
}

impl Harness {
    fn new(mode: DhcpMode, hosts: &str) -> Self {
        Self {
            server: DhcpServer::new(config(mode), []),
            hosts: table(hosts),
            now: 1_000_000,
        }
    }

    fn send_on(&mut self, request: &Request, port: ServerPort) -> Result<Handled, Silence> {
        let source = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        self.server
            .handle(&self.hosts, &request.bytes(), source, port, self.now)
    }

    fn send(&mut self, request: &Request) -> Result<Handled, Silence> {
        self.send_on(request, ServerPort::Dhcp)
    }

    /// The decoded reply, failing if there is none.
    fn reply(&mut self, request: &Request) -> (Message, Reply, Vec<LeaseRecord>) {
        let handled = self
            .send(request)
            .unwrap_or_else(|silence| panic!("no reply: {silence}"));
        let reply = handled.reply.expect("a reply");
        let message = Message::from_bytes(&reply.datagram).unwrap();
        (message, reply, handled.persist)
    }

    /// DISCOVER then REQUEST; returns the bound address.
    fn lease(&mut self, last: u8) -> Ipv4Addr {
        let (offer, _, _) = self.reply(&Request::new(last, MessageType::Discover));
        let (ack, _, persist) = self.reply(
            &Request::new(last, MessageType::Request)
                .server_id(SERVER)
                .requested(offer.yiaddr()),
        );
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(persist.len(), 1);
        ack.yiaddr()
    }
}

fn option(message: &Message, code: OptionCode) -> Option<&DhcpOption> {
    message.opts().get(code)
}

fn file(message: &Message) -> String {
    String::from_utf8(message.fname().unwrap_or_default().to_vec())
        .unwrap()
        .trim_end_matches('\0')
        .to_owned()
}

#[test]
fn a_known_bios_pxe_host_gets_its_fixed_address_and_undionly() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let (offer, reply, persist) = h.reply(&Request::new(1, MessageType::Discover).pxe(0));
    assert!(persist.is_empty(), "offers are not persisted");
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 99, 0, 11));
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(file(&offer), "undionly.kpxe");
    assert_eq!(reply.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(reply.from, ServerPort::Dhcp);
    assert_eq!(
        option(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        option(&offer, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(
        option(&offer, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(vec![0, 7, 7, 7]))
    );
    assert_eq!(
        option(&offer, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node-1".into()))
    );
    assert_eq!(
        option(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        option(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );

    let (ack, _, persist) = h.reply(
        &Request::new(1, MessageType::Request)
            .pxe(0)
            .server_id(SERVER)
            .requested(offer.yiaddr()),
    );
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), offer.yiaddr());
    assert_eq!(file(&ack), "undionly.kpxe");
    assert_eq!(persist.len(), 1);
    assert_eq!(persist[0].address, offer.yiaddr());
    assert_eq!(persist[0].lease.state, LeaseState::Bound);
    assert_eq!(persist[0].lease.expires, h.now + 3600);
}

#[test]
fn firmware_decides_the_boot_file_and_ipxe_gets_its_script() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let (offer, _, _) = h.reply(&Request::new(1, MessageType::Discover).pxe(7));
    assert_eq!(file(&offer), "snponly.efi");
    let (offer, _, _) = h.reply(&Request::new(1, MessageType::Discover).pxe(11));
    assert_eq!(file(&offer), "snponly-arm64.efi");

    let (offer, _, _) = h.reply(&Request::new(1, MessageType::Discover).ipxe());
    assert_eq!(
        file(&offer),
        "http://10.99.0.1:8080/boot/52-54-00-00-00-01.ipxe"
    );
    assert_eq!(
        option(&offer, OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(
            b"http://10.99.0.1:8080/boot/52-54-00-00-00-01.ipxe".to_vec()
        ))
    );
    // siaddr even for an http:// file: iPXE needs it to count the offer as complete.
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(option(&offer, OptionCode::TFTPServerName), None);

    let (offer, _, _) = h.reply(&Request::new(1, MessageType::Discover).http_boot());
    assert_eq!(file(&offer), "http://10.99.0.1:8080/ipxe/snponly.efi");
    assert_eq!(
        option(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert_eq!(option(&offer, OptionCode::VendorExtensions), None);

    // 32-bit UEFI has no build: an address, but no boot file.
    let (offer, _, _) = h.reply(&Request::new(1, MessageType::Discover).pxe(6));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 99, 0, 11));
    assert_eq!(option(&offer, OptionCode::BootfileName), None);
}

#[test]
fn local_disk_hosts_boot_through_ipxe_and_unknown_hosts_get_no_boot() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let (offer, _, _) = h.reply(&Request::new(2, MessageType::Discover).ipxe());
    assert!(file(&offer).ends_with("/boot/52-54-00-00-00-02.ipxe"));
    // Unknown under "address": an address from the pool, no boot information.
    let (offer, _, _) = h.reply(&Request::new(9, MessageType::Discover).pxe(0));
    assert!(
        config(DhcpMode::Authoritative)
            .pool
            .unwrap()
            .contains(offer.yiaddr())
    );
    assert_eq!(option(&offer, OptionCode::BootfileName), None);
    assert_eq!(file(&offer), "");
}

#[test]
fn ignored_and_unknown_hosts_get_silence() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    assert!(matches!(
        h.send(&Request::new(3, MessageType::Discover).pxe(0)),
        Err(Silence::NotForUs(_))
    ));
    let mut strict = Harness::new(
        DhcpMode::Authoritative,
        r#"{"hosts": [{"mac": "52:54:00:00:00:01", "boot": "local_disk"}]}"#,
    );
    assert!(
        strict
            .send(&Request::new(9, MessageType::Discover))
            .is_err()
    );
    // Without a pool, a known host without a fixed address gets nothing either.
    strict.server = DhcpServer::new(
        DhcpConfig {
            pool: None,
            ..config(DhcpMode::Authoritative)
        },
        [],
    );
    assert!(matches!(
        strict.send(&Request::new(1, MessageType::Discover)),
        Err(Silence::NoAddress(_))
    ));
}

#[test]
fn discovery_boots_unknown_hosts_into_the_default_agent() {
    let mut h = Harness::new(
        DhcpMode::Authoritative,
        r#"{"unknown": "discover", "agent": {"kernel": "k"}}"#,
    );
    let (offer, _, _) = h.reply(&Request::new(42, MessageType::Discover).pxe(0));
    assert_eq!(file(&offer), "undionly.kpxe");
}

#[test]
fn pool_addresses_are_unique_sticky_and_never_reserved_ones() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    // Pool .100-.103; .102 is host 4's fixed address and must never go to anyone else.
    let a = h.lease(20);
    let b = h.lease(21);
    let c = h.lease(22);
    let mut got = vec![a, b, c];
    got.sort();
    assert_eq!(
        got,
        [
            Ipv4Addr::new(10, 99, 0, 100),
            Ipv4Addr::new(10, 99, 0, 101),
            Ipv4Addr::new(10, 99, 0, 103)
        ]
    );
    // The pool is exhausted: a fourth client gets silence, not someone else's address.
    assert!(matches!(
        h.send(&Request::new(23, MessageType::Discover)),
        Err(Silence::NoAddress(_))
    ));
    // A returning client gets its address again.
    assert_eq!(h.lease(21), b);
}

#[test]
fn leases_survive_a_restart_through_their_records() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let a = h.lease(20);
    let records: Vec<_> = h.server.leases().records().collect();
    let mut restarted = Harness {
        server: DhcpServer::new(config(DhcpMode::Authoritative), records),
        hosts: table(HOSTS),
        now: h.now + 10,
    };
    // Another client cannot take it; the owner renews it.
    let other = restarted.lease(30);
    assert_ne!(other, a);
    let (ack, reply, _) = restarted.reply(&Request::new(20, MessageType::Request).ciaddr(a));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(reply.to, SocketAddrV4::new(a, 68), "renewals are unicast");
}

#[test]
fn declined_addresses_are_quarantined_and_the_client_moves_on() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let a = h.lease(20);
    let handled = h
        .send(
            &Request::new(20, MessageType::Decline)
                .server_id(SERVER)
                .requested(a),
        )
        .unwrap();
    assert!(handled.reply.is_none());
    assert_eq!(handled.persist[0].lease.state, LeaseState::Declined);
    let b = h.lease(20);
    assert_ne!(a, b);
    // Nobody gets it during the quarantine, even when the pool runs dry.
    h.lease(21);
    assert!(h.send(&Request::new(22, MessageType::Discover)).is_err());
    h.now += 601;
    assert_eq!(h.lease(22), a);
}

#[test]
fn a_fixed_address_declined_or_taken_is_not_offered() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let fixed = h.lease(1);
    assert_eq!(fixed, Ipv4Addr::new(10, 99, 0, 11));
    h.send(
        &Request::new(1, MessageType::Decline)
            .server_id(SERVER)
            .requested(fixed),
    )
    .unwrap();
    assert!(matches!(
        h.send(&Request::new(1, MessageType::Discover)),
        Err(Silence::NoAddress(_))
    ));
}

#[test]
fn released_addresses_return_to_the_pool() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let a = h.lease(20);
    h.lease(21);
    h.lease(22);
    let handled = h
        .send(
            &Request::new(20, MessageType::Release)
                .server_id(SERVER)
                .ciaddr(a),
        )
        .unwrap();
    assert_eq!(handled.persist[0].lease.state, LeaseState::Released);
    assert_eq!(h.lease(23), a);
    // A release for an address one does not hold changes nothing.
    assert!(
        h.send(
            &Request::new(21, MessageType::Release)
                .server_id(SERVER)
                .ciaddr(a)
        )
        .is_err()
    );
}

#[test]
fn requests_for_unavailable_addresses_are_refused_or_ignored() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let a = h.lease(20);
    // INIT-REBOOT asking for someone else's address in our subnet: NAK, broadcast.
    let (nak, reply, persist) = h.reply(&Request::new(21, MessageType::Request).requested(a));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(persist.is_empty());
    // A known host asking for an address other than its fixed one: NAK.
    let (nak, _, _) =
        h.reply(&Request::new(1, MessageType::Request).requested(Ipv4Addr::new(10, 99, 0, 50)));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    // An address from another network: another server's business.
    assert!(matches!(
        h.send(&Request::new(21, MessageType::Request).requested(Ipv4Addr::new(192, 168, 1, 5))),
        Err(Silence::NotForUs(_))
    ));
    // INIT-REBOOT for a free pool address: adopted (the server is authoritative).
    let (ack, _, persist) =
        h.reply(&Request::new(21, MessageType::Request).requested(Ipv4Addr::new(10, 99, 0, 103)));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(persist.len(), 1);
}

#[test]
fn choosing_another_server_withdraws_our_offer() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let (offer, _, _) = h.reply(&Request::new(20, MessageType::Discover));
    assert!(h.server.leases().get(offer.yiaddr()).is_some());
    assert!(
        h.send(
            &Request::new(20, MessageType::Request)
                .server_id(Ipv4Addr::new(10, 99, 0, 254))
                .requested(offer.yiaddr())
        )
        .is_err()
    );
    assert!(h.server.leases().get(offer.yiaddr()).is_none());
}

#[test]
fn inform_gets_parameters_without_a_lease() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let address = Ipv4Addr::new(10, 99, 0, 77);
    let (ack, reply, persist) = h.reply(&Request::new(20, MessageType::Inform).ciaddr(address));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(option(&ack, OptionCode::AddressLeaseTime), None);
    assert!(option(&ack, OptionCode::SubnetMask).is_some());
    assert_eq!(reply.to, SocketAddrV4::new(address, 68));
    assert!(persist.is_empty());
}

#[test]
fn relayed_requests_are_answered_through_the_relay_with_option_82_last() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let relay = Ipv4Addr::new(10, 99, 0, 254);
    let (offer, reply, _) = h.reply(&Request::new(20, MessageType::Discover).relayed(relay));
    assert_eq!(reply.to, SocketAddrV4::new(relay, 67));
    assert_eq!(offer.giaddr(), relay);
    assert!(option(&offer, OptionCode::RelayAgentInformation).is_some());
    // On the wire, option 82 comes last, just before the end marker.
    let bytes = &reply.datagram;
    let mut at = 240;
    let mut last_code = 0;
    while bytes[at] != 255 {
        last_code = bytes[at];
        at += 2 + usize::from(bytes[at + 1]);
    }
    assert_eq!(last_code, 82);
    // A relay from a subnet we have no pool for: only fixed addresses can be given.
    let far = Ipv4Addr::new(172, 16, 0, 1);
    assert!(matches!(
        h.send(&Request::new(20, MessageType::Discover).relayed(far)),
        Err(Silence::NoAddress(_))
    ));
    let (offer, reply, _) = h.reply(&Request::new(1, MessageType::Discover).relayed(far));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 99, 0, 11));
    assert_eq!(reply.to, SocketAddrV4::new(far, 67));
}

#[test]
fn proxy_mode_offers_boot_information_only_to_boot_clients() {
    let mut h = Harness::new(DhcpMode::Proxy, HOSTS);
    let (offer, reply, persist) = h.reply(&Request::new(1, MessageType::Discover).pxe(0));
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(
        offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "no address from a proxy"
    );
    assert_eq!(option(&offer, OptionCode::AddressLeaseTime), None);
    assert_eq!(option(&offer, OptionCode::SubnetMask), None);
    assert_eq!(file(&offer), "undionly.kpxe");
    assert_eq!(reply.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(persist.is_empty());
    // Operating-system clients, REQUESTs on 67, and hosts without boot get nothing.
    assert!(h.send(&Request::new(1, MessageType::Discover)).is_err());
    assert!(
        h.send(
            &Request::new(1, MessageType::Request)
                .pxe(0)
                .server_id(SERVER)
        )
        .is_err()
    );
    assert!(
        h.send(&Request::new(3, MessageType::Discover).pxe(0))
            .is_err()
    );
    assert!(
        h.send(&Request::new(9, MessageType::Discover).pxe(0))
            .is_err()
    );
    assert!(h.server.leases().is_empty());

    // Port 4011: the boot file, back to where the request came from.
    let client = Ipv4Addr::new(10, 99, 0, 150);
    let source = SocketAddrV4::new(client, 4011);
    let request = Request::new(1, MessageType::Request).pxe(7).ciaddr(client);
    let handled = h
        .server
        .handle(
            &h.hosts,
            &request.bytes(),
            source,
            ServerPort::ProxyBoot,
            h.now,
        )
        .unwrap();
    let reply = handled.reply.unwrap();
    assert_eq!((reply.to, reply.from), (source, ServerPort::ProxyBoot));
    let ack = Message::from_bytes(&reply.datagram).unwrap();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.ciaddr(), client);
    assert_eq!(file(&ack), "snponly.efi");
}

#[test]
fn broadcast_flag_is_kept_and_naks_through_relays_set_it() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let mut request = Request::new(20, MessageType::Discover);
    request.0.set_flags(Flags::default().set_broadcast());
    let (offer, _, _) = h.reply(&request);
    assert!(offer.flags().broadcast());
    let (nak, reply, _) = h.reply(
        &Request::new(1, MessageType::Request)
            .requested(Ipv4Addr::new(10, 99, 0, 50))
            .relayed(Ipv4Addr::new(10, 99, 0, 254)),
    );
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert!(nak.flags().broadcast());
    assert_eq!(reply.to.port(), 67);
}

#[test]
fn malformed_and_bootp_packets_get_silence() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let source = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    assert!(matches!(
        h.server
            .handle(&h.hosts, &[1; 10], source, ServerPort::Dhcp, h.now),
        Err(Silence::Malformed(_))
    ));
    let mut bootp = Request::new(20, MessageType::Discover);
    bootp.0.opts_mut().remove(OptionCode::MessageType);
    assert_eq!(h.send(&bootp), Err(Silence::Bootp));
}

#[test]
fn exchanges_say_who_asked_what_they_were_given_and_what_to_load_next() {
    let mut h = Harness::new(DhcpMode::Authoritative, HOSTS);
    let source = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    let exchange = |h: &mut Harness, request: &Request| {
        h.server
            .exchange(&h.hosts, &request.bytes(), source, ServerPort::Dhcp, h.now)
    };
    let known = MacAddr::new(mac(1));

    let offer = exchange(&mut h, &Request::new(1, MessageType::Discover).pxe(0));
    assert_eq!(
        offer.request,
        Some(RequestSeen {
            mac: Some(known),
            message: MessageType::Discover,
            address: None,
        })
    );
    let reply = offer.result.unwrap().reply.unwrap();
    assert_eq!(reply.address, Some(Ipv4Addr::new(10, 99, 0, 11)));
    assert_eq!(reply.boot, Some(BootOffered::IpxeOverTftp));

    // iPXE asking again is given its script; the REQUEST claims the address.
    let ack = exchange(
        &mut h,
        &Request::new(1, MessageType::Request)
            .ipxe()
            .server_id(SERVER)
            .requested(Ipv4Addr::new(10, 99, 0, 11)),
    );
    assert_eq!(
        ack.request.map(|seen| seen.address),
        Some(Some(Ipv4Addr::new(10, 99, 0, 11)))
    );
    let reply = ack.result.unwrap().reply.unwrap();
    assert_eq!(reply.kind, MessageType::Ack);
    assert_eq!(reply.boot, Some(BootOffered::Script));

    let http = exchange(&mut h, &Request::new(4, MessageType::Discover).http_boot());
    assert_eq!(
        http.result.unwrap().reply.unwrap().boot,
        Some(BootOffered::IpxeOverHttp)
    );
    // An operating system's DHCP client gets an address and nothing to load.
    let plain = exchange(&mut h, &Request::new(2, MessageType::Discover));
    assert_eq!(plain.result.unwrap().reply.unwrap().boot, None);

    // Silence still says who it was for.
    let ignored = exchange(&mut h, &Request::new(3, MessageType::Discover).pxe(0));
    assert_eq!(
        ignored.request.and_then(|seen| seen.mac),
        Some(MacAddr::new(mac(3)))
    );
    assert_eq!(
        ignored.result,
        Err(Silence::NotForUs("the host table says to ignore this host"))
    );
    // Garbage has no sender to report.
    let garbage = h
        .server
        .exchange(&h.hosts, &[1; 10], source, ServerPort::Dhcp, h.now);
    assert_eq!(garbage.request, None);
    assert!(garbage.result.is_err());
}
