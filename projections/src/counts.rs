//! How many records each count-based part of the quality reports holds,
//! kept beside the rows so that a report adds up a few counts instead of
//! reading an index entry per record (`rm_counts`).
//!
//! A record that is a subject of the quality reports (`subject = 1`) is
//! counted, under its table and its owner:
//! - by `touched`: under the span of time its `touched_at` falls in;
//! - by `fresh`, if nothing happened to it since its creation (`fresh = 1`):
//!   under the span its `created_at` falls in;
//! - by `missing`, if it fails a completeness check: under its `missing`
//!   bits;
//! - by `active`, if it is an open deal: under its stage and the span its
//!   `active_at` falls in (what the rotting deals count: idle since before
//!   their stage's cutoff).
//!
//! Times are counted at two grains: the day, and the block of `BLOCK_DAYS`
//! days. "Stale as of T" (touched before a cutoff) is then the sum of the
//! blocks before the cutoff's block, of the days of that block before the
//! cutoff's day, and of the rows of the cutoff's day itself up to the
//! cutoff, read from the `touched` index: a few thousand counts and one day
//! of index entries, whatever the store holds.
//!
//! Every write of a record row moves its counts (the old row's down, the
//! new row's up) in the same transaction as the row; a rebuild counts its
//! tables whole when it indexes them, as it finds its duplicate groups.

use std::collections::BTreeMap;

use crate::schema::Table;
use crate::sql::{Cell, Dialect, Kind};

/// A day in the tables' microseconds.
pub(crate) const DAY_MICROS: i64 = 86_400_000_000;
/// Days per coarse bucket: about a month, so that a report sums a few dozen
/// of them per owner and per year of history, and at most `BLOCK_DAYS` days.
pub(crate) const BLOCK_DAYS: i64 = 32;

/// The columns of a record row the counts are made of, in this order.
pub(crate) const COUNTED_COLUMNS: [(&str, Kind); 8] = [
    ("owner_id", Kind::Text),
    ("subject", Kind::Int),
    ("touched_at", Kind::Int),
    ("fresh", Kind::Int),
    ("created_at", Kind::Int),
    ("missing", Kind::Int),
    ("stage", Kind::Text),
    ("active_at", Kind::OptInt),
];

/// What a count measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Measure {
    /// Subjects, by their last touch: what the stale list and the record
    /// totals count.
    Touched,
    /// Subjects nothing happened to since creation, by their creation: what
    /// the never-updated list counts.
    Fresh,
    /// Subjects failing a completeness check, by the checks they fail: what
    /// the incomplete list counts.
    Missing,
    /// Open deals, by their stage and last activity: what the rotting list
    /// counts.
    Active,
}

impl Measure {
    pub const ALL: [Self; 4] = [Self::Touched, Self::Fresh, Self::Missing, Self::Active];

    /// Its name in the `what` column.
    pub fn name(self) -> &'static str {
        match self {
            Self::Touched => "touched",
            Self::Fresh => "fresh",
            Self::Missing => "missing",
            Self::Active => "active",
        }
    }

    /// The column it counts by: a time, or the failed checks' bits.
    pub fn column(self) -> &'static str {
        match self {
            Self::Touched => "touched_at",
            Self::Fresh => "created_at",
            Self::Missing => "missing",
            Self::Active => "active_at",
        }
    }

    /// The column its counts are kept apart by besides the owner: the
    /// deal's stage, or none.
    pub fn apart_by(self) -> Option<&'static str> {
        (self == Self::Active).then_some("stage")
    }

    /// The rows it counts (SQL after `WHERE`).
    pub fn rows(self) -> &'static str {
        match self {
            Self::Touched => "subject = 1",
            Self::Fresh => "subject = 1 AND fresh = 1",
            Self::Missing => "subject = 1 AND missing <> 0",
            Self::Active => "subject = 1 AND active_at IS NOT NULL",
        }
    }

    /// The grains it is counted at.
    fn grains(self) -> &'static [Grain] {
        match self {
            Self::Touched | Self::Fresh | Self::Active => &[Grain::Day, Grain::Block],
            Self::Missing => &[Grain::Bits],
        }
    }
}

/// What a count's `at` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grain {
    /// Days since 1970.
    Day,
    /// Blocks of `BLOCK_DAYS` days since 1970.
    Block,
    /// Not a time: the value itself (the failed checks' bits).
    Bits,
}

impl Grain {
    /// What the `grain` column holds: a time's span in days, 0 for bits.
    pub fn days(self) -> i64 {
        match self {
            Self::Day => 1,
            Self::Block => BLOCK_DAYS,
            Self::Bits => 0,
        }
    }

    /// The bucket a value falls in. Every time before 1970 falls in bucket
    /// -1 (a report measured before 1970 counts its rows one by one).
    pub fn bucket(self, value: i64) -> i64 {
        match self {
            Self::Bits => value,
            _ if value < 0 => -1,
            _ => value / (DAY_MICROS * self.days()),
        }
    }

