//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time. All appends of this process go through
//! one connection (the group-commit writer), in `BEGIN IMMEDIATE`
//! transactions that take the write lock before reading the tail, so another
//! process appending to the same file waits (busy timeout) rather than
//! interleaving. `synchronous = FULL` syncs the WAL at every commit: an
//! acknowledged append survives a power cut, not only a killed process, and
//! group commit shares that one sync among all callers of a batch.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::backend::{Backend, BatchOutcome, HEAD_SQL, Tokens};
use crate::claims;
use crate::hook::CommitHook;
use crate::model::to_u64;
use crate::plan::StoredKey;
use crate::seal::Keyring;
use crate::sqlite_appender::Appender;
use crate::{AppendRequest, AppendResult, LogFilter, RecordedEvent, Snapshot, StoreError, StoreOptions, TokenRecord};

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub(crate) struct SqliteBackend {
    /// Appends: a native connection on a thread of its own.
    appender: Appender,
    /// Everything else that writes (tokens, snapshots, migrations).
    writer: SqlitePool,
    readers: SqlitePool,
    keyring: Keyring,
}

impl SqliteBackend {
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_wait)
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        // A connection to a local file does not go stale: no ping (a
        // round trip to the connection's thread) before each use.
        let readers = SqlitePoolOptions::new()
            .max_connections(options.read_connections_max.max(1))
            .acquire_timeout(options.connect_wait)
            .test_before_acquire(false)
            .connect_with(connect.clone().read_only(true))
            .await?;
        let keyring = Keyring::new(options.master_key.clone());
        let appender = Appender::open(connect.get_filename(), BUSY_TIMEOUT, keyring.clone())?;
        Ok(Self {
            appender,
            writer,
            readers,
            keyring,
        })
    }
}

/// An event's columns, and its subject's key (none for an event without a
/// personal part, or once the subject is erased).
const EVENT_COLUMNS: &str = "position, stream_id, version, event_type, schema_version, data, actor, \
     occurred_at, recorded_at, correlation_id, causation_id, hash, data_subject, sealed, \
     (SELECT key FROM subject_keys WHERE subject = events.data_subject) AS subject_key";

/// RFC 3339 in UTC to the microsecond, `2026-12-08T01:05:00.123456Z`: one
/// width, so that the stored texts sort as the times do. (chrono's RFC 3339
/// writer, not a format string: the append thread formats several per
/// event, and parsing the pattern each time was 2% of its time.)
pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(position: u64, raw: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            position,
            reason: format!("timestamp {raw:?}: {e}"),
        })
}

fn parse_uuid(position: u64, raw: Option<String>) -> Result<Option<uuid::Uuid>, StoreError> {
    raw.map(|raw| {
        uuid::Uuid::parse_str(&raw).map_err(|e| StoreError::Corrupt {
            position,
            reason: format!("uuid {raw:?}: {e}"),
        })
    })
    .transpose()
}

/// A data subject as stored: the 16 bytes of its UUID.
fn subject_of(position: u64, raw: Option<Vec<u8>>) -> Result<Option<uuid::Uuid>, StoreError> {
    raw.map(|raw| {
        uuid::Uuid::from_slice(&raw).map_err(|e| StoreError::Corrupt {
            position,
            reason: format!("data subject: {e}"),
        })
    })
    .transpose()
}

fn event_from_row(row: &SqliteRow, keyring: &Keyring) -> Result<RecordedEvent, StoreError> {
    let position = to_u64(row.try_get("position")?);
    let sealed = keyring.open_row(
        position,
        subject_of(position, row.try_get("data_subject")?)?,
        row.try_get("sealed")?,
        row.try_get("subject_key")?,
    )?;
    Ok(RecordedEvent {
        position,
        stream_id: row.try_get("stream_id")?,
        version: to_u64(row.try_get("version")?),
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: row.try_get("data")?,
        actor: row.try_get("actor")?,
        occurred_at: parse_time(position, row.try_get("occurred_at")?)?,
        recorded_at: parse_time(position, row.try_get("recorded_at")?)?,
        correlation_id: parse_uuid(position, row.try_get("correlation_id")?)?,
        causation_id: parse_uuid(position, row.try_get("causation_id")?)?,
        hash: row.try_get("hash")?,
        sealed,
    })
}

/// Reads long runs of the log on a native read-only connection, on the
/// caller's (blocking) thread: a rebuild reads every event, and through
/// sqlx each row would be handed from its worker thread to the caller.
/// Each call is a statement, so a read transaction never outlives it and
/// never holds back a checkpoint of the WAL while a rebuild writes.
#[derive(Debug)]
pub struct BulkReader {
    conn: rusqlite::Connection,
    keyring: Keyring,
}

