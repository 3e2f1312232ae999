//! Loop devices for tests that need a real block device (LVM, 4 KiB sectors, read-only
//! devices, exclusive opens). Detached when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{require_root, require_tool};

/// How to attach a file.
#[derive(Debug, Clone, Default)]
pub struct LoopOptions {
    /// Byte offset into the file (for a device covering one partition).
    pub offset: Option<u64>,
    /// Bytes the device covers.
    pub size_limit: Option<u64>,
    /// Logical sector size (512 or 4096).
    pub sector_size: Option<u32>,
    pub read_only: bool,
}

/// An attached loop device.
#[derive(Debug)]
pub struct LoopDevice {
    device: PathBuf,
}

impl LoopDevice {
    /// Attaches `file` to the first free loop device (`losetup -f --show`).
    pub fn attach(file: &Path, options: &LoopOptions) -> Self {
        require_root();
        let losetup = require_tool("losetup");
        let mut command = Command::new(losetup);
        command.args(["-f", "--show"]);
        if let Some(offset) = options.offset {
            command.arg("-o").arg(offset.to_string());
        }
        if let Some(size) = options.size_limit {
            command.arg("--sizelimit").arg(size.to_string());
        }
        if let Some(sector) = options.sector_size {
            command.arg("-b").arg(sector.to_string());
        }
        if options.read_only {
            command.arg("-r");
        }
        let output = command.arg(file).output().expect("run losetup");
        assert!(
            output.status.success(),
            "losetup {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Self {
            device: PathBuf::from(device),
        }
    }

    pub fn path(&self) -> &Path {
        &self.device
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
