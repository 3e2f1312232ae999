//! The IPMI provider: power, boot device and health over one RMCP+ session.

use async_trait::async_trait;
use tokio::sync::{Mutex, OnceCell};

use crate::capability::{
    BootDevice, BootMode, BootOverride, BootPersistence, BootTarget, Health, HealthCheck, Power,
    PowerOffMode, PowerState, Provider,
};
use crate::{BmcError, Credentials};

use super::client::Client;
use super::commands::{
    self, BootDeviceSelector, BootFlags, ChassisAction, ChassisStatus, DeviceId, Request,
};
use super::crypto::CipherSuite;
use super::wire::Response;
use super::{IpmiOptions, IpmiTarget};

/// IANA enterprise number of Super Micro Computer, whose BMCs want "primary remote media"
/// as the UEFI hard-disk boot device (Ironic's `ipmitool` driver knows the same quirk).
const SUPERMICRO: u32 = 10876;

/// A BMC driven over IPMI 2.0 (lanplus).
///
/// One RMCP+ session is opened by [`IpmiProvider::connect`] and kept; commands from
/// concurrent callers are sent one at a time. Dropping the provider closes the session.
#[derive(Debug)]
pub struct IpmiProvider {
    target: IpmiTarget,
    client: Mutex<Client>,
    device_id: OnceCell<DeviceId>,
}

impl IpmiProvider {
    /// Logs in to the BMC: fails fast on a wrong password, an unreachable BMC or a BMC
    /// that speaks none of the configured cipher suites.
    pub async fn connect(
        target: IpmiTarget,
        credentials: Credentials,
        options: IpmiOptions,
    ) -> Result<Self, BmcError> {
        let client = Client::connect(target.clone(), credentials, options).await?;
        Ok(IpmiProvider {
            target,
            client: Mutex::new(client),
            device_id: OnceCell::new(),
        })
    }

    pub fn target(&self) -> &IpmiTarget {
        &self.target
    }

    /// The cipher suite the current session negotiated.
    pub async fn cipher_suite(&self) -> Option<CipherSuite> {
        self.client.lock().await.cipher_suite()
    }

    /// Sends any request and returns the raw response (completion code unchecked).
    pub async fn execute(&self, request: &Request) -> Result<Response, BmcError> {
        self.client.lock().await.execute(request).await
    }

    /// Sends a request and returns its data, turning a non-zero completion code into an error.
    pub async fn call(&self, request: &Request) -> Result<Vec<u8>, BmcError> {
        self.execute(request).await?.into_data(request)
    }

    /// Get Device ID (cached: it does not change while the BMC runs).
    pub async fn device_id(&self) -> Result<DeviceId, BmcError> {
        self.device_id
            .get_or_try_init(|| async {
                DeviceId::decode(&self.call(&commands::get_device_id()).await?)
            })
            .await
            .cloned()
    }

    pub async fn chassis_status(&self) -> Result<ChassisStatus, BmcError> {
        ChassisStatus::decode(&self.call(&commands::get_chassis_status()).await?)
    }

    /// The raw boot flags (System Boot Options parameter 5).
    pub async fn boot_flags(&self) -> Result<BootFlags, BmcError> {
        BootFlags::decode(&self.call(&commands::get_boot_flags()).await?)
    }

    /// Sends Close Session and waits briefly for the answer.
    pub async fn close(self) {
        self.client.into_inner().close().await;
    }

    async fn chassis(&self, action: ChassisAction) -> Result<(), BmcError> {
        self.call(&commands::chassis_control(action))
            .await
            .map(drop)
    }

    async fn wants_uefi(&self, mode: Option<BootMode>) -> Result<bool, BmcError> {
        match mode {
            Some(mode) => Ok(mode == BootMode::Uefi),
            // IPMI has no "leave the mode alone": keep whatever the flags say now.
            None => match self.boot_flags().await {
                Ok(flags) => Ok(flags.uefi),
                Err(BmcError::IpmiRefused {
                    transient: false, ..
                }) => Ok(false),
                Err(err) => Err(err),
            },
        }
    }

    async fn disk_selector(&self, uefi: bool) -> Result<BootDeviceSelector, BmcError> {
        if uefi && self.device_id().await?.manufacturer_id == SUPERMICRO {
            return Ok(BootDeviceSelector::PrimaryRemoteMedia);
        }
        Ok(BootDeviceSelector::Disk)
    }
}

#[async_trait]
impl Power for IpmiProvider {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        let status = self.chassis_status().await?;
        Ok(if status.power_on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.chassis(ChassisAction::PowerUp).await
    }

    async fn power_off(&self, mode: PowerOffMode) -> Result<(), BmcError> {
        self.chassis(match mode {
            PowerOffMode::Soft => ChassisAction::SoftShutdown,
            PowerOffMode::Hard => ChassisAction::PowerDown,
        })
        .await
    }

    async fn reset(&self) -> Result<(), BmcError> {
        self.chassis(ChassisAction::HardReset).await
    }

    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.chassis(ChassisAction::PowerCycle).await
    }
}

