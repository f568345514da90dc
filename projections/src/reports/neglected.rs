//! Neglected accounts: accounts that matter (open deals, or contacts who are
//! customers) and that nobody has had an interaction with for `days` days,
//! or ever: the customers about to leave unnoticed.

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

pub fn neglected_accounts(model: &CrmModel, as_of: DateTime<Utc>, days: u32) -> NeglectedAccountsReport {
    let mut accounts = Vec::new();
    for account in model.accounts.values().filter(|a| !a.meta.archived) {
        let open_deals = model
            .deals
            .values()
            .filter(|d| d.fields.account_id == account.id && d.status == DealStatus::Open && !d.meta.archived)
            .count() as u64;
        let customer_contacts = model
            .contacts
            .values()
            .filter(|c| {
                c.fields.account_id == Some(account.id)
                    && c.fields.lifecycle_stage == Some(LifecycleStage::Customer)
                    && !c.meta.archived
            })
            .count() as u64;
        if open_deals == 0 && customer_contacts == 0 {
            continue;
        }
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
