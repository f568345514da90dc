//! The shape of the read-model tables: their columns and indexes, and the
//! statements that create and drop them. One definition for both databases:
//! the types (`TEXT`, `BIGINT`) and the partial indexes are read alike by
//! SQLite and PostgreSQL.
//!
//! Times are microseconds since 1970 (`BIGINT`), so that every comparison a
//! report makes is an integer comparison an index can answer.

/// The tables that serve reads.
pub(crate) const LIVE: &str = "rm_";
/// The tables a rebuild fills before they are swapped in.
pub(crate) const NEXT: &str = "rm_next_";

/// `last_interaction_at` of an account nobody ever interacted with: sorts
/// before every real time, so "never" comes first among the neglected.
pub(crate) const NEVER: i64 = i64::MIN;

/// A column's SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// The record's id: the primary key.
    Key,
    Text,
    TextNotNull,
    Int,
    IntNotNull,
}

#[derive(Debug)]
pub(crate) struct Column {
    pub name: &'static str,
    pub sql_type: ColumnType,
}

/// A secondary index: its columns and, for a partial index, the rows it holds.
#[derive(Debug)]
pub(crate) struct Index {
    pub name: &'static str,
    pub columns: &'static str,
    pub filter: Option<&'static str>,
}

/// A table of one record kind: its name without prefix and its columns,
/// `id` first and `view` last.
#[derive(Debug)]
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub indexes: &'static [Index],
    /// Whether lists search its `search` column (through `SearchIndex`).
    pub searched: bool,
    /// Whether its rows are counted in `COUNTS` (the record tables).
    pub counted: bool,
}

impl Table {
    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }
}

const fn column(name: &'static str, sql_type: ColumnType) -> Column {
    Column { name, sql_type }
}

const fn index(name: &'static str, columns: &'static str, filter: Option<&'static str>) -> Index {
    Index { name, columns, filter }
}

/// Contacts, accounts and deals share one set of columns (those a kind has
/// no use for stay NULL), so that a report reads all three alike.
const RECORD_COLUMNS: &[Column] = &[
    column("id", ColumnType::Key),
    column("archived", ColumnType::IntNotNull),
    column("owner_id", ColumnType::Text),
    column("account_id", ColumnType::Text),
    column("stage", ColumnType::Text),
    column("external_id", ColumnType::Text),
    column("search", ColumnType::TextNotNull),
    // 1 for a record the quality reports cover: not archived, and for a
    // deal open, for a contact not churned.
    column("subject", ColumnType::IntNotNull),
    column("created_at", ColumnType::IntNotNull),
    // The last touch: what stale reports measure from.
    column("touched_at", ColumnType::IntNotNull),
    // 1 while nothing happened since creation (no change, no interaction).
    column("fresh", ColumnType::IntNotNull),
    // The completeness checks failed, one bit each (`rows::CHECKS`), and
    // the share passed, in percent.
    column("missing", ColumnType::IntNotNull),
    column("completeness", ColumnType::IntNotNull),
    column("status", ColumnType::Text),
    column("lifecycle", ColumnType::Text),
    column("stage_entered_at", ColumnType::Int),
    // Deals: what rotting measures from (the stage entered, or a later
    // call, email or meeting about the deal).
    column("active_at", ColumnType::Int),
    // Deals: when it closed (won or lost), and when its expected close
    // last moved later (a period's won, lost and slipped deals).
    column("closed_at", ColumnType::Int),
    column("slipped_at", ColumnType::Int),
    column("last_interaction_at", ColumnType::Int),
    column("amount", ColumnType::Int),
    column("currency", ColumnType::Text),
    // Normalised values two records must not share (NULL when archived).
    column("dup_email", ColumnType::Text),
    column("dup_phone", ColumnType::Text),
    column("dup_name", ColumnType::Text),
    column("dup_domain", ColumnType::Text),
    // Accounts: 1 while it has an open deal or a customer contact (what
    // makes its silence neglect), else 0.
    column("staked", ColumnType::Int),
    column("view", ColumnType::TextNotNull),
];

