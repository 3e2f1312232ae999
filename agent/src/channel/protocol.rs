//! The agent channel's wire format: JSON text messages on one WebSocket, plus the
//! handshake headers that identify the agent before the engine agrees to upgrade.
//!
//! The agent opens `GET` [`CONNECT_PATH`] over TLS with its per-deployment token in the
//! `Authorization` header (`Bearer <token>`, never in the URL) and its [`Hello`] in the
//! `rivet-agent-*` headers. The engine looks the host up by MAC address (or by host id),
//! checks the token against its stored hash in constant time and only then answers
//! `101 Switching Protocols`; an unknown agent gets `401` and no WebSocket at all.
//!
//! After the upgrade the engine sends [`EngineMessage`]s (commands with request ids) and the
//! agent answers with [`AgentMessage`]s (progress and one result per command).

use rivet_model::{HardwareDetails, RootDeviceHints};
use serde::{Deserialize, Serialize};

/// The path the agent connects to.
pub const CONNECT_PATH: &str = "/v1/agent/connect";
/// The WebSocket subprotocol both sides insist on, so a protocol change is refused at the
/// handshake instead of failing on the first message.
pub const SUBPROTOCOL: &str = "rivet-agent.v1";
/// Comma-separated MAC addresses of the agent's machine (`aa:bb:cc:dd:ee:ff`).
pub const HEADER_MACS: &str = "rivet-agent-macs";
/// The host id, when the agent was told it (virtual-media ISOs carry it).
pub const HEADER_HOST: &str = "rivet-agent-host";
/// The agent's version.
pub const HEADER_VERSION: &str = "rivet-agent-version";
/// The largest message either side accepts; an inventory or a config drive is far smaller.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// At most this many MAC addresses are read from a hello.
pub const MAX_MACS: usize = 64;

/// A hello the engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    #[error("the agent sent no MAC address and no host id")]
    NoIdentity,
    #[error("`{0}` is not a MAC address (expected aa:bb:cc:dd:ee:ff)")]
    BadMac(String),
    #[error("more than {MAX_MACS} MAC addresses")]
    TooManyMacs,
    #[error("the host id is not printable ASCII of at most 64 characters")]
    BadHost,
    #[error("the version is not printable ASCII of at most 64 characters")]
    BadVersion,
}

/// Who the agent is, sent as handshake headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// Lowercase `aa:bb:cc:dd:ee:ff` addresses of the machine's NICs.
    pub macs: Vec<String>,
    /// The engine's id for the host, if the boot medium said it.
    pub host: Option<String>,
    pub agent_version: String,
}

impl Hello {
    /// The handshake headers carrying this hello.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (HEADER_MACS, self.macs.join(",")),
            (HEADER_VERSION, self.agent_version.clone()),
        ];
        if let Some(host) = &self.host {
            headers.push((HEADER_HOST, host.clone()));
        }
        headers
    }

    /// Reads a hello from handshake headers; `header` returns a header's value by name.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<Self, HelloError> {
        let mut macs = Vec::new();
        for mac in header(HEADER_MACS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|mac| !mac.is_empty())
        {
            if macs.len() == MAX_MACS {
                return Err(HelloError::TooManyMacs);
            }
            macs.push(normalize_mac(mac).ok_or_else(|| HelloError::BadMac(printable(mac)))?);
        }
        let host = match header(HEADER_HOST).map(str::trim) {
            Some(host) if !short_printable(host) => return Err(HelloError::BadHost),
            Some(host) if !host.is_empty() => Some(host.to_owned()),
            _ => None,
        };
        let agent_version = header(HEADER_VERSION).unwrap_or_default().trim().to_owned();
        if !short_printable(&agent_version) {
            return Err(HelloError::BadVersion);
        }
        if macs.is_empty() && host.is_none() {
            return Err(HelloError::NoIdentity);
        }
        Ok(Self {
            macs,
            host,
            agent_version,
        })
    }
}

