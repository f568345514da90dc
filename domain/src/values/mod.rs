//! Value types that are valid by construction: parse, don't validate.

mod email;
mod money;
mod phone;
mod pipeline;
mod text;

pub use email::EmailAddress;
pub use money::{CurrencyCode, MAX_VALUE_MINOR, Money};
pub use phone::{CallingCode, PhoneNumber};
pub use pipeline::{PIPELINE_STAGES_MAX, Pipeline, StageDefinition, StageName};
pub use text::{EXTERNAL_ID_CHARS_MAX, ExternalId, NAME_CHARS_MAX, Name, TEXT_CHARS_MAX, Text};

/// Free-form fields a customer adds to a record; a JSON object.
pub type CustomFields = serde_json::Map<String, serde_json::Value>;

/// Most tags one record may carry.
pub const TAGS_MAX: usize = 50;
/// Most keys in a record's custom object.
pub const CUSTOM_KEYS_MAX: usize = 100;
