//! The simulated BMC: power, boot overrides, virtual media and out-of-band inventory.

use std::sync::Arc;

use async_trait::async_trait;
use rivet_model::HardwareDetails;

use super::agent::synthetic_inventory;
use super::world::{Boot, Entry, Record};
use super::{SimLab, machine_name};
use crate::drivers::{
    AgentIdentity, AgentToken, BmcDriver, BootInstruction, DriverError, DriverErrorKind,
    HostTarget, PowerOff,
};
use crate::lifecycle::Timestamp;

#[derive(Debug)]
pub(super) struct SimBmc(pub Arc<SimLab>);

impl SimBmc {
    /// Waits the BMC latency, then applies the machine's faults; returns its name.
    async fn reach<'a>(&self, host: &'a HostTarget) -> Result<&'a str, DriverError> {
        SimLab::pause(self.0.config.bmc_latency_ms).await;
        let name = machine_name(&host.bmc.address);
        self.0.with_world(|world| {
            let machine = world.machine(name);
            if machine.mac != host.boot_mac || machine.host != Some(host.id) {
                machine.mac = host.boot_mac;
                machine.host = Some(host.id);
                self.0.log(&Record::Link {
                    m: name.to_owned(),
                    mac: host.boot_mac,
                    host: host.id,
                });
            }
            if machine.faults.bmc_unreachable {
                return Err(DriverError::new(
                    DriverErrorKind::Unreachable,
                    format!("BMC {} unreachable: connection refused", host.bmc.address),
                ));
            }
            if let Some(password) = &machine.faults.bmc_password
                && password != host.bmc.credentials.password()
            {
                return Err(DriverError::new(
                    DriverErrorKind::Credentials,
                    format!(
                        "BMC {} rejected the credentials of user {} (HTTP 401)",
                        host.bmc.address,
                        host.bmc.credentials.username()
                    ),
                ));
            }
            Ok(name)
        })
    }

    /// Boots the machine that was just powered on: where it goes decides whether an agent
    /// starts, with which token.
    fn boot(&self, name: &str, host: &HostTarget) {
        let lab = &self.0;
        let started = lab.with_world(|world| {
            let now = Timestamp::now();
            let machine = world.machine(name);
            let source = match machine.next_boot.take() {
                Some(boot) => {
                    lab.log(&Record::NextBoot {
                        m: name.to_owned(),
                        boot: None,
                    });
                    boot
                }
                None => machine.persistent.unwrap_or(Boot::Disk),
            };
            let (no_dhcp, mac, media, generation) = (
                machine.faults.no_dhcp,
                machine.mac,
                machine.media.clone(),
                machine.generation,
            );
            let token = match source {
                Boot::Network | Boot::UefiHttp if no_dhcp => None,
                Boot::Network | Boot::UefiHttp => {
                    world.seen.entry(host.id).or_default().dhcp = Some(now);
                    match mac.and_then(|mac| world.entries.get(&mac)) {
                        Some(Entry::Agent { token, .. }) => Some(token.clone()),
                        Some(Entry::Disk) | None => None,
                    }
                }
                Boot::Cd => {
                    media.and_then(|url| world.isos.get(&url).map(|(_, token)| token.clone()))
                }
                Boot::Disk => None,
            };
            if let Some(token) = &token {
                world.seen.entry(host.id).or_default().agent_fetched = Some(now);
                // Journalled, so that a boot interrupted by the daemon's death goes on
                // after it restarts, as a real machine's would.
                let record = Record::Booting {
                    m: name.to_owned(),
                    token: token.clone(),
                };
                world.apply(&record);
                lab.log(&record);
            }
            token.map(|token| (token, generation))
        });
        if let Some((token, generation)) = started {
            lab.start_agent(name.to_owned(), host.id, host.boot_mac, token, generation);
        }
    }
}

