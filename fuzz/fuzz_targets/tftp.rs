//! The TFTP core on arbitrary input: the packet parser, option negotiation, and a transfer
//! driven by a fuzzed sequence of datagrams and timeouts. It must never panic, and every
//! block it asks to send must lie within the file.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rivet_pxe::tftp::packet::{self, Packet};
use rivet_pxe::tftp::{Step, TftpLimits, Transfer, negotiate};

fuzz_target!(|data: &[u8]| {
    let _ = packet::parse(data);
    let Some((&size_byte, rest)) = data.split_first() else {
        return;
    };
    let size = u64::from(size_byte) * 977;
    let limits = TftpLimits {
        max_retransmits: 3,
        ..TftpLimits::default()
    };
    // The first datagram is the request; the rest are events, separated by 0xfe.
    let mut events = rest.split(|&byte| byte == 0xfe);
    let request = events.next().unwrap_or_default();
    let negotiated = match packet::parse(request) {
        Ok(Packet::Read(request)) => negotiate(&request, &limits, size),
        _ => negotiate(
            &packet::Request {
                filename: "f",
                mode: packet::Mode::Octet,
                options: Vec::new(),
            },
            &limits,
            size,
        ),
    };
    let start = Instant::now();
    let (mut transfer, mut step) = Transfer::start(negotiated, &limits, size, start);
    let mut now = start;
    for event in events {
        match step {
            Step::Done | Step::Failed { .. } => return,
            Step::SendBlocks { first, last } => {
                assert!(first >= 1 && first <= last);
                for block in first..=last {
                    let (offset, len) = transfer.block_span(block);
                    assert!(offset + len as u64 <= size);
                }
            }
            Step::SendOack => assert!(!transfer.oack().is_empty()),
            Step::Wait => {}
        }
        step = if event.first() == Some(&0xff) {
            now += Duration::from_secs(300);
            transfer.on_timeout(now)
        } else {
            transfer.on_datagram(event, now)
        };
    }
});
