//! The RMCP+ session as a sans-IO state machine.
//!
//! [`Handshake`] turns datagrams from the BMC into datagrams to send, from Get Channel
//! Authentication Capabilities through Open Session, RAKP 1–4 (walking the configured cipher
//! suites down on the statuses that mean "not this suite") to Set Session Privilege Level.
//! It ends in a [`Session`], which seals requests (AES-CBC-128 plus the integrity trailer,
//! fresh session sequence numbers) and opens responses (constant-time integrity check,
//! replay window, decryption). Neither owns a socket or a clock: the driver in `client.rs`
//! sends, waits, retransmits and times out.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use thiserror::Error;

use crate::{BmcError, Credentials};

use super::Privilege;
use super::commands::{self, AuthCapabilities, Request};
use super::crypto::{CipherSuite, RakpTranscript, SessionKeys, constant_time_eq};
use super::rakp::{
    OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp4, encode_rakp3, status_meaning,
    status_rejects_suite,
};
use super::wire::{
    self, CodecError, Packet, PayloadType, Response, RmcpPlusHeader, RmcpPlusPacket,
};

/// IPMI limits a user name to 16 bytes and an RMCP+ password (Kuid) to 20.
const MAX_USERNAME: usize = 16;
const MAX_PASSWORD: usize = 20;
/// RAKP 1 role bit: look the user up by name only, not by name and privilege.
const NAME_ONLY_LOOKUP: u8 = 0x10;

/// The outcome of feeding one datagram to a [`Handshake`].
#[derive(Debug)]
pub enum Progress {
    /// Send this datagram next.
    Send(Vec<u8>),
    /// The datagram was not the awaited reply (a late duplicate, another session's packet,
    /// garbage); keep waiting. The reason helps explain a timeout.
    Ignored(String),
    /// The session is ready for commands.
    Established(Box<Session>),
}

enum Step {
    AuthCapabilities,
    OpenSession {
        suite_index: usize,
        console_session_id: u32,
    },
    Rakp2 {
        suite: CipherSuite,
        console_session_id: u32,
        bmc_session_id: u32,
        console_random: [u8; 16],
    },
    Rakp4 {
        suite: CipherSuite,
        transcript: Box<OwnedTranscript>,
        keys: SessionKeys,
    },
    Privilege {
        session: Box<Session>,
        rq_seq: u8,
    },
    Finished,
}

/// The RAKP transcript kept between messages 2 and 4.
struct OwnedTranscript {
    console_session_id: u32,
    bmc_session_id: u32,
    console_random: [u8; 16],
    bmc_random: [u8; 16],
    bmc_guid: [u8; 16],
    role: u8,
}

/// RMCP+ session establishment for one login.
pub struct Handshake {
    credentials: Credentials,
    privilege: Privilege,
    suites: Vec<CipherSuite>,
    step: Step,
    tag: u8,
    /// The datagram of the current step, resent verbatim on retransmission.
    pending: Vec<u8>,
    rng: StdRng,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("username", &self.credentials.username())
            .field("privilege", &self.privilege)
            .field("suites", &self.suites)
            .field("step", &self.step_name())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Prepares a login; fails before sending anything when IPMI cannot carry the credentials.
    pub fn new(
        credentials: Credentials,
        privilege: Privilege,
        suites: Vec<CipherSuite>,
        rng: StdRng,
    ) -> Result<Self, BmcError> {
        if credentials.username().len() > MAX_USERNAME {
            return Err(BmcError::Unsupported {
                provider: "ipmi",
                capability: "user names longer than 16 bytes",
            });
        }
        if credentials.password().len() > MAX_PASSWORD {
            return Err(BmcError::Unsupported {
                provider: "ipmi",
                capability: "passwords longer than 20 bytes",
            });
        }
        if suites.is_empty() {
            return Err(BmcError::Unsupported {
                provider: "ipmi",
                capability: "logins without a cipher suite (configure 17 and/or 3)",
            });
        }
        let mut handshake = Handshake {
            credentials,
            privilege,
            suites,
            step: Step::AuthCapabilities,
            tag: 0,
            pending: Vec::new(),
            rng,
        };
        let request = commands::get_channel_auth_capabilities(privilege);
        handshake.pending = wire::encode_v15_sessionless(&wire::encode_request(
            request.netfn,
            request.cmd,
            0,
            &request.data,
        ));
        Ok(handshake)
    }

