//! The cryptography of RMCP+ cipher suites 3 and 17 (IPMI 2.0 §13.28–13.33).
//!
//! | Suite | Authentication    | Integrity        | Confidentiality |
//! |-------|-------------------|------------------|-----------------|
//! | 3     | RAKP-HMAC-SHA1    | HMAC-SHA1-96     | AES-CBC-128     |
//! | 17    | RAKP-HMAC-SHA256  | HMAC-SHA256-128  | AES-CBC-128     |
//!
//! The session integrity key is SIK = HMAC_Kg(Rm | Rc | role | name length | name), with
//! Kg = Kuid (the user's password) because Rivet does not configure a BMC key. K1 and K2 are
//! HMAC_SIK over twenty bytes of 0x01 and 0x02 — twenty for SHA-256 too, as ipmitool, pyghmi
//! and OpenBMC all do. K1 keys the integrity code; the first 16 bytes of K2 are the AES key.

use aes::Aes128;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::wire::CodecError;

const AES_BLOCK: usize = 16;

/// An RMCP+ cipher suite Rivet speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    /// The suite for an ID from IPMI 2.0 table 22-20, if Rivet implements it.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    /// The algorithm numbers proposed in Open Session: (authentication, integrity, confidentiality).
    pub(crate) fn algorithms(self) -> (u8, u8, u8) {
        match self {
            CipherSuite::Suite3 => (0x01, 0x01, 0x01),
            CipherSuite::Suite17 => (0x03, 0x04, 0x01),
        }
    }

    /// The suite a BMC's Open Session response names, if it is one Rivet implements.
    pub(crate) fn from_algorithms(algorithms: (u8, u8, u8)) -> Option<Self> {
        [CipherSuite::Suite3, CipherSuite::Suite17]
            .into_iter()
            .find(|suite| suite.algorithms() == algorithms)
    }

    /// Length of the RAKP 4 integrity check value and of every packet's integrity code.
    pub(crate) fn integrity_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// The keyed hash of the authentication algorithm over the concatenated `parts`.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            CipherSuite::Suite3 => run::<Hmac<Sha1>>(key, parts),
            CipherSuite::Suite17 => run::<Hmac<Sha256>>(key, parts),
        }
    }
}

/// What both sides hash during RAKP: everything except the keys.
#[derive(Debug, Clone)]
pub(crate) struct RakpTranscript<'a> {
    pub console_session_id: u32,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    /// The RAKP 1 role byte: requested privilege plus the name-only lookup bit.
    pub role: u8,
    pub username: &'a [u8],
}

