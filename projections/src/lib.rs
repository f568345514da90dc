//! Read models folded from the event log: record views, field-level history
//! and timelines, the pipeline, data quality, neglected accounts and owner
//! figures. One fold (`CrmModel::apply`) serves live updates, rebuilds and
//! reports as of any date; the live read models are tables in the log's own
//! database, one row per record, folded in batches with their checkpoint.
//!
//! This crate reads events and never appends them. Every read model can be
//! thrown away and rebuilt from the log.

mod as_of;
mod counts;
mod history;
mod model;
mod projector;
pub mod reports;
mod rows;
mod schema;
mod sql;
mod sums;
mod tables;
mod views;

pub use as_of::{AS_OF_CACHED, Cut};
pub use history::{ActorRef, FieldChange, HistoryEntry, TimelineItem, decode, history, personal_part, timeline};
pub use model::{
    AccountView, ContactView, CrmModel, DealClosing, DealView, EventRef, InteractionRef, InteractionView, Keys,
    MODEL_VERSION, RecordMeta, UserView,
};
pub use projector::{
    AS_OF_FOLDS_MAX, AsOf, DUPLICATES_NAMED_MAX, FOLD_BATCH_EVENTS, LIVE_POLL, Projector, ProjectorOptions,
    REBUILD_BATCH_EVENTS, REBUILD_ROWS_MAX, RebuildReport,
};
pub use tables::{ListFilter, side_pool};
pub use views::{erasure_json, interaction_view, record_fields, record_view, view_of};

/// Why a read model could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The log could not be read; retry later.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
    /// A stored event does not decode: the log was altered or written by
    /// newer software. Run `crm verify`; upgrade if it passes.
    #[error("the log holds an unreadable event at position {position}: {reason}")]
    Unreadable { position: u64, reason: String },
    /// The read-model tables could not be read or written; retry later.
    #[error("the read-model tables: {0}")]
    Database(#[from] sqlx::Error),
    /// As `Database`, on SQLite's append connection.
    #[error("the read-model tables: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A read-model row does not decode: the tables were altered by hand or
    /// by other software. `crm rebuild` refolds them from the log.
    #[error("the read-model tables are damaged: {0}")]
    ReadModel(String),
    /// Someone else is doing this already (a rebuild); try again once it ends.
    #[error("{0}")]
    Busy(String),
    /// The question cannot be answered as asked (a cursor no list gave, a
    /// filter naming nothing): fix the request; retrying it is useless.
    #[error("{0}")]
    BadRequest(String),
    /// A bug: a worker thread stopped (panicked) before it finished.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProjectionError {
    /// Whether the database could not answer for now (see
    /// `StoreError::is_unavailable`); the same request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Store(error) => error.is_unavailable(),
            Self::Database(error) => eventstore::sqlx_unavailable(error),
            Self::Sqlite(error) => eventstore::rusqlite_unavailable(error),
            _ => false,
        }
    }
}
