//! The real [`BmcDriver`]: Redfish and IPMI through `rivet-bmc`.
//!
//! One [`Bmc`] is kept per host and reused while the host's address and credentials stay
//! the same (a Redfish session or an IPMI session is set up once, not per call); a call
//! that fails because the BMC is unreachable, slow or refuses the credentials drops the
//! cached connection so the next attempt starts afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rivet_bmc::{
    Bmc, BmcAddress, BmcError, BootDevice, BootOverride, BootPersistence, BootTarget,
    ConnectOptions, Inventory, MediaKind, Power, PowerOffMode, PowerState, VirtualMedia,
};
use rivet_model::HardwareDetails;
use serde::{Deserialize, Serialize};

use super::{BmcDriver, BootInstruction, DriverError, DriverErrorKind, HostTarget, PowerOff};
use crate::lifecycle::{BootMode, HostId};

/// BMC settings of `[drivers.real.bmc]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BmcSettings {
    /// How long one BMC call may take before it counts as a time-out.
    pub call_timeout_secs: u64,
    /// For Redfish BMCs, also try IPMI on the same host for power and boot.
    pub ipmi_fallback: bool,
    /// Least time between two IPMI commands to one BMC (some BMCs drown in commands;
    /// Rivet keeps one session open, so this can be far below Ironic's 5 s).
    pub ipmi_min_command_interval_ms: u64,
}

impl Default for BmcSettings {
    fn default() -> Self {
        Self {
            call_timeout_secs: 120,
            ipmi_fallback: false,
            ipmi_min_command_interval_ms: 1000,
        }
    }
}

impl BmcSettings {
    /// `rivet-bmc`'s options for these settings.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions {
            ipmi_fallback: self.ipmi_fallback,
            call_timeout: Duration::from_secs(self.call_timeout_secs),
            ..ConnectOptions::default()
        };
        options.ipmi.min_command_interval =
            Duration::from_millis(self.ipmi_min_command_interval_ms);
        options
    }
}

/// Redfish and IPMI BMCs, one cached connection per host.
#[derive(Debug)]
pub struct RealBmc {
    options: ConnectOptions,
    cache: Mutex<HashMap<HostId, Cached>>,
}

#[derive(Debug)]
struct Cached {
    /// What the connection was made with; a change means a new connection.
    key: ConnectionKey,
    bmc: Arc<Bmc>,
}

#[derive(Debug, PartialEq, Eq)]
struct ConnectionKey {
    address: String,
    username: String,
    /// The password's SHA-256: enough to notice a change without keeping a second copy.
    password_sha256: Vec<u8>,
    verify_tls: bool,
}

impl ConnectionKey {
    fn of(host: &HostTarget) -> Self {
        let password = host.bmc.credentials.password().as_bytes();
        Self {
            address: host.bmc.address.clone(),
            username: host.bmc.credentials.username().to_owned(),
            password_sha256: aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password)
                .as_ref()
                .to_vec(),
            verify_tls: host.bmc.verify_tls,
        }
    }
}

