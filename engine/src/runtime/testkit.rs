//! Waiting helpers shared by the unit tests that drive a running engine.

use std::time::Duration;

use super::{EngineHandle, HostView};
use crate::lifecycle::{Activity, ProvisioningState};

/// Polls `name` until `done` holds; panics with the host's last view after a generous
/// timeout (this is a liveness check, not a timing assertion).
pub(crate) async fn wait_for(
    engine: &EngineHandle,
    name: &str,
    what: &str,
    done: impl Fn(&HostView) -> bool,
) -> HostView {
    let mut last = None;
    for _ in 0..3000 {
        match engine.get(name).await.unwrap() {
            Some(view) if done(&view) => return view,
            other => last = other,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never became {what}; last seen: {last:#?}");
}

/// The host is in `state` with no operation running.
pub(crate) fn settled(state: ProvisioningState) -> impl Fn(&HostView) -> bool {
    move |view| view.status.state == state && view.status.activity == Activity::Idle
}
