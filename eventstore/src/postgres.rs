//! PostgreSQL, for scale and for several server processes on one log.
//!
//! Why positions stay gapless and in commit order under concurrent writers:
//! a `bigserial` is handed out at INSERT but transactions commit in another
//! order, so a reader could see position 11 before 10 commits and skip 10
//! forever. Here every append transaction first takes
//! `LOCK TABLE events IN EXCLUSIVE MODE`. That lock admits readers (plain
//! SELECTs take ACCESS SHARE) but only one writer at a time, across all
//! processes. Holding it, the writer reads the tail and assigns
//! `tail + 1, tail + 2, ...` itself, so no position is ever skipped, and no
//! later position can commit before an earlier one. Group commit pays for the
//! serialisation: one lock, one round trip per step and one commit for a
//! whole batch of callers.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::backend::{Backend, BatchOutcome, HEAD_SQL, Tokens};
use crate::claims;
use crate::hook::{CommitHook, HookConnection};
use crate::model::to_u64;
use crate::plan::{self, BatchContext, Plan, StoredKey, Tail};
use crate::seal::{KEY_CACHE_SUBJECTS, KeyCache, Keyring, SubjectKey};
use crate::{AppendRequest, AppendResult, LogFilter, RecordedEvent, Snapshot, StoreError, StoreOptions, TokenRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(crate) struct PostgresBackend {
    connect: PgConnectOptions,
    /// The append connection, held by the writer task alone: no pool to
    /// check it out of, no ping before each commit. Dropped after a failed
    /// commit, so a restarted server is met with a new connection.
    appender: tokio::sync::Mutex<Appending>,
    /// How long a new connection may take before the server counts as unreachable.
    connect_wait: std::time::Duration,
    /// Everything else that writes (tokens, snapshots, migrations).
    writer: PgPool,
    readers: PgPool,
    /// The schema that holds the log, as the notifications of its appends
    /// name it.
    schema: String,
    keyring: Keyring,
}

/// What the writer task holds between commits.
struct Appending {
    conn: Option<PgConnection>,
    keys: KeyCache,
}

/// The channel every append notifies (migration 0005).
const APPENDS_CHANNEL: &str = "crm_log";
/// How long to wait before listening again after the connection failed.
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A schema name we can put in SQL without quoting surprises.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "schema {schema:?} must be lower case letters, digits and _"
        )))
    }
}

impl PostgresBackend {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let mut connect = PgConnectOptions::from_str(url)?;
        if let Some(schema) = &options.schema {
            check_schema(schema)?;
            let mut conn = connect_within(&connect, options.connect_wait).await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let writer = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_wait)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&writer).await?;
        let readers = PgPoolOptions::new()
            .max_connections(options.read_connections_max.max(1))
            .acquire_timeout(options.connect_wait)
            .test_before_acquire(false)
            .before_acquire(crate::pool::ping_if_idle)
            .connect_with(connect.clone())
            .await?;
        Ok(Self {
            connect,
            appender: tokio::sync::Mutex::new(Appending {
                conn: None,
                keys: KeyCache::new(KEY_CACHE_SUBJECTS),
            }),
            connect_wait: options.connect_wait,
            writer,
            readers,
            schema,
            keyring: crate::seal::Keyring::new(options.master_key.clone()),
        })
    }
}

/// A new connection, or `PoolTimedOut` (unavailable) if the server does not
/// answer within `wait`: a stopped or unreachable server fails a request in
/// bounded time, whatever the network does with the packets.
async fn connect_within(connect: &PgConnectOptions, wait: std::time::Duration) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(wait, PgConnection::connect_with(connect))
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// An event's columns, and its subject's key (none for an event without a
/// personal part, or once the subject is erased).
const EVENT_COLUMNS: &str = "position, stream_id, version, event_type, schema_version, data, actor, \
     occurred_at, recorded_at, correlation_id, causation_id, hash, data_subject, sealed, \
     (SELECT k.key FROM subject_keys k WHERE k.subject = events.data_subject) AS subject_key";

fn event_from_row(row: &PgRow, keyring: &Keyring) -> Result<RecordedEvent, StoreError> {
    let position = to_u64(row.try_get("position")?);
    let sealed = keyring.open_row(
        position,
        row.try_get("data_subject")?,
        row.try_get("sealed")?,
        row.try_get("subject_key")?,
    )?;
    let schema_version: i32 = row.try_get("schema_version")?;
    Ok(RecordedEvent {
        position,
        stream_id: row.try_get("stream_id")?,
        version: to_u64(row.try_get("version")?),
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(schema_version).map_err(|_| StoreError::Corrupt {
            position,
            reason: format!("schema version {schema_version}"),
        })?,
        data: row.try_get("data")?,
        actor: row.try_get("actor")?,
        occurred_at: row.try_get("occurred_at")?,
        recorded_at: row.try_get("recorded_at")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        hash: row.try_get("hash")?,
        sealed,
    })
}

