//! SQLite appends on a thread of their own.
//!
//! sqlx runs every SQLite statement on its connection's worker thread and
//! hands each statement, and each row, across threads. A group commit is
//! about a dozen statements (BEGIN, tail, versions, insert, the commit
//! hook's loads and upserts, COMMIT), so it paid two dozen thread wake-ups,
//! each a wait for a core on a busy machine: measured, more than half of a
//! commit's time was spent between threads, not in SQLite. Here one native
//! connection, owned by one thread, runs a whole transaction, commit hook
//! included, without leaving that thread: the writer task hands it a batch
//! and gets the outcome back, one hop each way.
//!
//! The connection is opened with the same settings as sqlx's (WAL,
//! `synchronous = FULL`, busy timeout, foreign keys); `BEGIN IMMEDIATE`
//! takes SQLite's write lock before the tail is read, as before. After a
//! failed transaction the connection is rolled back and used again: a full
//! disk or an I/O error fails the batches it hits, not every batch after.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::backend::BatchOutcome;
use crate::hook::{CommitHook, HookConnection};
use crate::model::to_u64;
use crate::plan::{self, BatchContext, Plan, StoredKey, Tail};
use crate::seal::{KEY_CACHE_SUBJECTS, KeyCache, Keyring, SubjectKey};
use crate::sqlite::{format_time, parse_time};
use crate::{AppendRequest, StoreError};

/// Prepared statements kept per connection: the store's own few and the
/// commit hook's, whose texts vary with the number of rows they name.
const STATEMENT_CACHE: usize = 256;

/// WAL pages after which a commit checkpoints (SQLite's default is 1,000).
/// A page that many commits change (an index's upper levels, the state row)
/// is copied into the database file once per checkpoint, so fewer, larger
/// checkpoints copy less: 32 clients creating, 1,000 pages 5,570–5,650/s,
/// 3,000 pages 5,700–6,135/s at the same p99; 10,000 pages 6,400/s, but the
/// commit that checkpoints waits long enough to lift the p99 from 20 to 28
/// ms. The WAL file stays under about 12 MB.
const CHECKPOINT_PAGES: u32 = 3_000;

type Outcome = Result<(BatchOutcome, Option<u64>), StoreError>;

struct Job {
    requests: Vec<AppendRequest>,
    hook: Option<Arc<dyn CommitHook>>,
    reply: oneshot::Sender<Outcome>,
}

/// The append thread. Dropping it ends the thread and closes its connection.
pub(crate) struct Appender {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Appender")
    }
}

impl Appender {
    /// Opens the append connection on `path` and starts its thread.
    pub fn open(path: &Path, busy_timeout: Duration, keyring: Keyring) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        // A destroyed key's bytes are overwritten in its page, not left in
        // the page's free space (`fast`: where that costs no extra I/O).
        conn.pragma_update(None, "secure_delete", "fast")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("crm-sqlite-append".into())
            .spawn(move || {
                let mut conn = conn;
                let mut keys = KeyCache::new(KEY_CACHE_SUBJECTS);
                while let Ok(job) = queue.recv() {
                    // A panic (a bug, most likely in the hook) fails its
                    // batch, not every batch after it.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        commit(&mut conn, &job.requests, job.hook.as_deref(), &keyring, &mut keys)
                    }))
                    .unwrap_or_else(|_| {
                        roll_back(&conn);
                        Err(StoreError::Internal("an append panicked and was rolled back".into()))
                    });
                    // A caller that gave up waiting is not an error here:
                    // the writer task answers (or not) its own callers.
                    let _ = job.reply.send(outcome);
                }
            })
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite append thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Commits `requests` in one transaction on the append thread.
    pub async fn commit(&self, requests: &[AppendRequest], hook: Option<&Arc<dyn CommitHook>>) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            requests: requests.to_vec(),
            hook: hook.cloned(),
            reply,
        };
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// One group commit, BEGIN IMMEDIATE to COMMIT; rolled back on any error.
/// The hook runs in the same transaction without a savepoint of its own (a
/// savepoint journals every page the hook first touches, about a tenth of
/// this thread's work): if it fails, the whole batch is rolled back and
/// committed again without it, as on PostgreSQL.
fn commit(
    conn: &mut Connection,
    requests: &[AppendRequest],
    hook: Option<&dyn CommitHook>,
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Outcome {
    match commit_once(conn, requests, hook, keyring, keys) {
        Err(Failure::Hook(reason)) => {
            tracing::warn!(%reason, "the commit hook failed; the events commit without it");
            commit_once(conn, requests, None, keyring, keys).map_err(Failure::into_error)
        }
        outcome => outcome.map_err(Failure::into_error),
    }
}

/// Why a group commit failed: the append itself, or only the hook.
enum Failure {
    Append(StoreError),
    Hook(String),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Self::Append(error) => error,
            Self::Hook(reason) => StoreError::Internal(format!("the commit hook failed: {reason}")),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Append(error)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Self::Append(error.into())
    }
}