/// What every record table is searched by: lists, and the clock-based
/// report lists (stale, never updated, incomplete, per owner). Each report
/// index ends with the columns its queries test (the subject flag, the
/// owner), so that SQLite answers a page or a count from the index alone
/// instead of reading a row, with its view, per entry.
macro_rules! record_indexes {
    ($($extra:expr),* $(,)?) => {
        &[
            // Lists by owner, and every report narrowed to owners.
            index(
                "owner_id",
                "owner_id, subject, touched_at, fresh, created_at, missing, completeness, archived, id",
                None,
            ),
            // No index on external_id: nothing here looks rows up by it
            // (imports find a record through its claim in the log's
            // `claims` table), and each index costs pages on every create.
            // Lists by account, and the stakes of neglected accounts.
            index("account_id", "account_id, subject, lifecycle", None),
            // Stale pages and counts, and the per-owner figures. It starts
            // with the time, not the subject flag: an index led by a flag
            // almost every row has would look selective to SQLite's planner
            // (which keeps no statistics here) and win over the partial
            // indexes below.
            index("touched", "touched_at, id, subject, owner_id, fresh, created_at", None),
            index("fresh", "created_at, id, subject, fresh, owner_id", Some("subject = 1 AND fresh = 1")),
            index(
                "incomplete",
                "completeness, id, subject, missing, owner_id",
                Some("subject = 1 AND missing <> 0"),
            ),
            // The same two lists narrowed to owners: one range per owner,
            // read in the list's order (`Owners::Apart`), so a page costs
            // its entries however much the owners hold. Their keys grow at
            // the end of each owner's range (a new record's creation time,
            // its v7 id), so a batch of creates adds to a few pages.
            index("owner_fresh", "owner_id, created_at, id", Some("subject = 1 AND fresh = 1")),
            index(
                "owner_incomplete",
                "owner_id, completeness, id, missing",
                Some("subject = 1 AND missing <> 0"),
            ),
            $($extra),*
        ]
    };
}

