//! Read-side queries shared by the command line and the HTTP API: a
//! record's history, timeline and view, the audit of the log (reports:
//! `Projector::report`).

use std::collections::{BTreeMap, HashMap};

use domain::RecordKind;
use eventstore::{LogFilter, StoreError};
use projections::{FieldChange, HistoryEntry, ProjectionError, Projector, TimelineItem};
use serde_json::{Value, json};
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

/// Everything held about a contact (GDPR Art. 15): its fields as they
/// stand, every change with who made it (from and to), and its timeline
/// (changes and the interactions logged with it, by whom, of which
/// department). Once erased, the document says so and holds no personal
/// value.
pub async fn personal_data(
    projector: &Projector,
    id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, QueryError> {
    let kind = RecordKind::Contact;
    let events = stream(projector, kind, id).await?;
    covered(projector, &events).await?;
    let model = projector.record_context(kind, id).await?;
    let record = projector
        .view(kind, id)
        .await?
        .ok_or(QueryError::NotFound { kind, id })?;
    Ok(json!({
        "subject": {"kind": kind, "id": id},
        "generated_at": now,
        "erased": record.get("erased").cloned().unwrap_or(Value::Null),
        "record": record,
        "history": projections::history(kind, id, &events, &model)?,
        "timeline": projections::timeline(kind, id, &events, &model)?,
    }))
}

/// The events of a user's activity the access document lists; the rest
/// is paged by `/v1/audit?actor_id=` from its `next_cursor`.
pub const USER_ACTIVITY_LISTED: usize = 100;

/// Everything held about a user: the user as `/v1/users` lists it (name,
/// email, department, role, or the erasure), and the first page of what the
/// user did, each event with the fields it changed.
pub async fn user_personal_data(
    projector: &Projector,
    id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, QueryError> {
    let kind = RecordKind::User;
    let users = projector.users().await?;
    let user = users.users.get(&id).ok_or(QueryError::NotFound { kind, id })?;
    let filter = LogFilter {
        actor: Some(id.to_string()),
        ..LogFilter::default()
    };
    let (activity, next_cursor) = audit(projector, &filter, 0, USER_ACTIVITY_LISTED).await?;
    let record = crate::wire::user_json(user);
    Ok(json!({
        "subject": {"kind": kind, "id": id},
        "generated_at": now,
        "erased": record.get("erased").cloned().unwrap_or(Value::Null),
        "record": record,
        "activity": {"items": activity, "next_cursor": next_cursor},
    }))
}

/// A page of the audit: the events `filter` lets through after position
/// `after`, each with who did it (name and department) and, for a change to
/// a contact, account or deal, the fields it changed from and to (its
/// record's stream folded as its history is: read once per record on the
/// page). Returns the rows and the cursor of the next page.
pub async fn audit(
    projector: &Projector,
    filter: &LogFilter,
    after: u64,
    limit: usize,
) -> Result<(Vec<Value>, Option<u64>), QueryError> {
    let store = projector.store();
    let events = store.read_filtered(filter, after, limit).await?;
    let users = projector.users().await?;
    let mut records: Vec<(RecordKind, Uuid)> = events
        .iter()
        .filter_map(|e| RecordKind::parse_stream_id(&e.stream_id))
        .filter(|(kind, _)| matches!(kind, RecordKind::Contact | RecordKind::Account | RecordKind::Deal))
        .collect();
    records.sort_unstable();
    records.dedup();
    let mut changes: HashMap<u64, BTreeMap<String, FieldChange>> = HashMap::new();
    for (kind, id) in records {
        let stream = store.read_stream(&kind.stream_id(id), 1).await?;
        for entry in projections::history(kind, id, &stream, &users)? {
            changes.insert(entry.position, entry.changes);
        }
    }
    let rows = events
        .iter()
        .map(|event| {
            let mut row = crate::wire::audit_json(&users, event);
            row["changes"] = json!(changes.get(&event.position));
            row
        })
        .collect();
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    Ok((rows, next))
}
