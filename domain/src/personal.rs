//! Which fields of which events name a person: declared once, here.
//!
//! An event with personal fields is stored in two parts (`Event::encode`):
//! its data with each personal value replaced by `null`, and the personal
//! values apart (`EncodedEvent::personal`), which the log seals with the
//! key of the event's data subject (a contact, a user) and can later
//! destroy. Reading puts the values back (`PersonalPart::Open`), or, once
//! the key is gone, what an erased value reads as (`PersonalPart::Erased`):
//! the placeholder `[erased]` for a required text, `null` for an optional
//! one, `{}` for custom fields. The `null` left in the data keeps which
//! fields an event changed, so that a change reads as a change after an
//! erasure too: the clocks it reset stay reset, on a rebuild as live.
//!
//! Personal: a contact's name, email, phone, title and custom fields (all
//! of them: a custom field on a person is taken to be about the person); a
//! user's name and email; the summary of an interaction logged with a
//! contact (an interaction without a contact has no data subject: its
//! summary stays in the data). Not personal: ids, owners, stages, tags,
//! amounts, dates, the external id (another system's reference, kept for
//! matching imports), accounts (companies) and deals.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::Event;

/// What an erased text reads as.
pub const ERASED: &str = "[erased]";

/// `ERASED` as a name: what an erased contact's or user's name reads as.
pub fn erased_name() -> crate::values::Name {
    crate::values::Name::parse(ERASED).expect("the erased placeholder is a valid name")
}

/// `ERASED` as a text: what an erased interaction's summary reads as.
pub fn erased_text() -> crate::values::Text {
    crate::values::Text::parse(ERASED).expect("the erased placeholder is a valid text")
}

/// How an erased value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Erased {
    /// A required text: `ERASED`.
    Placeholder,
    /// An optional value: none.
    Null,
    /// Custom fields: none.
    Empty,
}

/// A personal field: its path in the event's data, and how it reads erased.
#[derive(Debug)]
struct Field {
    path: [&'static str; 2],
    erased: Erased,
}

const fn field(object: &'static str, name: &'static str, erased: Erased) -> Field {
    Field {
        path: [object, name],
        erased,
    }
}

/// A top-level field (the second path step is empty).
const fn top(name: &'static str, erased: Erased) -> Field {
    field(name, "", erased)
}

const CONTACT_CREATED: &[Field] = &[
    field("fields", "name", Erased::Placeholder),
    field("fields", "email", Erased::Null),
    field("fields", "phone", Erased::Null),
    field("fields", "title", Erased::Null),
    field("fields", "custom", Erased::Empty),
];
const CONTACT_UPDATED: &[Field] = &[
    field("changes", "name", Erased::Placeholder),
    field("changes", "email", Erased::Null),
    field("changes", "phone", Erased::Null),
    field("changes", "title", Erased::Null),
    field("changes", "custom", Erased::Empty),
];
const INTERACTION_LOGGED: &[Field] = &[top("summary", Erased::Placeholder)];
const USER_REGISTERED: &[Field] = &[top("name", Erased::Placeholder), top("email", Erased::Null)];

/// The personal fields of an event type; none for most.
fn fields_of(event_type: &str) -> &'static [Field] {
    match event_type {
        "ContactCreated" => CONTACT_CREATED,
        "ContactUpdated" => CONTACT_UPDATED,
        "InteractionLogged" => INTERACTION_LOGGED,
        "UserRegistered" => USER_REGISTERED,
        _ => &[],
    }
}

/// An event's personal part as read from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonalPart<'a> {
    /// The event has none.
    None,
    /// The personal values, as `Event::encode` split them off.
    Open(&'a str),
    /// Its subject's key is destroyed.
    Erased,
}

/// The event types that erase a data subject's personal data: their append
/// destroys the subject's key (`Event::erased_subject`).
pub const ERASURES: [&str; 2] = ["ContactErased", "UserErased"];

impl Event {
    /// The data subject whose key this event's append destroys.
    pub fn erased_subject(&self) -> Option<Uuid> {
        match self {
            Self::ContactErased(e) => Some(e.contact_id),
            Self::UserErased(e) => Some(e.user_id),
            _ => None,
        }
    }

    /// The person this event's personal fields are about, if it has any.
    pub fn data_subject(&self) -> Option<Uuid> {
        match self {
            Self::ContactCreated(e) => Some(e.contact_id),
            Self::ContactUpdated(e) => Some(e.contact_id),
            Self::InteractionLogged(e) => e.contact_id,
            Self::UserRegistered(e) => Some(e.user_id),
            _ => None,
        }
    }
}

fn slot<'a>(data: &'a mut Map<String, Value>, field: &Field) -> Option<&'a mut Value> {
    let [first, second] = field.path;
    let value = data.get_mut(first)?;
    if second.is_empty() {
        Some(value)
    } else {
        value.as_object_mut()?.get_mut(second)
    }
}

