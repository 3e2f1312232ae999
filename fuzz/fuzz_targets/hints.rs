//! Everything that tells the agent what to do, from untrusted text: root-device hint
//! expressions, hint documents, and the kernel command line with its job parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rivet_agent::cmdline::KernelCommandLine;
use rivet_agent::hints::HintSet;
use rivet_agent::hints::expr::{self, ValueKind};
use rivet_agent::job;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [ValueKind::Text, ValueKind::Number] {
        if let Ok(parsed) = expr::parse(text, kind) {
            // Whatever parses must print back to something that parses the same way.
            let again = expr::parse(&parsed.to_string(), kind);
            assert_eq!(again.as_ref().ok(), Some(&parsed), "{text:?} → {parsed}");
            let _ = parsed.matches_text(text);
            let _ = parsed.matches_number(text.len() as f64);
        }
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = HintSet::from_json(&value);
    }
    let line = KernelCommandLine::parse(text);
    let _ = job::from_cmdline(&line);
    let _ = line.boot_mac();
});
