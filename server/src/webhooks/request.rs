//! What a subscription request must hold, checked once for `POST
//! /v1/webhooks` and `crm webhook add` alike.

use domain::{FieldError, Input};
use serde_json::Value;

use super::NewSubscription;

/// The shortest secret a caller may choose.
const SECRET_LEN_MIN: usize = 16;
/// The longest description.
const DESCRIPTION_CHARS_MAX: usize = 500;
const FIELDS: [&str; 6] = ["url", "event_types", "kinds", "secret", "description", "after"];

impl NewSubscription {
    /// A subscription from its request: `url`, and optionally
    /// `event_types`, `kinds`, `secret` (one is made if none is given),
    /// `description` and `after` (a log position up to `head`; the head by
    /// default). Every bad field is named at once.
    /// A URL whose host `reach` refuses (an address in it, or
    /// `localhost`) is refused here; other names when a delivery resolves
    /// them.
    pub fn parse(input: &Input, head: u64, created_by: &str, reach: &super::Reach) -> Result<Self, Vec<FieldError>> {
        let mut errors: Vec<FieldError> = input
            .keys()
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .map(|k| FieldError::new(k, "is not a field of a webhook"))
            .collect();
        let url = input.get("url").and_then(Value::as_str).unwrap_or_default().trim();
        match reqwest::Url::parse(url) {
            Ok(parsed) if ["http", "https"].contains(&parsed.scheme()) && parsed.host().is_some() => {
                if let Some(why) = reach.refusal_of_url(&parsed) {
                    errors.push(FieldError::new("url", why));
                }
            }
            Ok(_) => errors.push(FieldError::new("url", "must be an http:// or https:// URL with a host")),
            Err(error) => errors.push(FieldError::new("url", format!("is not a URL: {error}"))),
        }
        let event_types = names(
            input,
            "event_types",
            |t| domain::Event::current_schema_version(t).is_some(),
            "an event type (see the type of any item of /v1/events)",
            &mut errors,
        );
        let kinds = names(
            input,
            "kinds",
            |k| domain::RecordKind::ALL.iter().any(|kind| kind.as_str() == k),
            "a record kind (contact, account, deal, interaction or user)",
            &mut errors,
        );
        let secret = match input.get("secret") {
            None | Some(Value::Null) => format!("whsec_{}", crate::auth::random_hex(32)),
            Some(Value::String(secret)) if secret.chars().count() >= SECRET_LEN_MIN => secret.clone(),
            Some(_) => {
                errors.push(FieldError::new(
                    "secret",
                    format!("must be a string of at least {SECRET_LEN_MIN} characters"),
                ));
                String::new()
            }
        };
        let description = match input.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.chars().count() <= DESCRIPTION_CHARS_MAX => Some(text.trim().to_owned()),
            Some(_) => {
                errors.push(FieldError::new(
                    "description",
                    format!("must be a string of at most {DESCRIPTION_CHARS_MAX} characters"),
                ));
                None
            }
        };
        let position = match input.get("after") {
            None | Some(Value::Null) => head,
            Some(after) => match after.as_u64() {
                Some(after) if after <= head => after,
                _ => {
                    errors.push(FieldError::new(
                        "after",
                        format!("must be a log position from 0 to {head}"),
                    ));
                    head
                }
            },
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            url: url.to_owned(),
            description,
            event_types,
            kinds,
            secret,
            created_by: created_by.to_owned(),
            position,
        })
    }
}

/// A list of names from `input[field]`: absent or null is empty (every
/// one); each must pass `known`.
fn names(
    input: &domain::Input,
    field: &str,
    known: impl Fn(&str) -> bool,
    what: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    match input.get(field) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut names = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(name) if known(name) => names.push(name.to_owned()),
                    Some(name) => errors.push(FieldError::new(field, format!("{name:?} is not {what}"))),
                    None => errors.push(FieldError::new(field, "must be a list of strings")),
                }
            }
            names.sort();
            names.dedup();
            names
        }
        Some(_) => {
            errors.push(FieldError::new(field, "must be a list of strings"));
            Vec::new()
        }
    }
}
