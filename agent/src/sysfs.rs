//! Read-only access to the kernel's description of the machine (`/sys`, `/proc`) under a
//! root directory.
//!
//! The inventory reads everything through [`SysRoot`], so the same code runs on a live host
//! (root `/`) and on a tree captured from one (tests). Symbolic links are resolved by hand,
//! component by component, and never leave the root: a captured tree with an absolute link
//! cannot make a test read the build machine's own `/sys`.
//!
//! A [`SysRoot`] can also *record*: every file, link and directory it reads is copied into a
//! capture directory, which then replays as a root. That is how the test fixtures were made,
//! and how a user can send us exactly what the agent saw on a machine it got wrong.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed while resolving one path before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// The root the inventory reads `/sys` and `/proc` under.
#[derive(Debug, Clone)]
pub struct SysRoot {
    root: PathBuf,
    record_into: Option<PathBuf>,
}

impl SysRoot {
    /// The running machine.
    pub fn live() -> Self {
        Self::at("/")
    }

    /// A captured tree: `root/sys/...`, `root/proc/...`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            record_into: None,
        }
    }

    /// Also copies everything read into `dir`, which can later be replayed with [`SysRoot::at`].
    pub fn recording_into(mut self, dir: impl Into<PathBuf>) -> Self {
        self.record_into = Some(dir.into());
        self
    }

    fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// A file's contents as text, or `None` when it is absent or unreadable (many sysfs
    /// attributes fail with `EINVAL` when the device cannot answer, e.g. a NIC's `speed` with
    /// the link down).
    pub fn read(&self, path: &str) -> Option<String> {
        let bytes = self.read_bytes(path)?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A file's contents trimmed of surrounding white space; `None` when absent or empty.
    pub fn read_trimmed(&self, path: &str) -> Option<String> {
        let text = self.read(path)?;
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A file's contents parsed as a number.
    pub fn read_number<T: std::str::FromStr>(&self, path: &str) -> Option<T> {
        self.read_trimmed(path)?.parse().ok()
    }

    /// A file's raw contents.
    pub fn read_bytes(&self, path: &str) -> Option<Vec<u8>> {
        let resolved = self.resolve(path)?;
        let bytes = std::fs::read(self.host_path(&resolved)).ok()?;
        self.record(&resolved, Recorded::File(&bytes));
        Some(bytes)
    }

    /// Whether `path` exists (after following links).
    pub fn exists(&self, path: &str) -> bool {
        match self.resolve(path) {
            Some(resolved) => {
                let exists = self.host_path(&resolved).exists();
                if exists && self.host_path(&resolved).is_dir() {
                    self.record(&resolved, Recorded::Dir);
                }
                exists
            }
            None => false,
        }
    }

    /// The names in a directory, sorted; empty when it does not exist.
    pub fn list(&self, dir: &str) -> Vec<String> {
        let Some(resolved) = self.resolve(dir) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(self.host_path(&resolved)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            // sysfs and procfs have no dot files; captured trees keep empty directories
            // in git with a `.keep`.
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        self.record(&resolved, Recorded::Dir);
        for name in &names {
            let child = format!("{}/{name}", resolved.trim_end_matches('/'));
            let host = self.host_path(&child);
            if let Ok(target) = std::fs::read_link(&host) {
                self.record(&child, Recorded::Link(&target));
            } else if host.is_dir() {
                self.record(&child, Recorded::Dir);
            }
        }
        names
    }

    /// The last component of the path a link points to (`/sys/block/vda/device/driver` →
    /// `virtio_blk`), or the name itself when it is not a link. Only the link is read, not
    /// its target, which a captured tree need not contain (`subsystem` → `/sys/bus/pci`).
    pub fn link_name(&self, path: &str) -> Option<String> {
        let (dir, name) = path.trim_end_matches('/').rsplit_once('/')?;
        let full = format!("{}/{name}", self.resolve(dir)?.trim_end_matches('/'));
        let host = self.host_path(&full);
        match std::fs::read_link(&host) {
            Ok(target) => {
                self.record(&full, Recorded::Link(&target));
                target
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            }
            Err(_) => host.exists().then(|| name.to_owned()),
        }
    }

    /// `path` with every symbolic link resolved, as an absolute path inside the root
    /// (`/sys/block/vda` → `/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda`).
    /// `None` when a component is missing or the links loop.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut resolved: Vec<String> = Vec::new();
        let mut pending: Vec<String> = components(path).rev().collect();
        let mut links = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => {}
                ".." => {
                    resolved.pop();
                }
                name => {
                    resolved.push(name.to_owned());
                    let current = join(&resolved);
                    let host = self.host_path(&current);
                    let meta = std::fs::symlink_metadata(&host).ok()?;
                    if meta.file_type().is_symlink() {
                        links += 1;
                        if links > MAX_LINKS {
                            return None;
                        }
                        let target = std::fs::read_link(&host).ok()?;
                        self.record(&current, Recorded::Link(&target));
                        resolved.pop();
                        let target = target.to_string_lossy().into_owned();
                        if target.starts_with('/') {
                            resolved.clear();
                        }
                        pending.extend(components(&target).rev());
                    }
                }
            }
        }
        let resolved = join(&resolved);
        if self.record_into.is_some() && self.host_path(&resolved).is_dir() {
            self.record(&resolved, Recorded::Dir);
        }
        Some(resolved)
    }

    fn record(&self, path: &str, what: Recorded<'_>) {
        let Some(dir) = &self.record_into else {
            return;
        };
        let target = dir.join(path.trim_start_matches('/'));
        if let Err(err) = write_recorded(&target, what) {
            tracing::warn!(path, error = %err, "could not record a file read by the inventory");
        }
    }
}

