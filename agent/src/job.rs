//! One-shot jobs for `rivet-agent run`: what to do comes from the kernel command line (and
//! the boot ISO's `rivet/cmdline`), the result goes to the console between markers.
//!
//! | Parameter | Meaning |
//! |---|---|
//! | `rivet.job=inventory\|clean\|deploy` | the job (required) |
//! | `rivet.after=poweroff\|reboot\|stay` | what to do afterwards (default `poweroff`) |
//! | `rivet.hints=<JSON>` | root-device hints, base64 or percent-encoded JSON |
//! | `rivet.clean.mode=metadata\|erase` | cleaning mode (default `metadata`) |
//! | `rivet.clean.disks=all\|vda,sdb` | disks to clean (default `all`) |
//! | `rivet.clean.skip_read_only`, `rivet.clean.force` | cleaning policy flags |
//! | `rivet.image=<url>` | the image to deploy |
//! | `rivet.image.checksum=<hex or url>`, `rivet.image.checksum_type=sha256\|sha512\|md5` | its checksum |
//! | `rivet.image.format=raw\|qcow2` | its declared format |
//! | `rivet.configdrive=<path>` | a directory whose files become the config drive, or a file with Ironic's JSON form |
//! | `rivet.clean.mode=metadata\|erase` (with `deploy`) | clean the chosen disk first |

use std::path::PathBuf;

use base64::Engine as _;
use serde::Serialize;

use crate::clean::{CleanMode, CleanOptions};
use crate::cmdline::{CommandLineError, KernelCommandLine};
use crate::hints::HintSet;

/// What to do after the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    PowerOff,
    Reboot,
    /// Keep running (for a person at the console).
    Stay,
}

/// Which disks a cleaning job covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSelection {
    All,
    Named(Vec<String>),
}

/// An image deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployJob {
    pub image_url: String,
    pub checksum: Option<String>,
    pub checksum_type: Option<String>,
    pub format: Option<String>,
    pub config_drive: Option<PathBuf>,
    /// Clean the chosen disk first (`rivet.clean.mode=` given with a deploy job).
    pub clean: Option<CleanMode>,
}

/// A job.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Report the inventory and the disk the hints choose.
    Inventory,
    Clean {
        options: CleanOptions,
        disks: DiskSelection,
    },
    Deploy(DeployJob),
}

impl Job {
    pub fn name(&self) -> &'static str {
        match self {
            Job::Inventory => "inventory",
            Job::Clean { .. } => "clean",
            Job::Deploy(_) => "deploy",
        }
    }
}

/// A job with its hints and what to do afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub job: Job,
    pub hints: HintSet,
    pub after: After,
}

/// Reads the job from the command line. The `after` action is read even when the job is
/// invalid, so the caller can still honour it.
pub fn after_action(line: &KernelCommandLine) -> Result<After, CommandLineError> {
    match line.get("rivet.after") {
        None | Some("poweroff") => Ok(After::PowerOff),
        Some("reboot") => Ok(After::Reboot),
        Some("stay") => Ok(After::Stay),
        Some(other) => Err(invalid("rivet.after", other, "poweroff, reboot or stay")),
    }
}

