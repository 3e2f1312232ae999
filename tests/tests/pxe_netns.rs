//! `rivet boot serve` against real DHCP and TFTP clients between two network namespaces:
//! dhclient, busybox udhcpc, dhcping and perfdhcp; atftp, curl and tftp-hpa through a link
//! that loses packets (netfilter's random drop: this kernel has no netem); and a barrage of
//! malformed and hostile datagrams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rivet_tests::{Daemon, Netns, cargo_bin, require_tool, scratch_dir};

const SERVER: &str = "10.88.0.1";
const FIXED_MAC: &str = "52:54:00:88:00:11";
const POOL_MAC: &str = "52:54:00:88:00:22";

/// A server namespace (`vs`, 10.88.0.1/24 unless told otherwise) and a client namespace
/// (`vc`, no address) joined by a veth pair.
struct Lab {
    server: Netns,
    client: Netns,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(prefix: &str, server_cidr: &str) -> Self {
        let server = Netns::new(prefix);
        let client = Netns::new(prefix);
        let status = Command::new("ip")
            .args(["link", "add", "vs", "netns", server.name()])
            .args(["type", "veth", "peer", "name", "vc", "netns", client.name()])
            .status()
            .unwrap();
        assert!(status.success());
        server.exec_checked(&["ip", "addr", "add", server_cidr, "dev", "vs"]);
        server.exec_checked(&["ip", "link", "set", "vs", "up"]);
        client.exec_checked(&["ip", "link", "set", "vc", "up"]);
        Self {
            server,
            client,
            dir: scratch_dir(prefix),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn serve(&self, hosts: &str, extra: &[&str]) -> Daemon {
        std::fs::write(self.path("hosts.json"), hosts).unwrap();
        let mut command = self.server.command(cargo_bin("rivet"));
        command
            .args(["-v", "boot", "serve", "--interface", "vs", "--hosts"])
            .arg(self.path("hosts.json"))
            .arg("--lease-db")
            .arg(self.path("leases.redb"))
            .args(extra);
        let mut daemon = Daemon::spawn("rivet-boot", self.dir.path(), &mut command);
        daemon.wait_for_log("HTTP serving", Duration::from_secs(30));
        daemon
    }

    fn client_run(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().unwrap();
        self.client
            .command(require_tool(program))
            .args(rest)
            .output()
            .unwrap()
    }

    /// Gives the client 10.88.0.2/24 and creates a TFTP root with `kernel` in it.
    fn tftp_root(&self, kernel: &[u8]) -> PathBuf {
        self.client
            .exec_checked(&["ip", "addr", "add", "10.88.0.2/24", "dev", "vc"]);
        let root = self.path("tftp");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("kernel"), kernel).unwrap();
        root
    }

    fn set_client_mac(&self, mac: &str) {
        self.client
            .exec_checked(&["ip", "link", "set", "vc", "address", mac]);
    }
}

const HOSTS: &str = r#"{
  "unknown": "address",
  "hosts": [{"mac": "52:54:00:88:00:11", "boot": "local_disk", "ipv4": "10.88.0.11",
             "hostname": "fixed-node", "gateway": "10.88.0.254", "dns": ["10.88.0.53"]}]
}"#;

/// Runs busybox udhcpc once and returns the variables its script saw on "bound".
fn udhcpc(lab: &Lab) -> String {
    let script = lab.path("udhcpc.sh");
    let out = lab.path("udhcpc.out");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"ip=$ip subnet=$subnet router=$router \
             serverid=$serverid lease=$lease\" >> {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let result = lab.client_run(&[
        "busybox",
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-i",
        "vc",
        "-t",
        "5",
        "-T",
        "2",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "udhcpc: {result:?}");
    std::fs::read_to_string(out).unwrap()
}

/// dhcping's verbose dump of the server's answer to a REQUEST for `ip` from `mac`.
fn dhcping(lab: &Lab, ip: &str, mac: &str) -> String {
    let result = lab.client_run(&["dhcping", "-V", "-s", SERVER, "-c", ip, "-h", mac]);
    String::from_utf8_lossy(&result.stdout).into_owned()
}

