//! A view as a table row: the view's JSON beside the facts reports filter,
//! sort and count on, each computed here from the view and nowhere else.
//! What a fact means (when a record is a subject of the quality reports,
//! which checks make it complete, which values make two records duplicates)
//! is defined once, in this file.

use chrono::{DateTime, Utc};
use domain::{DealStatus, LifecycleStage, RecordKind};
use serde::Serialize;
use uuid::Uuid;

use crate::model::{AccountView, ContactView, DealView, InteractionView, RecordMeta, UserView};
use crate::schema::NEVER;
use crate::sql::Cell;

/// The completeness checks, one bit each in the `missing` column, in the
/// order entries name them.
pub(crate) const CHECKS: [&str; 6] = [
    "email or phone",
    "owner",
    "account",
    "domain",
    "amount",
    "expected close",
];

/// A time as the tables hold it: microseconds since 1970.
pub(crate) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// The bit of a check, by name.
pub(crate) fn check_bit(name: &str) -> Option<i64> {
    CHECKS.iter().position(|c| *c == name).map(|bit| 1 << bit)
}

/// The completeness checks of a contact, and whether it passes each.
pub(crate) fn contact_checks(contact: &ContactView) -> Vec<(&'static str, bool)> {
    let fields = &contact.fields;
    vec![
        ("email or phone", fields.email.is_some() || fields.phone.is_some()),
        ("owner", fields.owner_id.is_some()),
        ("account", fields.account_id.is_some()),
    ]
}

pub(crate) fn account_checks(account: &AccountView) -> Vec<(&'static str, bool)> {
    let fields = &account.fields;
    vec![
        ("owner", fields.owner_id.is_some()),
        ("domain", fields.domain.is_some()),
    ]
}

pub(crate) fn deal_checks(deal: &DealView) -> Vec<(&'static str, bool)> {
    let fields = &deal.fields;
    vec![
        ("owner", fields.owner_id.is_some()),
        ("amount", fields.amount.is_some()),
        ("expected close", fields.expected_close.is_some()),
    ]
}

