//! Checksums over the bytes as published: algorithms, expected values (hex or from a
//! checksum file), and the sans-IO parser for GNU and BSD checksum files.

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use serde::Serialize;
use sha2::{Digest as _, Sha256, Sha512};

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    Md5,
    Sha256,
    Sha512,
}

impl ChecksumAlgorithm {
    /// Picks the algorithm from a hex digest's length (32, 64 or 128 characters), as Ironic
    /// does for its `checksum` field.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            32 => Some(Self::Md5),
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        })
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = ChecksumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Ok(Self::Md5),
            "sha256" | "sha2256" => Ok(Self::Sha256),
            "sha512" | "sha2512" => Ok(Self::Sha512),
            _ => Err(ChecksumError::UnsupportedAlgorithm(s.to_owned())),
        }
    }
}

/// Problems with the checksum the caller supplied (not a mismatch: that is
/// [`ImageError::ChecksumMismatch`](crate::ImageError::ChecksumMismatch)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    #[error("checksum {0:?} is not hexadecimal")]
    NotHex(String),
    #[error(
        "cannot tell the algorithm of a {0}-character checksum (md5 has 32, sha256 64, sha512 128); name it"
    )]
    UnknownLength(usize),
    #[error("checksum has {found} hex characters but {algorithm} needs {expected}")]
    WrongLength {
        algorithm: ChecksumAlgorithm,
        found: usize,
        expected: usize,
    },
    #[error("checksum algorithm {0:?} is not supported (md5, sha256 and sha512 are)")]
    UnsupportedAlgorithm(String),
    #[error("the checksum file says {found} but {requested} was requested")]
    AlgorithmConflict {
        requested: ChecksumAlgorithm,
        found: ChecksumAlgorithm,
    },
    #[error("the checksum file has no entry for {file_name:?}")]
    NotListed { file_name: String },
    #[error("the checksum file is empty")]
    EmptyFile,
    #[error("the checksum file is larger than {limit} bytes")]
    FileTooLarge { limit: u64 },
    #[error("the checksum file is not text")]
    NotText,
    #[error("cannot fetch the checksum file: {0}")]
    Fetch(String),
}

/// A digest the image must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedDigest {
    algorithm: ChecksumAlgorithm,
    digest: Vec<u8>,
}

impl ExpectedDigest {
    /// Parses a hex digest. `algorithm` `None` means "pick by length".
    pub fn from_hex(
        hex: &str,
        algorithm: Option<ChecksumAlgorithm>,
    ) -> Result<Self, ChecksumError> {
        let hex = hex.trim();
        let algorithm = match algorithm {
            Some(algorithm) => algorithm,
            None => ChecksumAlgorithm::from_hex_len(hex.len())
                .ok_or(ChecksumError::UnknownLength(hex.len()))?,
        };
        if hex.len() != algorithm.digest_len() * 2 {
            return Err(ChecksumError::WrongLength {
                algorithm,
                found: hex.len(),
                expected: algorithm.digest_len() * 2,
            });
        }
        let digest = hex::decode(hex).map_err(|_| ChecksumError::NotHex(hex.to_owned()))?;
        Ok(Self { algorithm, digest })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    /// The digest as lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(&self.digest)
    }

