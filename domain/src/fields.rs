//! One declaration per record kind generates its fields, its change set and
//! the parsing of untrusted input into changes, so that adding a field is a
//! one-line change that cannot forget the diff, the apply or the validation.
//!
//! - `required` fields must be present on create and can never be cleared;
//! - `optional` fields may be absent, and `null` clears them;
//! - `lists` (tags, ids, custom fields) are never absent, only empty.

/// Declares `$fields` (a record's current values) and `$changes` (which fields
/// one event changed, and to what).
macro_rules! record_fields {
    (
        $(#[$fields_doc:meta])* fields $fields:ident;
        $(#[$changes_doc:meta])* changes $changes:ident;
        required { $($required:ident: $required_type:ty),* $(,)? }
        optional { $($optional:ident: $optional_type:ty),* $(,)? }
        lists { $($list:ident: $list_type:ty),* $(,)? }
    ) => {
        $(#[$fields_doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $fields {
            $(pub $required: $required_type,)*
            $(#[serde(default)] pub $optional: Option<$optional_type>,)*
            $(#[serde(default)] pub $list: $list_type,)*
        }

        $(#[$changes_doc])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $changes {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $required: Option<$required_type>,
            )*
            $(
                #[serde(default, deserialize_with = "crate::patch::present", skip_serializing_if = "Option::is_none")]
                pub $optional: Option<Option<$optional_type>>,
            )*
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $list: Option<$list_type>,
            )*
        }

        impl $changes {
            /// The wire names of every field, in declaration order.
            pub const FIELD_NAMES: &'static [&'static str] = &[
                $(stringify!($required),)* $(stringify!($optional),)* $(stringify!($list),)*
            ];

            pub fn is_empty(&self) -> bool {
                true $(&& self.$required.is_none())* $(&& self.$optional.is_none())* $(&& self.$list.is_none())*
            }

            /// Only the fields whose proposed value differs from `current`.
            pub fn diff(&self, current: &$fields) -> Self {
                Self {
                    $($required: crate::patch::changed(&current.$required, &self.$required),)*
                    $($optional: crate::patch::changed(&current.$optional, &self.$optional),)*
                    $($list: crate::patch::changed(&current.$list, &self.$list),)*
                }
            }

            pub fn apply_to(&self, fields: &mut $fields) {
                $(crate::patch::apply(&mut fields.$required, &self.$required);)*
                $(crate::patch::apply(&mut fields.$optional, &self.$optional);)*
                $(crate::patch::apply(&mut fields.$list, &self.$list);)*
            }

            /// The fields of a new record, or the required fields that are missing.
            pub fn into_fields(self) -> Result<$fields, crate::DomainError> {
                let mut validator = crate::Validator::default();
                $(
                    if self.$required.is_none() {
                        validator.push(stringify!($required), "is required");
                    }
                )*
                let Self { $($required,)* $($optional,)* $($list,)* } = self;
                validator.finish(|| $fields {
                    $($required: $required.expect("checked above"),)*
                    $($optional: $optional.flatten(),)*
                    $($list: $list.unwrap_or_default(),)*
                })
            }

            /// Parses untrusted input. Every bad field is reported, not just the
            /// first; keys in `extra` are left for the caller to handle.
            pub fn parse(input: &crate::Input, extra: &[&str]) -> Result<Self, crate::DomainError> {
                use crate::FromInput;
                let mut validator = crate::Validator::default();
                for key in input.keys() {
                    if !Self::FIELD_NAMES.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
                        validator.push(key, "is not a field of this record");
                    }
                }
                let mut changes = Self::default();
                $(
                    if let Some(value) = input.get(stringify!($required)) {
                        changes.$required = if value.is_null() {
                            validator.push(stringify!($required), "is required and cannot be cleared");
                            None
                        } else {
                            validator.check(stringify!($required), <$required_type>::from_input(value))
                        };
                    }
                )*
                $(
                    if let Some(value) = input.get(stringify!($optional)) {
                        changes.$optional = if value.is_null() {
                            Some(None)
                        } else {
                            validator.check(stringify!($optional), <$optional_type>::from_input(value)).map(Some)
                        };
                    }
                )*
                $(
                    if let Some(value) = input.get(stringify!($list)) {
                        changes.$list = if value.is_null() {
                            Some(Default::default())
                        } else {
                            validator.check(stringify!($list), <$list_type>::from_input(value))
                        };
                    }
                )*
                validator.finish(|| changes)
            }
        }
    };
}

pub(crate) use record_fields;