pub(crate) const USERS: Table = Table {
    name: "users",
    columns: &[column("id", ColumnType::Key), column("view", ColumnType::TextNotNull)],
    indexes: &[],
    searched: false,
    counted: false,
};
pub(crate) const CONTACTS: Table = Table {
    name: "contacts",
    columns: RECORD_COLUMNS,
    indexes: record_indexes![
        index("dup_email", "dup_email, id, owner_id", Some("dup_email IS NOT NULL")),
        index("dup_phone", "dup_phone, id, owner_id", Some("dup_phone IS NOT NULL")),
        index("dup_name", "dup_name, id, owner_id", Some("dup_name IS NOT NULL")),
    ],
    searched: true,
    counted: true,
};
pub(crate) const ACCOUNTS: Table = Table {
    name: "accounts",
    columns: RECORD_COLUMNS,
    indexes: record_indexes![
        index("dup_domain", "dup_domain, id, owner_id", Some("dup_domain IS NOT NULL")),
        // Neglected accounts: those at stake, by their silence.
        index(
            "silence",
            "last_interaction_at, id, archived, staked, owner_id",
            Some("archived = 0 AND staked = 1")
        ),
    ],
    searched: true,
    counted: true,
};
pub(crate) const DEALS: Table = Table {
    name: "deals",
    columns: RECORD_COLUMNS,
    indexes: record_indexes![
        index(
            "rotting",
            "active_at, id, subject, stage, owner_id",
            Some("subject = 1")
        ),
        index("owner_rotting", "owner_id, active_at, id, stage", Some("subject = 1")),
        // No index for the pipeline's sums: they are kept in `SUMS`, and
        // an account's few deals are found through `account_id`.
        // A period's figures: deals closed, slipped or created since a
        // date, a range of each (the scope's owner from the index too).
        index(
            "closed",
            "closed_at, archived, status, currency, amount, owner_id",
            Some("closed_at IS NOT NULL")
        ),
        index(
            "slipped",
            "slipped_at, archived, owner_id",
            Some("slipped_at IS NOT NULL")
        ),
        index("created", "created_at, archived, owner_id", None),
    ],
    searched: true,
    counted: true,
};
pub(crate) const INTERACTIONS: Table = Table {
    name: "interactions",
    columns: &[
        column("id", ColumnType::Key),
        column("contact_id", ColumnType::Text),
        column("deal_id", ColumnType::Text),
        column("account_id", ColumnType::Text),
        column("view", ColumnType::TextNotNull),
    ],
    indexes: &[
        index("contact_id", "contact_id", None),
        index("deal_id", "deal_id", None),
        index("account_id", "account_id", None),
    ],
    searched: false,
    counted: false,
};
/// The values two or more live records share: one row per duplicate group
/// (`rule` is the column holding the value, `id` is `rule:value`). Kept
/// current with the rows (`DUPLICATE_COLUMNS`), so that the report counts
/// and pages groups without grouping every record's value.
pub(crate) const DUPLICATES: Table = Table {
    name: "duplicates",
    columns: &[
        column("id", ColumnType::Key),
        column("rule", ColumnType::TextNotNull),
        column("value", ColumnType::TextNotNull),
    ],
    indexes: &[index("rule", "rule, value", None)],
    searched: false,
    counted: false,
};
/// Which departments had contact with each account: one row per account
/// and department (`id` is `account_id:department`), with the count of
/// calls, emails and meetings and the latest one's time. Written with the
/// account's row; what "not touched by a department" reads.
pub(crate) const COVERAGE: Table = Table {
    name: "coverage",
    columns: &[
        column("id", ColumnType::Key),
        column("account_id", ColumnType::TextNotNull),
        column("department", ColumnType::TextNotNull),
        column("interactions", ColumnType::IntNotNull),
        column("last_at", ColumnType::IntNotNull),
    ],
    indexes: &[],
    searched: false,
    counted: false,
};
/// How many record rows each count-based part of the quality reports
/// holds, per table, owner (`''` for none) and bucket (`counts.rs`): `what`
/// is `touched`, `fresh`, `missing` or `active` (open deals, kept apart by
/// `stage`, which is `''` for the others); `grain` a time bucket's length
/// in days (1 or `BLOCK_DAYS`; 0 for `missing`, bucketed by its bits); `at`
/// the bucket's number since 1970, or the bits; `n` the rows. `id` joins
/// them all. Kept current with the rows, so that summaries and the owners
/// report add up counts instead of counting rows.
pub(crate) const COUNTS: Table = Table {
    name: "counts",
    columns: &[
        column("id", ColumnType::Key),
        column("tbl", ColumnType::TextNotNull),
        column("what", ColumnType::TextNotNull),
        column("grain", ColumnType::IntNotNull),
        column("at", ColumnType::IntNotNull),
        column("owner_id", ColumnType::TextNotNull),
        column("stage", ColumnType::TextNotNull),
        column("n", ColumnType::IntNotNull),
    ],
    // Without `n`: on PostgreSQL an update that changes no indexed column
    // is a heap-only one, which does not leave a dead index entry behind
    // for every later read of a hot bucket (today's) to step over.
    indexes: &[index("buckets", "tbl, what, stage, grain, at, owner_id", None)],
    searched: false,
    counted: false,
};
/// What the pipeline adds up, per status, owner (`''` for none), currency
/// (`''` for none) and stage (`sums.rs`): the deals not archived (`n`),
/// their amount in two parts (`amount_high * 10^9 + amount_low`, each of
/// which fits 64 bits summed over any number of deals) and the sum of the
/// seconds at which they entered their stage. `id` joins the four. Kept
/// current with the deal rows, so that the pipeline adds up a few rows per
/// owner instead of reading every open and closed deal.
pub(crate) const SUMS: Table = Table {
    name: "sums",
    columns: &[
        column("id", ColumnType::Key),
        column("status", ColumnType::TextNotNull),
        column("owner_id", ColumnType::TextNotNull),
        column("currency", ColumnType::TextNotNull),
        column("stage", ColumnType::TextNotNull),
        column("n", ColumnType::IntNotNull),
        column("amount_high", ColumnType::IntNotNull),
        column("amount_low", ColumnType::IntNotNull),
        column("entered_seconds", ColumnType::IntNotNull),
    ],
    // Without the sums, as `COUNTS` (heap-only updates on PostgreSQL).
    indexes: &[index("keys", "status, owner_id, stage, currency", None)],
    searched: false,
    counted: false,
};
pub(crate) const TABLES: [&Table; 9] = [
    &USERS,
    &CONTACTS,
    &ACCOUNTS,
    &DEALS,
    &INTERACTIONS,
    &DUPLICATES,
    &COVERAGE,
    &COUNTS,
    &SUMS,
];

/// The key of an account's coverage row for a department.
pub(crate) fn coverage_key(account_id: &str, department: &str) -> String {
    format!("{account_id}:{department}")
}

/// The columns whose shared values make duplicate groups, and their tables.
pub(crate) const DUPLICATE_COLUMNS: [(&Table, &str); 4] = [
    (&ACCOUNTS, "dup_domain"),
    (&CONTACTS, "dup_email"),
    (&CONTACTS, "dup_name"),
    (&CONTACTS, "dup_phone"),
];

