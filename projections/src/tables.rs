//! The read-model tables: one row per user, contact, account, deal and
//! interaction, in the same database as the log, beside one state row that
//! says which log position they cover.
//!
//! Each row holds the record's view as JSON (`view`, exactly what the fold
//! produced) and the columns lists filter on, indexed. Rows are written only
//! by `fold_batch`, in the same transaction as the state row, so a crash can
//! never leave the rows and their position disagreeing: a restart resumes at
//! the position the tables say they cover.
//!
//! One SQL text serves both databases: statements use `$1, $2, ...` (which
//! SQLite reads as named parameters, numbered in order of appearance) and
//! types both know (`TEXT`, `BIGINT`), through sqlx's `Any` driver.
//!
//! Rebuilds fill a second set of tables (`rm_next_*`) and swap them in with
//! one transaction; index names carry a generation number, so a swapped-in
//! table's indexes never collide with the next rebuild's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

use uuid::Uuid;

use crate::ProjectionError;
use crate::counts::{COUNTED_COLUMNS, Deltas};
use crate::model::{CrmModel, InteractionView, Keys, UserView};
use crate::rows::{account_row, contact_row, coverage_rows, deal_row, interaction_row, text, user_row};
use crate::schema::{
    ACCOUNTS, CONTACTS, COVERAGE, DEALS, DUPLICATE_COLUMNS, INTERACTIONS, SearchIndex, Table, USERS, combined_sql,
    create_indexes_sql, create_tables_sql, drop_sql, duplicate_groups_of_sql, search_table,
};
pub(crate) use crate::schema::{LIVE, NEXT, TABLES};
pub(crate) use crate::sql::Dialect;
use crate::sql::{Cell, Exec, Kind};
use crate::sums::{SUMMED_COLUMNS, SumDeltas};

/// The table of the state row.
const STATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS rm_state (name TEXT PRIMARY KEY, \
     model_version BIGINT NOT NULL, generation BIGINT NOT NULL, position BIGINT NOT NULL)";
/// The one row of `rm_state` this version keeps.
const STATE_NAME: &str = "crm";
/// Ids per `IN (...)` list and rows per multi-row insert: far below both
/// databases' limits on parameters in one statement.
const ROWS_PER_STATEMENT_MAX: usize = 400;
/// Page cache of the connection that folds catch-up and rebuild batches:
/// large enough that a batch's index pages stay in memory, and bounded.
const SQLITE_WRITER_CACHE_KIB: u32 = 32 * 1024;
/// WAL pages a rebuild's writer lets accumulate before it checkpoints.
const REBUILD_CHECKPOINT_PAGES: u32 = 20_000;
/// Page cache of a rebuild's connection that looks rows up.
const SQLITE_LOOKUP_CACHE_KIB: u32 = 8 * 1024;
/// How long a connection waits for SQLite's write lock.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// Where the tables stand: which shape, which generation, which position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    pub model_version: u32,
    pub generation: u64,
    pub position: u64,
}

/// Connections to the read-model tables.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    /// Writes: one connection, so folds never interleave in this process.
    writer: AnyPool,
    readers: AnyPool,
    dialect: Dialect,
    search: SearchIndex,
    /// SQLite: the database file, which a rebuild writes through a native
    /// connection of its own (see `AsideWriter`).
    sqlite_file: Option<std::path::PathBuf>,
}

/// A lock one process at a time holds per database, across processes:
/// `Role::Rebuild` while a rebuild fills and swaps in the `rm_next_*` tables
/// (two would write the same tables and swap in each other's half-folded
/// rows), `Role::Projector` by the one process that folds what the live
/// tables lack. Released when dropped, and by the operating system or
/// PostgreSQL when its process dies.
#[derive(Debug)]
pub(crate) enum HeldLock {
    /// An exclusive lock on a file beside the SQLite database.
    #[expect(dead_code, reason = "held for its drop, which releases the lock")]
    File(std::fs::File),
    /// A session-level advisory lock; closing the session releases it.
    Postgres(sqlx::AnyConnection),
}

impl HeldLock {
    /// Gives the lock up before returning. Dropping a `HeldLock` releases it
    /// too, but on PostgreSQL only once the server has noticed the closed
    /// connection, so a lock taken again at once could still find it held.
    pub(crate) async fn release(self) {
        if let Self::Postgres(mut conn) = self {
            // If this fails the connection is gone, and with it the lock.
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut conn).await;
            let _ = sqlx::Connection::close(conn).await;
        }
    }
}

/// What a `HeldLock` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Rebuild,
    Projector,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Rebuild => "rebuild",
            Self::Projector => "projector",
        }
    }
}

