//! The DHCPv4 server core: a request and the time in; a reply and the lease changes to make
//! durable out. No sockets, no clock, no files.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dhcproto::Encodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};

use super::client::{BootClient, ClientInfo, Firmware};
use super::leases::{AddressPool, Lease, LeaseRecord, LeaseState, LeaseTable};
use super::wire::{Malformed, decode_request};
use crate::cmdline::RelativePath;
use crate::hosts::{BootAction, Host, HostTable, Lookup, UnknownPolicy, prefix_to_mask};
use crate::ipxe::HttpBase;
use crate::mac::MacAddr;
use crate::observe::BootOffered;

/// PXE vendor options (option 43) sent with every PXE boot offer: sub-option 6,
/// PXE_DISCOVERY_CONTROL, with bit 3 set ("a boot file name is present: download it, no
/// boot-server discovery, no menu"). Without option 43, EDK2 classifies an offer carrying
/// "PXEClient" as a BINL offer and asks port 4011 again, and iPXE sends a ProxyDHCPREQUEST.
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// How the DHCP service takes part on the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// ProxyDHCP (PXE spec): answer network-boot clients with boot information only, on
    /// ports 67 and 4011; another server hands out addresses.
    Proxy,
    /// Hand out addresses (fixed ones from the host table, and an optional pool) with the
    /// boot information.
    Authoritative,
}

/// The iPXE builds handed to firmware that is not yet running iPXE, by architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    /// x86 BIOS (Debian: `undionly.kpxe`).
    pub bios: RelativePath,
    /// x86-64 UEFI (Debian: `snponly.efi`; its `ipxe.efi` is a symlink to `/boot`, which
    /// root confinement refuses).
    pub efi_x64: RelativePath,
    /// 64-bit ARM UEFI (not in Debian's x86 `ipxe` package; supply your own build).
    pub efi_arm64: RelativePath,
}

impl Default for BootFiles {
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        let name = |name: &str| {
            name.parse::<RelativePath>()
                .expect("the default file names are plain relative paths")
        };
        Self {
            bios: name("undionly.kpxe"),
            efi_x64: name("snponly.efi"),
            efi_arm64: name("snponly-arm64.efi"),
        }
    }
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    /// The subnet `address/prefix_len` belongs to.
    pub fn containing(address: Ipv4Addr, prefix_len: u8) -> Self {
        let mask = u32::from(prefix_to_mask(prefix_len));
        Self {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix_len: prefix_len.min(32),
        }
    }

    pub fn mask(&self) -> Ipv4Addr {
        prefix_to_mask(self.prefix_len)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & u32::from(self.mask()) == u32::from(self.network)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.mask()))
    }
}

/// Everything the DHCP core needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// Our address on the served segment: server identifier, next server (siaddr).
    pub server: Ipv4Addr,
    /// The served subnet (pool addresses come from it).
    pub subnet: Subnet,
    /// Addresses for hosts without a fixed one (authoritative mode).
    pub pool: Option<AddressPool>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_time: Duration,
    /// How long an offered address is held for the client's REQUEST.
    pub offer_hold: Duration,
    /// How long a declined address is kept out of use.
    pub decline_hold: Duration,
    pub boot_files: BootFiles,
    /// Where iPXE fetches scripts and UEFI HTTP clients fetch iPXE.
    pub http: HttpBase,
}

/// The server port a datagram arrived on, or a reply leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPort {
    /// 67.
    Dhcp,
    /// 4011, where PXE clients send ProxyDHCP requests.
    ProxyBoot,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: SocketAddrV4,
    pub from: ServerPort,
    pub datagram: Vec<u8>,
    /// What kind of reply it is, for logs.
    pub kind: MessageType,
    /// The address it gives (`yiaddr`), if any.
    pub address: Option<Ipv4Addr>,
    /// What it tells the client to load next, if anything.
    pub boot: Option<BootOffered>,
}

/// The result of handling a request: what to persist, then what to send.
///
/// The reply must not be sent before the records are durable; a client told it holds an
/// address must find it still held after a crash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handled {
    pub reply: Option<Reply>,
    pub persist: Vec<LeaseRecord>,
}

/// Who sent a decodable DHCP message and what it was: the data an observation is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSeen {
    /// The client's Ethernet address (`None` for other hardware types).
    pub mac: Option<MacAddr>,
    pub message: MessageType,
    /// The address the client holds (`ciaddr`) or, in a REQUEST, asks for (option 50).
    pub address: Option<Ipv4Addr>,
}