impl RakpTranscript<'_> {
    fn name_length(&self) -> [u8; 1] {
        // Callers check the 16-byte IPMI limit before the handshake starts.
        [u8::try_from(self.username.len()).unwrap_or(u8::MAX)]
    }

    /// The code the BMC must present in RAKP 2 to prove it knows the password.
    pub(crate) fn rakp2_code(&self, suite: CipherSuite, kuid: &[u8]) -> Vec<u8> {
        suite.hmac(
            kuid,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                &[self.role],
                &self.name_length(),
                self.username,
            ],
        )
    }

    /// The code Rivet presents in RAKP 3 to prove it knows the password.
    pub(crate) fn rakp3_code(&self, suite: CipherSuite, kuid: &[u8]) -> Vec<u8> {
        suite.hmac(
            kuid,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                &[self.role],
                &self.name_length(),
                self.username,
            ],
        )
    }

    /// Derives the session keys; `kg` is the BMC key, or the password when none is set.
    pub(crate) fn session_keys(&self, suite: CipherSuite, kg: &[u8]) -> SessionKeys {
        let sik = suite.hmac(
            kg,
            &[
                &self.console_random,
                &self.bmc_random,
                &[self.role],
                &self.name_length(),
                self.username,
            ],
        );
        SessionKeys::from_sik(suite, &sik)
    }

    /// The integrity check value the BMC must present in RAKP 4.
    pub(crate) fn rakp4_icv(&self, keys: &SessionKeys) -> Vec<u8> {
        let mut icv = keys.suite.hmac(
            &keys.sik,
            &[
                &self.console_random,
                &self.bmc_session_id.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        icv.truncate(keys.suite.integrity_len());
        icv
    }
}

/// The keys of an established session. `Debug` shows none of them.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    suite: CipherSuite,
    sik: Vec<u8>,
    k1: Vec<u8>,
    aes_key: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// K1 and the AES key (from K2) for a session integrity key.
    pub(crate) fn from_sik(suite: CipherSuite, sik: &[u8]) -> Self {
        let k1 = suite.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(sik, &[&[0x02; 20]]);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&k2[..16]);
        SessionKeys {
            suite,
            sik: sik.to_vec(),
            k1,
            aes_key,
        }
    }

    #[cfg(test)]
    pub(crate) fn material(&self) -> (&[u8], &[u8], &[u8; 16]) {
        (&self.sik, &self.k1, &self.aes_key)
    }

    /// The truncated integrity code over `covered` (auth type through next header).
    pub(crate) fn integrity_code(&self, covered: &[u8]) -> Vec<u8> {
        let mut code = self.suite.hmac(&self.k1, &[covered]);
        code.truncate(self.suite.integrity_len());
        code
    }

    /// Checks a received integrity code in constant time.
    pub(crate) fn integrity_matches(&self, covered: &[u8], code: &[u8]) -> bool {
        constant_time_eq(&self.integrity_code(covered), code)
    }

    /// Encrypts `plaintext` as an AES-CBC-128 confidentiality payload: IV, then the
    /// ciphertext of the data, pad bytes 1, 2, 3… and the pad length.
    pub(crate) fn encrypt(&self, plaintext: &[u8], iv: [u8; AES_BLOCK]) -> Vec<u8> {
        let pad = (AES_BLOCK - (plaintext.len() + 1) % AES_BLOCK) % AES_BLOCK;
        let mut out = Vec::with_capacity(AES_BLOCK + plaintext.len() + pad + 1);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        out.extend(1..=pad as u8);
        out.push(pad as u8);
        let mut cbc = cbc::Encryptor::<Aes128>::new(&self.aes_key.into(), &iv.into());
        for chunk in out[AES_BLOCK..].chunks_exact_mut(AES_BLOCK) {
            let block: &mut [u8; AES_BLOCK] = chunk
                .try_into()
                .unwrap_or_else(|_| unreachable!("chunks_exact yields whole blocks"));
            cbc.encrypt_block(block.into());
        }
        out
    }

    /// Decrypts a confidentiality payload and strips its padding.
    pub(crate) fn decrypt(&self, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
        let len = payload.len();
        if len < 2 * AES_BLOCK || !len.is_multiple_of(AES_BLOCK) {
            return Err(CodecError::CipherLength(len));
        }
        let (iv, ciphertext) = payload.split_at(AES_BLOCK);
        let mut iv_block = [0u8; AES_BLOCK];
        iv_block.copy_from_slice(iv);
        let mut plain = ciphertext.to_vec();
        let mut cbc = cbc::Decryptor::<Aes128>::new(&self.aes_key.into(), &iv_block.into());
        for chunk in plain.chunks_exact_mut(AES_BLOCK) {
            let block: &mut [u8; AES_BLOCK] = chunk
                .try_into()
                .unwrap_or_else(|_| unreachable!("chunks_exact yields whole blocks"));
            cbc.decrypt_block(block.into());
        }
        // The integrity code has already been verified; the pad bytes themselves are not
        // checked because some BMCs fill them with zeros instead of 1, 2, 3…
        let pad = plain[plain.len() - 1];
        let keep = plain
            .len()
            .checked_sub(usize::from(pad) + 1)
            .filter(|_| usize::from(pad) < AES_BLOCK)
            .ok_or(CodecError::ConfidentialityPad(pad))?;
        plain.truncate(keep);
        Ok(plain)
    }
}

