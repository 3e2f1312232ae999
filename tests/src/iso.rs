//! Agent ISOs for tests, made and read back by `xorriso`: one with the `rivet/cmdline` slot
//! `just agent-image` writes, or one from before the slot existed.

use std::path::Path;
use std::process::Command;

use crate::tools::require_tool;

/// The slot as `scripts/agent-image.sh` writes it: the marker word, then `words`, padded
/// with spaces to 4096 bytes.
pub fn cmdline_slot(words: &str) -> String {
    format!(
        "{:<4095}\n",
        format!("rivet-cmdline-slot-v1 {words}").trim_end()
    )
}

/// Writes an ISO 9660 (Rock Ridge, Joliet) image at `iso` holding `rivet/cmdline` =
/// `cmdline` and 300 KB of filler after it, so byte ranges past the slot mean something.
pub fn agent_iso(iso: &Path, cmdline: &str) {
    let tree = iso.with_extension("tree");
    std::fs::create_dir_all(tree.join("rivet")).expect("create the ISO tree");
    std::fs::create_dir_all(tree.join("boot")).expect("create the ISO tree");
    std::fs::write(tree.join("boot/filler"), vec![0x5a; 300_000]).expect("write the filler");
    std::fs::write(tree.join("rivet/cmdline"), cmdline).expect("write rivet/cmdline");
    if let Some(parent) = iso.parent() {
        std::fs::create_dir_all(parent).expect("create the ISO's directory");
    }
    xorriso(|command| {
        command
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-R",
                "-J",
                "-V",
                "RIVET_AGENT",
                "-o",
            ])
            .arg(iso)
            .arg(&tree);
    });
}

/// The file at `path` inside the ISO at `iso`, as xorriso extracts it.
pub fn extract(iso: &Path, path: &str) -> Vec<u8> {
    let into = iso.with_extension("extracted");
    xorriso(|command| {
        command
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", path])
            .arg(&into);
    });
    std::fs::read(into).expect("read what xorriso extracted")
}

fn xorriso(arguments: impl FnOnce(&mut Command)) {
    let mut command = Command::new(require_tool("xorriso"));
    arguments(&mut command);
    let out = command.output().expect("run xorriso");
    assert!(
        out.status.success(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
