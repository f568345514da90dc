//! Reports: indexed queries over the read-model tables, measured at
//! `as_of`. The same queries answer live reports (the live tables, `as_of`
//! now) and reports as of a past date (the same tables, filled from the
//! model folded up to then). Every list is sorted by a stored value and the
//! record id, and cut into cursor pages; every summary is a `COUNT` that
//! never reads the entries it counts. So a report costs what its page holds,
//! and the same tables give the same JSON, byte for byte.

mod counts;
mod duplicates;
mod neglected;
mod owners;
mod pipeline;
mod quality;
pub(crate) mod query;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{Pipeline, RecordKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ProjectionError;
use crate::model::UserView;
use crate::schema::{ACCOUNTS, CONTACTS, DEALS, LIVE, Table};
use crate::sql::{Cell, Exec, Kind};
use query::Sql;

pub(crate) use duplicates::warnings as duplicate_warnings;
pub use duplicates::{DuplicateGroup, DuplicateMember, MEMBERS_LISTED_MAX};
pub use neglected::{DepartmentContact, DepartmentRules, NeglectedAccount, NeglectedAccountsReport};
pub use owners::{OwnerLine, OwnersReport, UnownedLine};
pub use pipeline::{Amounts, PeriodFigures, PipelineReport, PipelineTotals, RottingDeal, StageLine};
pub use quality::{ClockEntry, DataQualityReport, IncompleteEntry, QualityCursors, QualitySummary};

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

/// Which records a report covers: every filter a report takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only records this user owns.
    pub owner_id: Option<Uuid>,
    /// Only records owned by people of this department.
    pub department: Option<String>,
    /// Only records of this kind (contact, account or deal).
    pub kind: Option<RecordKind>,
    /// incomplete: only records missing this (`owner`, `email or phone`, ...).
    pub missing: Option<String>,
    /// Only this account, its contacts and its deals.
    pub account_id: Option<Uuid>,
    /// Only contacts at this lifecycle stage (lead, prospect, customer).
    pub lifecycle: Option<String>,
    /// Only deals in this stage of the pipeline.
    pub stage: Option<String>,
}

/// Which page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The `next_cursor` of the page before; none for the first page.
    pub cursor: Option<String>,
    pub limit: usize,
}

/// Entries per report list page unless asked otherwise.
pub const REPORT_PAGE_DEFAULT: usize = 100;
/// Entries per report list page at most.
pub const REPORT_PAGE_MAX: usize = 500;

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            cursor: None,
            limit: REPORT_PAGE_DEFAULT,
        }
    }
}

/// One of the data-quality report's lists, paged on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityList {
    Stale,
    NeverUpdated,
    Incomplete,
    Duplicates,
    RottingDeals,
}

impl QualityList {
    pub const ALL: [Self; 5] = [
        Self::Stale,
        Self::NeverUpdated,
        Self::Incomplete,
        Self::Duplicates,
        Self::RottingDeals,
    ];

    /// The list's name in paths and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::NeverUpdated => "never_updated",
            Self::Incomplete => "incomplete",
            Self::Duplicates => "duplicates",
            Self::RottingDeals => "rotting_deals",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|list| list.name() == name)
    }
}

/// A report and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRequest {
    Pipeline {
        scope: Scope,
        page: PageRequest,
        /// With a date: the period figures from it to the report's as_of.
        from: Option<DateTime<Utc>>,
    },
    DataQuality {
        thresholds: QualityThresholds,
        scope: Scope,
        page: PageRequest,
    },
    /// One list of the data-quality report, a page at a time.
    QualityList {
        list: QualityList,
        thresholds: QualityThresholds,
        scope: Scope,
        page: PageRequest,
    },
    NeglectedAccounts {
        days: u32,
        departments: DepartmentRules,
        scope: Scope,
        page: PageRequest,
    },
    Owners {
        thresholds: QualityThresholds,
        scope: Scope,
    },
}

/// A page of one list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListPage<T> {
    pub as_of: DateTime<Utc>,
    pub list: String,
    /// Entries in the whole list (all pages), within the scope.
    pub total: u64,
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The owner of a record, as a manager reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRef {
    pub id: Uuid,
    pub name: String,
    pub department: String,
}

/// What a report reads besides its rows: the users (few: they name every
/// owner), the scope resolved against them, and the instant it measures at.
#[derive(Debug)]
pub(crate) struct Context {
    pub users: BTreeMap<Uuid, UserView>,
    pub as_of: DateTime<Utc>,
    /// The owners a scope allows; `None` for everyone (and nobody).
    pub owners: Option<Vec<Uuid>>,
    pub kind: Option<RecordKind>,
    pub missing: Option<i64>,
    pub account_id: Option<Uuid>,
    /// A lifecycle stage's wire name, checked.
    pub lifecycle: Option<String>,
    /// A stage of the pipeline, checked.
    pub stage: Option<String>,
}

