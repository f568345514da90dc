//! The store's errors, in three tiers: the caller's request is wrong, it lost
//! a race, or the infrastructure failed.

use crate::{AppendRequest, ExpectedVersion};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the expected version: someone else appended
    /// first. Reload the stream, decide again, and retry (HTTP 409 or 412).
    #[error("stream {stream_id} was expected at {expected} but is at {}", describe_version(.actual))]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        /// The stream's version when the append was refused, when known.
        actual: Option<u64>,
    },
    /// The idempotency key was first used for another stream. A client bug:
    /// use a fresh key for a different request (HTTP 422).
    #[error("idempotency key {key:?} was already used for another stream")]
    IdempotencyKeyReused { key: String },
    /// The append would take a value another stream holds (see `Claim`);
    /// nothing was written (HTTP 409, naming the holder).
    #[error("{claim} is already held by {holder}")]
    Claimed { claim: String, holder: String },
    /// The append breaks a limit or is malformed; nothing was written. Fix the
    /// request; retrying it unchanged fails the same way.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// A stored row could not be read back: the database was changed outside
    /// the store. Run `verify` and restore from a backup.
    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: u64, reason: String },
    /// The store is shutting down and takes no more appends.
    #[error("the event store is closed")]
    Closed,
    /// The database failed or is unreachable. Retry later; nothing was
    /// acknowledged, so nothing was lost.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// As `Database`, from SQLite's append connection.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought up to date.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A bug: the append's own code (or its commit hook) panicked. The
    /// batch was rolled back and nothing acknowledged; the store goes on.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database URL or options are not usable.
    #[error("configuration: {0}")]
    Config(String),
}

fn describe_version(actual: &Option<u64>) -> String {
    match actual {
        Some(version) => format!("version {version}"),
        None => "another version".into(),
    }
}

/// Whether a database error says the database cannot serve now (it is
/// unreachable, full, read-only, locked or shutting down) rather than that
/// the request or the software is wrong: worth retrying after a while.
pub fn sqlx_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| unavailable_code(&code)),
        _ => false,
    }
}

/// SQLite result codes (primary, or extended with the primary in the low
/// byte) and PostgreSQL SQLSTATE classes that mean "not now".
fn unavailable_code(code: &str) -> bool {
    // A SQLSTATE has five characters; SQLite's extended codes are below 10,000.
    if code.len() < 5
        && let Ok(sqlite) = code.parse::<i32>()
    {
        // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
        return matches!(sqlite & 0xff, 5 | 6 | 8 | 10 | 13 | 14);
    }
    // 08 connection exception, 53 insufficient resources, 57P operator
    // intervention (shutdown), 40001/40P01 serialization and deadlock.
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "40001" || code == "40P01"
}

/// `sqlx_unavailable` for SQLite's native connections.
pub fn rusqlite_unavailable(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => unavailable_code(&failure.extended_code.to_string()),
        _ => false,
    }
}

impl StoreError {
    /// A short name of the kind of failure, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conflict { .. } | Self::Claimed { .. } => "conflict",
            Self::IdempotencyKeyReused { .. } | Self::InvalidAppend(_) => "refused",
            Self::Corrupt { .. } => "corrupt",
            Self::Closed => "closed",
            Self::Database(_) | Self::Sqlite(_) if self.is_unavailable() => "unavailable",
            Self::Database(_) | Self::Sqlite(_) | Self::Migration(_) => "database",
            Self::Internal(_) => "internal",
            Self::Config(_) => "config",
        }
    }

    /// Whether the database could not take or answer the request for now:
    /// nothing was written, and the same request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(error) => sqlx_unavailable(error),
            Self::Sqlite(error) => rusqlite_unavailable(error),
            _ => false,
        }
    }

    /// Maps a failed insert of `requests`. The unique keys on (stream,
    /// version) and on idempotency keys are a backstop behind the writer lock:
    /// they fire only if someone wrote to the log without taking it. For a
    /// lone request that is its conflict; for a batch, the writer retries each
    /// request alone to find the one. The driver says whether `error` is a
    /// `unique_violation` (by its named check or code, never a bare number).
    pub(crate) fn from_insert(error: impl Into<Self>, unique_violation: bool, requests: &[AppendRequest]) -> Self {
        match requests {
            [request] if unique_violation => Self::Conflict {
                stream_id: request.stream_id.clone(),
                expected: request.expected,
                actual: None,
            },
            _ => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unavailable_code;

    #[test]
    fn a_full_locked_or_unreachable_database_is_unavailable_a_broken_rule_is_not() {
        for code in ["5", "13", "778", "1032", "08006", "57P01", "53100", "40001"] {
            assert!(unavailable_code(code), "{code}");
        }
        // SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_ERROR, PostgreSQL unique and FK violations, syntax.
        for code in ["787", "1", "23505", "23503", "42601"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }
}
