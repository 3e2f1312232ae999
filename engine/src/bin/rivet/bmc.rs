//! `rivet bmc`: drive one BMC from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use rivet_bmc::{
    AttributeSchema, AttributeType, Attributes, Bmc, BmcAddress, BootMode, BootOverride,
    BootPersistence, BootTarget, ConnectOptions, Credentials, MediaKind, PowerOffMode, PowerState,
    Provider, wait_for_power_state,
};

/// The environment variable holding the BMC password when no file is given.
const PASSWORD_ENV: &str = "RIVET_BMC_PASSWORD";

#[derive(Debug, Args)]
pub(crate) struct BmcArgs {
    /// The BMC address, in any form a BareMetalHost accepts
    /// (redfish+https://host/redfish/v1/Systems/1, ipmi://host:623, …).
    #[arg(long, env = "RIVET_BMC_ADDRESS")]
    address: String,

    /// The BMC user.
    #[arg(long, short = 'u', env = "RIVET_BMC_USERNAME")]
    username: String,

    /// A file holding the password (one trailing newline is ignored). Without it the
    /// password is read from RIVET_BMC_PASSWORD; it is never taken on the command line.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// Do not verify the BMC's TLS certificate (BareMetalHost
    /// `disableCertificateVerification`).
    #[arg(long)]
    insecure: bool,

    /// Trust only the CA certificates in this PEM file for the BMC's TLS certificate.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca_cert: Option<PathBuf>,

    /// Seconds one request to the BMC may take.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    timeout: u64,

    #[command(subcommand)]
    command: BmcCommand,
}

#[derive(Debug, Subcommand)]
enum BmcCommand {
    /// Read or change power.
    Power {
        #[command(subcommand)]
        action: PowerAction,
    },
    /// Read or set the boot-source override.
    Boot {
        #[command(subcommand)]
        action: BootAction,
    },
    /// Attach or detach an image through virtual media.
    Vmedia {
        #[command(subcommand)]
        action: MediaAction,
    },
    /// Print the out-of-band hardware inventory (BareMetalHost `status.hardware` shape).
    Inventory {
        #[arg(long)]
        json: bool,
    },
    /// Read or change BIOS attributes.
    Bios {
        #[command(subcommand)]
        action: BiosAction,
    },
    /// List firmware components.
    Firmware {
        #[command(subcommand)]
        action: FirmwareAction,
    },
    /// Print the system's health rollup: ok, warning or critical.
    Health,
}

#[derive(Debug, Args)]
struct Wait {
    /// Return once the BMC accepted the request, without waiting for the new state.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the new power state to show.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    wait_timeout: u64,
}

