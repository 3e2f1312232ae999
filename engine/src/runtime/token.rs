//! Per-deployment agent tokens: random, stored only as a SHA-256, compared in constant time.

use aws_lc_rs::digest;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::drivers::AgentToken;

/// A fresh token and the hex SHA-256 the engine keeps. `None` if the system random
/// generator fails.
pub(super) fn issue() -> Option<(AgentToken, String)> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hex::encode(digest::digest(&digest::SHA256, token.as_bytes()));
    Some((AgentToken::new(token), hash))
}

/// Whether `token` hashes to `expected_hex`, without leaking where they differ.
pub(super) fn verify(token: &AgentToken, expected_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_hex) else {
        return false;
    };
    let actual = digest::digest(&digest::SHA256, token.expose().as_bytes());
    actual.as_ref().ct_eq(&expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_their_hash_only() {
        let (token, hash) = issue().unwrap();
        assert_eq!(token.expose().len(), 43);
        assert!(verify(&token, &hash));
        let (other, _) = issue().unwrap();
        assert!(!verify(&other, &hash));
        assert!(!verify(&token, "not hex"));
        assert!(!verify(&token, &hash[..10]));
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
