//! What the agent needs to reach the engine, as the boot medium hands it over: kernel
//! command-line parameters (or the same `key=value` words in a file on the agent ISO).
//!
//! ```text
//! rivet.url=https://10.0.0.1:8443 rivet.ca=sha256:<64 hex> rivet.token=<token> [rivet.host=<id>]
//! ```

use std::fmt;

use url::Url;

use super::pin::{Fingerprint, FingerprintError};

/// The engine's base URL.
pub const PARAM_URL: &str = "rivet.url";
/// The SHA-256 fingerprint of the certificate the agent trusts.
pub const PARAM_CA: &str = "rivet.ca";
/// The per-deployment token.
pub const PARAM_TOKEN: &str = "rivet.token";
/// The engine's id for the host (optional; the MAC addresses identify it otherwise).
pub const PARAM_HOST: &str = "rivet.host";

/// The longest token accepted; the engine issues 43-character tokens.
const MAX_TOKEN_LEN: usize = 256;

/// A per-deployment agent token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Accepts URL-safe base64 (what the engine issues), so the token can travel in a
    /// header and on a kernel command line without escaping.
    pub fn new(secret: impl Into<String>) -> Result<Self, ParamsError> {
        let secret = secret.into();
        let valid = !secret.is_empty()
            && secret.len() <= MAX_TOKEN_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(secret))
        } else {
            Err(ParamsError::BadToken)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Parameters that cannot be used. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    #[error("the kernel command line has no `{0}=`")]
    Missing(&'static str),
    #[error("`{PARAM_URL}` is not an https:// URL with a host: {0}")]
    BadUrl(String),
    #[error(transparent)]
    BadFingerprint(#[from] FingerprintError),
    #[error("`{PARAM_TOKEN}` is not a token (1-256 characters of URL-safe base64)")]
    BadToken,
    #[error("`{PARAM_HOST}` is not printable ASCII of at most 64 characters")]
    BadHost,
}

/// Where the engine is, how to trust it, and how to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelParams {
    /// `https://host:port`; the channel connects to its [`super::protocol::CONNECT_PATH`].
    pub url: Url,
    pub ca: Fingerprint,
    pub token: Token,
    pub host: Option<String>,
}

impl ChannelParams {
    /// Checks and bundles the parameters.
    pub fn new(url: &str, ca: &str, token: &str, host: Option<&str>) -> Result<Self, ParamsError> {
        let bad_url = || ParamsError::BadUrl(url.chars().take(200).collect());
        let parsed = Url::parse(url).map_err(|_| bad_url())?;
        if parsed.scheme() != "https"
            || parsed.host_str().is_none()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(bad_url());
        }
        let host = match host {
            Some(h) if h.is_empty() || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ParamsError::BadHost);
            }
            other => other.map(str::to_owned),
        };
        Ok(Self {
            url: parsed,
            ca: Fingerprint::parse(ca)?,
            token: Token::new(token)?,
            host,
        })
    }

    /// Reads the parameters from a kernel command line (`/proc/cmdline`) split on white
    /// space; later words win, as they do for the kernel. The engine never quotes these
    /// values (iPXE cannot), so no quote handling is needed.
    pub fn from_cmdline(cmdline: &str) -> Result<Self, ParamsError> {
        let words: Vec<(&str, &str)> = cmdline
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .collect();
        Self::from_lookup(|name| {
            words
                .iter()
                .rev()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        })
    }

    /// Reads the parameters through `get`, which returns the value of a command-line
    /// parameter by name — for callers that already parsed the command line.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, ParamsError> {
        Self::new(
            get(PARAM_URL).ok_or(ParamsError::Missing(PARAM_URL))?,
            get(PARAM_CA).ok_or(ParamsError::Missing(PARAM_CA))?,
            get(PARAM_TOKEN).ok_or(ParamsError::Missing(PARAM_TOKEN))?,
            get(PARAM_HOST),
        )
    }

    /// The `key=value` words that [`Self::from_cmdline`] reads back.
    pub fn cmdline_words(&self) -> Vec<String> {
        let mut words = vec![
            format!("{PARAM_URL}={}", self.url.as_str().trim_end_matches('/')),
            format!("{PARAM_CA}={}", self.ca),
            format!("{PARAM_TOKEN}={}", self.token.expose()),
        ];
        if let Some(host) = &self.host {
            words.push(format!("{PARAM_HOST}={host}"));
        }
        words
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CA: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn the_command_line_round_trips() {
        let cmdline = format!(
            "console=ttyS0 rivet.url=https://10.0.0.1:8443 rivet.ca={CA} rivet.token=abc-_XYZ09 quiet"
        );
        let params = ChannelParams::from_cmdline(&cmdline).unwrap();
        assert_eq!(params.url.as_str(), "https://10.0.0.1:8443/");
        assert_eq!(params.token.expose(), "abc-_XYZ09");
        assert_eq!(params.host, None);
        let again = ChannelParams::from_cmdline(&params.cmdline_words().join(" ")).unwrap();
        assert_eq!(again, params);
        // Later words win, as for the kernel.
        let twice = format!("{cmdline} rivet.token=second");
        assert_eq!(
            ChannelParams::from_cmdline(&twice).unwrap().token.expose(),
            "second"
        );
        assert!(!format!("{params:?}").contains("abc-_XYZ09"));
    }

    #[test]
    fn bad_parameters_are_named_without_the_token() {
        let missing = ChannelParams::from_cmdline("rivet.url=https://e:1").unwrap_err();
        assert_eq!(missing, ParamsError::Missing(PARAM_CA));
        let plain = ChannelParams::new("http://e:1", CA, "t", None).unwrap_err();
        assert!(matches!(plain, ParamsError::BadUrl(_)));
        let creds = ChannelParams::new("https://u:p@e:1", CA, "t", None).unwrap_err();
        assert!(matches!(creds, ParamsError::BadUrl(_)));
        let ca = ChannelParams::new("https://e:1", "sha256:12", "t", None).unwrap_err();
        assert!(matches!(ca, ParamsError::BadFingerprint(_)));
        let token = ChannelParams::new("https://e:1", CA, "secret value\r\n", None).unwrap_err();
        assert_eq!(token, ParamsError::BadToken);
        assert!(!token.to_string().contains("secret"));
        let host = ChannelParams::new("https://e:1", CA, "t", Some("a b")).unwrap_err();
        assert_eq!(host, ParamsError::BadHost);
    }
}
