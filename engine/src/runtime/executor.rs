//! Runs one lifecycle step through the driver seams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::Shared;
use super::token;
use super::types::HostEventKind;
use crate::drivers::{
    BmcTarget, BootEntry, BootInstruction, ConfigDrive, DeployRequest, DriverError,
    DriverErrorKind, HostTarget, PowerOff, ProgressSink,
};
use crate::lifecycle::{
    BootMethod, CleaningPolicy, FailureClass, Host, Step, StepFailure, StepOutput,
};
use crate::secrets::HostSecrets;

/// Everything a step needs, copied out of the host when it is dispatched.
pub(super) struct StepJob {
    target: HostTarget,
    step: Step,
    cleaning: CleaningPolicy,
    deploy: Option<DeployRequest>,
    progress: ProgressSink,
}

/// The driver's view of `host`.
pub(super) fn target(host: &Host, secrets: &HostSecrets) -> HostTarget {
    let bmc = host.spec.bmc.as_ref();
    HostTarget {
        id: host.id,
        name: host.name.as_str().into(),
        boot_mac: host.spec.boot_mac_address,
        boot_method: host.spec.boot_method().unwrap_or(BootMethod::NetworkBoot),
        boot_mode: host.spec.boot_mode,
        bmc: BmcTarget {
            address: bmc.map(|bmc| bmc.address.clone()).unwrap_or_default(),
            credentials: secrets.credentials(),
            verify_tls: !bmc.is_some_and(|bmc| bmc.disable_certificate_verification),
        },
    }
}

impl StepJob {
    pub(super) fn new(
        host: &Host,
        secrets: &HostSecrets,
        step: Step,
        shared: &Arc<Shared>,
    ) -> Self {
        let deploy = (step == Step::Deploy)
            .then(|| {
                host.spec.image.clone().map(|image| DeployRequest {
                    image,
                    root_device_hints: host.spec.root_device_hints.clone(),
                    boot_mode: host.spec.boot_mode,
                    config_drive: config_drive(host, secrets),
                })
            })
            .flatten();
        let events = shared.events.clone();
        let (name, id) = (host.name.clone(), host.id);
        let (state, operational) = (host.status.state, host.status.operational_status);
        let progress: ProgressSink = Arc::new(move |progress| {
            let _ = events.send(super::types::HostEvent {
                host: name.clone(),
                id,
                state,
                operational_status: operational,
                kind: HostEventKind::progress(progress),
            });
        });
        Self {
            target: target(host, secrets),
            step,
            cleaning: host.spec.cleaning.clone(),
            deploy,
            progress,
        }
    }
}

/// The config drive: the engine's meta data (`uuid`, `name`, `local-hostname`) under the
/// host's own.
fn config_drive(host: &Host, secrets: &HostSecrets) -> ConfigDrive {
    let mut meta_data = serde_json::Map::new();
    meta_data.insert("uuid".into(), host.id.to_string().into());
    meta_data.insert("name".into(), host.name.clone().into());
    meta_data.insert("local-hostname".into(), host.name.clone().into());
    meta_data.insert("local_hostname".into(), host.name.clone().into());
    if let Some(extra) = secrets
        .meta_data
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Map<_, _>>(text).ok())
    {
        meta_data.extend(extra);
    }
    ConfigDrive {
        user_data: secrets.user_data.clone(),
        network_data: secrets.network_data.clone(),
        meta_data,
    }
}

