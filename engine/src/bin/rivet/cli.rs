//! The command-line grammar.

use clap::{Parser, Subcommand};

use crate::logging::{LogFormat, Verbosity};

#[derive(Debug, Parser)]
#[command(
    name = "rivet",
    version,
    about = "Bare-metal provisioning: BMCs, boot services, image streaming and the host lifecycle",
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Log format on standard error: `text` for people, `json` for machines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "RIVET_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,

    /// More log output (-v debug, -vv trace). `RUST_LOG` overrides both flags.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Less log output (-q errors only, -qq nothing).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    pub(crate) fn verbosity(&self) -> Verbosity {
        Verbosity::from_flags(self.verbose, self.quiet)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Inspect disk images and stream them to disks or files.
    Image(crate::image::ImageArgs),
    /// Talk to a BMC over Redfish or IPMI.
    Bmc(crate::bmc::BmcArgs),
    /// Run the boot services (DHCP, TFTP, HTTP) or print a host's iPXE script.
    Boot(crate::boot::BootArgs),
    /// Run the Rivet daemon: engine, REST API and boot services.
    Serve(crate::serve::ServeArgs),
    /// Manage hosts through a running daemon.
    Host(Box<crate::host::HostArgs>),
    /// Create or remove a lab of emulated hosts on this machine.
    Lab(crate::lab::LabArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verbose_and_quiet_exclude_each_other() {
        let err = Cli::try_parse_from(["rivet", "-v", "-q", "completions", "bash"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