fn key_from_row(row: &PgRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key: row.try_get("idempotency_key")?,
        stream_id: row.try_get("stream_id")?,
        first_position: to_u64(row.try_get("first_position")?),
        last_position: to_u64(row.try_get("last_position")?),
        stream_version: to_u64(row.try_get("stream_version")?),
        request_hash: row.try_get("request_hash")?,
    })
}

/// A row's `subject` and its `key` unwrapped (`None`: erased).
fn subject_key(row: &PgRow, keyring: &Keyring) -> Result<(Uuid, Option<SubjectKey>), StoreError> {
    let subject: Uuid = row.try_get("subject")?;
    let key = row.try_get::<Option<Vec<u8>>, _>("key")?;
    let key = key.map(|stored| keyring.unwrap_key(subject, &stored)).transpose()?;
    Ok((subject, key))
}

async fn load_context(
    conn: &mut PgConnection,
    requests: &[AppendRequest],
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Result<(Tail, BatchContext), StoreError> {
    let touched = plan::touched(requests);
    let mut context = BatchContext::default();
    // The subjects whose keys the cache holds (if no erasure has been
    // committed since: known once the count below is read), and the rest,
    // looked up in the same round trip.
    let mut cached = Vec::new();
    let mut unknown = Vec::new();
    for &subject in &touched.subjects {
        match keys.get(&subject) {
            Some(key) => cached.push((subject, key)),
            None => unknown.push(subject),
        }
    }
    // One round trip: each stream's version (one index lookup per stream;
    // `stream_id = ANY($1) GROUP BY` looks equivalent, but once PostgreSQL
    // switches the prepared statement to a generic plan it scans the whole
    // table: commits slowed linearly with the log's size), the stored keys
    // of the subjects not cached, and the tail with the erasure count.
    let rows = sqlx::query(
        "SELECT 0 AS part, s.stream_id, \
         COALESCE((SELECT MAX(e.version) FROM events e WHERE e.stream_id = s.stream_id), 0) AS version, \
         NULL::uuid AS subject, NULL::bytea AS key, \
         NULL::bigint AS position, NULL::text AS hash, NULL::timestamptz AS recorded_at, NULL::bigint AS erasures \
         FROM UNNEST($1::text[]) AS s(stream_id) \
         UNION ALL \
         SELECT 1, NULL, NULL, k.subject, k.key, NULL, NULL, NULL, NULL \
         FROM subject_keys k WHERE k.subject = ANY($2::uuid[]) \
         UNION ALL \
         SELECT 2, NULL, NULL, NULL, NULL, t.position, t.hash, t.recorded_at, f.erasures \
         FROM store_format f \
         LEFT JOIN (SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1) AS t ON TRUE",
    )
    .bind(&touched.streams)
    .bind(&unknown)
    .fetch_all(&mut *conn)
    .await?;
    let mut tail = Tail::empty();
    let mut erasures = None;
    for row in rows {
        match row.try_get::<i32, _>("part")? {
            0 => {
                context
                    .stream_versions
                    .insert(row.try_get("stream_id")?, to_u64(row.try_get("version")?));
            }
            1 => {
                let (subject, key) = subject_key(&row, keyring)?;
                context.subjects.insert(subject, key);
            }
            _ => {
                erasures = Some(row.try_get::<i64, _>("erasures")?);
                if let Some(position) = row.try_get::<Option<i64>, _>("position")? {
                    tail = Tail {
                        position: to_u64(position),
                        hash: row.try_get("hash")?,
                        recorded_at: Some(row.try_get("recorded_at")?),
                    };
                }
            }
        }
    }
    let erasures = erasures.ok_or_else(|| StoreError::Internal("the store_format table has lost its row".into()))?;
    if keys.check(erasures) {
        context.subjects.extend(cached);
    } else if !cached.is_empty() {
        // An erasure was committed since those keys were cached.
        let subjects: Vec<Uuid> = cached.into_iter().map(|(subject, _)| subject).collect();
        let rows = sqlx::query("SELECT subject, key FROM subject_keys WHERE subject = ANY($1)")
            .bind(&subjects)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let (subject, key) = subject_key(&row, keyring)?;
            context.subjects.insert(subject, key);
        }
    }
    if !touched.keys.is_empty() {
        let rows = sqlx::query("SELECT * FROM idempotency_keys WHERE idempotency_key = ANY($1)")
            .bind(&touched.keys)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let stored = key_from_row(&row)?;
            context.keys.insert(stored.key.clone(), stored);
        }
    }
    if !touched.claims.is_empty() {
        let rows = sqlx::query("SELECT claim, stream_id FROM claims WHERE claim = ANY($1)")
            .bind(&touched.claims)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            context.claims.insert(row.try_get("claim")?, row.try_get("stream_id")?);
        }
    }
    Ok((tail, context))
}

