//! Polls the power state of many BMCs over IPMI for a fixed time: the Rivet side of
//! `scripts/bench/bmc.sh`.
//!
//! ```text
//! ipmi_poll [--seconds S] [--user U] [--password-file F] [--interval-ms N] [--suites 17,3]
//!           HOST:PORT...
//! ```
//!
//! Every BMC gets its own session, opened once, and a task that asks for the power state in
//! a loop (spaced by `--interval-ms`, default 0). Prints one JSON object with the totals.
//! The password is read from a file (or `IPMI_PASSWORD`) so it never appears in `ps`.

use std::time::{Duration, Instant};

use rivet_bmc::ipmi::{IpmiOptions, IpmiProvider, IpmiTarget};
use rivet_bmc::{Credentials, Power};

#[derive(Debug)]
struct Args {
    seconds: f64,
    user: String,
    password: String,
    interval: Duration,
    suites: Vec<u8>,
    targets: Vec<(String, u16)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 10.0,
        user: "admin".into(),
        password: std::env::var("IPMI_PASSWORD").unwrap_or_default(),
        interval: Duration::ZERO,
        suites: vec![17, 3],
        targets: Vec::new(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--user" => args.user = value()?,
            "--password-file" => {
                let path = value()?;
                args.password = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{path}: {e}"))?
                    .trim_end_matches('\n')
                    .to_owned();
            }
            "--interval-ms" => {
                args.interval =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("{e}"))?);
            }
            "--suites" => {
                args.suites = value()?
                    .split(',')
                    .map(|id| id.parse().map_err(|e| format!("suite {id}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            target => {
                let (host, port) = target
                    .rsplit_once(':')
                    .ok_or(format!("{target}: expected HOST:PORT"))?;
                let port = port.parse().map_err(|e| format!("{target}: {e}"))?;
                args.targets.push((host.to_owned(), port));
            }
        }
    }
    if args.targets.is_empty() {
        return Err("no BMC given".into());
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("ipmi_poll: {err}");
            std::process::exit(2);
        }
    };
    let options = IpmiOptions {
        min_command_interval: args.interval,
        cipher_suites: args.suites.clone(),
        ..IpmiOptions::default()
    };
    let started = Instant::now();
    let logins: Vec<_> = args
        .targets
        .iter()
        .map(|(host, port)| {
            let target = IpmiTarget {
                port: *port,
                ..IpmiTarget::new(host.clone())
            };
            let credentials = Credentials::new(args.user.clone(), args.password.clone());
            tokio::spawn(IpmiProvider::connect(target, credentials, options.clone()))
        })
        .collect();
    let mut providers = Vec::new();
    for (login, (host, port)) in logins.into_iter().zip(&args.targets) {
        match login.await {
            Ok(Ok(provider)) => providers.push(provider),
            Ok(Err(err)) => fail(&format!("{host}:{port}: {err}")),
            Err(err) => fail(&format!("{host}:{port}: the login task failed: {err}")),
        }
    }
    let login_seconds = started.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let polls = providers.into_iter().map(|provider| {
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match provider.power_state().await {
                    Ok(_) => ok += 1,
                    Err(err) => {
                        failed += 1;
                        eprintln!("ipmi_poll: {}: {err}", provider.target().host);
                    }
                }
            }
            (ok, failed, provider)
        })
    });
    let poll_started = Instant::now();
    let (mut ok, mut failed, mut done) = (0u64, 0u64, Vec::new());
    for handle in polls.collect::<Vec<_>>() {
        match handle.await {
            Ok((o, f, provider)) => {
                ok += o;
                failed += f;
                done.push(provider);
            }
            Err(err) => fail(&format!("a polling task failed: {err}")),
        }
    }
    let seconds = poll_started.elapsed().as_secs_f64();
    for provider in done {
        provider.close().await;
    }
    println!(
        "{{\"bmcs\": {}, \"login_seconds\": {login_seconds:.3}, \"seconds\": {seconds:.3}, \"ok\": {ok}, \"failed\": {failed}, \"ops_per_second\": {:.1}}}",
        args.targets.len(),
        ok as f64 / seconds
    );
}

fn fail(message: &str) -> ! {
    eprintln!("ipmi_poll: {message}");
    std::process::exit(1);
}
