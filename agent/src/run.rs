//! `rivet-agent run`: the ramdisk's main program. Reads the job from the kernel command line,
//! says it is ready, runs the job, prints the result between markers.

use serde::Serialize;

use crate::clean::{self, CleanOptions};
use crate::cmdline::KernelCommandLine;
use crate::configdrive::ConfigDrive;
use crate::console::{self, Progress};
use crate::deploy::{self, ChosenDisk, DeployError, DeployRequest};
use crate::hints::{HintSet, select_root_disk};
use crate::inventory::{InterfaceAddress, Inventory};
use crate::job::{self, DeployJob, DiskSelection, Job, JobSpec};
use crate::machine;
use crate::sysfs::SysRoot;

/// Extra parameters the ramdisk's `/init` found on the boot medium.
pub const EXTRA_CMDLINE_FILE: &str = "/run/rivet/cmdline";

/// The result printed for a job.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub job: Option<&'static str>,
    pub succeeded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
}

impl JobResult {
    fn failed(job: Option<&'static str>, error: String) -> Self {
        Self {
            job,
            succeeded: false,
            error: Some(error),
            result: serde_json::Value::Null,
        }
    }
}

/// The command line the kernel was booted with, plus the boot medium's additions.
pub fn kernel_command_line(sys: &SysRoot) -> KernelCommandLine {
    let mut line = KernelCommandLine::parse(&sys.read("/proc/cmdline").unwrap_or_default());
    if let Some(extra) = sys.read(EXTRA_CMDLINE_FILE) {
        line.extend(KernelCommandLine::parse(&extra));
    }
    line
}

/// One line saying the agent is up and what it sees.
pub fn ready_line(inventory: &Inventory) -> String {
    let addresses: Vec<String> = inventory
        .nics
        .iter()
        .flat_map(|nic| {
            nic.ipv4_addresses
                .iter()
                .map(move |ip| format!("{}={ip}", nic.nic.name.as_deref().unwrap_or("?")))
        })
        .collect();
    let uptime = sys_uptime()
        .map(|s| format!(", uptime {s:.2} s"))
        .unwrap_or_default();
    format!(
        "{}: version {}{uptime}, {} boot, {} disks, {} NICs, addresses [{}]",
        console::READY,
        env!("CARGO_PKG_VERSION"),
        serde_json::to_value(inventory.boot_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        inventory.storage.len(),
        inventory.nics.len(),
        addresses.join(" ")
    )
}

fn sys_uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the job the command line names on the machine `sys` describes.
pub fn execute(
    line: &KernelCommandLine,
    sys: &SysRoot,
    addresses: &[InterfaceAddress],
) -> JobResult {
    let spec = match job::from_cmdline(line) {
        Ok(spec) => spec,
        Err(err) => return JobResult::failed(None, err.to_string()),
    };
    let inventory = Inventory::collect(sys, addresses);
    let name = Some(spec.job.name());
    match run_job(&spec, &inventory) {
        Ok(result) => result,
        Err(error) => JobResult::failed(name, error),
    }
}

fn run_job(spec: &JobSpec, inventory: &Inventory) -> Result<JobResult, String> {
    let name = Some(spec.job.name());
    match &spec.job {
        Job::Inventory => {
            let root_device = match select_root_disk(&inventory.storage, &spec.hints) {
                Ok(disk) => {
                    serde_json::json!({ "name": disk.kernel_name, "byPath": disk.storage.name })
                }
                Err(err) => serde_json::json!({ "error": err.to_string() }),
            };
            Ok(JobResult {
                job: name,
                succeeded: true,
                error: None,
                result: serde_json::json!({
                    "inventory": inventory,
                    "rootDevice": root_device,
                    "hints": spec.hints.to_string(),
                }),
            })
        }
        Job::Clean { options, disks } => {
            let named: &[String] = match disks {
                DiskSelection::All => &[],
                DiskSelection::Named(names) => names,
            };
            let targets = machine::clean_targets(inventory, named).map_err(|err| err.message)?;
            let progress = Progress::new("erasing");
            let report = clean::clean(&targets, *options, &|disk, done, total| {
                progress.update(disk, done, total)
            });
            Ok(JobResult {
                job: name,
                succeeded: report.succeeded(),
                error: (!report.succeeded())
                    .then(|| "some disks were not cleaned; see the report".to_owned()),
                result: serde_json::to_value(&report).map_err(|e| e.to_string())?,
            })
        }
        Job::Deploy(job) => Ok(deploy_job(job, &spec.hints, inventory)),
    }
}

/// A deploy from the command line's parameters onto the disk the hints choose. A failure's
/// result still says which disk was chosen and whether it was wiped.
fn deploy_job(job: &DeployJob, hints: &HintSet, inventory: &Inventory) -> JobResult {
    let name = Some("deploy");
    let prepared = ChosenDisk::select(&inventory.storage, hints).and_then(|disk| {
        let mut request = DeployRequest::parse(
            &job.image_url,
            job.checksum.as_deref(),
            job.checksum_type.as_deref(),
            job.format.as_deref(),
        )?;
        request.config_drive = job
            .config_drive
            .as_deref()
            .map(ConfigDrive::load)
            .transpose()
            .map_err(DeployError::ConfigDriveSource)?;
        request.clean = job.clean.map(|mode| CleanOptions {
            mode,
            ..CleanOptions::default()
        });
        Ok((disk, request))
    });
    let (disk, request) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return JobResult::failed(name, err.chain()),
    };
    let progress = console::image_progress(disk.path.clone());
    match deploy::deploy(&disk, &request, Some(progress)) {
        Ok(report) => match serde_json::to_value(&report) {
            Ok(result) => JobResult {
                job: name,
                succeeded: true,
                error: None,
                result,
            },
            Err(err) => JobResult::failed(name, err.to_string()),
        },
        Err(err) => JobResult {
            job: name,
            succeeded: false,
            error: Some(err.chain()),
            result: serde_json::json!({
                "disk": disk,
                "checksumMismatch": err.is_verification_failure(),
                "diskWiped": err.disk_wiped(),
            }),
        },
    }
}
