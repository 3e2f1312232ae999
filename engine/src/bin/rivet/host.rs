//! `rivet host …`: manage hosts through a running daemon's REST API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rivet_engine::client::Client;
use rivet_engine::lifecycle::{
    Activity, BootMode, ChecksumType, CleaningMode, CleaningPolicy, ImageFormat, ImageSpec,
    InspectionMode, MacAddr, ProvisioningState, TimelineEntry, TimelineEvent,
};
use rivet_engine::runtime::{
    Adoption, BmcAccess, EnrollRequest, HostEvent, HostEventKind, HostView, ListQuery,
};
use serde_json::json;

#[derive(Debug, Args)]
pub(crate) struct HostArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: HostCommand,
}

/// Where the daemon is and how to authenticate.
#[derive(Debug, Args)]
struct Connection {
    /// The engine's API.
    #[arg(
        long,
        env = "RIVET_URL",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    url: String,
    /// The daemon's state directory; the API token and CA certificate are read from it.
    #[arg(long, env = "RIVET_STATE_DIR", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// File holding the API token (default: <state-dir>/api-token). `RIVET_TOKEN` may hold
    /// the token itself.
    #[arg(long, env = "RIVET_TOKEN_FILE", global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM certificates to trust (default: <state-dir>/tls/ca.pem, else the system's roots).
    #[arg(long, env = "RIVET_CA_FILE", global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Enrol a host with its BMC.
    Enroll(EnrollArgs),
    /// List hosts.
    List {
        /// Only hosts in this provisioning state (`available`, `provisioned`, …).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one host.
    Show { name: String },
    /// Inspect an available host again.
    Inspect {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Write an image to a host and boot it.
    Provision(ProvisionArgs),
    /// Remove the image (the disks are cleaned).
    Deprovision {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set the desired power.
    Power {
        name: String,
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Reboot a provisioned host (soft, then hard after the timeout).
    Reboot {
        name: String,
        /// Cut power instead of asking the operating system.
        #[arg(long)]
        hard: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete a host (it is deprovisioned and powered off first).
    Delete {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show a host's timeline: every step, its duration, and why it waited or failed.
    Timeline {
        name: String,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Follow events as they happen (all hosts, or one).
    Watch { name: Option<String> },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
struct WaitArgs {
    /// Wait until the host gets there, showing progress.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(
        long,
        default_value_t = 1800,
        value_name = "SECONDS",
        requires = "wait"
    )]
    timeout: u64,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    name: String,
    /// BMC address (`redfish://…`, `ipmi://…`, `redfish-virtualmedia://…`, `sim://…`).
    #[arg(long)]
    bmc: String,
    /// BMC user.
    #[arg(long)]
    username: String,
    /// File holding the BMC password (or set `RIVET_BMC_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// MAC address of the provisioning NIC (not needed with virtual media).
    #[arg(long)]
    mac: Option<MacAddr>,
    /// Leave the host powered off in the stable states.
    #[arg(long)]
    offline: bool,
    /// Firmware boot mode the BMC sets for every boot.
    #[arg(long, value_enum, default_value = "uefi")]
    boot_mode: BootModeArg,
    #[arg(long, value_enum)]
    inspection: Option<InspectionArg>,
    #[arg(long, value_enum)]
    cleaning: Option<CleaningArg>,
    /// The host runs something Rivet did not write; only manage its power.
    #[arg(long)]
    externally_provisioned: bool,
    /// Take the host over as provisioned with this image, without touching its disk.
    #[arg(long, value_name = "URL", conflicts_with = "externally_provisioned")]
    adopt_image: Option<String>,
    /// Do not verify the BMC's TLS certificate.
    #[arg(long)]
    insecure_bmc: bool,
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BootModeArg {
    Uefi,
    UefiSecureBoot,
    Legacy,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InspectionArg {
    Agent,
    OutOfBand,
    Disabled,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CleaningArg {
    Metadata,
    Erase,
    Disabled,
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    name: String,
    /// Image URL.
    #[arg(long)]
    image: String,
    /// Checksum (hex digest) of the image.
    #[arg(long)]
    checksum: Option<String>,
    #[arg(long, value_enum)]
    checksum_type: Option<ChecksumArg>,
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Cloud-init user data for the config drive.
    #[arg(long, value_name = "FILE")]
    user_data_file: Option<PathBuf>,
    /// OpenStack network_data.json for the config drive.
    #[arg(long, value_name = "FILE")]
    network_data_file: Option<PathBuf>,
    /// A JSON object merged into the config drive's meta data.
    #[arg(long, value_name = "FILE")]
    meta_data_file: Option<PathBuf>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChecksumArg {
    Md5,
    Sha256,
    Sha512,
    Auto,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
    Vdi,
    Vmdk,
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    State(ProvisioningState),
    Power(bool),
    Idle,
    Gone,
}

pub(crate) fn run(args: HostArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(command(args))
}

fn client(connection: &Connection) -> anyhow::Result<Client> {
    let from_dir = |relative: &str| connection.state_dir.as_ref().map(|dir| dir.join(relative));
    let token = match std::env::var("RIVET_TOKEN") {
        Ok(token) if !token.trim().is_empty() => token,
        _ => {
            let path = connection
                .token_file
                .clone()
                .or_else(|| from_dir("api-token"))
                .context("no API token: set RIVET_TOKEN, or pass --token-file or --state-dir")?;
            read(&path)?
        }
    };
    let ca = connection
        .ca_file
        .clone()
        .or_else(|| from_dir("tls/ca.pem").filter(|path| path.exists()));
    Ok(Client::new(&connection.url, &token, ca.as_deref())?)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn command(args: HostArgs) -> anyhow::Result<()> {
    let client = client(&args.connection)?;
    let json = args.json;
    match args.command {
        HostCommand::Enroll(enroll) => {
            let view = client.enroll(&enroll_request(enroll)?).await?;
            print_view(&view, json);
        }
        HostCommand::List { state } => {
            let state = state
                .map(|state| {
                    ProvisioningState::parse(&state)
                        .with_context(|| format!("`{state}` is not a provisioning state"))
                })
                .transpose()?;
            let hosts = client
                .list_all(ListQuery {
                    state,
                    ..ListQuery::default()
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
            } else {
                print_table(&hosts);
            }
        }
        HostCommand::Show { name } => {
            let view = client
                .get(&name)
                .await?
                .with_context(|| format!("no host is named `{name}`"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_details(&view);
            }
        }
        HostCommand::Inspect { name, wait } => {
            let view = client.action(&name, "inspect", None).await?;
            finish(
                &client,
                view,
                Goal::State(ProvisioningState::Available),
                &wait,
                json,
            )
            .await?;
        }
        HostCommand::Provision(provision) => {
            let body = provision_body(&provision)?;
            let view = client
                .action(&provision.name, "provision", Some(&body))
                .await?;
            finish(
                &client,
                view,
                Goal::State(ProvisioningState::Provisioned),
                &provision.wait,
                json,
            )
            .await?;
        }
        HostCommand::Deprovision { name, wait } => {
            let view = client.action(&name, "deprovision", None).await?;
            finish(
                &client,
                view,
                Goal::State(ProvisioningState::Available),
                &wait,
                json,
            )
            .await?;
        }
        HostCommand::Power { name, state, wait } => {
            let on = matches!(state, OnOff::On);
            let view = client
                .action(&name, "power", Some(&json!({"on": on})))
                .await?;
            finish(&client, view, Goal::Power(on), &wait, json).await?;
        }
        HostCommand::Reboot { name, hard, wait } => {
            let mode = if hard { "hard" } else { "soft" };
            let view = client
                .action(&name, "reboot", Some(&json!({"mode": mode})))
                .await?;
            finish(&client, view, Goal::Idle, &wait, json).await?;
        }
        HostCommand::Delete { name, wait } => {
            let view = client.delete(&name).await?;
            finish(&client, view, Goal::Gone, &wait, json).await?;
        }
        HostCommand::Timeline { name, after } => {
            let timeline = client.timeline(&name, after).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&timeline.entries)?);
            } else {
                let rows: Vec<Vec<String>> = timeline
                    .entries
                    .iter()
                    .map(|entry| {
                        let (event, detail) = describe(entry);
                        vec![entry.seq.to_string(), entry.at.to_string(), event, detail]
                    })
                    .collect();
                table(&["SEQ", "TIME", "EVENT", "DETAIL"], &rows);
            }
        }
        HostCommand::Watch { name } => watch(&client, name.as_deref(), json).await?,
    }
    Ok(())
}

fn enroll_request(args: EnrollArgs) -> anyhow::Result<EnrollRequest> {
    let password = match (&args.password_file, std::env::var("RIVET_BMC_PASSWORD")) {
        (Some(path), _) => read(path)?.trim_end_matches(['\n', '\r']).to_owned(),
        (None, Ok(password)) if !password.is_empty() => password,
        _ => bail!("give the BMC password with --password-file or RIVET_BMC_PASSWORD"),
    };
    let bmc = BmcAccess {
        address: args.bmc,
        username: args.username,
        password,
        disable_certificate_verification: args.insecure_bmc,
    };
    let mut request = EnrollRequest::new(args.name, Some(bmc), args.mac);
    request.online = !args.offline;
    request.boot_mode = match args.boot_mode {
        BootModeArg::Uefi => BootMode::Uefi,
        BootModeArg::UefiSecureBoot => BootMode::UefiSecureBoot,
        BootModeArg::Legacy => BootMode::Legacy,
    };
    request.externally_provisioned = args.externally_provisioned;
    request.description = args.description;
    if let Some(inspection) = args.inspection {
        request.inspection_mode = match inspection {
            InspectionArg::Agent => InspectionMode::Agent,
            InspectionArg::OutOfBand => InspectionMode::OutOfBand,
            InspectionArg::Disabled => InspectionMode::Disabled,
        };
    }
    if let Some(cleaning) = args.cleaning {
        request.cleaning = CleaningPolicy {
            mode: match cleaning {
                CleaningArg::Metadata => CleaningMode::Metadata,
                CleaningArg::Erase => CleaningMode::Erase,
                CleaningArg::Disabled => CleaningMode::Disabled,
            },
            disks: Vec::new(),
        };
    }
    if let Some(url) = args.adopt_image {
        request.adopt = Some(Adoption {
            image: Some(ImageSpec {
                url,
                checksum: None,
                checksum_type: None,
                format: None,
            }),
        });
    }
    Ok(request)
}

fn provision_body(args: &ProvisionArgs) -> anyhow::Result<serde_json::Value> {
    let image = ImageSpec {
        url: args.image.clone(),
        checksum: args.checksum.clone(),
        checksum_type: args.checksum_type.map(|kind| match kind {
            ChecksumArg::Md5 => ChecksumType::Md5,
            ChecksumArg::Sha256 => ChecksumType::Sha256,
            ChecksumArg::Sha512 => ChecksumType::Sha512,
            ChecksumArg::Auto => ChecksumType::Auto,
        }),
        format: args.format.map(|format| match format {
            FormatArg::Raw => ImageFormat::Raw,
            FormatArg::Qcow2 => ImageFormat::Qcow2,
            FormatArg::Vdi => ImageFormat::Vdi,
            FormatArg::Vmdk => ImageFormat::Vmdk,
        }),
    };
    let file = |path: &Option<PathBuf>| path.as_deref().map(read).transpose();
    Ok(json!({
        "image": image,
        "userData": file(&args.user_data_file)?,
        "networkData": file(&args.network_data_file)?,
        "metaData": file(&args.meta_data_file)?,
    }))
}

/// Prints the host after a request, or waits for `goal` with a progress bar.
async fn finish(
    client: &Client,
    view: HostView,
    goal: Goal,
    wait: &WaitArgs,
    json: bool,
) -> anyhow::Result<()> {
    if !wait.wait {
        print_view(&view, json);
        return Ok(());
    }
    let since = view.status.last_updated;
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:24}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(view.name.clone());
    bar.enable_steady_tick(Duration::from_millis(120));
    let deadline = Instant::now() + Duration::from_secs(wait.timeout);
    let name = view.name.clone();
    loop {
        let current = client.get(&name).await?;
        let Some(current) = current else {
            bar.finish_and_clear();
            if goal == Goal::Gone {
                if !json {
                    println!("host {name}: deleted");
                }
                return Ok(());
            }
            bail!("host {name} was deleted while waiting");
        };
        let idle = current.status.activity == Activity::Idle;
        let reached = match goal {
            Goal::State(state) => idle && current.status.state == state,
            Goal::Power(on) => idle && current.status.powered_on == Some(on),
            Goal::Idle => idle,
            Goal::Gone => false,
        };
        if reached {
            bar.finish_and_clear();
            print_view(&current, json);
            return Ok(());
        }
        if let Some(error) = current
            .status
            .error
            .as_ref()
            .filter(|error| error.at >= since)
        {
            bar.finish_and_clear();
            bail!(
                "host {name}: {}: {} (the engine retries at {})",
                error.kind,
                error.message,
                error.retry_at
            );
        }
        match &current.progress {
            Some(progress) => {
                bar.set_length(progress.total as u64);
                bar.set_position(progress.index.saturating_sub(1) as u64);
                bar.set_message(format!(
                    "{} · {}: {}",
                    current.status.state, progress.operation, progress.description
                ));
            }
            None => bar.set_message(format!(
                "{} · {}",
                current.status.state,
                current
                    .waiting_for
                    .clone()
                    .unwrap_or_else(|| "waiting".into())
            )),
        }
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            bail!(
                "timed out after {}s: host {name} is {} ({})",
                wait.timeout,
                current.status.state,
                current.waiting_for.as_deref().unwrap_or("no reason given")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn watch(client: &Client, name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let response = client.events(name).await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(
            &chunk.context("reading the event stream")?,
        ));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                continue;
            }
            if json {
                println!("{data}");
                continue;
            }
            match serde_json::from_str::<HostEvent>(&data) {
                Ok(event) => println!("{}", event_line(&event)),
                Err(_) => println!("{data}"),
            }
        }
    }
    Ok(())
}

fn event_line(event: &HostEvent) -> String {
    match &event.kind {
        HostEventKind::Timeline { entry } => {
            let (kind, detail) = describe(entry);
            format!(
                "{} {} [{}] {kind} {detail}",
                entry.at, event.host, event.state
            )
        }
        HostEventKind::Progress { percent, message } => {
            let percent = percent.map(|p| format!("{p}% ")).unwrap_or_default();
            format!("{} progress {percent}{message}", event.host)
        }
        HostEventKind::Deleted => format!("{} deleted", event.host),
    }
}

/// A timeline entry as a short name and a detail.
fn describe(entry: &TimelineEntry) -> (String, String) {
    let ms =
        |ms: u64| rivet_engine::lifecycle::timeline::format_duration(Duration::from_millis(ms));
    match &entry.event {
        TimelineEvent::Enrolled => ("enrolled".into(), String::new()),
        TimelineEvent::Intent { summary } => ("request".into(), summary.clone()),
        TimelineEvent::StateChanged { from, to } => ("state".into(), format!("{from} → {to}")),
        TimelineEvent::OperationStarted { operation, steps } => (
            "started".into(),
            format!("{operation} ({} steps)", steps.len()),
        ),
        TimelineEvent::StepSucceeded {
            step,
            duration_ms,
            attempt,
            ..
        } => {
            let retry = if *attempt > 0 {
                format!(" (attempt {})", attempt + 1)
            } else {
                String::new()
            };
            (
                "step".into(),
                format!("{step}: done in {}{retry}", ms(*duration_ms)),
            )
        }
        TimelineEvent::StepFailed {
            step,
            duration_ms,
            error,
            ..
        } => (
            "step failed".into(),
            format!("{step} after {}: {error}", ms(*duration_ms)),
        ),
        TimelineEvent::Waiting { reason } => ("waiting".into(), reason.clone()),
        TimelineEvent::SlotGranted { waited_ms } => (
            "slot".into(),
            format!("provisioning slot granted after {}", ms(*waited_ms)),
        ),
        TimelineEvent::OperationSucceeded {
            operation,
            duration_ms,
        } => (
            "finished".into(),
            format!("{operation} in {}", ms(*duration_ms)),
        ),
        TimelineEvent::OperationFailed {
            operation,
            error_type,
            message,
            retry_at,
        } => (
            "failed".into(),
            format!("{operation}: {error_type}: {message} (retry at {retry_at})"),
        ),
        TimelineEvent::OperationCancelled { operation, reason } => {
            ("cancelled".into(), format!("{operation}: {reason}"))
        }
        TimelineEvent::ErrorCleared { operation } => (
            "error cleared".into(),
            format!("{operation} is no longer wanted"),
        ),
        TimelineEvent::Resumed { operation, step } => (
            "resumed".into(),
            format!("{operation} at {step} after a restart"),
        ),
        TimelineEvent::PowerObserved { on } => (
            "power".into(),
            format!("observed {}", if *on { "on" } else { "off" }),
        ),
        TimelineEvent::AgentConnected => ("agent".into(), "connected".into()),
        TimelineEvent::AgentDisconnected => ("agent".into(), "disconnected".into()),
        TimelineEvent::Detached => ("detached".into(), String::new()),
        TimelineEvent::Attached => ("attached".into(), String::new()),
        _ => (
            "event".into(),
            serde_json::to_string(&entry.event).unwrap_or_default(),
        ),
    }
}

fn print_view(view: &HostView, json: bool) {
    if json {
        match serde_json::to_string_pretty(view) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("error: cannot print the host: {err}"),
        }
        return;
    }
    let mut line = format!(
        "host {}: {} ({})",
        view.name, view.status.state, view.status.operational_status
    );
    if let Some(error) = &view.status.error {
        line.push_str(&format!(" — {}: {}", error.kind, error.message));
    } else if let Some(waiting) = &view.waiting_for {
        line.push_str(&format!(" — {waiting}"));
    }
    println!("{line}");
}

fn power(view: &HostView) -> &'static str {
    match view.status.powered_on {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    }
}

fn print_table(hosts: &[HostView]) {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|view| {
            let note = view
                .status
                .error
                .as_ref()
                .map(|error| format!("{}: {}", error.kind, error.message))
                .or_else(|| view.waiting_for.clone())
                .unwrap_or_default();
            vec![
                view.name.clone(),
                view.status.state.to_string(),
                view.status.operational_status.to_string(),
                power(view).to_owned(),
                truncate(&note, 70),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "STATUS", "POWER", "NOTE"], &rows);
}

fn print_details(view: &HostView) {
    let status = &view.status;
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", view.name.clone()),
        ("Id", view.id.to_string()),
        (
            "BMC",
            view.spec
                .bmc
                .as_ref()
                .map(|bmc| bmc.address.clone())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "BMC user",
            view.bmc_username.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "Boot MAC",
            view.spec
                .boot_mac_address
                .map(|mac| mac.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("State", status.state.to_string()),
        ("Status", status.operational_status.to_string()),
        (
            "Power",
            format!(
                "{} (wanted {})",
                power(view),
                if view.spec.online { "on" } else { "off" }
            ),
        ),
        (
            "Image",
            status
                .image
                .as_ref()
                .map(|image| image.url.clone())
                .unwrap_or_else(|| "-".into()),
        ),
        ("Last updated", status.last_updated.to_string()),
    ];
    if let Some(progress) = &view.progress {
        rows.push((
            "Progress",
            format!(
                "{} step {}/{}: {} (since {})",
                progress.operation,
                progress.index,
                progress.total,
                progress.description,
                progress.since
            ),
        ));
    }
    if let Some(waiting) = &view.waiting_for {
        rows.push(("Waiting for", waiting.clone()));
    }
    if let Some(error) = &status.error {
        rows.push(("Error", format!("{}: {}", error.kind, error.message)));
        rows.push((
            "Errors",
            format!("{} (next retry {})", status.error_count, error.retry_at),
        ));
    }
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:width$}  {value}");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
