//! The engine's commands done on this machine: the [`JobHandler`] that `rivet-agent run`
//! hands to the channel client when the kernel command line carries `rivet.url=`.
//!
//! Inventory, cleaning and deploying are blocking (sysfs reads, ioctls, the image pipeline
//! on its own runtime), so each runs on tokio's blocking pool; their progress goes to the
//! engine through the job's [`ProgressReporter`].

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rivet_model::HardwareDetails;

use crate::channel::protocol::{self, CleanPolicy, ConfigDriveData, DeployJob, FailureKind};
use crate::channel::{JobError, JobHandler, ProgressReporter};
use crate::clean::{self, CleanMode, CleanOptions, CleanTarget};
use crate::configdrive::ConfigDrive;
use crate::deploy::{self, ChosenDisk, DeployError, DeployRequest};
use crate::hints::HintSet;
use crate::inventory::{InterfaceAddress, Inventory, live_addresses};
use crate::sysfs::SysRoot;

/// The machine the agent runs on (or a captured tree of one, in tests).
#[derive(Debug, Clone)]
pub struct Machine {
    sys: SysRoot,
    /// Read the live interfaces' addresses (false for a captured tree: they are not its).
    live: bool,
}

impl Machine {
    /// This machine.
    pub fn live() -> Self {
        Self {
            sys: SysRoot::live(),
            live: true,
        }
    }

    /// A captured sysfs/procfs tree; no interface addresses.
    pub fn at(root: impl AsRef<Path>) -> Self {
        Self {
            sys: SysRoot::at(root.as_ref()),
            live: false,
        }
    }

    /// The inventory as it is now.
    pub fn inventory(&self) -> Inventory {
        let addresses: Vec<InterfaceAddress> = if self.live {
            live_addresses()
        } else {
            Vec::new()
        };
        Inventory::collect(&self.sys, &addresses)
    }

    /// The MAC addresses the engine knows the machine by (lowercase, colon-separated).
    pub fn macs(inventory: &Inventory) -> Vec<String> {
        let mut macs: Vec<String> = inventory
            .nics
            .iter()
            .filter_map(|nic| nic.nic.mac.as_deref())
            .filter_map(protocol::normalize_mac)
            .collect();
        macs.sort();
        macs.dedup();
        macs
    }