impl Context {
    pub fn owner_ref(&self, owner_id: Option<Uuid>) -> Option<OwnerRef> {
        let user = owner_id.and_then(|id| self.users.get(&id))?;
        Some(OwnerRef {
            id: user.id,
            name: user.name.clone(),
            department: user.department.clone(),
        })
    }

    /// The scope's terms over a record table's columns, each ` AND ...`:
    /// the owners, the account (an account row's `account_id` is its own
    /// id), the lifecycle stage and the deal stage.
    pub fn scope(&self, sql: &mut Sql) {
        self.scope_owned_by(sql, self.owners.as_deref());
    }

    /// The scope's terms, with `owners` in place of the scope's own (one
    /// owner of them, for a list read owner by owner).
    pub fn scope_owned_by(&self, sql: &mut Sql, owners: Option<&[Uuid]>) {
        match owners {
            Some([owner]) => {
                sql.push(" AND owner_id = ");
                sql.bind(Cell::Text(Some(owner.to_string())));
            }
            Some(owners) => {
                sql.push(" AND owner_id IN ");
                sql.bind_ids(owners);
            }
            None => {}
        }
        if let Some(account) = self.account_id {
            sql.push(" AND account_id = ");
            sql.bind(Cell::Text(Some(account.to_string())));
        }
        if let Some(lifecycle) = &self.lifecycle {
            sql.push(" AND lifecycle = ");
            sql.bind(Cell::Text(Some(lifecycle.clone())));
        }
        if let Some(stage) = &self.stage {
            sql.push(" AND stage = ");
            sql.bind(Cell::Text(Some(stage.clone())));
        }
    }

    /// Refuses the scope's lifecycle (or deal stage) where the report has
    /// no records it could narrow.
    pub fn refuse(&self, report: &str, lifecycle: bool, stage: bool) -> Result<(), ProjectionError> {
        let refused = [
            ("lifecycle", lifecycle && self.lifecycle.is_some()),
            ("stage", stage && self.stage.is_some()),
        ];
        match refused.iter().find(|(_, refused)| *refused) {
            Some((name, _)) => Err(ProjectionError::BadRequest(format!(
                "{report} does not take {name}: {}",
                if *name == "lifecycle" {
                    "only contacts have a lifecycle stage"
                } else {
                    "only deals have a stage"
                }
            ))),
            None => Ok(()),
        }
    }

    /// Whether the scope narrows which records count, beyond their kind.
    pub fn narrows_records(&self) -> bool {
        self.owners.is_some() || self.account_id.is_some() || self.lifecycle.is_some() || self.stage.is_some()
    }

    /// Whether the scope lets rows of `kind` in: its kind, and only contacts
    /// have a lifecycle stage, only deals a stage.
    pub fn allows(&self, kind: Option<RecordKind>) -> bool {
        self.kind.is_none_or(|k| kind == Some(k))
            && (self.lifecycle.is_none() || kind == Some(RecordKind::Contact))
            && (self.stage.is_none() || kind == Some(RecordKind::Deal))
    }

    /// The record tables the scope allows, among `tables`.
    pub fn tables<'t>(&self, tables: &[&'t Table]) -> Vec<&'t Table> {
        tables
            .iter()
            .filter(|t| self.allows(crate::rows::kind_of_table(t.name)))
            .copied()
            .collect()
    }
}

/// The record kind a report's `kind` filter names: contact, account or deal.
pub fn record_kind(name: &str) -> Option<RecordKind> {
    RECORD_TABLES
        .iter()
        .filter_map(|t| crate::rows::kind_of_table(t.name))
        .find(|kind| kind.as_str() == name)
}

/// The three record tables.
pub(crate) const RECORD_TABLES: [&Table; 3] = [&CONTACTS, &ACCOUNTS, &DEALS];

async fn load_users(conn: &mut dyn Exec) -> Result<BTreeMap<Uuid, UserView>, ProjectionError> {
    let sql = format!("SELECT id, view FROM {LIVE}users ORDER BY id");
    let rows = conn.fetch(&sql, Vec::new(), &[Kind::Text, Kind::Text]).await?;
    let mut users = BTreeMap::new();
    for row in rows {
        let raw = row.get(1).cloned().and_then(|c| c.into_text()).unwrap_or_default();
        let user: UserView = serde_json::from_str(&raw)
            .map_err(|e| ProjectionError::ReadModel(format!("a users row does not decode: {e}")))?;
        users.insert(user.id, user);
    }
    Ok(users)
}