    /// The datagram to send for the current step: call it to start, and again to retransmit
    /// after a timeout.
    pub fn datagram(&mut self) -> Vec<u8> {
        if let Step::Privilege { session, rq_seq } = &mut self.step {
            // Inside the session every transmission needs a fresh session sequence number.
            self.pending = session.seal(&commands::set_session_privilege(self.privilege), *rq_seq);
        }
        self.pending.clone()
    }

    /// What the handshake is waiting for, for logs and timeout errors.
    pub fn step_name(&self) -> &'static str {
        match self.step {
            Step::AuthCapabilities => "Get Channel Authentication Capabilities",
            Step::OpenSession { .. } => "RMCP+ Open Session",
            Step::Rakp2 { .. } => "RAKP message 2",
            Step::Rakp4 { .. } => "RAKP message 4",
            Step::Privilege { .. } => "Set Session Privilege Level",
            Step::Finished => "nothing (finished)",
        }
    }

    /// The cipher suite being tried, once Open Session has been sent.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        match &self.step {
            Step::AuthCapabilities | Step::Finished => None,
            Step::OpenSession { suite_index, .. } => self.suites.get(*suite_index).copied(),
            Step::Rakp2 { suite, .. } | Step::Rakp4 { suite, .. } => Some(*suite),
            Step::Privilege { session, .. } => Some(session.suite),
        }
    }

    /// Feeds one datagram from the BMC. An error ends the login.
    pub fn handle(&mut self, datagram: &[u8]) -> Result<Progress, BmcError> {
        let packet = match wire::decode(datagram) {
            Ok(packet) => packet,
            Err(err) => return Ok(Progress::Ignored(err.to_string())),
        };
        let step = std::mem::replace(&mut self.step, Step::Finished);
        let (next, progress) = match step {
            Step::AuthCapabilities => self.on_auth_capabilities(&packet)?,
            Step::OpenSession {
                suite_index,
                console_session_id,
            } => self.on_open_session(&packet, suite_index, console_session_id)?,
            Step::Rakp2 {
                suite,
                console_session_id,
                bmc_session_id,
                console_random,
            } => self.on_rakp2(
                &packet,
                suite,
                console_session_id,
                bmc_session_id,
                console_random,
            )?,
            Step::Rakp4 {
                suite,
                transcript,
                keys,
            } => self.on_rakp4(&packet, suite, transcript, keys)?,
            Step::Privilege {
                mut session,
                rq_seq,
            } => match session.open(datagram) {
                Ok(response)
                    if response.rq_seq == rq_seq
                        && commands::set_session_privilege(self.privilege)
                            .is_answered_by(&response) =>
                {
                    if response.completion_code != 0 {
                        return Err(commands::completion_error(
                            "Set Session Privilege Level",
                            response.completion_code,
                        ));
                    }
                    (Step::Finished, Progress::Established(session))
                }
                Ok(_) => (
                    Step::Privilege { session, rq_seq },
                    Progress::Ignored("a response to an earlier request".into()),
                ),
                Err(err) => (
                    Step::Privilege { session, rq_seq },
                    Progress::Ignored(err.to_string()),
                ),
            },
            Step::Finished => (Step::Finished, Progress::Ignored("login finished".into())),
        };
        self.step = next;
        if let Progress::Send(datagram) = &progress {
            self.pending.clone_from(datagram);
        }
        Ok(progress)
    }

    fn on_auth_capabilities(&mut self, packet: &Packet<'_>) -> Result<(Step, Progress), BmcError> {
        let message = match packet {
            Packet::V15 { message, .. } => *message,
            Packet::RmcpPlus(RmcpPlusPacket {
                payload_type: PayloadType::Ipmi,
                session_id: 0,
                authenticated: false,
                encrypted: false,
                payload,
                ..
            }) => payload,
            Packet::RmcpPlus(_) => {
                return Ok(ignored(
                    Step::AuthCapabilities,
                    "an RMCP+ packet before any session",
                ));
            }
        };
        let request = commands::get_channel_auth_capabilities(self.privilege);
        let response = match wire::decode_response(message) {
            Ok(response) if request.is_answered_by(&response) => response,
            Ok(_) => {
                return Ok(ignored(
                    Step::AuthCapabilities,
                    "a response to another command",
                ));
            }
            Err(err) => return Ok(ignored(Step::AuthCapabilities, &err.to_string())),
        };
        let capabilities = AuthCapabilities::decode(&response.into_data(&request)?)?;
        if !capabilities.ipmi_v2 {
            return Err(BmcError::Unsupported {
                provider: "this BMC",
                capability: "IPMI 2.0 (RMCP+) logins; enable IPMI over LAN 2.0",
            });
        }
        if capabilities.kg_set {
            return Err(BmcError::Unsupported {
                provider: "ipmi",
                capability: "BMCs with a BMC key (Kg) set",
            });
        }
        Ok(self.open_session(0))
    }

    fn open_session(&mut self, suite_index: usize) -> (Step, Progress) {
        let console_session_id = self.nonzero_id();
        let request = OpenSessionRequest {
            tag: self.next_tag(),
            max_privilege: self.privilege.code(),
            console_session_id,
            suite: self.suites[suite_index],
        };
        let datagram = sessionless(PayloadType::OpenSessionRequest, &request.encode());
        (
            Step::OpenSession {
                suite_index,
                console_session_id,
            },
            Progress::Send(datagram),
        )
    }

    fn on_open_session(
        &mut self,
        packet: &Packet<'_>,
        suite_index: usize,
        console_session_id: u32,
    ) -> Result<(Step, Progress), BmcError> {
        let waiting = Step::OpenSession {
            suite_index,
            console_session_id,
        };
        let response: OpenSessionResponse = match self.awaited(packet, console_session_id) {
            Ok(response) => response,
            Err(reason) => return Ok(ignored(waiting, &reason)),
        };
        let proposed = self.suites[suite_index];
        let Some(accepted) = response.accepted else {
            if status_rejects_suite(response.status) && suite_index + 1 < self.suites.len() {
                tracing::debug!(
                    suite = proposed.id(),
                    status = response.status,
                    "the BMC refused the cipher suite; trying the next one"
                );
                return Ok(self.open_session(suite_index + 1));
            }
            return Err(setup_refused("RMCP+ Open Session", response.status));
        };
        let suite = CipherSuite::from_algorithms(accepted.algorithms)
            .filter(|suite| self.suites.contains(suite))
            .ok_or_else(|| {
                BmcError::Protocol(format!(
                    "asked for cipher suite {}, the BMC chose algorithms {:?}, which are none of the configured suites",
                    proposed.id(),
                    accepted.algorithms
                ))
            })?;
        if suite != proposed {
            // pyghmi's BMC answers every proposal with suite 3; a suite the caller allowed
            // is as good as the one proposed, so take the counter-offer.
            tracing::debug!(
                proposed = proposed.id(),
                chosen = suite.id(),
                "the BMC chose another configured cipher suite"
            );
        }
        let mut console_random = [0u8; 16];
        self.rng.fill_bytes(&mut console_random);
        let rakp1 = Rakp1 {
            tag: self.next_tag(),
            bmc_session_id: accepted.bmc_session_id,
            console_random,
            role: self.role(),
            username: self.credentials.username().as_bytes(),
        };
        Ok((
            Step::Rakp2 {
                suite,
                console_session_id,
                bmc_session_id: accepted.bmc_session_id,
                console_random,
            },
            Progress::Send(sessionless(PayloadType::Rakp1, &rakp1.encode())),
        ))
    }

    fn on_rakp2(
        &mut self,
        packet: &Packet<'_>,
        suite: CipherSuite,
        console_session_id: u32,
        bmc_session_id: u32,
        console_random: [u8; 16],
    ) -> Result<(Step, Progress), BmcError> {
        let waiting = Step::Rakp2 {
            suite,
            console_session_id,
            bmc_session_id,
            console_random,
        };
        let rakp2: Rakp2 = match self.awaited(packet, console_session_id) {
            Ok(rakp2) => rakp2,
            Err(reason) => return Ok(ignored(waiting, &reason)),
        };
        let Some(accepted) = rakp2.accepted else {
            // ipmi_sim reports an unknown user as "illegal parameter".
            if matches!(rakp2.status, 0x0D | 0x0E | 0x12) {
                tracing::debug!(status = rakp2.status, "RAKP 2 refused the user");
                return Err(BmcError::Authentication);
            }
            return Err(setup_refused("RAKP message 1", rakp2.status));
        };
        let transcript = OwnedTranscript {
            console_session_id,
            bmc_session_id,
            console_random,
            bmc_random: accepted.bmc_random,
            bmc_guid: accepted.bmc_guid,
            role: self.role(),
        };
        let kuid = self.credentials.password().as_bytes();
        let view = transcript.view(self.credentials.username().as_bytes());
        if !constant_time_eq(&view.rakp2_code(suite, kuid), &accepted.auth_code) {
            // The BMC hashed a different password: the one configured is wrong (or the
            // BMC is not the one it claims to be).
            return Err(BmcError::Authentication);
        }
        let keys = view.session_keys(suite, kuid);
        let rakp3_code = view.rakp3_code(suite, kuid);
        let rakp3 = encode_rakp3(self.next_tag(), bmc_session_id, &rakp3_code);
        Ok((
            Step::Rakp4 {
                suite,
                transcript: Box::new(transcript),
                keys,
            },
            Progress::Send(sessionless(PayloadType::Rakp3, &rakp3)),
        ))
    }

    fn on_rakp4(
        &mut self,
        packet: &Packet<'_>,
        suite: CipherSuite,
        transcript: Box<OwnedTranscript>,
        keys: SessionKeys,
    ) -> Result<(Step, Progress), BmcError> {
        let rakp4: Rakp4 = match self.awaited(packet, transcript.console_session_id) {
            Ok(rakp4) => rakp4,
            Err(reason) => {
                let waiting = Step::Rakp4 {
                    suite,
                    transcript,
                    keys,
                };
                return Ok(ignored(waiting, &reason));
            }
        };
        if rakp4.status == 0x0F {
            return Err(BmcError::Authentication);
        }
        if rakp4.status != 0 {
            return Err(setup_refused("RAKP message 3", rakp4.status));
        }
        let view = transcript.view(self.credentials.username().as_bytes());
        if !constant_time_eq(&view.rakp4_icv(&keys), &rakp4.icv) {
            return Err(BmcError::Protocol(
                "the RAKP message 4 integrity check failed: the BMC derived other session keys"
                    .into(),
            ));
        }
        let mut session = Session {
            suite,
            keys,
            bmc_session_id: transcript.bmc_session_id,
            console_session_id: transcript.console_session_id,
            next_sequence: 1,
            replay: ReplayWindow::default(),
            next_rq_seq: 0,
            rng: StdRng::from_rng(&mut self.rng),
        };
        tracing::debug!(
            suite = suite.id(),
            bmc_session = session.bmc_session_id,
            "RMCP+ session established"
        );
        // Sessions start at User; anything above has to be asked for.
        if self.privilege.code() <= Privilege::User.code() {
            return Ok((Step::Finished, Progress::Established(Box::new(session))));
        }
        let rq_seq = session.next_rq_seq();
        let datagram = session.seal(&commands::set_session_privilege(self.privilege), rq_seq);
        Ok((
            Step::Privilege {
                session: Box::new(session),
                rq_seq,
            },
            Progress::Send(datagram),
        ))
    }

    /// The session-setup reply this login waits for: the right payload type outside any
    /// session, decodable, and answering the latest message (same tag and, when the BMC
    /// includes it, the same console session ID). Anything else is a reason to ignore it.
    fn awaited<R: SetupReply>(
        &self,
        packet: &Packet<'_>,
        console_session_id: u32,
    ) -> Result<R, String> {
        let payload = match packet {
            Packet::RmcpPlus(packet)
                if packet.payload_type == R::PAYLOAD_TYPE
                    && packet.session_id == 0
                    && !packet.encrypted =>
            {
                packet.payload
            }
            _ => return Err(format!("not the awaited {}", R::NAME)),
        };
        let reply = R::decode(payload).map_err(|err| err.to_string())?;
        if reply.tag() != self.tag
            || reply
                .console_session_id()
                .is_some_and(|id| id != console_session_id)
        {
            return Err(format!("a {} for an earlier message or login", R::NAME));
        }
        Ok(reply)
    }

    fn role(&self) -> u8 {
        self.privilege.code() | NAME_ONLY_LOOKUP
    }

    fn next_tag(&mut self) -> u8 {
        self.tag = self.tag.wrapping_add(1);
        self.tag
    }

    fn nonzero_id(&mut self) -> u32 {
        loop {
            let id: u32 = self.rng.random();
            if id != 0 {
                return id;
            }
        }
    }
}

