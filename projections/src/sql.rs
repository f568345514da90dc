//! One way to run the read models' SQL on each connection they meet: the
//! pooled `Any` connections of reads, catch-up and rebuilds, and the native
//! SQLite or PostgreSQL connection of an append transaction (the commit
//! hook). Values are text or integers, which is all the tables hold.

use futures_util::future::BoxFuture;
use sqlx::Row;

use crate::ProjectionError;

/// One value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Text(Option<String>),
    Int(i64),
    /// An integer column that may be NULL.
    OptInt(Option<i64>),
}

impl Cell {
    pub fn into_text(self) -> Option<String> {
        match self {
            Self::Text(text) => text,
            Self::Int(n) => Some(n.to_string()),
            Self::OptInt(n) => n.map(|n| n.to_string()),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::OptInt(n) => *n,
            Self::Text(_) => None,
        }
    }
}

/// The type of a column read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Int,
    /// An integer that may be NULL (an empty `SUM`, a missing value).
    OptInt,
}

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database a URL names: `sqlite:...`, else PostgreSQL.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    /// `count` parameters numbered from `first`: `$1, $2, ...` on PostgreSQL,
    /// plain `?` on SQLite, which looks numbered ones up by name, one scan
    /// per parameter: a multi-row insert would pay quadratically.
    pub fn parameters(self, first: usize, count: usize) -> String {
        let one = |n: usize| match self {
            Self::Sqlite => "?".to_owned(),
            Self::Postgres => format!("${n}"),
        };
        (first..first + count).map(one).collect::<Vec<_>>().join(", ")
    }
}

/// A connection the read-model SQL runs on.
pub(crate) trait Exec: Send {
    fn dialect(&self) -> Dialect;

    /// The rows of a query, each column read as `kinds` says.
    fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        binds: Vec<Cell>,
        kinds: &'a [Kind],
    ) -> BoxFuture<'a, Result<Vec<Vec<Cell>>, ProjectionError>>;

    /// `fetch`, planned for its values every time: not kept as a prepared
    /// statement, of which PostgreSQL may use a generic plan after five
    /// runs (for a search's `LIKE $1`, a scan of every row in id order
    /// instead of the trigram index: 15 ms at 19,000 contacts against 6,
    /// and growing with the table).
    fn fetch_planned<'a>(
        &'a mut self,
        sql: &'a str,
        binds: Vec<Cell>,
        kinds: &'a [Kind],
    ) -> BoxFuture<'a, Result<Vec<Vec<Cell>>, ProjectionError>> {
        self.fetch(sql, binds, kinds)
    }

    /// Runs a statement.
    fn run<'a>(&'a mut self, sql: &'a str, binds: Vec<Cell>) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// `sql` with `binds` bound in order.
fn bound<DB>(sql: &str, binds: Vec<Cell>) -> sqlx::query::Query<'_, DB, <DB as sqlx::Database>::Arguments<'_>>
where
    DB: sqlx::Database,
    Option<String>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::query::<DB>(sql);
    for cell in binds {
        query = match cell {
            Cell::Text(text) => query.bind(text),
            Cell::Int(n) => query.bind(n),
            Cell::OptInt(n) => query.bind(n),
        };
    }
    query
}

/// Rows read back as `kinds` says.
fn cells_of<R: Row>(rows: &[R], kinds: &[Kind]) -> Result<Vec<Vec<Cell>>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|row| {
            kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| match kind {
                    Kind::Text => row.try_get::<Option<String>, _>(i).map(Cell::Text),
                    Kind::Int => row.try_get::<i64, _>(i).map(Cell::Int),
                    Kind::OptInt => row.try_get::<Option<i64>, _>(i).map(Cell::OptInt),
                })
                .collect()
        })
        .collect()
}

macro_rules! exec_on {
    ($connection:ty, $database:ty, $dialect:expr) => {
        impl Exec for $connection {
            fn dialect(&self) -> Dialect {
                let dialect: fn(&Self) -> Dialect = $dialect;
                dialect(self)
            }

            fn fetch<'a>(
                &'a mut self,
                sql: &'a str,
                binds: Vec<Cell>,
                kinds: &'a [Kind],
            ) -> BoxFuture<'a, Result<Vec<Vec<Cell>>, ProjectionError>> {
                Box::pin(async move {
                    let rows = bound::<$database>(sql, binds).fetch_all(&mut *self).await?;
                    Ok(cells_of(&rows, kinds)?)
                })
            }

            fn fetch_planned<'a>(
                &'a mut self,
                sql: &'a str,
                binds: Vec<Cell>,
                kinds: &'a [Kind],
            ) -> BoxFuture<'a, Result<Vec<Vec<Cell>>, ProjectionError>> {
                Box::pin(async move {
                    let rows = bound::<$database>(sql, binds)
                        .persistent(false)
                        .fetch_all(&mut *self)
                        .await?;
                    Ok(cells_of(&rows, kinds)?)
                })
            }

            fn run<'a>(&'a mut self, sql: &'a str, binds: Vec<Cell>) -> BoxFuture<'a, Result<(), ProjectionError>> {
                Box::pin(async move {
                    bound::<$database>(sql, binds).execute(&mut *self).await?;
                    Ok(())
                })
            }
        }
    };
}

exec_on!(sqlx::AnyConnection, sqlx::Any, |conn| match conn.backend_name() {
    "SQLite" => Dialect::Sqlite,
    _ => Dialect::Postgres,
});
exec_on!(sqlx::PgConnection, sqlx::Postgres, |_| Dialect::Postgres);

/// SQLite's append connection (the commit hook runs on its own thread):
/// each statement runs at once, so each future is ready when made.
impl Exec for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        binds: Vec<Cell>,
        kinds: &'a [Kind],
    ) -> BoxFuture<'a, Result<Vec<Vec<Cell>>, ProjectionError>> {
        let rows = native_fetch(self, sql, binds, kinds).map_err(ProjectionError::from);
        Box::pin(std::future::ready(rows))
    }

    fn run<'a>(&'a mut self, sql: &'a str, binds: Vec<Cell>) -> BoxFuture<'a, Result<(), ProjectionError>> {
        let done = self
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(binds)))
            .map(|_| ())
            .map_err(ProjectionError::from);
        Box::pin(std::future::ready(done))
    }
}

fn native_fetch(
    conn: &rusqlite::Connection,
    sql: &str,
    binds: Vec<Cell>,
    kinds: &[Kind],
) -> Result<Vec<Vec<Cell>>, rusqlite::Error> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(binds))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let cells = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| match kind {
                Kind::Text => row.get::<_, Option<String>>(i).map(Cell::Text),
                Kind::Int => row.get::<_, i64>(i).map(Cell::Int),
                Kind::OptInt => row.get::<_, Option<i64>>(i).map(Cell::OptInt),
            })
            .collect::<Result<_, _>>()?;
        out.push(cells);
    }
    Ok(out)
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Text(text) => text.to_sql(),
            Self::Int(n) => n.to_sql(),
            Self::OptInt(n) => n.to_sql(),
        }
    }
}