#[derive(Debug, Subcommand)]
enum PowerAction {
    /// Print on, off, powering-on or powering-off.
    Status,
    On(#[command(flatten)] Wait),
    Off {
        /// Ask the operating system to shut down instead of cutting power.
        #[arg(long)]
        soft: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Warm reset.
    Reset(#[command(flatten)] Wait),
    /// Power off, wait, power on.
    Cycle(#[command(flatten)] Wait),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeviceArg {
    Pxe,
    Disk,
    Cd,
    UefiHttp,
    Bios,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Uefi,
    Legacy,
}

#[derive(Debug, Subcommand)]
enum BootAction {
    /// Boot from DEVICE next time (or every time with --persistent).
    Set {
        device: DeviceArg,
        #[arg(long)]
        persistent: bool,
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// With uefi-http: the URL the firmware fetches.
        #[arg(long, value_name = "URL")]
        http_boot_uri: Option<String>,
    },
    /// Print the override as `<device> <once|persistent> [uefi|legacy]`, or `none`.
    Get,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Cd,
    Usb,
    Floppy,
}

impl From<KindArg> for MediaKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Cd => MediaKind::Cd,
            KindArg::Usb => MediaKind::Usb,
            KindArg::Floppy => MediaKind::Floppy,
        }
    }
}

#[derive(Debug, Subcommand)]
enum MediaAction {
    /// Insert the image at URL (the BMC downloads it).
    Insert {
        url: String,
        #[arg(long, value_enum, default_value_t = KindArg::Cd)]
        kind: KindArg,
    },
    /// Eject whatever is in the slots of this kind.
    Eject {
        #[arg(long, value_enum, default_value_t = KindArg::Cd)]
        kind: KindArg,
    },
    /// List the slots and what is in them.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BiosAction {
    /// Print the current attributes as NAME=VALUE lines.
    Get {
        #[arg(long)]
        json: bool,
    },
    /// Change attributes: NAME=VALUE… (checked against the BIOS registry first).
    Set {
        #[arg(required = true, value_name = "NAME=VALUE")]
        settings: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum FirmwareAction {
    /// Print the firmware inventory.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: BmcArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BmcArgs) -> anyhow::Result<()> {
    let address = BmcAddress::parse(&args.address).context("reading --address")?;
    let password = read_password(args.password_file.as_deref())?;
    let credentials = Credentials::new(args.username.clone(), password);
    let mut options = ConnectOptions::default();
    options.redfish.disable_certificate_verification = args.insecure;
    options.redfish.request_timeout = Duration::from_secs(args.timeout.max(1));
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        options.redfish.ca_certificates_pem.push(pem);
    }
    let bmc = rivet_bmc::connect(&address, credentials, options)
        .await
        .with_context(|| format!("connecting to the BMC at {}", address.authority()))?;
    let result = execute(&bmc, args.command).await;
    bmc.close().await;
    result
}

fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match file {
        Some(path) => {
            let mut text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the password file {}", path.display()))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(text)
        }
        None => std::env::var(PASSWORD_ENV).map_err(|_| {
            anyhow::anyhow!("no BMC password: pass --password-file or set {PASSWORD_ENV}")
        }),
    }
}

async fn execute(bmc: &Bmc, command: BmcCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        BmcCommand::Power { action } => power(bmc, action, &mut out).await,
        BmcCommand::Boot { action } => boot(bmc, action, &mut out).await,
        BmcCommand::Vmedia { action } => media(bmc, action, &mut out).await,
        BmcCommand::Inventory { json } => {
            let details = rivet_bmc::Inventory::inventory(bmc)
                .await
                .context("reading the inventory")?;
            if json {
                serde_json::to_writer_pretty(&mut out, &details)?;
                writeln!(out)?;
            } else {
                print_inventory(&details, &mut out)?;
            }
            Ok(())
        }
        BmcCommand::Bios { action } => bios(bmc, action, &mut out).await,
        BmcCommand::Firmware {
            action: FirmwareAction::List { json },
        } => {
            let components = rivet_bmc::Firmware::firmware_components(bmc)
                .await
                .context("reading the firmware inventory")?;
            if json {
                serde_json::to_writer_pretty(&mut out, &components)?;
                writeln!(out)?;
            } else {
                for c in components {
                    writeln!(
                        out,
                        "{}\t{}\t{}{}",
                        c.id,
                        c.name.as_deref().unwrap_or("-"),
                        c.version.as_deref().unwrap_or("-"),
                        if c.updateable { "\tupdateable" } else { "" }
                    )?;
                }
            }
            Ok(())
        }
        BmcCommand::Health => {
            let health = rivet_bmc::HealthCheck::health(bmc)
                .await
                .context("reading health")?;
            writeln!(out, "{}", format!("{health:?}").to_lowercase())?;
            Ok(())
        }
    }
}

fn state_name(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "on",
        PowerState::Off => "off",
        PowerState::PoweringOn => "powering-on",
        PowerState::PoweringOff => "powering-off",
    }
}

async fn power(bmc: &Bmc, action: PowerAction, out: &mut impl Write) -> anyhow::Result<()> {
    use rivet_bmc::Power;
    let (wait, target) = match action {
        PowerAction::Status => {
            let state = bmc.power_state().await.context("reading power state")?;
            writeln!(out, "{}", state_name(state))?;
            return Ok(());
        }
        PowerAction::On(wait) => {
            bmc.power_on().await.context("powering on")?;
            (wait, PowerState::On)
        }
        PowerAction::Off { soft, wait } => {
            let mode = if soft {
                PowerOffMode::Soft
            } else {
                PowerOffMode::Hard
            };
            bmc.power_off(mode).await.context("powering off")?;
            (wait, PowerState::Off)
        }
        PowerAction::Reset(wait) => {
            bmc.reset().await.context("resetting")?;
            (wait, PowerState::On)
        }
        PowerAction::Cycle(wait) => {
            bmc.power_cycle().await.context("power cycling")?;
            (wait, PowerState::On)
        }
    };
    if !wait.no_wait {
        wait_for_power_state(
            bmc,
            target,
            Duration::from_secs(wait.wait_timeout),
            Duration::from_secs(1),
        )
        .await
        .context("waiting for the power change")?;
    }
    writeln!(
        out,
        "{}",
        if wait.no_wait {
            "requested"
        } else {
            state_name(target)
        }
    )?;
    Ok(())
}

