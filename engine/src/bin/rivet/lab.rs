//! `rivet lab …`: a lab of emulated bare-metal hosts on this machine.
//!
//! `up` builds a network namespace with a bridge, one QEMU (TCG) machine per host behind
//! its own OpenIPMI `ipmi_sim` BMC, and `rivet serve` with the real drivers on that bridge;
//! it records everything it made in a state file so `down` can remove exactly that.

mod chassis;
mod network;
mod process;
mod redfish;
mod state;
mod up;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use state::LabState;

#[derive(Debug, Args)]
pub(crate) struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Create a lab: namespace, bridge, VMs behind BMC emulators, the engine; enrol the hosts.
    Up(UpArgs),
    /// Remove everything a lab made (processes, namespace, files). Safe to repeat.
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
        /// Keep the lab's directory (disks, logs, serial consoles).
        #[arg(long)]
        keep_files: bool,
    },
    /// Show what a lab runs (every lab without --name).
    Status {
        #[arg(long)]
        name: Option<String>,
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What ipmi_sim runs to start, stop and reset a host's QEMU (not for people).
    #[command(hide = true)]
    ChassisControl {
        /// The host's directory in the lab.
        host_dir: PathBuf,
        /// `get <param>…` or `set <param> <value>…`, as ipmi_sim passes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        request: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// The lab's name; its namespace is `rivet-<name>`.
    #[arg(long, default_value = "lab")]
    name: String,
    /// How many hosts (VMs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=50))]
    hosts: u8,
    /// The BMC emulator in front of each VM.
    #[arg(long, value_enum, default_value_t = BmcKind::Ipmi)]
    bmc: BmcKind,
    /// Where the lab keeps disks, logs and the engine's state (created; must not exist or
    /// be empty). Default: /var/tmp/rivet-lab/<name>.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The agent's boot files (`vmlinuz`, `initramfs.img`); built with
    /// scripts/agent-image.sh when missing and the script is at hand.
    #[arg(long, value_name = "DIR", default_value = "target/agent-image")]
    image_dir: PathBuf,
    /// Each VM's disk size in GiB (sparse qcow2; the agent, like IPA, picks a root disk of
    /// at least 4 GiB when no root-device hints are given).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=64))]
    disk_gib: u8,
    /// Each VM's memory in MiB (the agent runs from RAM).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=16384))]
    memory_mib: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BmcKind {
    /// OpenIPMI's ipmi_sim, its chassis control starting and stopping QEMU.
    Ipmi,
    /// sushy-emulator with libvirt (not built yet).
    Redfish,
}

pub(crate) fn run(args: LabArgs) -> anyhow::Result<()> {
    match args.command {
        LabCommand::Up(up) => up::run(&up),
        LabCommand::Down { name, keep_files } => down(&name, keep_files),
        LabCommand::Status { name, json } => status(name.as_deref(), json),
        LabCommand::ChassisControl { host_dir, request } => chassis::run(&host_dir, &request),
    }
}

fn down(name: &str, keep_files: bool) -> anyhow::Result<()> {
    state::validate_name(name)?;
    process::require_root("rivet lab down")?;
    let Some(lab) = LabState::load(name)? else {
        // Nothing recorded; a namespace of that name may still be a leftover of a crash
        // before the state file was written, which is ours by its name.
        if network::netns_exists(&state::netns_name(name)) {
            network::delete_netns(&state::netns_name(name))?;
            eprintln!("no lab named {name} was recorded; removed its leftover namespace");
        } else {
            eprintln!("no lab named {name} is up; nothing to do");
        }
        return Ok(());
    };
    lab.tear_down(keep_files)
        .with_context(|| format!("taking lab {name} down"))?;
    eprintln!("lab {name} is down");
    Ok(())
}

fn status(name: Option<&str>, json: bool) -> anyhow::Result<()> {
    let labs = match name {
        Some(name) => {
            state::validate_name(name)?;
            let lab =
                LabState::load(name)?.with_context(|| format!("no lab named {name} is up"))?;
            vec![lab]
        }
        None => LabState::load_all()?,
    };
    let mut out = String::new();
    if json {
        let reports: Vec<_> = labs.iter().map(LabState::report).collect();
        out = serde_json::to_string_pretty(&reports)? + "\n";
    } else if labs.is_empty() {
        out.push_str("no lab is up\n");
    }
    if !json {
        out.extend(labs.iter().map(LabState::describe));
    }
    print_all(&out)
}

/// Prints to standard output; a reader that went away (`| head`) is not an error.
fn print_all(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to standard output")
        }
        _ => Ok(()),
    }
}
