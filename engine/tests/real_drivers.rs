//! `rivet serve` with `drivers.kind = "real"`, every seam on a real peer but the machine
//! itself: OpenIPMI's `ipmi_sim` as the BMC, the engine's rivet-pxe boot HTTP server
//! fetched as iPXE would fetch it, and the real `rivet-agent` channel client started with
//! the kernel command line from that script. (Booting a QEMU guest is the lab's job.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{Daemon, settled, wait_for};
use rivet_agent::channel::protocol::{CleanPolicy, DeployJob};
use rivet_agent::channel::{
    ChannelParams, Client, ClientConfig, JobError, JobHandler, ProgressReporter,
};
use rivet_engine::lifecycle::{MacAddr, ProvisioningState as S};
use rivet_engine::runtime::{BmcAccess, EnrollRequest};
use rivet_model::HardwareDetails;
use rivet_tests::{IPMI_PASSWORD, IPMI_USER, IpmiSim, free_tcp_port, wait_until};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);
const MAC: MacAddr = MacAddr::new([0x52, 0x54, 0, 0xee, 0, 1]);

#[derive(Default)]
struct Agent {
    done: Mutex<Vec<String>>,
}

#[async_trait]
impl JobHandler for Agent {
    async fn inspect(&self) -> Result<HardwareDetails, JobError> {
        self.done.lock().unwrap().push("inspect".into());
        Ok(HardwareDetails {
            hostname: Some("ipmi-sim-machine".into()),
            ..HardwareDetails::default()
        })
    }
    async fn clean(&self, _: &CleanPolicy, progress: ProgressReporter) -> Result<(), JobError> {
        self.done.lock().unwrap().push("clean".into());
        progress.report(Some(100), "cleaned");
        Ok(())
    }
    async fn deploy(&self, job: &DeployJob, progress: ProgressReporter) -> Result<(), JobError> {
        self.done
            .lock()
            .unwrap()
            .push(format!("deploy {}", job.image.url));
        progress.report(Some(100), "written");
        Ok(())
    }
}

#[tokio::test]
async fn rivet_serve_with_real_drivers_takes_an_ipmi_host_to_provisioned() {
    let sim = IpmiSim::start();
    sim.set_power(false);
    let (api_port, boot_port) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[engine]\nbackoff_base_ms = 200\nbackoff_max_ms = 800\npower_poll_interval_ms = 50\n\
         power_sync_interval_secs = 0\nsoft_power_off_timeout_secs = 2\n\
         [drivers]\nkind = \"real\"\n\
         [drivers.real.bmc]\nipmi_min_command_interval_ms = 0\n\
         [drivers.real.boot]\nengine_url = \"https://127.0.0.1:{api_port}\"\n\
         http_listen = \"127.0.0.1:{boot_port}\"\n"
    );
    let daemon = Daemon::start_on("real-drivers", api_port, &config);
    let client = daemon.client();
    let bmc = BmcAccess {
        address: format!("ipmi://127.0.0.1:{}", sim.port()),
        username: IPMI_USER.into(),
        password: IPMI_PASSWORD.into(),
        disable_certificate_verification: false,
    };
    client
        .enroll(&EnrollRequest::new("r1", Some(bmc), Some(MAC)))
        .await
        .unwrap();

    // The engine points the machine at the network and powers it on through ipmi_sim…
    wait_until("ipmi_sim to be set to PXE and powered on", LONG, || {
        sim.boot() == "pxe" && sim.power() == "1"
    });
    // …and the machine's iPXE would fetch this script from the boot HTTP server.
    let script_url = format!("http://127.0.0.1:{boot_port}/boot/52-54-00-ee-00-01.ipxe");
    let script = reqwest::get(&script_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let kernel = script
        .lines()
        .find(|line| line.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {script}"));
    let params = ChannelParams::from_cmdline(kernel).unwrap();
    let token = params.token.expose().to_owned();
    let mut agent_config = ClientConfig::new(params, vec![MAC.to_string()]);
    agent_config.backoff_initial = Duration::from_millis(100);
    let agent = Arc::new(Agent::default());
    let running = tokio::spawn({
        let agent = agent.clone();
        let channel = Client::new(agent_config).unwrap();
        async move { channel.run(agent).await }
    });

    wait_for(&client, "r1", "available", LONG, settled(S::Available)).await;
    let body = json!({"image": {"url": "https://images.example/os.img"}});
    client.action("r1", "provision", Some(&body)).await.unwrap();
    wait_for(&client, "r1", "provisioned", LONG, settled(S::Provisioned)).await;
    assert_eq!(
        *agent.done.lock().unwrap(),
        vec!["inspect", "clean", "deploy https://images.example/os.img"]
    );
    assert_eq!(sim.boot(), "default", "the machine boots from its disk now");
    assert_eq!(sim.power(), "1");
    let script = reqwest::get(&script_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !script.contains("rivet.token"),
        "the agent boot is gone: {script}"
    );
    assert!(client.get("r1").await.unwrap().unwrap().status.has_hardware);
    let log = daemon.log();
    assert!(log.contains("agent connected"), "{log}");
    assert!(!log.contains(&token), "the agent token reached the log");
    running.abort();
}