async fn boot(bmc: &Bmc, action: BootAction, out: &mut impl Write) -> anyhow::Result<()> {
    use rivet_bmc::BootDevice;
    match action {
        BootAction::Set {
            device,
            persistent,
            mode,
            http_boot_uri,
        } => {
            let boot = BootOverride {
                target: match device {
                    DeviceArg::Pxe => BootTarget::Pxe,
                    DeviceArg::Disk => BootTarget::Disk,
                    DeviceArg::Cd => BootTarget::Cd,
                    DeviceArg::UefiHttp => BootTarget::UefiHttp,
                    DeviceArg::Bios => BootTarget::BiosSetup,
                },
                persistence: if persistent {
                    BootPersistence::Persistent
                } else {
                    BootPersistence::Once
                },
                mode: mode.map(|m| match m {
                    ModeArg::Uefi => BootMode::Uefi,
                    ModeArg::Legacy => BootMode::Legacy,
                }),
                http_boot_uri,
            };
            bmc.set_boot_override(&boot)
                .await
                .context("setting the boot device")?;
            writeln!(out, "{}", describe_boot(Some(&boot)))?;
        }
        BootAction::Get => {
            let boot = bmc
                .boot_override()
                .await
                .context("reading the boot device")?;
            writeln!(out, "{}", describe_boot(boot.as_ref()))?;
        }
    }
    Ok(())
}

fn describe_boot(boot: Option<&BootOverride>) -> String {
    let Some(boot) = boot else {
        return "none".into();
    };
    let target = match boot.target {
        BootTarget::Pxe => "pxe",
        BootTarget::Disk => "disk",
        BootTarget::Cd => "cd",
        BootTarget::UefiHttp => "uefi-http",
        BootTarget::BiosSetup => "bios",
    };
    let persistence = match boot.persistence {
        BootPersistence::Once => "once",
        BootPersistence::Persistent => "persistent",
    };
    let mut text = format!("{target} {persistence}");
    match boot.mode {
        Some(BootMode::Uefi) => text.push_str(" uefi"),
        Some(BootMode::Legacy) => text.push_str(" legacy"),
        None => {}
    }
    text
}

async fn media(bmc: &Bmc, action: MediaAction, out: &mut impl Write) -> anyhow::Result<()> {
    use rivet_bmc::VirtualMedia;
    match action {
        MediaAction::Insert { url, kind } => {
            bmc.insert_media(&url, kind.into())
                .await
                .context("inserting virtual media")?;
            writeln!(out, "inserted")?;
        }
        MediaAction::Eject { kind } => {
            bmc.eject_media(kind.into())
                .await
                .context("ejecting virtual media")?;
            writeln!(out, "ejected")?;
        }
        MediaAction::Status { json } => {
            let slots = bmc.media_status().await.context("reading virtual media")?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &slots)?;
                writeln!(out)?;
            } else {
                for slot in slots {
                    let kinds: Vec<String> = slot
                        .kinds
                        .iter()
                        .map(|k| format!("{k:?}").to_lowercase())
                        .collect();
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        slot.id,
                        if kinds.is_empty() {
                            "-".into()
                        } else {
                            kinds.join(",")
                        },
                        if slot.inserted { "inserted" } else { "empty" },
                        slot.image.as_deref().unwrap_or("-")
                    )?;
                }
            }
        }
    }
    Ok(())
}

async fn bios(bmc: &Bmc, action: BiosAction, out: &mut impl Write) -> anyhow::Result<()> {
    use rivet_bmc::Bios;
    match action {
        BiosAction::Get { json } => {
            let attributes = bmc
                .bios_attributes()
                .await
                .context("reading BIOS attributes")?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &attributes)?;
                writeln!(out)?;
            } else {
                for (name, value) in attributes {
                    match value {
                        serde_json::Value::String(text) => writeln!(out, "{name}={text}")?,
                        other => writeln!(out, "{name}={other}")?,
                    }
                }
            }
        }
        BiosAction::Set { settings } => {
            let current = bmc
                .bios_attributes()
                .await
                .context("reading BIOS attributes")?;
            // The registry, when the BMC publishes one, says what type each value takes.
            let schema = bmc.bios_schema().await.unwrap_or_default();
            let changes = parse_settings(&settings, &current, &schema)?;
            let applied = bmc
                .apply_bios(&changes)
                .await
                .context("changing BIOS attributes")?;
            match applied {
                rivet_bmc::ApplyTime::Immediate => writeln!(out, "applied")?,
                rivet_bmc::ApplyTime::OnReset => {
                    writeln!(out, "pending: applies at the next reset")?
                }
            }
        }
    }
    Ok(())
}