impl Tables {
    /// Connects to the database at `url` (the log's), in `schema` on
    /// PostgreSQL, and creates the state table if it is missing.
    pub async fn open(
        url: &str,
        schema: Option<&str>,
        readers_max: u32,
        connect_wait: std::time::Duration,
    ) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url);
        let writer = pool(url, dialect, schema, 1, Setup::Writer, connect_wait).await?;
        let readers = pool(url, dialect, schema, readers_max.max(1), Setup::Reader, connect_wait).await?;
        let search = match dialect {
            Dialect::Sqlite => SearchIndex::Fts5,
            Dialect::Postgres => trigrams(&writer).await?,
        };
        let sqlite_file: Option<std::path::PathBuf> = match dialect {
            Dialect::Sqlite => {
                let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)?;
                Some(options.get_filename().to_owned())
            }
            Dialect::Postgres => None,
        };
        let tables = Self {
            writer,
            readers,
            dialect,
            search,
            sqlite_file,
        };
        sqlx::query(STATE_TABLE_SQL).execute(&tables.writer).await?;
        Ok(tables)
    }

    /// Takes the rebuild lock, or says another rebuild holds it.
    pub async fn lock_rebuild(&self) -> Result<HeldLock, ProjectionError> {
        self.try_lock(Role::Rebuild)
            .await?
            .ok_or_else(|| ProjectionError::Busy("another rebuild of these read models is running".into()))
    }

    /// Takes the lock of `role` if no other process holds it: on SQLite an
    /// exclusive lock on `<database>.<role>-lock` beside the file, on
    /// PostgreSQL a session-level advisory lock keyed by the role and the
    /// schema, on a connection of its own.
    pub async fn try_lock(&self, role: Role) -> Result<Option<HeldLock>, ProjectionError> {
        let Some(database) = &self.sqlite_file else {
            let mut conn = self.writer.acquire().await?.detach();
            let key = format!("crm.{}.", role.name());
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1 || current_schema()))")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            return Ok(locked.then_some(HeldLock::Postgres(conn)));
        };
        let mut path = database.as_os_str().to_owned();
        path.push(format!(".{}-lock", role.name()));
        let path = std::path::PathBuf::from(path);
        let unusable = |e: std::io::Error| ProjectionError::ReadModel(format!("{}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(unusable)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(HeldLock::File(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(unusable(e)),
        }
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }

    /// The state row, if the tables were ever created.
    pub async fn state(&self) -> Result<Option<State>, ProjectionError> {
        let mut conn = self.readers.acquire().await?;
        read_state(&mut *conn, "").await
    }

    /// Drops whatever live tables exist and creates empty ones at position 0.
    pub async fn reset(&self, generation: u64) -> Result<(), ProjectionError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = self.begin(&mut conn).await?;
        execute_all(&mut *tx, drop_sql(LIVE)).await?;
        execute_all(&mut *tx, create_tables_sql(LIVE, self.dialect)).await?;
        execute_all(&mut *tx, create_indexes_sql(LIVE, generation, &self.search)).await?;
        write_state(
            &mut *tx,
            State {
                model_version: crate::MODEL_VERSION,
                generation,
                position: 0,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops any half-built rebuild tables and creates empty ones (indexed
    /// later, by `index_next`).
    pub async fn prepare_next(&self) -> Result<(), ProjectionError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = self.begin(&mut conn).await?;
        execute_all(&mut *tx, drop_sql(NEXT)).await?;
        execute_all(&mut *tx, create_tables_sql(NEXT, self.dialect)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Indexes the filled rebuild tables, before they are swapped in.
    pub async fn index_next(&self, generation: u64) -> Result<(), ProjectionError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = self.begin(&mut conn).await?;
        execute_all(&mut *tx, create_indexes_sql(NEXT, generation, &self.search)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts the rebuild's last step: one transaction that holds the live
    /// state row (on SQLite, the whole database), so appends wait for it and
    /// none folds into the old tables after the new ones caught up.
    pub async fn begin_swap(&self) -> Result<Swap, ProjectionError> {
        let mut tx = match self.dialect {
            Dialect::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.writer.begin().await?,
        };
        // The state row first, as every fold takes it first: no deadlock.
        read_state(&mut *tx, self.lock_clause()).await?;
        Ok(Swap {
            tx,
            search: self.search.clone(),
        })
    }

    /// Folds one batch of events into the live tables, in a transaction of
    /// its own (catch-up; appends fold inside their own transaction through
    /// the commit hook).
    pub async fn fold_batch(
        &self,
        first: u64,
        keys: &Keys,
        cache: Option<&mut RowCache>,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<Folded, ProjectionError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = self.begin(&mut conn).await?;
        let folded = fold_rows(&mut *tx, first, keys, cache, fold).await?;
        tx.commit().await?;
        Ok(folded)
    }

    /// Folds one batch of a rebuild into `rows`, writing (in a transaction)
    /// only when they are full.
    pub async fn fold_aside(
        &self,
        rows: &mut AsideRows,
        keys: &Keys,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<(), ProjectionError> {
        let mut conn = self.writer.acquire().await?;
        rows.fold(&mut *conn, keys, fold).await?;
        // The pool's one writer connection goes back before the flush takes it.
        drop(conn);
        if rows.full() {
            self.flush_aside(rows, Flush::Room).await?;
        }
        Ok(())
    }

    /// Writes what a rebuild's rows hold that the tables do not: `what` says
    /// how much.
    pub async fn flush_aside(&self, rows: &mut AsideRows, what: Flush) -> Result<(), ProjectionError> {
        if let Some(mut writer) = self.aside_writer()? {
            let mut owned = rows.take();
            let (owned, flushed) = tokio::task::spawn_blocking(move || {
                let flushed = writer.flush(&mut owned, what);
                (owned, flushed)
            })
            .await
            .map_err(|e| ProjectionError::Internal(format!("the rebuild's writer stopped: {e}")))?;
            *rows = owned;
            return flushed;
        }
        let mut conn = self.writer.acquire().await?;
        let mut tx = self.begin(&mut conn).await?;
        rows.flush(&mut *tx, what).await?;
        tx.commit().await?;
        Ok(())
    }

    /// On SQLite, a native connection for a rebuild's bulk writes, to be
    /// used on a blocking thread; on PostgreSQL none (the pool serves).
    pub fn aside_writer(&self) -> Result<Option<AsideWriter>, ProjectionError> {
        let Some(file) = &self.sqlite_file else {
            return Ok(None);
        };
        let open = |cache_kib: u32| -> Result<rusqlite::Connection, ProjectionError> {
            let conn = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            conn.execute_batch(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA synchronous = NORMAL; \
                 PRAGMA cache_size = -{cache_kib};"
            ))?;
            Ok(conn)
        };
        // The writer checkpoints the WAL every 80 MB instead of every 4 MB:
        // a page that many flushes change is copied into the database file
        // fewer times (a rebuild at 100k contacts: 7.5 s to fill against
        // 8.0 s). The fold's own connection only looks rows up by id (and
        // writes the last rows at the end): a small cache does.
        let writer = open(SQLITE_WRITER_CACHE_KIB)?;
        writer.pragma_update(None, "wal_autocheckpoint", REBUILD_CHECKPOINT_PAGES)?;
        Ok(Some(AsideWriter {
            conn: open(SQLITE_LOOKUP_CACHE_KIB)?,
            behind: Some(WriterThread::start(writer)?),
        }))
    }

    /// What holds the state row until the transaction ends.
    fn lock_clause(&self) -> &'static str {
        lock_clause(self.dialect)
    }

    /// A write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a transaction that read first and upgraded later
    /// could fail outright when the log's writer committed in between.
    async fn begin<'c>(
        &self,
        conn: &'c mut AnyConnection,
    ) -> Result<sqlx::Transaction<'c, sqlx::Any>, ProjectionError> {
        Ok(match self.dialect {
            Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => conn.begin().await?,
        })
    }

    /// The views of these users, contacts, accounts, deals and interactions
    /// (those that exist), as a partial model.
    pub async fn load(&self, keys: &Keys) -> Result<CrmModel, ProjectionError> {
        let mut conn = self.readers.acquire().await?;
        let mut model = CrmModel::default();
        load_into(&mut *conn, LIVE, keys, &mut model, &mut Loaded::default(), None).await?;
        Ok(model)
    }

    /// Every user: few, and needed to name the people behind events.
    pub async fn users(&self) -> Result<CrmModel, ProjectionError> {
        let mut model = CrmModel::default();
        for (id, view) in self.all_views::<UserView>(&USERS).await? {
            model.users.insert(id, view);
        }
        Ok(model)
    }

    /// Every row of the live tables, except interactions unless asked for.
    pub async fn whole(&self, with_interactions: bool) -> Result<CrmModel, ProjectionError> {
        let mut model = self.users().await?;
        model.deals = self.all_views(&DEALS).await?.into_iter().collect();
        model.contacts = self.all_views(&CONTACTS).await?.into_iter().collect();
        model.accounts = self.all_views(&ACCOUNTS).await?.into_iter().collect();
        if with_interactions {
            model.interactions = self.all_views(&INTERACTIONS).await?.into_iter().collect();
        }
        if let Some(state) = self.state().await? {
            model.position = state.position;
        }
        Ok(model)
    }

    /// The interactions that name a record (for an account: that touched it).
    pub async fn interactions_of(&self, column: &str, id: Uuid) -> Result<Vec<InteractionView>, ProjectionError> {
        debug_assert!(INTERACTIONS.indexes.iter().any(|i| i.columns == column));
        let sql = format!("SELECT id, view FROM {LIVE}interactions WHERE {column} = $1 ORDER BY id");
        let mut conn = self.readers.acquire().await?;
        let rows = conn.fetch(&sql, vec![text(&id)], &[Kind::Text, Kind::Text]).await?;
        rows.into_iter()
            .map(|row| view_of(row, "interactions").map(|(_, view)| view))
            .collect()
    }

    /// One page of live (not archived) records of a kind, in id order.
    pub async fn list(&self, kind_table: &str, filter: &ListFilter) -> Result<Vec<Uuid>, ProjectionError> {
        let mut sql = format!("SELECT id FROM {LIVE}{kind_table} WHERE archived = 0");
        let mut binds: Vec<Cell> = Vec::new();
        let mut condition = |sql: &mut String, column: &str, op: &str, value: String| {
            binds.push(Cell::Text(Some(value)));
            sql.push_str(&format!(" AND {column} {op} ${}", binds.len()));
        };
        if let Some(cursor) = filter.after {
            condition(&mut sql, "id", ">", cursor.to_string());
        }
        if let Some(owner) = filter.owner_id {
            condition(&mut sql, "owner_id", "=", owner.to_string());
        }
        if let Some(account) = filter.account_id {
            condition(&mut sql, "account_id", "=", account.to_string());
        }
        if let Some(stage) = &filter.stage {
            condition(&mut sql, "stage", "=", stage.clone());
        }
        let mut conn = self.readers.acquire().await?;
        if let Some(needle) = &filter.text {
            let needle = needle.to_lowercase();
            let indexed = TABLES
                .iter()
                .find(|t| t.name == kind_table && t.searched && self.search == SearchIndex::Fts5)
                .filter(|_| needle.chars().count() >= 3);
            let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
            let fts = indexed.map(|table| search_table(LIVE, table));
            let sparse = match &fts {
                Some(fts) => sparse_match(&mut *conn, kind_table, fts, &phrase, filter.limit).await?,
                None => None,
            };
            match sparse {
                // Few rows hold the needle: the trigram index named them all,
                // and the page is the first of those in id order. They are
                // passed on as a JSON array, not matched again: the match
                // is most of a search's cost (8 of 20 ms for a piece of an
                // email at 1M contacts).
                Some(rowids) => {
                    binds.push(Cell::Text(Some(rowids)));
                    sql.push_str(&format!(
                        " AND rowid IN (SELECT value FROM json_each(${}))",
                        binds.len()
                    ));
                }
                // Many rows hold it (or it is under three characters, which
                // trigrams cannot look up): reading rows in id order fills a
                // page after a few of them.
                _ => {
                    condition(&mut sql, "search", "LIKE", format!("%{}%", escape_like(&needle)));
                    sql.push_str(" ESCAPE '\\'");
                }
            }
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", filter.limit));
        let rows = match filter.text {
            Some(_) => conn.fetch_planned(&sql, binds, &[Kind::Text]).await?,
            None => conn.fetch(&sql, binds, &[Kind::Text]).await?,
        };
        rows.into_iter()
            .map(|row| parse_id(row.into_iter().next().and_then(Cell::into_text)))
            .collect()
    }

    /// Up to `limit` ids of a table's rows after `after`, in id order: only
    /// live (not archived) ones where the table keeps that flag.
    /// Other live records of `table` that share one of `id`'s duplicate
    /// values (`columns`): (id, column), at most `limit` per column. One
    /// statement (a write's answer pays one round trip), each part a range
    /// of its column's partial index.
    pub async fn sharing(
        &self,
        table: &str,
        columns: &[&'static str],
        id: Uuid,
        limit: usize,
    ) -> Result<Vec<(Uuid, &'static str)>, ProjectionError> {
        let parts: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(n, column)| {
                format!(
                    "SELECT * FROM (SELECT m.id, CAST({n} AS BIGINT) AS rule FROM {LIVE}{table} r JOIN {LIVE}{table} m \
                     ON m.{column} = r.{column} WHERE r.id = $1 AND r.{column} IS NOT NULL \
                     AND m.{column} IS NOT NULL AND m.id <> r.id ORDER BY m.id LIMIT {limit}) AS part{n}"
                )
            })
            .collect();
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.readers.acquire().await?;
        let rows = conn
            .fetch(
                &parts.join(" UNION ALL "),
                vec![Cell::Text(Some(id.to_string()))],
                &[Kind::Text, Kind::Int],
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cells = row.into_iter();
            let other = parse_id(cells.next().and_then(Cell::into_text))?;
            let rule = cells.next().and_then(|cell| cell.as_int()).unwrap_or_default();
            if let Some(column) = usize::try_from(rule).ok().and_then(|n| columns.get(n)) {
                found.push((other, *column));
            }
        }
        Ok(found)
    }

    pub async fn ids_after(
        &self,
        table: &Table,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, ProjectionError> {
        let live = if table.columns.iter().any(|c| c.name == "archived") {
            "archived = 0 AND "
        } else {
            ""
        };
        let sql = format!(
            "SELECT id FROM {LIVE}{} WHERE {live}id > $1 ORDER BY id LIMIT {limit}",
            table.name
        );
        // Every id's text sorts after the empty string.
        let after = Cell::Text(Some(after.map(|id| id.to_string()).unwrap_or_default()));
        let mut conn = self.readers.acquire().await?;
        let rows = conn.fetch(&sql, vec![after], &[Kind::Text]).await?;
        rows.into_iter()
            .map(|row| parse_id(row.into_iter().next().and_then(Cell::into_text)))
            .collect()
    }

    /// Live (not archived) contacts, accounts and deals.
    pub async fn live_counts(&self) -> Result<[u64; 3], ProjectionError> {
        let mut conn = self.readers.acquire().await?;
        let mut counts = [0; 3];
        for (count, table) in counts.iter_mut().zip([&CONTACTS, &ACCOUNTS, &DEALS]) {
            let sql = format!("SELECT COUNT(*) FROM {LIVE}{} WHERE archived = 0", table.name);
            let rows = conn.fetch(&sql, Vec::new(), &[Kind::Int]).await?;
            let n = rows.into_iter().next().and_then(|row| row.into_iter().next());
            *count = match n {
                Some(Cell::Int(n)) => n.max(0) as u64,
                _ => 0,
            };
        }
        Ok(counts)
    }

    /// Answers a report from the live tables, measured at `as_of`, inside
    /// one read transaction: its summary and its pages agree.
    pub async fn report(
        &self,
        config: &domain::Pipeline,
        request: &crate::reports::ReportRequest,
        as_of: chrono::DateTime<chrono::Utc>,
    ) -> Result<serde_json::Value, ProjectionError> {
        let mut conn = self.readers.acquire().await?;
        let mut tx = conn.begin().await?;
        if self.dialect == Dialect::Postgres {
            tx.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", Vec::new())
                .await?;
        }
        let report = crate::reports::run(&mut *tx, config, request, as_of).await;
        tx.rollback().await?;
        report
    }

    /// Tables of their own, in memory, holding `model`'s users, contacts,
    /// accounts and deals: what a report as of a past date reads, with the
    /// same queries as the live tables.
    pub async fn scratch(model: &CrmModel) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        // One connection for good: an in-memory database lives as long as it.
        let pool = AnyPoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await?;
        let tables = Self {
            writer: pool.clone(),
            readers: pool,
            dialect: Dialect::Sqlite,
            // Reports as of a date search nothing.
            search: SearchIndex::None,
            sqlite_file: None,
        };
        let mut conn = tables.writer.acquire().await?;
        let mut tx = conn.begin().await?;
        execute_all(&mut *tx, create_tables_sql(LIVE, Dialect::Sqlite)).await?;
        let every = Keys {
            users: model.users.keys().copied().collect(),
            contacts: model.contacts.keys().copied().collect(),
            accounts: model.accounts.keys().copied().collect(),
            deals: model.deals.keys().copied().collect(),
            ..Keys::default()
        };
        write_changed(&mut *tx, LIVE, model, &every, &mut Loaded::default(), Upkeep::NONE).await?;
        execute_all(&mut *tx, create_indexes_sql(LIVE, 0, &SearchIndex::None)).await?;
        tx.commit().await?;
        Ok(tables)
    }

    /// Every row of a live table, in id order.
    async fn all_views<T: DeserializeOwned>(&self, table: &Table) -> Result<Vec<(Uuid, T)>, ProjectionError> {
        let sql = format!("SELECT id, view FROM {LIVE}{} ORDER BY id", table.name);
        let mut conn = self.readers.acquire().await?;
        let rows = conn.fetch(&sql, Vec::new(), &[Kind::Text, Kind::Text]).await?;
        rows.into_iter().map(|row| view_of(row, table.name)).collect()
    }
}

/// The rebuild's last step in progress (`Tables::begin_swap`).
#[derive(Debug)]
pub(crate) struct Swap {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    search: SearchIndex,
}

impl Swap {
    /// Folds the last events into the rebuild's rows, inside the swap.
    pub async fn fold(
        &mut self,
        rows: &mut AsideRows,
        keys: &Keys,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<(), ProjectionError> {
        rows.fold(&mut *self.tx, keys, fold).await?;
        if rows.full() {
            rows.flush(&mut *self.tx, Flush::Room).await?;
        }
        Ok(())
    }

    /// Writes the rebuild's last rows and puts the rebuilt tables in place
    /// of the live ones, atomically.
    pub async fn finish(mut self, rows: &mut AsideRows, state: State) -> Result<(), ProjectionError> {
        rows.flush(&mut *self.tx, Flush::All).await?;
        execute_all(&mut *self.tx, drop_sql(LIVE)).await?;
        let mut renames: Vec<String> = TABLES
            .iter()
            .map(|t| format!("ALTER TABLE {NEXT}{0} RENAME TO {LIVE}{0}", t.name))
            .collect();
        if self.search == SearchIndex::Fts5 {
            renames.extend(TABLES.iter().filter(|t| t.searched).map(|t| {
                format!(
                    "ALTER TABLE {} RENAME TO {}",
                    search_table(NEXT, t),
                    search_table(LIVE, t)
                )
            }));
        }
        execute_all(&mut *self.tx, renames).await?;
        write_state(&mut *self.tx, state).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Folded {
    /// The tables now cover this position.
    Covered(u64),
    /// The tables stood elsewhere (at this position, or at another model
    /// version), so the batch was left for catch-up to fold.
    Skipped(Option<u64>),
}

/// Folds one batch of catch-up, which starts at `first`, into the live
/// tables on `conn`, inside the caller's transaction: reads and locks the
/// state row (events the tables already cover are skipped), loads the rows
/// `keys` names (then the accounts of the contacts and deals loaded), runs
/// `fold` over them (`CrmModel::apply` on a partial model), writes back the
/// rows that changed and the position the tables reach.
pub(crate) async fn fold_rows(
    conn: &mut dyn Exec,
    first: u64,
    keys: &Keys,
    mut cache: Option<&mut RowCache>,
    fold: impl FnOnce(&mut CrmModel),
) -> Result<Folded, ProjectionError> {
    let lock = lock_clause(conn.dialect());
    let Some(mut state) = read_state(conn, lock).await? else {
        return Ok(Folded::Skipped(None));
    };
    let behind = state.position + 1 < first;
    if state.model_version != crate::MODEL_VERSION || behind {
        return Ok(Folded::Skipped(Some(state.position)));
    }
    let covered = state.position;
    let remember = cache.is_some();
    let (mut model, mut loaded) = match cache.as_deref_mut() {
        // What the cache holds is what the tables hold only if nothing else
        // folded since this cache last did.
        Some(cache) if cache.model.position == covered => {
            (std::mem::take(&mut cache.model), std::mem::take(&mut cache.loaded))
        }
        _ => (CrmModel::default(), Loaded::default()),
    };
    model.position = covered;
    let touched = load_touched(conn, LIVE, keys, &mut model, &mut loaded).await?;
    fold(&mut model);
    write_changed(
        conn,
        LIVE,
        &model,
        &touched,
        &mut loaded,
        Upkeep {
            remember,
            groups: true,
            absent_unless_loaded: true,
        },
    )
    .await?;
    let position = model.position;
    state.position = position;
    write_state(conn, state).await?;
    if let Some(cache) = cache
        && rows_held(&model) <= ROW_CACHE_ROWS_MAX
    {
        cache.model = model;
        cache.loaded = loaded;
    }
    Ok(Folded::Covered(position))
}

/// Folds an append's own events (`first..=last`) inside its transaction:
/// the commit hook. The tables must stand right before `first`, at this
/// `MODEL_VERSION`, else nothing is folded and catch-up will. The statement
/// that checks this also moves the state row to `last` (holding it until
/// COMMIT, as a rebuild's swap expects) and, on PostgreSQL, loads the rows
/// the batch names: a batch of creates costs two statements, that one and
/// its upsert. A failure after the claim fails the hook, whose writes are
/// all undone with it.
pub(crate) async fn fold_appended(
    conn: &mut dyn Exec,
    first: u64,
    last: u64,
    keys: &Keys,
    fold: impl FnOnce(&mut CrmModel),
) -> Result<Folded, ProjectionError> {
    let claim = Claim { first, last };
    let mut model = CrmModel::default();
    let mut loaded = Loaded::default();
    if !load_into(conn, LIVE, keys, &mut model, &mut loaded, Some(claim)).await? {
        let state = read_state(conn, "").await?;
        return Ok(Folded::Skipped(state.map(|state| state.position)));
    }
    model.position = first - 1;
    let touched = with_accounts(conn, LIVE, keys, &mut model, &mut loaded).await?;
    fold(&mut model);
    if model.position != last {
        return Err(ProjectionError::ReadModel(format!(
            "an append of positions {first}..={last} folded to {}",
            model.position
        )));
    }
    write_changed(conn, LIVE, &model, &touched, &mut loaded, Upkeep::GROUPS).await?;
    Ok(Folded::Covered(last))
}

/// An append's claim on the live state row: from right before `first` to `last`.
#[derive(Debug, Clone, Copy)]
struct Claim {
    first: u64,
    last: u64,
}

impl Claim {
    /// The statement that moves the state row if it stands right before
    /// the batch and returns one row if it did, with its binds numbered
    /// from 1.
    fn sql(self) -> (&'static str, Vec<Cell>) {
        let sql = "UPDATE rm_state SET position = $1 WHERE name = $2 AND model_version = $3 AND position = $4 \
                   RETURNING 'claimed', name, NULL";
        let binds = vec![
            Cell::Int(to_i64(self.last)),
            Cell::Text(Some(STATE_NAME.to_owned())),
            Cell::Int(i64::from(crate::MODEL_VERSION)),
            Cell::Int(to_i64(self.first - 1)),
        ];
        (sql, binds)
    }
}

/// Loads the rows `keys` names that `model` does not hold yet, then the
/// accounts reached through contacts and deals (`Keys::via`: an interaction
/// with a contact touches its account too); returns every key the fold may
/// change.
async fn load_touched(
    conn: &mut dyn Exec,
    prefix: &str,
    keys: &Keys,
    model: &mut CrmModel,
    loaded: &mut Loaded,
) -> Result<Keys, ProjectionError> {
    load_into(conn, prefix, &not_held(keys, model), model, loaded, None).await?;
    with_accounts(conn, prefix, keys, model, loaded).await
}

/// `keys` and the accounts of the contacts and deals in `keys.via`, loading
/// those accounts not asked for already.
async fn with_accounts(
    conn: &mut dyn Exec,
    prefix: &str,
    keys: &Keys,
    model: &mut CrmModel,
    loaded: &mut Loaded,
) -> Result<Keys, ProjectionError> {
    let mut touched = keys.clone();
    touched.accounts.extend(accounts_reached(keys, model));
    let (interactions, accounts) = erasure_reach(keys, model);
    touched.interactions.extend(interactions);
    touched.accounts.extend(accounts);
    let missing = Keys {
        accounts: touched
            .accounts
            .iter()
            .filter(|id| !keys.accounts.contains(id) && !model.accounts.contains_key(id))
            .copied()
            .collect(),
        ..Keys::default()
    };
    load_into(conn, prefix, &missing, model, loaded, None).await?;
    Ok(touched)
}

/// The interactions of the contacts a batch erases, as `model` holds them,
/// and the accounts they touched (whose last interaction may be one).
fn erasure_reach(keys: &Keys, model: &CrmModel) -> (BTreeSet<Uuid>, BTreeSet<Uuid>) {
    if keys.interactions_of.is_empty() {
        return Default::default();
    }
    let theirs: Vec<_> = model
        .interactions
        .values()
        .filter(|i| i.logged.contact_id.is_some_and(|c| keys.interactions_of.contains(&c)))
        .collect();
    (
        theirs.iter().map(|i| i.id).collect(),
        theirs.iter().filter_map(|i| i.account_id).collect(),
    )
}

/// The accounts a batch reaches through the contacts and deals it names
/// (`keys.via`), as `model` holds them or as the batch links them.
fn accounts_reached(keys: &Keys, model: &CrmModel) -> BTreeSet<Uuid> {
    let accounts_of_contacts = keys
        .via
        .iter()
        .filter_map(|id| model.contacts.get(id))
        .filter_map(|c| c.fields.account_id);
    let accounts_of_deals = keys
        .via
        .iter()
        .filter_map(|id| model.deals.get(id))
        .map(|d| d.fields.account_id);
    let linked = keys.via.iter().filter_map(|id| keys.links.get(id)).flatten().copied();
    accounts_of_contacts.chain(accounts_of_deals).chain(linked).collect()
}

/// Copies into `model` the rows of `keys` that `from` holds and `model`
/// does not.
fn copy_held(from: &CrmModel, keys: &Keys, model: &mut CrmModel) {
    fn copy<T: Clone>(from: &BTreeMap<Uuid, T>, ids: &BTreeSet<Uuid>, to: &mut BTreeMap<Uuid, T>) {
        for id in ids {
            if let (Some(row), std::collections::btree_map::Entry::Vacant(slot)) = (from.get(id), to.entry(*id)) {
                slot.insert(row.clone());
            }
        }
    }
    copy(&from.users, &keys.users, &mut model.users);
    copy(&from.contacts, &keys.contacts, &mut model.contacts);
    copy(&from.accounts, &keys.accounts, &mut model.accounts);
    copy(&from.deals, &keys.deals, &mut model.deals);
    copy(&from.interactions, &keys.interactions, &mut model.interactions);
}

/// Rows catch-up keeps from one batch to the next, so that hot rows (the
/// users, the big accounts) are not read back for every batch. Valid only
/// while nobody else folds: the position check in `fold_rows` sees that.
#[derive(Debug, Default)]
pub(crate) struct RowCache {
    model: CrmModel,
    loaded: Loaded,
}

/// Rows a `RowCache` holds at most; past this it starts again empty, so
/// catch-up's memory does not grow with the log.
const ROW_CACHE_ROWS_MAX: usize = 50_000;

fn rows_held(model: &CrmModel) -> usize {
    records_held(model) + model.interactions.len()
}

/// Rows held that later events change (all but interactions).
fn records_held(model: &CrmModel) -> usize {
    model.users.len() + model.contacts.len() + model.accounts.len() + model.deals.len()
}

/// A rebuild's rows: a write-back cache over the rebuild tables, which
/// nobody else writes. Batches fold into the rows held here; a row is
/// written once when the cache is full (or the rebuild is done), however
/// many batches changed it meanwhile, so a hot account costs one write per
/// fill instead of one per batch. Killed before a flush, nothing is lost
/// that a rebuild needs: the tables are not swapped in until it ends.
#[derive(Debug)]
pub(crate) struct AsideRows {
    model: CrmModel,
    loaded: Loaded,
    /// Rows changed since they were last written.
    dirty: Keys,
    /// Rows held at most: past this they are written and forgotten.
    rows_max: usize,
    /// The tables they are written to: the rebuild's (`NEXT`), or a
    /// scratch database's own (`LIVE`, see `scratch_writer`).
    prefix: &'static str,
    /// Whether those tables are indexed yet (a rebuild's are at its swap),
    /// so that writes keep their duplicate groups current.
    indexed: bool,
}

impl AsideRows {
    /// A rebuild's rows, written to the `rm_next_*` tables.
    pub fn new(rows_max: usize) -> Self {
        Self::in_tables(NEXT, rows_max)
    }

    /// Rows written to the tables named with `prefix`.
    pub fn in_tables(prefix: &'static str, rows_max: usize) -> Self {
        Self {
            model: CrmModel::default(),
            loaded: Loaded::default(),
            dirty: Keys::default(),
            rows_max,
            prefix,
            indexed: false,
        }
    }

    /// These rows, leaving empty ones of the same size in their place (to
    /// hand them to a blocking thread and back).
    pub fn take(&mut self) -> Self {
        let mut empty = Self::in_tables(self.prefix, self.rows_max);
        empty.indexed = self.indexed;
        std::mem::replace(self, empty)
    }

    /// From now on writes keep the duplicate groups current: the tables
    /// have their indexes, and the groups of the rows written so far.
    pub fn tables_indexed(&mut self) {
        self.indexed = true;
    }

    fn upkeep(&self) -> Upkeep {
        Upkeep {
            remember: false,
            groups: self.indexed,
            absent_unless_loaded: false,
        }
    }

    /// Loads the rows a batch needs and does not hold yet, runs `fold` over
    /// them and remembers which it may have changed. Writes nothing.
    async fn fold(
        &mut self,
        conn: &mut dyn Exec,
        keys: &Keys,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<(), ProjectionError> {
        self.fold_over(conn, &[], keys, fold).await
    }

    /// `fold`, where rows not held may also be among those a flush still
    /// writes (`writing`, newest first): those are taken from the newest
    /// that holds them, not from the tables,
    /// which do not have them until that flush commits. Taken so, a row
    /// has no JSON to compare with and is written again if touched.
    async fn fold_over(
        &mut self,
        conn: &mut dyn Exec,
        writing: &[Arc<CrmModel>],
        keys: &Keys,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<(), ProjectionError> {
        for writing in writing {
            copy_held(writing, &not_held(keys, &self.model), &mut self.model);
            // The interactions of a contact being erased that are on their
            // way to the tables: newer than what the tables hold.
            if !keys.interactions_of.is_empty() {
                let theirs = Keys {
                    interactions: erasure_reach(keys, writing).0,
                    ..Keys::default()
                };
                copy_held(writing, &not_held(&theirs, &self.model), &mut self.model);
            }
        }
        let wanted = not_held(keys, &self.model);
        load_into(conn, self.prefix, &wanted, &mut self.model, &mut self.loaded, None).await?;
        // The accounts reached through the contacts and deals now held.
        if !writing.is_empty() {
            let mut accounts = Keys {
                accounts: accounts_reached(keys, &self.model),
                ..Keys::default()
            };
            accounts.accounts.extend(erasure_reach(keys, &self.model).1);
            for writing in writing {
                copy_held(writing, &accounts, &mut self.model);
            }
        }
        let touched = with_accounts(conn, self.prefix, keys, &mut self.model, &mut self.loaded).await?;
        fold(&mut self.model);
        self.dirty.extend(touched);
        Ok(())
    }

    fn full(&self) -> bool {
        self.model.interactions.len() > self.rows_max.min(INTERACTIONS_HELD_MAX)
            || records_held(&self.model) > self.rows_max
    }

    /// Writes rows the tables do not have yet, and forgets them: every row
    /// held (`Flush::All`), or just enough to make room (`Flush::Room`).
    /// Interactions never change once logged: when only they fill the
    /// cache, they alone are written and the records stay held (unwritten),
    /// so a record is written about once per fill of records, however many
    /// interactions name it meanwhile.
    async fn flush(&mut self, conn: &mut dyn Exec, what: Flush) -> Result<(), ProjectionError> {
        self.detach(what).write(conn).await
    }

    /// What `flush` writes, taken out of the rows held (which are then as
    /// after the flush).
    fn detach(&mut self, what: Flush) -> Detached {
        let upkeep = self.upkeep();
        if what == Flush::Room && records_held(&self.model) <= self.rows_max {
            return Detached {
                model: Arc::new(CrmModel {
                    interactions: std::mem::take(&mut self.model.interactions),
                    ..CrmModel::default()
                }),
                dirty: Keys {
                    interactions: std::mem::take(&mut self.dirty.interactions),
                    ..Keys::default()
                },
                loaded: Loaded::default(),
                upkeep,
                prefix: self.prefix,
            };
        }
        Detached {
            model: Arc::new(std::mem::take(&mut self.model)),
            dirty: std::mem::take(&mut self.dirty),
            loaded: std::mem::take(&mut self.loaded),
            upkeep,
            prefix: self.prefix,
        }
    }
}

/// Rows a flush writes, out of the rows a rebuild holds: written on the
/// spot, or by the writer thread while the fold goes on.
struct Detached {
    model: Arc<CrmModel>,
    dirty: Keys,
    loaded: Loaded,
    upkeep: Upkeep,
    prefix: &'static str,
}

impl Detached {
    async fn write(mut self, conn: &mut dyn Exec) -> Result<(), ProjectionError> {
        write_changed(
            conn,
            self.prefix,
            &self.model,
            &self.dirty,
            &mut self.loaded,
            self.upkeep,
        )
        .await
    }
}

/// Interactions a rebuild holds at most, whatever records it may hold: they
/// are written once and never looked at again.
const INTERACTIONS_HELD_MAX: usize = 10_000;

/// How much of a rebuild's rows a flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Enough to make room for more: when full.
    Room,
    /// Every row held: at the rebuild's end.
    All,
}

/// A rebuild's writer on SQLite: a native connection that a blocking thread
/// owns, so that each of a batch's statements runs at once instead of being
/// handed to sqlx's worker thread and back (at 100k contacts the rebuild
/// took 31.5 s this way against 38 s through the pool). Writes only the `rm_next_*` tables; every write
/// transaction takes the lock first (`BEGIN IMMEDIATE`), as the pool's do.
///
/// With a writer thread (`Tables::aside_writer`), a full cache is handed to
/// that thread, on a second connection, and the fold goes on at once with
/// an empty one: the rows' JSON, their columns and SQLite's writes run on
/// the other core. A row the fold needs while its flush is still being
/// written is copied from the rows in flight (the tables have it only once
/// that flush commits). A few flushes may be in flight, at most one of them
/// with records, so memory holds at most twice the records of one fill.
pub(crate) struct AsideWriter {
    /// Loads, and every write when there is no writer thread.
    conn: rusqlite::Connection,
    behind: Option<WriterThread>,
}

/// A thread that writes detached flushes on its own connection.
struct WriterThread {
    jobs: Option<std::sync::mpsc::Sender<Detached>>,
    done: std::sync::mpsc::Receiver<Result<(), ProjectionError>>,
    /// The rows of the flushes in flight, newest first, until each is
    /// known to have committed.
    writing: Vec<Arc<CrmModel>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterThread {
    fn start(conn: rusqlite::Connection) -> Result<Self, ProjectionError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Detached>();
        let (finished, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("crm-rebuild-write".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(detached) = queue.recv() {
                    let written =
                        in_write_transaction(&mut conn, |conn| futures_executor::block_on(detached.write(conn)));
                    if finished.send(written).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| ProjectionError::Internal(format!("cannot start the rebuild's writer: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            writing: Vec::new(),
            thread: Some(thread),
        })
    }

    /// Waits for the oldest flush in flight, if any, and says how it ended.
    fn settle_one(&mut self) -> Result<(), ProjectionError> {
        if self.writing.pop().is_none() {
            return Ok(());
        }
        self.done
            .recv()
            .map_err(|_| ProjectionError::Internal("the rebuild's writer stopped".into()))?
    }

    /// Waits for every flush in flight.
    fn settle(&mut self) -> Result<(), ProjectionError> {
        while !self.writing.is_empty() {
            self.settle_one()?;
        }
        Ok(())
    }

    /// Hands `detached` to the thread, once fewer than `FLUSHES_IN_FLIGHT`
    /// are before it, and none of records if it has records: memory holds
    /// the records of at most two fills (the one in flight and the next).
    fn write(&mut self, detached: Detached) -> Result<(), ProjectionError> {
        let has_records = |model: &CrmModel| records_held(model) > 0;
        while self.writing.len() >= FLUSHES_IN_FLIGHT
            || (has_records(&detached.model) && self.writing.iter().any(|m| has_records(m)))
        {
            self.settle_one()?;
        }
        let writing = detached.model.clone();
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(detached).ok())
            .ok_or_else(|| ProjectionError::Internal("the rebuild's writer stopped".into()))?;
        self.writing.insert(0, writing);
        Ok(())
    }
}

/// Flushes a rebuild hands its writer thread before it waits for the
/// oldest: a flush of records takes the writer longer than the fold needs
/// for the next few flushes of interactions, which would otherwise wait.
const FLUSHES_IN_FLIGHT: usize = 3;

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what it has.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `write` in one write transaction on `conn` (`BEGIN IMMEDIATE`),
/// rolled back if it fails.
fn in_write_transaction(
    conn: &mut rusqlite::Connection,
    write: impl FnOnce(&mut rusqlite::Connection) -> Result<(), ProjectionError>,
) -> Result<(), ProjectionError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let written = write(conn).and_then(|()| conn.execute_batch("COMMIT").map_err(ProjectionError::from));
    if written.is_err() && !conn.is_autocommit() {
        // The error is the one to report; a failed rollback leaves the
        // connection unusable, and it is dropped with the rebuild.
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

impl AsideWriter {
    /// `Tables::fold_aside` on this connection.
    pub fn fold(
        &mut self,
        rows: &mut AsideRows,
        keys: &Keys,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<(), ProjectionError> {
        let writing = self.behind.as_ref().map_or(&[][..], |behind| &behind.writing[..]);
        futures_executor::block_on(rows.fold_over(&mut self.conn, writing, keys, fold))?;
        if rows.full() {
            match &mut self.behind {
                Some(behind) => behind.write(rows.detach(Flush::Room))?,
                None => self.flush(rows, Flush::Room)?,
            }
        }
        Ok(())
    }

    /// `Tables::flush_aside` on this connection, in one write transaction,
    /// after the flush in flight (if any) is done: when this returns,
    /// everything written is committed.
    pub fn flush(&mut self, rows: &mut AsideRows, what: Flush) -> Result<(), ProjectionError> {
        if let Some(behind) = &mut self.behind {
            behind.settle()?;
        }
        in_write_transaction(&mut self.conn, |conn| {
            futures_executor::block_on(rows.flush(conn, what))
        })
    }

    /// Waits until every flush handed to the writer thread has committed.
    pub fn settle(&mut self) -> Result<(), ProjectionError> {
        self.behind.as_mut().map_or(Ok(()), WriterThread::settle)
    }
}

/// A database of one question's own in a new SQLite file at `file` (a
/// report as of a date folds the log into it): the `rm_*` tables, empty and
/// not indexed yet, and the native connection that fills them. It is thrown
/// away after the answer, so it keeps no journal and never waits for the
/// disk.
pub(crate) fn scratch_writer(file: &std::path::Path) -> Result<AsideWriter, ProjectionError> {
    let conn = rusqlite::Connection::open(file)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB};"
    ))?;
    let mut writer = AsideWriter { conn, behind: None };
    futures_executor::block_on(execute_all(&mut writer.conn, create_tables_sql(LIVE, Dialect::Sqlite)))?;
    Ok(writer)
}

impl AsideWriter {
    /// Indexes a scratch database's tables once they are filled, as the
    /// live tables are, but without a search index (reports search nothing),
    /// writes the position they reflect, and closes the connection.
    pub fn finish_scratch(mut self, position: u64) -> Result<(), ProjectionError> {
        let conn = &mut self.conn;
        futures_executor::block_on(async move {
            execute_all(conn, create_indexes_sql(LIVE, 0, &SearchIndex::None)).await?;
            execute_all(conn, vec![STATE_TABLE_SQL.to_owned()]).await?;
            let state = State {
                model_version: crate::MODEL_VERSION,
                generation: 0,
                position,
            };
            write_state(conn, state).await
        })
    }
}

/// Folds batches into a scratch database that `finish_scratch` indexed, as
/// catch-up folds into the live tables (`fold_rows`), on a native
/// connection: run on a blocking thread. It goes through the tables'
/// indexes, counts and groups as it goes, since reports read them between
/// batches: a trend's fold (`Projector::reports_over_time`) and the update
/// of a kept fold as of a date.
pub(crate) struct ScratchFolder {
    conn: rusqlite::Connection,
    /// Rows kept from batch to batch (`keep_rows`), and a writer's page
    /// cache, for a long fold; a short one keeps neither.
    cache: Option<RowCache>,
}

impl ScratchFolder {
    pub(crate) fn open(file: &std::path::Path, keep_rows: bool) -> Result<Self, ProjectionError> {
        let conn = rusqlite::Connection::open(file)?;
        conn.execute_batch("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;")?;
        if keep_rows {
            conn.execute_batch(&format!("PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB};"))?;
        }
        Ok(Self {
            conn,
            cache: keep_rows.then(RowCache::default),
        })
    }

    /// `Tables::fold_batch`, on this connection.
    pub(crate) fn fold_batch(
        &mut self,
        first: u64,
        keys: &Keys,
        fold: impl FnOnce(&mut CrmModel),
    ) -> Result<Folded, ProjectionError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let folded = futures_executor::block_on(fold_rows(&mut self.conn, first, keys, self.cache.as_mut(), fold));
        match folded {
            Ok(folded) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(folded)
            }
            Err(error) => {
                // The cache may hold rows the rollback undoes.
                if let Some(cache) = &mut self.cache {
                    *cache = RowCache::default();
                }
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(error)
            }
        }
    }
}

impl Tables {
    /// Reads the scratch database at `file` that `scratch_writer` filled
    /// and `finish_scratch` indexed (a `ScratchFolder` may fold into it
    /// further).
    pub async fn open_scratch(file: &std::path::Path) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=ro", file.display());
        let readers = pool(
            &url,
            Dialect::Sqlite,
            None,
            1,
            Setup::Reader,
            std::time::Duration::from_secs(5),
        )
        .await?;
        Ok(Self {
            writer: readers.clone(),
            readers,
            dialect: Dialect::Sqlite,
            search: SearchIndex::None,
            sqlite_file: None,
        })
    }
}

/// The keys whose rows `model` does not hold yet and that existed before
/// the batch (a record it creates has no row to load).
fn not_held(keys: &Keys, model: &CrmModel) -> Keys {
    let wanted = |ids: &BTreeSet<Uuid>, held: &dyn Fn(&Uuid) -> bool| -> BTreeSet<Uuid> {
        ids.iter()
            .filter(|id| !held(id) && !keys.created.contains(id))
            .copied()
            .collect()
    };
    Keys {
        users: wanted(&keys.users, &|id| model.users.contains_key(id)),
        contacts: wanted(&keys.contacts, &|id| model.contacts.contains_key(id)),
        accounts: wanted(&keys.accounts, &|id| model.accounts.contains_key(id)),
        deals: wanted(&keys.deals, &|id| model.deals.contains_key(id)),
        interactions: wanted(&keys.interactions, &|id| model.interactions.contains_key(id)),
        created: BTreeSet::new(),
        via: BTreeSet::new(),
        links: BTreeMap::new(),
        interactions_of: keys.interactions_of.clone(),
    }
}

/// What a list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Records with ids after this one (the previous page's cursor).
    pub after: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub stage: Option<String>,
    /// A case-insensitive substring of the record's name, email, title or domain.
    pub text: Option<String>,
    pub limit: usize,
}

/// A pool of at most `connections_max` connections on the log's database
/// at `url` (in `schema` on PostgreSQL), set up as the read models' reader
/// pools are, for a part of the server that keeps tables of its own beside
/// the log (the webhook subscriptions).
pub async fn side_pool(
    url: &str,
    schema: Option<&str>,
    connections_max: u32,
    connect_wait: std::time::Duration,
) -> Result<AnyPool, ProjectionError> {
    sqlx::any::install_default_drivers();
    pool(
        url,
        Dialect::of_url(url),
        schema,
        connections_max,
        Setup::Reader,
        connect_wait,
    )
    .await
}

/// What a pool's connections are for, which sets them up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Reader,
    Writer,
}

async fn pool(
    url: &str,
    dialect: Dialect,
    schema: Option<&str>,
    connections_max: u32,
    setup: Setup,
    connect_wait: std::time::Duration,
) -> Result<AnyPool, ProjectionError> {
    let setup = match dialect {
        // The read models can always be refolded from the log, so their
        // commits need not wait for the disk: a crash loses at most the last
        // folds, and the state row committed with them says where to resume.
        Dialect::Sqlite if setup == Setup::Writer => format!(
            "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA synchronous = NORMAL; \
             PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB};"
        ),
        Dialect::Sqlite => format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"),
        Dialect::Postgres => schema.map(|s| format!("SET search_path TO {s};")).unwrap_or_default(),
    };
    // No ping before every use (see `eventstore::ping_if_idle`): a SQLite
    // file is never cut off; an idle PostgreSQL connection is pinged first.
    let options = AnyPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(connect_wait)
        .test_before_acquire(false);
    let options = match dialect {
        Dialect::Postgres => options.before_acquire(eventstore::ping_if_idle),
        Dialect::Sqlite => options,
    };
    let pool = options
        .after_connect(move |conn, _| {
            let setup = setup.clone();
            Box::pin(async move {
                if !setup.is_empty() {
                    sqlx::Executor::execute(&mut *conn, setup.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await?;
    Ok(pool)
}

/// The rows of `table` that hold `phrase` (a JSON array of their rowids),
/// if few enough do that sorting them all by id costs less than reading
/// rows in id order until a page of `limit` is full. Matches are taken up
/// to a cap that balances the two: taking all `cap` costs about as much as
/// reading `limit * rows / cap` rows, so the cap is the square root of
/// `limit * rows` (times 2, a row read costing about twice a match), which
/// bounds either way to a few thousand rows.
async fn sparse_match(
    conn: &mut dyn Exec,
    table: &str,
    fts: &str,
    phrase: &str,
    limit: usize,
) -> Result<Option<String>, ProjectionError> {
    let sql = format!("SELECT COALESCE(MAX(rowid), 0) FROM {LIVE}{table}");
    let rows = conn.fetch(&sql, Vec::new(), &[Kind::Int]).await?;
    let n_rows = rows.first().and_then(|r| r.first()).and_then(Cell::as_int).unwrap_or(0);
    let cap = ((2.0 * limit as f64 * n_rows.max(1) as f64).sqrt() as i64).max(1);
    // One row back, not one per match: a row costs more to hand over than
    // to find (10,000 of them 25 ms).
    let sql = format!(
        "SELECT COUNT(*), json_group_array(rowid) FROM (SELECT rowid FROM {fts} WHERE {fts} MATCH $1 LIMIT {cap})"
    );
    let rows = conn
        .fetch(
            &sql,
            vec![Cell::Text(Some(phrase.to_owned()))],
            &[Kind::Int, Kind::Text],
        )
        .await?;
    let mut row = rows.into_iter().next().unwrap_or_default().into_iter();
    let matches = row.next().and_then(|cell| cell.as_int()).unwrap_or(0);
    Ok(row.next().and_then(Cell::into_text).filter(|_| matches < cap))
}

/// The search index PostgreSQL can have: trigrams from `pg_trgm`, installed
/// if it is not yet (it is a trusted extension: a database owner may). When
/// it cannot be, searches read the rows, and the log says why.
async fn trigrams(pool: &AnyPool) -> Result<SearchIndex, ProjectionError> {
    let installed_in = || async {
        let schema: Option<(String,)> = sqlx::query_as(
            "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'pg_trgm'",
        )
        .fetch_optional(pool)
        .await?;
        Ok::<_, sqlx::Error>(schema.map(|(schema,)| schema))
    };
    if let Some(schema) = installed_in().await? {
        return Ok(SearchIndex::Trigrams { schema });
    }
    // In `public`, which outlives any one crm schema in the database; else
    // in this one.
    let mut created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        .execute(pool)
        .await;
    if created.is_err() {
        created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .execute(pool)
            .await;
    }
    // Another server may have created it at the same moment.
    match (installed_in().await?, created) {
        (Some(schema), _) => Ok(SearchIndex::Trigrams { schema }),
        (None, Err(error)) => {
            tracing::warn!(%error, "pg_trgm is not available: record searches will read every row");
            Ok(SearchIndex::None)
        }
        (None, Ok(_)) => Ok(SearchIndex::None),
    }
}

/// `FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds
/// the whole database.
fn lock_clause(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    }
}

/// Runs statements one by one (each may be prepared on its own).
async fn execute_all(conn: &mut dyn Exec, statements: Vec<String>) -> Result<(), ProjectionError> {
    for statement in &statements {
        conn.run(statement, Vec::new()).await?;
    }
    Ok(())
}

async fn write_state(conn: &mut dyn Exec, state: State) -> Result<(), ProjectionError> {
    let sql = "INSERT INTO rm_state (name, model_version, generation, position) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET model_version = excluded.model_version, \
         generation = excluded.generation, position = excluded.position";
    let binds = vec![
        Cell::Text(Some(STATE_NAME.to_owned())),
        Cell::Int(i64::from(state.model_version)),
        Cell::Int(to_i64(state.generation)),
        Cell::Int(to_i64(state.position)),
    ];
    conn.run(sql, binds).await?;
    Ok(())
}

/// The state row; `lock` is appended to the query (` FOR UPDATE` holds
/// the row on PostgreSQL until the transaction ends).
async fn read_state(conn: &mut dyn Exec, lock: &str) -> Result<Option<State>, ProjectionError> {
    let sql = format!("SELECT model_version, generation, position FROM rm_state WHERE name = $1{lock}");
    let binds = vec![Cell::Text(Some(STATE_NAME.to_owned()))];
    let rows = conn.fetch(&sql, binds, &[Kind::Int, Kind::Int, Kind::Int]).await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let number = |i: usize| -> Result<u64, ProjectionError> {
        let value = row[i].as_int().unwrap_or(-1);
        u64::try_from(value).map_err(|_| ProjectionError::ReadModel(format!("rm_state holds {value}")))
    };
    Ok(Some(State {
        model_version: u32::try_from(number(0)?).unwrap_or(u32::MAX),
        generation: number(1)?,
        position: number(2)?,
    }))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).expect("positions and generations stay below 2^63")
}

fn parse_id(raw: Option<String>) -> Result<Uuid, ProjectionError> {
    let raw = raw.unwrap_or_default();
    Uuid::parse_str(&raw).map_err(|e| ProjectionError::ReadModel(format!("a row's id {raw:?}: {e}")))
}

/// A row of (id, view), decoded.
fn view_of<T: DeserializeOwned>(row: Vec<Cell>, table: &str) -> Result<(Uuid, T), ProjectionError> {
    let (id, _raw, view) = raw_view_of(row, table)?;
    Ok((id, view))
}

/// A row of (id, view), decoded, with the view's JSON text.
fn raw_view_of<T: DeserializeOwned>(row: Vec<Cell>, table: &str) -> Result<(Uuid, String, T), ProjectionError> {
    let mut cells = row.into_iter();
    let id = parse_id(cells.next().and_then(Cell::into_text))?;
    let raw = cells.next().and_then(Cell::into_text).unwrap_or_default();
    let view = serde_json::from_str(&raw)
        .map_err(|e| ProjectionError::ReadModel(format!("the {table} row {id} does not decode: {e}")))?;
    Ok((id, raw, view))
}

/// `%`, `_` and `\` match themselves in a `LIKE ... ESCAPE '\'` pattern.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The JSON each loaded row held, to write back only what a batch changed.
#[derive(Debug, Default)]
struct Loaded {
    views: BTreeMap<(&'static str, Uuid), String>,
}

/// Loads the rows `keys` names into `model`, remembering their JSON in
/// `loaded`: one statement for all kinds (a `UNION ALL` over the tables),
/// so a small batch costs one round trip.
async fn load_into(
    conn: &mut dyn Exec,
    prefix: &str,
    keys: &Keys,
    model: &mut CrmModel,
    loaded: &mut Loaded,
    claim: Option<Claim>,
) -> Result<bool, ProjectionError> {
    let wanted: Vec<(&Table, &Uuid)> = [
        (&USERS, &keys.users),
        (&CONTACTS, &keys.contacts),
        (&ACCOUNTS, &keys.accounts),
        (&DEALS, &keys.deals),
        (&INTERACTIONS, &keys.interactions),
    ]
    .into_iter()
    .flat_map(|(table, ids)| ids.iter().map(move |id| (table, id)))
    .collect();
    // PostgreSQL runs the claim as a CTE of the first load (one round
    // trip); SQLite, which has no writable CTEs, runs it first.
    let mut claimed = claim.is_none();
    let mut claim_cte = None;
    if let Some(claim) = claim {
        let (sql, binds) = claim.sql();
        if conn.dialect() == Dialect::Postgres && !wanted.is_empty() {
            claim_cte = Some((sql, binds));
        } else {
            claimed = !conn
                .fetch(sql, binds, &[Kind::Text, Kind::Text, Kind::Text])
                .await?
                .is_empty();
            if !claimed {
                return Ok(false);
            }
        }
    }
    for chunk in wanted.chunks(ROWS_PER_STATEMENT_MAX) {
        let mut selects = Vec::new();
        let mut binds = Vec::with_capacity(chunk.len());
        let mut with = String::new();
        if let Some((sql, claim_binds)) = claim_cte.take() {
            with = format!("WITH claimed AS ({sql}) ");
            selects.push("SELECT * FROM claimed".to_owned());
            binds.extend(claim_binds);
        }
        for run in chunk.chunk_by(|a, b| a.0.name == b.0.name) {
            let first = binds.len() + 1;
            let placeholders = conn.dialect().parameters(first, run.len());
            binds.extend(run.iter().map(|(_, id)| text(id)));
            let name = run[0].0.name;
            selects.push(format!(
                "SELECT '{name}', id, view FROM {prefix}{name} WHERE id IN ({placeholders})"
            ));
        }
        let sql = format!("{with}{}", selects.join(" UNION ALL "));
        for mut row in conn.fetch(&sql, binds, &[Kind::Text, Kind::Text, Kind::Text]).await? {
            let table = row.remove(0).into_text().unwrap_or_default();
            if table == "claimed" {
                claimed = true;
                continue;
            }
            add_row(model, loaded, &table, row)?;
        }
    }
    // Every interaction of a contact being erased: those not held already
    // (a row held is as new as any, or newer than the table's).
    let contacts: Vec<&Uuid> = keys.interactions_of.iter().collect();
    for chunk in contacts.chunks(ROWS_PER_STATEMENT_MAX) {
        let placeholders = conn.dialect().parameters(1, chunk.len());
        let sql = format!("SELECT id, view FROM {prefix}interactions WHERE contact_id IN ({placeholders})");
        let binds = chunk.iter().map(|id| text(id)).collect();
        for row in conn.fetch(&sql, binds, &[Kind::Text, Kind::Text]).await? {
            let held = matches!(row.first(), Some(Cell::Text(Some(id))) if Uuid::parse_str(id).is_ok_and(|id| model.interactions.contains_key(&id)));
            if !held {
                add_row(model, loaded, "interactions", row)?;
            }
        }
    }
    Ok(claimed)
}

/// Puts one loaded (id, view) row of `table` into the partial model.
fn add_row(model: &mut CrmModel, loaded: &mut Loaded, table: &str, row: Vec<Cell>) -> Result<(), ProjectionError> {
    match table {
        "users" => put(&mut model.users, loaded, &USERS, row),
        "contacts" => put(&mut model.contacts, loaded, &CONTACTS, row),
        "accounts" => put(&mut model.accounts, loaded, &ACCOUNTS, row),
        "deals" => put(&mut model.deals, loaded, &DEALS, row),
        _ => put(&mut model.interactions, loaded, &INTERACTIONS, row),
    }
}

fn put<T: DeserializeOwned>(
    views: &mut BTreeMap<Uuid, T>,
    loaded: &mut Loaded,
    table: &Table,
    row: Vec<Cell>,
) -> Result<(), ProjectionError> {
    let (id, raw, view) = raw_view_of(row, table.name)?;
    views.insert(id, view);
    loaded.views.insert((table.name, id), raw);
    Ok(())
}

/// What writing a batch's rows keeps up besides the rows.
#[derive(Debug, Clone, Copy)]
struct Upkeep {
    /// Whether `loaded` then holds the JSON written.
    remember: bool,
    /// Whether the duplicate groups of the values written (and of those
    /// they replace) are kept current: in indexed tables. Tables filled
    /// before their indexes get their groups whole with the indexes.
    groups: bool,
    /// Whether a row missing from `loaded` is missing from the tables too
    /// (live folds load every row a batch names but those it creates), so
    /// that its old values need not be looked up. Not so in a rebuild,
    /// which forgets the rows it wrote.
    absent_unless_loaded: bool,
}

impl Upkeep {
    /// Whether writes to `table` keep something derived from its rows
    /// current: its duplicate groups, its counts.
    fn derives(self, table: &Table) -> bool {
        self.groups && (table.counted || DUPLICATE_COLUMNS.iter().any(|(t, _)| t.name == table.name))
    }

    const NONE: Self = Self {
        remember: false,
        groups: false,
        absent_unless_loaded: false,
    };
    const GROUPS: Self = Self {
        remember: false,
        groups: true,
        absent_unless_loaded: true,
    };
}

/// Writes every row of `touched` whose JSON in `model` differs from what
/// was loaded (the rows a batch could change: `add_keys` names them all).
async fn write_changed(
    conn: &mut dyn Exec,
    prefix: &str,
    model: &CrmModel,
    touched: &Keys,
    loaded: &mut Loaded,
    upkeep: Upkeep,
) -> Result<(), ProjectionError> {
    let mut changes = Changes {
        conn,
        prefix,
        loaded,
        upkeep,
    };
    changes.write(&USERS, &touched.users, &model.users, user_row).await?;
    changes
        .write(&CONTACTS, &touched.contacts, &model.contacts, contact_row)
        .await?;
    let accounts = changes
        .write(&ACCOUNTS, &touched.accounts, &model.accounts, account_row)
        .await?;
    // Coverage only grows (interactions are never undone): the rows of the
    // accounts written are upserted (for an edit of the account's fields,
    // rewritten unchanged: a few rows), none is ever deleted.
    let coverage = accounts
        .iter()
        .filter_map(|id| model.accounts.get(id))
        .flat_map(coverage_rows)
        .collect();
    upsert(&mut *changes.conn, prefix, &COVERAGE, coverage).await?;
    changes.write(&DEALS, &touched.deals, &model.deals, deal_row).await?;
    changes
        .write(
            &INTERACTIONS,
            &touched.interactions,
            &model.interactions,
            interaction_row,
        )
        .await?;
    Ok(())
}

/// Writes the rows a batch changed, table by table, a statement at a time
/// (so a rebuild's flush never holds every row it writes at once).
struct Changes<'a> {
    conn: &'a mut dyn Exec,
    prefix: &'a str,
    loaded: &'a mut Loaded,
    upkeep: Upkeep,
}

impl Changes<'_> {
    /// Writes the rows of `table` among `ids` whose JSON differs from what
    /// was loaded, each made by `row` from its view and that JSON; returns
    /// the ids written.
    async fn write<T: serde::Serialize + DeserializeOwned>(
        &mut self,
        table: &Table,
        ids: &BTreeSet<Uuid>,
        views: &BTreeMap<Uuid, T>,
        row: impl Fn(&T, String) -> Vec<Cell>,
    ) -> Result<Vec<Uuid>, ProjectionError> {
        let derived = self.upkeep.derives(table);
        let mut rows = Vec::new();
        // What the rows written replace, whose duplicate keys and counts go:
        // the rows loaded (made again from their JSON, without it), and
        // the ids of those the tables may hold that were not loaded.
        let mut replaced = Vec::new();
        let mut stored = Vec::new();
        let mut written = Vec::new();
        for (id, view) in ids.iter().filter_map(|id| views.get(id).map(|view| (id, view))) {
            let json = to_json(view);
            let key = (table.name, *id);
            let loaded = self.loaded.views.get(&key);
            if loaded == Some(&json) {
                continue;
            }
            if derived {
                match loaded {
                    Some(old) => {
                        let old: T = serde_json::from_str(old).map_err(|e| {
                            ProjectionError::ReadModel(format!("the {} row {id} does not decode: {e}", table.name))
                        })?;
                        replaced.push(row(&old, String::new()));
                    }
                    None if !self.upkeep.absent_unless_loaded => stored.push(Cell::Text(Some(id.to_string()))),
                    None => {}
                }
            }
            if self.upkeep.remember {
                self.loaded.views.insert(key, json.clone());
            }
            rows.push(row(view, json));
            written.push(*id);
            if rows.len() == rows_per_statement(table) {
                let batch = Replacing {
                    rows: std::mem::take(&mut rows),
                    replaced: std::mem::take(&mut replaced),
                    stored: std::mem::take(&mut stored),
                };
                self.upsert(table, batch).await?;
            }
        }
        self.upsert(table, Replacing { rows, replaced, stored }).await?;
        Ok(written)
    }

    /// `upsert`, keeping what is derived from the rows current when
    /// `upkeep` says so: the duplicate groups of the values the rows had
    /// and now have, and the counts.
    async fn upsert(&mut self, table: &Table, batch: Replacing) -> Result<(), ProjectionError> {
        let Replacing { rows, replaced, stored } = batch;
        let groups = self.upkeep.groups;
        let dup_columns: Vec<&str> = DUPLICATE_COLUMNS
            .iter()
            .filter(|(t, _)| groups && t.name == table.name)
            .map(|(_, column)| *column)
            .collect();
        let counted = groups && table.counted;
        let summed = groups && table.name == DEALS.name;
        if !self.upkeep.derives(table) || rows.is_empty() {
            return upsert(&mut *self.conn, self.prefix, table, rows).await;
        }
        let dialect = self.conn.dialect();
        // The derived-from columns: the duplicate keys, the counted ones,
        // then the summed ones.
        let mut needed: Vec<(&str, Kind)> = dup_columns.iter().map(|c| (*c, Kind::Text)).collect();
        let counted_at = needed.len();
        if counted {
            needed.extend(COUNTED_COLUMNS);
        }
        let summed_at = needed.len();
        if summed {
            needed.extend(SUMMED_COLUMNS);
        }
        let positions = needed
            .iter()
            .map(|(name, _)| table.columns.iter().position(|c| c.name == *name))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| ProjectionError::Internal(format!("{} lacks a derived-from column", table.name)))?;
        let pick = |row: &Vec<Cell>| -> Vec<Cell> {
            positions
                .iter()
                .map(|at| row.get(*at).cloned().unwrap_or(Cell::Text(None)))
                .collect()
        };
        let mut old: Vec<Vec<Cell>> = replaced.iter().map(pick).collect();
        if !stored.is_empty() {
            let names: Vec<&str> = needed.iter().map(|(name, _)| *name).collect();
            let kinds: Vec<Kind> = needed.iter().map(|(_, kind)| *kind).collect();
            let before = format!(
                "SELECT {} FROM {}{} WHERE id IN ({})",
                names.join(", "),
                self.prefix,
                table.name,
                dialect.parameters(1, stored.len())
            );
            old.extend(self.conn.fetch(&before, stored, &kinds).await?);
        }
        let new: Vec<Vec<Cell>> = rows.iter().map(pick).collect();
        upsert(&mut *self.conn, self.prefix, table, rows).await?;
        // The values each duplicate column had in these rows, and has now.
        let mut values: Vec<BTreeSet<String>> = vec![BTreeSet::new(); dup_columns.len()];
        for cells in old.iter().chain(&new) {
            for (cell, values) in cells.iter().zip(values.iter_mut()) {
                if let Cell::Text(Some(value)) = cell {
                    values.insert(value.clone());
                }
            }
        }
        let mut deltas = Deltas::default();
        let mut sums = SumDeltas::default();
        for (cells, sign) in old.iter().map(|c| (c, -1)).chain(new.iter().map(|c| (c, 1))) {
            if let Some(cells) = cells.get(counted_at..summed_at).filter(|_| counted) {
                deltas.add(table, cells, sign);
            }
            if let Some(cells) = cells.get(summed_at..).filter(|_| summed) {
                sums.add(cells, sign);
            }
        }
        // On PostgreSQL every statement is a round trip: there the groups
        // of every column and the counts are brought up to date by one
        // statement.
        let combine = dialect == Dialect::Postgres;
        let mut statements = Vec::new();
        let mut binds = Vec::new();
        for (column, values) in dup_columns.into_iter().zip(values) {
            let values: Vec<String> = values.into_iter().collect();
            for chunk in values.chunks(ROWS_PER_STATEMENT_MAX) {
                let first = if combine { binds.len() + 1 } else { 1 };
                let [forget, add] = duplicate_groups_of_sql(dialect, self.prefix, table, column, first, chunk.len());
                let chunk_binds = chunk.iter().map(|v| Cell::Text(Some(v.clone())));
                if combine {
                    statements.extend([forget, add]);
                    binds.extend(chunk_binds);
                } else {
                    self.conn.run(&forget, chunk_binds.clone().collect()).await?;
                    self.conn.run(&add, chunk_binds.collect()).await?;
                }
            }
        }
        let first = if combine { binds.len() + 1 } else { 1 };
        let counts = deltas.statements(dialect, self.prefix, first);
        let first = if combine {
            first + counts.iter().map(|(_, b)| b.len()).sum::<usize>()
        } else {
            1
        };
        let sums = sums.statements(dialect, self.prefix, first);
        for (statement, statement_binds) in counts.into_iter().chain(sums) {
            if combine {
                statements.push(statement);
                binds.extend(statement_binds);
            } else {
                self.conn.run(&statement, statement_binds).await?;
            }
        }
        if !statements.is_empty() {
            self.conn.run(&combined_sql(&statements), binds).await?;
        }
        Ok(())
    }
}

/// Rows one upsert writes, and what they replace: the rows loaded (made
/// again from their JSON) and the ids of rows the tables may hold that
/// were not loaded.
struct Replacing {
    rows: Vec<Vec<Cell>>,
    replaced: Vec<Vec<Cell>>,
    stored: Vec<Cell>,
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("views serialise: every map key is a string")
}

/// Rows of `table` one multi-row insert writes.
fn rows_per_statement(table: &Table) -> usize {
    (ROWS_PER_STATEMENT_MAX * 4 / table.columns.len()).max(1)
}

/// Inserts or replaces rows, many to a statement.
async fn upsert(conn: &mut dyn Exec, prefix: &str, table: &Table, rows: Vec<Vec<Cell>>) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let columns: Vec<&str> = table.column_names().collect();
    let width = columns.len();
    let updates: Vec<String> = columns[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    let per_statement = rows_per_statement(table);
    // Rows are moved into the statement's parameters, not copied: a view is
    // a kilobyte of JSON.
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Cell>> = rows.by_ref().take(per_statement).collect();
        let mut sql = format!("INSERT INTO {prefix}{} ({}) VALUES ", table.name, columns.join(", "));
        for n in 0..chunk.len() {
            let placeholders = conn.dialect().parameters(n * width + 1, width);
            if n > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("({placeholders})"));
        }
        sql.push_str(&format!(" ON CONFLICT (id) DO UPDATE SET {}", updates.join(", ")));
        conn.run(&sql, chunk.into_iter().flatten().collect()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_in_a_search_match_only_themselves() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(escape_like("ada"), "ada");
    }
}