impl BulkReader {
    pub(crate) fn open(file: &std::path::Path, busy_timeout: Duration, keyring: Keyring) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy_timeout)?;
        Ok(Self { conn, keyring })
    }

    /// Up to `limit` events with a position above `after`, in position order.
    pub fn read_all(&mut self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2");
        let mut statement = self.conn.prepare_cached(&sql)?;
        let limit = limit.clamp(1, crate::READ_BATCH_MAX);
        let mut rows = statement.query(rusqlite::params![to_i64(after), to_i64(limit as u64)])?;
        let mut events = Vec::with_capacity(limit);
        while let Some(row) = rows.next()? {
            let position = to_u64(row.get(0)?);
            let subject = subject_of(position, row.get(12)?)?;
            let sealed = self.keyring.open_row(position, subject, row.get(13)?, row.get(14)?)?;
            events.push(RecordedEvent {
                position,
                stream_id: row.get(1)?,
                version: to_u64(row.get(2)?),
                event_type: row.get(3)?,
                schema_version: row.get(4)?,
                data: row.get(5)?,
                actor: row.get(6)?,
                occurred_at: parse_time(position, &row.get::<_, String>(7)?)?,
                recorded_at: parse_time(position, &row.get::<_, String>(8)?)?,
                correlation_id: parse_uuid(position, row.get(9)?)?,
                causation_id: parse_uuid(position, row.get(10)?)?,
                hash: row.get(11)?,
                sealed,
            });
        }
        Ok(events)
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn key_from_row(row: &SqliteRow) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        key: row.try_get("idempotency_key")?,
        stream_id: row.try_get("stream_id")?,
        first_position: to_u64(row.try_get("first_position")?),
        last_position: to_u64(row.try_get("last_position")?),
        stream_version: to_u64(row.try_get("stream_version")?),
        request_hash: row.try_get("request_hash")?,
    })
}

