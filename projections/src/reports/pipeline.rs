//! The pipeline: where open deals stand, stage by stage in pipeline order,
//! what they are worth (weighted by each stage's win probability), how long
//! they have sat, which are rotting, and how many were won and lost. The
//! figures are added up from the sums kept beside the deals (`rm_sums`:
//! per status, owner, currency and stage), or for one account summed over
//! its deals; only the rotting deals are listed, a page at a time.
//!
//! With a `from` date it also gives a period's figures (`from` to the
//! report's `as_of`): deals created, won, lost and slipped in it, and its
//! win rate. They are counted on the deals as they stood at `as_of` (for a
//! past date, the log folded up to it), by when each closed, last slipped
//! or was created: exactly what the as-of rules say happened in between.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use domain::Pipeline;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::counts;
use super::query::{ListQuery, Owners, RecordRow, Sql, cutoff, keyset_list, table_name};
use super::{Context, ListPage, OwnerRef, PageRequest, QualityList, days_between};
use crate::ProjectionError;
use crate::model::EventRef;
use crate::schema::{DEALS, SUMS};
use crate::sql::{Cell, Exec, Kind};

/// Amounts in minor units, per ISO 4217 currency: deals in different
/// currencies are never added together. Sums are exact: 128 bits hold any
/// sum of 64-bit amounts a store can hold.
pub type Amounts = BTreeMap<String, i128>;

/// Amounts are summed in two parts (`crate::sums::SPLIT`), joined here.
const SPLIT: i128 = crate::sums::SPLIT as i128;

/// The two `SELECT` columns summing `amount` in parts (see `SPLIT`).
fn summed_amount_columns() -> String {
    format!("CAST(SUM(amount / {SPLIT}) AS BIGINT), CAST(SUM(amount % {SPLIT}) AS BIGINT)")
}

/// The sum `summed_amount_columns` gives in columns `at` and `at + 1`.
fn summed_amount(row: &[Cell], at: usize) -> i128 {
    i128::from(row[at].as_int().unwrap_or(0)) * SPLIT + i128::from(row[at + 1].as_int().unwrap_or(0))
}