impl OwnedTranscript {
    fn view<'a>(&self, username: &'a [u8]) -> RakpTranscript<'a> {
        RakpTranscript {
            console_session_id: self.console_session_id,
            bmc_session_id: self.bmc_session_id,
            console_random: self.console_random,
            bmc_random: self.bmc_random,
            bmc_guid: self.bmc_guid,
            role: self.role,
            username,
        }
    }
}

fn ignored(step: Step, reason: &str) -> (Step, Progress) {
    (step, Progress::Ignored(reason.to_owned()))
}

fn setup_refused(operation: &'static str, status: u8) -> BmcError {
    BmcError::IpmiRefused {
        operation,
        code: status,
        meaning: status_meaning(status),
        transient: matches!(status, 0x01 | 0x0B),
    }
}

/// The replies a BMC sends during session set-up.
trait SetupReply: Sized {
    const PAYLOAD_TYPE: PayloadType;
    const NAME: &'static str;
    fn decode(payload: &[u8]) -> Result<Self, CodecError>;
    fn tag(&self) -> u8;
    fn console_session_id(&self) -> Option<u32>;
}

macro_rules! setup_reply {
    ($reply:ty, $payload_type:expr, $name:literal) => {
        impl SetupReply for $reply {
            const PAYLOAD_TYPE: PayloadType = $payload_type;
            const NAME: &'static str = $name;
            fn decode(payload: &[u8]) -> Result<Self, CodecError> {
                <$reply>::decode(payload)
            }
            fn tag(&self) -> u8 {
                self.tag
            }
            fn console_session_id(&self) -> Option<u32> {
                self.console_session_id
            }
        }
    };
}

