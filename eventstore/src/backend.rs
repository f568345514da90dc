//! The one trait both databases implement. Everything above it (validation,
//! group commit, waiting for new events, verification) is shared.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::hook::CommitHook;
use crate::{AppendRequest, AppendResult, LogFilter, RecordedEvent, Snapshot, StoreError, TokenRecord};

/// The head of the log (0 when empty), in SQL both databases read alike.
pub(crate) const HEAD_SQL: &str = "SELECT COALESCE(MAX(position), 0) FROM events";

/// The first position whose personal fields are sealed (migration 0007).
pub(crate) const SEALED_FROM_SQL: &str = "SELECT COALESCE(MIN(sealed_from), 1) FROM store_format";

/// One outcome per request of a committed batch, in request order.
pub type BatchOutcome = Vec<Result<AppendResult, StoreError>>;

pub trait Backend: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn name(&self) -> &'static str;

    /// Appends a batch of requests in one transaction that holds the log's
    /// single-writer lock, running `hook` inside it (its failure undone, see `hook`) on the
    /// events it inserts. A request that conflicts fails alone; an `Err` for
    /// the whole batch means nothing was written. Also returns what the hook
    /// returned.
    fn commit<'a>(
        &'a self,
        requests: &'a [AppendRequest],
        hook: Option<&'a Arc<dyn CommitHook>>,
    ) -> BoxFuture<'a, Result<(BatchOutcome, Option<u64>), StoreError>>;

    /// Follows appends made by other processes on the same database, calling
    /// `appended` with the last position of each, for as long as the returned
    /// future runs (PostgreSQL: notified at their commit; SQLite: seen within
    /// 50 ms). `None` would leave readers to see others' appends when they
    /// next read the head.
    fn follow_appends(&self, appended: Box<dyn Fn(u64) + Send + Sync>) -> Option<BoxFuture<'static, ()>>;

    /// A stream's events from `from_version` (1-based) on, oldest first.
    fn read_stream<'a>(
        &'a self,
        stream_id: &'a str,
        from_version: u64,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>>;

    /// Up to `limit` events with a position above `after`, in position order.
    fn read_all(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>>;

    /// A reader for long runs of the log (rebuilds, reports as of a date) on
    /// a blocking thread: on SQLite a native connection of its own, so that
    /// no row crosses to sqlx's worker thread and back; `None` where the
    /// async `read_all` serves as well (PostgreSQL's rows arrive in bulk).
    fn bulk_reader(&self) -> Result<Option<crate::BulkReader>, StoreError> {
        Ok(None)
    }

    /// Up to `limit` events after `after` that match `filter`, in position order.
    fn read_filtered<'a>(
        &'a self,
        filter: &'a LogFilter,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>>;

    /// Stores a read model's state with the position it reflects, replacing
    /// the previous one in a single statement.
    fn save_snapshot<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), StoreError>>;

    fn load_snapshot<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>>;

    /// Stores a new API token.
    fn save_token<'a>(&'a self, token: &'a TokenRecord) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks the unrevoked tokens `which` names revoked; how many there were.
    fn revoke_tokens<'a>(&'a self, which: Tokens<'a>, at: DateTime<Utc>) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The token with this public id, revoked or not.
    fn find_token<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>>;

    /// The position of the last committed event, 0 for an empty log.
    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The result of the append that stored this idempotency key, if any.
    fn find_idempotent<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<AppendResult>, StoreError>>;

    /// The stream that holds `claim`, if any.
    fn claim_holder<'a>(&'a self, claim: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// The first position whose personal fields the log holds sealed: 1,
    /// unless the store was made before they were (its earlier events hold
    /// them in plain text, out of erasure's reach).
    fn sealed_from(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Whether the log predates claims and their values still wait to be
    /// filled in (`fill_claims`).
    fn claims_unfilled(&self) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Fills in the claims of a log that predates them, as its owner folded
    /// them from the whole log up to `head`: replaces every claim, in one
    /// transaction under the log's writer lock. Writes nothing and returns
    /// false if the log has moved past `head` (fold on, retry).
    fn fill_claims<'a>(&'a self, claims: &'a [(String, String)], head: u64) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Closes the connections after in-flight work.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// The tokens a revocation reaches.
#[derive(Debug, Clone, Copy)]
pub enum Tokens<'a> {
    /// The one with this public id.
    Id(&'a str),
    /// Every token of this user.
    OfUser(&'a str),
}

impl<'a> Tokens<'a> {
    /// The `api_tokens` column that names them, and its value.
    pub fn column(self) -> (&'static str, &'a str) {
        match self {
            Self::Id(id) => ("token_id", id),
            Self::OfUser(user_id) => ("user_id", user_id),
        }
    }
}
