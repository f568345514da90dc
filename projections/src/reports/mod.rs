//! Reports: pure queries over a folded `CrmModel`, measured at `as_of`.
//! The same functions answer live reports (the live model, `as_of` now) and
//! reports as of a past date (a model folded from the events that had
//! happened by then). Every list has a stable order, so the same model gives
//! the same JSON, byte for byte.

mod neglected;
mod owners;
mod pipeline;
mod quality;

use chrono::{DateTime, Duration, Utc};
use domain::{DealStatus, RecordKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{CrmModel, RecordMeta};

pub use neglected::{NeglectedAccount, NeglectedAccountsReport, neglected_accounts};
pub use owners::{OwnerLine, OwnersReport, UnownedLine, owners};
pub use pipeline::{Amounts, PipelineReport, PipelineTotals, RottingDeal, StageLine, pipeline, rotting_deals};
pub use quality::{
    ClockEntry, DataQualityReport, DuplicateGroup, DuplicateMember, IncompleteEntry, QualitySummary, data_quality,
};

/// When a record counts as stale or never updated. Changing a threshold
/// applies to all history: every report is a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityThresholds {
    /// A record whose last touch is more than this many days old is stale.
    pub stale_days: u32,
    /// A record nothing happened to since its creation, more than this many
    /// days ago, was never updated.
    pub never_updated_days: u32,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        Self {
            stale_days: 90,
            never_updated_days: 30,
        }
    }
}

/// The owner of a record, as a manager reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerRef {
    pub id: Uuid,
    pub name: String,
    pub department: String,
}

pub(crate) fn owner_ref(model: &CrmModel, owner_id: Option<Uuid>) -> Option<OwnerRef> {
    let user = owner_id.and_then(|id| model.users.get(&id))?;
    Some(OwnerRef {
        id: user.id,
        name: user.name.clone(),
        department: user.department.clone(),
    })
}

/// Whole days from `from` to `to`, rounded down.
pub(crate) fn days_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_days()
}

/// Strictly more than `days` days: a record exactly N days old is not yet past N.
pub(crate) fn older_than(from: DateTime<Utc>, as_of: DateTime<Utc>, days: u32) -> bool {
    as_of - from > Duration::days(i64::from(days))
}

/// A live record that can go stale: a contact, an account or an open deal,
/// not archived.
#[derive(Debug, Clone)]
pub(crate) struct Subject<'a> {
    pub kind: RecordKind,
    pub id: Uuid,
    pub name: &'a str,
    pub owner_id: Option<Uuid>,
    pub meta: &'a RecordMeta,
}

pub(crate) fn subjects(model: &CrmModel) -> impl Iterator<Item = Subject<'_>> {
    let contacts = model.contacts.values().map(|c| Subject {
        kind: RecordKind::Contact,
        id: c.id,
        name: c.fields.name.as_str(),
        owner_id: c.fields.owner_id,
        meta: &c.meta,
    });
    let accounts = model.accounts.values().map(|a| Subject {
        kind: RecordKind::Account,
        id: a.id,
        name: a.fields.name.as_str(),
        owner_id: a.fields.owner_id,
        meta: &a.meta,
    });
    let deals = model
        .deals
        .values()
        .filter(|d| d.status == DealStatus::Open)
        .map(|d| Subject {
            kind: RecordKind::Deal,
            id: d.id,
            name: d.fields.title.as_str(),
            owner_id: d.fields.owner_id,
            meta: &d.meta,
        });
    contacts.chain(accounts).chain(deals).filter(|s| !s.meta.archived)
}

pub(crate) fn is_stale(meta: &RecordMeta, as_of: DateTime<Utc>, thresholds: &QualityThresholds) -> bool {
    older_than(meta.last_touched_at, as_of, thresholds.stale_days)
}

/// Nothing happened since creation (no change, no interaction) for longer
/// than the threshold.
pub(crate) fn is_never_updated(meta: &RecordMeta, as_of: DateTime<Utc>, thresholds: &QualityThresholds) -> bool {
    meta.version == 1
        && meta.interaction_count == 0
        && older_than(meta.created_at, as_of, thresholds.never_updated_days)
}
