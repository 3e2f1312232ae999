//! Powering the machine off or rebooting it — only where that belongs: the agent's
//! ramdisk. Anywhere else (someone trying `rivet-agent run` on a workstation) the power is
//! left alone.

use nix::sys::reboot::RebootMode;

/// Whether `/` is the kernel's initramfs (ramfs or tmpfs), i.e. this is the agent's
/// ramdisk and the machine is ours to power off.
pub fn in_ramdisk() -> bool {
    // `nix` names tmpfs but not ramfs.
    let ramfs = nix::sys::statfs::FsType(0x8584_58f6);
    nix::sys::statfs::statfs("/").is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == ramfs || kind == nix::sys::statfs::TMPFS_MAGIC
    })
}

/// Flushes every file system and powers off (`reboot(2)` directly: the ramdisk's PID 1 is
/// a shell script, which would not act on busybox `poweroff`'s signal) or reboots. Returns
/// only if the kernel refused.
pub fn reboot(mode: RebootMode) -> nix::Error {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(mode) {
        Err(err) => err,
        Ok(never) => match never {},
    }
}
