//! The block-device and NVMe ioctls the agent needs, and nothing else. This is the only
//! module with `unsafe`: every call passes a valid descriptor and a pointer to memory the
//! call may read or write, sized as the kernel's UAPI headers declare.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// <linux/fs.h>: block-device requests, type 0x12.
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc_int);
nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc_int);
nix::ioctl_read_bad!(blkroget, nix::request_code_none!(0x12, 94), libc_int);
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_none!(blkflsbuf, 0x12, 97);
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blksecdiscard, nix::request_code_none!(0x12, 125), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
// <linux/nvme_ioctl.h>
nix::ioctl_none!(nvme_ioctl_id, b'N', 0x40);
nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, NvmePassthruCmd);

#[allow(non_camel_case_types)]
type libc_int = std::ffi::c_int;

/// `struct nvme_passthru_cmd` (a.k.a. `nvme_admin_cmd`) from `<linux/nvme_ioctl.h>`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NvmePassthruCmd {
    pub(crate) opcode: u8,
    pub(crate) flags: u8,
    pub(crate) rsvd1: u16,
    pub(crate) nsid: u32,
    pub(crate) cdw2: u32,
    pub(crate) cdw3: u32,
    pub(crate) metadata: u64,
    pub(crate) addr: u64,
    pub(crate) metadata_len: u32,
    pub(crate) data_len: u32,
    pub(crate) cdw10: u32,
    pub(crate) cdw11: u32,
    pub(crate) cdw12: u32,
    pub(crate) cdw13: u32,
    pub(crate) cdw14: u32,
    pub(crate) cdw15: u32,
    pub(crate) timeout_ms: u32,
    pub(crate) result: u32,
}

const _: () = assert!(std::mem::size_of::<NvmePassthruCmd>() == 72);

fn errno(err: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(err as i32)
}

/// The device's size in bytes.
pub(crate) fn size_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: `fd` is an open descriptor and `size` is a valid u64 the kernel writes.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }.map_err(errno)?;
    Ok(size)
}

/// Logical and physical sector sizes.
pub(crate) fn sector_sizes(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut logical: libc_int = 0;
    let mut physical: libc_int = 0;
    // SAFETY: both requests write one int into the variable passed.
    unsafe { blksszget(fd.as_raw_fd(), &mut logical) }.map_err(errno)?;
    // SAFETY: as above.
    unsafe { blkpbszget(fd.as_raw_fd(), &mut physical) }.map_err(errno)?;
    let as_u32 = |n: libc_int| u32::try_from(n).unwrap_or(512);
    Ok((as_u32(logical), as_u32(physical)))
}

/// Whether the kernel marks the device read-only.
pub(crate) fn read_only(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut ro: libc_int = 0;
    // SAFETY: BLKROGET writes one int.
    unsafe { blkroget(fd.as_raw_fd(), &mut ro) }.map_err(errno)?;
    Ok(ro != 0)
}

/// Asks the kernel to re-read the partition table.
pub(crate) fn reread_partitions(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { blkrrpart(fd.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}

/// Drops the device's page cache so later reads see what the device holds.
pub(crate) fn flush_buffers(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { blkflsbuf(fd.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}

/// Which range operation to ask the block layer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOp {
    Discard,
    SecureDiscard,
    ZeroOut,
}

/// Discards, securely discards or zeroes `len` bytes at `offset` (both sector-aligned).
pub(crate) fn range(fd: BorrowedFd<'_>, op: RangeOp, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    let raw = fd.as_raw_fd();
    // SAFETY: the three requests read two u64 (start, length) from `range`, which lives
    // across the call.
    let result = unsafe {
        match op {
            RangeOp::Discard => blkdiscard(raw, &range),
            RangeOp::SecureDiscard => blksecdiscard(raw, &range),
            RangeOp::ZeroOut => blkzeroout(raw, &range),
        }
    };
    result.map_err(errno)?;
    Ok(())
}

/// The namespace id an NVMe namespace block device refers to.
pub(crate) fn nvme_namespace_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the namespace id.
    let id = unsafe { nvme_ioctl_id(fd.as_raw_fd()) }.map_err(errno)?;
    u32::try_from(id).map_err(|_| io::Error::other("negative NVMe namespace id"))
}

/// Runs one NVMe admin command. `data` is the command's data buffer (input or output);
/// its address and length are filled in here. Returns the completion's result dword, or
/// the NVMe status code as [`NvmeStatus`] when the controller rejected the command.
pub(crate) fn nvme_admin(
    fd: BorrowedFd<'_>,
    mut cmd: NvmePassthruCmd,
    data: Option<&mut [u8]>,
) -> Result<u32, NvmeAdminError> {
    if let Some(buf) = data {
        cmd.addr = buf.as_mut_ptr() as u64;
        cmd.data_len = u32::try_from(buf.len())
            .map_err(|_| NvmeAdminError::Io(io::Error::other("NVMe data buffer over 4 GiB")))?;
    }
    // SAFETY: `cmd` is a properly laid out nvme_passthru_cmd; `addr`/`data_len` describe a
    // live, exclusively borrowed buffer (or are zero), which outlives the synchronous call.
    let status = unsafe { nvme_ioctl_admin_cmd(fd.as_raw_fd(), &mut cmd) }
        .map_err(|err| NvmeAdminError::Io(errno(err)))?;
    if status != 0 {
        return Err(NvmeAdminError::Status(NvmeStatus(status as u32)));
    }
    Ok(cmd.result)
}

/// An NVMe completion status (status code type and code, as the kernel returns them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmeStatus(pub u32);

impl NvmeStatus {
    /// Status code type 0, code 0x02: "Invalid Field in Command" — the controller does not
    /// support what was asked (e.g. a secure-erase setting).
    pub fn is_invalid_field(self) -> bool {
        self.0 & 0x7ff == 0x002
    }

    /// Status code type 0, code 0x01: "Invalid Command Opcode".
    pub fn is_invalid_opcode(self) -> bool {
        self.0 & 0x7ff == 0x001
    }
}

impl std::fmt::Display for NvmeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NVMe status {:#x} (type {:#x}, code {:#04x})",
            self.0,
            (self.0 >> 8) & 0x7,
            self.0 & 0xff
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NvmeAdminError {
    #[error("{0}")]
    Io(io::Error),
    #[error("the controller refused the command: {0}")]
    Status(NvmeStatus),
}
