//! Neglected accounts: accounts that matter (open deals, or contacts who are
//! customers) and that nobody has had an interaction with for `days` days,
//! or ever: the customers about to leave unnoticed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::{DealStatus, LifecycleStage};
use serde::Serialize;
use uuid::Uuid;

use super::{OwnerRef, days_between, older_than, owner_ref};
use crate::model::{CrmModel, InteractionRef};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeglectedAccount {
    pub id: Uuid,
    pub name: String,
    pub reason: String,
    pub owner: Option<OwnerRef>,
    /// Null when the account never had an interaction.
    pub last_interaction: Option<InteractionRef>,
    pub days_since_interaction: Option<i64>,
    pub open_deals: u64,
    pub customer_contacts: u64,
    /// Every department whose people ever touched the account.
    pub departments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeglectedAccountsReport {
    pub as_of: DateTime<Utc>,
    pub days: u32,
    pub accounts: Vec<NeglectedAccount>,
}

/// Open deals and customer contacts per account, counted in one pass.
fn stakes(model: &CrmModel) -> HashMap<Uuid, (u64, u64)> {
    let mut stakes: HashMap<Uuid, (u64, u64)> = HashMap::new();
    for deal in model
        .deals
        .values()
        .filter(|d| d.status == DealStatus::Open && !d.meta.archived)
    {
        stakes.entry(deal.fields.account_id).or_default().0 += 1;
    }
    let customers = model
        .contacts
        .values()
        .filter(|c| c.fields.lifecycle_stage == Some(LifecycleStage::Customer) && !c.meta.archived);
    for account_id in customers.filter_map(|c| c.fields.account_id) {
        stakes.entry(account_id).or_default().1 += 1;
    }
    stakes
}

pub fn neglected_accounts(model: &CrmModel, as_of: DateTime<Utc>, days: u32) -> NeglectedAccountsReport {
    let stakes = stakes(model);
    let mut accounts = Vec::new();
    for account in model.accounts.values().filter(|a| !a.meta.archived) {
        let Some(&(open_deals, customer_contacts)) = stakes.get(&account.id) else {
            continue;
        };
        let last_at = account.last_interaction.as_ref().map(|i| i.at.occurred_at);
        if last_at.is_some_and(|at| !older_than(at, as_of, days)) {
            continue;
        }
        let days_since_interaction = last_at.map(|at| days_between(at, as_of));
        let what = match (open_deals, customer_contacts) {
            (0, n) => format!("{n} customer contact(s)"),
            (n, 0) => format!("{n} open deal(s)"),
            (d, c) => format!("{d} open deal(s) and {c} customer contact(s)"),
        };
        let reason = match days_since_interaction {
            Some(n) => format!("{what}, but no interaction for {n} days (limit {days})"),
            None => format!("{what}, but no interaction ever"),
        };
        accounts.push(NeglectedAccount {
            id: account.id,
            name: account.fields.name.to_string(),
            reason,
            owner: owner_ref(model, account.fields.owner_id),
            last_interaction: account.last_interaction.clone(),
            days_since_interaction,
            open_deals,
            customer_contacts,
            departments: account.departments.iter().cloned().collect(),
        });
    }
    // Never contacted first, then the longest silence.
    accounts.sort_by(|a, b| {
        let silence = |x: &NeglectedAccount| x.days_since_interaction.unwrap_or(i64::MAX);
        silence(b).cmp(&silence(a)).then(a.id.cmp(&b.id))
    });
    NeglectedAccountsReport { as_of, days, accounts }
}
