//! Secrets at rest: AES-256-GCM (aws-lc-rs, the crypto library rustls already builds) with
//! a random 96-bit nonce per record and the host id as associated data, so a sealed record
//! cannot be moved to another host. The 256-bit key lives in a key file readable only by
//! its owner.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};

/// Layout version of a sealed record: `[1][nonce: 12][ciphertext + tag]`.
const SEALED_V1: u8 = 1;
const KEY_LEN: usize = 32;
const AAD_PREFIX: &[u8] = b"rivet-secrets-v1";

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the key file {path} does not hold 64 hex digits (a 256-bit key)")]
    Malformed { path: PathBuf },
    #[error("the system random generator failed")]
    Random,
}

/// Seals and opens secrets with the store's key.
pub struct Sealer {
    key: RandomizedNonceKey,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

/// A sealed record that does not open: another key, or a damaged record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed record does not open with this key (wrong key file, or a damaged record)")]
pub struct UnsealError;

impl Sealer {
    /// Loads the key from `path`, creating a fresh random key there (mode 0600) if the file
    /// does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match fs::metadata(path) {
            Ok(metadata) => {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions {
                        path: path.to_owned(),
                        mode,
                    });
                }
                let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let bytes = hex::decode(text.trim())
                    .ok()
                    .filter(|bytes| bytes.len() == KEY_LEN);
                let bytes = bytes.ok_or_else(|| KeyError::Malformed {
                    path: path.to_owned(),
                })?;
                Self::from_key(&bytes).ok_or_else(|| KeyError::Malformed {
                    path: path.to_owned(),
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Random)?;
                let create = |source| KeyError::Create {
                    path: path.to_owned(),
                    source,
                };
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(create)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(create)?;
                writeln!(file, "{}", hex::encode(bytes)).map_err(create)?;
                file.sync_all().map_err(create)?;
                Self::from_key(&bytes).ok_or(KeyError::Random)
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A sealer for a raw 256-bit key.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        RandomizedNonceKey::new(&AES_256_GCM, key)
            .ok()
            .map(|key| Self { key })
    }

    /// Seals `plaintext` for the record `context` (a host id). Fails only when the system
    /// random generator does.
    pub fn seal(&self, context: u128, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut buffer = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(aad(context), &mut buffer)
            .map_err(|_| KeyError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + buffer.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// Opens a record sealed for `context`.
    pub fn open(&self, context: u128, sealed: &[u8]) -> Result<Vec<u8>, UnsealError> {
        let [SEALED_V1, rest @ ..] = sealed else {
            return Err(UnsealError);
        };
        if rest.len() < NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnsealError)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, aad(context), &mut buffer)
            .map_err(|_| UnsealError)?;
        Ok(plaintext.to_vec())
    }
}

fn aad(context: u128) -> Aad<Vec<u8>> {
    let mut bytes = AAD_PREFIX.to_vec();
    bytes.extend_from_slice(&context.to_be_bytes());
    Aad::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_the_same_key_and_host() {
        let sealer = Sealer::from_key(&[7; 32]).unwrap();
        let sealed = sealer.seal(1, b"hunter2").unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "plaintext visible"
        );
        assert_eq!(sealer.open(1, &sealed).unwrap(), b"hunter2");
        assert_eq!(
            sealer.open(2, &sealed),
            Err(UnsealError),
            "moved to another host"
        );
        let other = Sealer::from_key(&[8; 32]).unwrap();
        assert_eq!(other.open(1, &sealed), Err(UnsealError), "another key");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(1, &tampered), Err(UnsealError));
        assert_eq!(sealer.open(1, &[]), Err(UnsealError));
        assert_ne!(
            sealer.seal(1, b"x").unwrap(),
            sealer.seal(1, b"x").unwrap(),
            "nonces repeat"
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secrets.key");
        let first = Sealer::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(9, &first.seal(9, b"s").unwrap()).unwrap(), b"s");
    }

    #[test]
    fn unsafe_or_malformed_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "00".repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Sealer::load_or_create(&path).is_ok());
        fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            Sealer::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
    }
}
