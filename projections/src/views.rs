//! The JSON views of records that the API and the command line show: the
//! record's fields, flattened, with its version, times, interaction count,
//! owner and archived flag.

use domain::RecordKind;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::model::{CrmModel, Erasure, RecordMeta};

fn with_meta(id: Uuid, kind: RecordKind, fields: Value, meta: &RecordMeta) -> Value {
    let mut view = Map::new();
    view.insert("id".into(), json!(id));
    view.insert("kind".into(), json!(kind));
    if let Value::Object(fields) = fields {
        view.extend(fields);
    }
    view.insert("version".into(), json!(meta.version));
    view.insert("created_at".into(), json!(meta.created_at));
    view.insert("updated_at".into(), json!(meta.updated_at));
    view.insert("last_touched_at".into(), json!(meta.last_touched_at));
    view.insert("interaction_count".into(), json!(meta.interaction_count));
    view.insert("archived".into(), json!(meta.archived));
    if let Some(erased) = &meta.erased {
        view.insert("erased".into(), erasure_json(erased));
    }
    Value::Object(view)
}

/// An erasure as a record's (or a user's) view shows it: who, when, why,
/// and the position of its event.
pub fn erasure_json(erased: &Erasure) -> Value {
    json!({"at": erased.at.occurred_at, "by": erased.at.actor, "reason": erased.reason, "position": erased.at.position})
}

/// The fields of a record as history compares them: its own fields, plus
/// stage and status for deals and the archived flag. `None` if unknown.
pub fn record_fields(model: &CrmModel, kind: RecordKind, id: Uuid) -> Option<Map<String, Value>> {
    let (fields, archived) = match kind {
        RecordKind::Contact => model.contacts.get(&id).map(|r| (json!(r.fields), r.meta.archived))?,
        RecordKind::Account => model.accounts.get(&id).map(|r| (json!(r.fields), r.meta.archived))?,
        RecordKind::Deal => {
            let deal = model.deals.get(&id)?;
            let mut fields = json!(deal.fields);
            fields["stage"] = json!(deal.stage);
            fields["status"] = json!(deal.status);
            if let Some(closed) = &deal.closed {
                fields["close_reason"] = json!(closed.reason);
            }
            (fields, deal.meta.archived)
        }
        RecordKind::Interaction => model.interactions.get(&id).map(|r| (json!(r.logged), false))?,
        RecordKind::User => model.users.get(&id).map(|u| {
            (
                json!({"name": u.name, "department": u.department, "role": u.role}),
                false,
            )
        })?,
    };
    let Value::Object(mut fields) = fields else { return None };
    if matches!(kind, RecordKind::Contact | RecordKind::Account | RecordKind::Deal) {
        fields.insert("archived".into(), json!(archived));
    }
    Some(fields)
}

/// The view of one contact, account or deal; `None` if there is no such record.
pub fn record_view(model: &CrmModel, kind: RecordKind, id: Uuid) -> Option<Value> {
    let meta = model.meta(kind, id)?;
    let mut fields = record_fields(model, kind, id)?;
    fields.remove("archived");
    Some(with_meta(id, kind, Value::Object(fields), meta))
}

/// The view of any record as the API shows it: an interaction's, or a
/// contact's, account's or deal's; `None` if `model` has no such record.
pub fn view_of(model: &CrmModel, kind: RecordKind, id: Uuid) -> Option<Value> {
    match kind {
        RecordKind::Interaction => interaction_view(model, id),
        _ => record_view(model, kind, id),
    }
}

/// The view of one interaction; `None` if there is no such interaction.
pub fn interaction_view(model: &CrmModel, id: Uuid) -> Option<Value> {
    let view = model.interactions.get(&id)?;
    let mut out = match json!(view.logged) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.remove("interaction_id");
    out.insert("id".into(), json!(id));
    out.insert("touched_account_id".into(), json!(view.account_id));
    out.insert("occurred_at".into(), json!(view.at.occurred_at));
    out.insert("actor".into(), json!(view.at.actor));
    out.insert("position".into(), json!(view.at.position));
    Some(Value::Object(out))
}