    /// `bucket` in SQL, over `column`.
    fn bucket_sql(self, column: &str) -> String {
        match self {
            Self::Bits => column.to_owned(),
            _ => format!(
                "CASE WHEN {column} < 0 THEN -1 ELSE {column} / {} END",
                DAY_MICROS * self.days()
            ),
        }
    }
}

/// One count: of `table`'s rows by `measure`, of one owner (`""` for
/// none) and, for `Active`, one stage (else `""`), in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Bucket {
    table: &'static str,
    measure: Measure,
    grain: Grain,
    at: i64,
    owner: String,
    stage: String,
}

impl Bucket {
    /// The row's id: the stage last, as the only part that is free text.
    fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.table,
            self.measure.name(),
            self.grain.days(),
            self.at,
            self.owner,
            self.stage
        )
    }
}

/// The buckets a row is counted in, from its cells in `COUNTED_COLUMNS`
/// order.
fn buckets_of(table: &'static str, cells: &[Cell]) -> Vec<Bucket> {
    let int = |n: usize| cells.get(n).and_then(Cell::as_int).unwrap_or(0);
    if int(1) != 1 {
        return Vec::new();
    }
    let text = |n: usize| match cells.get(n) {
        Some(Cell::Text(Some(text))) => text.clone(),
        _ => String::new(),
    };
    let owner = text(0);
    let mut measured = vec![(Measure::Touched, int(2))];
    if int(3) == 1 {
        measured.push((Measure::Fresh, int(4)));
    }
    if int(5) != 0 {
        measured.push((Measure::Missing, int(5)));
    }
    if let Some(active_at) = cells.get(7).and_then(Cell::as_int) {
        measured.push((Measure::Active, active_at));
    }
    measured
        .into_iter()
        .flat_map(|(measure, value)| measure.grains().iter().map(move |grain| (measure, *grain, value)))
        .map(|(measure, grain, value)| Bucket {
            table,
            measure,
            grain,
            at: grain.bucket(value),
            owner: owner.clone(),
            stage: measure.apart_by().map(|_| text(6)).unwrap_or_default(),
        })
        .collect()
}

/// What a batch of writes does to the counts.
#[derive(Debug, Default)]
pub(crate) struct Deltas(BTreeMap<Bucket, i64>);

impl Deltas {
    /// Counts a row's buckets once more (`sign` 1: a row written) or once
    /// less (`sign` -1: the row it replaces), `cells` in `CLOCK_COLUMNS` order.
    pub fn add(&mut self, table: &Table, cells: &[Cell], sign: i64) {
        for bucket in buckets_of(table.name, cells) {
            *self.0.entry(bucket).or_default() += sign;
        }
    }

    /// The statements that apply the deltas to `{prefix}counts`, parameters
    /// numbered from `first`: none when nothing moved (a row rewritten in
    /// the same buckets).
    pub fn statements(self, dialect: Dialect, prefix: &str, first: usize) -> Vec<(String, Vec<Cell>)> {
        let moved: Vec<(Bucket, i64)> = self.0.into_iter().filter(|(_, n)| *n != 0).collect();
        let mut statements = Vec::new();
        let mut next = first;
        for chunk in moved.chunks(BUCKETS_PER_STATEMENT_MAX) {
            let mut values = Vec::with_capacity(chunk.len());
            let mut binds = Vec::with_capacity(chunk.len() * 3);
            for (bucket, n) in chunk {
                // The names and numbers are the code's own: written inline,
                // only the owner's id and the stage are bound (and the key
                // made of them).
                values.push(format!(
                    "({}, '{}', '{}', {}, {}, {}, {n})",
                    dialect.parameters(next, 1),
                    bucket.table,
                    bucket.measure.name(),
                    bucket.grain.days(),
                    bucket.at,
                    dialect.parameters(next + 1, 2),
                ));
                next += 3;
                binds.push(Cell::Text(Some(bucket.id())));
                binds.push(Cell::Text(Some(bucket.owner.clone())));
                binds.push(Cell::Text(Some(bucket.stage.clone())));
            }
            statements.push((
                format!(
                    "INSERT INTO {prefix}counts (id, tbl, what, grain, at, owner_id, stage, n) VALUES {} \
                     ON CONFLICT (id) DO UPDATE SET n = {prefix}counts.n + excluded.n",
                    values.join(", ")
                ),
                binds,
            ));
            if dialect == Dialect::Sqlite {
                next = 1;
            }
        }
        statements
    }
}

/// Buckets one statement moves at most.
const BUCKETS_PER_STATEMENT_MAX: usize = 200;

