//! Field-level history and timelines of one record. History is read from the
//! record's own stream and folded through the same `CrmModel::apply` as every
//! read model, so `from` and `to` are exactly what the views showed before
//! and after each event. Memory is one record's history, never the log's.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{Event, RecordKind};
use eventstore::RecordedEvent;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ProjectionError;
use crate::model::CrmModel;
use crate::views::record_fields;

/// Who acted, as people read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActorRef {
    pub id: String,
    pub name: Option<String>,
    pub department: Option<String>,
}

impl ActorRef {
    pub fn of(model: &CrmModel, actor: &str) -> Self {
        let user = model.user(actor);
        Self {
            id: actor.to_owned(),
            name: user
                .map(|u| u.name.clone())
                .or_else(|| (actor == "system").then(|| "system".to_owned())),
            department: user.map(|u| u.department.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    pub actor: ActorRef,
    #[serde(rename = "type")]
    pub event_type: String,
    pub changes: BTreeMap<String, FieldChange>,
}

/// Reads a stored event, naming its position if it cannot be read.
/// Its personal part is put back, or read as erased once its key is gone.
pub fn decode(recorded: &RecordedEvent) -> Result<Event, ProjectionError> {
    Event::decode_parts(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.data,
        personal_part(recorded),
    )
    .map_err(|e| ProjectionError::Unreadable {
        position: recorded.position,
        reason: e.to_string(),
    })
}

/// The personal part of a stored event, as `Event::decode_parts` takes it.
pub fn personal_part(recorded: &RecordedEvent) -> domain::PersonalPart<'_> {
    match &recorded.sealed {
        None => domain::PersonalPart::None,
        Some(sealed) => match &sealed.opened {
            Some(opened) => domain::PersonalPart::Open(opened),
            None => domain::PersonalPart::Erased,
        },
    }
}

/// Null, false, "", [] and {}: what a new record's unset fields hold.
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

/// The fields whose value differs between two states. A record's first entry
/// lists only the fields it was created with, not every unset one.
fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> BTreeMap<String, FieldChange> {
    let mut changes = BTreeMap::new();
    for key in before.keys().chain(after.keys()) {
        let from = before.get(key).cloned().unwrap_or(Value::Null);
        let to = after.get(key).cloned().unwrap_or(Value::Null);
        if before.is_empty() && is_blank(&to) {
            continue;
        }
        if from != to {
            changes.insert(key.clone(), FieldChange { from, to });
        }
    }
    changes
}

/// Every change to the record, oldest first. `stream` is the record's whole
/// stream; `people` resolves actor ids to names and departments.
pub fn history(
    kind: RecordKind,
    id: Uuid,
    stream: &[RecordedEvent],
    people: &CrmModel,
) -> Result<Vec<HistoryEntry>, ProjectionError> {
    let mut scratch = CrmModel::default();
    let mut before = Map::new();
    let mut entries = Vec::with_capacity(stream.len());
    for recorded in stream {
        scratch.apply(recorded, &decode(recorded)?);
        let after = record_fields(&scratch, kind, id).unwrap_or_default();
        entries.push(HistoryEntry {
            position: recorded.position,
            recorded_at: recorded.recorded_at,
            occurred_at: recorded.occurred_at,
            actor: ActorRef::of(people, &recorded.actor),
            event_type: recorded.event_type.clone(),
            changes: diff(&before, &after),
        });
        before = after;
    }
    Ok(entries)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum TimelineItem {
    Change(HistoryEntry),
    Interaction {
        id: Uuid,
        position: u64,
        occurred_at: DateTime<Utc>,
        actor: ActorRef,
        kind: domain::InteractionKind,
        direction: Option<domain::Direction>,
        summary: String,
    },
}

impl TimelineItem {
    fn sort_key(&self) -> (DateTime<Utc>, u64) {
        match self {
            Self::Change(entry) => (entry.occurred_at, entry.position),
            Self::Interaction {
                occurred_at, position, ..
            } => (*occurred_at, *position),
        }
    }
}

/// Changes and interactions together, newest first.
pub fn timeline(
    kind: RecordKind,
    id: Uuid,
    stream: &[RecordedEvent],
    model: &CrmModel,
) -> Result<Vec<TimelineItem>, ProjectionError> {
    let mut items: Vec<TimelineItem> = history(kind, id, stream, model)?
        .into_iter()
        .map(TimelineItem::Change)
        .collect();
    let names_record = |view: &&crate::model::InteractionView| match kind {
        RecordKind::Contact => view.logged.contact_id == Some(id),
        RecordKind::Deal => view.logged.deal_id == Some(id),
        RecordKind::Account => view.account_id == Some(id),
        RecordKind::Interaction | RecordKind::User => false,
    };
    for view in model.interactions.values().filter(names_record) {
        items.push(TimelineItem::Interaction {
            id: view.id,
            position: view.at.position,
            occurred_at: view.at.occurred_at,
            actor: ActorRef::of(model, &view.at.actor),
            kind: view.logged.kind,
            direction: view.logged.direction,
            summary: view.logged.summary.to_string(),
        });
    }
    items.sort_by_key(|item| std::cmp::Reverse(item.sort_key()));
    Ok(items)
}
