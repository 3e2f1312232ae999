//! Opening files by client-supplied names without ever leaving a root directory.
//!
//! Names are first checked lexically (so clients get a clear refusal for `..` and absolute
//! paths), then opened with Linux's `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! relative to a descriptor of the root. The kernel refuses any resolution that would leave
//! the root — through `..`, an absolute symlink or a relative symlink climbing out — at the
//! moment of opening, so there is no window between a check and the open for a concurrent
//! rename to exploit. Symlinks that stay inside the root keep working.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::sys::stat::Mode;

/// Why a file could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// The name is malformed or would leave the root lexically.
    #[error("refused path `{path}`: {reason}")]
    Refused { path: String, reason: &'static str },
    /// Resolving the name (through a symlink) would leave the root.
    #[error("refused path `{path}`: it resolves outside the served directory")]
    Escapes { path: String },
    #[error("`{path}` does not exist")]
    NotFound { path: String },
    #[error("`{path}` is not a regular file")]
    NotAFile { path: String },
    #[error("`{path}` cannot be read: permission denied")]
    Denied { path: String },
    #[error("cannot open the served directory {root}: {source}")]
    Root { root: PathBuf, source: Errno },
    #[error("`{path}`: {source}")]
    Io { path: String, source: Errno },
}

/// A directory files are served from.
#[derive(Debug, Clone)]
pub struct ConfinedDir {
    root: PathBuf,
    dir: Arc<OwnedFd>,
}

/// A file opened under a [`ConfinedDir`], with the metadata responses need.
#[derive(Debug)]
pub struct ServedFile {
    pub file: File,
    pub len: u64,
    pub modified: Option<SystemTime>,
}

impl ConfinedDir {
    /// Opens `root` (which must be a directory) for serving.
    pub fn open(root: &Path) -> Result<Self, ConfineError> {
        let dir = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| ConfineError::Root {
            root: root.to_owned(),
            source,
        })?;
        Ok(Self {
            root: root.to_owned(),
            dir: Arc::new(dir),
        })
    }

    /// The directory's path, for messages.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens `name`, a `/`-separated path relative to the root, for reading.
    pub fn open_file(&self, name: &str) -> Result<ServedFile, ConfineError> {
        let relative = check_name(name)?;
        let how = OpenHow::new()
            // O_NONBLOCK: opening a FIFO someone left in the root must not hang the server.
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(self.dir.as_ref(), relative.as_str(), how).map_err(|errno| {
            let path = name.to_owned();
            match errno {
                Errno::EXDEV | Errno::ELOOP => ConfineError::Escapes { path },
                Errno::ENOENT | Errno::ENOTDIR => ConfineError::NotFound { path },
                Errno::EACCES | Errno::EPERM => ConfineError::Denied { path },
                source => ConfineError::Io { path, source },
            }
        })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|err| ConfineError::Io {
            path: name.to_owned(),
            source: Errno::from_raw(err.raw_os_error().unwrap_or(0)),
        })?;
        if !meta.is_file() {
            return Err(ConfineError::NotAFile {
                path: name.to_owned(),
            });
        }
        Ok(ServedFile {
            file,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// The lexical rules: relative, no `..`, no NUL or backslash. `.` segments and repeated
/// slashes are dropped.
fn check_name(name: &str) -> Result<String, ConfineError> {
    let refuse = |reason| ConfineError::Refused {
        path: name.chars().take(256).collect(),
        reason,
    };
    if name.contains('\0') {
        return Err(refuse("it contains a NUL byte"));
    }
    if name.contains('\\') {
        return Err(refuse("backslashes are not path separators here"));
    }
    if name.starts_with('/') {
        return Err(refuse("absolute paths are not served"));
    }
    let mut segments = Vec::new();
    for segment in name.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(refuse("`..` is not allowed")),
            segment => segments.push(segment),
        }
    }
    if segments.is_empty() {
        return Err(refuse("it names no file"));
    }
    Ok(segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _outside: tempfile::TempDir,
        root: tempfile::TempDir,
        dir: ConfinedDir,
    }

    fn fixture() -> Fixture {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"top secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/file.txt"), b"hello").unwrap();
        symlink("sub/file.txt", root.path().join("inside-link")).unwrap();
        symlink(
            outside.path().join("secret"),
            root.path().join("absolute-out"),
        )
        .unwrap();
        symlink(
            "../../../../../../../../etc/passwd",
            root.path().join("sub/relative-out"),
        )
        .unwrap();
        symlink(outside.path(), root.path().join("dir-out")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.path().join("magic")).unwrap();
        nix::unistd::mkfifo(&root.path().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let dir = ConfinedDir::open(root.path()).unwrap();
        Fixture {
            _outside: outside,
            root,
            dir,
        }
    }

    fn read(dir: &ConfinedDir, name: &str) -> Result<String, ConfineError> {
        let mut served = dir.open_file(name)?;
        let mut text = String::new();
        served.file.read_to_string(&mut text).unwrap();
        assert_eq!(served.len, text.len() as u64);
        Ok(text)
    }

    #[test]
    fn files_and_links_inside_the_root_are_served() {
        let fx = fixture();
        assert_eq!(read(&fx.dir, "sub/file.txt").unwrap(), "hello");
        assert_eq!(read(&fx.dir, "./sub//file.txt").unwrap(), "hello");
        assert_eq!(read(&fx.dir, "inside-link").unwrap(), "hello");
        assert_eq!(fx.dir.root(), fx.root.path());
    }

    #[test]
    fn every_way_out_of_the_root_is_refused() {
        let fx = fixture();
        for name in [
            "../secret",
            "sub/../../secret",
            "/etc/passwd",
            "..",
            "sub\\..\\x",
            "a\0b",
        ] {
            assert!(
                matches!(fx.dir.open_file(name), Err(ConfineError::Refused { .. })),
                "{name:?}"
            );
        }
        for name in [
            "absolute-out",
            "sub/relative-out",
            "dir-out/secret",
            "magic",
        ] {
            let err = fx.dir.open_file(name).unwrap_err();
            assert!(matches!(err, ConfineError::Escapes { .. }), "{name}: {err}");
        }
    }

    #[test]
    fn missing_files_directories_and_fifos_are_not_served() {
        let fx = fixture();
        assert!(matches!(
            fx.dir.open_file("nope"),
            Err(ConfineError::NotFound { .. })
        ));
        assert!(matches!(
            fx.dir.open_file("sub/file.txt/x"),
            Err(ConfineError::NotFound { .. })
        ));
        assert!(matches!(
            fx.dir.open_file("sub"),
            Err(ConfineError::NotAFile { .. })
        ));
        assert!(matches!(
            fx.dir.open_file("fifo"),
            Err(ConfineError::NotAFile { .. })
        ));
        assert!(matches!(
            fx.dir.open_file(""),
            Err(ConfineError::Refused { .. })
        ));
    }

    #[test]
    fn a_missing_root_is_a_clear_error() {
        let err = ConfinedDir::open(Path::new("/nonexistent/rivet")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rivet"), "{err}");
    }
}
