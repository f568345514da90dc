//! What the pipeline adds up, kept beside the deal rows (`rm_sums`): per
//! status, stage, currency and owner, the deals not archived, their amount
//! and the seconds at which they entered their stage. A pipeline report
//! then adds up a few rows per owner instead of reading an index entry per
//! deal (31k open and 92k closed deals at 1M contacts: 20 ms of every
//! pipeline report, the bulk of a mixed load's latency).
//!
//! Like the quality counts (`crate::counts`), every write of a deal row
//! moves its sums (the old row's out, the new row's in) in the same
//! transaction as the row, and a rebuild sums its deals whole when it
//! indexes them.

use std::collections::BTreeMap;

use crate::schema::SUMS;
use crate::sql::{Cell, Dialect, Kind};

/// Amounts are summed as two parts, `amount / SPLIT` and `amount % SPLIT`,
/// each of which fits 64 bits summed over billions of rows (SQLite's `SUM`
/// fails on overflow; PostgreSQL's must be cast back to `BIGINT`), and
/// joined in 128 bits when read.
pub(crate) const SPLIT: i64 = 1_000_000_000;

/// The columns of a deal row the sums are made of, in this order.
pub(crate) const SUMMED_COLUMNS: [(&str, Kind); 7] = [
    ("owner_id", Kind::Text),
    ("archived", Kind::Int),
    ("status", Kind::Text),
    ("stage", Kind::Text),
    ("currency", Kind::Text),
    ("amount", Kind::OptInt),
    ("stage_entered_at", Kind::OptInt),
];

/// The deals one row of `rm_sums` adds up: `""` for no owner or currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    status: String,
    owner: String,
    currency: String,
    stage: String,
}

impl Key {
    /// The row's id: the stage last, as it is the only part that is free
    /// text (a status is a word, an owner a UUID, a currency three letters).
    fn id(&self) -> String {
        format!("{}:{}:{}:{}", self.status, self.owner, self.currency, self.stage)
    }
}

/// What a row adds to its key's sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sum {
    n: i64,
    amount_high: i64,
    amount_low: i64,
    entered_seconds: i64,
}

impl Sum {
    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// The key and sum of a deal row, from its cells in `SUMMED_COLUMNS`
/// order; none for an archived deal.
fn summed(cells: &[Cell]) -> Option<(Key, Sum)> {
    let int = |n: usize| cells.get(n).and_then(Cell::as_int);
    let text = |n: usize| match cells.get(n) {
        Some(Cell::Text(Some(text))) => text.clone(),
        _ => String::new(),
    };
    if int(1) != Some(0) {
        return None;
    }
    let amount = int(5).unwrap_or(0);
    let key = Key {
        status: text(2),
        owner: text(0),
        currency: text(4),
        stage: text(3),
    };
    let sum = Sum {
        n: 1,
        amount_high: amount / SPLIT,
        amount_low: amount % SPLIT,
        entered_seconds: int(6).unwrap_or(0) / 1_000_000,
    };
    Some((key, sum))
}

/// What a batch of writes does to the sums.
#[derive(Debug, Default)]
pub(crate) struct SumDeltas(BTreeMap<Key, Sum>);

impl SumDeltas {
    /// Adds a deal row (`sign` 1: a row written) or takes it away (`sign`
    /// -1: the row it replaces), `cells` in `SUMMED_COLUMNS` order.
    pub fn add(&mut self, cells: &[Cell], sign: i64) {
        if let Some((key, sum)) = summed(cells) {
            let entry = self.0.entry(key).or_default();
            entry.n += sign * sum.n;
            entry.amount_high += sign * sum.amount_high;
            entry.amount_low += sign * sum.amount_low;
            entry.entered_seconds += sign * sum.entered_seconds;
        }
    }

