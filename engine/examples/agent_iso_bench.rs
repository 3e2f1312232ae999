//! How long the engine takes to make one host's agent ISO from the template, and how much
//! memory each costs: `agent_iso_bench <template.iso> <hosts> <out.json>`.
//!
//! Each iteration renders a host's parameters into the slot (what `agent_iso` does per
//! host) and keeps the result, as the engine keeps one per host; the report gives the
//! per-ISO time and the bytes held per host beyond the shared template. The peer side of
//! the comparison (xorriso rewriting the ISO per host) is timed by
//! `scripts/bench/agent_iso.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bytes::Bytes;
use rivet_engine::drivers::boot::agent_iso::{AgentIsoTemplate, SLOT_LEN};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, template, hosts, out] = args.as_slice() else {
        eprintln!("usage: agent_iso_bench <template.iso> <hosts> <out.json>");
        std::process::exit(2);
    };
    let hosts: usize = hosts.parse().expect("a host count");
    let started = Instant::now();
    let template = AgentIsoTemplate::parse(Bytes::from(std::fs::read(template).unwrap()))
        .expect("an ISO with the rivet/cmdline slot");
    let load_ms = started.elapsed().as_secs_f64() * 1e3;

    let mut isos = Vec::with_capacity(hosts);
    let mut times = Vec::with_capacity(hosts);
    let all = Instant::now();
    for host in 0..hosts {
        let params = format!(
            "rivet.url=https://10.77.0.1:8443 rivet.ca={} rivet.token={:043} rivet.host={host:032x}",
            "AB:".repeat(31) + "AB",
            host
        );
        let one = Instant::now();
        isos.push(template.render(&params).unwrap());
        times.push(one.elapsed().as_secs_f64() * 1e6);
    }
    let total_s = all.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let percentile = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    assert!(isos.iter().all(|iso| iso.len() == template.len()));
    let report = serde_json::json!({
        "template_bytes": template.len(),
        "template_load_ms": load_ms,
        "hosts": hosts,
        "isos_per_second": hosts as f64 / total_s,
        "render_us_p50": percentile(0.5),
        "render_us_p99": percentile(0.99),
        "bytes_per_host": SLOT_LEN,
    });
    std::fs::write(out, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!("{report}");
}