/// Inserts into `{prefix}duplicates` the groups among the rows of `table`
/// that meet `filter` (SQL after `WHERE`) of the values in `column`, one of
/// `DUPLICATE_COLUMNS`.
pub(crate) fn duplicate_groups_sql(prefix: &str, table: &Table, column: &str, filter: &str) -> String {
    format!(
        "INSERT INTO {prefix}duplicates (id, rule, value) SELECT '{column}:' || {column}, '{column}', {column} \
         FROM {prefix}{} WHERE {filter} GROUP BY {column} HAVING COUNT(*) > 1",
        table.name
    )
}

/// Two statements that bring the groups of `count` values (parameters
/// `first` to `first + count - 1`) in `column` of `table` up to date: the
/// first forgets those that fewer than two rows now share, the second adds
/// those that two or more do. Each value is looked for in the column's
/// index, and two rows are enough (`LIMIT 1 OFFSET 1`): a write costs the
/// same whether the group it joins has two members or a million (a
/// switchboard's phone number, a common name). A group that stays is not
/// written at all: on PostgreSQL, deleting and inserting its row again on
/// every write left a dead version per write for each later lookup of that
/// key to step over. Neither statement starts with `WITH`, so PostgreSQL
/// can run several as the parts of one (`combined_sql`).
pub(crate) fn duplicate_groups_of_sql(
    dialect: Dialect,
    prefix: &str,
    table: &Table,
    column: &str,
    first: usize,
    count: usize,
) -> [String; 2] {
    let second_holder = |value: &str| {
        format!(
            "EXISTS (SELECT 1 FROM {prefix}{} o WHERE o.{column} = {value} AND o.{column} IS NOT NULL LIMIT 1 OFFSET 1)",
            table.name
        )
    };
    let parameters = |shape: &dyn Fn(String) -> String| {
        (first..first + count)
            .map(|n| shape(format!("CAST({} AS TEXT)", dialect.parameters(n, 1))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys = parameters(&|value| format!("'{column}:' || {value}"));
    // VALUES names its column `column1` on both databases.
    let values = parameters(&|value| format!("({value})"));
    [
        format!(
            "DELETE FROM {prefix}duplicates WHERE id IN ({keys}) AND NOT {}",
            second_holder(&format!("{prefix}duplicates.value"))
        ),
        format!(
            "INSERT INTO {prefix}duplicates (id, rule, value) \
             SELECT '{column}:' || v.column1, '{column}', v.column1 FROM (VALUES {values}) AS v \
             WHERE {} ON CONFLICT (id) DO NOTHING",
            second_holder("v.column1")
        ),
    ]
}

/// PostgreSQL: data-changing statements run as one (each a part of a
/// `WITH`), so that they cost one round trip instead of one each. They see
/// the same snapshot, so no two may change the same row.
pub(crate) fn combined_sql(statements: &[String]) -> String {
    let parts: Vec<String> = statements
        .iter()
        .enumerate()
        .map(|(n, statement)| format!("s{n} AS ({statement})"))
        .collect();
    format!("WITH {} SELECT 1", parts.join(", "))
}

use crate::sql::Dialect;

/// How lists find records by a piece of their name, email, phone, title or
/// domain (`q`) without reading every row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchIndex {
    /// SQLite: an FTS5 table of trigrams beside each searched table
    /// (`{table}_search`, the row's rowid and its `search` text), kept
    /// current by triggers. A quoted phrase matches exactly the rows whose
    /// text holds it as a substring, for needles of three characters or more.
    Fts5,
    /// PostgreSQL: a GIN index of trigrams (`pg_trgm`, installed in this
    /// schema), which `LIKE '%needle%'` uses.
    Trigrams { schema: String },
    /// No index (PostgreSQL without `pg_trgm`, or tables that are never
    /// searched): `LIKE` reads the rows.
    None,
}

/// The FTS5 table that indexes a SQLite table's `search` column.
pub(crate) fn search_table(prefix: &str, table: &Table) -> String {
    format!("{prefix}{}_search", table.name)
}

pub(crate) fn drop_sql(prefix: &str) -> Vec<String> {
    let tables = TABLES
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {prefix}{}", t.name));
    let searches = TABLES
        .iter()
        .filter(|t| t.searched)
        .map(|t| format!("DROP TABLE IF EXISTS {}", search_table(prefix, t)));
    tables.chain(searches).collect()
}

/// The tables, without their secondary indexes. On SQLite they are rowid
/// tables with a unique index on the id, not `WITHOUT ROWID`: a row of about
/// a kilobyte (the view's JSON) is more than a `WITHOUT ROWID` page keeps
/// inline, and each would spill to an overflow page of its own (3.6 KB per
/// contact on disk instead of 1.3 KB, and a rebuild a third slower).
pub(crate) fn create_tables_sql(prefix: &str, dialect: Dialect) -> Vec<String> {
    // Text sorts byte by byte on both, whatever the database's locale, so
    // pages (and reports as of a date, folded on SQLite) come in one order.
    let text = match dialect {
        Dialect::Sqlite => "TEXT",
        Dialect::Postgres => "TEXT COLLATE \"C\"",
    };
    TABLES
        .iter()
        .map(|table| {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|c| {
                    let sql_type = match c.sql_type {
                        ColumnType::Key => format!("{text} PRIMARY KEY"),
                        ColumnType::Text => text.to_owned(),
                        ColumnType::TextNotNull => format!("{text} NOT NULL"),
                        ColumnType::Int => "BIGINT".to_owned(),
                        ColumnType::IntNotNull => "BIGINT NOT NULL".to_owned(),
                    };
                    format!("{} {sql_type}", c.name)
                })
                .collect();
            format!("CREATE TABLE {prefix}{} ({})", table.name, columns.join(", "))
        })
        .collect()
}

/// The secondary indexes and the search index: created after a rebuild has
/// filled its tables, which is far cheaper than keeping them up to date row
/// by row. Their names (and the search triggers') carry the generation, so
/// a swapped-in table's never collide with the next rebuild's.
pub(crate) fn create_indexes_sql(prefix: &str, generation: u64, search: &SearchIndex) -> Vec<String> {
    let mut sql = Vec::new();
    for table in TABLES {
        for index in table.indexes {
            let filter = index.filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
            sql.push(format!(
                "CREATE INDEX {LIVE}{0}_{1}_g{generation} ON {prefix}{0} ({2}){filter}",
                table.name, index.name, index.columns
            ));
        }
        if table.searched {
            sql.extend(search_index_sql(prefix, table, generation, search));
        }
    }
    // The groups of the rows filled so far (none in new tables); from here
    // on every write keeps them current.
    for (table, column) in DUPLICATE_COLUMNS {
        sql.push(duplicate_groups_sql(
            prefix,
            table,
            column,
            &format!("{column} IS NOT NULL"),
        ));
    }
    // Likewise the counts of the quality reports.
    for table in TABLES.iter().filter(|t| t.counted) {
        sql.extend(crate::counts::whole_sql(prefix, table));
    }
    // And the pipeline's sums.
    sql.push(crate::sums::whole_sql(prefix));
    sql
}

fn search_index_sql(prefix: &str, table: &Table, generation: u64, search: &SearchIndex) -> Vec<String> {
    let name = table.name;
    let base = format!("{prefix}{name}");
    match search {
        SearchIndex::None => Vec::new(),
        SearchIndex::Trigrams { schema } => vec![format!(
            "CREATE INDEX {LIVE}{name}_search_g{generation} ON {base} USING gin (search \"{schema}\".gin_trgm_ops)"
        )],
        // Rows are inserted or updated, never deleted (archiving is an
        // update); their rowid never changes. Renaming the tables at a swap
        // rewrites the triggers' references with them.
        SearchIndex::Fts5 => {
            let fts = search_table(prefix, table);
            vec![
                format!("CREATE VIRTUAL TABLE {fts} USING fts5(search, tokenize = 'trigram')"),
                format!("INSERT INTO {fts} (rowid, search) SELECT rowid, search FROM {base}"),
                format!(
                    "CREATE TRIGGER {LIVE}{name}_search_insert_g{generation} AFTER INSERT ON {base} \
                     BEGIN INSERT INTO {fts} (rowid, search) VALUES (new.rowid, new.search); END"
                ),
                format!(
                    "CREATE TRIGGER {LIVE}{name}_search_update_g{generation} AFTER UPDATE OF search ON {base} \
                     WHEN old.search IS NOT new.search \
                     BEGIN UPDATE {fts} SET search = new.search WHERE rowid = new.rowid; END"
                ),
            ]
        }
    }
}