#[test]
fn netns_real_clients_get_fixed_and_pool_addresses_that_survive_a_restart() {
    let lab = Lab::new("pxc", "10.88.0.1/24");
    let server = lab.serve(
        HOSTS,
        &[
            "--mode",
            "authoritative",
            "--pool",
            "10.88.0.100-10.88.0.110",
        ],
    );

    // ISC dhclient as the known host: its fixed address, name, gateway and DNS.
    lab.set_client_mac(FIXED_MAC);
    let leases = lab.path("dhclient.leases");
    let mut command = lab.client.command(require_tool("dhclient"));
    command
        .args(["-d", "-v", "-1", "-sf", "/bin/true", "-lf"])
        .arg(&leases)
        .arg("-pf")
        .arg(lab.path("dhclient.pid"))
        .arg("vc");
    let mut dhclient = Daemon::spawn("dhclient", lab.dir.path(), &mut command);
    dhclient.wait_for_log("bound to 10.88.0.11", Duration::from_secs(60));
    drop(dhclient);
    let lease = std::fs::read_to_string(&leases).unwrap();
    for expected in [
        "fixed-address 10.88.0.11;",
        "option host-name \"fixed-node\";",
        "option routers 10.88.0.254;",
        "option domain-name-servers 10.88.0.53;",
        "option dhcp-server-identifier 10.88.0.1;",
    ] {
        assert!(
            lease.contains(expected),
            "{expected} missing from:\n{lease}"
        );
    }

    // busybox udhcpc as an unknown host: an address from the pool.
    lab.set_client_mac(POOL_MAC);
    let bound = udhcpc(&lab);
    let ip: Ipv4Addr = bound
        .split_whitespace()
        .find_map(|field| field.strip_prefix("ip="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (Ipv4Addr::new(10, 88, 0, 100)..=Ipv4Addr::new(10, 88, 0, 110)).contains(&ip),
        "{bound}"
    );
    assert!(bound.contains("subnet=255.255.255.0"), "{bound}");

    // Restart the server: the lease is in the database, so another client asking for the
    // address is refused and the owner renews it.
    drop(server);
    let _server = lab.serve(
        HOSTS,
        &[
            "--mode",
            "authoritative",
            "--pool",
            "10.88.0.100-10.88.0.110",
        ],
    );
    lab.client
        .exec_checked(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "vc"]);
    let intruder = dhcping(&lab, &ip.to_string(), "52:54:00:88:00:99");
    assert!(intruder.contains("DHCPNAK"), "{intruder}");
    let owner = dhcping(&lab, &ip.to_string(), POOL_MAC);
    assert!(owner.contains("DHCPACK"), "{owner}");
    assert!(owner.contains(&format!("yiaddr: {ip}")), "{owner}");
    // Nor may anyone take the known host's fixed address.
    let squatter = dhcping(&lab, "10.88.0.11", POOL_MAC);
    assert!(squatter.contains("DHCPNAK"), "{squatter}");
}

/// A counter from perfdhcp's report, for the exchange `section` ("DISCOVER-OFFER", …).
fn perfdhcp_counter(report: &str, section: &str, counter: &str) -> u64 {
    let start = report
        .find(&format!("Statistics for: {section}"))
        .unwrap_or_else(|| panic!("no {section} section in:\n{report}"));
    report[start..]
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{counter}: ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {counter} in {section}:\n{report}"))
}

#[test]
fn netns_perfdhcp_exchanges_get_unique_durable_leases() {
    let lab = Lab::new("pxf", "10.89.0.1/16");
    lab.client
        .exec_checked(&["ip", "addr", "add", "10.89.0.2/16", "dev", "vc"]);
    let mut server = lab.serve(
        r#"{"unknown": "address"}"#,
        &[
            "--mode",
            "authoritative",
            "--pool",
            "10.89.1.0-10.89.254.254",
            "--no-tftp",
        ],
    );
    let result = lab.client_run(&[
        "perfdhcp", "-4", "-l", "vc", "-r", "200", "-R", "5000", "-p", "5",
    ]);
    let report = String::from_utf8_lossy(&result.stdout).into_owned();
    for section in ["DISCOVER-OFFER", "REQUEST-ACK"] {
        assert!(
            perfdhcp_counter(&report, section, "received packets") > 0,
            "{report}"
        );
        assert_eq!(
            perfdhcp_counter(&report, section, "non unique addresses"),
            0,
            "{report}"
        );
        assert_eq!(
            perfdhcp_counter(&report, section, "rejected leases"),
            0,
            "{report}"
        );
    }
    server.assert_running();
    let database = std::fs::metadata(lab.path("leases.redb")).unwrap();
    assert!(database.len() > 0);
}

/// Deterministic bytes that differ block to block.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect()
}

fn assert_file(path: &Path, expected: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(
        got == expected,
        "{} differs ({} bytes)",
        path.display(),
        got.len()
    );
}

