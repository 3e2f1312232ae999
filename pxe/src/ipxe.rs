//! iPXE scripts rendered from typed values.
//!
//! Every value interpolated here was validated when it was built (see [`crate::cmdline`]),
//! so a script always has exactly the commands written below.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::cmdline::{RelativePath, SafeUrl, UnsafeValue};
use crate::hosts::{AgentBoot, Asset, BootAction, HostTable, Lookup, UnknownPolicy};
use crate::mac::MacAddr;

/// How many times an agent boot is attempted before the script gives up and hands the
/// machine back to its firmware (Ironic's default is also 10).
const BOOT_ATTEMPTS: u32 = 10;

/// Where hosts reach Rivet's HTTP service: `http://10.99.0.1:8080`, or a prefix under
/// another server (`http://engine:6385/boot`) when the router is mounted elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBase(String);

impl HttpBase {
    /// The URL of a host's script: `<base>/boot/<52-54-00-12-34-56>.ipxe`.
    pub fn script_url(&self, mac: MacAddr) -> String {
        format!("{}/boot/{}.ipxe", self.0, mac.hyphenated())
    }

    /// The URL of a file under the HTTP root.
    pub fn file_url(&self, path: &RelativePath) -> String {
        format!("{}/files/{path}", self.0)
    }

    /// The URL of an iPXE binary (for UEFI HTTP boot clients).
    pub fn ipxe_binary_url(&self, name: &RelativePath) -> String {
        format!("{}/ipxe/{name}", self.0)
    }

