//! CPU: model, logical count, sockets, architecture, clock and flags from `/proc/cpuinfo`.

use std::collections::BTreeSet;

use rivet_model::Cpu;
use serde::{Deserialize, Serialize};

use crate::sysfs::SysRoot;

/// The CPU as BMO records it plus what IPA reports besides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuInventory {
    #[serde(flatten)]
    pub cpu: Cpu,
    /// Distinct physical packages (`physical id` values); absent when the kernel does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_count: Option<u32>,
    /// The vendor string (`GenuineIntel`, `AuthenticAMD`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
}

pub(crate) fn collect(sys: &SysRoot) -> Option<CpuInventory> {
    let cpuinfo = sys.read("/proc/cpuinfo")?;
    let processors = parse_cpuinfo(&cpuinfo);
    let first = processors.first()?;
    let field = |key: &str| first.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let model = field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("cpu model"));
    let flags: Vec<String> = field("flags")
        .or_else(|| field("Features"))
        .map(|flags| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mhz_from_cpuinfo = field("cpu MHz").and_then(|mhz| mhz.parse::<f64>().ok());
    // The maximum frequency is the stable figure; `cpu MHz` moves with power management.
    let max_khz = sys.read_number::<u64>("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");
    let clock_megahertz = max_khz.map(|khz| khz as f64 / 1000.0).or(mhz_from_cpuinfo);
    let sockets: BTreeSet<String> = processors
        .iter()
        .filter_map(|p| {
            p.iter()
                .find(|(k, _)| k == "physical id")
                .map(|(_, v)| v.clone())
        })
        .collect();
    let arch = sys
        .read_trimmed("/proc/sys/kernel/arch")
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    Some(CpuInventory {
        cpu: Cpu {
            arch: Some(arch),
            model,
            clock_megahertz,
            flags,
            count: u32::try_from(processors.len()).ok(),
        },
        socket_count: (!sockets.is_empty())
            .then(|| u32::try_from(sockets.len()).ok())
            .flatten(),
        vendor: field("vendor_id"),
    })
}

/// One `key: value` list per logical processor. Architectures that print a shared header
/// (arm64's `Hardware`) put it in a block without `processor`, which is dropped.
fn parse_cpuinfo(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .filter(|fields| fields.iter().any(|(key, _)| key == "processor"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_processors_and_sockets() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
                    physical id\t: 0\ncpu MHz\t\t: 2445.406\nflags\t\t: fpu sse2 lm\n\n\
                    processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
                    physical id\t: 1\ncpu MHz\t\t: 2445.406\nflags\t\t: fpu sse2 lm\n\n";
        let processors = parse_cpuinfo(text);
        assert_eq!(processors.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), text).unwrap();
        let cpu = collect(&SysRoot::at(dir.path())).unwrap();
        assert_eq!(cpu.cpu.count, Some(2));
        assert_eq!(cpu.socket_count, Some(2));
        assert_eq!(cpu.cpu.clock_megahertz, Some(2445.406));
        assert_eq!(cpu.cpu.flags, vec!["fpu", "sse2", "lm"]);
        assert_eq!(cpu.vendor.as_deref(), Some("AuthenticAMD"));
    }
}