pub(super) async fn run(shared: &Shared, job: StepJob) -> Result<StepOutput, StepFailure> {
    let drivers = &shared.drivers;
    let host = &job.target;
    let nothing = |()| StepOutput::Nothing;
    match job.step {
        Step::ValidateBmc => Ok(StepOutput::Power {
            on: drivers.bmc.power_state(host).await?,
        }),
        Step::ConfigureAgentBoot => configure_agent_boot(shared, host).await,
        Step::PowerOn => {
            drivers.bmc.power_on(host).await?;
            wait_for_power(shared, host, true, shared.config.power_wait_timeout)
                .await
                .map(nothing)
                .map_err(Into::into)
        }
        Step::PowerOffHard => {
            drivers.bmc.power_off(host, PowerOff::Hard).await?;
            wait_for_power(shared, host, false, shared.config.power_wait_timeout)
                .await
                .map(nothing)
                .map_err(Into::into)
        }
        Step::PowerOffSoft => {
            drivers.bmc.power_off(host, PowerOff::Soft).await?;
            let soft =
                wait_for_power(shared, host, false, shared.config.soft_power_off_timeout).await;
            match soft {
                Err(err) if err.kind == DriverErrorKind::Timeout => {
                    tracing::info!(host = %host.name, "soft power-off timed out; powering off hard");
                    drivers.bmc.power_off(host, PowerOff::Hard).await?;
                    wait_for_power(shared, host, false, shared.config.power_wait_timeout)
                        .await
                        .map(nothing)
                }
                other => other.map(nothing),
            }
            .map_err(Into::into)
        }
        Step::AwaitAgent => Err(StepFailure::new(
            FailureClass::Fatal,
            "the agent wait is handled by the lifecycle, not dispatched",
        )),
        Step::InspectInBand => Ok(StepOutput::Hardware(Box::new(
            drivers.agent.inspect(host).await?,
        ))),
        Step::InspectOutOfBand => Ok(StepOutput::Hardware(Box::new(
            drivers.bmc.inventory(host).await?,
        ))),
        Step::Clean => {
            drivers
                .agent
                .clean(host, &job.cleaning, job.progress.clone())
                .await?;
            Ok(StepOutput::Nothing)
        }
        Step::Deploy => {
            let Some(deploy) = &job.deploy else {
                return Err(StepFailure::new(
                    FailureClass::Fatal,
                    "there is no image to write",
                ));
            };
            drivers
                .agent
                .deploy(host, deploy, job.progress.clone())
                .await?;
            Ok(StepOutput::Nothing)
        }
        Step::ConfigureDiskBoot => {
            drivers.bmc.set_boot(host, &BootInstruction::Disk).await?;
            if let Some(mac) = host.boot_mac {
                drivers.boot.set_entry(mac, BootEntry::Disk).await?;
            }
            Ok(StepOutput::Nothing)
        }
        Step::AdoptBoot => {
            if let Some(mac) = host.boot_mac {
                drivers.boot.set_entry(mac, BootEntry::Disk).await?;
            }
            Ok(StepOutput::Nothing)
        }
        Step::ReleaseBoot => {
            // Best effort: a host being forgotten must not get stuck on a boot-table entry.
            if let Some(mac) = host.boot_mac
                && let Err(err) = drivers.boot.remove(mac).await
            {
                tracing::warn!(host = %host.name, error = %err, "cannot remove the boot entry");
            }
            drivers.agent.release(host).await;
            Ok(StepOutput::Nothing)
        }
    }
}

/// Issues a token and points the next boot at the agent, by the host's boot method.
async fn configure_agent_boot(
    shared: &Shared,
    host: &HostTarget,
) -> Result<StepOutput, StepFailure> {
    let drivers = &shared.drivers;
    let (token, sha256) = token::issue().ok_or_else(|| {
        StepFailure::new(
            FailureClass::Transient,
            "the system random generator failed",
        )
    })?;
    let needs_mac = || {
        host.boot_mac.ok_or_else(|| {
            StepFailure::new(
                FailureClass::Fatal,
                format!("{} needs the host's boot MAC address", host.boot_method),
            )
        })
    };
    match host.boot_method {
        BootMethod::NetworkBoot => {
            let entry = BootEntry::Agent {
                host: host.id,
                token,
            };
            drivers.boot.set_entry(needs_mac()?, entry).await?;
            drivers
                .bmc
                .set_boot(host, &BootInstruction::Network)
                .await?;
        }
        BootMethod::UefiHttp => {
            let entry = BootEntry::Agent {
                host: host.id,
                token,
            };
            drivers.boot.set_entry(needs_mac()?, entry).await?;
            let url = drivers.boot.uefi_http_url(host);
            drivers
                .bmc
                .set_boot(host, &BootInstruction::UefiHttp { url })
                .await?;
        }
        BootMethod::VirtualMedia => {
            let iso_url = drivers.boot.agent_iso(host, &token).await?;
            // Known to the boot services, so Rivet's DHCP (when it hands out addresses)
            // gives the agent one, and a stray network boot goes to the disk.
            if let Some(mac) = host.boot_mac {
                drivers.boot.set_entry(mac, BootEntry::Disk).await?;
            }
            drivers
                .bmc
                .set_boot(host, &BootInstruction::VirtualMedia { iso_url })
                .await?;
        }
    }
    Ok(StepOutput::AgentToken { sha256 })
}

/// Polls the BMC until the host is `on` (or off), up to `timeout`.
async fn wait_for_power(
    shared: &Shared,
    host: &HostTarget,
    on: bool,
    timeout: Duration,
) -> Result<(), DriverError> {
    let deadline = Instant::now() + timeout;
    loop {
        if shared.drivers.bmc.power_state(host).await? == on {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DriverError::new(
                DriverErrorKind::Timeout,
                format!(
                    "the host is still {} {} after asking its BMC to power it {}",
                    if on { "off" } else { "on" },
                    crate::lifecycle::timeline::format_duration(timeout),
                    if on { "on" } else { "off" },
                ),
            ));
        }
        tokio::time::sleep(shared.config.power_poll_interval).await;
    }
}
