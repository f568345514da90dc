//! Data quality: which records are stale, were never updated, are
//! incomplete or duplicated, and which deals are rotting. Every entry says
//! why it is listed, who owns it, and (for the clock-based lists) which event
//! last reset its clock, so nobody has to guess.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{Pipeline, RecordKind};
use serde::Serialize;
use uuid::Uuid;

use super::{
    OwnerRef, QualityThresholds, RottingDeal, Subject, days_between, is_never_updated, is_stale, owner_ref,
    rotting_deals, subjects,
};
use crate::model::{CrmModel, EventRef};

#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncompleteEntry {
    pub kind: RecordKind,
    pub id: Uuid,
    pub name: String,
    pub reason: String,
    pub owner: Option<OwnerRef>,
    pub missing: Vec<&'static str>,
    /// Share of the record's completeness checks it passes, 0 to 1.
    pub completeness: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateMember {
    pub kind: RecordKind,
    pub id: Uuid,
    pub name: String,
    pub owner: Option<OwnerRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateGroup {
    pub reason: String,
    /// The normalised value the records share.
    pub key: String,
    pub records: Vec<DuplicateMember>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualitySummary {
    pub records: u64,
    pub stale: u64,
    pub never_updated: u64,
    pub incomplete: u64,
    pub duplicate_groups: u64,
    pub rotting_deals: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataQualityReport {
    pub as_of: DateTime<Utc>,
    pub thresholds: QualityThresholds,
    pub summary: QualitySummary,
    pub stale: Vec<ClockEntry>,
    pub never_updated: Vec<ClockEntry>,
    pub incomplete: Vec<IncompleteEntry>,
    pub duplicates: Vec<DuplicateGroup>,
    pub rotting_deals: Vec<RottingDeal>,
}

pub fn data_quality(
    model: &CrmModel,
    config: &Pipeline,
    as_of: DateTime<Utc>,
    thresholds: QualityThresholds,
) -> DataQualityReport {
    let mut stale = Vec::new();
    let mut never_updated = Vec::new();
    let mut n_records = 0;
    for subject in subjects(model) {
        n_records += 1;
        let days = days_between(subject.meta.last_touched_at, as_of);
        if is_stale(subject.meta, as_of, &thresholds) {
            let reason = format!("last touched {days} days ago; stale after {}", thresholds.stale_days);
            stale.push(clock_entry(model, &subject, as_of, reason));
        }
        if is_never_updated(subject.meta, as_of, &thresholds) {
            let age = days_between(subject.meta.created_at, as_of);
            let reason = format!("created {age} days ago and never changed or contacted since");
            never_updated.push(clock_entry(model, &subject, as_of, reason));
        }
    }
    stale.sort_by(|a, b| b.days_since_touch.cmp(&a.days_since_touch).then(a.id.cmp(&b.id)));
    never_updated.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let incomplete = incomplete(model);
    let duplicates = duplicates(model);
    let rotting = rotting_deals(model, config, as_of);
    let summary = QualitySummary {
        records: n_records,
        stale: stale.len() as u64,
        never_updated: never_updated.len() as u64,
        incomplete: incomplete.len() as u64,
        duplicate_groups: duplicates.len() as u64,
        rotting_deals: rotting.len() as u64,
    };
    DataQualityReport {
        as_of,
        thresholds,
        summary,
        stale,
        never_updated,
        incomplete,
        duplicates,
        rotting_deals: rotting,
    }
}

fn clock_entry(model: &CrmModel, subject: &Subject<'_>, as_of: DateTime<Utc>, reason: String) -> ClockEntry {
    ClockEntry {
        kind: subject.kind,
        id: subject.id,
        name: subject.name.to_owned(),
        reason,
        owner: owner_ref(model, subject.owner_id),
        created_at: subject.meta.created_at,
        last_touched_at: subject.meta.last_touched_at,
        days_since_touch: days_between(subject.meta.last_touched_at, as_of),
        clock_reset_by: subject.meta.last_touch.clone(),
    }
}

/// The checks each kind of record must pass to be complete, and whether it does.
fn completeness_checks(model: &CrmModel, subject: &Subject<'_>) -> Vec<(&'static str, bool)> {
    let has_owner = subject.owner_id.is_some();
    match subject.kind {
        RecordKind::Contact => {
            let contact = &model.contacts[&subject.id];
            vec![
                (
                    "email or phone",
                    contact.fields.email.is_some() || contact.fields.phone.is_some(),
                ),
                ("owner", has_owner),
                ("account", contact.fields.account_id.is_some()),
            ]
        }
        RecordKind::Account => {
            let account = &model.accounts[&subject.id];
            vec![("owner", has_owner), ("domain", account.fields.domain.is_some())]
        }
        RecordKind::Deal => {
            let deal = &model.deals[&subject.id];
            vec![
                ("owner", has_owner),
                ("amount", deal.fields.amount.is_some()),
                ("expected close", deal.fields.expected_close.is_some()),
            ]
        }
        RecordKind::Interaction | RecordKind::User => vec![],
    }
}

fn incomplete(model: &CrmModel) -> Vec<IncompleteEntry> {
    let mut entries: Vec<IncompleteEntry> = subjects(model)
        .filter_map(|subject| {
            let checks = completeness_checks(model, &subject);
            let missing: Vec<&'static str> = checks.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
            if missing.is_empty() {
                return None;
            }
            let passed = checks.len() - missing.len();
            Some(IncompleteEntry {
                kind: subject.kind,
                id: subject.id,
                name: subject.name.to_owned(),
                reason: format!("missing {}", missing.join(", ")),
                owner: owner_ref(model, subject.owner_id),
                completeness: (passed as f64 / checks.len() as f64 * 100.0).round() / 100.0,
                missing,
            })
        })
        .collect();
    entries.sort_by(|a, b| a.completeness.total_cmp(&b.completeness).then(a.id.cmp(&b.id)));
    entries
}

/// Lower case, single spaces: "Ada  Lovelace" and "ada lovelace" are one name.
fn normalized_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn duplicates(model: &CrmModel) -> Vec<DuplicateGroup> {
    let mut groups: BTreeMap<(&'static str, String), Vec<DuplicateMember>> = BTreeMap::new();
    for contact in model.contacts.values().filter(|c| !c.meta.archived) {
        let member = || DuplicateMember {
            kind: RecordKind::Contact,
            id: contact.id,
            name: contact.fields.name.to_string(),
            owner: owner_ref(model, contact.fields.owner_id),
        };
        if let Some(email) = &contact.fields.email {
            groups
                .entry(("same email", email.normalized()))
                .or_default()
                .push(member());
        }
        if let Some(phone) = &contact.fields.phone {
            groups
                .entry(("same phone", phone.as_str().to_owned()))
                .or_default()
                .push(member());
        }
        if let Some(account_id) = contact.fields.account_id {
            let key = format!(
                "{} @ account {account_id}",
                normalized_name(contact.fields.name.as_str())
            );
            groups
                .entry(("same name within one account", key))
                .or_default()
                .push(member());
        }
    }
    for account in model.accounts.values().filter(|a| !a.meta.archived) {
        if let Some(domain) = &account.fields.domain {
            let member = DuplicateMember {
                kind: RecordKind::Account,
                id: account.id,
                name: account.fields.name.to_string(),
                owner: owner_ref(model, account.fields.owner_id),
            };
            groups
                .entry(("accounts with the same domain", domain.as_str().to_owned()))
                .or_default()
                .push(member);
        }
    }
    groups
        .into_iter()
        .filter(|(_, records)| records.len() > 1)
        .map(|((reason, key), records)| DuplicateGroup {
            reason: reason.to_owned(),
            key,
            records,
        })
        .collect()
}
