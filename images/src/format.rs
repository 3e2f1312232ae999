//! Format detection from content (never from names): the outer compression, then the disk
//! format inside it. Pure functions over the first bytes.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How many leading bytes detection looks at (ISO 9660 descriptors sit at 32 KiB).
pub const DETECTION_LEN: usize = 64 << 10;

/// A compression wrapped around the whole image (`.gz`, `.zst`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Container {
    /// No outer compression.
    None,
    /// gzip (one or more members).
    Gzip,
    /// Zstandard (one or more frames).
    Zstd,
    /// xz: recognised, not supported.
    Xz,
    /// bzip2: recognised, not supported.
    Bzip2,
}

impl Container {
    /// Recognises the outer compression from the first bytes of the file.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if head.starts_with(b"BZh") {
            Self::Bzip2
        } else {
            Self::None
        }
    }

    /// Whether the pipeline can decompress it.
    pub fn is_supported(self) -> bool {
        matches!(self, Self::None | Self::Gzip | Self::Zstd)
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
        })
    }
}

/// What a (decompressed) image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DiskFormat {
    /// A plain disk image.
    Raw,
    /// QEMU copy-on-write, any version (only 2 and 3 are accepted later).
    Qcow2,
    /// An ISO 9660 filesystem (CD/DVD image).
    Iso,
    /// VMware VMDK (sparse extent or descriptor).
    Vmdk,
    /// VirtualBox VDI.
    Vdi,
    /// Microsoft VHD (dynamic).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// QEMU enhanced disk.
    Qed,
    /// A LUKS-encrypted volume.
    Luks,
}

impl DiskFormat {
    /// Recognises the disk format from the first bytes (up to [`DETECTION_LEN`]).
    pub fn detect(head: &[u8]) -> Self {
        let at = |offset: usize, magic: &[u8]| has_magic(head, offset, magic);
        if at(0, &crate::qcow2::MAGIC) {
            Self::Qcow2
        } else if at(0, b"QED\0") {
            Self::Qed
        } else if at(0, b"KDMV") || at(0, b"COWD") || at(0, b"# Disk DescriptorFile") {
            Self::Vmdk
        } else if at(0x40, &0xbeda_107f_u32.to_le_bytes()) {
            Self::Vdi
        } else if at(0, b"vhdxfile") {
            Self::Vhdx
        } else if at(0, b"conectix") {
            Self::Vhd
        } else if at(0, b"LUKS\xba\xbe") {
            Self::Luks
        } else if [0x8001, 0x8801, 0x9001]
            .iter()
            .any(|&offset| at(offset, b"CD001"))
        {
            Self::Iso
        } else {
            Self::Raw
        }
    }

    /// Why Rivet will not write this format to a disk, if it will not.
    pub(crate) fn refusal(self) -> Option<&'static str> {
        match self {
            Self::Raw | Self::Qcow2 => None,
            Self::Iso => Some(
                "ISO 9660 images are installation media, not disk images; boot them as virtual media instead of writing them to a disk",
            ),
            Self::Vmdk | Self::Vdi | Self::Vhd | Self::Vhdx | Self::Qed => Some(
                "only raw and qcow2 images can be written; convert it first (qemu-img convert -O qcow2)",
            ),
            Self::Luks => Some("LUKS volumes are not disk images"),
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Iso => "iso",
            Self::Vmdk => "vmdk",
            Self::Vdi => "vdi",
            Self::Vhd => "vhd",
            Self::Vhdx => "vhdx",
            Self::Qed => "qed",
            Self::Luks => "luks",
        })
    }
}

fn has_magic(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len())
        .is_some_and(|bytes| bytes == magic)
}

/// The partition table a raw image starts with, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    /// GUID partition table (with its protective MBR).
    Gpt,
    /// A classic MBR partition table.
    Mbr,
    /// Neither.
    None,
}

impl PartitionTable {
    /// Looks for a GPT header (512- or 4096-byte sectors) or an MBR boot signature.
    pub fn detect(head: &[u8]) -> Self {
        let at = |offset: usize, magic: &[u8]| has_magic(head, offset, magic);
        if at(512, b"EFI PART") || at(4096, b"EFI PART") {
            Self::Gpt
        } else if at(510, &[0x55, 0xaa]) {
            Self::Mbr
        } else {
            Self::None
        }
    }
}

/// The format the caller says the image has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredFormat {
    /// Accept raw or qcow2, whichever the content is.
    #[default]
    Auto,
    /// The content must be raw.
    Raw,
    /// The content must be qcow2.
    Qcow2,
}

impl DeclaredFormat {
    /// Whether content detected as `detected` is acceptable.
    pub fn accepts(self, detected: DiskFormat) -> bool {
        match self {
            Self::Auto => matches!(detected, DiskFormat::Raw | DiskFormat::Qcow2),
            Self::Raw => detected == DiskFormat::Raw,
            Self::Qcow2 => detected == DiskFormat::Qcow2,
        }
    }
}

impl FromStr for DeclaredFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            other => Err(format!(
                "unknown image format {other:?} (expected auto, raw or qcow2)"
            )),
        }
    }
}

impl fmt::Display for DeclaredFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_magics() {
        assert_eq!(Container::detect(&[0x1f, 0x8b, 8]), Container::Gzip);
        assert_eq!(
            Container::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Container::Zstd
        );
        assert_eq!(Container::detect(b"QFI\xfb"), Container::None);
        assert_eq!(DiskFormat::detect(b"QFI\xfb\0\0\0\x03"), DiskFormat::Qcow2);
        assert_eq!(DiskFormat::detect(b"KDMV...."), DiskFormat::Vmdk);
        let mut iso = vec![0u8; 0x9000];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(DiskFormat::detect(&iso), DiskFormat::Iso);
        let mut vdi = vec![0u8; 0x200];
        vdi[0x40..0x44].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        assert_eq!(DiskFormat::detect(&vdi), DiskFormat::Vdi);
        assert_eq!(DiskFormat::detect(&[0u8; 100]), DiskFormat::Raw);
        assert_eq!(DiskFormat::detect(&[]), DiskFormat::Raw);
    }

    #[test]
    fn declared_must_match_detected() {
        assert!(DeclaredFormat::Auto.accepts(DiskFormat::Qcow2));
        assert!(!DeclaredFormat::Raw.accepts(DiskFormat::Qcow2));
        assert!(!DeclaredFormat::Qcow2.accepts(DiskFormat::Raw));
        assert!(!DeclaredFormat::Auto.accepts(DiskFormat::Vmdk));
    }
}