setup_reply!(
    OpenSessionResponse,
    PayloadType::OpenSessionResponse,
    "Open Session response"
);
setup_reply!(Rakp2, PayloadType::Rakp2, "RAKP message 2");
setup_reply!(Rakp4, PayloadType::Rakp4, "RAKP message 4");

fn sessionless(payload_type: PayloadType, payload: &[u8]) -> Vec<u8> {
    wire::encode_rmcp_plus(
        RmcpPlusHeader {
            payload_type,
            encrypted: false,
            authenticated: false,
            session_id: 0,
            sequence: 0,
        },
        payload,
    )
}

/// Why a datagram was not accepted as a response in an established session.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the packet belongs to another session")]
    OtherSession,
    #[error("the packet is not an encrypted, authenticated IPMI message")]
    Unprotected,
    #[error("the integrity code does not match")]
    Integrity,
    #[error("session sequence number {0} was already seen or is too old (replay)")]
    Replayed(u32),
}

/// An established RMCP+ session: seals requests and opens responses.
pub struct Session {
    suite: CipherSuite,
    keys: SessionKeys,
    bmc_session_id: u32,
    console_session_id: u32,
    next_sequence: u32,
    replay: ReplayWindow,
    next_rq_seq: u8,
    rng: StdRng,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("suite", &self.suite)
            .field("bmc_session_id", &self.bmc_session_id)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over keys derived from `sik`, without a handshake: for the fuzz target.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_sik(suite: CipherSuite, sik: &[u8], console_session_id: u32) -> Self {
        Session {
            suite,
            keys: SessionKeys::from_sik(suite, sik),
            bmc_session_id: 0x0102_0304,
            console_session_id,
            next_sequence: 1,
            replay: ReplayWindow::default(),
            next_rq_seq: 0,
            rng: StdRng::seed_from_u64(0),
        }
    }