async fn insert(conn: &mut PgConnection, plan: &Plan) -> Result<(), sqlx::Error> {
    let Plan {
        events,
        keys,
        claims,
        new_subjects,
        erased,
        ..
    } = plan;
    if !erased.is_empty() {
        sqlx::query(
            "WITH counted AS (UPDATE store_format SET erasures = erasures + 1) \
             INSERT INTO subject_keys (subject, key, erased_at) \
             SELECT s, NULL, now() FROM UNNEST($1::uuid[]) AS n(s) \
             ON CONFLICT (subject) DO UPDATE SET key = NULL, erased_at = excluded.erased_at",
        )
        .bind(erased.iter().copied().collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !events.is_empty() {
        sqlx::query(
            // The keys of subjects first named here go in the same
            // statement: no round trip of their own.
            "WITH new_keys AS (INSERT INTO subject_keys (subject, key) \
             SELECT s, k FROM UNNEST($15::uuid[], $16::bytea[]) AS n(s, k)) \
             INSERT INTO events (position, stream_id, version, event_type, schema_version, data, actor, \
             occurred_at, recorded_at, correlation_id, causation_id, hash, data_subject, sealed) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::text[], \
             $7::text[], $8::timestamptz[], $9::timestamptz[], $10::uuid[], $11::uuid[], $12::text[], \
             $13::uuid[], $14::bytea[])",
        )
        .bind(events.iter().map(|e| e.position as i64).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.version as i64).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.schema_version as i32).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<DateTime<Utc>>>())
        .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<DateTime<Utc>>>())
        .bind(events.iter().map(|e| e.correlation_id).collect::<Vec<Option<Uuid>>>())
        .bind(events.iter().map(|e| e.causation_id).collect::<Vec<Option<Uuid>>>())
        .bind(events.iter().map(|e| e.hash.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.sealed.as_ref().map(|s| s.subject))
                .collect::<Vec<Option<Uuid>>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.sealed.as_ref().map(|s| s.stored.as_slice()))
                .collect::<Vec<Option<&[u8]>>>(),
        )
        .bind(new_subjects.iter().map(|(subject, _)| *subject).collect::<Vec<_>>())
        .bind(new_subjects.iter().map(|(_, key)| key.0.as_slice()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, stream_id, first_position, last_position, stream_version, request_hash) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])",
        )
        .bind(keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.stream_id.as_str()).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.first_position as i64).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.last_position as i64).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.stream_version as i64).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| k.request_hash.clone()).collect::<Vec<Option<String>>>())
        .execute(&mut *conn)
        .await?;
    }
    if !claims.is_empty() {
        // Values changing holder are cleared, then the held ones written.
        sqlx::query("DELETE FROM claims WHERE claim = ANY($1)")
            .bind(claims.keys().collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        let held: Vec<(&String, &String)> = claims
            .iter()
            .filter_map(|(claim, holder)| Some((claim, holder.as_ref()?)))
            .collect();
        if !held.is_empty() {
            sqlx::query("INSERT INTO claims (claim, stream_id) SELECT * FROM UNNEST($1::text[], $2::text[])")
                .bind(held.iter().map(|(claim, _)| claim.as_str()).collect::<Vec<_>>())
                .bind(held.iter().map(|(_, stream)| stream.as_str()).collect::<Vec<_>>())
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Commits a batch with its hook, or, if the hook fails, without it.
async fn commit_with_hook(
    conn: &mut PgConnection,
    requests: &[AppendRequest],
    hook: Option<&dyn CommitHook>,
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Result<(BatchOutcome, Option<u64>), StoreError> {
    match commit_once(conn, requests, hook, keyring, keys).await? {
        Committed::Done(outcomes, covered) => Ok((outcomes, covered)),
        Committed::HookFailed(reason) => {
            tracing::warn!(%reason, "the commit hook failed; the events commit without it");
            match commit_once(conn, requests, None, keyring, keys).await? {
                Committed::Done(outcomes, _) => Ok((outcomes, None)),
                Committed::HookFailed(_) => unreachable!("no hook ran"),
            }
        }
    }
}

/// One group commit. Every statement is a round trip, so there are few:
/// BEGIN with the lock, tail and versions, insert, the hook's, COMMIT.
/// The hook runs without a savepoint (two more round trips); when it
/// fails, the whole transaction is rolled back, for the caller to commit
/// the batch again without it.
async fn commit_once(
    conn: &mut PgConnection,
    requests: &[AppendRequest],
    hook: Option<&dyn CommitHook>,
    keyring: &Keyring,
    keys: &mut KeyCache,
) -> Result<Committed, StoreError> {
    let mut tx = conn.begin_with("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE").await?;
    let (tail, context) = load_context(&mut tx, requests, keyring, keys).await?;
    let plan = plan::plan(tail, context, requests, Utc::now(), keyring);
    if let Err(error) = insert(&mut tx, &plan).await {
        let unique_violation = error.as_database_error().is_some_and(|e| e.is_unique_violation());
        return Err(StoreError::from_insert(error, unique_violation, requests));
    }
    let covered = match hook {
        Some(hook) if !plan.events.is_empty() => {
            match hook
                .in_transaction(HookConnection::Postgres(&mut tx), &plan.events)
                .await
            {
                Ok(covered) => covered,
                Err(reason) => {
                    tx.rollback().await?;
                    return Ok(Committed::HookFailed(reason));
                }
            }
        }
        _ => None,
    };
    tx.commit().await?;
    keys.committed(plan.subjects, !plan.erased.is_empty());
    Ok(Committed::Done(plan.outcomes, covered))
}

enum Committed {
    Done(BatchOutcome, Option<u64>),
    /// The hook failed and nothing was written.
    HookFailed(String),
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn follow_appends(&self, appended: Box<dyn Fn(u64) + Send + Sync>) -> Option<BoxFuture<'static, ()>> {
        let pool = self.readers.clone();
        let prefix = format!("{} ", self.schema);
        Some(Box::pin(async move {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for other servers' appends; retrying");
                        tokio::time::sleep(LISTEN_RETRY).await;
                        continue;
                    }
                };
                if let Err(error) = listener.listen(APPENDS_CHANNEL).await {
                    tracing::warn!(%error, "cannot listen for other servers' appends; retrying");
                    tokio::time::sleep(LISTEN_RETRY).await;
                    continue;
                }
                // `recv` reconnects by itself after a lost connection (the
                // appends missed meanwhile are seen at the next head read).
                loop {
                    match listener.recv().await {
                        Ok(notification) => {
                            let position = notification
                                .payload()
                                .strip_prefix(&prefix)
                                .and_then(|last| last.parse::<u64>().ok());
                            if let Some(position) = position {
                                appended(position);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lost the feed of other servers' appends; listening again");
                            tokio::time::sleep(LISTEN_RETRY).await;
                            break;
                        }
                    }
                }
            }
        }))
    }

    fn commit<'a>(
        &'a self,
        requests: &'a [AppendRequest],
        hook: Option<&'a Arc<dyn CommitHook>>,
    ) -> BoxFuture<'a, Result<(BatchOutcome, Option<u64>), StoreError>> {
        Box::pin(async move {
            let mut appender = self.appender.lock().await;
            let Appending { conn, keys } = &mut *appender;
            let conn = match conn {
                Some(conn) => conn,
                slot => slot.insert(connect_within(&self.connect, self.connect_wait).await?),
            };
            let committed = commit_with_hook(conn, requests, hook.map(|hook| hook.as_ref()), &self.keyring, keys).await;
            if committed.is_err() {
                // Whatever failed may have been the connection itself.
                appender.conn = None;
            }
            committed
        })
    }

    fn read_stream<'a>(
        &'a self,
        stream_id: &'a str,
        from_version: u64,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(async move {
            let sql =
                format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version");
            let rows = sqlx::query(&sql)
                .bind(stream_id)
                .bind(from_version as i64)
                .fetch_all(&self.readers)
                .await?;
            rows.iter().map(|row| event_from_row(row, &self.keyring)).collect()
        })
    }

    fn read_all(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(async move {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
            let rows = sqlx::query(&sql)
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_all(&self.readers)
                .await?;
            rows.iter().map(|row| event_from_row(row, &self.keyring)).collect()
        })
    }

    fn read_filtered<'a>(
        &'a self,
        filter: &'a LogFilter,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(async move {
            let mut query =
                QueryBuilder::<Postgres>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > "));
            query.push_bind(after as i64);
            if let Some(actor) = &filter.actor {
                query.push(" AND actor = ").push_bind(actor.clone());
            }
            if let Some(at) = filter.recorded_since {
                query.push(" AND recorded_at >= ").push_bind(at);
            }
            if let Some(at) = filter.recorded_until {
                query.push(" AND recorded_at <= ").push_bind(at);
            }
            if let Some(at) = filter.occurred_since {
                query.push(" AND occurred_at >= ").push_bind(at);
            }
            if let Some(at) = filter.occurred_until {
                query.push(" AND occurred_at <= ").push_bind(at);
            }
            query.push(" ORDER BY position LIMIT ").push_bind(limit as i64);
            let rows = query.build().fetch_all(&self.readers).await?;
            rows.iter().map(|row| event_from_row(row, &self.keyring)).collect()
        })
    }

    fn save_snapshot<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO snapshots (name, position, data, saved_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, data = excluded.data, saved_at = excluded.saved_at",
            )
            .bind(&snapshot.name)
            .bind(snapshot.position as i64)
            .bind(&snapshot.data)
            .bind(snapshot.saved_at)
            .execute(&self.readers)
            .await?;
            Ok(())
        })
    }

    fn load_snapshot<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT name, position, data, saved_at FROM snapshots WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.readers)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(Snapshot {
                name: row.try_get("name")?,
                position: to_u64(row.try_get("position")?),
                data: row.try_get("data")?,
                saved_at: row.try_get("saved_at")?,
            }))
        })
    }

    fn save_token<'a>(&'a self, token: &'a TokenRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO api_tokens (token_id, secret_sha256, user_id, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&token.token_id)
                .bind(&token.secret_sha256)
                .bind(&token.user_id)
                .bind(token.created_at)
                .bind(token.revoked_at)
                .execute(&self.readers)
                .await?;
            Ok(())
        })
    }

    fn revoke_tokens<'a>(&'a self, which: Tokens<'a>, at: DateTime<Utc>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let (column, value) = which.column();
            let statement = format!("UPDATE api_tokens SET revoked_at = $1 WHERE {column} = $2 AND revoked_at IS NULL");
            let done = sqlx::query(&statement)
                .bind(at)
                .bind(value)
                .execute(&self.readers)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn find_token<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM api_tokens WHERE token_id = $1")
                .bind(token_id)
                .fetch_optional(&self.readers)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(TokenRecord {
                token_id: row.try_get("token_id")?,
                secret_sha256: row.try_get("secret_sha256")?,
                user_id: row.try_get("user_id")?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            }))
        })
    }

    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let head: i64 = sqlx::query_scalar(HEAD_SQL).fetch_one(&self.readers).await?;
            Ok(to_u64(head))
        })
    }

    fn find_idempotent<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<AppendResult>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM idempotency_keys WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.readers)
                .await?;
            row.map(|row| key_from_row(&row).map(|k| k.result(true))).transpose()
        })
    }

    fn claim_holder<'a>(&'a self, claim: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(claims::HOLDER)
                .bind(claim)
                .fetch_optional(&self.readers)
                .await?)
        })
    }

    fn sealed_from(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let from: i64 = sqlx::query_scalar(crate::backend::SEALED_FROM_SQL)
                .fetch_one(&self.readers)
                .await?;
            Ok(to_u64(from.max(1)))
        })
    }

    fn claims_unfilled(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let rows: i64 = sqlx::query_scalar(claims::UNFILLED).fetch_one(&self.readers).await?;
            Ok(rows > 0)
        })
    }

    fn fill_claims<'a>(&'a self, values: &'a [(String, String)], head: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            // The lock every append takes: no commit runs beside the fill.
            let mut tx = self
                .writer
                .begin_with("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE")
                .await?;
            let now: i64 = sqlx::query_scalar(HEAD_SQL).fetch_one(&mut *tx).await?;
            if to_u64(now) != head {
                return Ok(false);
            }
            sqlx::query(claims::FILL_CLEAR).execute(&mut *tx).await?;
            for chunk in values.chunks(claims::FILL_ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<Postgres>::new(claims::FILL_START);
                insert.push_values(chunk, |mut row, (claim, stream)| {
                    row.push_bind(claim).push_bind(stream);
                });
                insert.build().execute(&mut *tx).await?;
            }
            sqlx::query(claims::FILLED).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.writer.close().await;
            self.readers.close().await;
        })
    }
}