    /// The statements that apply the deltas to `{prefix}sums`, parameters
    /// numbered from `first`: none when nothing moved (a deal rewritten
    /// with the same status, stage, owner and amount).
    pub fn statements(self, dialect: Dialect, prefix: &str, first: usize) -> Vec<(String, Vec<Cell>)> {
        let moved: Vec<(Key, Sum)> = self.0.into_iter().filter(|(_, sum)| !sum.is_zero()).collect();
        let mut statements = Vec::new();
        let mut next = first;
        let table = format!("{prefix}{}", SUMS.name);
        for chunk in moved.chunks(KEYS_PER_STATEMENT_MAX) {
            let mut values = Vec::with_capacity(chunk.len());
            let mut binds = Vec::with_capacity(chunk.len() * 5);
            for (key, sum) in chunk {
                // The numbers are the code's own, written inline; the names
                // are bound.
                values.push(format!(
                    "({}, {}, {}, {}, {})",
                    dialect.parameters(next, 5),
                    sum.n,
                    sum.amount_high,
                    sum.amount_low,
                    sum.entered_seconds
                ));
                next += 5;
                binds.extend(
                    [
                        key.id(),
                        key.status.clone(),
                        key.owner.clone(),
                        key.currency.clone(),
                        key.stage.clone(),
                    ]
                    .map(|text| Cell::Text(Some(text))),
                );
            }
            let added = ["n", "amount_high", "amount_low", "entered_seconds"]
                .map(|column| format!("{column} = {table}.{column} + excluded.{column}"));
            statements.push((
                format!(
                    "INSERT INTO {table} (id, status, owner_id, currency, stage, n, amount_high, amount_low, entered_seconds) \
                     VALUES {} ON CONFLICT (id) DO UPDATE SET {}",
                    values.join(", "),
                    added.join(", ")
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

/// Keys one statement moves at most.
const KEYS_PER_STATEMENT_MAX: usize = 100;

/// The statement that sums the deals of `{prefix}deals` whole (a
/// rebuild's, once filled) into `{prefix}sums`.
pub(crate) fn whole_sql(prefix: &str) -> String {
    format!(
        "INSERT INTO {prefix}{sums} (id, status, owner_id, currency, stage, n, amount_high, amount_low, entered_seconds) \
         SELECT status || ':' || owner_id || ':' || currency || ':' || stage, status, owner_id, currency, stage, \
         COUNT(*), CAST(COALESCE(SUM(amount / {SPLIT}), 0) AS BIGINT), CAST(COALESCE(SUM(amount % {SPLIT}), 0) AS BIGINT), \
         CAST(COALESCE(SUM(stage_entered_at / 1000000), 0) AS BIGINT) \
         FROM (SELECT COALESCE(status, '') AS status, COALESCE(owner_id, '') AS owner_id, \
         COALESCE(currency, '') AS currency, COALESCE(stage, '') AS stage, amount, stage_entered_at \
         FROM {prefix}deals WHERE archived = 0) AS d \
         GROUP BY status, owner_id, currency, stage",
        sums = SUMS.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deal(owner: &str, archived: i64, status: &str, stage: &str, amount: Option<i64>) -> Vec<Cell> {
        vec![
            Cell::Text(Some(owner.into())),
            Cell::Int(archived),
            Cell::Text(Some(status.into())),
            Cell::Text(Some(stage.into())),
            Cell::Text(amount.map(|_| "EUR".into())),
            Cell::OptInt(amount),
            Cell::OptInt(Some(86_400_000_000)),
        ]
    }

    fn moved(deltas: &SumDeltas) -> BTreeMap<String, (i64, i64, i64)> {
        deltas
            .0
            .iter()
            .filter(|(_, sum)| !sum.is_zero())
            .map(|(key, sum)| (key.id(), (sum.n, sum.amount_high, sum.amount_low)))
            .collect()
    }

    #[test]
    fn a_deal_moved_to_another_stage_moves_its_amount_with_it() {
        let mut deltas = SumDeltas::default();
        deltas.add(&deal("o", 0, "open", "lead", Some(2_500_000_000_123)), -1);
        deltas.add(&deal("o", 0, "open", "won over", Some(2_500_000_000_123)), 1);
        let expected = [
            ("open:o:EUR:lead".to_owned(), (-1, -2_500, -123)),
            ("open:o:EUR:won over".to_owned(), (1, 2_500, 123)),
        ];
        assert_eq!(moved(&deltas), expected.into_iter().collect());
    }

    #[test]
    fn a_deal_rewritten_alike_moves_nothing_and_an_archived_one_is_left_out() {
        let mut deltas = SumDeltas::default();
        deltas.add(&deal("o", 0, "open", "lead", Some(5)), -1);
        deltas.add(&deal("o", 0, "open", "lead", Some(5)), 1);
        assert!(deltas.statements(Dialect::Sqlite, "rm_", 1).is_empty());
        deltas = SumDeltas::default();
        deltas.add(&deal("o", 0, "won", "lead", None), -1);
        deltas.add(&deal("o", 1, "won", "lead", None), 1);
        let expected = [("won:o::lead".to_owned(), (-1, 0, 0))];
        assert_eq!(moved(&deltas), expected.into_iter().collect());
    }
}