    /// A datagram as the BMC would send it in this session: `payload` encrypted (or, with
    /// `encrypt` false, taken as already-encrypted bytes) and signed. For tests and the
    /// fuzz target, which cannot forge integrity codes and still need to reach the
    /// decryption and message decoders.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn seal_as_bmc(&self, sequence: u32, payload: &[u8], encrypt: bool) -> Vec<u8> {
        let payload = if encrypt {
            self.keys.encrypt(payload, [3; 16])
        } else {
            payload.to_vec()
        };
        let mut datagram = wire::encode_rmcp_plus(
            RmcpPlusHeader {
                payload_type: PayloadType::Ipmi,
                encrypted: true,
                authenticated: true,
                session_id: self.console_session_id,
                sequence,
            },
            &payload,
        );
        let code = self.keys.integrity_code(wire::integrity_covered(&datagram));
        datagram.extend_from_slice(&code);
        datagram
    }

    pub fn cipher_suite(&self) -> CipherSuite {
        self.suite
    }

    /// The BMC's ID for this session.
    pub fn bmc_session_id(&self) -> u32 {
        self.bmc_session_id
    }

    /// A requester sequence number for a new request; its retransmissions reuse it.
    pub fn next_rq_seq(&mut self) -> u8 {
        let rq_seq = self.next_rq_seq;
        self.next_rq_seq = (self.next_rq_seq + 1) & 0x3F;
        rq_seq
    }

    /// Encrypts and signs `request` into a datagram with the next session sequence number.
    pub fn seal(&mut self, request: &Request, rq_seq: u8) -> Vec<u8> {
        let message = wire::encode_request(request.netfn, request.cmd, rq_seq, &request.data);
        let mut iv = [0u8; 16];
        self.rng.fill_bytes(&mut iv);
        let payload = self.keys.encrypt(&message, iv);
        let sequence = self.next_sequence;
        // Zero means "outside a session"; a session this long-lived is re-established first.
        self.next_sequence = self.next_sequence.wrapping_add(1).max(1);
        let mut datagram = wire::encode_rmcp_plus(
            RmcpPlusHeader {
                payload_type: PayloadType::Ipmi,
                encrypted: true,
                authenticated: true,
                session_id: self.bmc_session_id,
                sequence,
            },
            &payload,
        );
        let code = self.keys.integrity_code(wire::integrity_covered(&datagram));
        datagram.extend_from_slice(&code);
        datagram
    }

    /// Verifies, decrypts and decodes a datagram from the BMC.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Response, SessionError> {
        let Packet::RmcpPlus(packet) = wire::decode(datagram)? else {
            return Err(SessionError::OtherSession);
        };
        if packet.session_id != self.console_session_id {
            return Err(SessionError::OtherSession);
        }
        if packet.payload_type != PayloadType::Ipmi || !packet.authenticated || !packet.encrypted {
            return Err(SessionError::Unprotected);
        }
        let (covered, code) = packet.integrity_parts(self.suite.integrity_len())?;
        if !self.keys.integrity_matches(covered, code) {
            return Err(SessionError::Integrity);
        }
        // Only authentic packets move the window, so a forger cannot push it forward.
        if !self.replay.accept(packet.sequence) {
            return Err(SessionError::Replayed(packet.sequence));
        }
        let message = self.keys.decrypt(packet.payload)?;
        Ok(wire::decode_response(&message)?)
    }

    /// A sealed Close Session request (the BMC's answer does not matter).
    pub fn close_datagram(&mut self) -> Vec<u8> {
        let rq_seq = self.next_rq_seq();
        self.seal(&commands::close_session(self.bmc_session_id), rq_seq)
    }
}