fn context(
    users: BTreeMap<Uuid, UserView>,
    config: &Pipeline,
    scope: &Scope,
    as_of: DateTime<Utc>,
) -> Result<Context, ProjectionError> {
    let mut owners: Option<Vec<Uuid>> = scope.owner_id.map(|id| vec![id]);
    if let Some(department) = &scope.department {
        let members = users.values().filter(|u| &u.department == department).map(|u| u.id);
        owners = Some(match owners {
            Some(ids) => ids
                .into_iter()
                .filter(|id| users.get(id).is_some_and(|u| &u.department == department))
                .collect(),
            None => members.collect(),
        });
    }
    let missing = match &scope.missing {
        None => None,
        Some(name) => Some(crate::rows::check_bit(name).ok_or_else(|| {
            ProjectionError::BadRequest(format!(
                "missing={name:?} names no completeness check; one of: {}",
                crate::rows::CHECKS.join(", ")
            ))
        })?),
    };
    let lifecycle = match scope.lifecycle.as_deref() {
        None => None,
        Some("churned") => {
            return Err(ProjectionError::BadRequest(
                "lifecycle=churned: churned contacts are settled and in no report (list them with /v1/contacts)".into(),
            ));
        }
        Some(name @ ("lead" | "prospect" | "customer")) => Some(name.to_owned()),
        Some(name) => {
            return Err(ProjectionError::BadRequest(format!(
                "lifecycle={name:?}: one of lead, prospect, customer"
            )));
        }
    };
    let stage = match scope.stage.as_deref() {
        None => None,
        Some(name) => Some(
            config
                .stage(name)
                .map_err(|e| ProjectionError::BadRequest(format!("stage={name:?}: {e}")))?
                .as_str()
                .to_owned(),
        ),
    };
    Ok(Context {
        users,
        as_of,
        owners,
        kind: scope.kind,
        missing,
        account_id: scope.account_id,
        lifecycle,
        stage,
    })
}

/// Answers `request` from the tables `conn` reads (the live ones, or a
/// model's as of a date), measured at `as_of`.
pub(crate) async fn run(
    conn: &mut dyn Exec,
    config: &Pipeline,
    request: &ReportRequest,
    as_of: DateTime<Utc>,
) -> Result<Value, ProjectionError> {
    let users = load_users(conn).await?;
    let json = |value: Result<Value, serde_json::Error>| value.map_err(|e| ProjectionError::ReadModel(e.to_string()));
    match request {
        ReportRequest::Pipeline { scope, page, from } => {
            let context = context(users, config, scope, as_of)?;
            json(serde_json::to_value(
                pipeline::pipeline(conn, &context, config, page, *from).await?,
            ))
        }
        ReportRequest::DataQuality {
            thresholds,
            scope,
            page,
        } => {
            let context = context(users, config, scope, as_of)?;
            let report = quality::data_quality(conn, &context, config, *thresholds, page).await?;
            json(serde_json::to_value(report))
        }
        ReportRequest::QualityList {
            list,
            thresholds,
            scope,
            page,
        } => {
            let context = context(users, config, scope, as_of)?;
            quality::list(conn, &context, config, *list, *thresholds, page).await
        }
        ReportRequest::NeglectedAccounts {
            days,
            departments,
            scope,
            page,
        } => {
            let context = context(users, config, scope, as_of)?;
            json(serde_json::to_value(
                neglected::neglected_accounts(conn, &context, *days, departments, page).await?,
            ))
        }
        ReportRequest::Owners { thresholds, scope } => {
            let context = context(users, config, scope, as_of)?;
            json(serde_json::to_value(owners::owners(conn, &context, *thresholds).await?))
        }
    }
}

/// Answers each of `requests` over a model (a fold of the log cut
/// anywhere), put in tables of its own: what reports as of a date read, with
/// the queries of the live tables.
pub async fn of_model(
    model: &crate::CrmModel,
    config: &Pipeline,
    requests: &[ReportRequest],
    as_of: DateTime<Utc>,
) -> Result<Vec<Value>, ProjectionError> {
    let scratch = crate::tables::Tables::scratch(model).await?;
    let reports = async {
        let mut reports = Vec::with_capacity(requests.len());
        for request in requests {
            reports.push(scratch.report(config, request, as_of).await?);
        }
        Ok(reports)
    }
    .await;
    scratch.close().await;
    reports
}

/// Whole days from `from` to `to`, rounded down.
pub(crate) fn days_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_days()
}
