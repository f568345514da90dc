//! Work that commits together with the events it is shown.
//!
//! The writer runs a `CommitHook` inside each append transaction, after the
//! batch's events are inserted and before COMMIT, in a savepoint: what the
//! hook writes commits with the events or not at all, and a hook that fails
//! has its writes undone while the events still commit. The log never waits
//! on, nor fails because of, what a hook does with them. This crate knows
//! nothing of what the hook is for (the read models use it to fold each
//! batch in the same transaction that appends it).

use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;
use sqlx::PgConnection;

use crate::RecordedEvent;

/// The append transaction's connection, inside the hook's savepoint.
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

/// A backend's connection, as a hook sees it.
pub(crate) trait AsHookConnection {
    fn as_hook_connection(&mut self) -> HookConnection<'_>;
}

impl AsHookConnection for PgConnection {
    fn as_hook_connection(&mut self) -> HookConnection<'_> {
        HookConnection::Postgres(self)
    }
}

/// Runs `hook` in a savepoint of `tx`; its failure is logged and undone.
pub(crate) async fn run_in_savepoint<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    hook: &dyn CommitHook,
    events: &[RecordedEvent],
) -> Option<u64>
where
    DB: sqlx::Database,
    DB::Connection: AsHookConnection,
{
    let mut savepoint = match sqlx::Acquire::begin(&mut *tx).await {
        Ok(savepoint) => savepoint,
        Err(error) => {
            tracing::warn!(%error, "could not open a savepoint for the commit hook; it is skipped");
            return None;
        }
    };
    match hook.in_transaction(savepoint.as_hook_connection(), events).await {
        Ok(covered) => match savepoint.commit().await {
            Ok(()) => covered,
            Err(error) => {
                tracing::warn!(%error, "the commit hook's savepoint did not release");
                None
            }
        },
        Err(reason) => {
            tracing::warn!(%reason, "the commit hook failed; its writes are undone, the events commit");
            if let Err(error) = savepoint.rollback().await {
                tracing::warn!(%error, "rolling back the commit hook's savepoint failed");
            }
            None
        }
    }
}
