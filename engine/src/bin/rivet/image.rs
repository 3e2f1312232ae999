//! `rivet image`: inspect images and stream them to disks or files.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rivet_images::{
    Checksum, ChecksumAlgorithm, DeclaredFormat, HttpOptions, ImageError, ImageSource, Inspection,
    Progress, WriteOptions, WriteReport, ZeroPolicy,
};

#[derive(Debug, Args)]
pub(crate) struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Show an image's format, sizes, compression and safety verdict (exit 5 if unsafe).
    Inspect {
        /// An http(s):// URL, a file:// URL or a path.
        source: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Stream an image to a block device or a file, verifying it inline. Exit 0 only when
    /// it was written and verified; 4 on a checksum mismatch; 5 if the image is refused.
    Write(WriteArgs),
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// An http(s):// URL, a file:// URL or a path.
    source: String,
    /// A block device or a regular file (created, or truncated and rewritten).
    target: PathBuf,
    /// The format the image must have; its content is always checked.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Expected digest in hex, or the URL/path of a checksum file (GNU or BSD format)
    /// listing the image by file name.
    #[arg(long)]
    checksum: Option<String>,
    /// Digest algorithm; `auto` picks it from the digest's length (32/64/128 hex digits).
    #[arg(long, value_enum, default_value_t = ChecksumTypeArg::Auto)]
    checksum_type: ChecksumTypeArg,
    /// How to show progress: a bar on standard error, JSON lines on standard output, or
    /// nothing.
    #[arg(long, value_enum, default_value_t = ProgressArg::Bar)]
    progress: ProgressArg,
    /// Write with O_DIRECT (bypass the page cache).
    #[arg(long)]
    direct_io: bool,
    /// The block device is known to read zeros already: skip zero ranges instead of zeroing
    /// them (files always keep zero ranges as holes).
    #[arg(long)]
    assume_zeroed: bool,
    /// Memory a forward-only qcow2 stream may park (e.g. 256M, 1G).
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    parking_limit: u64,
    /// For file targets: the largest image accepted (e.g. 20G). Block devices are limited
    /// by their size.
    #[arg(long, value_parser = parse_size)]
    size_limit: Option<u64>,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, Args)]
struct HttpArgs {
    /// An extra trusted CA certificate (PEM) for https sources; repeatable.
    #[arg(long = "ca-cert", value_name = "PEM")]
    ca_certs: Vec<PathBuf>,
    /// Retries after a failed request or an interrupted download.
    #[arg(long, default_value_t = 5)]
    retries: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChecksumTypeArg {
    Auto,
    Md5,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressArg {
    Bar,
    Json,
    None,
}

/// `256M`, `1G`, `4096`, `2KiB`… (binary multiples).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256M)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl HttpArgs {
    fn options(&self) -> anyhow::Result<HttpOptions> {
        let extra_root_certificates = self
            .ca_certs
            .iter()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("reading CA certificate {}", path.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(HttpOptions {
            retries: self.retries,
            extra_root_certificates,
            ..HttpOptions::default()
        })
    }
}

pub(crate) fn run(args: ImageArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match args.command {
            ImageCommand::Inspect { source, json, http } => inspect(&source, json, &http).await,
            ImageCommand::Write(args) => write(args).await,
        }
    })
}

async fn inspect(source: &str, json: bool, http: &HttpArgs) -> anyhow::Result<()> {
    let source = ImageSource::parse(source)?;
    let inspection = rivet_images::inspect(&source, &http.options()?)
        .await
        .with_context(|| format!("inspecting {source}"))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &inspection)?;
        writeln!(out)?;
    } else {
        print_inspection(&mut out, &source, &inspection)?;
    }
    match inspection.refusal {
        Some(refusal) => Err(ImageError::Refused(refusal).into()),
        None => Ok(()),
    }
}