/// `NAME=VALUE` pairs, each value typed by the attribute registry, else like the
/// attribute's current value (a number stays a number, a boolean a boolean); anything else
/// stays a string, and the driver's validation refuses what does not fit.
fn parse_settings(
    settings: &[String],
    current: &Attributes,
    schema: &[AttributeSchema],
) -> anyhow::Result<Attributes> {
    #[derive(PartialEq)]
    enum Kind {
        Number,
        Boolean,
        Text,
    }
    let mut changes = Attributes::new();
    for setting in settings {
        let Some((name, raw)) = setting.split_once('=') else {
            bail!("`{setting}` is not NAME=VALUE");
        };
        if name.is_empty() {
            bail!("`{setting}` has no attribute name");
        }
        let declared = schema
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.attribute_type)
            .map(|t| match t {
                AttributeType::Integer => Kind::Number,
                AttributeType::Boolean => Kind::Boolean,
                _ => Kind::Text,
            });
        let kind = declared.unwrap_or_else(|| match current.get(name) {
            Some(serde_json::Value::Number(_)) => Kind::Number,
            Some(serde_json::Value::Bool(_)) => Kind::Boolean,
            _ => Kind::Text,
        });
        let value = match kind {
            Kind::Number => raw
                .parse::<i64>()
                .map(serde_json::Value::from)
                .or_else(|_| raw.parse::<f64>().map(serde_json::Value::from))
                .with_context(|| format!("{name} takes a number, not `{raw}`"))?,
            Kind::Boolean => match raw.to_ascii_lowercase().as_str() {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                _ => bail!("{name} takes true or false, not `{raw}`"),
            },
            Kind::Text => serde_json::Value::String(raw.to_owned()),
        };
        changes.insert(name.to_owned(), value);
    }
    Ok(changes)
}

fn print_inventory(
    details: &rivet_model::HardwareDetails,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    if let Some(vendor) = &details.system_vendor {
        writeln!(
            out,
            "system\t{} {} (serial {})",
            text(&vendor.manufacturer),
            text(&vendor.product_name),
            text(&vendor.serial_number)
        )?;
    }
    if let Some(version) = details
        .firmware
        .as_ref()
        .and_then(|f| f.bios.as_ref())
        .and_then(|b| b.version.clone())
    {
        writeln!(out, "bios\t{version}")?;
    }
    if let Some(cpu) = &details.cpu {
        writeln!(
            out,
            "cpu\t{} x {} ({})",
            cpu.count.map_or("-".into(), |c| c.to_string()),
            text(&cpu.model),
            text(&cpu.arch)
        )?;
    }
    if let Some(ram) = details.ram_mebibytes {
        writeln!(out, "memory\t{ram} MiB")?;
    }
    for nic in &details.nics {
        writeln!(
            out,
            "nic\t{}\t{}{}",
            text(&nic.name),
            text(&nic.mac),
            nic.speed_gbps
                .map_or(String::new(), |s| format!("\t{s} Gbps"))
        )?;
    }
    for disk in &details.storage {
        writeln!(
            out,
            "disk\t{}\t{}\t{}",
            text(&disk.name),
            disk.size_bytes.map_or("-".into(), |s| format!("{s} bytes")),
            text(&disk.model)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_the_registry_type_else_the_current_value_type() {
        // The registry wins over the current value's JSON type (sushy stores "true").
        let schema = vec![AttributeSchema {
            name: "Quiet".into(),
            attribute_type: Some(AttributeType::Boolean),
            allowable_values: Vec::new(),
            lower_bound: None,
            upper_bound: None,
            min_length: None,
            max_length: None,
            read_only: false,
            reset_required: false,
            unique: false,
        }];
        let quiet: Attributes =
            serde_json::from_value(serde_json::json!({"Quiet": "true"})).unwrap();
        let changed = parse_settings(&["Quiet=false".into()], &quiet, &schema).unwrap();
        assert_eq!(changed["Quiet"], serde_json::json!(false));

        let current: Attributes = serde_json::from_value(serde_json::json!({
            "ProcCores": 4, "Secure": false, "AssetTag": "rack1"
        }))
        .unwrap();
        let changes = parse_settings(
            &[
                "ProcCores=8".into(),
                "Secure=TRUE".into(),
                "AssetTag=42".into(),
                "New=1".into(),
            ],
            &current,
            &[],
        )
        .unwrap();
        assert_eq!(changes["ProcCores"], serde_json::json!(8));
        assert_eq!(changes["Secure"], serde_json::json!(true));
        assert_eq!(changes["AssetTag"], serde_json::json!("42"));
        assert_eq!(changes["New"], serde_json::json!("1"));
        assert!(parse_settings(&["ProcCores=many".into()], &current, &[]).is_err());
        assert!(parse_settings(&["novalue".into()], &current, &[]).is_err());
        assert!(parse_settings(&["=x".into()], &current, &[]).is_err());
    }

    #[test]
    fn boot_overrides_print_in_one_parseable_line() {
        assert_eq!(describe_boot(None), "none");
        let boot = BootOverride {
            target: BootTarget::UefiHttp,
            persistence: BootPersistence::Persistent,
            mode: Some(BootMode::Uefi),
            http_boot_uri: None,
        };
        assert_eq!(describe_boot(Some(&boot)), "uefi-http persistent uefi");
    }
}
