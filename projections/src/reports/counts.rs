//! Counts of the quality reports' lists read from `rm_counts`
//! (`crate::counts`): a sum of a few thousand per-owner buckets and at most
//! one day of index entries, instead of a count of every record a list
//! holds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use uuid::Uuid;

use super::Context;
use super::query::{Sql, table_name};
use crate::ProjectionError;
use crate::counts::{BLOCK_DAYS, DAY_MICROS, Grain, Measure};
use crate::schema::{COUNTS, DEALS, LIVE, Table};
use crate::sql::{Cell, Exec, Kind};

/// Which of the counted rows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part {
    /// Every subject.
    Subjects,
    /// Those a time measure dates before a cutoff (table microseconds).
    Before(Measure, i64),
    /// Those failing a completeness check: any, or this one (its bit).
    Failing(Option<i64>),
}

/// Whether the counts answer for `context`: they know each record's table
/// and owner, not its account, lifecycle or stage; and they count times
/// before 1970 as one bucket.
pub(crate) fn answer(context: &Context, part: Part) -> bool {
    let cutoff_counted = match part {
        Part::Before(_, cutoff) => cutoff >= 0,
        _ => true,
    };
    context.account_id.is_none() && context.lifecycle.is_none() && context.stage.is_none() && cutoff_counted
}

/// Per owner (`None`: nobody), the rows of `table` in `part`, among the
/// scope's owners. Only where `answer` says so.
pub(crate) async fn per_owner(
    conn: &mut dyn Exec,
    context: &Context,
    table: &Table,
    part: Part,
) -> Result<BTreeMap<Option<Uuid>, u64>, ProjectionError> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT owner_id, CAST(SUM(n) AS BIGINT) FROM (");
    part_sql(&mut sql, context, table, part, "");
    sql.push(") AS s GROUP BY owner_id");
    let mut counts = BTreeMap::new();
    for row in sql.fetch(conn, &[Kind::Text, Kind::OptInt]).await? {
        let mut row = row.into_iter();
        let owner = row.next().and_then(|cell| cell.into_text());
        let n = row.next().and_then(|cell| cell.as_int()).unwrap_or(0);
        let owner = owner.filter(|o| !o.is_empty()).and_then(|o| Uuid::parse_str(&o).ok());
        *counts.entry(owner).or_default() += u64::try_from(n).unwrap_or(0);
    }
    Ok(counts)
}

/// `total` where the counts answer for `context` (`answer`); `None`
/// where the rows must be counted.
pub(crate) async fn known_total(
    conn: &mut dyn Exec,
    context: &Context,
    tables: &[&Table],
    part: Part,
) -> Result<Option<u64>, ProjectionError> {
    if !answer(context, part) {
        return Ok(None);
    }
    total(conn, context, tables, part).await.map(Some)
}

/// The rows of `tables` in `part`, among the scope's owners: one
/// statement for all the tables. Only where `answer` says so.
async fn total(conn: &mut dyn Exec, context: &Context, tables: &[&Table], part: Part) -> Result<u64, ProjectionError> {
    if tables.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT CAST(SUM(n) AS BIGINT) FROM (");
    for (n, table) in tables.iter().enumerate() {
        if n > 0 {
            sql.push(" UNION ALL ");
        }
        part_sql(&mut sql, context, table, part, "");
    }
    sql.push(") AS s");
    sql.count(conn).await
}

/// The open deals idle since before their stage's cutoff (`stages`: each
/// stage and its cutoff, in table microseconds), among the scope's owners
/// and in its stage: one statement. `None` where the counts do not answer
/// (an account's deals, a cutoff before 1970): count the rows.
pub(crate) async fn rotting_total(
    conn: &mut dyn Exec,
    context: &Context,
    stages: &[(String, i64)],
) -> Result<Option<u64>, ProjectionError> {
    let answers = context.account_id.is_none() && stages.iter().all(|(_, cutoff)| *cutoff >= 0);
    if !answers {
        return Ok(None);
    }
    let stages: Vec<&(String, i64)> = stages
        .iter()
        .filter(|(stage, _)| context.stage.as_ref().is_none_or(|scoped| scoped == stage))
        .collect();
    if stages.is_empty() {
        return Ok(Some(0));
    }
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT CAST(SUM(n) AS BIGINT) FROM (");
    for (n, (stage, cutoff)) in stages.into_iter().enumerate() {
        if n > 0 {
            sql.push(" UNION ALL ");
        }
        part_sql(&mut sql, context, &DEALS, Part::Before(Measure::Active, *cutoff), stage);
    }
    sql.push(") AS s");
    sql.count(conn).await.map(Some)
}

/// `SELECT owner_id, n ...` (a `UNION ALL` of them) over the counts of
/// `table` in `part` (of `stage`, for a measure kept apart by it; else
/// `""`), and, for a cutoff, its day's rows up to it. Every
/// value is bound, not written in: the text stays the same from one ask to
/// the next (the cutoff moves every microsecond), so the statement is
/// prepared once per connection.
fn part_sql(sql: &mut Sql, context: &Context, table: &Table, part: Part, stage: &str) {
    let counts = format!("{LIVE}{}", COUNTS.name);
    let buckets = |sql: &mut Sql, measure: Measure, grain: Grain, range: &[(&str, i64)]| {
        let _ = write!(
            sql.text,
            "SELECT owner_id, n FROM {counts} WHERE tbl = '{}' AND what = '{}' AND stage = ",
            table.name,
            measure.name(),
        );
        sql.bind(Cell::Text(Some(stage.to_owned())));
        let _ = write!(sql.text, " AND grain = {}", grain.days());
        for (term, value) in range {
            sql.push(term);
            sql.bind(Cell::Int(*value));
        }
        context.scope(sql);
    };
    match part {
        Part::Subjects => buckets(sql, Measure::Touched, Grain::Block, &[]),
        Part::Failing(None) => buckets(sql, Measure::Missing, Grain::Bits, &[]),
        Part::Failing(Some(bit)) => {
            buckets(sql, Measure::Missing, Grain::Bits, &[(" AND (at & ", bit)]);
            let _ = write!(sql.text, ") <> 0");
        }
        Part::Before(measure, cutoff) => {
            let (block, day) = (Grain::Block.bucket(cutoff), Grain::Day.bucket(cutoff));
            // The blocks before the cutoff's, the days of its block before
            // its day, and the rows of its day before it.
            buckets(sql, measure, Grain::Block, &[(" AND at < ", block)]);
            sql.push(" UNION ALL ");
            buckets(
                sql,
                measure,
                Grain::Day,
                &[(" AND at >= ", block * BLOCK_DAYS), (" AND at < ", day)],
            );
            let column = measure.column();
            let _ = write!(
                sql.text,
                " UNION ALL SELECT COALESCE(owner_id, '') AS owner_id, COUNT(*) AS n FROM {} WHERE {} AND {column} >= ",
                table_name(table),
                measure.rows(),
            );
            sql.bind(Cell::Int(day * DAY_MICROS));
            let _ = write!(sql.text, " AND {column} < ");
            sql.bind(Cell::Int(cutoff));
            if let Some(apart_by) = measure.apart_by() {
                let _ = write!(sql.text, " AND {apart_by} = ");
                sql.bind(Cell::Text(Some(stage.to_owned())));
            }
            context.scope(sql);
            sql.push(" GROUP BY owner_id");
        }
    }
}
