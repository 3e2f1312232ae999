//! RMCP / RMCP+ datagrams as a BMC (or anyone on its network) might send them: framing,
//! session-setup payloads, a handshake waiting for its first answer, established sessions
//! of cipher suites 3 and 17, and the command decoders. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rivet_bmc::ipmi::fuzzing::rmcp_datagram(data);
});