/// Moves the personal values out of `data` (leaving `null` in their
/// place) into a document of their own, keyed by their paths; `None` if
/// there are none (every personal field absent or already null).
pub(crate) fn split(event_type: &str, data: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    let mut personal = Map::new();
    for field in fields_of(event_type) {
        if let Some(value) = slot(data, field).filter(|v| !v.is_null()) {
            personal.insert(key(field), value.take());
        }
    }
    (!personal.is_empty()).then_some(personal)
}

fn key(field: &Field) -> String {
    match field.path {
        [name, ""] => name.to_owned(),
        [object, name] => format!("{object}.{name}"),
    }
}

/// `data` (a stored event's JSON) with its personal part put back, or,
/// erased, with what erased values read as.
pub fn merge(event_type: &str, data: &str, part: PersonalPart<'_>) -> Result<String, String> {
    if part == PersonalPart::None {
        return Ok(data.to_owned());
    }
    Ok(merged(event_type, data, part)?.to_string())
}

/// `merge`, as the JSON value it makes.
pub fn merged(event_type: &str, data: &str, part: PersonalPart<'_>) -> Result<Value, String> {
    let Value::Object(mut data) = serde_json::from_str(data).map_err(|e| e.to_string())? else {
        return Err("the data is not an object".into());
    };
    let personal: Option<Map<String, Value>> = match part {
        PersonalPart::Open(text) => Some(serde_json::from_str(text).map_err(|e| format!("personal part: {e}"))?),
        PersonalPart::Erased | PersonalPart::None => None,
    };
    for field in fields_of(event_type) {
        let Some(slot) = slot(&mut data, field) else { continue };
        match &personal {
            Some(personal) => {
                if let Some(value) = personal.get(&key(field)) {
                    *slot = value.clone();
                }
            }
            None if slot.is_null() => {
                *slot = match field.erased {
                    Erased::Placeholder => Value::String(ERASED.to_owned()),
                    Erased::Null => Value::Null,
                    Erased::Empty => Value::Object(Map::new()),
                };
            }
            None => {}
        }
    }
    Ok(Value::Object(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_contact_is_stored_without_its_personal_values_and_read_back_whole_or_erased() -> Result<(), String> {
        let mut data = json!({
            "contact_id": "0190a000-0000-7000-8000-000000000001",
            "fields": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": null,
                       "title": "CTO", "custom": {"nick": "ada"}, "tags": ["vip"], "owner_id": null}
        });
        let object = data.as_object_mut().ok_or("an object")?;
        let personal = split("ContactCreated", object).ok_or("personal values")?;
        let public = Value::Object(object.clone()).to_string();
        for secret in ["Ada", "ada@", "CTO", "nick"] {
            assert!(!public.contains(secret), "{secret} left in {public}");
        }
        assert!(public.contains("vip"), "tags are not personal");
        assert!(!personal.contains_key("fields.phone"), "a null is not personal");
        let personal = Value::Object(personal).to_string();
        let whole: Value = serde_json::from_str(&merge("ContactCreated", &public, PersonalPart::Open(&personal))?)
            .map_err(|e| e.to_string())?;
        assert_eq!(whole["fields"]["email"], "ada@example.com");
        assert_eq!(whole["fields"]["custom"]["nick"], "ada");
        let erased: Value = serde_json::from_str(&merge("ContactCreated", &public, PersonalPart::Erased)?)
            .map_err(|e| e.to_string())?;
        assert_eq!(erased["fields"]["name"], ERASED);
        assert_eq!(erased["fields"]["email"], Value::Null);
        assert_eq!(erased["fields"]["custom"], json!({}));
        assert_eq!(erased["fields"]["tags"], json!(["vip"]));
        Ok(())
    }

    #[test]
    fn the_erased_placeholder_is_a_name_and_a_text() {
        assert_eq!((erased_name().as_str(), erased_text().as_str()), (ERASED, ERASED));
    }

    #[test]
    fn an_erased_change_still_names_the_fields_it_changed() -> Result<(), String> {
        let mut data = json!({"contact_id": "x", "changes": {"email": "new@example.com", "tags": ["a"]}});
        let object = data.as_object_mut().ok_or("an object")?;
        assert!(split("ContactUpdated", object).is_some());
        let erased: Value = serde_json::from_str(&merge(
            "ContactUpdated",
            &Value::Object(object.clone()).to_string(),
            PersonalPart::Erased,
        )?)
        .map_err(|e| e.to_string())?;
        assert_eq!(erased["changes"], json!({"email": null, "tags": ["a"]}));
        let mut tags_only = json!({"contact_id": "x", "changes": {"tags": ["a"]}});
        let object = tags_only.as_object_mut().ok_or("an object")?;
        assert_eq!(
            split("ContactUpdated", object),
            None,
            "nothing personal, nothing sealed"
        );
        Ok(())
    }
}