fn print_inspection(
    out: &mut impl Write,
    source: &ImageSource,
    i: &Inspection,
) -> std::io::Result<()> {
    writeln!(out, "source:            {source}")?;
    if let Some(size) = i.source_size {
        writeln!(out, "size:              {}", human(size))?;
    }
    writeln!(
        out,
        "random access:     {}",
        if i.random_access {
            "yes"
        } else {
            "no (forward-only)"
        }
    )?;
    writeln!(out, "compression:       {}", i.compression)?;
    writeln!(out, "format:            {}", i.format)?;
    if let Some(table) = i.partition_table {
        writeln!(out, "partition table:   {table:?}")?;
    }
    if let Some(size) = i.virtual_size {
        writeln!(out, "virtual size:      {}", human(size))?;
    }
    if let Some(q) = &i.qcow2 {
        writeln!(out, "qcow2 version:     {}", q.version)?;
        writeln!(out, "cluster size:      {}", human(q.cluster_size))?;
        writeln!(out, "cluster codec:     {}", q.cluster_compression)?;
        writeln!(out, "extended L2:       {}", q.extended_l2)?;
        if q.snapshots > 0 {
            writeln!(out, "snapshots:         {} (ignored)", q.snapshots)?;
        }
        if let Some(map) = &q.map {
            writeln!(out, "data:              {}", human(map.data_bytes))?;
            writeln!(
                out,
                "compressed:        {} in {} clusters",
                human(map.compressed_bytes),
                map.compressed_clusters
            )?;
            writeln!(out, "zero/unallocated:  {}", human(map.zero_bytes))?;
        }
    }
    writeln!(
        out,
        "tables checked:    {}",
        match (&i.qcow2, i.tables_checked) {
            (None, _) => "n/a",
            (Some(_), true) => "yes",
            (Some(_), false) => "no (they are checked while writing)",
        }
    )?;
    match &i.reason {
        None => writeln!(out, "verdict:           safe to write"),
        Some(reason) => writeln!(out, "verdict:           REFUSED: {reason}"),
    }
}

async fn write(args: WriteArgs) -> anyhow::Result<()> {
    let source = ImageSource::parse(&args.source)?;
    let algorithm = match args.checksum_type {
        ChecksumTypeArg::Auto => None,
        ChecksumTypeArg::Md5 => Some(ChecksumAlgorithm::Md5),
        ChecksumTypeArg::Sha256 => Some(ChecksumAlgorithm::Sha256),
        ChecksumTypeArg::Sha512 => Some(ChecksumAlgorithm::Sha512),
    };
    let checksum = args
        .checksum
        .as_deref()
        .map(|value| Checksum::parse(value, algorithm))
        .transpose()?;
    if checksum.is_none() {
        tracing::warn!("no --checksum given: the image will be written but not verified");
    }
    let (progress, bar) = progress_reporter(args.progress);
    let options = WriteOptions {
        format: match args.format {
            FormatArg::Auto => DeclaredFormat::Auto,
            FormatArg::Raw => DeclaredFormat::Raw,
            FormatArg::Qcow2 => DeclaredFormat::Qcow2,
        },
        checksum,
        zero_policy: if args.assume_zeroed {
            ZeroPolicy::AssumeZeroed
        } else {
            ZeroPolicy::WriteZeroes
        },
        direct_io: args.direct_io,
        parking_limit: args.parking_limit,
        size_limit: args.size_limit,
        http: args.http.options()?,
        progress,
    };
    let result = rivet_images::write_image(&source, &args.target, &options).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report =
        result.with_context(|| format!("writing {source} to {}", args.target.display()))?;
    let mut out = std::io::stdout().lock();
    if args.progress == ProgressArg::Json {
        let line = serde_json::json!({ "event": "done", "report": report });
        writeln!(out, "{line}")?;
    } else {
        print_report(&mut out, &report)?;
    }
    Ok(())
}

fn progress_reporter(
    kind: ProgressArg,
) -> (Option<rivet_images::ProgressCallback>, Option<ProgressBar>) {
    match kind {
        ProgressArg::None => (None, None),
        ProgressArg::Json => {
            let callback: rivet_images::ProgressCallback = Arc::new(|progress: &Progress| {
                let line = serde_json::json!({ "event": "progress", "progress": progress });
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            });
            (Some(callback), None)
        }
        ProgressArg::Bar => {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let handle = bar.clone();
            let callback: rivet_images::ProgressCallback = Arc::new(move |progress: &Progress| {
                if let Some(total) = progress.total_bytes {
                    handle.set_length(total);
                }
                handle.set_position(progress.bytes_read);
                handle.set_message(progress.phase.to_string());
            });
            (Some(callback), Some(bar))
        }
    }
}

fn print_report(out: &mut impl Write, report: &WriteReport) -> std::io::Result<()> {
    let seconds = report.elapsed.as_secs_f64();
    writeln!(
        out,
        "wrote a {}{} image ({} virtual) in {seconds:.2} s",
        report.format,
        match report.compression {
            rivet_images::Container::None => String::new(),
            other => format!(" (inside {other})"),
        },
        human(report.virtual_size)
    )?;
    writeln!(
        out,
        "  read {} ({}/s), wrote {} of data, zeroed {}, skipped {} of zeros ({})",
        human(report.bytes_read),
        human((report.bytes_read as f64 / seconds.max(1e-9)) as u64),
        human(report.bytes_written),
        human(report.bytes_zeroed),
        human(report.bytes_skipped),
        report.mode
    )?;
    match &report.digest {
        Some(digest) => writeln!(out, "  verified {} {}", digest.algorithm, digest.hex),
        None => writeln!(out, "  NOT verified (no --checksum given)"),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
