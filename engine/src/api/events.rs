//! `GET /v1/events`: server-sent events, one per committed timeline entry (plus live agent
//! progress and deletions), optionally for one host.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::runtime::HostEvent;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// Only this host's events.
    pub(super) host: Option<String>,
}

pub(super) async fn stream(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.engine.subscribe();
    let events =
        futures::stream::unfold((receiver, query.host), |(mut receiver, host)| async move {
            loop {
                let event = match receiver.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        let event = Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}"));
                        return Some((Ok(event), (receiver, host)));
                    }
                    Err(RecvError::Closed) => return None,
                };
                if host.as_ref().is_some_and(|host| *host != event.host) {
                    continue;
                }
                return Some((Ok(to_sse(&event)), (receiver, host)));
            }
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn to_sse(event: &HostEvent) -> Event {
    let kind = match &event.kind {
        crate::runtime::HostEventKind::Timeline { .. } => "timeline",
        crate::runtime::HostEventKind::Progress { .. } => "progress",
        crate::runtime::HostEventKind::Deleted => "deleted",
    };
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default().event(kind).data(data)
}
