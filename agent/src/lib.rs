//! `rivet-agent`: the agent that runs in a small initramfs on the host being provisioned.
//!
//! What it does today:
//! - [`inventory`]: the hardware inventory from sysfs, procfs and SMBIOS, in the
//!   BareMetalHost `HardwareDetails` shape plus the fields IPA reports besides.
//! - [`hints`]: root-device hints (BMO fields and Ironic's operator grammar) and the choice
//!   of the disk that receives the image.
//! - [`clean`]: metadata wiping (partition tables and signatures, as `wipefs` sees them) and
//!   whole-disk erasure (NVMe Format/Sanitize, secure discard, write-zeroes, discard,
//!   zeroing), with IPA's guard against wiping shared cluster storage.
//! - [`configdrive`]: config drives (ISO 9660 + Joliet, FAT16 on 4 KiB-sector disks) in a
//!   `config-2` partition at the end of the disk, and the GPT backup fix-up.
//! - [`deploy`]: the image onto the root disk — chosen by hints, optionally cleaned first,
//!   written by the `rivet-images` pipeline (raw or qcow2 over HTTP(S) or from a file,
//!   checksum verified inline, the disk wiped if it fails after being touched), then the
//!   kernel's partition re-read, the GPT backup fix-up and the config drive, with a report.
//! - [`partition`]: GPT and MBR reading and editing; [`disk`]: an open block device or image.
//! - [`job`], [`run`], [`console`]: one-shot jobs from the kernel command line, results
//!   between markers on the console, progress bars.
//!
//! - [`channel`]: the agent channel — the protocol between agent and engine, and the client
//!   that keeps one TLS WebSocket open to the engine (pinned to the CA fingerprint from the
//!   kernel command line) and hands its commands to a [`channel::JobHandler`];
//!   [`machine::Machine`] is the handler that does them on this machine, which is what
//!   `rivet-agent run` uses when the command line carries `rivet.url=`.
//!
//! - [`power_button`], [`shutdown`], [`power`]: the ACPI power button (a BMC's soft
//!   power-off) read from its event device; what a power-off does to disk work in progress
//!   (a finishing image is let finish, a disk being overwritten has its ends zeroed); the
//!   power-off itself, only in the ramdisk.
//!
//! Not yet: partition images and boot-loader installation, config drives fetched from a URL.
//!
//! Everything that reads the machine goes through [`sysfs::SysRoot`], so it runs unchanged on
//! captured trees in tests.

pub mod channel;
pub mod clean;
pub mod cmdline;
pub mod configdrive;
pub mod console;
pub mod deploy;
pub mod disk;
pub mod hints;
pub mod inventory;
mod ioctl;
pub mod job;
pub mod machine;
pub mod partition;
pub mod power;
pub mod power_button;
pub mod run;
pub mod shutdown;
pub mod sysfs;
