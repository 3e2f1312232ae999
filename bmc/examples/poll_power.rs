//! Measures what one power-state poll costs over a kept-alive connection:
//! `cargo run --release -p rivet-bmc --example poll_power -- <address> <user> <count>`
//! with the password in `RIVET_BMC_PASSWORD`. Prints the mean and percentiles.

use std::time::{Duration, Instant};

use rivet_bmc::{BmcAddress, ConnectOptions, Credentials, Power};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(user), Some(count)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: poll_power <address> <user> <count>".into());
    };
    let count: usize = count.parse()?;
    let password = std::env::var("RIVET_BMC_PASSWORD")?;
    let address = BmcAddress::parse(&address)?;
    let connect_started = Instant::now();
    let bmc = rivet_bmc::connect(
        &address,
        Credentials::new(user, password),
        ConnectOptions::default(),
    )
    .await?;
    let connect = connect_started.elapsed();
    let mut samples: Vec<Duration> = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        bmc.power_state().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(count.max(1))?;
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "connect {connect:.2?}; {count} polls: mean {mean:.2?}, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}