/// The whole result of handling a datagram: who asked (when it decoded) and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub request: Option<RequestSeen>,
    pub result: Result<Handled, Silence>,
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Silence {
    #[error("malformed packet: {0}")]
    Malformed(#[from] Malformed),
    #[error("BOOTP request without a DHCP message type (BOOTP is not served)")]
    Bootp,
    #[error("{0}")]
    NotForUs(&'static str),
    #[error("no address can be offered: {0}")]
    NoAddress(&'static str),
    #[error("the reply could not be encoded: {0}")]
    Encode(String),
}

/// What a boot client is told to load.
#[derive(Debug)]
struct BootOffer {
    file: String,
    /// Loaded over TFTP from us (so option 66 names us).
    tftp: bool,
    class: BootClient,
}

/// The DHCP server state machine.
#[derive(Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    leases: LeaseTable,
}

impl DhcpServer {
    /// A server resuming with previously persisted leases.
    pub fn new(config: DhcpConfig, leases: impl IntoIterator<Item = LeaseRecord>) -> Self {
        Self {
            config,
            leases: LeaseTable::from_records(leases),
        }
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Handles one datagram that arrived on `port` from `source`, at Unix time `now`.
    pub fn handle(
        &mut self,
        hosts: &HostTable,
        datagram: &[u8],
        source: SocketAddrV4,
        port: ServerPort,
        now: u64,
    ) -> Result<Handled, Silence> {
        self.exchange(hosts, datagram, source, port, now).result
    }

    /// [`handle`](Self::handle), also saying who sent the datagram and what it was.
    pub fn exchange(
        &mut self,
        hosts: &HostTable,
        datagram: &[u8],
        source: SocketAddrV4,
        port: ServerPort,
        now: u64,
    ) -> Exchange {
        let request = match decode_request(datagram) {
            Ok(request) => request,
            Err(malformed) => {
                return Exchange {
                    request: None,
                    result: Err(malformed.into()),
                };
            }
        };
        let Some(kind) = request.opts().msg_type() else {
            return Exchange {
                request: None,
                result: Err(Silence::Bootp),
            };
        };
        let client = ClientInfo::from_message(&request);
        let claimed = Some(request.ciaddr())
            .filter(|address| !address.is_unspecified())
            .or_else(|| {
                (kind == MessageType::Request)
                    .then(|| requested_address(&request))
                    .flatten()
            });
        let seen = RequestSeen {
            mac: client.mac,
            message: kind,
            address: claimed,
        };
        let result = match (port, self.config.mode) {
            (ServerPort::ProxyBoot, _) => {
                self.proxy_boot_request(hosts, &request, &client, kind, source)
            }
            (ServerPort::Dhcp, DhcpMode::Proxy) => self.proxy_offer(hosts, &request, &client, kind),
            (ServerPort::Dhcp, DhcpMode::Authoritative) => match kind {
                MessageType::Discover => self.discover(hosts, &request, &client, now),
                MessageType::Request => self.request(hosts, &request, &client, now),
                MessageType::Decline => self.decline(&request, &client, now),
                MessageType::Release => self.release(&request, &client, now),
                MessageType::Inform => self.inform(hosts, &request, &client),
                _ => Err(Silence::NotForUs("not a message a server answers")),
            },
        };
        Exchange {
            request: Some(seen),
            result,
        }
    }

    /// ProxyDHCP on port 67: a boot-only OFFER to a network-boot client's DISCOVER.
    fn proxy_offer(
        &self,
        hosts: &HostTable,
        request: &Message,
        client: &ClientInfo,
        kind: MessageType,
    ) -> Result<Handled, Silence> {
        if kind != MessageType::Discover {
            return Err(Silence::NotForUs(
                "ProxyDHCP answers only DISCOVER on port 67",
            ));
        }
        let boot = self.boot_offer(hosts, client)?;
        let mut reply = self.reply_to(request, MessageType::Offer);
        let offered = self.add_boot(&mut reply, &boot, client);
        self.send(
            reply,
            request,
            ServerPort::Dhcp,
            MessageType::Offer,
            None,
            Some(offered),
        )
    }

    /// Port 4011: a client that got its address elsewhere asks for its boot file.
    fn proxy_boot_request(
        &self,
        hosts: &HostTable,
        request: &Message,
        client: &ClientInfo,
        kind: MessageType,
        source: SocketAddrV4,
    ) -> Result<Handled, Silence> {
        if !matches!(kind, MessageType::Request | MessageType::Inform) {
            return Err(Silence::NotForUs("port 4011 takes only REQUEST and INFORM"));
        }
        let boot = self.boot_offer(hosts, client)?;
        let mut reply = self.reply_to(request, MessageType::Ack);
        reply.set_ciaddr(request.ciaddr());
        let offered = self.add_boot(&mut reply, &boot, client);
        self.send(
            reply,
            request,
            ServerPort::ProxyBoot,
            MessageType::Ack,
            Some(source),
            Some(offered),
        )
    }

    fn discover(
        &mut self,
        hosts: &HostTable,
        request: &Message,
        client: &ClientInfo,
        now: u64,
    ) -> Result<Handled, Silence> {
        let host = eligible_host(hosts, client)?;
        let address = self.choose_address(hosts, request, client, host, now)?;
        let hold = self.config.offer_hold.as_secs();
        self.leases.set(
            address,
            Lease {
                client: client.id.clone(),
                state: LeaseState::Offered,
                expires: now + hold,
            },
        );
        let mut reply = self.reply_to(request, MessageType::Offer);
        reply.set_yiaddr(address);
        self.add_address_options(&mut reply, host, true);
        let offered = self
            .boot_offer(hosts, client)
            .ok()
            .map(|boot| self.add_boot(&mut reply, &boot, client));
        tracing::debug!(client = ?client.mac, %address, "offering an address");
        self.send(
            reply,
            request,
            ServerPort::Dhcp,
            MessageType::Offer,
            None,
            offered,
        )
    }

    /// The address to offer: the host's fixed one, else the client's previous or requested
    /// one if still free, else a free pool address.
    fn choose_address(
        &mut self,
        hosts: &HostTable,
        request: &Message,
        client: &ClientInfo,
        host: Option<&Host>,
        now: u64,
    ) -> Result<Ipv4Addr, Silence> {
        if let Some(fixed) = host.and_then(|host| host.ipv4) {
            if self.may_hold(hosts, client, host, fixed.address, now) {
                return Ok(fixed.address);
            }
            tracing::warn!(
                host = ?client.mac, address = %fixed.address,
                "the host's fixed address is held by another client or was declined; not answering"
            );
            return Err(Silence::NoAddress("the fixed address is in use"));
        }
        let pool = self
            .config
            .pool
            .ok_or(Silence::NoAddress("no pool and no fixed address"))?;
        let relay = request.giaddr();
        if !relay.is_unspecified() && !self.config.subnet.contains(relay) {
            return Err(Silence::NoAddress(
                "relayed from a subnet without a pool (give the host a fixed address)",
            ));
        }
        for candidate in [
            self.leases.address_of(&client.id),
            requested_address(request),
        ]
        .into_iter()
        .flatten()
        {
            if self.may_hold(hosts, client, host, candidate, now) {
                return Ok(candidate);
            }
        }
        let config = &self.config;
        let found = self.leases.find_free(&pool, &client.id, now, |address| {
            assignable(config, hosts, client, host, address)
        });
        found.ok_or_else(|| {
            tracing::warn!(pool.first = %pool.first(), pool.last = %pool.last(), "address pool exhausted");
            Silence::NoAddress("the pool is exhausted")
        })
    }

    /// Whether `client` may hold `address` now: assignable to it and not leased to anyone
    /// else, nor quarantined.
    fn may_hold(
        &self,
        hosts: &HostTable,
        client: &ClientInfo,
        host: Option<&Host>,
        address: Ipv4Addr,
        now: u64,
    ) -> bool {
        assignable(&self.config, hosts, client, host, address)
            && self.leases.free_for(address, &client.id, now)
    }

    fn request(
        &mut self,
        hosts: &HostTable,
        request: &Message,
        client: &ClientInfo,
        now: u64,
    ) -> Result<Handled, Silence> {
        let host = eligible_host(hosts, client)?;
        let requested = requested_address(request);
        let ciaddr = Some(request.ciaddr()).filter(|address| !address.is_unspecified());
        let address = match request.opts().get(OptionCode::ServerIdentifier) {
            // SELECTING: the client answers one server's offer.
            Some(DhcpOption::ServerIdentifier(server)) => {
                if *server != self.config.server {
                    self.leases.withdraw_offer(&client.id);
                    return Err(Silence::NotForUs("the client chose another server"));
                }
                requested.or(ciaddr)
            }
            // INIT-REBOOT (requested) or RENEWING/REBINDING (ciaddr).
            _ => requested.or(ciaddr),
        }
        .ok_or(Silence::NotForUs("REQUEST names no address"))?;

        if !self.may_hold(hosts, client, host, address, now) {
            let ours =
                self.config.subnet.contains(address) || host.and_then(|host| host.ipv4).is_some();
            if !ours {
                // Another server's address: not ours to refuse.
                return Err(Silence::NotForUs(
                    "REQUEST for an address outside our subnet",
                ));
            }
            tracing::info!(client = ?client.mac, %address, "refusing a REQUEST (NAK)");
            let mut nak = self.reply_to(request, MessageType::Nak);
            nak.opts_mut().insert(DhcpOption::Message(
                "address not available to this client".into(),
            ));
            return self.send(nak, request, ServerPort::Dhcp, MessageType::Nak, None, None);
        }
        let lease = Lease {
            client: client.id.clone(),
            state: LeaseState::Bound,
            expires: now + self.config.lease_time.as_secs(),
        };
        self.leases.set(address, lease.clone());
        let mut reply = self.reply_to(request, MessageType::Ack);
        reply.set_yiaddr(address);
        reply.set_ciaddr(request.ciaddr());
        self.add_address_options(&mut reply, host, true);
        let offered = self
            .boot_offer(hosts, client)
            .ok()
            .map(|boot| self.add_boot(&mut reply, &boot, client));
        let mut handled = self.send(
            reply,
            request,
            ServerPort::Dhcp,
            MessageType::Ack,
            None,
            offered,
        )?;
        handled.persist.push(LeaseRecord { address, lease });
        Ok(handled)
    }

    fn decline(
        &mut self,
        request: &Message,
        client: &ClientInfo,
        now: u64,
    ) -> Result<Handled, Silence> {
        self.check_server_id(request)?;
        let address =
            requested_address(request).ok_or(Silence::NotForUs("DECLINE names no address"))?;
        if self
            .leases
            .get(address)
            .is_none_or(|lease| lease.client != client.id)
        {
            return Err(Silence::NotForUs(
                "DECLINE for an address the client does not hold",
            ));
        }
        tracing::warn!(
            client = ?client.mac, %address,
            quarantine_s = self.config.decline_hold.as_secs(),
            "address declined: another machine answers for it; quarantined"
        );
        let lease = Lease {
            client: client.id.clone(),
            state: LeaseState::Declined,
            expires: now + self.config.decline_hold.as_secs(),
        };
        self.leases.set(address, lease.clone());
        Ok(Handled {
            reply: None,
            persist: vec![LeaseRecord { address, lease }],
        })
    }

    fn release(
        &mut self,
        request: &Message,
        client: &ClientInfo,
        now: u64,
    ) -> Result<Handled, Silence> {
        self.check_server_id(request)?;
        let address = request.ciaddr();
        let held = self
            .leases
            .get(address)
            .is_some_and(|lease| lease.client == client.id && lease.state == LeaseState::Bound);
        if !held {
            return Err(Silence::NotForUs(
                "RELEASE of an address the client does not hold",
            ));
        }
        tracing::debug!(client = ?client.mac, %address, "address released");
        let lease = Lease {
            client: client.id.clone(),
            state: LeaseState::Released,
            expires: now,
        };
        self.leases.set(address, lease.clone());
        Ok(Handled {
            reply: None,
            persist: vec![LeaseRecord { address, lease }],
        })
    }

    /// DHCPINFORM: the client has an address and wants the other parameters.
    fn inform(
        &self,
        hosts: &HostTable,
        request: &Message,
        client: &ClientInfo,
    ) -> Result<Handled, Silence> {
        let host = eligible_host(hosts, client)?;
        let mut reply = self.reply_to(request, MessageType::Ack);
        reply.set_ciaddr(request.ciaddr());
        self.add_address_options(&mut reply, host, false);
        let offered = self
            .boot_offer(hosts, client)
            .ok()
            .map(|boot| self.add_boot(&mut reply, &boot, client));
        self.send(
            reply,
            request,
            ServerPort::Dhcp,
            MessageType::Ack,
            None,
            offered,
        )
    }

    fn check_server_id(&self, request: &Message) -> Result<(), Silence> {
        match request.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(server)) if *server == self.config.server => Ok(()),
            _ => Err(Silence::NotForUs("addressed to another server")),
        }
    }

    /// What a network-boot client should load, if the host table says it boots from us.
    fn boot_offer(&self, hosts: &HostTable, client: &ClientInfo) -> Result<BootOffer, Silence> {
        let mac = client
            .mac
            .ok_or(Silence::NotForUs("not an Ethernet client"))?;
        let boots = match hosts.lookup(mac) {
            Lookup::Known(host) => {
                matches!(host.boot, BootAction::Agent(_) | BootAction::LocalDisk)
            }
            Lookup::Unknown(policy) => policy == UnknownPolicy::Discover,
        };
        if !boots {
            return Err(Silence::NotForUs("the host table gives this host no boot"));
        }
        if client.ipxe {
            return Ok(BootOffer {
                file: self.config.http.script_url(mac),
                tftp: false,
                class: BootClient::Pxe,
            });
        }
        let files = &self.config.boot_files;
        let binary = |firmware: Option<Firmware>| match firmware {
            Some(Firmware::Bios) => Ok(&files.bios),
            Some(Firmware::EfiX64) => Ok(&files.efi_x64),
            Some(Firmware::EfiArm64) => Ok(&files.efi_arm64),
            other => {
                tracing::warn!(host = %mac, firmware = ?other, "no iPXE build for this firmware");
                Err(Silence::NotForUs("no iPXE build for this firmware"))
            }
        };
        match client.boot {
            BootClient::Pxe => Ok(BootOffer {
                file: binary(client.firmware.or(Some(Firmware::Bios)))?.to_string(),
                tftp: true,
                class: BootClient::Pxe,
            }),
            BootClient::Http => {
                let firmware = client.firmware.filter(|f| *f != Firmware::Bios);
                Ok(BootOffer {
                    file: self.config.http.ipxe_binary_url(binary(firmware)?),
                    tftp: false,
                    class: BootClient::Http,
                })
            }
            BootClient::None => Err(Silence::NotForUs("not a network-boot client")),
        }
    }

    /// A reply skeleton: same transaction, client and relay; our server identifier; the
    /// relay agent information echoed (RFC 3046; dhcproto encodes it last).
    fn reply_to(&self, request: &Message, kind: MessageType) -> Message {
        let mut reply = Message::new_with_id(
            request.xid(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            request.giaddr(),
            request.chaddr(),
        );
        reply.set_opcode(Opcode::BootReply);
        reply.set_htype(request.htype());
        reply.set_flags(request.flags());
        let options = reply.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(self.config.server));
        if let Some(relay) = request.opts().get(OptionCode::RelayAgentInformation) {
            options.insert(relay.clone());
        }
        reply
    }

    fn add_address_options(&self, reply: &mut Message, host: Option<&Host>, with_lease: bool) {
        let config = &self.config;
        let mask = host
            .and_then(|host| host.ipv4)
            .and_then(|fixed| fixed.netmask())
            .unwrap_or_else(|| config.subnet.mask());
        let router = host.and_then(|host| host.gateway).or(config.router);
        let dns = host
            .map(|host| host.dns.clone())
            .filter(|dns| !dns.is_empty())
            .unwrap_or_else(|| config.dns.clone());
        let options = reply.opts_mut();
        options.insert(DhcpOption::SubnetMask(mask));
        if let Some(router) = router {
            options.insert(DhcpOption::Router(vec![router]));
        }
        if !dns.is_empty() {
            options.insert(DhcpOption::DomainNameServer(dns));
        }
        if let Some(name) = host.and_then(|host| host.hostname.as_ref()) {
            options.insert(DhcpOption::Hostname(name.as_str().to_owned()));
        }
        if with_lease {
            let lease = u32::try_from(config.lease_time.as_secs()).unwrap_or(u32::MAX);
            options.insert(DhcpOption::AddressLeaseTime(lease));
            options.insert(DhcpOption::Renewal(lease / 2));
            options.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
    }

    /// Adds `boot` to `reply` and says what it offers.
    fn add_boot(&self, reply: &mut Message, boot: &BootOffer, client: &ClientInfo) -> BootOffered {
        // The BOOTP file field holds 127 characters; option 67 carries the name either way.
        if boot.file.len() < 128 {
            reply.set_fname_str(&boot.file);
        }
        // Next-server is set even when the file is an http:// URL: iPXE counts an offer as
        // carrying PXE options only with both siaddr and a file name, and otherwise sends
        // ProxyDHCPREQUESTs to port 4011 and waits seconds for answers it then discards.
        reply.set_siaddr(self.config.server);
        let options = reply.opts_mut();
        options.insert(DhcpOption::BootfileName(boot.file.as_bytes().to_vec()));
        if boot.tftp {
            options.insert(DhcpOption::TFTPServerName(
                self.config.server.to_string().into_bytes(),
            ));
        }
        match boot.class {
            BootClient::Pxe => {
                options.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
                options.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
            }
            BootClient::Http => {
                options.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
            }
            BootClient::None => {}
        }
        if let Some(uuid) = &client.uuid {
            options.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
        }
        if let Some(mac) = client.mac {
            tracing::info!(host = %mac, file = %boot.file, "boot file offered");
        }
        match (boot.tftp, boot.class) {
            (true, _) => BootOffered::IpxeOverTftp,
            (false, BootClient::Http) => BootOffered::IpxeOverHttp,
            (false, _) => BootOffered::Script,
        }
    }

    /// Encodes `reply` and addresses it (RFC 2131 §4.1): to the relay if relayed, to the
    /// client's address if it has one (and is not being refused), else broadcast; answers
    /// on port 4011 go back to where the request came from.
    fn send(
        &self,
        mut reply: Message,
        request: &Message,
        from: ServerPort,
        kind: MessageType,
        source: Option<SocketAddrV4>,
        boot: Option<BootOffered>,
    ) -> Result<Handled, Silence> {
        let address = Some(reply.yiaddr()).filter(|address| !address.is_unspecified());
        let relay = request.giaddr();
        let to = if let Some(source) = source {
            source
        } else if !relay.is_unspecified() {
            if kind == MessageType::Nak {
                reply.set_flags(request.flags().set_broadcast());
            }
            SocketAddrV4::new(relay, 67)
        } else if !request.ciaddr().is_unspecified() && kind != MessageType::Nak {
            SocketAddrV4::new(request.ciaddr(), 68)
        } else {
            // Clients without an address cannot receive unicast before ARP knows them;
            // broadcasting is always allowed and every client accepts it.
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        };
        let datagram = reply
            .to_vec()
            .map_err(|err| Silence::Encode(err.to_string()))?;
        Ok(Handled {
            reply: Some(Reply {
                to,
                from,
                datagram,
                kind,
                address,
                boot,
            }),
            persist: Vec::new(),
        })
    }
}

/// Option 50, the address the client asks for.
fn requested_address(request: &Message) -> Option<Ipv4Addr> {
    match request.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(address)) => Some(*address),
        _ => None,
    }
}

