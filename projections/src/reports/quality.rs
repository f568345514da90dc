//! Data quality: which records are stale, were never updated, are
//! incomplete or duplicated, and which deals are rotting. Every entry says
//! why it is listed, who owns it, and (for the clock-based lists) which event
//! last reset its clock, so nobody has to guess.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use domain::{Pipeline, RecordKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::counts::Part;
use super::query::{ListQuery, Owners, RecordRow, Sql, count, cutoff, keyset_list};
use super::{
    Context, DuplicateGroup, ListPage, OwnerRef, PageRequest, QualityList, QualityThresholds, RECORD_TABLES,
    RottingDeal, counts, days_between, duplicates, pipeline,
};
use crate::ProjectionError;
use crate::counts::Measure;
use crate::model::EventRef;
use crate::rows::failed_checks;
use crate::sql::Cell;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockEntry {
    pub kind: RecordKind,
    pub id: Uuid,
    pub name: String,
    pub reason: String,
    pub owner: Option<OwnerRef>,
    pub created_at: DateTime<Utc>,
    pub last_touched_at: DateTime<Utc>,
    pub days_since_touch: i64,
    /// The event that last reset the record's clock.
    pub clock_reset_by: EventRef,
    /// What would take the record off the list.
    pub clears_when: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteEntry {
    pub kind: RecordKind,
    pub id: Uuid,
    pub name: String,
    pub reason: String,
    pub owner: Option<OwnerRef>,
    pub missing: Vec<String>,
    /// Share of the record's completeness checks it passes, 0 to 1.
    pub completeness: f64,
    /// What would take the record off the list.
    pub clears_when: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualitySummary {
    pub records: u64,
    pub stale: u64,
    pub never_updated: u64,
    pub incomplete: u64,
    pub duplicate_groups: u64,
    pub rotting_deals: u64,
}

/// Where each list's second page starts; null for a list that fits its first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityCursors {
    pub stale: Option<String>,
    pub never_updated: Option<String>,
    pub incomplete: Option<String>,
    pub duplicates: Option<String>,
    pub rotting_deals: Option<String>,
}

/// The summary, and the first page of every list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataQualityReport {
    pub as_of: DateTime<Utc>,
    pub thresholds: QualityThresholds,
    pub summary: QualitySummary,
    pub stale: Vec<ClockEntry>,
    pub never_updated: Vec<ClockEntry>,
    pub incomplete: Vec<IncompleteEntry>,
    pub duplicates: Vec<DuplicateGroup>,
    pub rotting_deals: Vec<RottingDeal>,
    pub next_cursors: QualityCursors,
}

pub(crate) async fn data_quality(
    conn: &mut dyn crate::sql::Exec,
    context: &Context,
    config: &Pipeline,
    thresholds: QualityThresholds,
    page: &PageRequest,
) -> Result<DataQualityReport, ProjectionError> {
    let first = PageRequest {
        cursor: None,
        limit: page.limit,
    };
    let tables = context.tables(&RECORD_TABLES);
    let records = match counts::known_total(conn, context, &tables, Part::Subjects).await? {
        Some(records) => records,
        None => {
            count(conn, &tables, |sql| {
                sql.push("subject = 1");
                context.scope(sql);
            })
            .await?
        }
    };
    let stale = clock_page(conn, context, Clock::Stale, thresholds, &first).await?;
    let never_updated = clock_page(conn, context, Clock::NeverUpdated, thresholds, &first).await?;
    let incomplete = incomplete_page(conn, context, &first).await?;
    let duplicates = duplicates::page(conn, context, &first).await?;
    let rotting = pipeline::rotting_page(conn, context, config, &first).await?;
    Ok(DataQualityReport {
        as_of: context.as_of,
        thresholds,
        summary: QualitySummary {
            records,
            stale: stale.total,
            never_updated: never_updated.total,
            incomplete: incomplete.total,
            duplicate_groups: duplicates.total,
            rotting_deals: rotting.total,
        },
        next_cursors: QualityCursors {
            stale: stale.next_cursor,
            never_updated: never_updated.next_cursor,
            incomplete: incomplete.next_cursor,
            duplicates: duplicates.next_cursor,
            rotting_deals: rotting.next_cursor,
        },
        stale: stale.items,
        never_updated: never_updated.items,
        incomplete: incomplete.items,
        duplicates: duplicates.items,
        rotting_deals: rotting.items,
    })
}

/// One page of one list.
pub(crate) async fn list(
    conn: &mut dyn crate::sql::Exec,
    context: &Context,
    config: &Pipeline,
    list: QualityList,
    thresholds: QualityThresholds,
    page: &PageRequest,
) -> Result<Value, ProjectionError> {
    let value = match list {
        QualityList::Stale => serde_json::to_value(clock_page(conn, context, Clock::Stale, thresholds, page).await?),
        QualityList::NeverUpdated => {
            serde_json::to_value(clock_page(conn, context, Clock::NeverUpdated, thresholds, page).await?)
        }
        QualityList::Incomplete => serde_json::to_value(incomplete_page(conn, context, page).await?),
        QualityList::Duplicates => serde_json::to_value(duplicates::page(conn, context, page).await?),
        QualityList::RottingDeals => serde_json::to_value(pipeline::rotting_page(conn, context, config, page).await?),
    };
    value.map_err(|e| ProjectionError::ReadModel(e.to_string()))
}

/// The two lists measured by a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// Last touched more than `stale_days` ago: longest untouched first.
    Stale,
    /// Nothing happened since creation, more than `never_updated_days`
    /// ago: oldest first.
    NeverUpdated,
}