impl RealBmc {
    pub fn new(options: ConnectOptions) -> Self {
        Self {
            options,
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, Cached>> {
        // The map holds no invariant a panic could break half-way.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The host's connection, made if there is none for its current address and credentials.
    async fn bmc(&self, host: &HostTarget) -> Result<Arc<Bmc>, DriverError> {
        let key = ConnectionKey::of(host);
        if let Some(cached) = self.cache().get(&host.id).filter(|c| c.key == key) {
            return Ok(cached.bmc.clone());
        }
        let address = BmcAddress::parse(&host.bmc.address).map_err(|err| {
            DriverError::new(
                DriverErrorKind::Failed,
                format!("{}: invalid BMC address: {err}", host.name),
            )
        })?;
        let mut options = self.options.clone();
        options.redfish.disable_certificate_verification = !host.bmc.verify_tls;
        let bmc = rivet_bmc::connect(&address, host.bmc.credentials.clone(), options)
            .await
            .map_err(|err| driver_error(host, "connecting to the BMC", &err))?;
        let bmc = Arc::new(bmc);
        self.cache().insert(
            host.id,
            Cached {
                key,
                bmc: bmc.clone(),
            },
        );
        Ok(bmc)
    }

    /// Runs `call` on the host's BMC; drops the cached connection when the failure says
    /// it may be stale.
    async fn with_bmc<T>(
        &self,
        host: &HostTarget,
        what: &str,
        call: impl AsyncFnOnce(&Bmc) -> Result<T, BmcError>,
    ) -> Result<T, DriverError> {
        let bmc = self.bmc(host).await?;
        call(&bmc).await.map_err(|err| {
            let error = driver_error(host, what, &err);
            if matches!(
                error.kind,
                DriverErrorKind::Unreachable
                    | DriverErrorKind::Timeout
                    | DriverErrorKind::Credentials
            ) {
                self.cache().remove(&host.id);
            }
            error
        })
    }
}

/// What the lifecycle should make of a BMC failure.
pub fn error_kind(err: &BmcError) -> DriverErrorKind {
    match err {
        BmcError::Authentication => DriverErrorKind::Credentials,
        BmcError::Connection(_) => DriverErrorKind::Unreachable,
        BmcError::Timeout(_) | BmcError::PowerStateTimeout { .. } => DriverErrorKind::Timeout,
        BmcError::Rejected { status: 401, .. } => DriverErrorKind::Credentials,
        BmcError::Unsupported { .. } | BmcError::NoProvider { .. } => DriverErrorKind::Unsupported,
        BmcError::AllProvidersFailed { failures, .. } => {
            let kinds: Vec<_> = failures.iter().map(|(_, err)| error_kind(err)).collect();
            match kinds.split_first() {
                Some((first, rest)) if rest.iter().all(|kind| kind == first) => *first,
                _ if err.is_transient() => DriverErrorKind::Timeout,
                _ => DriverErrorKind::Failed,
            }
        }
        // 5xx answers and passing IPMI conditions (node busy, no session slot).
        _ if err.is_transient() => DriverErrorKind::Timeout,
        _ => DriverErrorKind::Failed,
    }
}

fn driver_error(host: &HostTarget, what: &str, err: &BmcError) -> DriverError {
    // BmcError messages never carry credentials.
    DriverError::new(error_kind(err), format!("{}: {what}: {err}", host.name))
}

fn firmware_mode(mode: BootMode) -> rivet_bmc::BootMode {
    match mode {
        BootMode::Uefi | BootMode::UefiSecureBoot => rivet_bmc::BootMode::Uefi,
        BootMode::Legacy => rivet_bmc::BootMode::Legacy,
    }
}

fn boot_override(
    target: BootTarget,
    persistence: BootPersistence,
    mode: BootMode,
    http_boot_uri: Option<String>,
) -> BootOverride {
    BootOverride {
        target,
        persistence,
        mode: Some(firmware_mode(mode)),
        http_boot_uri,
    }
}

/// Ejects virtual CDs, treating a BMC without virtual media (IPMI) as having none inserted.
async fn eject_cds(bmc: &Bmc) -> Result<(), BmcError> {
    match bmc.eject_media(MediaKind::Cd).await {
        Err(err) if error_kind(&err) == DriverErrorKind::Unsupported => Ok(()),
        other => other,
    }
}

#[async_trait]
impl BmcDriver for RealBmc {
    async fn power_state(&self, host: &HostTarget) -> Result<bool, DriverError> {
        let state = self
            .with_bmc(host, "reading power", async |bmc| bmc.power_state().await)
            .await?;
        // A host going off is still on; one coming up is not on yet.
        Ok(matches!(state, PowerState::On | PowerState::PoweringOff))
    }

    async fn power_on(&self, host: &HostTarget) -> Result<(), DriverError> {
        self.with_bmc(host, "powering on", async |bmc| bmc.power_on().await)
            .await
    }

    async fn power_off(&self, host: &HostTarget, mode: PowerOff) -> Result<(), DriverError> {
        let mode = match mode {
            PowerOff::Soft => PowerOffMode::Soft,
            PowerOff::Hard => PowerOffMode::Hard,
        };
        self.with_bmc(host, "powering off", async |bmc| bmc.power_off(mode).await)
            .await
    }

    async fn set_boot(&self, host: &HostTarget, boot: &BootInstruction) -> Result<(), DriverError> {
        let mode = host.boot_mode;
        match boot {
            BootInstruction::Network => {
                let next = boot_override(BootTarget::Pxe, BootPersistence::Once, mode, None);
                self.with_bmc(host, "setting network boot", async |bmc| {
                    bmc.set_boot_override(&next).await
                })
                .await
            }
            BootInstruction::VirtualMedia { iso_url } => {
                let next = boot_override(BootTarget::Cd, BootPersistence::Once, mode, None);
                self.with_bmc(host, "booting the agent ISO", async |bmc| {
                    eject_cds(bmc).await?;
                    bmc.insert_media(iso_url, MediaKind::Cd).await?;
                    bmc.set_boot_override(&next).await
                })
                .await
            }
            BootInstruction::UefiHttp { url } => {
                let next = boot_override(
                    BootTarget::UefiHttp,
                    BootPersistence::Once,
                    BootMode::Uefi,
                    Some(url.clone()),
                );
                self.with_bmc(host, "setting UEFI HTTP boot", async |bmc| {
                    bmc.set_boot_override(&next).await
                })
                .await
            }
            BootInstruction::Disk => {
                let next = boot_override(BootTarget::Disk, BootPersistence::Persistent, mode, None);
                self.with_bmc(host, "setting disk boot", async |bmc| {
                    eject_cds(bmc).await?;
                    bmc.set_boot_override(&next).await
                })
                .await
            }
        }
    }

    async fn inventory(&self, host: &HostTarget) -> Result<HardwareDetails, DriverError> {
        self.with_bmc(host, "reading the inventory", async |bmc| {
            bmc.inventory().await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmc_failures_map_onto_what_the_lifecycle_does() {
        let cases = [
            (BmcError::Authentication, DriverErrorKind::Credentials),
            (
                BmcError::Connection("refused".into()),
                DriverErrorKind::Unreachable,
            ),
            (
                BmcError::Timeout(Duration::from_secs(1)),
                DriverErrorKind::Timeout,
            ),
            (
                BmcError::Rejected {
                    status: 503,
                    message: "busy".into(),
                },
                DriverErrorKind::Timeout,
            ),
            (
                BmcError::Rejected {
                    status: 400,
                    message: "bad".into(),
                },
                DriverErrorKind::Failed,
            ),
            (
                BmcError::Unsupported {
                    provider: "ipmi",
                    capability: "virtual media",
                },
                DriverErrorKind::Unsupported,
            ),
            (BmcError::Protocol("junk".into()), DriverErrorKind::Failed),
            (
                BmcError::AllProvidersFailed {
                    capability: "power",
                    failures: vec![
                        ("redfish", BmcError::Authentication),
                        ("ipmi", BmcError::Authentication),
                    ],
                },
                DriverErrorKind::Credentials,
            ),
            (
                BmcError::AllProvidersFailed {
                    capability: "power",
                    failures: vec![
                        ("redfish", BmcError::Timeout(Duration::from_secs(1))),
                        ("ipmi", BmcError::Authentication),
                    ],
                },
                DriverErrorKind::Timeout,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(error_kind(&err), kind, "{err}");
        }
    }
}
