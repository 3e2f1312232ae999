//! `rivet`: the command line for Rivet — image tools, BMC control, boot services, the
//! daemon, its client and the lab.

mod bmc;
mod boot;
mod cli;
mod exit;
mod host;
mod image;
mod lab;
mod logging;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbosity());
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Image(args) => image::run(args),
        Command::Bmc(args) => bmc::run(args),
        Command::Boot(args) => boot::run(args),
        Command::Serve(args) => serve::run(&args),
        Command::Host(args) => host::run(*args),
        Command::Lab(args) => lab::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rivet", &mut std::io::stdout());
            Ok(())
        }
    }
}