/// `AA-BB-…` or `aa:bb:…` → `aa:bb:cc:dd:ee:ff`; `None` if it is not a MAC address.
pub fn normalize_mac(text: &str) -> Option<String> {
    let octets: Vec<&str> = text.split([':', '-']).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| octets.join(":").to_ascii_lowercase())
}

fn short_printable(text: &str) -> bool {
    text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic())
}

/// A bounded, printable rendering of untrusted text for error messages.
fn printable(text: &str) -> String {
    text.chars()
        .take(40)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Engine → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EngineMessage {
    /// Do `command` and answer with one [`AgentMessage::Result`] carrying `id`.
    Command { id: u64, command: Command },
}

/// What the engine asks the agent to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Report the machine's hardware.
    Inspect,
    /// Clean the disks.
    Clean { policy: CleanPolicy },
    /// Write an image (and config drive) to the root device.
    Deploy(Box<DeployJob>),
    /// The engine is done with this agent: answer, then stop (do not reconnect).
    Release,
}

impl Command {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Inspect => "inspect",
            Self::Clean { .. } => "clean",
            Self::Deploy(_) => "deploy",
            Self::Release => "release",
        }
    }
}

/// How disks are cleaned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanMode {
    /// Wipe partition tables and filesystem signatures.
    #[default]
    Metadata,
    /// Overwrite or securely erase whole disks.
    Erase,
}

/// Which disks to clean, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanPolicy {
    pub mode: CleanMode,
    /// `/dev/…` or by-path names; empty means every disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
}

/// The image to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSource {
    pub url: String,
    /// Hex digest; `checksum_type` names the algorithm (guessed from the length if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// `md5`, `sha256`, `sha512` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    /// `raw`, `qcow2`, `vdi`, `vmdk` or `live-iso`; sniffed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// The config drive's contents.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigDriveData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data: Option<String>,
    #[serde(default)]
    pub meta_data: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for ConfigDriveData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // User data routinely holds secrets; never print it.
        f.debug_struct("ConfigDriveData")
            .field("user_data", &self.user_data.as_ref().map(|_| "<redacted>"))
            .field(
                "network_data",
                &self.network_data.as_ref().map(|_| "<redacted>"),
            )
            .field("meta_data_keys", &self.meta_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Everything a deployment needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployJob {
    pub image: ImageSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,
    /// `UEFI`, `UEFISecureBoot` or `legacy`.
    pub boot_mode: String,
    pub config_drive: ConfigDriveData,
}

/// Agent → engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// How command `id` is getting on.
    Progress {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
        message: String,
    },
    /// How command `id` ended.
    Result { id: u64, outcome: Outcome },
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Inspection's answer.
    Inspected {
        inventory: Box<HardwareDetails>,
    },
    /// Clean, deploy or release finished.
    Done,
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// Why a command failed; decides whether the engine retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// Worth retrying as is (an image server that timed out, a 5xx).
    Transient,
    /// This machine or agent cannot do it.
    Unsupported,
    /// Another command is still running.
    Busy,
    /// The command was malformed.
    Invalid,
    /// Anything else (image 404, checksum mismatch, disk error).
    Failed,
}

/// A message either side could not read.
#[derive(Debug, thiserror::Error)]
#[error("malformed agent-channel message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl EngineMessage {
    pub fn encode(&self) -> String {
        encode(self)
    }

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        Ok(serde_json::from_str(text)?)
    }
}

impl AgentMessage {
    pub fn encode(&self) -> String {
        encode(self)
    }

    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        Ok(serde_json::from_str(text)?)
    }
}