/// Compares two codes without leaking where they differ.
pub(crate) fn constant_time_eq(expected: &[u8], received: &[u8]) -> bool {
    expected.len() == received.len() && bool::from(expected.ct_eq(received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> RakpTranscript<'static> {
        RakpTranscript {
            console_session_id: 0xA0A1_A2A3,
            bmc_session_id: 0x0000_0200,
            console_random: *b"0123456789abcdef",
            bmc_random: *b"FEDCBA9876543210",
            bmc_guid: [0x5A; 16],
            role: 0x14,
            username: b"admin",
        }
    }

    #[test]
    fn code_lengths_follow_the_suite() {
        let t = transcript();
        for (suite, full, truncated) in [
            (CipherSuite::Suite3, 20, 12),
            (CipherSuite::Suite17, 32, 16),
        ] {
            assert_eq!(t.rakp2_code(suite, b"password").len(), full);
            assert_eq!(t.rakp3_code(suite, b"password").len(), full);
            let keys = t.session_keys(suite, b"password");
            assert_eq!(keys.material().0.len(), full);
            assert_eq!(t.rakp4_icv(&keys).len(), truncated);
            assert_eq!(keys.integrity_code(b"abcd").len(), truncated);
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The same derivations computed by Python's `hmac` and `hashlib` — an implementation
    /// Rivet shares nothing with — from the same inputs. This is the suite-17 check that
    /// needs no BMC (the pyghmi-based suite-17 peer is exercised in `tests/ipmi_pyghmi.rs`).
    #[test]
    fn key_derivation_and_codes_match_python_hmac_and_hashlib() {
        let python = rivet_tests::require_tool("python3");
        let t = transcript();
        let covered = b"\x06\xc0\x04\x03\x02\x01\x05\x00\x00\x00 sample payload \xff\xff\x02\x07";
        let script = format!(
            r#"
import hashlib, hmac, struct
for label, h, short in (("sha1", hashlib.sha1, 12), ("sha256", hashlib.sha256, 16)):
    mac = lambda key, data: hmac.new(key, data, h).digest()
    kuid = b"password"
    sidm, sidc = struct.pack("<I", {sidm}), struct.pack("<I", {sidc})
    rm, rc, guid = bytes.fromhex("{rm}"), bytes.fromhex("{rc}"), bytes.fromhex("{guid}")
    user = b"admin"
    role = bytes([{role}, len(user)]) + user
    sik = mac(kuid, rm + rc + role)
    k1, k2 = mac(sik, b"\x01" * 20), mac(sik, b"\x02" * 20)
    print(label,
          mac(kuid, sidm + sidc + rm + rc + guid + role).hex(),
          mac(kuid, rc + sidm + role).hex(),
          sik.hex(), k1.hex(), k2[:16].hex(),
          mac(sik, rm + sidc + guid)[:short].hex(),
          mac(k1, bytes.fromhex("{covered}"))[:short].hex())
"#,
            sidm = t.console_session_id,
            sidc = t.bmc_session_id,
            rm = hex(&t.console_random),
            rc = hex(&t.bmc_random),
            guid = hex(&t.bmc_guid),
            role = t.role,
            covered = hex(covered),
        );
        let output = std::process::Command::new(python)
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = String::from_utf8(output.stdout).unwrap();

        let mut ours = String::new();
        for (name, suite) in [
            ("sha1", CipherSuite::Suite3),
            ("sha256", CipherSuite::Suite17),
        ] {
            let keys = t.session_keys(suite, b"password");
            let (sik, k1, aes_key) = keys.material();
            ours.push_str(&format!(
                "{name} {} {} {} {} {} {} {}\n",
                hex(&t.rakp2_code(suite, b"password")),
                hex(&t.rakp3_code(suite, b"password")),
                hex(sik),
                hex(k1),
                hex(aes_key),
                hex(&t.rakp4_icv(&keys)),
                hex(&keys.integrity_code(covered)),
            ));
        }
        assert_eq!(ours, expected);
    }

    /// AES-CBC-128 with IPMI's padding, checked against `openssl enc` on the same padded
    /// plaintext.
    #[test]
    fn aes_matches_openssl() {
        let openssl = rivet_tests::require_tool("openssl");
        let keys = transcript().session_keys(CipherSuite::Suite17, b"password");
        let (_, _, aes_key) = keys.material();
        let plaintext = b"IPMI request message, 37 bytes long!";
        let iv = [0x3C; 16];
        let sealed = keys.encrypt(plaintext, iv);
        assert_eq!(&sealed[..16], &iv);

        let mut padded = plaintext.to_vec();
        let pad = sealed.len() - 16 - plaintext.len() - 1;
        padded.extend(1..=pad as u8);
        padded.push(pad as u8);
        let mut child = std::process::Command::new(openssl)
            .args([
                "enc",
                "-aes-128-cbc",
                "-nopad",
                "-K",
                &hex(aes_key),
                "-iv",
                &hex(&iv),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&padded).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, &sealed[16..]);
    }

    #[test]
    fn aes_round_trip_for_every_pad_length() {
        let keys = SessionKeys::from_sik(CipherSuite::Suite3, &[7; 20]);
        for len in 0..40 {
            let plaintext: Vec<u8> = (0..len as u8).collect();
            let sealed = keys.encrypt(&plaintext, [9; 16]);
            assert_eq!(sealed.len() % 16, 0);
            assert_eq!(keys.decrypt(&sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn decrypt_refuses_bad_lengths_and_pads() {
        let keys = SessionKeys::from_sik(CipherSuite::Suite17, &[1; 32]);
        assert_eq!(keys.decrypt(&[0; 16]), Err(CodecError::CipherLength(16)));
        assert_eq!(keys.decrypt(&[0; 33]), Err(CodecError::CipherLength(33)));
        // A block whose last plaintext byte decrypts to a pad length of 16 or more.
        let mut forged = keys.encrypt(&[0xFF; 15], [0; 16]);
        let last = forged.len() - 1;
        forged[last - 16] ^= 0xF0; // flips the pad byte through CBC's XOR with the IV
        assert!(matches!(
            keys.decrypt(&forged),
            Err(CodecError::ConfidentialityPad(_))
        ));
    }

    #[test]
    fn constant_time_compare_checks_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
