//! Per owner: how many records each person owns, how many of them are stale
//! or were never updated, and when the person last did anything, so a
//! manager sees who is not keeping records up to date. One `GROUP BY
//! owner_id` over the counts kept per owner (`rm_counts`), or, for a scope
//! they do not know, per record table from its clock index alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::counts::Part;
use super::query::{Sql, cutoff, table_name};
use super::{Context, OwnerRef, QualityThresholds, RECORD_TABLES, counts};
use crate::ProjectionError;
use crate::counts::Measure;
use crate::schema::Table;
use crate::sql::{Cell, Exec, Kind};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnerLine {
    pub owner: Option<OwnerRef>,
    pub role: Option<domain::Role>,
    pub contacts: u64,
    pub accounts: u64,
    pub open_deals: u64,
    pub records_owned: u64,
    pub stale: u64,
    pub never_updated: u64,
    /// Share of owned records that are stale, 0 to 1; null when owning nothing.
    pub stale_share: Option<f64>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnownedLine {
    pub records: u64,
    pub stale: u64,
    pub never_updated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnersReport {
    pub as_of: DateTime<Utc>,
    pub thresholds: QualityThresholds,
    pub owners: Vec<OwnerLine>,
    /// Records nobody owns (or whose owner is not a known user); counted
    /// only when the report is not narrowed to owners.
    pub unowned: UnownedLine,
}

/// Records, stale ones and never-updated ones per owner, in one table:
/// added up from `rm_counts` where the counts answer, else counted.
async fn counts(
    conn: &mut dyn Exec,
    context: &Context,
    table: &Table,
    thresholds: QualityThresholds,
) -> Result<Vec<(Option<Uuid>, [u64; 3])>, ProjectionError> {
    let stale_before = cutoff(context.as_of, thresholds.stale_days);
    let fresh_before = cutoff(context.as_of, thresholds.never_updated_days);
    let parts = [
        Part::Subjects,
        Part::Before(Measure::Touched, stale_before),
        Part::Before(Measure::Fresh, fresh_before),
    ];
    if !parts.iter().all(|part| counts::answer(context, *part)) {
        return counted(conn, context, &table_name(table), thresholds).await;
    }
    let mut lines: BTreeMap<Option<Uuid>, [u64; 3]> = BTreeMap::new();
    for (n, part) in parts.into_iter().enumerate() {
        for (owner, count) in counts::per_owner(conn, context, table, part).await? {
            lines.entry(owner).or_default()[n] += count;
        }
    }
    Ok(lines.into_iter().collect())
}

/// `counts`, by counting the rows.
async fn counted(
    conn: &mut dyn Exec,
    context: &Context,
    table: &str,
    thresholds: QualityThresholds,
) -> Result<Vec<(Option<Uuid>, [u64; 3])>, ProjectionError> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT owner_id, COUNT(*), CAST(SUM(CASE WHEN touched_at < ");
    sql.bind(Cell::Int(cutoff(context.as_of, thresholds.stale_days)));
    sql.push(" THEN 1 ELSE 0 END) AS BIGINT), CAST(SUM(CASE WHEN fresh = 1 AND created_at < ");
    sql.bind(Cell::Int(cutoff(context.as_of, thresholds.never_updated_days)));
    let _ = write!(
        sql.text,
        " THEN 1 ELSE 0 END) AS BIGINT) FROM {table} WHERE subject = 1"
    );
    context.scope(&mut sql);
    sql.push(" GROUP BY owner_id");
    let rows = sql.fetch(conn, &[Kind::Text, Kind::Int, Kind::Int, Kind::Int]).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let owner = row[0].clone().into_text().and_then(|raw| Uuid::parse_str(&raw).ok());
            let n = |i: usize| u64::try_from(row[i].as_int().unwrap_or(0)).unwrap_or(0);
            (owner, [n(1), n(2), n(3)])
        })
        .collect())
}

pub(crate) async fn owners(
    conn: &mut dyn Exec,
    context: &Context,
    thresholds: QualityThresholds,
) -> Result<OwnersReport, ProjectionError> {
    let in_scope = |id: &Uuid| context.owners.as_ref().is_none_or(|owners| owners.contains(id));
    let mut lines: BTreeMap<Uuid, OwnerLine> = context
        .users
        .values()
        .filter(|user| in_scope(&user.id))
        .map(|user| {
            let line = OwnerLine {
                owner: context.owner_ref(Some(user.id)),
                role: Some(user.role),
                last_activity_at: user.last_activity_at,
                ..OwnerLine::default()
            };
            (user.id, line)
        })
        .collect();
    let mut unowned = UnownedLine::default();
    for table in context.tables(&RECORD_TABLES) {
        for (owner, [records, stale, never_updated]) in counts(conn, context, table, thresholds).await? {
            let Some(line) = owner.and_then(|id| lines.get_mut(&id)) else {
                unowned.records += records;
                unowned.stale += stale;
                unowned.never_updated += never_updated;
                continue;
            };
            match table.name {
                "contacts" => line.contacts += records,
                "accounts" => line.accounts += records,
                _ => line.open_deals += records,
            }
            line.records_owned += records;
            line.stale += stale;
            line.never_updated += never_updated;
        }
    }
    let mut owners: Vec<OwnerLine> = lines.into_values().collect();
    for line in &mut owners {
        line.stale_share =
            (line.records_owned > 0).then(|| (line.stale as f64 / line.records_owned as f64 * 100.0).round() / 100.0);
    }
    // The people with the most neglected records first.
    owners.sort_by(|a, b| {
        b.stale
            .cmp(&a.stale)
            .then(b.never_updated.cmp(&a.never_updated))
            .then_with(|| {
                let key = |l: &OwnerLine| l.owner.as_ref().map(|o| (o.name.clone(), o.id));
                key(a).cmp(&key(b))
            })
    });
    Ok(OwnersReport {
        as_of: context.as_of,
        thresholds,
        owners,
        unowned,
    })
}
