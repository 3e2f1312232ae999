//! `rivet-agent`: the ramdisk agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::reboot::RebootMode;
use rivet_agent::channel::{self, ChannelParams, Client, ClientConfig};
use rivet_agent::clean::{self, CleanMode, CleanOptions, CleanTarget};
use rivet_agent::configdrive::{self, ConfigDrive};
use rivet_agent::console::{self, Progress};
use rivet_agent::deploy::{self, ChosenDisk, DeployReport, DeployRequest};
use rivet_agent::disk::{Access, Disk};
use rivet_agent::hints::HintSet;
use rivet_agent::inventory::{Inventory, live_addresses};
use rivet_agent::job::{self, After};
use rivet_agent::machine::Machine;
use rivet_agent::run;
use rivet_agent::sysfs::SysRoot;
use rivet_agent::{power, power_button, shutdown};

/// Rivet's ramdisk agent: inventory, disk cleaning, image deployment.
#[derive(Debug, Parser)]
#[command(name = "rivet-agent", version)]
struct Cli {
    /// More logging (-v debug, -vv trace); logs go to standard error.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the hardware inventory.
    Inventory {
        /// Print JSON (the BareMetalHost HardwareDetails shape plus IPA's extra fields).
        #[arg(long)]
        json: bool,
        /// Copy every sysfs/procfs file the inventory reads into this directory.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        /// Read a tree captured with --record instead of this machine.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Clean disks: remove partition tables and signatures, or erase every byte.
    Clean {
        #[arg(long, value_enum, default_value = "metadata")]
        mode: Mode,
        /// A disk (device or image file) to clean; repeat for several.
        #[arg(long = "disk", value_name = "DEVICE", required_unless_present = "all")]
        disks: Vec<PathBuf>,
        /// Every disk the inventory finds (virtual media excepted).
        #[arg(long, conflicts_with = "disks")]
        all: bool,
        /// Report read-only disks as skipped rather than failing on them.
        #[arg(long)]
        skip_read_only: bool,
        /// Clean disks holding GPFS, VMFS or GFS2 volumes too.
        #[arg(long)]
        force: bool,
        /// Disks cleaned at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a config drive from a directory (or Ironic's JSON form) into a file, or write it
    /// into a disk's `config-2` partition (created at the end of the disk if needed).
    ConfigDrive {
        /// A directory with `openstack/…` or the loose files (`meta_data.json`, `user_data`,
        /// `network_data.json` …), or a JSON file `{"meta_data": …, "user_data": …}`.
        #[arg(long, value_name = "PATH")]
        source: PathBuf,
        /// Write the file system image here.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "disk",
            conflicts_with = "disk"
        )]
        output: Option<PathBuf>,
        /// With --output: build VFAT with this sector size instead of ISO 9660.
        #[arg(long, value_name = "BYTES", requires = "output")]
        vfat_sector_size: Option<u32>,
        /// Put it on this disk (device or image file), fixing a misplaced GPT backup first.
        #[arg(long, value_name = "DEVICE")]
        disk: Option<PathBuf>,
    },
    /// Write an image to the root disk (the one the root-device hints choose, or --disk),
    /// then fix the GPT backup and add the config drive.
    Deploy {
        /// The image: an http(s) URL, a file:// URL or a path; raw or qcow2, optionally gzip-
        /// or zstd-compressed.
        #[arg(value_name = "IMAGE")]
        image: String,
        /// A hex digest of the image as published, or the URL or path of a checksum file
        /// (`SHA256SUMS` style) listing it.
        #[arg(long)]
        checksum: Option<String>,
        /// md5, sha256 or sha512 (default: from the digest's length).
        #[arg(long, value_name = "ALGORITHM", requires = "checksum")]
        checksum_type: Option<String>,
        /// raw, qcow2 or auto (the content is checked either way).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// Root-device hints as JSON (BareMetalHost `rootDeviceHints` or Ironic's
        /// `root_device` with its operators).
        #[arg(long, value_name = "JSON", conflicts_with = "disk")]
        root_device_hints: Option<String>,
        /// A directory (or Ironic's JSON form in a file) to write as the config drive.
        #[arg(long, value_name = "DIR|JSON")]
        config_drive: Option<PathBuf>,
        /// Write to this disk (device or image file) instead of choosing one by hints.
        #[arg(long, value_name = "DEVICE")]
        disk: Option<PathBuf>,
        /// Clean the disk first; an erase that leaves zeroes lets zero ranges be skipped.
        #[arg(long, value_enum, value_name = "MODE")]
        clean: Option<Mode>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The ramdisk's main program: with `rivet.url=` on the kernel command line, take the
    /// engine's commands over the agent channel until it releases this agent; otherwise run
    /// the job the command line names (`rivet.job=…`) and print the result between markers.
    /// Then power off or reboot as `rivet.after=` says.
    Run,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Metadata,
    Erase,
}

impl From<Mode> for CleanMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Metadata => CleanMode::Metadata,
            Mode::Erase => CleanMode::Erase,
        }
    }
}

