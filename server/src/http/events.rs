//! The raw log for integrations: pages by position, and a live
//! Server-Sent-Events tail that resumes from any position without loss.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Params, Reader};

/// Most events one page or one SSE read returns.
pub const EVENTS_PAGE_MAX: usize = 1_000;
/// How long the SSE tail waits for news before checking again.
const TAIL_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events after this position (default 0: from the start).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "{\"items\": [{position, stream_id, version, type, schema_version, data, actor, occurred_at, recorded_at, correlation_id, causation_id, hash}], \"next_after\"}", body = Object)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _reader: Reader,
    Params(query): Params<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(100).clamp(1, EVENTS_PAGE_MAX);
    let events = state.app.store.read_all(after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.position);
    let items: Vec<Value> = events.iter().map(crate::wire::event_json).collect();
    Ok(Json(json!({ "items": items, "next_after": next_after })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Send events after this position. `Last-Event-ID`, sent by a
    /// reconnecting client, takes precedence.
    pub after: Option<u64>,
}

#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamQuery),
    responses((status = 200, description = "text/event-stream: one SSE event per log event, `id` its position, `event` its type, `data` the event as in /v1/events", content_type = "text/event-stream")),
    security(("bearer" = [])))]
pub async fn stream_events(
    State(state): State<AppState>,
    _reader: Reader,
    headers: HeaderMap,
    Params(query): Params<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = resume.or(query.after).unwrap_or(0);
    let tail = stream::unfold(
        (state, after, Vec::new().into_iter()),
        |(state, mut after, mut pending)| async move {
            loop {
                if let Some(event) = pending.next() {
                    let recorded: eventstore::RecordedEvent = event;
                    after = recorded.position;
                    let sse = SseEvent::default()
                        .id(recorded.position.to_string())
                        .event(recorded.event_type.clone())
                        .data(crate::wire::event_json(&recorded).to_string());
                    return Some((Ok(sse), (state, after, pending)));
                }
                if *state.shutdown.borrow() {
                    return None;
                }
                match state.app.store.read_all(after, EVENTS_PAGE_MAX).await {
                    Ok(batch) if !batch.is_empty() => pending = batch.into_iter(),
                    Ok(_) => {
                        let mut shutdown = state.shutdown.clone();
                        tokio::select! {
                            _ = state.app.store.wait_for(after, TAIL_POLL) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return None,
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event stream read failed; ending the stream so the client reconnects");
                        return None;
                    }
                }
            }
        },
    );
    Sse::new(tail).keep_alive(KeepAlive::default())
}