enum Recorded<'a> {
    File(&'a [u8]),
    Link(&'a Path),
    Dir,
}

fn write_recorded(target: &Path, what: Recorded<'_>) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match what {
        Recorded::File(bytes) => std::fs::write(target, bytes),
        Recorded::Dir => std::fs::create_dir_all(target),
        Recorded::Link(link) => {
            if std::fs::symlink_metadata(target).is_ok() {
                return Ok(());
            }
            std::os::unix::fs::symlink(link, target)
        }
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    Path::new(path).components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
        Component::ParentDir => Some("..".to_owned()),
        Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
    })
}

fn join(components: &[String]) -> String {
    format!("/{}", components.join("/"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"))
            .unwrap();
        std::fs::create_dir_all(root.join("sys/block")).unwrap();
        std::fs::write(
            root.join("sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/size"),
            "2048\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
            root.join("sys/block/vda"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc", root.join("sys/escape")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("sys/loop")).unwrap();
        dir
    }

    #[test]
    fn follows_relative_links_inside_the_root() {
        let dir = tree();
        let sys = SysRoot::at(dir.path());
        assert_eq!(sys.read_number::<u64>("/sys/block/vda/size"), Some(2048));
        assert_eq!(
            sys.resolve("/sys/block/vda/..").unwrap(),
            "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block"
        );
        assert_eq!(sys.link_name("/sys/block/vda").unwrap(), "vda");
    }

    #[test]
    fn absolute_links_stay_inside_the_root_and_loops_end() {
        let dir = tree();
        let sys = SysRoot::at(dir.path());
        // `/etc` inside the capture does not exist, so the host's /etc is never read.
        assert_eq!(sys.read("/sys/escape/hostname"), None);
        assert_eq!(sys.resolve("/sys/loop"), None);
        assert_eq!(
            sys.resolve("/../../sys/block/vda/size").unwrap(),
            "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/size"
        );
    }

    #[test]
    fn a_recording_replays_as_a_root() {
        let dir = tree();
        let capture = tempfile::tempdir().unwrap();
        let sys = SysRoot::at(dir.path()).recording_into(capture.path());
        assert_eq!(sys.list("/sys/block"), vec!["vda"]);
        assert_eq!(sys.read_trimmed("/sys/block/vda/size").unwrap(), "2048");
        let replay = SysRoot::at(capture.path());
        assert_eq!(replay.list("/sys/block"), vec!["vda"]);
        assert_eq!(replay.read_trimmed("/sys/block/vda/size").unwrap(), "2048");
        assert!(
            std::fs::symlink_metadata(capture.path().join("sys/block/vda"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
