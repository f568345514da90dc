//! The append-only event log: the only source of truth of the system.
//!
//! Owns the log's envelope (position, stream, version, type, schema version,
//! actor, times, correlation, hash), its schema migrations, optimistic
//! concurrency per stream, gapless global positions, the hash chain, group
//! commit and idempotent appends, over SQLite (embedded default) and
//! PostgreSQL behind one `Backend` trait.
//!
//! Personal fields travel beside an event's data and are stored sealed
//! with their data subject's key, which an append can destroy (`seal`).
//!
//! It must not: update or delete an event (the databases refuse it too),
//! know any read model, or know HTTP. Event payloads are opaque JSON here;
//! the `domain` crate gives them meaning.

mod backend;
mod claims;
mod error;
mod hash;
mod hook;
mod model;
mod plan;
mod pool;
mod postgres;
mod seal;
mod sqlite;
mod sqlite_appender;
mod store;
mod writer;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{Backend, BatchOutcome};
pub use error::{StoreError, rusqlite_unavailable, sqlx_unavailable};
pub use hash::{GENESIS_HASH, event_hash};
pub use hook::{CommitHook, HookConnection};
pub use model::{
    APPEND_CLAIMS_MAX, APPEND_EVENTS_MAX, AppendRequest, AppendResult, CLAIM_BYTES_MAX, Claim, EVENT_DATA_BYTES_MAX,
    ExpectedVersion, IDENTIFIER_BYTES_MAX, LogFilter, NewEvent, Personal, READ_BATCH_MAX, RecordedEvent, Snapshot,
    TokenRecord, VerifyReport, to_stored_precision,
};
pub use pool::ping_if_idle;
pub use seal::{MasterKey, Sealed};
pub use sqlite::BulkReader;
pub use store::{CONNECT_WAIT_DEFAULT, Store, StoreOptions, WriteHealth, redact};
pub use writer::{GROUP_COMMIT_EVENTS_MAX, GROUP_COMMIT_REQUESTS_MAX, WRITER_QUEUE_MAX, advance};
