//! One read transfer as a state machine: option negotiation (RFC 2347/2348/2349/7440),
//! windows of blocks, acknowledgements, retransmission and duplicate-ACK handling.
//!
//! Sans-IO: the caller feeds datagrams and timeouts in and performs what comes out ("send
//! the OACK", "send blocks 17 to 24"); it owns the socket, the clock and the file.

use std::time::{Duration, Instant};

use super::packet::{self, ErrorCode, MAX_BLKSIZE, Packet, Request};

/// What the server allows clients to negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpLimits {
    /// Largest block size granted (RFC 2348 allows up to 65464).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not ask for one (RFC 2349 `timeout`).
    pub default_timeout: Duration,
    /// Consecutive timeouts after which a transfer is abandoned.
    pub max_retransmits: u32,
}

impl Default for TftpLimits {
    fn default() -> Self {
        Self {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_retransmits: 5,
        }
    }
}

/// The parameters a transfer runs with after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// The OACK to send first, if the client asked for any option we honour.
    pub oack: Option<Vec<u8>>,
}

/// Honours the options of `request` within `limits` for a file of `size` bytes.
///
/// Unknown options and unparsable values are ignored (RFC 2347 lets a server do that);
/// out-of-range values are clamped where the RFC allows and ignored otherwise.
pub fn negotiate(request: &Request<'_>, limits: &TftpLimits, size: u64) -> Negotiated {
    let mut blksize = 512u16;
    let mut windowsize = 1u16;
    let mut timeout = limits.default_timeout;
    let mut acknowledged: Vec<(&'static str, String)> = Vec::new();
    // The first occurrence of an option wins.
    let seen = |name: &str, acknowledged: &[(&str, String)]| {
        acknowledged.iter().any(|(known, _)| *known == name)
    };
    for (name, value) in &request.options {
        let value = value.trim();
        if name.eq_ignore_ascii_case("blksize") && !seen("blksize", &acknowledged) {
            // RFC 2348: 8..=65464; a server may answer with a smaller value.
            if let Ok(requested) = value.parse::<u32>()
                && requested >= 8
            {
                let granted = requested.min(u32::from(limits.max_blksize.min(MAX_BLKSIZE)));
                blksize = u16::try_from(granted).unwrap_or(512);
                acknowledged.push(("blksize", blksize.to_string()));
            }
        } else if name.eq_ignore_ascii_case("windowsize") && !seen("windowsize", &acknowledged) {
            if let Ok(requested) = value.parse::<u32>()
                && requested >= 1
            {
                let granted = requested.min(u32::from(limits.max_windowsize.max(1)));
                windowsize = u16::try_from(granted).unwrap_or(1);
                acknowledged.push(("windowsize", windowsize.to_string()));
            }
        } else if name.eq_ignore_ascii_case("timeout") && !seen("timeout", &acknowledged) {
            // RFC 2349: 1..=255 seconds, and the server must use the value as given.
            if let Ok(seconds) = value.parse::<u8>()
                && seconds >= 1
            {
                timeout = Duration::from_secs(u64::from(seconds));
                acknowledged.push(("timeout", seconds.to_string()));
            }
        } else if name.eq_ignore_ascii_case("tsize")
            && !seen("tsize", &acknowledged)
            && value.parse::<u64>().is_ok()
        {
            acknowledged.push(("tsize", size.to_string()));
        }
    }
    Negotiated {
        blksize,
        windowsize,
        timeout,
        oack: (!acknowledged.is_empty()).then(|| packet::encode_oack(&acknowledged)),
    }
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the OACK ([`Transfer::oack`]).
    SendOack,
    /// Send blocks `first..=last` (absolute numbers from 1; see [`Transfer::block_span`]).
    SendBlocks { first: u64, last: u64 },
    /// Nothing to send; wait for a packet or [`Transfer::deadline`].
    Wait,
    /// The client acknowledged the last block.
    Done,
    /// Give up; send `error` to the client if it is `Some`.
    Failed {
        reason: Failure,
        error: Option<(ErrorCode, &'static str)>,
    },
}

/// Why a transfer ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    #[error("no acknowledgement after {0} retransmissions")]
    TimedOut(u32),
    #[error("the client aborted the transfer: {message} (code {code:?})")]
    ClientError { code: ErrorCode, message: String },
    #[error("the client sent a packet that has no place in a read transfer")]
    IllegalOperation,
}

/// A read transfer in progress.
#[derive(Debug)]
pub struct Transfer {
    blksize: u64,
    windowsize: u64,
    timeout: Duration,
    max_retransmits: u32,
    size: u64,
    /// The final block; it is shorter than `blksize` (possibly empty).
    last_block: u64,
    /// Highest block the client has acknowledged.
    acked: u64,
    /// Highest block sent so far.
    sent: u64,
    oack: Option<Vec<u8>>,
    awaiting_oack_ack: bool,
    retransmits: u32,
    deadline: Instant,
}

impl Transfer {
    /// Starts a transfer of `size` bytes with negotiated parameters; returns the first step.
    pub fn start(
        negotiated: Negotiated,
        limits: &TftpLimits,
        size: u64,
        now: Instant,
    ) -> (Self, Step) {
        let blksize = u64::from(negotiated.blksize.max(8));
        let mut transfer = Self {
            blksize,
            windowsize: u64::from(negotiated.windowsize.max(1)),
            timeout: negotiated.timeout,
            max_retransmits: limits.max_retransmits,
            size,
            last_block: size / blksize + 1,
            acked: 0,
            sent: 0,
            awaiting_oack_ack: negotiated.oack.is_some(),
            oack: negotiated.oack,
            retransmits: 0,
            deadline: now + negotiated.timeout,
        };
        let step = if transfer.awaiting_oack_ack {
            Step::SendOack
        } else {
            transfer.next_window(now)
        };
        (transfer, step)
    }

    /// The OACK packet to send when told [`Step::SendOack`].
    pub fn oack(&self) -> &[u8] {
        self.oack.as_deref().unwrap_or_default()
    }

    /// When to call [`Transfer::on_timeout`] if no packet arrives.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The file offset and length of block `block` (from 1).
    pub fn block_span(&self, block: u64) -> (u64, usize) {
        let offset = (block.saturating_sub(1)).saturating_mul(self.blksize);
        let len = self.size.saturating_sub(offset).min(self.blksize);
        (offset, usize::try_from(len).unwrap_or(0))
    }

    /// The block number on the wire: it wraps to 0 after 65535, as tftp-hpa does.
    pub fn wire_block(block: u64) -> u16 {
        (block & 0xffff) as u16
    }

    /// The negotiated block size.
    pub fn blksize(&self) -> usize {
        usize::try_from(self.blksize).unwrap_or(512)
    }

    /// Handles a datagram from the client.
    pub fn on_datagram(&mut self, datagram: &[u8], now: Instant) -> Step {
        match packet::parse(datagram) {
            Ok(Packet::Ack { block }) => self.on_ack(block, now),
            Ok(Packet::Error { code, message }) => Step::Failed {
                reason: Failure::ClientError { code, message },
                error: None,
            },
            Ok(_) => Step::Failed {
                reason: Failure::IllegalOperation,
                error: Some((ErrorCode::IllegalOperation, "expected an acknowledgement")),
            },
            // A mangled datagram is noise; the timer will recover if it mattered.
            Err(_) => Step::Wait,
        }
    }

    fn on_ack(&mut self, wire: u16, now: Instant) -> Step {
        if self.awaiting_oack_ack {
            if wire != 0 {
                return Step::Wait;
            }
            self.awaiting_oack_ack = false;
            self.retransmits = 0;
            return self.next_window(now);
        }
        // Which block in flight does this acknowledge? Windows never exceed 65535 blocks,
        // so at most one candidate matches the wire number.
        let in_flight = self.acked + 1..=self.sent;
        let Some(block) = in_flight
            .clone()
            .rev()
            .find(|&block| Self::wire_block(block) == wire)
        else {
            // A duplicate (the Sorcerer's Apprentice bug comes from answering these) or a
            // stale ACK: ignore it and let the timer handle real loss.
            return Step::Wait;
        };
        self.acked = block;
        self.retransmits = 0;
        if self.acked == self.last_block {
            return Step::Done;
        }
        // An ACK short of the window's end means the client lost what followed; either way
        // the next window starts after the acknowledged block (RFC 7440).
        self.next_window(now)
    }

    /// Handles the expiry of [`Transfer::deadline`].
    pub fn on_timeout(&mut self, now: Instant) -> Step {
        if now < self.deadline {
            return Step::Wait;
        }
        if self.retransmits >= self.max_retransmits {
            return Step::Failed {
                reason: Failure::TimedOut(self.retransmits),
                error: Some((
                    ErrorCode::NotDefined,
                    "timed out waiting for an acknowledgement",
                )),
            };
        }
        self.retransmits += 1;
        self.deadline = now + self.timeout;
        if self.awaiting_oack_ack {
            return Step::SendOack;
        }
        self.next_window(now)
    }

    fn next_window(&mut self, now: Instant) -> Step {
        let first = self.acked + 1;
        let last = (self.acked + self.windowsize).min(self.last_block);
        self.sent = last;
        self.deadline = now + self.timeout;
        Step::SendBlocks { first, last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::{Mode, encode_ack, encode_error};

    fn request<'a>(options: &[(&'a str, &'a str)]) -> Request<'a> {
        Request {
            filename: "f",
            mode: Mode::Octet,
            options: options.to_vec(),
        }
    }

    fn ack(transfer: &mut Transfer, block: u16, now: Instant) -> Step {
        transfer.on_datagram(&encode_ack(block), now)
    }

    #[test]
    fn options_are_granted_within_limits() {
        let limits = TftpLimits {
            max_blksize: 1468,
            max_windowsize: 8,
            ..TftpLimits::default()
        };
        let n = negotiate(
            &request(&[
                ("BLKSIZE", "8192"),
                ("tsize", "0"),
                ("windowsize", "64"),
                ("timeout", "3"),
                ("multicast", ""),
            ]),
            &limits,
            12345,
        );
        assert_eq!((n.blksize, n.windowsize), (1468, 8));
        assert_eq!(n.timeout, Duration::from_secs(3));
        let oack = n.oack.unwrap();
        assert_eq!(
            packet::parse(&oack).unwrap(),
            Packet::OptionAck(vec![
                ("blksize", "1468"),
                ("tsize", "12345"),
                ("windowsize", "8"),
                ("timeout", "3")
            ])
        );
    }

    #[test]
    fn invalid_option_values_are_ignored() {
        let n = negotiate(
            &request(&[
                ("blksize", "7"),
                ("windowsize", "0"),
                ("timeout", "0"),
                ("timeout", "256"),
                ("tsize", "x"),
                ("blksize", "nope"),
            ]),
            &TftpLimits::default(),
            1,
        );
        assert_eq!((n.blksize, n.windowsize), (512, 1));
        assert_eq!(n.oack, None);
    }

    #[test]
    fn a_plain_transfer_sends_one_block_per_ack_and_ends_with_a_short_block() {
        let now = Instant::now();
        let n = negotiate(&request(&[]), &TftpLimits::default(), 1024);
        let (mut t, step) = Transfer::start(n, &TftpLimits::default(), 1024, now);
        assert_eq!(step, Step::SendBlocks { first: 1, last: 1 });
        assert_eq!(ack(&mut t, 1, now), Step::SendBlocks { first: 2, last: 2 });
        // 1024 is a multiple of 512, so an empty third block ends the transfer.
        assert_eq!(ack(&mut t, 2, now), Step::SendBlocks { first: 3, last: 3 });
        assert_eq!(t.block_span(3), (1024, 0));
        assert_eq!(ack(&mut t, 3, now), Step::Done);
    }

    #[test]
    fn duplicate_acks_never_trigger_retransmission() {
        let now = Instant::now();
        let n = negotiate(&request(&[]), &TftpLimits::default(), 5000);
        let (mut t, _) = Transfer::start(n, &TftpLimits::default(), 5000, now);
        assert_eq!(ack(&mut t, 1, now), Step::SendBlocks { first: 2, last: 2 });
        assert_eq!(ack(&mut t, 1, now), Step::Wait);
        assert_eq!(ack(&mut t, 0, now), Step::Wait);
        assert_eq!(ack(&mut t, 9, now), Step::Wait);
    }

    #[test]
    fn windows_restart_after_a_partial_ack_and_on_timeout() {
        let limits = TftpLimits::default();
        let now = Instant::now();
        let n = negotiate(
            &request(&[("windowsize", "4"), ("blksize", "100")]),
            &limits,
            1000,
        );
        let (mut t, step) = Transfer::start(n, &limits, 1000, now);
        assert_eq!(step, Step::SendOack);
        assert_eq!(ack(&mut t, 0, now), Step::SendBlocks { first: 1, last: 4 });
        // The client lost block 3: it acknowledges 2, and the window restarts at 3.
        assert_eq!(ack(&mut t, 2, now), Step::SendBlocks { first: 3, last: 6 });
        // Silence: the whole window from the first unacknowledged block is resent.
        let later = t.deadline();
        assert_eq!(t.on_timeout(later), Step::SendBlocks { first: 3, last: 6 });
        assert_eq!(
            ack(&mut t, 6, later),
            Step::SendBlocks { first: 7, last: 10 }
        );
        assert_eq!(
            ack(&mut t, 10, later),
            Step::SendBlocks {
                first: 11,
                last: 11
            }
        );
        assert_eq!(t.block_span(11), (1000, 0));
        assert_eq!(ack(&mut t, 11, later), Step::Done);
    }

    #[test]
    fn the_oack_is_resent_until_acknowledged_then_the_transfer_gives_up() {
        let limits = TftpLimits {
            max_retransmits: 2,
            ..TftpLimits::default()
        };
        let now = Instant::now();
        let n = negotiate(&request(&[("tsize", "0")]), &limits, 10);
        let (mut t, step) = Transfer::start(n, &limits, 10, now);
        assert_eq!(step, Step::SendOack);
        assert_eq!(t.on_timeout(now), Step::Wait, "not yet due");
        assert_eq!(t.on_timeout(t.deadline()), Step::SendOack);
        assert_eq!(t.on_timeout(t.deadline()), Step::SendOack);
        assert!(matches!(
            t.on_timeout(t.deadline()),
            Step::Failed {
                reason: Failure::TimedOut(2),
                ..
            }
        ));
    }

    #[test]
    fn block_numbers_wrap_after_65535() {
        let limits = TftpLimits::default();
        let now = Instant::now();
        let size = 512 * 70_000;
        let n = negotiate(&request(&[]), &limits, size);
        let (mut t, _) = Transfer::start(n, &limits, size, now);
        for block in 1..=65_537u64 {
            let step = ack(&mut t, Transfer::wire_block(block), now);
            assert_eq!(
                step,
                Step::SendBlocks {
                    first: block + 1,
                    last: block + 1
                }
            );
        }
        assert_eq!(Transfer::wire_block(65_536), 0);
        assert_eq!(t.block_span(65_538), (512 * 65_537, 512));
    }

    #[test]
    fn client_errors_and_stray_packets_end_the_transfer() {
        let limits = TftpLimits::default();
        let now = Instant::now();
        let n = negotiate(&request(&[]), &limits, 10);
        let (mut t, _) = Transfer::start(n.clone(), &limits, 10, now);
        assert!(matches!(
            t.on_datagram(&encode_error(ErrorCode::DiskFull, "full"), now),
            Step::Failed {
                reason: Failure::ClientError { .. },
                error: None
            }
        ));
        let (mut t, _) = Transfer::start(n, &limits, 10, now);
        assert!(matches!(
            t.on_datagram(&packet::data_header(1), now),
            Step::Failed {
                reason: Failure::IllegalOperation,
                ..
            }
        ));
        assert_eq!(t.on_datagram(&[0xff], now), Step::Wait);
    }
}
