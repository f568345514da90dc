//! Every event the system records, and its stable JSON form.
//!
//! An event is stored as three parts: its `type` (the variant name, never
//! renamed), its `schema_version`, and its `data` (the variant's fields as a
//! JSON object). Stored events are never rewritten. When a type's shape has
//! to change, its schema version goes up and `upcast` learns to turn the old
//! shape into the new one while reading, so the oldest event in a log stays
//! readable by the newest code.
//!
//! Schema history:
//! - `DealCreated` 1: the amount as two flat fields `amount_minor` and
//!   `currency` inside `fields`. 2 (current): one `amount` object
//!   `{value_minor, currency}`, as everywhere else.
//! - Every other type: 1. (`UserRegistered` gained an optional `email`
//!   later; events without it read as users without one.)
//!
//! Personal fields travel apart from `data` (`personal.rs`): `encode` puts
//! them in `EncodedEvent::personal`, `decode_parts` puts them back.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::RecordKind;
use crate::account::{AccountArchived, AccountCreated, AccountUpdated};
use crate::activity::ActivityImported;
use crate::contact::{ContactArchived, ContactCreated, ContactErased, ContactUpdated};
use crate::deal::{DealArchived, DealClosed, DealCreated, DealStageChanged, DealUpdated};
use crate::interaction::InteractionLogged;
use crate::personal::{self, PersonalPart};
use crate::user::{UserErased, UserRegistered};
use crate::values::ExternalId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    UserRegistered(UserRegistered),
    UserErased(UserErased),
    AccountCreated(AccountCreated),
    AccountUpdated(AccountUpdated),
    AccountArchived(AccountArchived),
    ContactCreated(ContactCreated),
    ContactUpdated(ContactUpdated),
    ContactArchived(ContactArchived),
    ContactErased(ContactErased),
    DealCreated(DealCreated),
    DealUpdated(DealUpdated),
    DealStageChanged(DealStageChanged),
    DealClosed(DealClosed),
    DealArchived(DealArchived),
    InteractionLogged(InteractionLogged),
    ActivityImported(ActivityImported),
}

/// An event in its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub event_type: &'static str,
    pub schema_version: u32,
    /// The variant's fields as compact JSON, each personal value `null`:
    /// these exact bytes are stored and hashed.
    pub data: String,
    /// The personal values (`personal.rs`) and the data subject whose key
    /// is to seal them; none for an event without personal values.
    pub personal: Option<(Uuid, String)>,
}