/// The names of the checks that fail, in order.
pub(crate) fn failed_checks(checks: &[(&'static str, bool)]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| *name)
        .collect()
}

/// Lower case, single spaces: "Ada  Lovelace" and "ada lovelace" are one name.
fn normalized_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// How a value is spelled in JSON (`"open"`, `"customer"`).
fn wire_name(value: &impl Serialize) -> Option<String> {
    serde_json::to_value(value).ok()?.as_str().map(str::to_owned)
}

/// Lower case, one field a line: what `q` searches.
fn search_text<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let parts: Vec<String> = parts.into_iter().flatten().map(str::to_lowercase).collect();
    parts.join("\n")
}

pub(crate) fn text(id: &Uuid) -> Cell {
    Cell::Text(Some(id.to_string()))
}

fn optional_text(id: Option<Uuid>) -> Cell {
    Cell::Text(id.map(|id| id.to_string()))
}

fn owned(text: Option<&str>) -> Cell {
    Cell::Text(text.map(str::to_owned))
}

/// The columns of a contact, account or deal row, in `RECORD_COLUMNS` order.
#[derive(Debug, Default)]
struct RecordColumns<'a> {
    owner_id: Option<Uuid>,
    account_id: Option<Uuid>,
    stage: Option<&'a str>,
    external_id: Option<&'a str>,
    search: String,
    /// Whether out of the quality reports while live: a closed deal, a
    /// churned contact.
    settled: bool,
    /// Each completeness check and whether it passes.
    checks: Vec<(&'static str, bool)>,
    status: Option<String>,
    lifecycle: Option<String>,
    stage_entered_at: Option<i64>,
    active_at: Option<i64>,
    closed_at: Option<i64>,
    slipped_at: Option<i64>,
    last_interaction_at: Option<i64>,
    amount: Option<(i64, &'a str)>,
    dup_email: Option<String>,
    dup_phone: Option<String>,
    dup_name: Option<String>,
    dup_domain: Option<String>,
    staked: Option<bool>,
}

impl RecordColumns<'_> {
    fn row(self, id: &Uuid, meta: &RecordMeta, view: String) -> Vec<Cell> {
        let failed: i64 = self
            .checks
            .iter()
            .filter(|(_, passed)| !passed)
            .filter_map(|(name, _)| check_bit(name))
            .sum();
        let passed = self.checks.iter().filter(|(_, passed)| *passed).count();
        let completeness = (passed as f64 / self.checks.len().max(1) as f64 * 100.0).round() as i64;
        let live = |value: Option<String>| if meta.archived { None } else { value };
        vec![
            text(id),
            Cell::Int(i64::from(meta.archived)),
            optional_text(self.owner_id),
            optional_text(self.account_id),
            owned(self.stage),
            owned(self.external_id),
            Cell::Text(Some(self.search)),
            Cell::Int(i64::from(!meta.archived && !self.settled)),
            Cell::Int(micros(meta.created_at)),
            Cell::Int(micros(meta.last_touched_at)),
            Cell::Int(i64::from(!meta.updated_since_created)),
            Cell::Int(failed),
            Cell::Int(completeness),
            Cell::Text(self.status),
            Cell::Text(self.lifecycle),
            Cell::OptInt(self.stage_entered_at),
            Cell::OptInt(self.active_at),
            Cell::OptInt(self.closed_at),
            Cell::OptInt(self.slipped_at),
            Cell::OptInt(self.last_interaction_at),
            Cell::OptInt(self.amount.map(|(value, _)| value)),
            owned(self.amount.map(|(_, currency)| currency)),
            Cell::Text(live(self.dup_email)),
            Cell::Text(live(self.dup_phone)),
            Cell::Text(live(self.dup_name)),
            Cell::Text(live(self.dup_domain)),
            Cell::OptInt(self.staked.map(i64::from)),
            Cell::Text(Some(view)),
        ]
    }
}

pub(crate) fn user_row(user: &UserView, view: String) -> Vec<Cell> {
    vec![text(&user.id), Cell::Text(Some(view))]
}

pub(crate) fn interaction_row(interaction: &InteractionView, view: String) -> Vec<Cell> {
    vec![
        text(&interaction.id),
        optional_text(interaction.logged.contact_id),
        optional_text(interaction.logged.deal_id),
        optional_text(interaction.account_id),
        Cell::Text(Some(view)),
    ]
}

pub(crate) fn contact_row(contact: &ContactView, view: String) -> Vec<Cell> {
    let fields = &contact.fields;
    RecordColumns {
        owner_id: fields.owner_id,
        account_id: fields.account_id,
        external_id: fields.external_id.as_ref().map(|e| e.as_str()),
        search: search_text([
            Some(fields.name.as_str()),
            fields.email.as_ref().map(|e| e.as_str()),
            fields.phone.as_ref().map(|p| p.as_str()),
            fields.title.as_ref().map(|t| t.as_str()),
        ]),
        checks: contact_checks(contact),
        settled: fields.lifecycle_stage == Some(LifecycleStage::Churned),
        lifecycle: fields.lifecycle_stage.as_ref().and_then(wire_name),
        dup_email: fields.email.as_ref().map(|e| e.normalized()),
        dup_phone: fields.phone.as_ref().map(|p| p.as_str().to_owned()),
        dup_name: fields
            .account_id
            .map(|account| format!("{} @ account {account}", normalized_name(fields.name.as_str()))),
        ..RecordColumns::default()
    }
    .row(&contact.id, &contact.meta, view)
}

pub(crate) fn account_row(account: &AccountView, view: String) -> Vec<Cell> {
    let fields = &account.fields;
    RecordColumns {
        owner_id: fields.owner_id,
        account_id: Some(account.id),
        external_id: fields.external_id.as_ref().map(|e| e.as_str()),
        search: search_text([Some(fields.name.as_str()), fields.domain.as_ref().map(|d| d.as_str())]),
        checks: account_checks(account),
        last_interaction_at: Some(
            account
                .last_interaction
                .as_ref()
                .map_or(NEVER, |i| micros(i.at.occurred_at)),
        ),
        dup_domain: fields.domain.as_ref().map(|d| d.as_str().to_owned()),
        staked: Some(account.open_deals + account.customer_contacts > 0),
        ..RecordColumns::default()
    }
    .row(&account.id, &account.meta, view)
}

pub(crate) fn deal_row(deal: &DealView, view: String) -> Vec<Cell> {
    let fields = &deal.fields;
    RecordColumns {
        owner_id: fields.owner_id,
        account_id: Some(fields.account_id),
        stage: Some(deal.stage.as_str()),
        external_id: fields.external_id.as_ref().map(|e| e.as_str()),
        search: search_text([Some(fields.title.as_str())]),
        settled: deal.status != DealStatus::Open,
        checks: deal_checks(deal),
        status: wire_name(&deal.status),
        stage_entered_at: Some(micros(deal.stage_entered.occurred_at)),
        active_at: Some(micros(deal.last_activity.occurred_at)),
        closed_at: deal.closed.as_ref().map(|c| micros(c.at.occurred_at)),
        slipped_at: deal.slipped.as_ref().map(|s| micros(s.occurred_at)),
        amount: fields
            .amount
            .as_ref()
            .map(|amount| (amount.value_minor(), amount.currency().code())),
        ..RecordColumns::default()
    }
    .row(&deal.id, &deal.meta, view)
}

/// An account's `coverage` rows, one per department.
pub(crate) fn coverage_rows(account: &AccountView) -> Vec<Vec<Cell>> {
    let id = account.id.to_string();
    account
        .coverage
        .iter()
        .map(|(department, coverage)| {
            vec![
                Cell::Text(Some(crate::schema::coverage_key(&id, department))),
                Cell::Text(Some(id.clone())),
                Cell::Text(Some(department.clone())),
                Cell::Int(i64::try_from(coverage.interactions).unwrap_or(i64::MAX)),
                Cell::Int(micros(coverage.last.occurred_at)),
            ]
        })
        .collect()
}

/// The record kind a table's rows are.
pub(crate) fn kind_of_table(table: &str) -> Option<RecordKind> {
    match table {
        "contacts" => Some(RecordKind::Contact),
        "accounts" => Some(RecordKind::Account),
        "deals" => Some(RecordKind::Deal),
        _ => None,
    }
}
