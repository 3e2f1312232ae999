//! `rivet-agent`: the agent that runs in a small initramfs on the host being provisioned.
//!
//! What it does today:
//! - [`inventory`]: the hardware inventory from sysfs, procfs and SMBIOS, in the
//!   BareMetalHost `HardwareDetails` shape plus the fields IPA reports besides.
//! - [`hints`]: root-device hints (BMO fields and Ironic's operator grammar) and the choice
//!   of the disk that receives the image.
//!
//! Everything that reads the machine goes through [`sysfs::SysRoot`], so it runs unchanged on
//! captured trees in tests.

pub mod cmdline;
pub mod hints;
pub mod inventory;
pub mod sysfs;