fn print_deploy(report: &DeployReport) {
    let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
    println!(
        "{} ({}): {} {} image, {:.1} MiB virtual, {:.1} MiB read, {:.1} MiB written in {:.2} s{}",
        report.disk.path.display(),
        report.disk.reason,
        report.format,
        report.compression,
        mib(report.virtual_size),
        mib(report.bytes_read),
        mib(report.bytes_written),
        report.write_duration.as_secs_f64(),
        match &report.digest {
            Some(digest) => format!(", {} verified", digest.algorithm),
            None => ", no checksum given".to_owned(),
        },
    );
    if report.gpt_backup_moved {
        println!("GPT backup moved to the end of the disk");
    }
    if let Some(drive) = &report.config_drive {
        println!(
            "config drive in partition {} ({:?}, {:.0} MiB)",
            drive.partition,
            drive.filesystem,
            mib(drive.size)
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,rivet_agent={level}"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run => run_job(),
        Command::Deploy {
            image,
            checksum,
            checksum_type,
            format,
            root_device_hints,
            config_drive,
            disk,
            clean,
            json,
        } => {
            let mut request = DeployRequest::parse(
                &image,
                checksum.as_deref(),
                checksum_type.as_deref(),
                format.as_deref(),
            )?;
            request.config_drive = config_drive
                .as_deref()
                .map(ConfigDrive::load)
                .transpose()
                .context("the config drive")?;
            request.clean = clean.map(|mode| CleanOptions {
                mode: mode.into(),
                ..CleanOptions::default()
            });
            let target = match disk {
                Some(path) => {
                    let inventory = Inventory::collect_live();
                    let known = path.to_str().and_then(|p| inventory.disk(p));
                    ChosenDisk::named(&path, known)
                }
                None => {
                    let hints = match root_device_hints {
                        Some(text) => HintSet::from_json(
                            &serde_json::from_str(&text)
                                .context("--root-device-hints is not JSON")?,
                        )?,
                        None => HintSet::default(),
                    };
                    ChosenDisk::select(&Inventory::collect_live().storage, &hints)?
                }
            };
            let progress = console::image_progress(target.path.clone());
            match deploy::deploy(&target, &request, Some(progress)) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print_deploy(&report);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&serde_json::json!({
                                "disk": target,
                                "error": err.chain(),
                                "checksumMismatch": err.is_verification_failure(),
                                "diskWiped": err.disk_wiped(),
                            }))?
                        );
                    }
                    eprintln!("error: {}", err.chain());
                    // The same codes as `rivet image write`: 4 the checksum did not match,
                    // 5 the image was refused.
                    Ok(match &err {
                        e if e.is_verification_failure() => ExitCode::from(4),
                        deploy::DeployError::Image { source, .. } if source.is_refusal() => {
                            ExitCode::from(5)
                        }
                        _ => ExitCode::FAILURE,
                    })
                }
            }
        }
        Command::ConfigDrive {
            source,
            output,
            vfat_sector_size,
            disk,
        } => config_drive(&source, output, vfat_sector_size, disk),
        Command::Inventory { json, record, root } => {
            // A captured tree has no live interfaces; this machine's addresses are not its.
            let addresses = match root {
                Some(_) => Vec::new(),
                None => live_addresses(),
            };
            let mut sys = root.map_or_else(SysRoot::live, SysRoot::at);
            if let Some(dir) = record {
                sys = sys.recording_into(dir);
            }
            let inventory = Inventory::collect(&sys, &addresses);
            if json {
                let text =
                    serde_json::to_string_pretty(&inventory).context("serialise the inventory")?;
                println!("{text}");
            } else {
                print!("{inventory}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Clean {
            mode,
            disks,
            all,
            skip_read_only,
            force,
            parallel,
            json,
        } => {
            let inventory = Inventory::collect_live();
            let targets: Vec<CleanTarget> = if all {
                inventory
                    .storage
                    .iter()
                    .map(CleanTarget::from_inventory)
                    .collect()
            } else {
                disks
                    .iter()
                    .map(|path| match path.to_str().and_then(|p| inventory.disk(p)) {
                        Some(disk) => CleanTarget::from_inventory(disk),
                        None => CleanTarget::from_path(path),
                    })
                    .collect()
            };
            if targets.is_empty() {
                bail!("no disks to clean: the inventory found none");
            }
            let options = CleanOptions {
                mode: mode.into(),
                skip_read_only,
                force,
                parallel,
            };
            let progress = Progress::new("erasing");
            let report = clean::clean(&targets, options, &|disk, done, total| {
                progress.update(disk, done, total)
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for disk in &report.disks {
                    println!(
                        "{:<28} {:<10} {:<28} {:>7} ms  {}",
                        disk.disk,
                        format!("{:?}", disk.result).to_lowercase(),
                        disk.method,
                        disk.duration_ms,
                        disk.error.as_deref().unwrap_or_else(|| disk
                            .notes
                            .last()
                            .map(String::as_str)
                            .unwrap_or_default()),
                    );
                }
            }
            Ok(if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn run_job() -> anyhow::Result<ExitCode> {
    let sys = SysRoot::live();
    let line = run::kernel_command_line(&sys);
    let addresses = live_addresses();
    let inventory = Inventory::collect(&sys, &addresses);
    watch_power_button(&sys);
    println!("{}", run::ready_line(&inventory));
    let succeeded = if line.has(channel::params::PARAM_URL) {
        serve_engine(&line, &inventory)
    } else {
        let result = run::execute(&line, &sys, &addresses);
        console::print_result(&result).context("print the result")?;
        result.succeeded
    };
    nix::unistd::sync();
    // Exactly when /init starts its debug shell once the agent exits.
    let debug = line.has("rivet.debug") && matches!(line.get("rivet.debug"), None | Some("1"));
    after_job(job::after_action(&line).unwrap_or(After::PowerOff), debug);
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Takes the engine's commands over the agent channel until the engine releases this agent.
/// After a deploy the engine itself switches the machine to its disk and power-cycles it, so
/// the agent only returns on `release` (delete, detach) — or when it cannot start at all.
fn serve_engine(line: &rivet_agent::cmdline::KernelCommandLine, inventory: &Inventory) -> bool {
    let params = match ChannelParams::from_lookup(|name| line.get(name)) {
        Ok(params) => params,
        Err(err) => {
            eprintln!("rivet-agent: cannot reach the engine: {err}");
            return false;
        }
    };
    let macs = Machine::macs(inventory);
    println!(
        "rivet-agent: connecting to the engine at {} as [{}]",
        params.url,
        macs.join(", ")
    );
    let client = match Client::new(ClientConfig::new(params, macs)) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("rivet-agent: cannot set up TLS to the engine: {err}");
            return false;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rivet-agent: cannot start the runtime: {err}");
            return false;
        }
    };
    runtime.block_on(client.run(Arc::new(Machine::live())));
    println!("rivet-agent: the engine is done with this agent");
    true
}

/// Powers off or reboots as `rivet.after=` says — only where that belongs: the agent's
/// ramdisk. Anywhere else (someone trying `run` on a workstation) the machine is left alone.
/// Staying up in the ramdisk keeps the agent running so the power button still works,
/// unless `rivet.debug` wants `/init`'s shell, which starts when the agent exits.
fn after_job(after: After, debug: bool) {
    if !power::in_ramdisk() {
        eprintln!("rivet-agent: not booted as the agent ramdisk; leaving the power alone");
        return;
    }
    let (mode, doing) = match after {
        After::PowerOff => (RebootMode::RB_POWER_OFF, "powering off"),
        After::Reboot => (RebootMode::RB_AUTOBOOT, "rebooting"),
        After::Stay if debug => return,
        After::Stay => {
            println!("rivet-agent: staying up (rivet.after=stay); the power button powers off");
            loop {
                std::thread::park();
            }
        }
    };
    println!("rivet-agent: {doing}");
    let err = power::reboot(mode);
    eprintln!("rivet-agent: could not {after:?}: {err}");
}

/// How long a power-off waits for a verified image to be committed (2 MiB, the GPT fix-up,
/// the config drive) before it cuts the power anyway.
const FINISHING_LIMIT: Duration = Duration::from_secs(30);
/// How long wiping the ends of interrupted disks may take (a disk in the middle of an
/// NVMe format may not answer at all).
const WIPE_LIMIT: Duration = Duration::from_secs(15);

/// In the ramdisk, acts on the ACPI power button — a BMC's soft power-off — whatever the
/// agent is doing: see [`power_off_by_button`].
fn watch_power_button(sys: &SysRoot) {
    if !power::in_ramdisk() {
        return;
    }
    let buttons = power_button::find_power_buttons(sys);
    if buttons.is_empty() {
        eprintln!("rivet-agent: no power button found; a soft power-off will not be seen");
        return;
    }
    let pressed = Arc::new(std::sync::Once::new());
    let on_press: power_button::OnPress = Arc::new(move |button: &power_button::PowerButton| {
        let event = button.event.clone();
        pressed.call_once(|| power_off_by_button(&event));
    });
    for (button, err) in power_button::watch(&buttons, &on_press) {
        eprintln!(
            "rivet-agent: cannot read the power button {}: {err}",
            button.device.display()
        );
    }
}

/// The power button was pressed: no disk work starts or finishes from now on; a verified
/// image being committed is let finish; every disk being overwritten (an image streaming
/// in, a clean) has its first and last MiB zeroed so it holds no partition table and
/// cannot boot; then file systems are synced and the machine powers off. Nothing is
/// reported to the engine, which sees the agent disconnect.
fn power_off_by_button(event: &str) {
    println!("rivet-agent: power button pressed ({event}); stopping");
    let plan = shutdown::coordinator().power_off(FINISHING_LIMIT);
    for disk in &plan.unfinished {
        println!(
            "rivet-agent: {} did not finish committing its image in time; powering off anyway",
            disk.display()
        );
    }
    if !plan.wipe.is_empty() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for disk in plan.wipe {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let result = shutdown::zero_ends(&disk);
                let _ = done_tx.send((disk, result));
            });
        }
        drop(done_tx);
        let deadline = Instant::now() + WIPE_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok((disk, Ok(()))) => println!(
                    "rivet-agent: {} was being written; its partition tables are wiped",
                    disk.display()
                ),
                Ok((disk, Err(err))) => println!(
                    "rivet-agent: {} was being written and could not be wiped: {err}",
                    disk.display()
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    println!("rivet-agent: wiping did not finish in time; powering off anyway");
                    break;
                }
            }
        }
    }
    println!("rivet-agent: powering off");
    let err = power::reboot(RebootMode::RB_POWER_OFF);
    eprintln!("rivet-agent: could not power off: {err}");
}

fn config_drive(
    source: &std::path::Path,
    output: Option<PathBuf>,
    vfat_sector_size: Option<u32>,
    disk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let drive = ConfigDrive::load(source)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if let Some(output) = output {
        let bytes = match vfat_sector_size {
            Some(sector) => drive.vfat(configdrive::PARTITION_BYTES, sector, now)?,
            None => drive.iso9660(now),
        };
        std::fs::write(&output, bytes).with_context(|| format!("write {}", output.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = disk {
        let disk = Disk::open(&path, Access::ReadWrite)?;
        let moved = configdrive::fix_gpt_backup(&disk)?;
        let placement = configdrive::write_to_disk(&disk, &drive, now)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "disk": path,
                "gptBackupMoved": moved,
                "configDrive": placement,
            }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}