/// The statements that count the rows of `table` whole (a rebuild's, once
/// filled) into `{prefix}counts`.
pub(crate) fn whole_sql(prefix: &str, table: &Table) -> Vec<String> {
    let name = table.name;
    Measure::ALL
        .into_iter()
        .flat_map(|measure| measure.grains().iter().map(move |grain| (measure, *grain)))
        .map(|(measure, grain)| {
            let (what, days) = (measure.name(), grain.days());
            let stage = match measure.apart_by() {
                Some(column) => format!("COALESCE({column}, '')"),
                None => "''".to_owned(),
            };
            format!(
                "INSERT INTO {prefix}counts (id, tbl, what, grain, at, owner_id, stage, n) \
                 SELECT '{name}:{what}:{days}:' || CAST(at AS TEXT) || ':' || owner_id || ':' || stage, \
                 '{name}', '{what}', {days}, at, owner_id, stage, COUNT(*) \
                 FROM (SELECT COALESCE(owner_id, '') AS owner_id, {stage} AS stage, {} AS at \
                 FROM {prefix}{name} WHERE {}) AS s \
                 GROUP BY owner_id, stage, at",
                grain.bucket_sql(measure.column()),
                measure.rows()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_falls_in_the_day_and_block_that_hold_it() {
        assert_eq!(Grain::Day.bucket(0), 0);
        assert_eq!(Grain::Day.bucket(DAY_MICROS - 1), 0);
        assert_eq!(Grain::Day.bucket(DAY_MICROS), 1);
        assert_eq!(Grain::Block.bucket(BLOCK_DAYS * DAY_MICROS - 1), 0);
        assert_eq!(Grain::Block.bucket(BLOCK_DAYS * DAY_MICROS), 1);
        assert_eq!(Grain::Day.bucket(-1), -1);
        assert_eq!(Grain::Block.bucket(i64::MIN), -1);
        assert_eq!(Grain::Bits.bucket(6), 6);
    }

    #[test]
    fn a_row_rewritten_in_the_same_buckets_moves_nothing() {
        let table = &crate::schema::CONTACTS;
        let row = [
            Cell::Text(Some("o".into())),
            Cell::Int(1),
            Cell::Int(5 * DAY_MICROS),
            Cell::Int(1),
            Cell::Int(DAY_MICROS),
            Cell::Int(0),
            Cell::Text(None),
            Cell::OptInt(None),
        ];
        let mut deltas = Deltas::default();
        deltas.add(table, &row, -1);
        deltas.add(table, &row, 1);
        assert!(deltas.statements(Dialect::Sqlite, "rm_", 1).is_empty());
        let mut touched = row.clone();
        touched[2] = Cell::Int(40 * DAY_MICROS);
        touched[3] = Cell::Int(0);
        touched[5] = Cell::Int(6);
        deltas = Deltas::default();
        deltas.add(table, &row, -1);
        deltas.add(table, &touched, 1);
        // Day 5 and day 40 in blocks 0 and 1; the fresh day and block go;
        // two checks now fail.
        let moved: BTreeMap<String, i64> = deltas.0.iter().map(|(b, n)| (b.id(), *n)).collect();
        let expected: BTreeMap<String, i64> = [
            ("contacts:touched:1:5:o:", -1),
            ("contacts:touched:32:0:o:", -1),
            ("contacts:touched:1:40:o:", 1),
            ("contacts:touched:32:1:o:", 1),
            ("contacts:fresh:1:1:o:", -1),
            ("contacts:fresh:32:0:o:", -1),
            ("contacts:missing:0:6:o:", 1),
        ]
        .into_iter()
        .map(|(id, n)| (id.to_owned(), n))
        .collect();
        assert_eq!(moved, expected);
    }

    #[test]
    fn an_open_deal_is_counted_by_its_stage_and_last_activity() {
        let table = &crate::schema::DEALS;
        let deal = |stage: &str, active_day: i64| {
            [
                Cell::Text(None),
                Cell::Int(1),
                Cell::Int(active_day * DAY_MICROS),
                Cell::Int(0),
                Cell::Int(0),
                Cell::Int(0),
                Cell::Text(Some(stage.into())),
                Cell::OptInt(Some(active_day * DAY_MICROS)),
            ]
        };
        let mut deltas = Deltas::default();
        deltas.add(table, &deal("lead", 3), -1);
        deltas.add(table, &deal("proposal", 3), 1);
        let moved: BTreeMap<String, i64> = deltas
            .0
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(b, n)| (b.id(), *n))
            .collect();
        let expected: BTreeMap<String, i64> = [
            ("deals:active:1:3::lead", -1),
            ("deals:active:32:0::lead", -1),
            ("deals:active:1:3::proposal", 1),
            ("deals:active:32:0::proposal", 1),
        ]
        .into_iter()
        .map(|(id, n)| (id.to_owned(), n))
        .collect();
        assert_eq!(moved, expected);
    }
}