    /// Cleans the disks `policy` names (every disk when it names none).
    pub fn clean(&self, policy: &CleanPolicy, progress: &ProgressReporter) -> Result<(), JobError> {
        let inventory = self.inventory();
        let targets = clean_targets(&inventory, &policy.disks)?;
        if targets.is_empty() {
            return Err(JobError::new(
                FailureKind::Failed,
                "no disks to clean: the inventory found none",
            ));
        }
        let options = CleanOptions {
            mode: clean_mode(policy.mode),
            ..CleanOptions::default()
        };
        let report = clean::clean(&targets, options, &|disk, done, total| {
            progress.report(percent(done, total), format!("cleaning {}", disk.display()));
        });
        let failures: Vec<String> = report
            .disks
            .iter()
            .filter_map(|disk| {
                disk.error
                    .as_ref()
                    .filter(|_| disk.result == clean::Outcome::Failed)
                    .map(|error| format!("{}: {error}", disk.disk))
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(JobError::new(FailureKind::Failed, failures.join("; ")))
        }
    }

    /// Checks a deploy command and chooses its disk; nothing is touched yet.
    pub fn prepare_deploy(&self, job: &DeployJob) -> Result<(ChosenDisk, DeployRequest), JobError> {
        let invalid = |message: String| JobError::new(FailureKind::Invalid, message);
        let hints = match &job.root_device_hints {
            Some(hints) => HintSet::from_bmh(hints)
                .map_err(|err| invalid(format!("root-device hints: {err}")))?,
            None => HintSet::default(),
        };
        let mut request = DeployRequest::parse(
            &job.image.url,
            job.image.checksum.as_deref(),
            job.image.checksum_type.as_deref(),
            job.image.format.as_deref(),
        )
        .map_err(|err| invalid(err.chain()))?;
        request.config_drive =
            config_drive(&job.config_drive).map_err(|err| invalid(err.chain()))?;
        let disk = ChosenDisk::select(&self.inventory().storage, &hints)
            .map_err(|err| JobError::new(FailureKind::Failed, err.chain()))?;
        Ok((disk, request))
    }

    /// Writes the image onto the disk the hints choose and adds the config drive.
    pub fn deploy(&self, job: &DeployJob, progress: &ProgressReporter) -> Result<(), JobError> {
        let (disk, request) = self.prepare_deploy(job)?;
        progress.report(
            Some(0),
            format!("writing {} to {}", job.image.url, disk.path.display()),
        );
        let reporter = progress.clone();
        let on_progress: rivet_images::ProgressCallback =
            Arc::new(move |update: &rivet_images::Progress| {
                let percent = update
                    .total_bytes
                    .and_then(|total| percent(update.bytes_read, total));
                reporter.report(
                    percent,
                    format!("{} MiB written", update.bytes_written >> 20),
                );
            });
        let report = deploy::deploy(&disk, &request, Some(on_progress))
            .map_err(|err| JobError::new(FailureKind::Failed, err.chain()))?;
        progress.report(
            Some(100),
            format!(
                "{} MiB written to {} in {:.1} s",
                report.bytes_written >> 20,
                report.disk.path.display(),
                report.write_duration.as_secs_f64()
            ),
        );
        Ok(())
    }
}

/// The disks named (`/dev/…`, kernel or by-path names) as cleaning targets; every disk the
/// inventory has when none are named.
pub(crate) fn clean_targets(
    inventory: &Inventory,
    disks: &[String],
) -> Result<Vec<CleanTarget>, JobError> {
    if disks.is_empty() {
        return Ok(inventory
            .storage
            .iter()
            .map(CleanTarget::from_inventory)
            .collect());
    }
    disks
        .iter()
        .map(|name| {
            inventory
                .disk(name)
                .map(CleanTarget::from_inventory)
                .ok_or_else(|| {
                    let known: Vec<&str> = inventory
                        .storage
                        .iter()
                        .map(|d| d.kernel_name.as_str())
                        .collect();
                    JobError::new(
                        FailureKind::Invalid,
                        format!(
                            "no disk named {name}; the inventory has [{}]",
                            known.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

fn clean_mode(mode: protocol::CleanMode) -> CleanMode {
    match mode {
        protocol::CleanMode::Metadata => CleanMode::Metadata,
        protocol::CleanMode::Erase => CleanMode::Erase,
    }
}

fn percent(done: u64, total: u64) -> Option<u8> {
    (total > 0)
        .then(|| u8::try_from(u128::from(done.min(total)) * 100 / u128::from(total)).unwrap_or(100))
}

/// The config drive the engine sent, in the files Ironic's JSON form names; `None` when it
/// is empty (no drive is written then).
pub fn config_drive(data: &ConfigDriveData) -> Result<Option<ConfigDrive>, DeployError> {
    if data.user_data.is_none() && data.network_data.is_none() && data.meta_data.is_empty() {
        return Ok(None);
    }
    let mut drive = ConfigDrive::default();
    let mut add = |path: &str, bytes: Vec<u8>| {
        drive
            .insert(path, bytes)
            .map_err(DeployError::ConfigDriveSource)
    };
    add(
        "openstack/latest/meta_data.json",
        serde_json::Value::Object(data.meta_data.clone())
            .to_string()
            .into_bytes(),
    )?;
    if let Some(user_data) = &data.user_data {
        add("openstack/latest/user_data", user_data.as_bytes().to_vec())?;
    }
    if let Some(network_data) = &data.network_data {
        add(
            "openstack/latest/network_data.json",
            network_data.as_bytes().to_vec(),
        )?;
    }
    Ok(Some(drive))
}

/// Runs a blocking job on tokio's blocking pool; a job that panicked is a failure, not a
/// hung command.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| {
            Err(JobError::new(
                FailureKind::Failed,
                format!("the job stopped unexpectedly: {err}"),
            ))
        })
}

#[async_trait]
impl JobHandler for Machine {
    async fn inspect(&self) -> Result<HardwareDetails, JobError> {
        let machine = self.clone();
        blocking(move || Ok(machine.inventory().hardware_details())).await
    }

    async fn clean(
        &self,
        policy: &CleanPolicy,
        progress: ProgressReporter,
    ) -> Result<(), JobError> {
        let (machine, policy) = (self.clone(), policy.clone());
        blocking(move || machine.clean(&policy, &progress)).await
    }

    async fn deploy(&self, job: &DeployJob, progress: ProgressReporter) -> Result<(), JobError> {
        let (machine, job) = (self.clone(), job.clone());
        blocking(move || machine.deploy(&job, &progress)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn qemu_pc() -> Machine {
        Machine::at(rivet_tests::fixture("agent/qemu-pc"))
    }

    fn deploy_job(url: &str) -> DeployJob {
        DeployJob {
            image: protocol::ImageSource {
                url: url.into(),
                checksum: None,
                checksum_type: None,
                format: None,
            },
            root_device_hints: None,
            boot_mode: "UEFI".into(),
            config_drive: ConfigDriveData::default(),
        }
    }

    #[test]
    fn clean_targets_follow_the_policy() {
        let inventory = qemu_pc().inventory();
        assert!(!inventory.storage.is_empty());
        let all = clean_targets(&inventory, &[]).unwrap();
        assert_eq!(all.len(), inventory.storage.len());
        let first = inventory.storage[0].kernel_name.clone();
        assert_eq!(clean_targets(&inventory, &[first]).unwrap().len(), 1);
        let err = clean_targets(&inventory, &["/dev/nope".into()])
            .err()
            .unwrap();
        assert_eq!(err.kind, FailureKind::Invalid);
        assert!(err.message.contains("/dev/nope"), "{}", err.message);
    }

    #[test]
    fn bad_deploy_commands_are_invalid_and_touch_nothing() {
        let machine = qemu_pc();
        let err = machine
            .prepare_deploy(&deploy_job("ftp://images/os.img"))
            .err()
            .unwrap();
        assert_eq!(err.kind, FailureKind::Invalid, "{}", err.message);
        let mut job = deploy_job("http://images/os.img");
        job.image.checksum_type = Some("crc7".into());
        job.image.checksum = Some("00".into());
        let err = machine.prepare_deploy(&job).err().unwrap();
        assert_eq!(err.kind, FailureKind::Invalid, "{}", err.message);
        job = deploy_job("http://images/os.img");
        job.root_device_hints = Some(rivet_model::RootDeviceHints {
            device_name: Some("/dev/nothing-like-it".into()),
            ..rivet_model::RootDeviceHints::default()
        });
        let err = machine.prepare_deploy(&job).err().unwrap();
        assert_eq!(err.kind, FailureKind::Failed);
        let (disk, _) = machine
            .prepare_deploy(&deploy_job("http://images/os.img"))
            .unwrap();
        assert!(disk.path.starts_with("/dev/"), "{disk:?}");
    }

    #[test]
    fn the_inventory_names_the_machine() {
        let inventory = qemu_pc().inventory();
        let macs = Machine::macs(&inventory);
        assert!(!macs.is_empty());
        for mac in &macs {
            assert_eq!(protocol::normalize_mac(mac).as_deref(), Some(mac.as_str()));
        }
    }

    #[test]
    fn percentages_are_bounded() {
        assert_eq!(percent(0, 0), None);
        assert_eq!(percent(1, 4), Some(25));
        assert_eq!(percent(9, 4), Some(100));
        assert_eq!(percent(u64::MAX / 2, u64::MAX), Some(49));
    }

    #[test]
    fn config_drives_carry_what_the_engine_sent() {
        assert!(config_drive(&ConfigDriveData::default()).unwrap().is_none());
        let mut meta_data = serde_json::Map::new();
        meta_data.insert("uuid".into(), "abc".into());
        let data = ConfigDriveData {
            user_data: Some("#cloud-config\n".into()),
            network_data: Some("{\"links\":[]}".into()),
            meta_data,
        };
        let drive = config_drive(&data).unwrap().unwrap();
        let files = drive.files();
        assert_eq!(
            files["openstack/latest/user_data"],
            b"#cloud-config\n".to_vec()
        );
        assert_eq!(
            files["openstack/latest/meta_data.json"],
            br#"{"uuid":"abc"}"#.to_vec()
        );
        assert_eq!(
            files["openstack/latest/network_data.json"],
            br#"{"links":[]}"#.to_vec()
        );
    }
}
