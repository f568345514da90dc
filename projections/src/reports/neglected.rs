//! Neglected accounts: accounts that matter (open deals, or contacts who are
//! customers) and that nobody has had a call, email or meeting with for
//! `days` days, or ever: the customers about to leave unnoticed. Never
//! contacted first, then the longest silence; read through the accounts'
//! silence index, which holds only the accounts at stake (the fold counts
//! each account's open deals and customer contacts in its view).
//!
//! Narrowed to one department (`not_touched_by`), the silence is that
//! department's: accounts Support never called, emailed or met, or not for
//! `days`, whoever else did (checked per account on its coverage row).
//! Every entry shows each department's contact with the account, and which
//! of the departments expected to cover every account did not have it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::query::{ListQuery, Owners, RecordRow, Sql, cutoff, keyset_list, table_name};
use super::{Context, OwnerRef, PageRequest, days_between};
use crate::ProjectionError;
use crate::model::{AccountView, InteractionRef};
use crate::schema::{ACCOUNTS, COVERAGE};
use crate::sql::{Cell, Exec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Each department's calls, emails and meetings with the account (its
    /// contacts and deals included), by name; the expected departments
    /// appear even without any.
    pub departments: Vec<DepartmentContact>,
    /// The expected departments with no call, email or meeting for `days`.
    pub uncovered: Vec<String>,
    /// What would take the account off the list.
    pub clears_when: String,
}

/// One department's contact with an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartmentContact {
    pub department: String,
    pub interactions: u64,
    /// Null when the department never had contact with the account.
    pub last_interaction_at: Option<DateTime<Utc>>,
    pub days_since: Option<i64>,
}

/// What the neglect of an account is measured by, besides the days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepartmentRules {
    /// The departments expected to have contact with every account.
    pub expected: Vec<String>,
    /// Only accounts this department had no contact with for `days`.
    pub not_touched_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeglectedAccountsReport {
    pub as_of: DateTime<Utc>,
    pub days: u32,
    /// The department whose silence is measured; null for everyone's.
    pub not_touched_by: Option<String>,
    /// Neglected accounts in all (every page), within the scope.
    pub total: u64,
    pub accounts: Vec<NeglectedAccount>,
    pub next_cursor: Option<String>,
}

pub(crate) async fn neglected_accounts(
    conn: &mut dyn Exec,
    context: &Context,
    days: u32,
    departments: &DepartmentRules,
    page: &PageRequest,
) -> Result<NeglectedAccountsReport, ProjectionError> {
    context.refuse("neglected-accounts", true, true)?;
    let tables = context.tables(&[&ACCOUNTS]);
    let since = cutoff(context.as_of, days);
    // `keyset_list` names the table it reads `a`.
    let condition = |sql: &mut Sql| match &departments.not_touched_by {
        None => {
            sql.push("archived = 0 AND staked = 1 AND last_interaction_at < ");
            sql.bind(Cell::Int(since));
        }
        Some(department) => {
            let _ = write!(
                sql.text,
                "archived = 0 AND staked = 1 AND NOT EXISTS (SELECT 1 FROM {} k WHERE k.id = a.id || ':' || ",
                table_name(&COVERAGE)
            );
            sql.bind(Cell::Text(Some(department.clone())));
            sql.push(" AND k.last_at >= ");
            sql.bind(Cell::Int(since));
            sql.push(")");
        }
    };
    let query = ListQuery {
        tables: &tables,
        sort: "last_interaction_at",
        owners: Owners::Together,
        condition,
    };
    let list = keyset_list(conn, context, &query, page, None).await?;
    let accounts = list
        .rows
        .into_iter()
        .filter_map(|(_, row)| match row {
            RecordRow::Account(account) => Some(account),
            _ => None,
        })
        .map(|account| {
            let (open_deals, customer_contacts) = (account.open_deals, account.customer_contacts);
            let days_since_interaction = account
                .last_interaction
                .as_ref()
                .map(|i| days_between(i.at.occurred_at, context.as_of));
            let contacts = department_contacts(&account, &departments.expected, context.as_of);
            let silent = |department: &String| {
                account
                    .coverage
                    .get(department)
                    .is_none_or(|c| crate::rows::micros(c.last.occurred_at) < since)
            };
            let uncovered = departments.expected.iter().filter(|d| silent(d)).cloned().collect();
            let silence = match &departments.not_touched_by {
                None => Silence::Anyone(days_since_interaction),
                Some(department) => Silence::Department(
                    department,
                    contacts
                        .iter()
                        .find(|c| &c.department == department)
                        .and_then(|c| c.days_since),
                ),
            };
            NeglectedAccount {
                id: account.id,
                name: account.fields.name.to_string(),
                reason: reason(open_deals, customer_contacts, silence, days),
                owner: context.owner_ref(account.fields.owner_id),
                last_interaction: account.last_interaction.clone(),
                days_since_interaction,
                open_deals,
                customer_contacts,
                departments: contacts,
                uncovered,
                clears_when: match &departments.not_touched_by {
                    None => "a call, email or meeting with the account, one of its contacts or one of its deals".into(),
                    Some(department) => format!(
                        "a call, email or meeting by someone of {department} with the account, one of its contacts or one of its deals"
                    ),
                },
            }
        })
        .collect();
    Ok(NeglectedAccountsReport {
        as_of: context.as_of,
        days,
        not_touched_by: departments.not_touched_by.clone(),
        total: list.total,
        accounts,
        next_cursor: list.next_cursor,
    })
}

/// Whose silence lists an account, and for how many days (none: ever).
enum Silence<'a> {
    Anyone(Option<i64>),
    Department(&'a str, Option<i64>),
}

fn reason(open_deals: u64, customer_contacts: u64, silence: Silence<'_>, days: u32) -> String {
    let what = match (open_deals, customer_contacts) {
        (0, n) => format!("{n} customer contact(s)"),
        (n, 0) => format!("{n} open deal(s)"),
        (d, c) => format!("{d} open deal(s) and {c} customer contact(s)"),
    };
    match silence {
        Silence::Anyone(Some(n)) => format!("{what}, but no call, email or meeting for {n} days (limit {days})"),
        Silence::Anyone(None) => format!("{what}, but no call, email or meeting ever"),
        Silence::Department(department, Some(n)) => {
            format!("{what}, but no call, email or meeting by {department} for {n} days (limit {days})")
        }
        Silence::Department(department, None) => {
            format!("{what}, but no call, email or meeting by {department} ever")
        }
    }
}

/// Each department's contact with `account`, and the expected departments'
/// even without any, by name.
fn department_contacts(account: &AccountView, expected: &[String], as_of: DateTime<Utc>) -> Vec<DepartmentContact> {
    let mut contacts: BTreeMap<&str, DepartmentContact> = account
        .coverage
        .iter()
        .map(|(department, coverage)| {
            let contact = DepartmentContact {
                department: department.clone(),
                interactions: coverage.interactions,
                last_interaction_at: Some(coverage.last.occurred_at),
                days_since: Some(days_between(coverage.last.occurred_at, as_of)),
            };
            (department.as_str(), contact)
        })
        .collect();
    for department in expected {
        contacts.entry(department).or_insert_with(|| DepartmentContact {
            department: department.clone(),
            interactions: 0,
            last_interaction_at: None,
            days_since: None,
        });
    }
    contacts.into_values().collect()
}
