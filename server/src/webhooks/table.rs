//! Where subscriptions and their deliveries are kept: two tables in the
//! log's own database (one SQL text for both backends), so that every
//! server on one database sees the same subscriptions and a subscription's
//! position survives any restart.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

/// Why the webhook tables could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook storage: {0}")]
    Database(#[from] sqlx::Error),
    #[error("webhook storage: {0}")]
    Open(#[from] projections::ProjectionError),
    #[error("reading the log for webhooks: {0}")]
    Store(#[from] eventstore::StoreError),
    #[error("cannot make the webhooks' HTTP client: {0}")]
    Client(String),
    #[error("webhook storage holds a row it cannot read: {0}")]
    Corrupt(String),
}

impl WebhookError {
    /// The database is unreachable for now (rather than refusing the SQL).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(error) => {
                matches!(
                    error,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
                )
            }
            Self::Open(error) => error.is_unavailable(),
            Self::Store(error) => error.is_unavailable(),
            Self::Client(_) | Self::Corrupt(_) => false,
        }
    }
}

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS crm_webhooks (
        id              TEXT PRIMARY KEY,
        url             TEXT NOT NULL,
        description     TEXT,
        event_types     TEXT NOT NULL,
        kinds           TEXT NOT NULL,
        secret          TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        created_by      TEXT NOT NULL,
        position        BIGINT NOT NULL,
        active          BIGINT NOT NULL,
        attempts        BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        last_error      TEXT,
        last_success_at BIGINT,
        disabled_at     BIGINT,
        delivery_seq    BIGINT NOT NULL,
        lease_holder    TEXT,
        lease_until     BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS crm_webhook_deliveries (
        subscription_id TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        position        BIGINT NOT NULL,
        event_type      TEXT NOT NULL,
        attempt         BIGINT NOT NULL,
        attempted_at    BIGINT NOT NULL,
        status          BIGINT,
        error           TEXT,
        millis          BIGINT NOT NULL,
        PRIMARY KEY (subscription_id, seq)
    )",
];

/// Deliveries kept per subscription (the newest); older ones are pruned.
pub const DELIVERIES_KEPT: i64 = 1_000;

/// The columns of a subscription, in `Subscription::read` order.
const COLUMNS: &str = "id, url, description, event_types, kinds, secret, created_at, created_by, position, active, \
     attempts, next_attempt_at, last_error, last_success_at, disabled_at";

/// One subscription: where to send which events, and how far it got.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    /// Event types wanted; empty: every type.
    pub event_types: Vec<String>,
    /// Record kinds wanted (`contact`, `deal`, ...); empty: every kind.
    pub kinds: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The last log position dealt with: delivered, or not wanted. The next
    /// delivery is of the first wanted event after it.
    pub position: u64,
    /// `active`, or `disabled` after `attempts_max` failed attempts in a row
    /// (its position kept: resuming goes on from there).
    pub state: &'static str,
    /// Failed attempts in a row at the event after `position`.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl Subscription {
    fn read(row: &AnyRow) -> Result<Self, WebhookError> {
        let list = |column: &str| -> Result<Vec<String>, WebhookError> {
            let text: String = row.try_get(column)?;
            serde_json::from_str(&text).map_err(|e| WebhookError::Corrupt(format!("{column}: {e}")))
        };
        let count = |column: &str| count(row, column);
        let active: i64 = row.try_get("active")?;
        Ok(Self {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
            description: row.try_get("description")?,
            event_types: list("event_types")?,
            kinds: list("kinds")?,
            secret: row.try_get("secret")?,
            created_at: time(row.try_get("created_at")?),
            created_by: row.try_get("created_by")?,
            position: count("position")?,
            state: if active == 1 { "active" } else { "disabled" },
            attempts: u32::try_from(count("attempts")?).unwrap_or(u32::MAX),
            next_attempt_at: time(row.try_get("next_attempt_at")?),
            last_error: row.try_get("last_error")?,
            last_success_at: row.try_get::<Option<i64>, _>("last_success_at")?.map(time),
            disabled_at: row.try_get::<Option<i64>, _>("disabled_at")?.map(time),
        })
    }

    /// Whether this subscription wants an event of `event_type` on `stream_id`.
    pub fn wants(&self, event_type: &str, stream_id: &str) -> bool {
        let kind = stream_id.split_once('-').map_or(stream_id, |(kind, _)| kind);
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
    }
}

/// A subscription about to be made.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub kinds: Vec<String>,
    pub secret: String,
    pub created_by: String,
    pub position: u64,
}

/// One attempt to deliver one event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The attempt's number among the subscription's attempts.
    pub seq: u64,
    /// The event's position: its delivery id.
    pub position: u64,
    pub event_type: String,
    /// Which attempt at this event (1 for the first).
    pub attempt: u32,
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why the attempt failed; none if it succeeded.
    pub error: Option<String>,
    pub millis: u64,
    pub ok: bool,
}

