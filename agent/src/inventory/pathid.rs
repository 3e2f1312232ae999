//! Stable `/dev/disk/by-path` names computed from sysfs, the way udev's `path_id` builtin
//! composes them — the ramdisk runs no udev, yet users write these names into root-device
//! hints and expect the names their installed systems show.
//!
//! The walk goes from the block device up through its parents, prepending one element per
//! bus it crosses: `pci-0000:00:1f.2-ata-1.0`, `pci-0000:00:05.0-scsi-0:0:1:0`,
//! `pci-0000:00:06.0-nvme-1`, `pci-0000:00:04.0` (virtio-blk), `pci-…-sas-0x5000…-lun-0`,
//! `pci-…-usb-0:1.2:1.0-scsi-0:0:0:0`.

use crate::sysfs::SysRoot;

/// The transport a disk hangs off, as far as naming and selection care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Virtio,
    Nvme,
    Sata,
    Scsi,
    Sas,
    Fc,
    Iscsi,
    Usb,
    Unknown,
}

/// What the walk found for one block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevicePath {
    /// `ID_PATH`, e.g. `pci-0000:00:1f.2-ata-1.0`; `None` when udev would not name it either
    /// (no supported parent or transport).
    pub(crate) id_path: Option<String>,
    /// `ID_PATH_ATA_COMPAT`: the pre-systemd-v252 ATA form without the device number.
    pub(crate) ata_compat: Option<String>,
    pub(crate) transport: Transport,
    /// The PCI function the disk sits behind, if any.
    pub(crate) pci_address: Option<String>,
}

/// One device directory in sysfs.
struct Node<'a> {
    sys: &'a SysRoot,
    path: String,
}

impl<'a> Node<'a> {
    fn new(sys: &'a SysRoot, path: String) -> Self {
        Self { sys, path }
    }

    fn sysname(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    fn subsystem(&self) -> Option<String> {
        self.sys.link_name(&format!("{}/subsystem", self.path))
    }

    fn devtype(&self) -> Option<String> {
        self.sys
            .read(&format!("{}/uevent", self.path))?
            .lines()
            .find_map(|line| line.strip_prefix("DEVTYPE=").map(str::to_owned))
    }

    fn parent(&self) -> Option<Node<'a>> {
        let (parent, _) = self.path.rsplit_once('/')?;
        // `/sys/devices` itself is the top; nothing above it is a device.
        (parent.len() > "/sys/devices".len()).then(|| Node::new(self.sys, parent.to_owned()))
    }

    /// The nearest ancestor (or self) of `subsystem`/`devtype`.
    fn ancestor_with(&self, subsystem: &str, devtype: &str) -> Option<Node<'a>> {
        let mut node = Some(Node::new(self.sys, self.path.clone()));
        while let Some(current) = node {
            if current.subsystem().as_deref() == Some(subsystem)
                && current.devtype().as_deref() == Some(devtype)
            {
                return Some(current);
            }
            node = current.parent();
        }
        None
    }

    /// Climbs while the parent is still in `subsystem`; returns the topmost such node.
    fn skip_subsystem(self, subsystem: &str) -> Node<'a> {
        let mut node = self;
        while let Some(parent) = node.parent() {
            if parent.subsystem().as_deref() != Some(subsystem) {
                break;
            }
            node = parent;
        }
        node
    }
}

/// Walks from the block device `name` (`sda`, `nvme0n1`) to the root of the device tree.
pub(crate) fn device_path(sys: &SysRoot, name: &str) -> DevicePath {
    let mut walk = Walk::default();
    let Some(mut start) = sys.resolve(&format!("/sys/block/{name}")) else {
        return walk.finish();
    };
    // With NVMe multipathing the namespace lives under a virtual subsystem; its controller
    // (named by the prefix `nvmeN`) sits on the real bus.
    if start.starts_with("/sys/devices/virtual/nvme-subsystem/") {
        let controller: String = name
            .strip_prefix("nvme")
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                format!("nvme{digits}")
            })
            .unwrap_or_default();
        let Some(real) = sys.resolve(&format!("/sys/class/nvme/{controller}")) else {
            return walk.finish();
        };
        if real.starts_with("/sys/devices/virtual/") {
            return walk.finish();
        }
        if let Some(nsid) = sys.read_trimmed(&format!("/sys/block/{name}/nsid")) {
            walk.prepend(format!("nvme-{nsid}"));
            walk.set_transport(Transport::Nvme);
            walk.supported_parent = true;
            walk.supported_transport = true;
        }
        start = real
            .rsplit_once('/')
            .map(|(p, _)| p.to_owned())
            .unwrap_or(real);
    }
    let mut node = Some(Node::new(sys, start));
    while let Some(current) = node {
        let next = walk.visit(current, name);
        node = next.and_then(|n| n.parent());
    }
    walk.finish()
}

