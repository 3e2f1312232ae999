use std::path::{Path, PathBuf};

use crate::paths::workspace_root;

/// Directories searched besides `PATH`: daemons often live in sbin, which is not on a
/// non-login shell's `PATH`.
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/sbin",
    "/usr/bin",
    "/bin",
];

/// Finds an installed program or fails the test with instructions.
pub fn require_tool(name: &str) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("`{name}` is required by this test but is not installed; run `just deps`")
        })
}

/// A program from the Python virtual environment `just deps` creates under `target/venv`.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = workspace_root().join("target/venv/bin").join(name);
    assert!(
        is_executable(&path),
        "`{name}` is required by this test but {} does not exist; run `just deps`",
        path.display()
    );
    path
}

/// Fails the test unless it runs as root (network namespaces, block devices).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces or block devices)"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_that_is_always_there() {
        assert!(require_tool("sh").ends_with("sh"));
    }

    #[test]
    #[should_panic(expected = "run `just deps`")]
    fn a_missing_program_fails_with_instructions() {
        require_tool("rivet-no-such-program");
    }
}