    /// The URL hosts fetch an asset from.
    pub fn asset_url(&self, asset: &Asset) -> String {
        match asset {
            Asset::File(path) => self.file_url(path),
            Asset::Url(url) => url.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HttpBase {
    type Err = UnsafeValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim_end_matches('/');
        let url: SafeUrl = trimmed.parse()?;
        if url.as_str().contains(['?', '#']) {
            return Err(UnsafeValue::Invalid {
                what: "the HTTP base URL",
                value: input.to_owned(),
                reason: "it cannot carry a query or fragment",
            });
        }
        Ok(Self(url.as_str().to_owned()))
    }
}

impl std::fmt::Display for HttpBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The script for `mac` under `table`, or `None` when the table says the host gets nothing
/// (ignored, or unknown without discovery).
pub fn script_for(table: &HostTable, mac: MacAddr, base: &HttpBase) -> Option<String> {
    match table.lookup(mac) {
        Lookup::Known(host) => match &host.boot {
            BootAction::Agent(agent) => Some(agent_script(mac, agent, base)),
            BootAction::LocalDisk => Some(local_disk_script(mac)),
            BootAction::Ignore => None,
        },
        Lookup::Unknown(UnknownPolicy::Discover) => table
            .agent_for(mac)
            .map(|agent| agent_script(mac, agent, base)),
        Lookup::Unknown(_) => None,
    }
}

/// Boots `agent`, retrying downloads, and hands the machine back to the firmware after
/// [`BOOT_ATTEMPTS`] failures.
///
/// The kernel line always names each initrd (`initrd=<name>`): EFI-stub kernels started by
/// iPXE builds without LoadFile2 support (Debian's 2019 build) find their initrd only that
/// way, and BIOS kernels ignore the argument.
pub fn agent_script(mac: MacAddr, agent: &AgentBoot, base: &HttpBase) -> String {
    let initrds: Vec<(String, String)> = agent
        .initrds
        .iter()
        .enumerate()
        .map(|(index, asset)| {
            let name = asset.image_name(format!("initrd{index}"));
            (name.to_string(), base.asset_url(asset))
        })
        .collect();
    let kernel_name = agent.kernel.image_name("kernel".to_owned());
    let mut kernel_line = format!(
        "kernel --name {kernel_name} {}",
        base.asset_url(&agent.kernel)
    );
    for (name, _) in &initrds {
        let _ = write!(kernel_line, " initrd={name}");
    }
    if !agent.cmdline.is_empty() {
        let _ = write!(kernel_line, " {}", agent.cmdline);
    }

    let mut script = String::new();
    let _ = writeln!(script, "#!ipxe");
    let _ = writeln!(script, "# Rivet: boot the agent on {mac}");
    let _ = writeln!(script, "set rivet-attempt:int32 0");
    let _ = writeln!(script, ":rivet-boot");
    let _ = writeln!(script, "echo Rivet: downloading the agent for {mac}");
    let _ = writeln!(script, "{kernel_line} || goto rivet-retry");
    for (name, url) in &initrds {
        let _ = writeln!(script, "initrd --name {name} {url} || goto rivet-retry");
    }
    let _ = writeln!(script, "boot || goto rivet-retry");
    let _ = writeln!(script, ":rivet-retry");
    let _ = writeln!(script, "imgfree ||");
    let _ = writeln!(script, "inc rivet-attempt");
    let _ = writeln!(
        script,
        "iseq ${{rivet-attempt}} {BOOT_ATTEMPTS} && goto rivet-give-up ||"
    );
    let _ = writeln!(
        script,
        "echo Rivet: attempt ${{rivet-attempt}} failed, retrying in 5 seconds"
    );
    let _ = writeln!(script, "sleep 5 ||");
    let _ = writeln!(script, "goto rivet-boot");
    let _ = writeln!(script, ":rivet-give-up");
    let _ = writeln!(
        script,
        "echo Rivet: giving up after {BOOT_ATTEMPTS} attempts; returning to the firmware"
    );
    let _ = writeln!(script, "exit 1");
    script
}

/// Boots the first local disk: `sanboot` of BIOS drive 0x80 under a BIOS, and `exit` (the
/// firmware moves on to its next boot option) under UEFI or if `sanboot` fails.
pub fn local_disk_script(mac: MacAddr) -> String {
    format!(
        "#!ipxe\n\
         # Rivet: boot {mac} from its local disk\n\
         echo Rivet: booting from the local disk\n\
         iseq ${{platform}} pcbios && sanboot --no-describe --drive 0x80 ||\n\
         exit\n"
    )
}

/// The script for DHCP servers Rivet does not control: chain to the per-host script.
pub fn chain_script(base: &HttpBase) -> String {
    format!(
        "#!ipxe\n\
         # Rivet: fetch this machine's own script\n\
         chain {}/boot/${{mac:hexhyp}}.ipxe || exit 1\n",
        base.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HttpBase {
        "http://10.99.0.1:8080/".parse().unwrap()
    }

    fn mac() -> MacAddr {
        "52:54:00:12:34:56".parse().unwrap()
    }

    fn agent(cmdline: &str) -> AgentBoot {
        AgentBoot {
            kernel: "agent/vmlinuz".parse().unwrap(),
            initrds: vec![
                "agent/initramfs.cpio.gz".parse().unwrap(),
                "https://mirror.example/extra?x=1".parse().unwrap(),
            ],
            cmdline: cmdline.parse().unwrap(),
        }
    }

    #[test]
    fn the_agent_script_names_every_initrd_on_the_kernel_line() {
        let script = agent_script(mac(), &agent("console=ttyS0 quiet"), &base());
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains(
            "kernel --name vmlinuz http://10.99.0.1:8080/files/agent/vmlinuz \
             initrd=initramfs.cpio.gz initrd=extra console=ttyS0 quiet || goto rivet-retry\n"
        ));
        assert!(script.contains(
            "initrd --name initramfs.cpio.gz http://10.99.0.1:8080/files/agent/initramfs.cpio.gz || goto rivet-retry\n"
        ));
        assert!(script.contains(
            "initrd --name extra https://mirror.example/extra?x=1 || goto rivet-retry\n"
        ));
        assert!(script.contains("boot || goto rivet-retry\n"));
        assert!(script.ends_with("exit 1\n"));
    }

    #[test]
    fn every_script_line_is_one_of_ours() {
        // Whatever the (validated) inputs, the set of commands never changes.
        let script = agent_script(mac(), &agent("a||b c=d&&e f;g"), &base());
        let commands: Vec<&str> = script
            .lines()
            .filter(|line| !line.starts_with('#') && !line.starts_with(':'))
            .map(|line| line.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            commands,
            [
                "set", "echo", "kernel", "initrd", "initrd", "boot", "imgfree", "inc", "iseq",
                "echo", "sleep", "goto", "echo", "exit"
            ]
        );
        for line in script.lines() {
            for token in line.split(' ').skip(1) {
                if ["||", "&&", ";"].contains(&token) {
                    // Only our own fallbacks, at the end of a line we wrote.
                    assert!(
                        line.ends_with(" ||") || line.contains("|| goto rivet-"),
                        "{line}"
                    );
                }
            }
        }
    }

    #[test]
    fn local_disk_and_chain_scripts() {
        let local = local_disk_script(mac());
        assert!(local.contains("sanboot --no-describe --drive 0x80"));
        assert!(local.ends_with("exit\n"));
        assert_eq!(
            chain_script(&base()),
            "#!ipxe\n# Rivet: fetch this machine's own script\n\
             chain http://10.99.0.1:8080/boot/${mac:hexhyp}.ipxe || exit 1\n"
        );
    }

    #[test]
    fn scripts_follow_the_table() {
        let table = HostTable::from_json(
            r#"{"agent": {"kernel": "k"}, "hosts": [
                {"mac": "52:54:00:12:34:56", "boot": "local_disk"},
                {"mac": "52:54:00:12:34:57", "boot": "ignore"},
                {"mac": "52:54:00:12:34:58", "boot": "agent"}]}"#,
        )
        .unwrap();
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        assert!(
            script_for(&table, mac("52:54:00:12:34:56"), &base())
                .unwrap()
                .contains("sanboot")
        );
        assert_eq!(script_for(&table, mac("52:54:00:12:34:57"), &base()), None);
        assert!(
            script_for(&table, mac("52:54:00:12:34:58"), &base())
                .unwrap()
                .contains("kernel --name k http://10.99.0.1:8080/files/k")
        );
        assert_eq!(script_for(&table, mac("52:54:00:00:00:00"), &base()), None);
    }

    #[test]
    fn urls_for_hosts_files_and_binaries() {
        let base = base();
        assert_eq!(
            base.script_url(mac()),
            "http://10.99.0.1:8080/boot/52-54-00-12-34-56.ipxe"
        );
        assert_eq!(
            base.ipxe_binary_url(&"snponly.efi".parse().unwrap()),
            "http://10.99.0.1:8080/ipxe/snponly.efi"
        );
        assert!("http://x/?a".parse::<HttpBase>().is_err());
        assert_eq!(
            "http://engine:6385/boot"
                .parse::<HttpBase>()
                .unwrap()
                .as_str(),
            "http://engine:6385/boot"
        );
    }
}
