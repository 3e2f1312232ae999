//! The simulated boot services: the host table and per-host agent ISOs.

use std::sync::Arc;

use async_trait::async_trait;

use super::SimLab;
use super::world::{Entry, Record};
use crate::drivers::{AgentToken, BootEntry, BootService, DriverError, HostTarget};
use crate::lifecycle::{BootObservations, HostId, MacAddr, Timestamp};

#[derive(Debug)]
pub(super) struct SimBoot(pub Arc<SimLab>);

impl SimBoot {
    fn record(&self, record: Record) {
        self.0.with_world(|world| {
            world.apply(&record);
            self.0.log(&record);
        });
    }
}

#[async_trait]
impl BootService for SimBoot {
    async fn set_entry(&self, mac: MacAddr, entry: BootEntry) -> Result<(), DriverError> {
        let entry = match entry {
            BootEntry::Agent { host, token } => Entry::Agent {
                host,
                token: token.expose().to_owned(),
            },
            BootEntry::Disk => Entry::Disk,
        };
        self.record(Record::Entry {
            mac,
            entry: Some(entry),
        });
        Ok(())
    }

    async fn remove(&self, mac: MacAddr) -> Result<(), DriverError> {
        self.record(Record::Entry { mac, entry: None });
        Ok(())
    }

    async fn agent_iso(
        &self,
        host: &HostTarget,
        token: &AgentToken,
    ) -> Result<String, DriverError> {
        let url = format!("http://sim-boot.invalid/agent/{}.iso", host.id);
        self.record(Record::Iso {
            url: url.clone(),
            host: host.id,
            token: token.expose().to_owned(),
        });
        Ok(url)
    }

    fn uefi_http_url(&self, host: &HostTarget) -> String {
        format!("http://sim-boot.invalid/uefi/{}/boot.efi", host.id)
    }

    fn observations(
        &self,
        host: HostId,
        _mac: Option<MacAddr>,
        since: Timestamp,
    ) -> BootObservations {
        let seen = self
            .0
            .with_world(|world| world.seen.get(&host).cloned().unwrap_or_default());
        BootObservations {
            dhcp: seen.dhcp.filter(|&at| at >= since),
            agent_fetched: seen.agent_fetched.filter(|&at| at >= since),
            ..BootObservations::default()
        }
    }
}