#[test]
fn netns_tftp_transfers_survive_packet_loss() {
    let lab = Lab::new("pxl", "10.88.0.1/24");
    let content = pattern(96 * 1024 + 77);
    let root = lab.tftp_root(&content);
    let _server = lab.serve(
        "{}",
        &[
            "--mode",
            "off",
            "--no-router-advertisements",
            "--tftp-root",
            root.to_str().unwrap(),
        ],
    );
    // Lose 2% of the server's datagrams (data, option acknowledgements) with netfilter's
    // random statistic match on arrival at the client (this kernel has no netem; a drop on
    // output would fail the sender's sendto with EPERM instead of losing the datagram).
    // Every client recovers by re-sending its last acknowledgement, which the server must
    // answer with exactly one retransmission. Acknowledgements are not dropped: atftp's
    // client answers only the first duplicate of a block, so when that extra ACK is lost
    // too it ignores every retransmission and the transfer dies whatever the server does
    // (one CI run in about thirty saw it). The server's own timeout path is covered by the
    // transfer state machine's unit tests.
    lab.client.exec_checked(&[
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.02",
        "-j",
        "DROP",
    ]);
    let out = lab.path("out");
    std::fs::create_dir(&out).unwrap();
    let clients: [(&str, Vec<String>); 4] = [
        (
            "atftp-window",
            vec![
                "atftp".into(),
                "--get".into(),
                "-r".into(),
                "kernel".into(),
                "-l".into(),
                out.join("atftp-window").display().to_string(),
                "--option".into(),
                "blksize 1468".into(),
                "--option".into(),
                "windowsize 8".into(),
                SERVER.into(),
                "69".into(),
            ],
        ),
        (
            "atftp",
            vec![
                "atftp".into(),
                "--get".into(),
                "-r".into(),
                "kernel".into(),
                "-l".into(),
                out.join("atftp").display().to_string(),
                "--option".into(),
                "blksize 1468".into(),
                SERVER.into(),
                "69".into(),
            ],
        ),
        (
            "curl",
            vec![
                "curl".into(),
                "-sS".into(),
                "--fail".into(),
                "--tftp-blksize".into(),
                "1468".into(),
                "-o".into(),
                out.join("curl").display().to_string(),
                format!("tftp://{SERVER}/kernel"),
            ],
        ),
        (
            "tftp-hpa",
            vec![
                "tftp".into(),
                "-m".into(),
                "binary".into(),
                SERVER.into(),
                "-c".into(),
                "get".into(),
                "kernel".into(),
                out.join("tftp-hpa").display().to_string(),
            ],
        ),
    ];
    // All at once: each loss costs a retransmission timeout (curl asks for 6 s).
    let running: Vec<_> = clients
        .iter()
        .map(|(name, args)| {
            let mut command = lab.client.command(require_tool(&args[0]));
            command
                .args(&args[1..])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            (*name, command.spawn().unwrap())
        })
        .collect();
    for (name, child) in running {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{name}: {output:?}");
        assert_file(&out.join(name), &content);
    }
    // The link really lost packets.
    let listing = lab
        .client
        .exec_checked(&["iptables", "-L", "INPUT", "-v", "-n", "-x"]);
    let dropped: u64 = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|line| line.contains("DROP"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|packets| packets.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "no datagram was dropped");
}

/// Datagrams no DHCP or TFTP server should choke on, sent by a Python script inside the
/// client namespace.
const HOSTILE_SENDER: &str = r#"
import socket, struct, random
random.seed(7)
server = "10.88.0.1"

def header(op=1, hlen=6, cookie=b"\x63\x82\x53\x63"):
    h = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, hlen, 0, 0x1234, 0, 0x8000,
                    b"\0"*4, b"\0"*4, b"\0"*4, b"\0"*4, bytes.fromhex("525400880022") + b"\0"*10,
                    b"\0"*64, b"\0"*128)
    return h + cookie

discover = b"\x35\x01\x01"
packets = [
    b"", b"\x01", b"\x01" * 10, header()[:100], header(), header(cookie=b"\0\0\0\0") + discover,
    header(op=2) + discover + b"\xff", header(hlen=200) + discover + b"\xff",
    header() + discover + b"\x0c\xff" + b"x" * 10,            # hostname runs past the end
    header() + discover + b"\x51\x00\xff",                     # FQDN of length 0
    header() + discover + b"\x51\x01\x00\x51\x01\x00\xff",     # FQDN split in two short parts
    header() + discover + b"\x5e\x02\x01\x01\xff",             # client NDI of length 2
    header() + discover + b"\x97\x00\xff",                     # BLQ status of length 0
    header() + discover + b"\x98\x01\x00\xff",                 # BLQ base time of length 1
    header() + discover + b"\x50\x05" + b"\0" * 5 + b"\xff",   # rapid commit with data
    header() + discover + b"\x0c\x03\xff\xfe\xfd\xff",         # hostname not UTF-8
    header() + discover + b"\x3d\xff" + b"a" * 255 + b"\x3d\xff" + b"b" * 255 + b"\xff",
    header() + b"\x35\x01\x09\xff",                            # unknown message type
    header() + discover + b"\x00" * 1000,                      # pad forever, no end
    header() + b"\x35\x01\x04\xff",                            # DECLINE of nothing
    header() + b"\x35\x01\x07\xff",                            # RELEASE of nothing
    b"\xff" * 1500,
    bytes(random.getrandbits(8) for _ in range(600)),
]
for _ in range(200):
    packets.append(header() + bytes(random.getrandbits(8) for _ in range(random.randrange(0, 400))))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"vc")
