//! `rivet-agent`: the ramdisk agent's command line.

use std::process::ExitCode;

use clap::Parser;

/// Rivet's ramdisk agent.
#[derive(Debug, Parser)]
#[command(name = "rivet-agent", version)]
struct Cli {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("error: rivet-agent is not implemented yet (planned in issue 6); nothing was done");
    ExitCode::from(3)
}
