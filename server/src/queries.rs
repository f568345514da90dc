//! Read-side queries shared by the command line and the HTTP API: a
//! record's history, timeline and view (reports: `Projector::report`).

use domain::RecordKind;
use eventstore::StoreError;
use projections::{HistoryEntry, ProjectionError, Projector, TimelineItem};
use uuid::Uuid;

/// Why a record query found nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no {kind} has the id {id}")]
    NotFound { kind: RecordKind, id: Uuid },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        Self::Projection(error.into())
    }
}

async fn stream(
    projector: &Projector,
    kind: RecordKind,
    id: Uuid,
) -> Result<Vec<eventstore::RecordedEvent>, QueryError> {
    let events = projector.store().read_stream(&kind.stream_id(id), 1).await?;
    if events.is_empty() {
        return Err(QueryError::NotFound { kind, id });
    }
    Ok(events)
}

/// Waits until the read models cover the last of a record's events (at
/// once, unless another process wrote it a moment ago), so that the names
/// and interactions around a history are at least as new as the history.
async fn covered(projector: &Projector, events: &[eventstore::RecordedEvent]) -> Result<(), QueryError> {
    let last = events.last().map_or(0, |event| event.position);
    Ok(projector.wait_until(last).await?)
}

pub async fn history(projector: &Projector, kind: RecordKind, id: Uuid) -> Result<Vec<HistoryEntry>, QueryError> {
    let events = stream(projector, kind, id).await?;
    covered(projector, &events).await?;
    let model = projector.record_context(kind, id).await?;
    Ok(projections::history(kind, id, &events, &model)?)
}

pub async fn timeline(projector: &Projector, kind: RecordKind, id: Uuid) -> Result<Vec<TimelineItem>, QueryError> {
    let events = stream(projector, kind, id).await?;
    covered(projector, &events).await?;
    let model = projector.record_context(kind, id).await?;
    Ok(projections::timeline(kind, id, &events, &model)?)
}
