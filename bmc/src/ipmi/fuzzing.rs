//! Entry points for `fuzz/fuzz_targets/rmcp.rs` (feature `fuzzing`).

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::Credentials;

use super::commands::{BootFlags, ChassisStatus, DeviceId};
use super::crypto::CipherSuite;
use super::rakp::{OpenSessionResponse, Rakp2, Rakp4};
use super::session::{Handshake, Session};
use super::{Privilege, wire};

/// Feeds one untrusted datagram to every decoder a BMC's answer reaches: the framing, the
/// session-setup payloads, a handshake waiting for its first answer, established sessions of
/// both cipher suites (integrity check, replay window, decryption) and the command decoders.
pub fn rmcp_datagram(data: &[u8]) {
    if let Ok(wire::Packet::RmcpPlus(packet)) = wire::decode(data) {
        let _ = OpenSessionResponse::decode(packet.payload);
        let _ = Rakp2::decode(packet.payload);
        let _ = Rakp4::decode(packet.payload);
        let _ = packet.integrity_parts(12);
        let _ = packet.integrity_parts(16);
    }
    let _ = wire::decode_response(data);
    let _ = ChassisStatus::decode(data);
    let _ = BootFlags::decode(data);
    let _ = DeviceId::decode(data);

    if let Ok(mut handshake) = Handshake::new(
        Credentials::new("admin", "password"),
        Privilege::Administrator,
        vec![CipherSuite::Suite17, CipherSuite::Suite3],
        StdRng::seed_from_u64(0),
    ) {
        let _ = handshake.datagram();
        let _ = handshake.handle(data);
    }

    // The console session ID the fuzzer most likely hits: the first four payload-header bytes.
    let console_session_id = data.get(6..10).map_or(0, wire::le_u32);
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let mut session = Session::from_sik(suite, &[0x5A; 20], console_session_id);
        let _ = session.open(data);
        // Authentic packets carrying the input as plaintext, then as ciphertext, reach the
        // decryption, padding and IPMI message decoders an attacker cannot reach unsigned.
        let plaintext = session.seal_as_bmc(1, data, true);
        let _ = session.open(&plaintext);
        let ciphertext = session.seal_as_bmc(2, data, false);
        let _ = session.open(&ciphertext);
    }
}