fn invalid(name: &str, value: &str, expected: &'static str) -> CommandLineError {
    CommandLineError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

/// The job the command line asks for.
pub fn from_cmdline(line: &KernelCommandLine) -> Result<JobSpec, CommandLineError> {
    let after = after_action(line)?;
    let hints = match line.get("rivet.hints") {
        None => HintSet::default(),
        Some(encoded) => {
            let json = decode_json(encoded)
                .ok_or_else(|| invalid("rivet.hints", encoded, "base64 or percent-encoded JSON"))?;
            HintSet::from_json(&json).map_err(|err| CommandLineError::Invalid {
                name: "rivet.hints".to_owned(),
                value: err.to_string(),
                expected: "valid root-device hints",
            })?
        }
    };
    let job = match line.get("rivet.job") {
        None => {
            return Err(CommandLineError::Missing {
                name: "rivet.job".to_owned(),
                why: "(inventory, clean or deploy)",
            });
        }
        Some("inventory") => Job::Inventory,
        Some("clean") => {
            let mode = clean_mode(line)?.unwrap_or(CleanMode::Metadata);
            let disks = match line.get("rivet.clean.disks") {
                None | Some("all") => DiskSelection::All,
                Some(list) => DiskSelection::Named(
                    list.split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
            };
            Job::Clean {
                options: CleanOptions {
                    mode,
                    skip_read_only: line.flag("rivet.clean.skip_read_only")?,
                    force: line.flag("rivet.clean.force")?,
                    ..CleanOptions::default()
                },
                disks,
            }
        }
        Some("deploy") => {
            let image_url = line
                .get("rivet.image")
                .ok_or_else(|| CommandLineError::Missing {
                    name: "rivet.image".to_owned(),
                    why: "for a deploy job",
                })?;
            Job::Deploy(DeployJob {
                image_url: image_url.to_owned(),
                checksum: line.get("rivet.image.checksum").map(str::to_owned),
                checksum_type: line.get("rivet.image.checksum_type").map(str::to_owned),
                format: line.get("rivet.image.format").map(str::to_owned),
                config_drive: line.get("rivet.configdrive").map(PathBuf::from),
                clean: clean_mode(line)?,
            })
        }
        Some(other) => return Err(invalid("rivet.job", other, "inventory, clean or deploy")),
    };
    Ok(JobSpec { job, hints, after })
}

fn clean_mode(line: &KernelCommandLine) -> Result<Option<CleanMode>, CommandLineError> {
    match line.get("rivet.clean.mode") {
        None => Ok(None),
        Some("metadata") => Ok(Some(CleanMode::Metadata)),
        Some("erase") => Ok(Some(CleanMode::Erase)),
        Some(other) => Err(invalid("rivet.clean.mode", other, "metadata or erase")),
    }
}

/// JSON carried in a kernel parameter, which cannot hold quotes or spaces: percent-encoded
/// (`%7B%22model%22…`) or base64 (standard or URL-safe, padding optional).
pub fn decode_json(value: &str) -> Option<serde_json::Value> {
    if value.starts_with("%7B") || value.starts_with("%7b") {
        let decoded = percent_decode(value)?;
        return serde_json::from_str(&decoded).ok();
    }
    let trimmed = value.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(line: &str) -> Result<JobSpec, CommandLineError> {
        from_cmdline(&KernelCommandLine::parse(line))
    }

    #[test]
    fn reads_every_job() {
        let inventory = spec("console=ttyS0 rivet.job=inventory").unwrap();
        assert_eq!(inventory.job, Job::Inventory);
        assert_eq!(inventory.after, After::PowerOff);
        let clean = spec(
            "rivet.job=clean rivet.clean.mode=erase rivet.clean.disks=vda,sdb \
             rivet.clean.skip_read_only rivet.after=reboot",
        )
        .unwrap();
        let Job::Clean { options, disks } = clean.job else {
            panic!("not a clean job");
        };
        assert_eq!(options.mode, CleanMode::Erase);
        assert!(options.skip_read_only && !options.force);
        assert_eq!(
            disks,
            DiskSelection::Named(vec!["vda".into(), "sdb".into()])
        );
        assert_eq!(clean.after, After::Reboot);
        let deploy = spec(
            "rivet.job=deploy rivet.image=http://10.0.2.2:8080/disk.qcow2 \
             rivet.image.checksum=abc rivet.image.format=qcow2 rivet.configdrive=/media/boot/cd",
        )
        .unwrap();
        let Job::Deploy(job) = deploy.job else {
            panic!("not a deploy job");
        };
        assert_eq!(job.image_url, "http://10.0.2.2:8080/disk.qcow2");
        assert_eq!(job.format.as_deref(), Some("qcow2"));
        assert_eq!(job.config_drive, Some(PathBuf::from("/media/boot/cd")));
        assert_eq!(job.clean, None);
        let erase_first =
            spec("rivet.job=deploy rivet.image=/x.img rivet.clean.mode=erase").unwrap();
        let Job::Deploy(job) = erase_first.job else {
            panic!("not a deploy job");
        };
        assert_eq!(job.clean, Some(CleanMode::Erase));
    }

    #[test]
    fn hints_come_base64_or_percent_encoded() {
        let json = r#"{"serialNumber":"NVME-1","rotational":false}"#;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let from_b64 = spec(&format!("rivet.job=inventory rivet.hints={b64}")).unwrap();
        let pct = "%7B%22serialNumber%22%3A%22NVME-1%22%2C%22rotational%22%3Afalse%7D";
        let from_pct = spec(&format!("rivet.job=inventory rivet.hints={pct}")).unwrap();
        assert_eq!(from_b64.hints, from_pct.hints);
        assert!(!from_b64.hints.is_empty());
    }

    #[test]
    fn bad_parameters_say_what_is_wrong() {
        let missing = spec("quiet").unwrap_err().to_string();
        assert!(missing.contains("rivet.job"), "{missing}");
        let unknown = spec("rivet.job=dance").unwrap_err().to_string();
        assert!(unknown.contains("rivet.job=dance"), "{unknown}");
        assert!(
            spec("rivet.job=deploy")
                .unwrap_err()
                .to_string()
                .contains("rivet.image")
        );
        assert!(spec("rivet.job=clean rivet.clean.mode=shred").is_err());
        assert!(spec("rivet.job=inventory rivet.hints=!!!").is_err());
        let bad_hint = base64::engine::general_purpose::STANDARD.encode(r#"{"colour":"red"}"#);
        let err = spec(&format!("rivet.job=inventory rivet.hints={bad_hint}")).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(spec("rivet.job=inventory rivet.after=explode").is_err());
        assert_eq!(
            after_action(&KernelCommandLine::parse(
                "rivet.job=dance rivet.after=stay"
            ))
            .unwrap(),
            After::Stay
        );
    }
}