/// won / (won + lost), to four places; none before any deal closed.
fn win_rate(won: u64, lost: u64) -> Option<f64> {
    (won + lost > 0).then(|| round(won as f64 / (won + lost) as f64, 4))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageLine {
    pub stage: String,
    pub probability_percent: u8,
    pub rotting_days: u32,
    /// False for a stage deals are still in but the pipeline no longer defines.
    pub configured: bool,
    pub count: u64,
    pub amount: Amounts,
    /// The stage's amount per currency times its win probability.
    pub weighted_amount: Amounts,
    /// Mean days the stage's open deals have been in it; null when empty.
    pub average_days_in_stage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineTotals {
    pub count: u64,
    pub amount: Amounts,
    pub weighted_amount: Amounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RottingDeal {
    pub id: Uuid,
    pub title: String,
    pub stage: String,
    pub days_in_stage: i64,
    /// Days since the last activity on the deal: entering its stage, or a
    /// later call, email or meeting about it.
    pub days_idle: i64,
    pub rotting_days: u32,
    pub reason: String,
    pub owner: Option<OwnerRef>,
    /// The last activity: the rot is measured from it.
    pub clock_reset_by: EventRef,
    /// What would take the deal off the list.
    pub clears_when: String,
}

/// Where the rotting deals' second page starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RottingCursor {
    pub rotting_deals: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    pub as_of: DateTime<Utc>,
    pub stages: Vec<StageLine>,
    pub totals: PipelineTotals,
    pub won: u64,
    pub lost: u64,
    /// won / (won + lost); null before any deal closed.
    pub win_rate: Option<f64>,
    /// Open deals in their stage past its rotting days, longest first (a page).
    pub rotting_deals: Vec<RottingDeal>,
    pub rotting_deals_total: u64,
    pub next_cursors: RottingCursor,
    /// Asked with `from`: what happened between it and `as_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<PeriodFigures>,
}

/// Deals in a period, `from` to `to` (both included; business time), not
/// archived by `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodFigures {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Deals created in the period.
    pub new: u64,
    /// Deals closed won in the period, and what they were worth.
    pub won: u64,
    pub won_amount: Amounts,
    /// Deals closed lost in the period.
    pub lost: u64,
    /// won / (won + lost) in the period; null if none closed in it.
    pub win_rate: Option<f64>,
    /// Deals whose expected close was moved later in the period, while open.
    pub slipped: u64,
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Open deals per (stage, currency): count, amount, and the sum of the
/// seconds at which they entered their stage.
struct Group {
    stage: String,
    currency: Option<String>,
    count: u64,
    amount: i128,
    entered_seconds: i64,
}

/// The open deals' groups, from the sums kept beside the deals
/// (`crate::sums`) where they answer for the scope (they know each deal's
/// owner and stage, not its account), else summed over the deal rows.
async fn groups(conn: &mut dyn Exec, context: &Context) -> Result<Vec<Group>, ProjectionError> {
    let mut sql = Sql::new(conn.dialect());
    if sums_answer(context) {
        let _ = write!(
            sql.text,
            "SELECT stage, currency, CAST(SUM(n) AS BIGINT), CAST(SUM(amount_high) AS BIGINT), \
             CAST(SUM(amount_low) AS BIGINT), CAST(SUM(entered_seconds) AS BIGINT) FROM {} \
             WHERE status = 'open'",
            table_name(&SUMS)
        );
        context.scope(&mut sql);
        // Groups whose deals all moved on are kept at zero: not a group.
        sql.push(" GROUP BY stage, currency HAVING SUM(n) > 0 ORDER BY stage, currency");
    } else {
        let _ = write!(
            sql.text,
            "SELECT stage, currency, COUNT(*), {}, \
             CAST(SUM(stage_entered_at / 1000000) AS BIGINT) FROM {} \
             WHERE status = 'open' AND archived = 0",
            summed_amount_columns(),
            table_name(&DEALS)
        );
        context.scope(&mut sql);
        sql.push(" GROUP BY stage, currency ORDER BY stage, currency");
    }
    let kinds = [
        Kind::Text,
        Kind::Text,
        Kind::Int,
        Kind::OptInt,
        Kind::OptInt,
        Kind::OptInt,
    ];
    let rows = sql.fetch(conn, &kinds).await?;
    Ok(rows
        .into_iter()
        .map(|row| Group {
            stage: row[0].clone().into_text().unwrap_or_default(),
            // The sums keep "no currency" as ''.
            currency: row[1].clone().into_text().filter(|c| !c.is_empty()),
            count: u64::try_from(row[2].as_int().unwrap_or(0)).unwrap_or(0),
            amount: summed_amount(&row, 3),
            entered_seconds: row[5].as_int().unwrap_or(0),
        })
        .collect())
}

/// Whether the sums kept beside the deals answer for `context`: they know
/// each deal's owner and stage, not its account.
fn sums_answer(context: &Context) -> bool {
    context.account_id.is_none()
}

fn empty_line(stage: &str, probability_percent: u8, rotting_days: u32, configured: bool) -> StageLine {
    StageLine {
        stage: stage.to_owned(),
        probability_percent,
        rotting_days,
        configured,
        count: 0,
        amount: Amounts::new(),
        weighted_amount: Amounts::new(),
        average_days_in_stage: None,
    }
}

fn stage_lines(config: &Pipeline, groups: &[Group], as_of: DateTime<Utc>) -> Vec<StageLine> {
    let mut stages: Vec<StageLine> = config
        .stages()
        .iter()
        .map(|s| empty_line(&s.name, s.probability_percent, s.rotting_days, true))
        .collect();
    let mut entered: BTreeMap<String, i64> = BTreeMap::new();
    for group in groups {
        let index = match stages.iter().position(|line| line.stage == group.stage) {
            Some(index) => index,
            None => {
                stages.push(empty_line(&group.stage, 0, 0, false));
                stages.len() - 1
            }
        };
        let line = &mut stages[index];
        line.count += group.count;
        *entered.entry(group.stage.clone()).or_default() += group.entered_seconds;
        if let Some(currency) = &group.currency {
            let weighted = group.amount * i128::from(line.probability_percent) / 100;
            line.amount.insert(currency.clone(), group.amount);
            line.weighted_amount.insert(currency.clone(), weighted);
        }
    }
    for line in stages.iter_mut().filter(|line| line.count > 0) {
        let sum_entered = entered.get(&line.stage).copied().unwrap_or(0) as f64;
        let mean_seconds = as_of.timestamp() as f64 - sum_entered / line.count as f64;
        line.average_days_in_stage = Some(round(mean_seconds / 86_400.0, 1));
    }
    stages
}

fn totals(stages: &[StageLine]) -> PipelineTotals {
    let mut totals = PipelineTotals {
        count: 0,
        amount: Amounts::new(),
        weighted_amount: Amounts::new(),
    };
    for line in stages {
        totals.count += line.count;
        for (currency, value) in &line.amount {
            *totals.amount.entry(currency.clone()).or_default() += value;
        }
        for (currency, value) in &line.weighted_amount {
            *totals.weighted_amount.entry(currency.clone()).or_default() += value;
        }
    }
    totals
}

/// Won and lost deals (not archived), all time.
async fn closed(conn: &mut dyn Exec, context: &Context) -> Result<(u64, u64), ProjectionError> {
    let mut sql = Sql::new(conn.dialect());
    if sums_answer(context) {
        let _ = write!(
            sql.text,
            "SELECT status, CAST(SUM(n) AS BIGINT) FROM {} WHERE status IN ('won', 'lost')",
            table_name(&SUMS)
        );
    } else {
        let _ = write!(
            sql.text,
            "SELECT status, COUNT(*) FROM {} WHERE archived = 0 AND status IN ('won', 'lost')",
            table_name(&DEALS)
        );
    }
    context.scope(&mut sql);
    sql.push(" GROUP BY status");
    let (mut won, mut lost) = (0, 0);
    for row in sql.fetch(conn, &[Kind::Text, Kind::OptInt]).await? {
        let n = u64::try_from(row[1].as_int().unwrap_or(0)).unwrap_or(0);
        match row[0].clone().into_text().as_deref() {
            Some("won") => won = n,
            _ => lost = n,
        }
    }
    Ok((won, lost))
}

pub(crate) async fn pipeline(
    conn: &mut dyn Exec,
    context: &Context,
    config: &Pipeline,
    page: &PageRequest,
    from: Option<DateTime<Utc>>,
) -> Result<PipelineReport, ProjectionError> {
    context.refuse("the pipeline", true, false)?;
    let period = match from {
        Some(from) if from > context.as_of => {
            return Err(ProjectionError::BadRequest(format!(
                "from ({from}) is after the report's as_of ({}): a period ends at as_of",
                context.as_of
            )));
        }
        Some(from) => Some(period(conn, context, from).await?),
        None => None,
    };
    let stages = stage_lines(config, &groups(conn, context).await?, context.as_of);
    let (won, lost) = closed(conn, context).await?;
    let rotting = rotting_page(conn, context, config, page).await?;
    Ok(PipelineReport {
        as_of: context.as_of,
        totals: totals(&stages),
        stages,
        won,
        lost,
        win_rate: win_rate(won, lost),
        rotting_deals: rotting.items,
        rotting_deals_total: rotting.total,
        next_cursors: RottingCursor {
            rotting_deals: rotting.next_cursor,
        },
        period,
    })
}

/// The period figures from `from` to the report's `as_of`. The tables hold
/// nothing that happened after `as_of` when it is past, but live tables may
/// (`as_of` now, a write a moment later): each range is closed at `as_of`.
async fn period(conn: &mut dyn Exec, context: &Context, from: DateTime<Utc>) -> Result<PeriodFigures, ProjectionError> {
    let (since, until) = (crate::rows::micros(from), crate::rows::micros(context.as_of));
    // `select` of the deals not archived whose `column` falls in the period,
    // within the scope.
    let dialect = conn.dialect();
    let in_period = |select: &str, column: &str| {
        let mut sql = Sql::new(dialect);
        let _ = write!(
            sql.text,
            "SELECT {select} FROM {} WHERE {column} >= ",
            table_name(&DEALS)
        );
        sql.bind(Cell::Int(since));
        let _ = write!(sql.text, " AND {column} <= ");
        sql.bind(Cell::Int(until));
        sql.push(" AND archived = 0");
        context.scope(&mut sql);
        sql
    };
    let new = in_period("COUNT(*)", "created_at").count(conn).await?;
    let slipped = in_period("COUNT(*)", "slipped_at").count(conn).await?;
    let mut sql = in_period(
        &format!("status, currency, COUNT(*), {}", summed_amount_columns()),
        "closed_at",
    );
    sql.push(" GROUP BY status, currency");
    let kinds = [Kind::Text, Kind::Text, Kind::Int, Kind::OptInt, Kind::OptInt];
    let (mut won, mut lost, mut won_amount) = (0, 0, Amounts::new());
    for row in sql.fetch(conn, &kinds).await? {
        let n = u64::try_from(row[2].as_int().unwrap_or(0)).unwrap_or(0);
        if row[0].clone().into_text().as_deref() != Some("won") {
            lost += n;
            continue;
        }
        won += n;
        if let Some(currency) = row[1].clone().into_text() {
            *won_amount.entry(currency).or_default() += summed_amount(&row, 3);
        }
    }
    Ok(PeriodFigures {
        from,
        to: context.as_of,
        new,
        won,
        won_amount,
        lost,
        win_rate: win_rate(won, lost),
        slipped,
    })
}

/// Open deals idle for longer than their stage's rotting days (no stage
/// move, no call, email or meeting about them), longest idle first.
/// Deals in a stage the pipeline no longer defines never rot.
pub(crate) async fn rotting_page(
    conn: &mut dyn Exec,
    context: &Context,
    config: &Pipeline,
    page: &PageRequest,
) -> Result<ListPage<RottingDeal>, ProjectionError> {
    let tables = context.tables(&[&DEALS]);
    let condition = |sql: &mut Sql| {
        sql.push("subject = 1 AND (");
        let stages = config.stages();
        if stages.is_empty() {
            sql.push("1 = 0");
        }
        for (n, stage) in stages.iter().enumerate() {
            if n > 0 {
                sql.push(" OR ");
            }
            sql.push("(stage = ");
            sql.bind(Cell::Text(Some(stage.name.clone())));
            sql.push(" AND active_at < ");
            sql.bind(Cell::Int(cutoff(context.as_of, stage.rotting_days)));
            sql.push(")");
        }
        sql.push(")");
    };
    let query = ListQuery {
        tables: &tables,
        sort: "active_at",
        owners: Owners::Apart,
        condition,
    };
    let total = match tables.is_empty() {
        true => Some(0),
        false => {
            let stages: Vec<(String, i64)> = config
                .stages()
                .iter()
                .map(|stage| (stage.name.clone(), cutoff(context.as_of, stage.rotting_days)))
                .collect();
            counts::rotting_total(conn, context, &stages).await?
        }
    };
    let list = keyset_list(conn, context, &query, page, total).await?;
    let items = list
        .rows
        .into_iter()
        .filter_map(|(_, row)| match row {
            RecordRow::Deal(deal) => Some(*deal),
            _ => None,
        })
        .filter_map(|deal| {
            let stage = config.definition(deal.stage.as_str())?;
            let days_in_stage = days_between(deal.stage_entered.occurred_at, context.as_of);
            let days_idle = days_between(deal.last_activity.occurred_at, context.as_of);
            Some(RottingDeal {
                id: deal.id,
                title: deal.fields.title.to_string(),
                stage: stage.name.clone(),
                days_in_stage,
                days_idle,
                rotting_days: stage.rotting_days,
                reason: format!(
                    "no activity for {days_idle} days in {} (in it for {days_in_stage}); the stage rots after {} idle days",
                    stage.name, stage.rotting_days
                ),
                owner: context.owner_ref(deal.fields.owner_id),
                clock_reset_by: deal.last_activity.clone(),
                clears_when: "a call, email or meeting about the deal, a move to another stage, or closing it".into(),
            })
        })
        .collect();
    Ok(ListPage {
        as_of: context.as_of,
        list: QualityList::RottingDeals.name().to_owned(),
        total: list.total,
        items,
        next_cursor: list.next_cursor,
    })
}