fn encode(message: &impl Serialize) -> String {
    // Every message is plain data (strings, numbers, maps with string keys), for which
    // serde_json cannot fail; the fallback is never produced.
    serde_json::to_string(message).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_round_trip_in_their_documented_shape() {
        let deploy = EngineMessage::Command {
            id: 7,
            command: Command::Deploy(Box::new(DeployJob {
                image: ImageSource {
                    url: "https://images.example/os.qcow2".into(),
                    checksum: Some("ab".repeat(32)),
                    checksum_type: Some("sha256".into()),
                    format: Some("qcow2".into()),
                },
                root_device_hints: Some(RootDeviceHints {
                    device_name: Some("/dev/sda".into()),
                    ..RootDeviceHints::default()
                }),
                boot_mode: "UEFI".into(),
                config_drive: ConfigDriveData {
                    user_data: Some("#cloud-config\n".into()),
                    ..ConfigDriveData::default()
                },
            })),
        };
        let text = deploy.encode();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["type"], "command");
        assert_eq!(json["command"]["kind"], "deploy");
        assert_eq!(json["command"]["rootDeviceHints"]["deviceName"], "/dev/sda");
        assert_eq!(EngineMessage::decode(&text).unwrap(), deploy);

        let clean = EngineMessage::decode(
            r#"{"type":"command","id":1,"command":{"kind":"clean","policy":{"mode":"erase"}}}"#,
        )
        .unwrap();
        assert_eq!(
            clean,
            EngineMessage::Command {
                id: 1,
                command: Command::Clean {
                    policy: CleanPolicy {
                        mode: CleanMode::Erase,
                        disks: vec![]
                    }
                }
            }
        );

        let result = AgentMessage::Result {
            id: 3,
            outcome: Outcome::Failed {
                kind: FailureKind::Busy,
                message: "deploy 2 is running".into(),
            },
        };
        let text = result.encode();
        assert!(text.contains(r#""status":"failed""#), "{text}");
        assert_eq!(AgentMessage::decode(&text).unwrap(), result);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for text in [
            "",
            "{",
            "[]",
            r#"{"type":"command"}"#,
            r#"{"type":"command","id":-1,"command":{"kind":"inspect"}}"#,
            r#"{"type":"command","id":1,"command":{"kind":"format_c"}}"#,
            r#"{"type":"command","id":1,"command":{"kind":"inspect"},"extra":1}"#,
        ] {
            assert!(EngineMessage::decode(text).is_err(), "{text}");
        }
        assert!(AgentMessage::decode(r#"{"type":"result","id":1}"#).is_err());
    }

    #[test]
    fn hellos_are_validated() {
        let hello = Hello {
            macs: vec!["52:54:00:12:34:56".into(), "52:54:00:12:34:57".into()],
            host: Some("0123abcd".into()),
            agent_version: "0.1.0".into(),
        };
        let headers = hello.headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(Hello::from_headers(get).unwrap(), hello);

        let only = |macs: &'static str| move |name: &str| (name == HEADER_MACS).then_some(macs);
        assert_eq!(
            Hello::from_headers(only("52-54-00-AA-BB-CC")).unwrap().macs,
            vec!["52:54:00:aa:bb:cc"]
        );
        assert_eq!(
            Hello::from_headers(only("")).unwrap_err(),
            HelloError::NoIdentity
        );
        assert!(matches!(
            Hello::from_headers(only("52:54:00:aa:bb")).unwrap_err(),
            HelloError::BadMac(_)
        ));
        assert!(matches!(
            Hello::from_headers(only("zz:54:00:aa:bb:cc\n")).unwrap_err(),
            HelloError::BadMac(_)
        ));
        let many = vec!["52:54:00:aa:bb:cc"; MAX_MACS + 1].join(",");
        let too_many = |name: &str| (name == HEADER_MACS).then_some(many.as_str());
        assert_eq!(
            Hello::from_headers(too_many).unwrap_err(),
            HelloError::TooManyMacs
        );
        let bad_host = |name: &str| (name == HEADER_HOST).then_some("host id with spaces and more");
        assert_eq!(
            Hello::from_headers(bad_host).unwrap_err(),
            HelloError::BadHost
        );
    }
}
