use std::path::{Path, PathBuf};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    // This crate lives in `<root>/tests`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file under `tests/fixtures/`, the test data kept with the repository.
pub fn fixture(relative: impl AsRef<Path>) -> PathBuf {
    let path = workspace_root().join("tests/fixtures").join(relative);
    assert!(
        path.exists(),
        "test fixture {} is missing from the checkout",
        path.display()
    );
    path
}

/// The path of a binary built from this workspace (`rivet`, `rivet-agent`).
///
/// Test binaries live in `target/<profile>/deps/`; workspace binaries one level up.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary under target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run the tests through `just test` (or `cargo build --workspace` first)",
        path.display()
    );
    path
}

/// A fresh temporary directory, removed when the returned guard drops.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rivet-{prefix}-"))
        .tempdir()
        .expect("create a scratch directory")
}