#[async_trait]
impl BootDevice for IpmiProvider {
    /// Sets the boot flags the way Ironic does: first parameter 3 so the BMC keeps the
    /// flags past its 60-second timer (skipped where the BMC lacks it, as OpenBMC does),
    /// then parameter 5 with the valid bit, persistence, UEFI bit and device.
    async fn set_boot_override(&self, boot: &BootOverride) -> Result<(), BmcError> {
        if boot.target == BootTarget::UefiHttp {
            return Err(BmcError::Unsupported {
                provider: "ipmi",
                capability: "UEFI HTTP boot (use Redfish)",
            });
        }
        match self.call(&commands::keep_boot_flags_past_timeout()).await {
            Ok(_) => {}
            Err(BmcError::IpmiRefused {
                code,
                transient: false,
                ..
            }) => {
                tracing::debug!(
                    bmc = %self.target.host,
                    code,
                    "the BMC does not take boot parameter 3; the override may expire after 60 s"
                );
            }
            Err(err) => return Err(err),
        }
        let uefi = self.wants_uefi(boot.mode).await?;
        let device = match boot.target {
            BootTarget::Pxe => BootDeviceSelector::Pxe,
            BootTarget::Disk => self.disk_selector(uefi).await?,
            BootTarget::Cd => BootDeviceSelector::Cd,
            BootTarget::BiosSetup => BootDeviceSelector::BiosSetup,
            BootTarget::UefiHttp => unreachable!("refused above"),
        };
        let flags = BootFlags {
            valid: true,
            persistent: boot.persistence == BootPersistence::Persistent,
            uefi,
            device,
        };
        self.call(&commands::set_boot_flags(flags)).await.map(drop)
    }

    /// The override in effect: `None` when the valid bit is clear (consumed, expired, or
    /// never set) or the device selector says "no override".
    async fn boot_override(&self) -> Result<Option<BootOverride>, BmcError> {
        let flags = self.boot_flags().await?;
        if !flags.valid {
            return Ok(None);
        }
        let target = match flags.device {
            BootDeviceSelector::NoOverride => return Ok(None),
            BootDeviceSelector::Pxe => BootTarget::Pxe,
            BootDeviceSelector::Disk
            | BootDeviceSelector::DiskSafeMode
            | BootDeviceSelector::RemoteDisk
            | BootDeviceSelector::PrimaryRemoteMedia => BootTarget::Disk,
            BootDeviceSelector::Cd | BootDeviceSelector::RemoteCd => BootTarget::Cd,
            BootDeviceSelector::BiosSetup => BootTarget::BiosSetup,
            other => {
                return Err(BmcError::Protocol(format!(
                    "the BMC reports a boot override to {other:?}, which Rivet does not model"
                )));
            }
        };
        Ok(Some(BootOverride {
            target,
            persistence: if flags.persistent {
                BootPersistence::Persistent
            } else {
                BootPersistence::Once
            },
            mode: Some(if flags.uefi {
                BootMode::Uefi
            } else {
                BootMode::Legacy
            }),
            http_boot_uri: None,
        }))
    }
}

#[async_trait]
impl HealthCheck for IpmiProvider {
    /// Health from Get Chassis Status; see [`chassis_health`].
    async fn health(&self) -> Result<Health, BmcError> {
        Ok(chassis_health(&self.chassis_status().await?))
    }
}

/// Rolls the chassis status fault bits up into one health value.
///
/// - Critical: a power fault, a power-control fault, a power overload, or a cooling/fan
///   fault — each means the host cannot run, or cannot run safely, as it is;
/// - Warning: a drive fault, an open chassis (intrusion) or an active interlock — the host
///   runs but needs a person to look;
/// - Ok otherwise. Sensors beyond the chassis status are not read.
pub fn chassis_health(status: &ChassisStatus) -> Health {
    if status.power_fault
        || status.power_control_fault
        || status.power_overload
        || status.cooling_fault
    {
        Health::Critical
    } else if status.drive_fault || status.chassis_intrusion || status.interlock {
        Health::Warning
    } else {
        Health::Ok
    }
}

impl Provider for IpmiProvider {
    fn name(&self) -> &'static str {
        "ipmi"
    }

    fn power(&self) -> Option<&dyn Power> {
        Some(self)
    }

    fn boot_device(&self) -> Option<&dyn BootDevice> {
        Some(self)
    }

    fn health(&self) -> Option<&dyn HealthCheck> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> ChassisStatus {
        ChassisStatus::decode(&[0x01, 0, 0]).unwrap()
    }

    #[test]
    fn health_rolls_up_the_fault_bits() {
        assert_eq!(chassis_health(&status()), Health::Ok);
        type SetFault = fn(&mut ChassisStatus);
        let faults: [(SetFault, Health); 7] = [
            (|s| s.power_fault = true, Health::Critical),
            (|s| s.power_control_fault = true, Health::Critical),
            (|s| s.power_overload = true, Health::Critical),
            (|s| s.cooling_fault = true, Health::Critical),
            (|s| s.drive_fault = true, Health::Warning),
            (|s| s.chassis_intrusion = true, Health::Warning),
            (|s| s.interlock = true, Health::Warning),
        ];
        for (set_fault, expected) in faults {
            let mut faulty = status();
            set_fault(&mut faulty);
            assert_eq!(chassis_health(&faulty), expected, "{faulty:?}");
        }
        let mut both = status();
        both.drive_fault = true;
        both.power_fault = true;
        assert_eq!(chassis_health(&both), Health::Critical);
    }
}