#[derive(Default)]
struct Walk {
    parts: Vec<String>,
    compat: Vec<String>,
    transport: Option<Transport>,
    supported_parent: bool,
    supported_transport: bool,
    pci_address: Option<String>,
}

impl Walk {
    fn prepend(&mut self, part: String) {
        self.parts.push(part.clone());
        self.compat.push(part);
    }

    fn set_transport(&mut self, transport: Transport) {
        if self.transport.is_none() {
            self.transport = Some(transport);
        }
    }

    /// Handles one node; returns the node to continue from (its parent comes next), or
    /// `None` to stop.
    fn visit<'a>(&mut self, node: Node<'a>, block_name: &str) -> Option<Node<'a>> {
        let subsystem = node.subsystem().unwrap_or_default();
        match subsystem.as_str() {
            "scsi" => {
                self.supported_transport = true;
                self.scsi(node)
            }
            "pci" => {
                let sysname = node.sysname().to_owned();
                self.pci_address.get_or_insert(sysname.clone());
                self.prepend(format!("pci-{sysname}"));
                self.supported_parent = true;
                Some(node.skip_subsystem("pci"))
            }
            "virtio" => {
                self.set_transport(Transport::Virtio);
                self.supported_transport = true;
                Some(node.skip_subsystem("virtio"))
            }
            "nvme" => {
                let nsid = node
                    .sys
                    .read_trimmed(&format!("/sys/block/{block_name}/nsid"))?;
                self.prepend(format!("nvme-{nsid}"));
                self.set_transport(Transport::Nvme);
                self.supported_parent = true;
                self.supported_transport = true;
                Some(node.skip_subsystem("nvme"))
            }
            "usb" => {
                let devtype = node.devtype().unwrap_or_default();
                if devtype != "usb_interface" && devtype != "usb_device" {
                    return Some(node);
                }
                let port = node.sysname().split_once('-').map(|(_, p)| p.to_owned())?;
                self.prepend(format!("usb-0:{port}"));
                // A USB disk speaks SCSI too; what matters is that it is on USB.
                self.transport = Some(Transport::Usb);
                self.supported_transport = true;
                Some(node.skip_subsystem("usb"))
            }
            "platform" | "acpi" | "xen" => {
                self.prepend(format!("{subsystem}-{}", node.sysname()));
                self.supported_parent = true;
                if subsystem == "platform" {
                    self.supported_transport = true;
                }
                let skip = subsystem.clone();
                Some(node.skip_subsystem(&skip))
            }
            _ => Some(node),
        }
    }

    fn scsi<'a>(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        if node.devtype().as_deref() != Some("scsi_device") {
            return Some(node);
        }
        let path = node.path.clone();
        if path.contains("/rport-") {
            self.supported_parent = true;
            self.set_transport(Transport::Fc);
            return self.fibre_channel(node);
        }
        if path.contains("/end_device-") {
            self.supported_parent = true;
            self.set_transport(Transport::Sas);
            return self.sas(node);
        }
        if path.contains("/session") {
            self.supported_parent = true;
            self.set_transport(Transport::Iscsi);
            return self.iscsi(node);
        }
        if path.contains("/ata") {
            self.set_transport(Transport::Sata);
            return self.ata(node);
        }
        self.set_transport(Transport::Scsi);
        self.scsi_default(node)
    }

    fn ata<'a>(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        let [_, bus, target, _] = hctl(node.sysname())?;
        let host = node.ancestor_with("scsi", "scsi_host")?;
        let port = host.parent()?;
        let port_no = node
            .sys
            .read_trimmed(&format!("/sys/class/ata_port/{}/port_no", port.sysname()))?;
        let part = if bus != 0 {
            // A device behind a port multiplier.
            format!("ata-{port_no}.{bus}.0")
        } else {
            format!("ata-{port_no}.{target}")
        };
        self.parts.push(part);
        self.compat.push(format!("ata-{port_no}"));
        Some(node)
    }

    fn scsi_default<'a>(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        let [host, bus, target, lun] = hctl(node.sysname())?;
        let host_node = node.ancestor_with("scsi", "scsi_host")?;
        // udev numbers hosts relative to the lowest host on the same parent, so that the
        // name does not depend on how many other adapters were probed first.
        let base = host_node
            .parent()
            .map(|parent| {
                node.sys
                    .list(&parent.path)
                    .iter()
                    .filter_map(|entry| entry.strip_prefix("host")?.parse::<u64>().ok())
                    .min()
            })
            .unwrap_or_default();
        let Some(base) = base else {
            return Some(host_node);
        };
        self.prepend(format!(
            "scsi-{}:{bus}:{target}:{lun}",
            host.saturating_sub(base)
        ));
        Some(host_node)
    }

    fn fibre_channel<'a>(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        let target = node.ancestor_with("scsi", "scsi_target")?;
        let port = node.sys.read_trimmed(&format!(
            "/sys/class/fc_transport/{}/port_name",
            target.sysname()
        ))?;
        self.prepend(format!("fc-{port}-{}", lun_part(&node)?));
        Some(node)
    }

    fn sas<'a>(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        let target = node.ancestor_with("scsi", "scsi_target")?;
        let end_device = target.parent()?;
        let port = end_device.parent()?;
        let sys = node.sys;
        let lun = lun_part(&node)?;
        let num_phys =
            sys.read_trimmed(&format!("/sys/class/sas_port/{}/num_phys", port.sysname()));
        if num_phys.as_deref() != Some("1") {
            let address = sys.read_trimmed(&format!(
                "/sys/class/sas_device/{}/sas_address",
                end_device.sysname()
            ))?;
            self.prepend(format!("sas-{address}-{lun}"));
            return Some(node);
        }
        let phy = sys.read_trimmed(&format!(
            "/sys/class/sas_device/{}/phy_identifier",
            end_device.sysname()
        ))?;
        let expander = port.parent()?;
        match sys.read_trimmed(&format!(
            "/sys/class/sas_device/{}/sas_address",
            expander.sysname()
        )) {
            Some(address) => self.prepend(format!("sas-exp{address}-phy{phy}-{lun}")),
            None => self.prepend(format!("sas-phy{phy}-{lun}")),
        }
        Some(node)
    }

    fn iscsi<'a>(&mut self, node: Node<'a>) -> Option<Node<'a>> {
        let mut session = node.parent();
        while let Some(candidate) = &session {
            if candidate.sysname().starts_with("session") {
                break;
            }
            session = candidate.parent();
        }
        let session = session?;
        let sys = node.sys;
        let target = sys.read_trimmed(&format!(
            "/sys/class/iscsi_session/{}/targetname",
            session.sysname()
        ))?;
        let number = session.sysname().trim_start_matches("session");
        let connection = format!("/sys/class/iscsi_connection/connection{number}:0");
        let address = sys.read_trimmed(&format!("{connection}/persistent_address"))?;
        let port = sys.read_trimmed(&format!("{connection}/persistent_port"))?;
        self.prepend(format!(
            "ip-{address}:{port}-iscsi-{target}-{}",
            lun_part(&node)?
        ));
        Some(node)
    }

    fn finish(self) -> DevicePath {
        let transport = self.transport.unwrap_or(Transport::Unknown);
        let named = !self.parts.is_empty() && self.supported_parent && self.supported_transport;
        let join = |parts: &[String]| parts.iter().rev().cloned().collect::<Vec<_>>().join("-");
        let id_path = named.then(|| join(&self.parts));
        let ata_compat = (named && transport == Transport::Sata)
            .then(|| join(&self.compat))
            .filter(|compat| Some(compat) != id_path.as_ref());
        DevicePath {
            id_path,
            ata_compat,
            transport,
            pci_address: self.pci_address,
        }
    }
}

/// `H:C:T:L` from a SCSI device name.
fn hctl(name: &str) -> Option<[u64; 4]> {
    let mut numbers = name.split(':').map(|n| n.parse::<u64>().ok());
    let h = numbers.next()??;
    let c = numbers.next()??;
    let t = numbers.next()??;
    let l = numbers.next()??;
    numbers.next().is_none().then_some([h, c, t, l])
}

/// udev's LUN element: `lun-N` for the flat space, the SAM-encoded form above 255.
fn lun_part(node: &Node<'_>) -> Option<String> {
    let [_, _, _, lun] = hctl(node.sysname())?;
    Some(if lun < 256 {
        format!("lun-{lun}")
    } else {
        format!(
            "lun-0x{:04x}{:04x}00000000",
            lun & 0xffff,
            (lun >> 16) & 0xffff
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scsi_addresses() {
        assert_eq!(hctl("2:0:1:0"), Some([2, 0, 1, 0]));
        assert_eq!(hctl("host2"), None);
        assert_eq!(hctl("1:2:3"), None);
        assert_eq!(hctl("1:2:3:4:5"), None);
    }
}
