//! What the agent shows on the console: progress bars during long work, and results as JSON
//! between markers that a test or a serial-console reader can find among kernel messages.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// Printed on the line before a result.
pub const RESULT_BEGIN: &str = "===== RIVET-AGENT RESULT BEGIN =====";
/// Printed on the line after a result.
pub const RESULT_END: &str = "===== RIVET-AGENT RESULT END =====";
/// Printed when `rivet-agent run` starts, before any job.
pub const READY: &str = "rivet-agent ready";

/// Prints `value` as one line of JSON between the result markers, in a single write so that
/// nothing else on the console lands inside it.
pub fn print_result(value: &impl Serialize) -> std::io::Result<()> {
    let json = serde_json::to_string(value).map_err(std::io::Error::other)?;
    let text = format!("\n{RESULT_BEGIN}\n{json}\n{RESULT_END}\n");
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Extracts every result printed by [`print_result`] from console output (for tests and
/// tools that read a serial log).
pub fn results_in(console: &str) -> Vec<serde_json::Value> {
    let mut results = Vec::new();
    let mut rest = console;
    while let Some(begin) = rest.find(RESULT_BEGIN) {
        let after = &rest[begin + RESULT_BEGIN.len()..];
        let Some(end) = after.find(RESULT_END) else {
            break;
        };
        let body: String = after[..end]
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .collect();
        if let Ok(value) = serde_json::from_str(body.trim()) {
            results.push(value);
        }
        rest = &after[end + RESULT_END.len()..];
    }
    results
}

/// One progress bar per item (disk, image), drawn on standard error; invisible when it is
/// not a terminal.
#[derive(Debug)]
pub struct Progress {
    bars: MultiProgress,
    by_item: Mutex<HashMap<PathBuf, ProgressBar>>,
    verb: &'static str,
}

impl Progress {
    pub fn new(verb: &'static str) -> Self {
        Self {
            bars: MultiProgress::new(),
            by_item: Mutex::new(HashMap::new()),
            verb,
        }
    }

    /// Updates (creating on first use) the bar of `item`.
    pub fn update(&self, item: &Path, done: u64, total: u64) {
        let Ok(mut bars) = self.by_item.lock() else {
            return;
        };
        let bar = bars.entry(item.to_owned()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(total));
            let template = format!(
                "{{prefix}} {} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}",
                self.verb
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(item.display().to_string());
            bar
        });
        bar.set_length(total);
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    }
}

/// A progress callback for the image writer: one bar for `item`, advancing with the bytes of
/// the image read (the published size is not always known; the bar then runs just ahead).
pub fn image_progress(item: PathBuf) -> rivet_images::ProgressCallback {
    let bars = Progress::new("writing");
    Arc::new(move |update: &rivet_images::Progress| {
        let total = update.total_bytes.unwrap_or(update.bytes_read + 1);
        bars.update(&item, update.bytes_read, total);
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_results_among_kernel_noise() {
        let console = format!(
            "[    1.0] booting\n{RESULT_BEGIN}\r\n{{\"a\":1}}\r\n{RESULT_END}\n[ 2.0] noise\n\
             {RESULT_BEGIN}\n{{\"b\":\n2}}\n{RESULT_END}\n{RESULT_BEGIN}\n{{\"truncated\""
        );
        let results = results_in(&console);
        assert_eq!(results.len(), 2);
        assert_eq!(results[0]["a"], 1);
        assert_eq!(results[1]["b"], 2);
    }
}
