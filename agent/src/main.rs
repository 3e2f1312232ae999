//! `rivet-agent`: the ramdisk agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rivet_agent::inventory::Inventory;
use rivet_agent::sysfs::SysRoot;

/// Rivet's ramdisk agent.
#[derive(Debug, Parser)]
#[command(name = "rivet-agent", version)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inventory { json, record, root } => {
            // A captured tree has no live interfaces; its addresses are not this machine's.
            let addresses = match root {
                Some(_) => Vec::new(),
                None => rivet_agent::inventory::live_addresses(),
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
            Ok(())
        }
    }
}