/// Whom the host table lets us address: `Some(host)` for known hosts, `None` for unknown
/// ones the policy allows.
fn eligible_host<'a>(
    hosts: &'a HostTable,
    client: &ClientInfo,
) -> Result<Option<&'a Host>, Silence> {
    let lookup = match client.mac {
        Some(mac) => hosts.lookup(mac),
        None => Lookup::Unknown(hosts.unknown_policy()),
    };
    match lookup {
        Lookup::Known(Host {
            boot: BootAction::Ignore,
            ..
        }) => Err(Silence::NotForUs("the host table says to ignore this host")),
        Lookup::Known(host) => Ok(Some(host)),
        Lookup::Unknown(UnknownPolicy::Ignore) => Err(Silence::NotForUs("unknown host")),
        Lookup::Unknown(_) => Ok(None),
    }
}

/// Whether `address` may be assigned to `client` at all, leases aside: never our own
/// address, never another host's fixed address, the host's fixed address if it has one,
/// else a pool address that is not the subnet's network or broadcast address.
fn assignable(
    config: &DhcpConfig,
    hosts: &HostTable,
    client: &ClientInfo,
    host: Option<&Host>,
    address: Ipv4Addr,
) -> bool {
    if address == config.server {
        return false;
    }
    if let Some(owner) = hosts.owner_of(address)
        && Some(owner) != client.mac
    {
        return false;
    }
    match host.and_then(|host| host.ipv4) {
        Some(fixed) => fixed.address == address,
        None => {
            config.pool.is_some_and(|pool| pool.contains(address))
                && address != config.subnet.network
                && address != config.subnet.broadcast()
        }
    }
}

#[cfg(test)]
mod tests;