/// How one attempt went, to be recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub position: u64,
    /// Which attempt at this event (1 for the first).
    pub number: u32,
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub millis: u64,
}

/// What recording an attempt left the subscription as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Delivered: the position moved past the event.
    Delivered,
    /// Failed: tried again at the time given.
    Retry(DateTime<Utc>),
    /// Failed once too often: the subscription is disabled.
    Disabled,
    /// Another server holds the subscription now (or it was deleted).
    Lost,
}

/// A count or position column, never negative.
fn count(row: &AnyRow, column: &str) -> Result<u64, WebhookError> {
    let n: i64 = row.try_get(column)?;
    u64::try_from(n).map_err(|_| WebhookError::Corrupt(format!("{column} is negative")))
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn time(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis).single().unwrap_or_default()
}

fn position(p: u64) -> i64 {
    i64::try_from(p).unwrap_or(i64::MAX)
}

/// The webhook tables of one database.
#[derive(Debug, Clone)]
pub struct Table {
    pool: AnyPool,
}

impl Table {
    /// Opens a small pool on the log's database (`schema` on PostgreSQL)
    /// and makes the tables if they are not there yet.
    pub async fn open(url: &str, schema: Option<&str>, connect_wait: Duration) -> Result<Self, WebhookError> {
        let pool = projections::side_pool(url, schema, 2, connect_wait).await?;
        for statement in SCHEMA {
            // Two servers making the tables at once on PostgreSQL: the
            // loser's `IF NOT EXISTS` can still collide; the second try
            // finds the table.
            if sqlx::query(statement).execute(&pool).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sqlx::query(statement).execute(&pool).await?;
            }
        }
        Ok(Self { pool })
    }

    pub async fn create(&self, new: &NewSubscription, now: DateTime<Utc>) -> Result<Subscription, WebhookError> {
        let list = |items: &[String]| serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(
            "INSERT INTO crm_webhooks (id, url, description, event_types, kinds, secret, created_at, created_by, \
             position, active, attempts, next_attempt_at, delivery_seq, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, 0, $7, 0, 0)",
        )
        .bind(&new.id)
        .bind(&new.url)
        .bind(&new.description)
        .bind(list(&new.event_types))
        .bind(list(&new.kinds))
        .bind(&new.secret)
        .bind(millis(now))
        .bind(&new.created_by)
        .bind(position(new.position))
        .execute(&self.pool)
        .await?;
        self.get(&new.id)
            .await?
            .ok_or_else(|| WebhookError::Corrupt("a subscription just made is not there".into()))
    }

    pub async fn list(&self) -> Result<Vec<Subscription>, WebhookError> {
        let sql = format!("SELECT {COLUMNS} FROM crm_webhooks ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(Subscription::read).collect()
    }

    pub async fn get(&self, id: &str) -> Result<Option<Subscription>, WebhookError> {
        let sql = format!("SELECT {COLUMNS} FROM crm_webhooks WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Subscription::read).transpose()
    }

    /// Deletes a subscription and its deliveries; false if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, WebhookError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM crm_webhook_deliveries WHERE subscription_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM crm_webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes a subscription active again at the position it kept, to be
    /// tried at once; false if there is none.
    pub async fn resume(&self, id: &str, now: DateTime<Utc>) -> Result<bool, WebhookError> {
        let done = sqlx::query(
            "UPDATE crm_webhooks SET active = 1, attempts = 0, next_attempt_at = $2, disabled_at = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The ids of active subscriptions due for an attempt whose lease is
    /// free, expired or `holder`'s.
    pub async fn due(&self, holder: &str, now: DateTime<Utc>) -> Result<Vec<String>, WebhookError> {
        let rows = sqlx::query(
            "SELECT id FROM crm_webhooks WHERE active = 1 AND next_attempt_at <= $1 \
             AND (lease_holder IS NULL OR lease_holder = $2 OR lease_until < $1) ORDER BY id",
        )
        .bind(millis(now))
        .bind(holder)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get("id").map_err(WebhookError::from))
            .collect()
    }

    /// Takes (or keeps) the lease on `id` until `until`; false if another
    /// holder's lease is still good, or the subscription is gone.
    pub async fn lease(
        &self,
        id: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, WebhookError> {
        let done = sqlx::query(
            "UPDATE crm_webhooks SET lease_holder = $2, lease_until = $4 WHERE id = $1 \
             AND (lease_holder IS NULL OR lease_holder = $2 OR lease_until < $3)",
        )
        .bind(id)
        .bind(holder)
        .bind(millis(now))
        .bind(millis(until))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives the lease up, so that another server may take it at once.
    pub async fn release(&self, id: &str, holder: &str) -> Result<(), WebhookError> {
        sqlx::query("UPDATE crm_webhooks SET lease_holder = NULL, lease_until = 0 WHERE id = $1 AND lease_holder = $2")
            .bind(id)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves the position past events the subscription does not want and
    /// renews the lease; false if the lease is lost.
    pub async fn pass(&self, id: &str, holder: &str, to: u64, until: DateTime<Utc>) -> Result<bool, WebhookError> {
        let done = sqlx::query(
            "UPDATE crm_webhooks SET position = $3, lease_until = $4 \
             WHERE id = $1 AND lease_holder = $2 AND position <= $3",
        )
        .bind(id)
        .bind(holder)
        .bind(position(to))
        .bind(millis(until))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records one attempt and what it does to the subscription, in one
    /// transaction: a success moves the position past the event; a failure
    /// counts, sets the next attempt at `retry_at`, and past `attempts_max`
    /// in a row disables the subscription.
    pub async fn record(
        &self,
        id: &str,
        holder: &str,
        attempt: &Attempt,
        retry_at: DateTime<Utc>,
        attempts_max: u32,
        until: DateTime<Utc>,
    ) -> Result<Recorded, WebhookError> {
        let ok = attempt.error.is_none();
        let mut tx = self.pool.begin().await?;
        let updated = if ok {
            sqlx::query(
                "UPDATE crm_webhooks SET position = $3, attempts = 0, next_attempt_at = $4, last_error = NULL, \
                 last_success_at = $4, delivery_seq = delivery_seq + 1, lease_until = $5 \
                 WHERE id = $1 AND lease_holder = $2 RETURNING delivery_seq, active",
            )
            .bind(id)
            .bind(holder)
            .bind(position(attempt.position))
            .bind(millis(attempt.at))
            .bind(millis(until))
            .fetch_optional(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "UPDATE crm_webhooks SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4, \
                 delivery_seq = delivery_seq + 1, lease_until = $5, \
                 active = CASE WHEN attempts + 1 >= $6 THEN 0 ELSE 1 END, \
                 disabled_at = CASE WHEN attempts + 1 >= $6 THEN $7 ELSE NULL END \
                 WHERE id = $1 AND lease_holder = $2 RETURNING delivery_seq, active",
            )
            .bind(id)
            .bind(holder)
            .bind(millis(retry_at))
            .bind(&attempt.error)
            .bind(millis(until))
            .bind(i64::from(attempts_max))
            .bind(millis(attempt.at))
            .fetch_optional(&mut *tx)
            .await?
        };
        // No row: another server holds the lease now, or it was deleted.
        let Some(row) = updated else {
            tx.rollback().await?;
            return Ok(Recorded::Lost);
        };
        let (seq, active): (i64, i64) = (row.try_get("delivery_seq")?, row.try_get("active")?);
        sqlx::query(
            "INSERT INTO crm_webhook_deliveries (subscription_id, seq, position, event_type, attempt, attempted_at, \
             status, error, millis) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(seq)
        .bind(position(attempt.position))
        .bind(&attempt.event_type)
        .bind(i64::from(attempt.number))
        .bind(millis(attempt.at))
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(i64::try_from(attempt.millis).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if seq % 100 == 0 {
            sqlx::query("DELETE FROM crm_webhook_deliveries WHERE subscription_id = $1 AND seq <= $2")
                .bind(id)
                .bind(seq - DELIVERIES_KEPT)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(match (ok, active) {
            (true, _) => Recorded::Delivered,
            (false, 0) => Recorded::Disabled,
            (false, _) => Recorded::Retry(retry_at),
        })
    }

    /// Deliveries of a subscription, newest first, before `before` (a seq).
    pub async fn deliveries(&self, id: &str, before: Option<u64>, limit: usize) -> Result<Vec<Delivery>, WebhookError> {
        let rows = sqlx::query(
            "SELECT seq, position, event_type, attempt, attempted_at, status, error, millis \
             FROM crm_webhook_deliveries WHERE subscription_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(id)
        .bind(before.map_or(i64::MAX, position))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let count = |column: &str| count(row, column);
                let error: Option<String> = row.try_get("error")?;
                Ok(Delivery {
                    seq: count("seq")?,
                    position: count("position")?,
                    event_type: row.try_get("event_type")?,
                    attempt: u32::try_from(count("attempt")?).unwrap_or(u32::MAX),
                    attempted_at: time(row.try_get("attempted_at")?),
                    status: row
                        .try_get::<Option<i64>, _>("status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    ok: error.is_none(),
                    error,
                    millis: count("millis")?,
                })
            })
            .collect()
    }
}
