//! Per owner: how many records each person owns, how many of them are stale
//! or were never updated, and when the person last did anything, so a
//! manager sees who is not keeping records up to date.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{OwnerRef, QualityThresholds, is_never_updated, is_stale, subjects};
use crate::model::CrmModel;
use domain::RecordKind;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OwnerLine {
    pub owner: Option<OwnerRef>,
    pub role: Option<domain::Role>,
    pub contacts: u64,
    pub accounts: u64,
    pub open_deals: u64,
    pub records_owned: u64,
    pub stale: u64,
    pub never_updated: u64,
    /// Share of owned records that are stale, 0 to 1; null when owning nothing.
    pub stale_share: Option<f64>,
    pub last_activity_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnownedLine {
    pub records: u64,
    pub stale: u64,
    pub never_updated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnersReport {
    pub as_of: DateTime<Utc>,
    pub thresholds: QualityThresholds,
    pub owners: Vec<OwnerLine>,
    /// Records nobody owns (or whose owner is not a known user).
    pub unowned: UnownedLine,
}

pub fn owners(model: &CrmModel, as_of: DateTime<Utc>, thresholds: QualityThresholds) -> OwnersReport {
    let mut lines: BTreeMap<Uuid, OwnerLine> = model
        .users
        .values()
        .map(|user| {
            let line = OwnerLine {
                owner: Some(OwnerRef {
                    id: user.id,
                    name: user.name.clone(),
                    department: user.department.clone(),
                }),
                role: Some(user.role),
                last_activity_at: user.last_activity_at,
                ..OwnerLine::default()
            };
            (user.id, line)
        })
        .collect();
    let mut unowned = UnownedLine::default();
    for subject in subjects(model) {
        let stale = is_stale(subject.meta, as_of, &thresholds);
        let never_updated = is_never_updated(subject.meta, as_of, &thresholds);
        let Some(line) = subject.owner_id.and_then(|id| lines.get_mut(&id)) else {
            unowned.records += 1;
            unowned.stale += u64::from(stale);
            unowned.never_updated += u64::from(never_updated);
            continue;
        };
        match subject.kind {
            RecordKind::Contact => line.contacts += 1,
            RecordKind::Account => line.accounts += 1,
            _ => line.open_deals += 1,
        }
        line.records_owned += 1;
        line.stale += u64::from(stale);
        line.never_updated += u64::from(never_updated);
    }
    let mut owners: Vec<OwnerLine> = lines.into_values().collect();
    for line in &mut owners {
        line.stale_share =
            (line.records_owned > 0).then(|| (line.stale as f64 / line.records_owned as f64 * 100.0).round() / 100.0);
    }
    // The people with the most neglected records first.
    owners.sort_by(|a, b| {
        b.stale
            .cmp(&a.stale)
            .then(b.never_updated.cmp(&a.never_updated))
            .then_with(|| {
                let key = |l: &OwnerLine| l.owner.as_ref().map(|o| (o.name.clone(), o.id));
                key(a).cmp(&key(b))
            })
    });
    OwnersReport {
        as_of,
        thresholds,
        owners,
        unowned,
    }
}
