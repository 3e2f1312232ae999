//! Operations, the steps they are made of, and the plan of each operation.
//!
//! An operation (provision, inspect, …) is an ordered list of steps, like a saga: each step
//! is idempotent, and its completion is committed before the next one starts, so after a
//! crash the engine re-runs at most the step that was in flight. The plan is computed when
//! the operation starts and stored with the host's progress, so a later spec change cannot
//! reshuffle an operation that is half done.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::host::{CleaningMode, Host, InspectionMode, RebootMode};
use super::machine::Policy;

/// A unit of work the engine does on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Check BMC access and read the power state.
    Register,
    /// Collect the hardware inventory.
    Inspect,
    /// Clean the disks before first use.
    Prepare,
    /// Write the image and boot it.
    Provision,
    /// Clean up after provisioning.
    Deprovision,
    /// Take over a running host without touching its disk.
    Adopt,
    PowerOn,
    PowerOff,
    Reboot,
    /// Turn the host off on its way to deletion.
    PowerOffBeforeDelete,
    /// Forget the host: boot services and agent session.
    Delete,
    /// Stop managing the host without deprovisioning it.
    Detach,
}

impl Operation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Register => "registration",
            Self::Inspect => "inspection",
            Self::Prepare => "preparation",
            Self::Provision => "provisioning",
            Self::Deprovision => "deprovisioning",
            Self::Adopt => "adoption",
            Self::PowerOn => "power on",
            Self::PowerOff => "power off",
            Self::Reboot => "reboot",
            Self::PowerOffBeforeDelete => "power off before delete",
            Self::Delete => "deletion",
            Self::Detach => "detach",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One idempotent step. The runtime executes it through the driver seams and reports the
/// outcome; [`Step::AwaitAgent`] is the only step that waits for an outside event instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Log in to the BMC and read the power state.
    ValidateBmc,
    /// Issue a fresh agent token and point the host's next boot at the agent (boot-service
    /// entry for network and UEFI HTTP boot, a per-host ISO for virtual media, and the BMC's
    /// one-time boot device).
    ConfigureAgentBoot,
    PowerOn,
    /// Ask the OS to shut down; cut power if it has not after the soft-off timeout.
    PowerOffSoft,
    PowerOffHard,
    /// Wait for the agent to connect, up to the agent timeout.
    AwaitAgent,
    /// The agent reports the inventory.
    InspectInBand,
    /// The BMC reports the inventory.
    InspectOutOfBand,
    /// The agent cleans the disks as the cleaning policy says.
    Clean,
    /// The agent streams the image to the root disk and writes the config drive.
    Deploy,
    /// Boot from disk from now on (BMC persistent boot device, boot-service entry, media
    /// ejected).
    ConfigureDiskBoot,
    /// Boot services send the host to its disk; nothing is written and the BMC is not asked
    /// to change anything.
    AdoptBoot,
    /// Remove the host from the boot services and end its agent session.
    ReleaseBoot,
}

impl Step {
    /// What the step does, for timelines and progress bars.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::ValidateBmc => "checking BMC access",
            Self::ConfigureAgentBoot => "configuring the agent boot",
            Self::PowerOn => "powering on",
            Self::PowerOffSoft => "powering off (soft, then hard)",
            Self::PowerOffHard => "powering off",
            Self::AwaitAgent => "waiting for the agent",
            Self::InspectInBand => "collecting the inventory through the agent",
            Self::InspectOutOfBand => "collecting the inventory through the BMC",
            Self::Clean => "cleaning disks",
            Self::Deploy => "writing the image",
            Self::ConfigureDiskBoot => "setting boot from disk",
            Self::AdoptBoot => "sending network boots to the disk",
            Self::ReleaseBoot => "removing the host from the boot services",
        }
    }

    /// Whether the step needs the agent.
    pub const fn uses_agent(self) -> bool {
        matches!(self, Self::InspectInBand | Self::Clean | Self::Deploy)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The steps of `operation` for `host` as it is now.
///
/// With fast-track (Ironic's name), an agent that is still connected from the previous
/// operation is reused: the boot steps are skipped and the host stays on at the end of
/// inspection and preparation, saving one or two reboots per host.
pub fn plan(operation: Operation, host: &Host, policy: &Policy) -> Vec<Step> {
    use Step::*;
    let agent_ready = host.status.agent.connected;
    let boot_agent = || -> Vec<Step> {
        if agent_ready {
            Vec::new()
        } else {
            vec![ConfigureAgentBoot, PowerOffHard, PowerOn, AwaitAgent]
        }
    };
    let release_agent = if policy.fast_track {
        None
    } else {
        Some(PowerOffHard)
    };
    let cleaning = host.spec.cleaning.mode != CleaningMode::Disabled;
    match operation {
        Operation::Register => vec![ValidateBmc],
        Operation::Inspect => match host.spec.inspection_mode {
            InspectionMode::OutOfBand => vec![InspectOutOfBand],
            InspectionMode::Agent | InspectionMode::Disabled => {
                let mut steps = boot_agent();
                steps.push(InspectInBand);
                steps.extend(release_agent);
                steps
            }
        },
        Operation::Prepare if cleaning => {
            let mut steps = boot_agent();
            steps.push(Clean);
            steps.extend(release_agent);
            steps
        }
        Operation::Prepare => Vec::new(),
        Operation::Provision => {
            let mut steps = boot_agent();
            steps.extend([Deploy, ConfigureDiskBoot, PowerOffSoft, PowerOn]);
            steps
        }
        Operation::Deprovision if cleaning => {
            let mut steps = boot_agent();
            steps.push(Clean);
            steps.extend(release_agent);
            steps
        }
        Operation::Deprovision => vec![PowerOffSoft],
        Operation::Adopt => vec![AdoptBoot],
        Operation::PowerOn => vec![PowerOn],
        Operation::PowerOff | Operation::PowerOffBeforeDelete => vec![PowerOffSoft],
        Operation::Reboot => match host.spec.reboot {
            Some(RebootMode::Hard) => vec![PowerOffHard, PowerOn],
            Some(RebootMode::Soft) | None => vec![PowerOffSoft, PowerOn],
        },
        Operation::Delete | Operation::Detach => vec![ReleaseBoot],
    }
}
