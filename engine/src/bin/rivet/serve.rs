//! `rivet serve --config <file>`: the daemon — engine, REST API and either the simulated
//! lab or the real drivers (BMCs, boot services, and the agent channel on the API listener).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use rivet_engine::Engine;
use rivet_engine::api::{self, ApiToken, AppState, TlsMaterial};
use rivet_engine::config::{DriverKind, ServeConfig};
use rivet_engine::drivers::Drivers;
use rivet_engine::drivers::agent_channel::AgentChannel;
use rivet_engine::drivers::bmc::RealBmc;
use rivet_engine::drivers::boot::RealBoot;
use rivet_engine::sim::SimLab;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The configuration file (TOML; see the user guide's engine chapter).
    #[arg(long, short, value_name = "FILE", env = "RIVET_CONFIG")]
    config: PathBuf,
}

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // The certificate comes first: agents booted by the real drivers pin its fingerprint.
    let tls = match (&config.api.tls_cert, &config.api.tls_key) {
        (Some(cert), Some(key)) => TlsMaterial::from_files(cert, key)?,
        _ => {
            let names = api::tls::certificate_names(config.api.listen, &config.api.hostnames);
            TlsMaterial::issue(&config.tls_dir(), &names)?
        }
    };
    let (drivers, lab, agent_routes, _boot) = match config.drivers.kind {
        DriverKind::Simulated => {
            let lab = SimLab::new(config.drivers.simulated.clone())?;
            tracing::warn!(
                "running with SIMULATED drivers: no real BMC, boot service or agent is used"
            );
            (lab.drivers(), Some(lab), None, None)
        }
        DriverKind::Real => {
            let real = &config.drivers.real;
            std::fs::create_dir_all(&config.state_dir)
                .with_context(|| format!("creating {}", config.state_dir.display()))?;
            let boot = RealBoot::start(&real.boot, &tls.fingerprint, &config.state_dir)
                .await
                .context("starting the boot services")?;
            let channel = AgentChannel::new(real.agent.clone());
            let drivers = Drivers {
                bmc: Arc::new(RealBmc::new(real.bmc.connect_options())),
                boot: boot.clone(),
                agent: Arc::new(channel.clone()),
            };
            (drivers, None, Some(channel.router()), Some(boot))
        }
    };
    let mut engine = Engine::open(config.engine_config(), drivers)
        .await
        .with_context(|| format!("opening the engine in {}", config.state_dir.display()))?;
    let token = ApiToken::load_or_create(&config.token_path())?;
    let listener = api::bind(config.api.listen)
        .await
        .with_context(|| format!("listening on {}", config.api.listen))?;
    let state = AppState {
        engine: engine.handle(),
        sim: lab.map(|lab: Arc<SimLab>| lab),
    };
    let mut router = api::router(state, token);
    if let Some(agent_routes) = agent_routes {
        router = router.merge(agent_routes);
    }
    let server = tokio::spawn(api::serve(listener, tls.server.clone(), router));
    tracing::info!(
        listen = %config.api.listen,
        ca = %tls.trust_path.display(),
        fingerprint = %tls.fingerprint,
        token_file = %config.token_path().display(),
        "serving the API"
    );
    let outcome = tokio::select! {
        closed = engine.closed() => {
            server.abort();
            match closed {
                Ok(()) => bail!("the engine stopped unexpectedly"),
                Err(err) => Err(anyhow::Error::new(err).context("the engine stopped")),
            }
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            server.abort();
            engine.shutdown().await.context("shutting the engine down")
        }
    };
    outcome
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
