//! The power-state sync loop: reads every settled host's power in batches, with bounded
//! concurrency per batch, and hands each batch's readings to the engine in one message.
//! Readings that match what the engine knows change nothing and cost no write.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::EngineHandle;
use crate::drivers::BmcDriver;

/// How the loop paces itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    pub interval: Duration,
    pub batch: usize,
    pub concurrency: usize,
}

pub(super) async fn run(engine: EngineHandle, bmc: Arc<dyn BmcDriver>, pace: Pace) {
    if pace.interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(pace.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick is immediate; hosts were just loaded.
    loop {
        ticker.tick().await;
        let Ok(targets) = engine.power_targets().await else {
            return; // The engine stopped.
        };
        for batch in targets.chunks(pace.batch.max(1)) {
            let readings: Vec<_> = futures::stream::iter(batch.iter().cloned())
                .map(|target| {
                    let bmc = bmc.clone();
                    async move { (target.id, bmc.power_state(&target).await) }
                })
                .buffer_unordered(pace.concurrency.max(1))
                .filter_map(|(id, reading)| async move {
                    match reading {
                        Ok(on) => Some((id, on)),
                        Err(err) => {
                            tracing::debug!(host = %id, error = %err, "power sync: no reading");
                            None
                        }
                    }
                })
                .collect()
                .await;
            if engine.power_observed(readings).await.is_err() {
                return;
            }
        }
    }
}
