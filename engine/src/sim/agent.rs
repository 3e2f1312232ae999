//! The simulated agent: inventory, cleaning and deployment on simulated machines, with a
//! real HTTP fetch and checksum check of the image when the lab is configured for it.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::digest;
use futures::StreamExt;
use rivet_model::{Cpu, HardwareDetails, Nic, Storage, StorageType, SystemVendor};

use super::world::Record;
use super::{SimLab, machine_name};
use crate::drivers::{
    AgentDriver, AgentProgress, AgentRegistry, DeployRequest, DriverError, DriverErrorKind,
    HostTarget, ProgressSink,
};
use crate::lifecycle::{ChecksumType, CleaningPolicy, ImageSpec, MacAddr};

#[derive(Debug)]
pub(super) struct SimAgent(pub Arc<SimLab>);

impl SimAgent {
    /// Waits the agent latency and checks an agent runs on the machine; returns its name.
    async fn agent<'a>(
        &self,
        host: &'a HostTarget,
        record: Record,
    ) -> Result<&'a str, DriverError> {
        let name = machine_name(&host.bmc.address);
        let running = self
            .0
            .with_world(|world| world.machine(name).agent.is_some());
        if !running {
            return Err(DriverError::new(
                DriverErrorKind::AgentNotConnected,
                format!("no agent is running on simulated machine {name}"),
            ));
        }
        self.0.log(&record);
        SimLab::pause(self.0.config.agent_latency_ms).await;
        Ok(name)
    }
}

#[async_trait]
impl AgentDriver for SimAgent {
    fn attach(&self, registry: Arc<dyn AgentRegistry>) {
        if self.0.registry.set(registry).is_err() {
            return;
        }
        // Agents that were running when the engine stopped connect again, as real ones do,
        // and machines that were booting one finish booting it.
        let running: Vec<_> = self.0.with_world(|world| {
            world
                .machines
                .iter()
                .filter(|(_, m)| m.power)
                .filter_map(|(name, m)| {
                    let token = m.agent.clone().or_else(|| m.booting.clone())?;
                    Some((name.clone(), m.host?, m.mac, token, m.generation))
                })
                .collect()
        });
        for (name, host, mac, token, generation) in running {
            self.0.start_agent(name, host, mac, token, generation);
        }
    }

    async fn inspect(&self, host: &HostTarget) -> Result<HardwareDetails, DriverError> {
        let m = machine_name(&host.bmc.address).to_owned();
        let name = self.agent(host, Record::Inspect { m }).await?;
        Ok(synthetic_inventory(name, host.boot_mac))
    }

    async fn clean(
        &self,
        host: &HostTarget,
        _cleaning: &CleaningPolicy,
        progress: ProgressSink,
    ) -> Result<(), DriverError> {
        let m = machine_name(&host.bmc.address).to_owned();
        let name = self.agent(host, Record::Clean { m }).await?;
        let record = Record::Cleaned { m: name.to_owned() };
        self.0.with_world(|world| world.apply(&record));
        self.0.log(&record);
        progress(AgentProgress {
            percent: Some(100),
            message: "disks cleaned".into(),
        });
        Ok(())
    }

    async fn deploy(
        &self,
        host: &HostTarget,
        deploy: &DeployRequest,
        progress: ProgressSink,
    ) -> Result<(), DriverError> {
        let m = machine_name(&host.bmc.address).to_owned();
        let name = self.agent(host, Record::Deploy { m }).await?;
        let url = &deploy.image.url;
        if self.0.config.fetch_images && (url.starts_with("http://") || url.starts_with("https://"))
        {
            let bytes = fetch_and_verify(&self.0.http, &deploy.image).await?;
            progress(AgentProgress {
                percent: Some(100),
                message: format!("wrote {bytes} bytes"),
            });
        }
        let record = Record::Deployed {
            m: name.to_owned(),
            image: url.clone(),
        };
        self.0.with_world(|world| world.apply(&record));
        self.0.log(&record);
        Ok(())
    }

    async fn release(&self, _host: &HostTarget) {}
}

/// Downloads the image and checks its checksum, as the real agent does while writing.
async fn fetch_and_verify(http: &reqwest::Client, image: &ImageSpec) -> Result<u64, DriverError> {
    let failed = |message: String| DriverError::new(DriverErrorKind::Failed, message);
    let algorithm = match (image.checksum_type, image.checksum.as_deref().map(str::len)) {
        (_, None) => None,
        (Some(ChecksumType::Sha256), _) | (None | Some(ChecksumType::Auto), Some(64)) => {
            Some(&digest::SHA256)
        }
        (Some(ChecksumType::Sha512), _) | (None | Some(ChecksumType::Auto), Some(128)) => {
            Some(&digest::SHA512)
        }
        _ => {
            return Err(failed(
                "the simulated agent verifies sha256 and sha512 checksums only".into(),
            ));
        }
    };
    let response = http
        .get(&image.url)
        .send()
        .await
        .map_err(|err| failed(format!("image {} could not be fetched: {err}", image.url)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!(
            "image {} returned HTTP {status}",
            image.url
        )));
    }
    let mut context = algorithm.map(digest::Context::new);
    let mut bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| failed(format!("image {} broke off: {err}", image.url)))?;
        bytes += chunk.len() as u64;
        if let Some(context) = &mut context {
            context.update(&chunk);
        }
    }
    if let (Some(context), Some(expected)) = (context, &image.checksum) {
        let actual = hex::encode(context.finish());
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(failed(format!(
                "image {} checksum mismatch: expected {expected}, got {actual}",
                image.url
            )));
        }
    }
    Ok(bytes)
}

/// A plausible inventory, derived from the machine's name so it is stable.
pub(super) fn synthetic_inventory(name: &str, mac: Option<MacAddr>) -> HardwareDetails {
    let seed = name.bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    HardwareDetails {
        system_vendor: Some(SystemVendor {
            manufacturer: Some("Rivet Simulated Systems".into()),
            product_name: Some("SIM-1".into()),
            serial_number: Some(format!("SIM{seed:010}")),
        }),
        ram_mebibytes: Some(32_768 << (seed % 3)),
        cpu: Some(Cpu {
            arch: Some("x86_64".into()),
            model: Some("Simulated CPU".into()),
            count: Some(8 << (seed % 3)),
            ..Cpu::default()
        }),
        nics: vec![Nic {
            name: Some("eth0".into()),
            mac: mac.map(|mac| mac.to_string()),
            pxe: Some(true),
            speed_gbps: Some(25),
            ..Nic::default()
        }],
        storage: vec![Storage {
            name: Some("/dev/disk/by-path/pci-0000:00:1f.2-ata-1".into()),
            alternate_names: vec!["/dev/sda".into()],
            rotational: Some(false),
            kind: Some(StorageType::Ssd),
            size_bytes: Some(480_103_981_056),
            model: Some("SIM SSD".into()),
            ..Storage::default()
        }],
        hostname: Some(name.to_owned()),
        ..HardwareDetails::default()
    }
}