for p in packets:
    for dest in ((server, 67), ("255.255.255.255", 67), (server, 4011)):
        s.sendto(p, dest)
tftp = [
    b"\x00\x01../../../../etc/passwd\x00octet\x00",
    b"\x00\x01/etc/shadow\x00octet\x00",
    b"\x00\x01" + b"a" * 60000 + b"\x00octet\x00",
    b"\x00\x01kernel\x00octet\x00blksize\x00",
    b"\x00\x01kernel\x00octet\x00blksize\x00999999999999999999999\x00windowsize\x00-1\x00",
    b"\x00\x02upload\x00octet\x00",
    b"\x00\x05\x00\x01",
    b"\x00\x04",
]
for p in tftp:
    s.sendto(p, (server, 69))
print("sent", len(packets) * 3 + len(tftp))
"#;

#[test]
fn netns_hostile_datagrams_never_stop_the_server_or_leak_files() {
    let lab = Lab::new("pxz", "10.88.0.1/24");
    let root = lab.tftp_root(b"kernel bytes");
    let mut server = lab.serve(
        HOSTS,
        &[
            "--mode",
            "authoritative",
            "--pool",
            "10.88.0.100-10.88.0.110",
            "--tftp-root",
            root.to_str().unwrap(),
        ],
    );
    let sent = lab.client_run(&["python3", "-c", HOSTILE_SENDER]);
    assert!(sent.status.success(), "{sent:?}");
    std::thread::sleep(Duration::from_millis(500));
    server.assert_running();
    let log = server.log();
    assert!(log.contains("malformed packet"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // Traversal over TFTP with a real client: refused, nothing written.
    let leaked = lab.path("leaked");
    let result = lab.client_run(&[
        "curl",
        "-sS",
        "--path-as-is",
        "-o",
        leaked.to_str().unwrap(),
        &format!("tftp://{SERVER}/../../../../etc/passwd"),
    ]);
    assert!(!result.status.success());
    assert!(!leaked.exists() || std::fs::read(&leaked).unwrap().is_empty());

    // And it still serves: an address for a real client, a file over TFTP.
    lab.client
        .exec_checked(&["ip", "addr", "flush", "dev", "vc"]);
    lab.set_client_mac(POOL_MAC);
    assert!(udhcpc(&lab).contains("ip=10.88.0.1"));
    lab.client
        .exec_checked(&["ip", "addr", "add", "10.88.0.2/24", "dev", "vc"]);
    let got = lab.path("got");
    let result = lab.client_run(&[
        "curl",
        "-sS",
        "--fail",
        "-o",
        got.to_str().unwrap(),
        &format!("tftp://{SERVER}/kernel"),
    ]);
    assert!(result.status.success(), "{result:?}");
    assert_file(&got, b"kernel bytes");
    server.assert_running();
}

/// Sends router solicitations from the client side until an advertisement arrives and
/// prints its type, flags and router lifetime.
const SOLICITOR: &str = r#"
import socket, struct, time
index = socket.if_nametoindex("vc")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
s.settimeout(0.5)
deadline = time.time() + 20
while time.time() < deadline:
    try:
        s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, index))
    except OSError:
        time.sleep(0.5)  # our link-local address is still tentative
        continue
    try:
        while True:
            data, peer = s.recvfrom(1500)
            if data[0] == 134:
                print("type=%d flags=%d lifetime=%d options=%d" % (
                    data[0], data[5], struct.unpack("!H", data[6:8])[0], len(data) - 16))
                raise SystemExit(0)
    except socket.timeout:
        pass
raise SystemExit("no router advertisement")
"#;

#[test]
fn netns_router_solicitations_get_an_advertisement_with_nothing_to_configure() {
    let lab = Lab::new("pxr", "10.88.0.1/24");
    let _server = lab.serve("{}", &["--mode", "off", "--no-tftp"]);
    let result = lab.client_run(&["python3", "-c", SOLICITOR]);
    assert!(result.status.success(), "{result:?}");
    let advertisement = String::from_utf8_lossy(&result.stdout);
    // No managed/other flags, not a default router; only the source link-layer option.
    assert_eq!(
        advertisement.trim(),
        "type=134 flags=0 lifetime=0 options=8"
    );
}