impl SimLab {
    /// After the boot latency, the agent comes up on machine `name` and connects, unless
    /// the machine was power-cycled in the meantime.
    pub(super) fn start_agent(
        self: &Arc<Self>,
        name: String,
        host: crate::lifecycle::HostId,
        mac: Option<crate::lifecycle::MacAddr>,
        token: String,
        generation: u64,
    ) {
        let lab = self.clone();
        tokio::spawn(async move {
            SimLab::pause(lab.config.boot_latency_ms).await;
            let up = lab.with_world(|world| {
                let machine = world.machine(&name);
                if machine.generation != generation || !machine.power {
                    return false;
                }
                if machine.agent.as_deref() != Some(token.as_str()) {
                    machine.agent = Some(token.clone());
                    machine.booting = None;
                    lab.log(&Record::Agent {
                        m: name.clone(),
                        token: Some(token.clone()),
                    });
                }
                true
            });
            let Some(registry) = lab.registry.get().filter(|_| up) else {
                return;
            };
            let identity = AgentIdentity {
                host: Some(host),
                macs: mac.into_iter().collect(),
            };
            if registry
                .connected(identity, AgentToken::new(token))
                .await
                .is_err()
            {
                tracing::warn!(machine = %name, "the engine refused the simulated agent");
                lab.with_world(|world| world.machine(&name).agent = None);
                lab.log(&Record::Agent {
                    m: name,
                    token: None,
                });
            }
        });
    }
}

#[async_trait]
impl BmcDriver for SimBmc {
    async fn power_state(&self, host: &HostTarget) -> Result<bool, DriverError> {
        let name = self.reach(host).await?;
        Ok(self.0.with_world(|world| world.machine(name).power))
    }

    async fn power_on(&self, host: &HostTarget) -> Result<(), DriverError> {
        let name = self.reach(host).await?;
        let switched = self.0.with_world(|world| {
            let machine = world.machine(name);
            if machine.power {
                return false;
            }
            machine.power = true;
            machine.generation += 1;
            self.0.log(&Record::Power {
                m: name.to_owned(),
                on: true,
            });
            true
        });
        if switched {
            self.boot(name, host);
        }
        Ok(())
    }

    async fn power_off(&self, host: &HostTarget, _mode: PowerOff) -> Result<(), DriverError> {
        let name = self.reach(host).await?;
        let had_agent = self.0.with_world(|world| {
            let machine = world.machine(name);
            if !machine.power {
                return false;
            }
            machine.power = false;
            machine.generation += 1;
            self.0.log(&Record::Power {
                m: name.to_owned(),
                on: false,
            });
            machine.agent.take().is_some()
        });
        if had_agent && let Some(registry) = self.0.registry.get() {
            registry.disconnected(host.id).await;
        }
        Ok(())
    }

    async fn set_boot(&self, host: &HostTarget, boot: &BootInstruction) -> Result<(), DriverError> {
        let name = self.reach(host).await?;
        let m = name.to_owned();
        let records = match boot {
            BootInstruction::Network => vec![Record::NextBoot {
                m,
                boot: Some(Boot::Network),
            }],
            BootInstruction::UefiHttp { .. } => vec![Record::NextBoot {
                m,
                boot: Some(Boot::UefiHttp),
            }],
            BootInstruction::VirtualMedia { iso_url } => vec![
                Record::Media {
                    m: m.clone(),
                    url: Some(iso_url.clone()),
                },
                Record::NextBoot {
                    m,
                    boot: Some(Boot::Cd),
                },
            ],
            BootInstruction::Disk => vec![
                Record::Media {
                    m: m.clone(),
                    url: None,
                },
                Record::NextBoot {
                    m: m.clone(),
                    boot: None,
                },
                Record::Persistent {
                    m,
                    boot: Boot::Disk,
                },
            ],
        };
        self.0.with_world(|world| {
            for record in &records {
                world.apply(record);
                self.0.log(record);
            }
        });
        Ok(())
    }

    async fn inventory(&self, host: &HostTarget) -> Result<HardwareDetails, DriverError> {
        let name = self.reach(host).await?;
        Ok(synthetic_inventory(name, host.boot_mac))
    }
}
