//! Work that commits together with the events it is shown.
//!
//! The writer runs a `CommitHook` inside each append transaction, after the
//! batch's events are inserted and before COMMIT: what the hook writes
//! commits with the events or not at all, and a hook that fails has its
//! writes undone while the events still commit (the whole transaction is
//! rolled back and the batch committed again without the hook: a savepoint
//! would cost two more round trips per commit on PostgreSQL, and on SQLite
//! the journaling of every page the hook first touches, about a tenth of
//! the append thread's work). The log never waits on, nor fails because of,
//! what a hook does with them. This crate knows
//! nothing of what the hook is for (the read models use it to fold each
//! batch in the same transaction that appends it).

use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;
use sqlx::PgConnection;

use crate::RecordedEvent;

/// The append transaction's connection, as the hook gets it.
#[derive(Debug)]
pub enum HookConnection<'a> {
    /// SQLite's append connection, on the thread that owns it.
    Sqlite(&'a mut rusqlite::Connection),
    Postgres(&'a mut PgConnection),
}

pub trait CommitHook: Send + Sync + 'static {
    /// Runs inside the append transaction with the events it inserts, in
    /// position order. Returns what the hook wants to hear back once they
    /// committed (for the read models: the position they now cover), or an
    /// error, which undoes the hook's writes and nothing else.
    fn in_transaction<'a>(
        &'a self,
        conn: HookConnection<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<Option<u64>, String>>;

    /// Called after COMMIT with what `in_transaction` returned (`None` if it
    /// failed or did not run).
    fn committed(&self, covered: Option<u64>);
}

/// The hook the writer runs, set once a reader of the log registers it.
pub(crate) type HookSlot = Arc<RwLock<Option<Arc<dyn CommitHook>>>>;

pub(crate) fn current(slot: &HookSlot) -> Option<Arc<dyn CommitHook>> {
    slot.read()
        .map(|hook| hook.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
}
