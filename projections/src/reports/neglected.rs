//! Neglected accounts: accounts that matter (open deals, or contacts who are
//! customers) and that nobody has had an interaction with for `days` days,
//! or ever: the customers about to leave unnoticed. Never contacted first,
//! then the longest silence; read through the accounts' silence index, the
//! stakes checked per account through the contacts' and deals' account index.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::query::{RecordRow, Sql, cutoff, keyset_list, table_name};
use super::{Context, OwnerRef, PageRequest, days_between};
use crate::ProjectionError;
use crate::model::InteractionRef;
use crate::schema::{ACCOUNTS, CONTACTS, DEALS};
use crate::sql::{Cell, Exec, Kind};

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
    /// Every department whose people ever touched the account.
    pub departments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeglectedAccountsReport {
    pub as_of: DateTime<Utc>,
    pub days: u32,
    /// Neglected accounts in all (every page), within the scope.
    pub total: u64,
    pub accounts: Vec<NeglectedAccount>,
    pub next_cursor: Option<String>,
}

/// Open deals of the account (`a`).
fn open_deals_sql() -> String {
    format!(
        "SELECT 1 FROM {} d WHERE d.account_id = a.id AND d.subject = 1",
        table_name(&DEALS)
    )
}

/// Its contacts who are customers.
fn customers_sql() -> String {
    format!(
        "SELECT 1 FROM {} c WHERE c.account_id = a.id AND c.subject = 1 AND c.lifecycle = 'customer'",
        table_name(&CONTACTS)
    )
}

pub(crate) async fn neglected_accounts(
    conn: &mut dyn Exec,
    context: &Context,
    days: u32,
    page: &PageRequest,
) -> Result<NeglectedAccountsReport, ProjectionError> {
    let tables = context.tables(&[&ACCOUNTS]);
    let (deals, customers) = (open_deals_sql(), customers_sql());
    // `keyset_list` names the table it reads `a`.
    let condition = |sql: &mut Sql| {
        sql.push("archived = 0 AND last_interaction_at < ");
        sql.bind(Cell::Int(cutoff(context.as_of, days)));
        let _ = write!(sql.text, " AND (EXISTS ({deals}) OR EXISTS ({customers}))");
        context.scope(sql);
    };
    let list = keyset_list(conn, &tables, "last_interaction_at", page, condition).await?;
    let ids: Vec<Uuid> = list.rows.iter().map(|(_, row)| row.id()).collect();
    let open_deals = per_account(conn, &format!("{} WHERE subject = 1", table_name(&DEALS)), &ids).await?;
    let customers = per_account(
        conn,
        &format!("{} WHERE subject = 1 AND lifecycle = 'customer'", table_name(&CONTACTS)),
        &ids,
    )
    .await?;
    let accounts = list
        .rows
        .into_iter()
        .filter_map(|(_, row)| match row {
            RecordRow::Account(account) => Some(account),
            _ => None,
        })
        .map(|account| {
            let open_deals = open_deals.get(&account.id).copied().unwrap_or(0);
            let customer_contacts = customers.get(&account.id).copied().unwrap_or(0);
            let days_since_interaction = account
                .last_interaction
                .as_ref()
                .map(|i| days_between(i.at.occurred_at, context.as_of));
            NeglectedAccount {
                id: account.id,
                name: account.fields.name.to_string(),
                reason: reason(open_deals, customer_contacts, days_since_interaction, days),
                owner: context.owner_ref(account.fields.owner_id),
                last_interaction: account.last_interaction.clone(),
                days_since_interaction,
                open_deals,
                customer_contacts,
                departments: account.departments.iter().cloned().collect(),
            }
        })
        .collect();
    Ok(NeglectedAccountsReport {
        as_of: context.as_of,
        days,
        total: list.total,
        accounts,
        next_cursor: list.next_cursor,
    })
}

fn reason(open_deals: u64, customer_contacts: u64, days_since: Option<i64>, days: u32) -> String {
    let what = match (open_deals, customer_contacts) {
        (0, n) => format!("{n} customer contact(s)"),
        (n, 0) => format!("{n} open deal(s)"),
        (d, c) => format!("{d} open deal(s) and {c} customer contact(s)"),
    };
    match days_since {
        Some(n) => format!("{what}, but no interaction for {n} days (limit {days})"),
        None => format!("{what}, but no interaction ever"),
    }
}

/// Rows of `from_where` per account, for the accounts of one page.
async fn per_account(
    conn: &mut dyn Exec,
    from_where: &str,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, u64>, ProjectionError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut sql = Sql::new(conn.dialect());
    let _ = write!(
        sql.text,
        "SELECT account_id, COUNT(*) FROM {from_where} AND account_id IN "
    );
    sql.bind_ids(ids);
    sql.push(" GROUP BY account_id");
    let mut counts = BTreeMap::new();
    for row in sql.fetch(conn, &[Kind::Text, Kind::Int]).await? {
        let id = row[0].clone().into_text().and_then(|raw| Uuid::parse_str(&raw).ok());
        if let Some(id) = id {
            counts.insert(id, u64::try_from(row[1].as_int().unwrap_or(0)).unwrap_or(0));
        }
    }
    Ok(counts)
}
