//! The pipeline: where open deals stand, stage by stage in pipeline order,
//! what they are worth (weighted by each stage's win probability), how long
//! they have sat, which are rotting, and how many were won and lost.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{DealStatus, Pipeline};
use serde::Serialize;
use uuid::Uuid;

use super::{OwnerRef, days_between, older_than, owner_ref};
use crate::model::{CrmModel, DealView, EventRef};

/// Amounts in minor units, per ISO 4217 currency: deals in different
/// currencies are never added together.
pub type Amounts = BTreeMap<String, i64>;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageLine {
    pub stage: String,
    pub probability_percent: u8,
    pub rotting_days: u32,
    /// False for a stage deals are still in but the pipeline no longer defines.
    pub configured: bool,
    pub count: u64,
    pub amount: Amounts,
    pub weighted_amount: Amounts,
    /// Mean days the stage's open deals have been in it; null when empty.
    pub average_days_in_stage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineTotals {
    pub count: u64,
    pub amount: Amounts,
    pub weighted_amount: Amounts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RottingDeal {
    pub id: Uuid,
    pub title: String,
    pub stage: String,
    pub days_in_stage: i64,
    pub rotting_days: u32,
    pub reason: String,
    pub owner: Option<OwnerRef>,
    /// The event that moved the deal into its stage: the rot is measured from it.
    pub clock_reset_by: EventRef,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineReport {
    pub as_of: DateTime<Utc>,
    pub stages: Vec<StageLine>,
    pub totals: PipelineTotals,
    pub won: u64,
    pub lost: u64,
    /// won / (won + lost); null before any deal closed.
    pub win_rate: Option<f64>,
    pub rotting_deals: Vec<RottingDeal>,
}

fn open_deals(model: &CrmModel) -> impl Iterator<Item = &DealView> {
    model
        .deals
        .values()
        .filter(|d| !d.meta.archived && d.status == DealStatus::Open)
}

fn add(amounts: &mut Amounts, currency: &str, value: i64) {
    *amounts.entry(currency.to_owned()).or_default() += value;
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

pub fn pipeline(model: &CrmModel, config: &Pipeline, as_of: DateTime<Utc>) -> PipelineReport {
    let mut stages: Vec<StageLine> = config
        .stages()
        .iter()
        .map(|s| StageLine {
            stage: s.name.clone(),
            probability_percent: s.probability_percent,
            rotting_days: s.rotting_days,
            configured: true,
            count: 0,
            amount: Amounts::new(),
            weighted_amount: Amounts::new(),
            average_days_in_stage: None,
        })
        .collect();
    let mut totals = PipelineTotals {
        count: 0,
        amount: Amounts::new(),
        weighted_amount: Amounts::new(),
    };
    let mut days_in_stage: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for deal in open_deals(model) {
        let index = match stages.iter().position(|line| line.stage == deal.stage.as_str()) {
            Some(index) => index,
            None => {
                stages.push(StageLine {
                    stage: deal.stage.as_str().to_owned(),
                    probability_percent: 0,
                    rotting_days: 0,
                    configured: false,
                    count: 0,
                    amount: Amounts::new(),
                    weighted_amount: Amounts::new(),
                    average_days_in_stage: None,
                });
                stages.len() - 1
            }
        };
        let line = &mut stages[index];
        line.count += 1;
        totals.count += 1;
        if let Some(amount) = &deal.fields.amount {
            let currency = amount.currency().code();
            let weighted = (i128::from(amount.value_minor()) * i128::from(line.probability_percent) / 100) as i64;
            add(&mut line.amount, currency, amount.value_minor());
            add(&mut line.weighted_amount, currency, weighted);
            add(&mut totals.amount, currency, amount.value_minor());
            add(&mut totals.weighted_amount, currency, weighted);
        }
        let days = (as_of - deal.stage_entered.occurred_at).num_seconds() as f64 / 86_400.0;
        days_in_stage.entry(line.stage.clone()).or_default().push(days);
    }
    for line in &mut stages {
        if let Some(days) = days_in_stage.get(&line.stage) {
            line.average_days_in_stage = Some(round(days.iter().sum::<f64>() / days.len() as f64, 1));
        }
    }
    let closed = model.deals.values().filter(|d| !d.meta.archived);
    let won = closed.clone().filter(|d| d.status == DealStatus::Won).count() as u64;
    let lost = closed.filter(|d| d.status == DealStatus::Lost).count() as u64;
    let win_rate = (won + lost > 0).then(|| round(won as f64 / (won + lost) as f64, 4));
    PipelineReport {
        as_of,
        stages,
        totals,
        won,
        lost,
        win_rate,
        rotting_deals: rotting_deals(model, config, as_of),
    }
}

/// Open deals in a stage for longer than its rotting days, longest first.
/// Deals in a stage the pipeline no longer defines never rot.
pub fn rotting_deals(model: &CrmModel, config: &Pipeline, as_of: DateTime<Utc>) -> Vec<RottingDeal> {
    let mut rotting: Vec<RottingDeal> = open_deals(model)
        .filter_map(|deal| {
            let stage = config.definition(deal.stage.as_str())?;
            let entered = deal.stage_entered.occurred_at;
            if !older_than(entered, as_of, stage.rotting_days) {
                return None;
            }
            let days_in_stage = days_between(entered, as_of);
            Some(RottingDeal {
                id: deal.id,
                title: deal.fields.title.to_string(),
                stage: stage.name.clone(),
                days_in_stage,
                rotting_days: stage.rotting_days,
                reason: format!(
                    "in {} for {days_in_stage} days; the stage rots after {}",
                    stage.name, stage.rotting_days
                ),
                owner: owner_ref(model, deal.fields.owner_id),
                clock_reset_by: deal.stage_entered.clone(),
            })
        })
        .collect();
    rotting.sort_by(|a, b| b.days_in_stage.cmp(&a.days_in_stage).then(a.id.cmp(&b.id)));
    rotting
}