/// How often a SQLite store looks for other processes' appends.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl Backend for SqliteBackend {
    /// SQLite cannot notify another process, but `PRAGMA data_version`
    /// tells a connection, for the price of reading one page header already
    /// in memory, whether any other connection has committed since it last
    /// asked: a check every `FOLLOW_EVERY` finds another server's appends
    /// that soon (its own, made on the appender's connection, too; moving
    /// the head to where it already is costs nothing).
    fn follow_appends(&self, appended: Box<dyn Fn(u64) + Send + Sync>) -> Option<BoxFuture<'static, ()>> {
        let options = (*self.readers.connect_options()).clone();
        Some(Box::pin(async move {
            let mut seen: Option<i64> = None;
            let mut conn: Option<sqlx::SqliteConnection> = None;
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                let live = match &mut conn {
                    Some(live) => live,
                    None => match sqlx::ConnectOptions::connect(&options).await {
                        Ok(new) => conn.insert(new),
                        Err(error) => {
                            tracing::debug!(%error, "cannot open a connection to follow other processes' appends");
                            continue;
                        }
                    },
                };
                let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(&mut *live)
                    .await;
                let head = match version {
                    Ok(version) if seen == Some(version) => continue,
                    Ok(version) => {
                        seen = Some(version);
                        sqlx::query_scalar::<_, i64>(HEAD_SQL).fetch_one(&mut *live).await
                    }
                    Err(error) => Err(error),
                };
                match head {
                    Ok(head) => appended(to_u64(head)),
                    Err(error) => {
                        tracing::debug!(%error, "following other processes' appends failed; reconnecting");
                        conn = None;
                    }
                }
            }
        }))
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn commit<'a>(
        &'a self,
        requests: &'a [AppendRequest],
        hook: Option<&'a Arc<dyn CommitHook>>,
    ) -> BoxFuture<'a, Result<(BatchOutcome, Option<u64>), StoreError>> {
        Box::pin(async move { self.appender.commit(requests, hook).await })
    }

    fn read_stream<'a>(
        &'a self,
        stream_id: &'a str,
        from_version: u64,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(async move {
            let sql =
                format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version >= ? ORDER BY version");
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
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?");
            let rows = sqlx::query(&sql)
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_all(&self.readers)
                .await?;
            rows.iter().map(|row| event_from_row(row, &self.keyring)).collect()
        })
    }

    fn bulk_reader(&self) -> Result<Option<crate::BulkReader>, StoreError> {
        let file = self.readers.connect_options().get_filename().to_owned();
        crate::BulkReader::open(&file, BUSY_TIMEOUT, self.keyring.clone()).map(Some)
    }

    fn read_filtered<'a>(
        &'a self,
        filter: &'a LogFilter,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(async move {
            let mut query =
                QueryBuilder::<Sqlite>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > "));
            query.push_bind(after as i64);
            if let Some(actor) = &filter.actor {
                query.push(" AND actor = ").push_bind(actor.clone());
            }
            if let Some(at) = filter.recorded_since {
                query.push(" AND recorded_at >= ").push_bind(format_time(at));
            }
            if let Some(at) = filter.recorded_until {
                query.push(" AND recorded_at <= ").push_bind(format_time(at));
            }
            if let Some(at) = filter.occurred_since {
                query.push(" AND occurred_at >= ").push_bind(format_time(at));
            }
            if let Some(at) = filter.occurred_until {
                query.push(" AND occurred_at <= ").push_bind(format_time(at));
            }
            query.push(" ORDER BY position LIMIT ").push_bind(limit as i64);
            let rows = query.build().fetch_all(&self.readers).await?;
            rows.iter().map(|row| event_from_row(row, &self.keyring)).collect()
        })
    }

    fn save_snapshot<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO snapshots (name, position, data, saved_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, data = excluded.data, saved_at = excluded.saved_at",
            )
            .bind(&snapshot.name)
            .bind(snapshot.position as i64)
            .bind(&snapshot.data)
            .bind(format_time(snapshot.saved_at))
            .execute(&self.writer)
            .await?;
            Ok(())
        })
    }

    fn load_snapshot<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT name, position, data, saved_at FROM snapshots WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.readers)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let position = to_u64(row.try_get("position")?);
            Ok(Some(Snapshot {
                name: row.try_get("name")?,
                position,
                data: row.try_get("data")?,
                saved_at: parse_time(position, row.try_get("saved_at")?)?,
            }))
        })
    }

    fn save_token<'a>(&'a self, token: &'a TokenRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO api_tokens (token_id, secret_sha256, user_id, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)")
                .bind(&token.token_id)
                .bind(&token.secret_sha256)
                .bind(&token.user_id)
                .bind(format_time(token.created_at))
                .bind(token.revoked_at.map(format_time))
                .execute(&self.writer)
                .await?;
            Ok(())
        })
    }

    fn revoke_tokens<'a>(&'a self, which: Tokens<'a>, at: DateTime<Utc>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let (column, value) = which.column();
            let statement = format!("UPDATE api_tokens SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL");
            let done = sqlx::query(&statement)
                .bind(format_time(at))
                .bind(value)
                .execute(&self.writer)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn find_token<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM api_tokens WHERE token_id = ?")
                .bind(token_id)
                .fetch_optional(&self.readers)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(TokenRecord {
                token_id: row.try_get("token_id")?,
                secret_sha256: row.try_get("secret_sha256")?,
                user_id: row.try_get("user_id")?,
                created_at: parse_time(0, row.try_get("created_at")?)?,
                revoked_at: row
                    .try_get::<Option<String>, _>("revoked_at")?
                    .map(|t| parse_time(0, &t))
                    .transpose()?,
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
            let row = sqlx::query("SELECT * FROM idempotency_keys WHERE idempotency_key = ?")
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
            // BEGIN IMMEDIATE takes the write lock the appender's commits take.
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let now: i64 = sqlx::query_scalar(HEAD_SQL).fetch_one(&mut *tx).await?;
            if to_u64(now) != head {
                return Ok(false);
            }
            sqlx::query(claims::FILL_CLEAR).execute(&mut *tx).await?;
            for chunk in values.chunks(claims::FILL_ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<Sqlite>::new(claims::FILL_START);
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::{format_time, parse_time};

    #[test]
    fn stored_times_have_one_width_sort_as_the_times_and_read_back() {
        let times = [
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(2026, 12, 8, 1, 5, 0).single(),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
                .single()
                .map(|t| t + chrono::Duration::nanoseconds(999_999_999)),
            Utc.with_ymd_and_hms(9999, 1, 1, 12, 0, 0)
                .single()
                .map(|t| t + chrono::Duration::microseconds(1)),
        ]
        .map(|t| t.expect("a valid time"));
        let stored: Vec<String> = times.iter().map(|t| format_time(*t)).collect();
        assert_eq!(stored[1], "2026-12-08T01:05:00.000000Z");
        assert_eq!(stored[2], "2026-12-31T23:59:59.999999Z", "truncated to the microsecond");
        assert!(stored.iter().all(|s| s.len() == 27), "{stored:?}");
        assert!(stored.windows(2).all(|w| w[0] < w[1]), "{stored:?}");
        for (time, text) in times.iter().zip(&stored) {
            let read = parse_time(1, text).expect("reads back");
            assert_eq!(read, crate::to_stored_precision(*time));
        }
    }
}
