//! The inventory as a short human-readable report (`rivet-agent inventory` without `--json`).

use std::fmt;

use super::Inventory;

const GIB: f64 = (1u64 << 30) as f64;

impl fmt::Display for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vendor = self.system_vendor.clone().unwrap_or_default();
        writeln!(
            f,
            "System    {} {} (serial {}), boot mode {}",
            vendor.manufacturer.as_deref().unwrap_or("?"),
            vendor.product_name.as_deref().unwrap_or("?"),
            vendor.serial_number.as_deref().unwrap_or("?"),
            serde_json::to_value(self.boot_mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        )?;
        if let Some(bios) = self.firmware.as_ref().and_then(|fw| fw.bios.as_ref()) {
            writeln!(
                f,
                "Firmware  {} {} ({})",
                bios.vendor.as_deref().unwrap_or("?"),
                bios.version.as_deref().unwrap_or("?"),
                bios.date.as_deref().unwrap_or("?"),
            )?;
        }
        if let Some(cpu) = &self.cpu {
            writeln!(
                f,
                "CPU       {} × {} ({}, {:.0} MHz)",
                cpu.cpu.count.unwrap_or_default(),
                cpu.cpu.model.as_deref().unwrap_or("?"),
                cpu.cpu.arch.as_deref().unwrap_or("?"),
                cpu.cpu.clock_megahertz.unwrap_or_default(),
            )?;
        }
        if let Some(mib) = self.ram_mebibytes {
            writeln!(f, "Memory    {mib} MiB")?;
        }
        writeln!(f, "Disks")?;
        for disk in &self.storage {
            let s = &disk.storage;
            let mut flags = Vec::new();
            if disk.read_only {
                flags.push("read-only");
            }
            if disk.virtual_media {
                flags.push("virtual media");
            }
            writeln!(
                f,
                "  {:<14} {:>8.1} GiB  {:<4}  {:<20} {:<20} {}{}",
                disk.kernel_name,
                disk.size_bytes() as f64 / GIB,
                s.kind
                    .and_then(|k| serde_json::to_value(k).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                s.serial_number.as_deref().unwrap_or("-"),
                s.model.as_deref().unwrap_or("-"),
                s.name.as_deref().unwrap_or("-"),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", flags.join(", "))
                },
            )?;
        }
        writeln!(f, "NICs")?;
        for nic in &self.nics {
            let addresses: Vec<&str> = nic
                .ipv4_addresses
                .iter()
                .chain(&nic.ipv6_addresses)
                .map(String::as_str)
                .collect();
            writeln!(
                f,
                "  {:<10} {}  {:<12} {:>6}  link {}  {}{}",
                nic.nic.name.as_deref().unwrap_or("?"),
                nic.nic.mac.as_deref().unwrap_or("?"),
                nic.driver.as_deref().unwrap_or("-"),
                nic.speed_mbps
                    .map(|mbps| format!("{mbps}M"))
                    .unwrap_or_else(|| "-".to_owned()),
                if nic.has_carrier { "up" } else { "down" },
                addresses.join(" "),
                if nic.nic.pxe == Some(true) {
                    "  (booted from)"
                } else {
                    ""
                },
            )?;
        }
        Ok(())
    }
}