/// Why stored bytes could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The log holds a type this code does not know: it was written by newer
    /// software. Upgrade before reading this log.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The event's schema is newer than this code understands. Upgrade.
    #[error("{event_type} schema version {schema_version} is newer than this code knows ({known})")]
    NewerSchema {
        event_type: String,
        schema_version: u32,
        known: u32,
    },
    /// The stored data does not match its declared type and schema: the log
    /// was written wrongly or altered. Run `crm verify`.
    #[error("{event_type} v{schema_version} data is malformed: {reason}")]
    Malformed {
        event_type: String,
        schema_version: u32,
        reason: String,
    },
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::UserRegistered(_) => "UserRegistered",
            Self::UserErased(_) => "UserErased",
            Self::AccountCreated(_) => "AccountCreated",
            Self::AccountUpdated(_) => "AccountUpdated",
            Self::AccountArchived(_) => "AccountArchived",
            Self::ContactCreated(_) => "ContactCreated",
            Self::ContactUpdated(_) => "ContactUpdated",
            Self::ContactArchived(_) => "ContactArchived",
            Self::ContactErased(_) => "ContactErased",
            Self::DealCreated(_) => "DealCreated",
            Self::DealUpdated(_) => "DealUpdated",
            Self::DealStageChanged(_) => "DealStageChanged",
            Self::DealClosed(_) => "DealClosed",
            Self::DealArchived(_) => "DealArchived",
            Self::InteractionLogged(_) => "InteractionLogged",
            Self::ActivityImported(_) => "ActivityImported",
        }
    }

    /// The record this event belongs to; its stream is `kind.stream_id(id)`.
    pub fn record(&self) -> (RecordKind, Uuid) {
        match self {
            Self::UserRegistered(e) => (RecordKind::User, e.user_id),
            Self::UserErased(e) => (RecordKind::User, e.user_id),
            Self::AccountCreated(e) => (RecordKind::Account, e.account_id),
            Self::AccountUpdated(e) => (RecordKind::Account, e.account_id),
            Self::AccountArchived(e) => (RecordKind::Account, e.account_id),
            Self::ContactCreated(e) => (RecordKind::Contact, e.contact_id),
            Self::ContactUpdated(e) => (RecordKind::Contact, e.contact_id),
            Self::ContactArchived(e) => (RecordKind::Contact, e.contact_id),
            Self::ContactErased(e) => (RecordKind::Contact, e.contact_id),
            Self::DealCreated(e) => (RecordKind::Deal, e.deal_id),
            Self::DealUpdated(e) => (RecordKind::Deal, e.deal_id),
            Self::DealStageChanged(e) => (RecordKind::Deal, e.deal_id),
            Self::DealClosed(e) => (RecordKind::Deal, e.deal_id),
            Self::DealArchived(e) => (RecordKind::Deal, e.deal_id),
            Self::InteractionLogged(e) => (RecordKind::Interaction, e.interaction_id),
            Self::ActivityImported(e) => (e.kind, e.record_id),
        }
    }

    /// What this event does to the external id its record holds among the
    /// live records of its kind (see `Aggregate::external_id`): `Some` sets
    /// it (to none, for an archived record), `None` leaves it as it was.
    pub fn external_id_effect(&self) -> Option<Option<&ExternalId>> {
        match self {
            Self::AccountCreated(e) => Some(e.fields.external_id.as_ref()),
            Self::ContactCreated(e) => Some(e.fields.external_id.as_ref()),
            Self::DealCreated(e) => Some(e.fields.external_id.as_ref()),
            Self::InteractionLogged(e) => Some(e.external_id.as_ref()),
            Self::AccountUpdated(e) => e.changes.external_id.as_ref().map(Option::as_ref),
            Self::ContactUpdated(e) => e.changes.external_id.as_ref().map(Option::as_ref),
            Self::DealUpdated(e) => e.changes.external_id.as_ref().map(Option::as_ref),
            Self::AccountArchived(_) | Self::ContactArchived(_) | Self::ContactErased(_) | Self::DealArchived(_) => {
                Some(None)
            }
            Self::UserRegistered(_)
            | Self::UserErased(_)
            | Self::DealStageChanged(_)
            | Self::DealClosed(_)
            | Self::ActivityImported(_) => None,
        }
    }

    /// The schema version this code writes for `event_type`.
    pub fn current_schema_version(event_type: &str) -> Option<u32> {
        match event_type {
            "DealCreated" => Some(2),
            "UserRegistered" | "UserErased" | "AccountCreated" | "AccountUpdated" | "AccountArchived"
            | "ContactCreated" | "ContactUpdated" | "ContactArchived" | "ContactErased" | "DealUpdated"
            | "DealStageChanged" | "DealClosed" | "DealArchived" | "InteractionLogged" | "ActivityImported" => Some(1),
            _ => None,
        }
    }

    pub fn encode(&self) -> EncodedEvent {
        let event_type = self.event_type();
        let tagged = serde_json::to_value(self).expect("events serialise: all keys are strings");
        let mut data = match tagged {
            Value::Object(mut tagged) => match tagged.remove("data") {
                Some(Value::Object(data)) => data,
                _ => serde_json::Map::new(),
            },
            _ => serde_json::Map::new(),
        };
        let personal = self.data_subject().and_then(|subject| {
            Some((
                subject,
                Value::Object(personal::split(event_type, &mut data)?).to_string(),
            ))
        });
        EncodedEvent {
            event_type,
            schema_version: Self::current_schema_version(event_type).expect("every variant has a schema"),
            data: Value::Object(data).to_string(),
            personal,
        }
    }

    /// Reads a stored event with its personal part: put back, or erased.
    pub fn decode_parts(
        event_type: &str,
        schema_version: u32,
        data: &str,
        part: PersonalPart<'_>,
    ) -> Result<Self, DecodeError> {
        if part == PersonalPart::None {
            return Self::decode(event_type, schema_version, data);
        }
        let merged = personal::merge(event_type, data, part).map_err(|reason| DecodeError::Malformed {
            event_type: event_type.to_owned(),
            schema_version,
            reason,
        })?;
        Self::decode(event_type, schema_version, &merged)
    }

    /// Reads a stored event, upcasting older schema versions first.
    pub fn decode(event_type: &str, schema_version: u32, data: &str) -> Result<Self, DecodeError> {
        let malformed = |reason: String| DecodeError::Malformed {
            event_type: event_type.to_owned(),
            schema_version,
            reason,
        };
        let known =
            Self::current_schema_version(event_type).ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if schema_version > known {
            return Err(DecodeError::NewerSchema {
                event_type: event_type.to_owned(),
                schema_version,
                known,
            });
        }
        if schema_version == known {
            // Current data parses straight from its text: the type is a
            // known name (checked above), so it needs no escaping, and with
            // the tag first serde reads the data without buffering it.
            let tagged = format!("{{\"type\":\"{event_type}\",\"data\":{data}}}");
            return serde_json::from_str(&tagged).map_err(|e| malformed(e.to_string()));
        }
        let data: Value = serde_json::from_str(data).map_err(|e| malformed(e.to_string()))?;
        let data = upcast(event_type, schema_version, data).map_err(malformed)?;
        serde_json::from_value(json!({ "type": event_type, "data": data })).map_err(|e| malformed(e.to_string()))
    }
}

