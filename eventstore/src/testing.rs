//! Test fixtures: a fresh, private database per test, on either backend.
//!
//! PostgreSQL tests find the server through `CRM_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`) and each get a schema
//! of their own, dropped afterwards. Where no server answers, they say so and
//! skip, except under `CI=true`, where they fail: CI always tests both backends.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;

use crate::{Store, StoreOptions};

pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// An open PostgreSQL session (see `TestDatabase::session`).
#[derive(Debug)]
pub struct Session(sqlx::PgConnection);

impl Session {
    /// Releases the session's advisory locks (answered once they are free)
    /// and ends it. Dropping it instead only starts the close: the server
    /// may hold its locks a while longer.
    pub async fn close(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.0)
            .await?;
        self.0.close().await
    }
}

#[derive(Debug)]
pub struct TestDatabase {
    pub kind: BackendKind,
    /// The database URL, as `crm --database` would take it.
    pub url: String,
    pub options: StoreOptions,
    sqlite_dir: Option<PathBuf>,
    /// Whether dropping this handle removes the database.
    owner: bool,
}

impl TestDatabase {
    /// A fresh SQLite file in a directory of its own, removed on drop.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("crm-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        Self {
            kind: BackendKind::Sqlite,
            url: format!("sqlite://{}", dir.join("crm.db").display()),
            options: StoreOptions::default(),
            sqlite_dir: Some(dir),
            owner: true,
        }
    }

    /// A fresh schema on the test PostgreSQL server, or `None` (after saying
    /// why) when no server is reachable outside CI.
    pub async fn postgres() -> Option<Self> {
        let url = std::env::var("CRM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.into());
        let reachable = match sqlx::postgres::PgConnectOptions::from_str(&url) {
            Ok(options) => tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| "timed out".to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(reason) = reachable {
            let message = format!("PostgreSQL at {} is not reachable ({reason})", crate::redact(&url));
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}; CI=true requires both backends");
            }
            eprintln!("SKIPPED: {message}; set CRM_TEST_POSTGRES_URL to run the PostgreSQL tests");
            return None;
        }
        let schema = format!("crm_test_{}", uuid::Uuid::now_v7().simple());
        let options = StoreOptions {
            schema: Some(schema),
            ..StoreOptions::default()
        };
        Some(Self {
            kind: BackendKind::Postgres,
            url,
            options,
            sqlite_dir: None,
            owner: true,
        })
    }

    /// Both backends, PostgreSQL only where reachable.
    pub async fn each() -> Vec<Self> {
        let mut databases = vec![Self::sqlite()];
        databases.extend(Self::postgres().await);
        databases
    }

    /// Another handle to the same database (for a second server process
    /// on it); only the first handle removes the database when dropped.
    pub fn shared(&self) -> Self {
        Self {
            kind: self.kind,
            url: self.url.clone(),
            options: self.options.clone(),
            sqlite_dir: None,
            owner: false,
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url, &self.options)
            .await
            .expect("the test database opens")
    }

    /// A connection of its own to the test's PostgreSQL schema.
    async fn postgres_connection(&self) -> Result<sqlx::PgConnection, sqlx::Error> {
        let mut options = sqlx::postgres::PgConnectOptions::from_str(&self.url)?;
        if let Some(schema) = &self.options.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        sqlx::PgConnection::connect_with(&options).await
    }

    /// A PostgreSQL session that runs `sql` and stays open until dropped:
    /// for tests that play another process holding a session-level lock.
    pub async fn session(&self, sql: &str) -> Result<Session, sqlx::Error> {
        let mut conn = self.postgres_connection().await?;
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        Ok(Session(conn))
    }

    /// Runs SQL straight on the database, bypassing the store: for tests that
    /// play someone with database access.
    pub async fn execute_raw(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.kind {
            BackendKind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
                conn.close().await
            }
            BackendKind::Postgres => {
                let mut conn = self.postgres_connection().await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
                conn.close().await
            }
        }
    }

    /// Every row of every table whose name starts with `prefix`, as text:
    /// what the read models hold, however they are read.
    pub async fn tables_text(&self, prefix: &str) -> Result<String, sqlx::Error> {
        use sqlx::Row;
        let mut out = String::new();
        match self.kind {
            BackendKind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1",
                )
                .bind(prefix)
                .fetch_all(&mut conn)
                .await?;
                for table in tables {
                    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                        .bind(&table)
                        .fetch_all(&mut conn)
                        .await?;
                    let row = columns
                        .iter()
                        .map(|c| format!("COALESCE(CAST(\"{c}\" AS TEXT), '')"))
                        .collect::<Vec<_>>()
                        .join(" || ' ' || ");
                    for line in sqlx::query(&format!("SELECT CAST(({row}) AS BLOB) FROM \"{table}\""))
                        .fetch_all(&mut conn)
                        .await?
                    {
                        let bytes: Vec<u8> = line.try_get(0)?;
                        out.push_str(&format!("{table}: {}\n", String::from_utf8_lossy(&bytes)));
                    }
                }
                conn.close().await?;
            }
            BackendKind::Postgres => {
                let mut conn = self.postgres_connection().await?;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND starts_with(table_name, $1)",
                )
                .bind(prefix)
                .fetch_all(&mut conn)
                .await?;
                for table in tables {
                    for line in sqlx::query(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&mut conn)
                        .await?
                    {
                        out.push_str(&format!("{table}: {}\n", line.try_get::<String, _>(0)?));
                    }
                }
                conn.close().await?;
            }
        }
        Ok(out)
    }

    /// Every event's stored `data` and sealed part, as text (the sealed
    /// bytes lossily): what someone reading the database's files would see.
    pub async fn stored_event_text(&self) -> Result<Vec<String>, sqlx::Error> {
        use sqlx::Row;
        let sql = "SELECT data, sealed FROM events ORDER BY position";
        let rows: Vec<(String, Option<Vec<u8>>)> = match self.kind {
            BackendKind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let rows = sqlx::query(sql).fetch_all(&mut conn).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()?
            }
            BackendKind::Postgres => {
                let mut conn = self.postgres_connection().await?;
                let rows = sqlx::query(sql).fetch_all(&mut conn).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(data, sealed)| format!("{data} {}", String::from_utf8_lossy(&sealed.unwrap_or_default())))
            .collect())
    }

    /// Makes every later COMMIT of an append fail, as a full disk or a broken
    /// database would, until `let_commits_through`: a trigger on each append
    /// breaks a foreign key that is checked only at COMMIT.
    pub async fn fail_commits(&self) -> Result<(), sqlx::Error> {
        let trap = match self.kind {
            BackendKind::Sqlite => {
                "CREATE TABLE canary_parent (id INTEGER PRIMARY KEY); \
                 CREATE TABLE canary (parent INTEGER REFERENCES canary_parent (id) DEFERRABLE INITIALLY DEFERRED); \
                 CREATE TRIGGER canary_on_append AFTER INSERT ON events BEGIN INSERT INTO canary (parent) VALUES (42); END;"
            }
            BackendKind::Postgres => {
                "CREATE TABLE canary_parent (id BIGINT PRIMARY KEY); \
                 CREATE TABLE canary (parent BIGINT REFERENCES canary_parent (id) DEFERRABLE INITIALLY DEFERRED); \
                 CREATE FUNCTION canary_insert() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN INSERT INTO canary (parent) VALUES (42); RETURN NULL; END $$; \
                 CREATE TRIGGER canary_on_append AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION canary_insert();"
            }
        };
        self.execute_raw(trap).await
    }

    /// Undoes `fail_commits`.
    pub async fn let_commits_through(&self) -> Result<(), sqlx::Error> {
        self.execute_raw(match self.kind {
            BackendKind::Sqlite => "DROP TRIGGER canary_on_append",
            BackendKind::Postgres => "DROP TRIGGER canary_on_append ON events",
        })
        .await
    }

    /// The SQL that alters an event's data behind the store's back, with the
    /// immutability triggers switched off as only a database owner could.
    pub fn tamper_sql(&self, position: u64, data: &str) -> String {
        let update = format!("UPDATE events SET data = '{data}' WHERE position = {position};");
        match self.kind {
            BackendKind::Sqlite => format!("DROP TRIGGER IF EXISTS events_refuse_update; {update}"),
            BackendKind::Postgres => {
                format!("ALTER TABLE events DISABLE TRIGGER USER; {update} ALTER TABLE events ENABLE TRIGGER USER;")
            }
        }
    }

    /// The SQL that overwrites an event's sealed part with zeros behind
    /// the store's back: it no longer opens.
    pub fn sealed_tamper_sql(&self, position: u64) -> String {
        match self.kind {
            BackendKind::Sqlite => format!(
                "DROP TRIGGER IF EXISTS events_refuse_update; \
                 UPDATE events SET sealed = zeroblob(length(sealed)) WHERE position = {position};"
            ),
            BackendKind::Postgres => format!(
                "ALTER TABLE events DISABLE TRIGGER USER; \
                 UPDATE events SET sealed = decode(repeat('00', length(sealed)), 'hex') WHERE position = {position}; \
                 ALTER TABLE events ENABLE TRIGGER USER;"
            ),
        }
    }

    /// The SQL that removes an event behind the store's back.
    pub fn removal_sql(&self, position: u64) -> String {
        let delete = format!("DELETE FROM events WHERE position = {position};");
        match self.kind {
            BackendKind::Sqlite => format!("DROP TRIGGER events_refuse_delete; {delete}"),
            BackendKind::Postgres => {
                format!("ALTER TABLE events DISABLE TRIGGER USER; {delete} ALTER TABLE events ENABLE TRIGGER USER;")
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let (BackendKind::Postgres, Some(schema)) = (self.kind, self.options.schema.clone()) {
            let url = self.url.clone();
            // Drop runs inside the test's runtime; clean up on a thread of its own.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut conn)
                        .await
                        .ok()
                })
            });
            let _ = cleanup.join();
        }
    }
}
