//! Counters and histograms behind `/metrics`, in the Prometheus text format.
//!
//! Everything is a relaxed atomic: recording costs a few nanoseconds and never blocks the
//! engine's loop. Per-state host counts are computed when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::lifecycle::{OperationalStatus, ProvisioningState, Step};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 900.0, 1800.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0–1); `None` when empty.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, counted from 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(BUCKETS.get(index).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (index, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[index].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Every step kind, in a fixed order for the per-step arrays.
const STEPS: [Step; 13] = [
    Step::ValidateBmc,
    Step::ConfigureAgentBoot,
    Step::PowerOn,
    Step::PowerOffSoft,
    Step::PowerOffHard,
    Step::AwaitAgent,
    Step::InspectInBand,
    Step::InspectOutOfBand,
    Step::Clean,
    Step::Deploy,
    Step::ConfigureDiskBoot,
    Step::AdoptBoot,
    Step::ReleaseBoot,
];

fn step_index(step: Step) -> usize {
    STEPS.iter().position(|&s| s == step).unwrap_or(0)
}

fn step_label(step: Step) -> String {
    serde_json::to_value(step)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The engine's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    transitions: AtomicU64,
    events: AtomicU64,
    step_durations: [Histogram; STEPS.len()],
    step_failures: [AtomicU64; STEPS.len()],
    commits: AtomicU64,
    committed_hosts: AtomicU64,
    commit_durations: Histogram,
    api_requests: AtomicU64,
    api_rejections: AtomicU64,
}

/// Host counts, computed by the engine when scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    pub by_state: BTreeMap<ProvisioningState, usize>,
    pub by_operational_status: BTreeMap<OperationalStatus, usize>,
    pub slots_in_use: usize,
    pub slots_waiting: usize,
}

impl Metrics {
    pub fn record_event(&self, changed: bool) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if changed {
            self.transitions.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_step(&self, step: Step, duration: Duration, ok: bool) {
        let index = step_index(step);
        self.step_durations[index].observe(duration);
        if !ok {
            self.step_failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_commit(&self, duration: Duration, hosts: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_hosts
            .fetch_add(u64::try_from(hosts).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.commit_durations.observe(duration);
    }

    pub fn record_request(&self, rejected: bool) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
        if rejected {
            self.api_rejections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The p99 bound of each step kind's duration, for reports.
    pub fn step_p99(&self) -> Vec<(Step, u64, f64)> {
        STEPS
            .iter()
            .zip(&self.step_durations)
            .filter_map(|(&step, histogram)| {
                histogram
                    .quantile_bound(0.99)
                    .map(|bound| (step, histogram.count(), bound))
            })
            .collect()
    }

    /// The Prometheus exposition of everything, with `summary`'s host counts.
    pub fn render(&self, summary: &Summary) -> String {
        let mut out = String::with_capacity(8192);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        counter(
            &mut out,
            "rivet_events_total",
            "Events applied to hosts.",
            load(&self.events),
        );
        counter(
            &mut out,
            "rivet_transitions_total",
            "Events that changed a host.",
            load(&self.transitions),
        );
        counter(
            &mut out,
            "rivet_commits_total",
            "Store commits (each one fsync'd transaction).",
            load(&self.commits),
        );
        counter(
            &mut out,
            "rivet_committed_hosts_total",
            "Host records written by those commits.",
            load(&self.committed_hosts),
        );
        counter(
            &mut out,
            "rivet_api_requests_total",
            "REST API requests.",
            load(&self.api_requests),
        );
        counter(
            &mut out,
            "rivet_api_rejections_total",
            "REST API requests refused (4xx).",
            load(&self.api_rejections),
        );
        let _ = writeln!(
            out,
            "# HELP rivet_commit_duration_seconds Time to commit a batch durably.\n# TYPE rivet_commit_duration_seconds histogram"
        );
        self.commit_durations
            .render(&mut out, "rivet_commit_duration_seconds", "");
        let _ = writeln!(
            out,
            "# HELP rivet_step_duration_seconds Time each step took.\n# TYPE rivet_step_duration_seconds histogram"
        );
        for (step, histogram) in STEPS.iter().zip(&self.step_durations) {
            if histogram.count() > 0 {
                let labels = format!("step=\"{}\"", step_label(*step));
                histogram.render(&mut out, "rivet_step_duration_seconds", &labels);
            }
        }
        let _ = writeln!(
            out,
            "# HELP rivet_step_failures_total Steps that failed.\n# TYPE rivet_step_failures_total counter"
        );
        for (step, failures) in STEPS.iter().zip(&self.step_failures) {
            let _ = writeln!(
                out,
                "rivet_step_failures_total{{step=\"{}\"}} {}",
                step_label(*step),
                load(failures)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rivet_hosts Hosts by provisioning state.\n# TYPE rivet_hosts gauge"
        );
        for (state, count) in &summary.by_state {
            let _ = writeln!(out, "rivet_hosts{{state=\"{state}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP rivet_hosts_operational Hosts by operational status.\n# TYPE rivet_hosts_operational gauge"
        );
        for (status, count) in &summary.by_operational_status {
            let _ = writeln!(
                out,
                "rivet_hosts_operational{{status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP rivet_provisioning_slots Provisioning slots in use and hosts waiting for one.\n# TYPE rivet_provisioning_slots gauge\nrivet_provisioning_slots{{kind=\"in-use\"}} {}\nrivet_provisioning_slots{{kind=\"waiting\"}} {}",
            summary.slots_in_use, summary.slots_waiting
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_and_estimate_quantiles() {
        let histogram = Histogram::default();
        assert_eq!(histogram.quantile_bound(0.99), None);
        for _ in 0..98 {
            histogram.observe(Duration::from_micros(800));
        }
        histogram.observe(Duration::from_millis(40));
        histogram.observe(Duration::from_secs(4000));
        assert_eq!(histogram.count(), 100);
        assert_eq!(histogram.quantile_bound(0.5), Some(0.001));
        assert_eq!(histogram.quantile_bound(0.99), Some(0.05));
        assert_eq!(histogram.quantile_bound(1.0), Some(f64::INFINITY));
    }

    #[test]
    fn the_exposition_is_prometheus_text() {
        let metrics = Metrics::default();
        metrics.record_step(Step::Deploy, Duration::from_millis(3), true);
        metrics.record_step(Step::Deploy, Duration::from_millis(3), false);
        metrics.record_commit(Duration::from_millis(2), 40);
        let summary = Summary {
            total: 3,
            by_state: [(ProvisioningState::Available, 3)].into(),
            by_operational_status: [(OperationalStatus::Ok, 3)].into(),
            slots_in_use: 1,
            slots_waiting: 0,
        };
        let text = metrics.render(&summary);
        assert!(
            text.contains("rivet_step_duration_seconds_bucket{step=\"deploy\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(text.contains("rivet_step_failures_total{step=\"deploy\"} 1"));
        assert!(text.contains("rivet_committed_hosts_total 40"));
        assert!(text.contains("rivet_hosts{state=\"available\"} 3"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(!name.is_empty());
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