/// Brings `data` from `schema_version` up to the current schema of its type,
/// one version step at a time.
fn upcast(event_type: &str, schema_version: u32, mut data: Value) -> Result<Value, String> {
    if event_type == "DealCreated" && schema_version < 2 {
        data = deal_created_v1_to_v2(data)?;
    }
    Ok(data)
}

fn deal_created_v1_to_v2(mut data: Value) -> Result<Value, String> {
    let fields = data
        .get_mut("fields")
        .and_then(Value::as_object_mut)
        .ok_or("DealCreated v1 has no fields object")?;
    let value_minor = fields.remove("amount_minor");
    let currency = fields.remove("currency");
    let amount = match (value_minor, currency) {
        (Some(value_minor), Some(currency)) if !value_minor.is_null() => {
            json!({ "value_minor": value_minor, "currency": currency })
        }
        _ => Value::Null,
    };
    fields.insert("amount".into(), amount);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_deal_created_is_read_as_the_current_shape() {
        let v1 = r#"{"deal_id":"0190a000-0000-7000-8000-000000000001",
            "fields":{"title":"Fleet renewal","account_id":"0190a000-0000-7000-8000-000000000002",
                      "amount_minor":125000,"currency":"EUR"},
            "stage":"proposal"}"#;
        let event = Event::decode("DealCreated", 1, v1).expect("v1 is upcast");
        let Event::DealCreated(created) = event else {
            panic!("wrong variant")
        };
        let amount = created.fields.amount.expect("amount survives the upcast");
        assert_eq!((amount.value_minor(), amount.currency().code()), (125000, "EUR"));
        assert_eq!(created.stage.as_str(), "proposal");
    }

    #[test]
    fn a_version_1_deal_without_amount_has_none() {
        let v1 = r#"{"deal_id":"0190a000-0000-7000-8000-000000000001",
            "fields":{"title":"Pilot","account_id":"0190a000-0000-7000-8000-000000000002"},
            "stage":"lead"}"#;
        let Ok(Event::DealCreated(created)) = Event::decode("DealCreated", 1, v1) else {
            panic!("v1 without an amount is readable")
        };
        assert_eq!(created.fields.amount, None);
    }

    #[test]
    fn unknown_types_and_newer_schemas_are_named_not_guessed() {
        assert_eq!(
            Event::decode("ContactMerged", 1, "{}"),
            Err(DecodeError::UnknownType("ContactMerged".into()))
        );
        assert!(matches!(
            Event::decode("ContactCreated", 2, "{}"),
            Err(DecodeError::NewerSchema { .. })
        ));
        assert!(matches!(
            Event::decode("ContactCreated", 1, "{\"x\":1}"),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