fn commit_once(
    conn: &mut Connection,
    requests: &[AppendRequest],
    hook: Option<&dyn CommitHook>,
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Result<(BatchOutcome, Option<u64>), Failure> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let outcome = in_transaction(conn, requests, hook, keyring, keys);
    let outcome = outcome.and_then(|done| {
        conn.execute_batch("COMMIT")?;
        Ok(done)
    });
    match outcome {
        Ok(Done {
            outcomes,
            covered,
            subjects,
            erased,
        }) => {
            keys.committed(subjects, erased);
            Ok((outcomes, covered))
        }
        Err(failure) => {
            roll_back(conn);
            Err(failure)
        }
    }
}

/// A transaction that is ready to commit: its outcomes, how far the hook
/// got, and the subjects' keys for the cache once it has committed.
struct Done {
    outcomes: BatchOutcome,
    covered: Option<u64>,
    subjects: std::collections::HashMap<uuid::Uuid, Option<SubjectKey>>,
    erased: bool,
}

/// Ends the transaction a failed append left open, if any. The failure is
/// what the caller hears; a failed rollback leaves SQLite to roll back
/// itself when the connection next begins.
fn roll_back(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(error) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(%error, "rolling back a failed append");
    }
}

fn in_transaction(
    conn: &mut Connection,
    requests: &[AppendRequest],
    hook: Option<&dyn CommitHook>,
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Result<Done, Failure> {
    let (tail, context) = load_context(conn, requests, keyring, keys)?;
    let plan = plan::plan(tail, context, requests, Utc::now(), keyring);
    if let Err(error) = insert(conn, &plan) {
        let unique_violation = unique_violation(&error);
        return Err(StoreError::from_insert(error, unique_violation, requests).into());
    }
    let covered = match hook {
        // The hook's statements run on this connection and complete at
        // once; nothing it awaits needs a runtime.
        Some(hook) if !plan.events.is_empty() => {
            futures_executor::block_on(hook.in_transaction(HookConnection::Sqlite(conn), &plan.events))
                .map_err(|reason| Failure::Hook(reason.to_string()))?
        }
        _ => None,
    };
    Ok(Done {
        outcomes: plan.outcomes,
        covered,
        erased: !plan.erased.is_empty(),
        subjects: plan.subjects,
    })
}

fn load_context(
    conn: &Connection,
    requests: &[AppendRequest],
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Result<(Tail, BatchContext), StoreError> {
    let erasures: i64 = conn
        .prepare_cached("SELECT erasures FROM store_format")?
        .query_row([], |row| row.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Internal("the store_format table has lost its row".into()))?;
    if !keys.check(erasures) {
        tracing::debug!("an erasure was committed: the cached keys are forgotten");
    }
    let tail = conn
        .prepare_cached("SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1")?
        .query_row([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let tail = match tail {
        Some((position, hash, recorded_at)) => {
            let position = to_u64(position);
            Tail {
                position,
                hash,
                recorded_at: Some(parse_time(position, &recorded_at)?),
            }
        }
        None => Tail::empty(),
    };
    let touched = plan::touched(requests);
    let mut context = BatchContext::default();
    let mut version = conn.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")?;
    for stream in touched.streams {
        let current: i64 = version.query_row([&stream], |row| row.get(0))?;
        context.stream_versions.insert(stream, to_u64(current));
    }
    let mut stored = conn.prepare_cached(
        "SELECT idempotency_key, stream_id, first_position, last_position, stream_version, request_hash \
         FROM idempotency_keys WHERE idempotency_key = ?",
    )?;
    for key in touched.keys {
        let found = stored
            .query_row([&key], |row| {
                Ok(StoredKey {
                    key: row.get(0)?,
                    stream_id: row.get(1)?,
                    first_position: to_u64(row.get(2)?),
                    last_position: to_u64(row.get(3)?),
                    stream_version: to_u64(row.get(4)?),
                    request_hash: row.get(5)?,
                })
            })
            .optional()?;
        if let Some(found) = found {
            context.keys.insert(key, found);
        }
    }
    let mut holder = conn.prepare_cached("SELECT stream_id FROM claims WHERE claim = ?")?;
    for claim in touched.claims {
        if let Some(stream) = holder.query_row([&claim], |row| row.get(0)).optional()? {
            context.claims.insert(claim, stream);
        }
    }
    let mut key = conn.prepare_cached("SELECT key FROM subject_keys WHERE subject = ?")?;
    // A subject the cache does not hold is most often one the log has not
    // named before (a new contact): its key is made and stored at once,
    // one statement; only if a row is there already is it looked up.
    let mut new_key =
        conn.prepare_cached("INSERT INTO subject_keys (subject, key) VALUES (?, ?) ON CONFLICT (subject) DO NOTHING")?;
    for subject in touched.subjects {
        if let Some(known) = keys.get(&subject) {
            context.subjects.insert(subject, known);
            continue;
        }
        if touched.sealing.contains(&subject) {
            let (made, stored) = keyring.generate(subject);
            if new_key.execute(params![subject.as_bytes().as_slice(), stored.0])? == 1 {
                context.subjects.insert(subject, Some(made));
                continue;
            }
        }
        let stored = key
            .query_row([subject.as_bytes().as_slice()], |row| row.get::<_, Option<Vec<u8>>>(0))
            .optional()?;
        if let Some(stored) = stored {
            let key = stored.map(|stored| keyring.unwrap_key(subject, &stored)).transpose()?;
            context.subjects.insert(subject, key);
        }
    }
    Ok((tail, context))
}

fn insert(conn: &Connection, plan: &Plan) -> Result<(), rusqlite::Error> {
    let Plan {
        events,
        keys,
        claims,
        new_subjects,
        erased,
        ..
    } = plan;
    let now = format_time(Utc::now());
    // Keys the plan made for subjects `load_context` gave none: on SQLite
    // there are none, since it stores a new subject's key as it looks, but
    // a key that sealed an event must never go unstored.
    let mut new_key = conn.prepare_cached("INSERT INTO subject_keys (subject, key) VALUES (?, ?)")?;
    for (subject, key) in new_subjects {
        new_key.execute(params![subject.as_bytes().as_slice(), key.0])?;
    }
    let mut erase = conn.prepare_cached(
        "INSERT INTO subject_keys (subject, key, erased_at) VALUES (?, NULL, ?) \
         ON CONFLICT (subject) DO UPDATE SET key = NULL, erased_at = excluded.erased_at",
    )?;
    for subject in erased {
        erase.execute(params![subject.as_bytes().as_slice(), now])?;
    }
    if !erased.is_empty() {
        conn.prepare_cached("UPDATE store_format SET erasures = erasures + 1")?
            .execute([])?;
    }
    let mut event = conn.prepare_cached(
        "INSERT INTO events (position, stream_id, version, event_type, schema_version, data, actor, \
         occurred_at, recorded_at, correlation_id, causation_id, hash, data_subject, sealed) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for e in events {
        event.execute(params![
            e.position as i64,
            e.stream_id,
            e.version as i64,
            e.event_type,
            e.schema_version,
            e.data,
            e.actor,
            format_time(e.occurred_at),
            format_time(e.recorded_at),
            e.correlation_id.map(|id| id.to_string()),
            e.causation_id.map(|id| id.to_string()),
            e.hash,
            e.sealed.as_ref().map(|s| s.subject.as_bytes().to_vec()),
            e.sealed.as_ref().map(|s| s.stored.as_slice()),
        ])?;
    }
    let mut key = conn.prepare_cached(
        "INSERT INTO idempotency_keys (idempotency_key, stream_id, first_position, last_position, \
         stream_version, request_hash) VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    for k in keys {
        key.execute(params![
            k.key,
            k.stream_id,
            k.first_position as i64,
            k.last_position as i64,
            k.stream_version as i64,
            k.request_hash,
        ])?;
    }
    let mut release = conn.prepare_cached("DELETE FROM claims WHERE claim = ?")?;
    let mut take = conn.prepare_cached(
        "INSERT INTO claims (claim, stream_id) VALUES (?, ?) \
         ON CONFLICT (claim) DO UPDATE SET stream_id = excluded.stream_id",
    )?;
    for (claim, holder) in claims {
        match holder {
            Some(stream) => take.execute(params![claim, stream])?,
            None => release.execute([claim])?,
        };
    }
    Ok(())
}

/// Whether a failed insert hit a unique key (see `StoreError::from_insert`).
fn unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if [rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY]
                .contains(&failure.extended_code)
    )
}

#[cfg(test)]
mod tests {
    /// The SQLite library in this build is the one `.cargo/config.toml`
    /// asks for: without memory statistics and without the page cache that
    /// all connections share, each behind one process-wide mutex that the
    /// readers, the appender and the projector queued on.
    #[test]
    fn sqlite_is_built_without_its_process_wide_mutexes() -> rusqlite::Result<()> {
        let conn = rusqlite::Connection::open_in_memory()?;
        let mut statement = conn.prepare("PRAGMA compile_options")?;
        let options = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        assert!(
            options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"),
            "memory statistics are on: {options:?}"
        );
        assert!(
            !options.iter().any(|option| option == "ENABLE_MEMORY_MANAGEMENT"),
            "the shared page cache is on: {options:?}"
        );
        Ok(())
    }
}