    /// Whether `actual` equals the expected digest (compared in constant time).
    pub fn matches(&self, actual: &[u8]) -> bool {
        actual.len() == self.digest.len()
            && actual
                .iter()
                .zip(&self.digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// An incremental hasher for one of the supported algorithms.
#[derive(Debug, Clone)]
pub(crate) enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Md5 => Self::Md5(Md5::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(Sha256::new()),
            ChecksumAlgorithm::Sha512 => Self::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Md5(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            Self::Md5(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// One entry found in a checksum file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumEntry {
    /// Named by a BSD-style line; `None` for GNU lines (the length decides).
    pub algorithm: Option<ChecksumAlgorithm>,
    /// The hex digest.
    pub hex: String,
}

/// Finds the checksum of `file_name` in a checksum file's text.
///
/// Accepts GNU coreutils lines (`<hex>  <name>`, `<hex> *<name>`, escaped names with a leading
/// backslash), BSD lines (`SHA256 (<name>) = <hex>`), comments (`#`), and a file holding only a
/// bare digest. Names match exactly or by their last path component.
pub fn parse_checksum_file(text: &str, file_name: &str) -> Result<ChecksumEntry, ChecksumError> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    match lines.as_slice() {
        [] => return Err(ChecksumError::EmptyFile),
        [only] if !only.contains(char::is_whitespace) => {
            return Ok(ChecksumEntry {
                algorithm: None,
                hex: (*only).to_owned(),
            });
        }
        _ => {}
    }
    for line in lines {
        let Some((name, entry)) = parse_bsd_line(line)?.or_else(|| parse_gnu_line(line)) else {
            continue;
        };
        if names_match(&name, file_name) {
            return Ok(entry);
        }
    }
    Err(ChecksumError::NotListed {
        file_name: file_name.to_owned(),
    })
}

/// `ALGO (name) = hex`
fn parse_bsd_line(line: &str) -> Result<Option<(String, ChecksumEntry)>, ChecksumError> {
    let Some((algorithm, rest)) = line.split_once(" (") else {
        return Ok(None);
    };
    let Some((name, hex)) = rest.rsplit_once(") = ") else {
        return Ok(None);
    };
    if algorithm.is_empty() || algorithm.contains(char::is_whitespace) {
        return Ok(None);
    }
    let algorithm = match algorithm.parse::<ChecksumAlgorithm>() {
        Ok(algorithm) => algorithm,
        // Another algorithm's line (SHA1, BLAKE2b…) for possibly the same file: skip it.
        Err(_) => return Ok(None),
    };
    Ok(Some((
        name.to_owned(),
        ChecksumEntry {
            algorithm: Some(algorithm),
            hex: hex.trim().to_owned(),
        },
    )))
}

/// `hex  name`, `hex *name`, `\hex  escaped\nname`
fn parse_gnu_line(line: &str) -> Option<(String, ChecksumEntry)> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (hex, name) = line.split_once(char::is_whitespace)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = name.trim_start();
    let name = name.strip_prefix('*').unwrap_or(name);
    let name = if escaped {
        unescape_gnu(name)
    } else {
        name.to_owned()
    };
    Some((
        name,
        ChecksumEntry {
            algorithm: None,
            hex: hex.to_owned(),
        },
    ))
}

fn unescape_gnu(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn names_match(listed: &str, file_name: &str) -> bool {
    let listed = listed.strip_prefix("./").unwrap_or(listed);
    listed == file_name || listed.rsplit('/').next() == Some(file_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn gnu_lines_match_by_name_or_basename() {
        let text = format!(
            "# comment\n{}  other.img\n{SHA}  disk.qcow2\n{} *bin.img\n",
            "0".repeat(64),
            "1".repeat(64)
        );
        assert_eq!(parse_checksum_file(&text, "disk.qcow2").unwrap().hex, SHA);
        assert_eq!(
            parse_checksum_file(&text, "bin.img").unwrap().hex,
            "1".repeat(64)
        );
        let nested = format!("{SHA}  ./images/disk.qcow2\n");
        assert_eq!(parse_checksum_file(&nested, "disk.qcow2").unwrap().hex, SHA);
        assert_eq!(
            parse_checksum_file(&text, "missing.img"),
            Err(ChecksumError::NotListed {
                file_name: "missing.img".into()
            })
        );
    }

    #[test]
    fn bsd_lines_name_their_algorithm() {
        let text = format!(
            "SHA1 (disk.qcow2) = {}\nSHA256 (disk.qcow2) = {SHA}\n",
            "a".repeat(40)
        );
        let entry = parse_checksum_file(&text, "disk.qcow2").unwrap();
        assert_eq!(entry.algorithm, Some(ChecksumAlgorithm::Sha256));
        assert_eq!(entry.hex, SHA);
        let spaced = format!("SHA256 (my disk (1).img) = {SHA}");
        assert_eq!(
            parse_checksum_file(&spaced, "my disk (1).img").unwrap().hex,
            SHA
        );
    }

    #[test]
    fn a_bare_digest_is_accepted() {
        assert_eq!(
            parse_checksum_file(&format!("{SHA}\n"), "anything")
                .unwrap()
                .hex,
            SHA
        );
        assert_eq!(
            parse_checksum_file("\n# x\n", "a"),
            Err(ChecksumError::EmptyFile)
        );
    }

    #[test]
    fn escaped_gnu_names() {
        let text = format!("\\{SHA}  new\\nline.img\n");
        assert_eq!(
            parse_checksum_file(&text, "new\nline.img").unwrap().hex,
            SHA
        );
    }

    #[test]
    fn expected_digest_picks_algorithm_by_length_and_compares() {
        let expected = ExpectedDigest::from_hex(SHA, None).unwrap();
        assert_eq!(expected.algorithm(), ChecksumAlgorithm::Sha256);
        let mut hasher = Hasher::new(ChecksumAlgorithm::Sha256);
        hasher.update(b"test");
        assert!(expected.matches(&hasher.finish()));
        assert!(!expected.matches(&[0; 32]));
        assert_eq!(
            ExpectedDigest::from_hex("abc", None),
            Err(ChecksumError::UnknownLength(3))
        );
        assert!(matches!(
            ExpectedDigest::from_hex(SHA, Some(ChecksumAlgorithm::Md5)),
            Err(ChecksumError::WrongLength { .. })
        ));
        assert!(matches!(
            ExpectedDigest::from_hex(&"z".repeat(32), None),
            Err(ChecksumError::NotHex(_))
        ));
    }
}