/// The last 32 inbound session sequence numbers, so duplicates and replays are dropped
/// (IPMI 2.0 §6.12.13 asks for a window of at least 8 behind the highest seen).
#[derive(Debug, Default, Clone, Copy)]
struct ReplayWindow {
    highest: u32,
    /// Bit `n` set: `highest - n` was seen.
    seen: u32,
}

impl ReplayWindow {
    fn accept(&mut self, sequence: u32) -> bool {
        if sequence == 0 {
            return false;
        }
        if sequence > self.highest {
            let shift = sequence - self.highest;
            self.seen = if shift >= 32 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = sequence;
            return true;
        }
        let age = self.highest - sequence;
        if age >= 32 || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_drops_duplicates_and_old_numbers() {
        let mut window = ReplayWindow::default();
        assert!(!window.accept(0));
        assert!(window.accept(1));
        assert!(!window.accept(1));
        assert!(window.accept(5));
        assert!(window.accept(3), "late but inside the window");
        assert!(!window.accept(3));
        assert!(window.accept(100));
        assert!(!window.accept(60), "older than 32 behind");
        assert!(window.accept(90));
    }

    fn chassis_status_response(rq_seq: u8) -> Vec<u8> {
        let mut message = vec![0x81, 0x04, 0x7B, 0x20, rq_seq << 2, 0x01, 0x00, 0x01, 0, 0];
        let sum = message[3..].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        message.push(0u8.wrapping_sub(sum));
        message
    }

    #[test]
    fn open_accepts_a_reply_once_and_rejects_tampering() {
        for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
            let mut session = Session::from_sik(suite, &[0x42; 20], 77);
            let reply = session.seal_as_bmc(1, &chassis_status_response(5), true);
            let response = session.open(&reply).unwrap();
            assert_eq!((response.netfn, response.cmd, response.rq_seq), (1, 1, 5));
            assert_eq!(response.data, [1, 0, 0]);
            assert!(matches!(
                session.open(&reply),
                Err(SessionError::Replayed(1))
            ));

            let mut tampered = session.seal_as_bmc(2, &chassis_status_response(6), true);
            tampered[20] ^= 0x01;
            assert!(matches!(
                session.open(&tampered),
                Err(SessionError::Integrity)
            ));
            // The untampered packet with the same number is still accepted afterwards.
            let good = session.seal_as_bmc(2, &chassis_status_response(6), true);
            assert!(session.open(&good).is_ok());
        }
    }

