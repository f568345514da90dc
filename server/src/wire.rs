//! The JSON form of what the outside sees, shared by the command line and
//! the HTTP API.

use eventstore::RecordedEvent;
use projections::{ActorRef, CrmModel};
use serde_json::{Value, json};

/// An event as integrations read it: the envelope, and `data` as stored
/// with its personal fields put back (or erased), `personal` naming its
/// data subject. `hash` covers the stored form, personal part sealed.
pub fn event_json(event: &RecordedEvent) -> Value {
    // Its personal fields put back while their key exists, read as erased after.
    let part = projections::personal_part(event);
    let data = match part {
        domain::PersonalPart::None => serde_json::from_str(&event.data).ok(),
        part => domain::merged_personal(&event.event_type, &event.data, part).ok(),
    }
    .unwrap_or(Value::Null);
    let personal = event.sealed.as_ref().map(|sealed| match sealed.opened {
        Some(_) => json!({"subject": sealed.subject, "erased": false}),
        None => json!({"subject": sealed.subject, "erased": true}),
    });
    json!({
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.event_type,
        "schema_version": event.schema_version,
        "data": data,
        "actor": event.actor,
        "occurred_at": event.occurred_at,
        "recorded_at": event.recorded_at,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "hash": event.hash,
        "personal": personal,
    })
}

/// An audit line: who (with name and department), what, when, to which record.
pub fn audit_json(model: &CrmModel, event: &RecordedEvent) -> Value {
    let record = domain::RecordKind::parse_stream_id(&event.stream_id);
    json!({
        "position": event.position,
        "recorded_at": event.recorded_at,
        "occurred_at": event.occurred_at,
        "actor": ActorRef::of(model, &event.actor),
        "type": event.event_type,
        "stream_id": event.stream_id,
        "record": record.map(|(kind, id)| json!({"kind": kind, "id": id})),
        "version": event.version,
    })
}

/// A user as `/v1/users` lists it; an erased one says who erased it, when
/// and why.
pub fn user_json(user: &projections::UserView) -> Value {
    let mut value = json!({"id": user.id, "name": user.name, "department": user.department, "role": user.role, "email": user.email, "last_activity_at": user.last_activity_at});
    if let (Some(erased), Value::Object(object)) = (&user.erased, &mut value) {
        object.insert("erased".into(), projections::erasure_json(erased));
    }
    value
}
