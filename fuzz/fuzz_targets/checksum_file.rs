//! The checksum-file parser on arbitrary text: the first line names the file to look for,
//! the rest is the checksum file. Invariants: no panic; what it returns as a digest for a
//! name is a substring of the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rivet_images::checksum::{ExpectedDigest, parse_checksum_file};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, body) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(entry) = parse_checksum_file(body, name) {
        assert!(body.contains(entry.hex.as_str()));
        let _ = ExpectedDigest::from_hex(&entry.hex, entry.algorithm);
    }
});