impl Clock {
    fn list(self) -> QualityList {
        match self {
            Self::Stale => QualityList::Stale,
            Self::NeverUpdated => QualityList::NeverUpdated,
        }
    }

    /// What counts the list's records in `rm_counts`.
    fn counted(self) -> Measure {
        match self {
            Self::Stale => Measure::Touched,
            Self::NeverUpdated => Measure::Fresh,
        }
    }

    /// Records last touched (stale), or created (never updated), before
    /// this are on the list.
    fn cutoff(self, context: &Context, thresholds: QualityThresholds) -> i64 {
        match self {
            Self::Stale => cutoff(context.as_of, thresholds.stale_days),
            Self::NeverUpdated => cutoff(context.as_of, thresholds.never_updated_days),
        }
    }

    /// The column the list is sorted by.
    fn sort(self) -> &'static str {
        match self {
            Self::Stale => "touched_at",
            Self::NeverUpdated => "created_at",
        }
    }

    /// The `WHERE` terms of the list (without the scope).
    fn condition(self, context: &Context, thresholds: QualityThresholds, sql: &mut Sql) {
        let counted = self.counted();
        let _ = write!(sql.text, "{} AND {} < ", counted.rows(), counted.column());
        sql.bind(Cell::Int(self.cutoff(context, thresholds)));
    }

    fn reason(self, row: &RecordRow, as_of: DateTime<Utc>, thresholds: QualityThresholds) -> String {
        let meta = row.meta();
        match self {
            Self::Stale => format!(
                "last touched {} days ago; stale after {}",
                days_between(meta.last_touched_at, as_of),
                thresholds.stale_days
            ),
            Self::NeverUpdated => format!(
                "created {} days ago and nothing reset its clock since",
                days_between(meta.created_at, as_of)
            ),
        }
    }
}

/// What resets a record's stale clock (and ends "never updated"): the rule
/// of `model`'s clocks, in words.
fn clock_clears_when(kind: RecordKind) -> String {
    let fields = match kind {
        RecordKind::Deal => "a change to a field other than the external id, a stage move or closing it",
        _ => "a change to a field other than tags, custom fields and the external id",
    };
    let reach = match kind {
        RecordKind::Account => "the account, one of its contacts or one of its deals",
        _ => "it",
    };
    format!(
        "{fields} (by anyone; those three count when the owner makes them), \
         or a call, email or meeting naming {reach}; a note does not"
    )
}

async fn clock_page(
    conn: &mut dyn crate::sql::Exec,
    context: &Context,
    clock: Clock,
    thresholds: QualityThresholds,
    page: &PageRequest,
) -> Result<ListPage<ClockEntry>, ProjectionError> {
    let tables = context.tables(&RECORD_TABLES);
    let query = ListQuery {
        tables: &tables,
        sort: clock.sort(),
        // Stale through the owner index (led by owner, subject and last
        // touch), never updated through `owner_fresh`.
        owners: Owners::Apart,
        condition: |sql: &mut Sql| clock.condition(context, thresholds, sql),
    };
    let part = Part::Before(clock.counted(), clock.cutoff(context, thresholds));
    let total = counts::known_total(conn, context, &tables, part).await?;
    let list = keyset_list(conn, context, &query, page, total).await?;
    let items = list
        .rows
        .iter()
        .map(|(_, row)| {
            let meta = row.meta();
            ClockEntry {
                kind: row.kind(),
                id: row.id(),
                name: row.name().to_owned(),
                reason: clock.reason(row, context.as_of, thresholds),
                owner: context.owner_ref(row.owner_id()),
                created_at: meta.created_at,
                last_touched_at: meta.last_touched_at,
                days_since_touch: days_between(meta.last_touched_at, context.as_of),
                clock_reset_by: meta.last_touch.clone(),
                clears_when: clock_clears_when(row.kind()),
            }
        })
        .collect();
    Ok(ListPage {
        as_of: context.as_of,
        list: clock.list().name().to_owned(),
        total: list.total,
        items,
        next_cursor: list.next_cursor,
    })
}

/// Records failing a completeness check: least complete first.
async fn incomplete_page(
    conn: &mut dyn crate::sql::Exec,
    context: &Context,
    page: &PageRequest,
) -> Result<ListPage<IncompleteEntry>, ProjectionError> {
    let tables = context.tables(&RECORD_TABLES);
    let query = ListQuery {
        tables: &tables,
        sort: "completeness",
        owners: Owners::Apart,
        condition: |sql: &mut Sql| {
            sql.push("subject = 1 AND missing <> 0");
            if let Some(bit) = context.missing {
                sql.push(" AND (missing & ");
                sql.bind(Cell::Int(bit)).push(") <> 0");
            }
        },
    };
    let total = counts::known_total(conn, context, &tables, Part::Failing(context.missing)).await?;
    let list = keyset_list(conn, context, &query, page, total).await?;
    let items = list
        .rows
        .iter()
        .map(|(completeness, row)| {
            let missing: Vec<String> = failed_checks(&row.checks()).into_iter().map(str::to_owned).collect();
            IncompleteEntry {
                kind: row.kind(),
                id: row.id(),
                name: row.name().to_owned(),
                reason: format!("missing {}", missing.join(", ")),
                owner: context.owner_ref(row.owner_id()),
                clears_when: format!("filling in {}", missing.join(" and ")),
                missing,
                completeness: *completeness as f64 / 100.0,
            }
        })
        .collect();
    Ok(ListPage {
        as_of: context.as_of,
        list: QualityList::Incomplete.name().to_owned(),
        total: list.total,
        items,
        next_cursor: list.next_cursor,
    })
}
