//! Business rejections. Only the reasons a command is refused live here: no
//! concurrency conflicts (the event store owns those) and no infrastructure
//! failures (the domain does no I/O).

use serde::Serialize;

/// One field that failed validation, named as it is on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a command was refused. A refused command yields no events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// One or more fields failed validation. Fix the input and send it again
    /// (HTTP 422 with the per-field details).
    #[error("validation failed: {}", describe(.0))]
    Validation(Vec<FieldError>),
    /// The command addresses a record that does not exist (HTTP 404).
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    /// A create command addressed a stream that already holds a record. The
    /// caller reused an id; generate a fresh one (HTTP 409).
    #[error("{kind} already exists")]
    AlreadyExists { kind: &'static str },
    /// The record is archived and refuses changes; its history stays readable
    /// (HTTP 409).
    #[error("{kind} is archived and refuses changes")]
    Archived { kind: &'static str },
    /// The record's personal data was erased: it takes no more changes,
    /// and what is left of it stays readable (HTTP 410).
    #[error("{kind} is erased and refuses changes")]
    Erased { kind: &'static str },
    /// The command breaks a rule of the record's current state, for example
    /// moving a closed deal (HTTP 409). Reload the record before retrying.
    #[error("{0}")]
    InvalidState(String),
}

impl DomainError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors so that one response names every bad field at once.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Records the error of `result` under `field` and returns the value, if any.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.errors.push(FieldError::new(field, message));
                None
            }
        }
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// `Ok(value)` when nothing failed, else every collected field error.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, DomainError> {
        if self.errors.is_empty() {
            Ok(value())
        } else {
            Err(DomainError::Validation(self.errors))
        }
    }
}
