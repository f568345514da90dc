//! Turning untrusted input (a JSON object from an HTTP body, or a CSV row
//! turned into one) into typed values, with one error per bad field.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::values::{
    CUSTOM_KEYS_MAX, CurrencyCode, CustomFields, EmailAddress, ExternalId, Money, Name, PhoneNumber, TAGS_MAX, Text,
};

/// Raw input for a record: field name to JSON value, `null` to clear.
pub type Input = serde_json::Map<String, Value>;

/// A value that can be read from one field of untrusted input.
pub trait FromInput: Sized {
    fn from_input(value: &Value) -> Result<Self, String>;
}

fn as_str(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("must be a string, not {}", type_name(value)))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

macro_rules! from_str_input {
    ($($type:ty),*) => {$(
        impl FromInput for $type {
            fn from_input(value: &Value) -> Result<Self, String> {
                <$type>::parse(as_str(value)?)
            }
        }
    )*};
}

from_str_input!(Name, Text, ExternalId, EmailAddress, PhoneNumber, DomainName);

impl FromInput for Uuid {
    fn from_input(value: &Value) -> Result<Self, String> {
        let raw = as_str(value)?;
        Uuid::parse_str(raw.trim()).map_err(|_| format!("{raw:?} is not a UUID"))
    }
}

impl FromInput for NaiveDate {
    fn from_input(value: &Value) -> Result<Self, String> {
        let raw = as_str(value)?;
        NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
            .map_err(|_| format!("{raw:?} is not a date in the form YYYY-MM-DD"))
    }
}

impl FromInput for Money {
    fn from_input(value: &Value) -> Result<Self, String> {
        let object = value
            .as_object()
            .ok_or("must be an object like {\"value_minor\": 100000, \"currency\": \"EUR\"}")?;
        if let Some(unknown) = object.keys().find(|k| *k != "value_minor" && *k != "currency") {
            return Err(format!("unknown key {unknown:?}"));
        }
        let value_minor = object
            .get("value_minor")
            .and_then(Value::as_i64)
            .ok_or("value_minor must be a whole number of minor units (cents)")?;
        let currency = CurrencyCode::parse(as_str(object.get("currency").unwrap_or(&Value::Null))?)?;
        Money::new(value_minor, currency)
    }
}

impl FromInput for CustomFields {
    fn from_input(value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or("must be an object")?;
        if object.len() > CUSTOM_KEYS_MAX {
            return Err(format!("must have at most {CUSTOM_KEYS_MAX} keys"));
        }
        Ok(object.clone())
    }
}

impl FromInput for Vec<Tag> {
    fn from_input(value: &Value) -> Result<Self, String> {
        let items = value.as_array().ok_or("must be an array of strings")?;
        let mut tags: Vec<Tag> = Vec::with_capacity(items.len());
        for item in items {
            let tag = Tag::parse(as_str(item)?)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.len() > TAGS_MAX {
            return Err(format!("must have at most {TAGS_MAX} tags"));
        }
        Ok(tags)
    }
}

impl FromInput for Vec<Uuid> {
    fn from_input(value: &Value) -> Result<Self, String> {
        let items = value.as_array().ok_or("must be an array of UUIDs")?;
        let mut ids: Vec<Uuid> = Vec::with_capacity(items.len());
        for item in items {
            let id = Uuid::from_input(item)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// Most characters in one tag.
pub const TAG_CHARS_MAX: usize = 50;

/// A label on a record: trimmed, lower case, at most `TAG_CHARS_MAX` characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let tag = raw.trim().to_lowercase();
        if tag.is_empty() || tag.chars().count() > TAG_CHARS_MAX {
            return Err(format!("a tag has 1 to {TAG_CHARS_MAX} characters"));
        }
        Ok(Self(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A company's internet domain, as in `example.com`: lower case, without a
/// scheme, path or `www.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let without_scheme = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .unwrap_or(&lower);
        let host = without_scheme.split('/').next().unwrap_or_default();
        let host = host.strip_prefix("www.").unwrap_or(host);
        // A domain is valid exactly when a mailbox on it would be.
        EmailAddress::parse(&format!("postmaster@{host}"))?;
        Ok(Self(host.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Turns a JSON merge-patch (RFC 7396, one level) of custom fields into the
/// whole object it produces over `current`: a key set to `null` is removed,
/// any other value replaces. Events store the result, never the patch.
pub fn merge_custom(patch: &mut Option<CustomFields>, current: &CustomFields) {
    let Some(changes) = patch else { return };
    let mut merged = current.clone();
    for (key, value) in changes.iter() {
        if value.is_null() {
            merged.remove(key);
        } else {
            merged.insert(key.clone(), value.clone());
        }
    }
    *changes = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_are_lower_case_and_unique() {
        let tags = Vec::<Tag>::from_input(&json!(["VIP", " vip ", "Partner"]));
        assert_eq!(tags, Ok(vec![Tag("vip".into()), Tag("partner".into())]));
        assert!(Vec::<Tag>::from_input(&json!("vip")).is_err());
    }

    #[test]
    fn domains_lose_scheme_path_and_www() {
        let domain = DomainName::parse("https://www.Example.com/about").map(|d| d.0);
        assert_eq!(domain, Ok("example.com".into()));
        assert!(DomainName::parse("not a domain").is_err());
    }

    #[test]
    fn money_input_names_what_is_wrong() {
        let ok = Money::from_input(&json!({"value_minor": 1500, "currency": "eur"}));
        assert_eq!(ok.map(|m| m.value_minor()), Ok(1500));
        for bad in [
            json!(15.5),
            json!({"value_minor": 1.5, "currency": "EUR"}),
            json!({"value_minor": -1, "currency": "EUR"}),
            json!({"value_minor": 1}),
            json!({"value_minor": 1, "currency": "EUR", "vat": 1}),
        ] {
            assert!(Money::from_input(&bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn merge_patch_removes_nulls_and_replaces_values() {
        let current = json!({"tier": "gold", "region": "north"});
        let patch = json!({"tier": "silver", "region": null, "source": "fair"});
        let mut merged = patch.as_object().cloned();
        merge_custom(&mut merged, current.as_object().expect("object"));
        assert_eq!(
            merged.map(Value::Object),
            Some(json!({"tier": "silver", "source": "fair"}))
        );
    }
}
