//! Logging set-up: `tracing` to standard error, as text or JSON.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// How much to log, from the `-v` and `-q` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verbosity {
    Silent,
    Errors,
    Normal,
    Debug,
    Trace,
}

impl Verbosity {
    pub(crate) fn from_flags(verbose: u8, quiet: u8) -> Self {
        match (verbose, quiet) {
            (0, 0) => Self::Normal,
            (0, 1) => Self::Errors,
            (0, _) => Self::Silent,
            (1, _) => Self::Debug,
            _ => Self::Trace,
        }
    }

    /// The filter directive: our crates at the chosen level, dependencies at most at `warn`
    /// so that `-v` shows what Rivet does, not what hyper does.
    fn directive(self) -> String {
        let ours = match self {
            Self::Silent => "off",
            Self::Errors => "error",
            Self::Normal => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        };
        let theirs = match self {
            Self::Silent => "off",
            Self::Errors => "error",
            _ => "warn",
        };
        let crates = [
            "rivet",
            "rivet_engine",
            "rivet_images",
            "rivet_bmc",
            "rivet_pxe",
            "rivet_agent",
        ];
        let mut directive = theirs.to_owned();
        for name in crates {
            directive.push_str(&format!(",{name}={ours}"));
        }
        directive
    }
}

pub(crate) fn init(format: LogFormat, verbosity: Verbosity) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(verbosity.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_levels() {
        assert_eq!(Verbosity::from_flags(0, 0), Verbosity::Normal);
        assert_eq!(Verbosity::from_flags(2, 0), Verbosity::Trace);
        assert_eq!(Verbosity::from_flags(0, 2), Verbosity::Silent);
        assert!(Verbosity::Debug.directive().contains("rivet_images=debug"));
        assert!(Verbosity::Debug.directive().starts_with("warn,"));
    }
}