    #[test]
    fn sealed_requests_carry_fresh_sequence_numbers() {
        let mut session = Session::from_sik(CipherSuite::Suite17, &[1; 32], 9);
        let request = commands::get_chassis_status();
        let first = session.seal(&request, 0);
        let second = session.seal(&request, 0);
        let sequence = |datagram: &[u8]| match wire::decode(datagram).unwrap() {
            Packet::RmcpPlus(packet) => packet.sequence,
            Packet::V15 { .. } => panic!("expected RMCP+"),
        };
        assert_eq!((sequence(&first), sequence(&second)), (1, 2));
        // The integrity code is the truncated HMAC over the covered bytes.
        let code = &first[first.len() - 16..];
        assert_eq!(
            session
                .keys
                .integrity_code(&first[4..first.len() - 16])
                .as_slice(),
            code
        );
    }

    #[test]
    fn credentials_ipmi_cannot_carry_are_refused_up_front() {
        let rng = StdRng::seed_from_u64(1);
        let long_name = Credentials::new("a-user-name-longer-than-16", "pw");
        let err = Handshake::new(
            long_name,
            Privilege::Administrator,
            vec![CipherSuite::Suite3],
            rng.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
        let long_password = Credentials::new("admin", "a-password-longer-than-20-bytes");
        let err = Handshake::new(
            long_password,
            Privilege::Administrator,
            vec![CipherSuite::Suite3],
            rng,
        )
        .unwrap_err();
        assert!(err.to_string().contains("20 bytes"), "{err}");
        assert!(!err.to_string().contains("a-password-longer"));
    }

    /// A Get Channel Authentication Capabilities answer as a BMC frames it.
    fn auth_capabilities_reply(auth_types: u8, status: u8, extended: u8) -> Vec<u8> {
        let mut message = vec![0x81, 0x1C, 0x63, 0x20, 0x00, 0x38, 0x00];
        message.extend_from_slice(&[0x01, auth_types, status, extended, 0, 0, 0, 0]);
        let sum = message[3..].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        message.push(0u8.wrapping_sub(sum));
        wire::encode_v15_sessionless(&message)
    }

    fn handshake() -> Handshake {
        Handshake::new(
            Credentials::new("admin", "password"),
            Privilege::Administrator,
            vec![CipherSuite::Suite17, CipherSuite::Suite3],
            StdRng::seed_from_u64(2),
        )
        .unwrap()
    }

    #[test]
    fn bmcs_without_ipmi_2_or_with_a_bmc_key_are_refused_before_open_session() {
        // Extended capabilities present and IPMI 2.0 supported: on to Open Session.
        let mut ok = handshake();
        assert!(matches!(
            ok.handle(&auth_capabilities_reply(0x80, 0x04, 0x02))
                .unwrap(),
            Progress::Send(_)
        ));
        assert_eq!(ok.step_name(), "RMCP+ Open Session");
        assert_eq!(ok.cipher_suite(), Some(CipherSuite::Suite17));

        let err = handshake()
            .handle(&auth_capabilities_reply(0x14, 0x04, 0x00))
            .unwrap_err();
        assert!(err.to_string().contains("IPMI 2.0"), "{err}");
        let err = handshake()
            .handle(&auth_capabilities_reply(0x80, 0x24, 0x02))
            .unwrap_err();
        assert!(err.to_string().contains("Kg"), "{err}");
    }

    #[test]
    fn garbage_is_ignored_not_fatal() {
        let mut handshake = handshake();
        let first = handshake.datagram();
        assert_eq!(&first[..5], &[0x06, 0x00, 0xFF, 0x07, 0x00]);
        for garbage in [&b""[..], b"\x06\x00\xff\x07", b"hello world, not ipmi"] {
            assert!(matches!(
                handshake.handle(garbage).unwrap(),
                Progress::Ignored(_)
            ));
        }
        assert_eq!(
            handshake.step_name(),
            "Get Channel Authentication Capabilities"
        );
        assert_eq!(
            handshake.datagram(),
            first,
            "retransmission repeats the request"
        );
    }
}
