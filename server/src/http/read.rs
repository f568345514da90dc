//! Reading history: a record's changes and timeline, the audit across all
//! records, and the reports.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use eventstore::LogFilter;
use projections::Cut;
use projections::reports::{
    DepartmentRules, PageRequest, QualityList, QualityThresholds, REPORT_PAGE_DEFAULT, REPORT_PAGE_MAX, ReportRequest,
    Scope,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{Params, Path, Reader};
use super::records::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, record_kind};
use crate::queries;

#[utoipa::path(get, path = "/v1/{kind}/{id}/history", tag = "history",
    params(("kind" = String, Path, description = "contacts, accounts or deals"), ("id" = Uuid, Path)),
    responses((status = 200, description = "{\"items\": [{position, recorded_at, occurred_at, actor: {id, name, department}, type, changes: {field: {from, to}}}]}, oldest first", body = Object),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, Uuid)>,
    _reader: Reader,
) -> Result<Json<Value>, ApiError> {
    let entries = queries::history(&state.projector, record_kind(&kind)?, id).await?;
    Ok(Json(json!({ "items": entries })))
}

#[utoipa::path(get, path = "/v1/{kind}/{id}/timeline", tag = "history",
    params(("kind" = String, Path, description = "contacts, accounts or deals"), ("id" = Uuid, Path)),
    responses((status = 200, description = "{\"items\": [...]}: changes and interactions, newest first", body = Object),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn timeline(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, Uuid)>,
    _reader: Reader,
) -> Result<Json<Value>, ApiError> {
    let items = queries::timeline(&state.projector, record_kind(&kind)?, id).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this user's changes.
    pub actor_id: Option<String>,
    /// Written to the log at or after (recorded time; RFC 3339, or a date:
    /// from its start, UTC). `since` is the same.
    #[serde(default, alias = "since", deserialize_with = "crate::moment::start")]
    pub recorded_since: Option<DateTime<Utc>>,
    /// Written to the log at or before (a date: to its end). `until` is the same.
    #[serde(default, alias = "until", deserialize_with = "crate::moment::end")]
    pub recorded_until: Option<DateTime<Utc>>,
    /// Happened at or after (business time, `occurred_at`: a backfilled
    /// call happened before it was recorded; a date: from its start).
    #[serde(default, deserialize_with = "crate::moment::start")]
    pub occurred_since: Option<DateTime<Utc>>,
    /// Happened at or before (business time; a date: to its end).
    #[serde(default, deserialize_with = "crate::moment::end")]
    pub occurred_until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page (a log position).
    pub cursor: Option<u64>,
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "history", params(AuditQuery),
    responses((status = 200, description = "{\"items\": [{position, recorded_at, occurred_at, actor: {id, name, department}, type, stream_id, record, version, changes: {field: {from, to}} (null for events that change no contact, account or deal)}], \"next_cursor\"}", body = Object),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    _reader: Reader,
    Params(query): Params<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(PAGE_SIZE_DEFAULT).clamp(1, PAGE_SIZE_MAX);
    let filter = LogFilter {
        actor: query.actor_id,
        recorded_since: query.recorded_since,
        recorded_until: query.recorded_until,
        occurred_since: query.occurred_since,
        occurred_until: query.occurred_until,
    };
    let (items, next_cursor) = queries::audit(&state.projector, &filter, query.cursor.unwrap_or(0), limit).await?;
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Report as of this time (RFC 3339, or a date: as of its end, UTC;
    /// default now): folds the events that had happened by then and
    /// measures ages from it.
    #[serde(default, deserialize_with = "crate::moment::end")]
    pub as_of: Option<DateTime<Utc>>,
    /// Report as the system showed it at this time (RFC 3339, or a date: as
    /// of its end, UTC): folds the events recorded by then, whenever they
    /// happened, and measures ages from it. Not with `as_of`.
    #[serde(default, deserialize_with = "crate::moment::end")]
    pub as_recorded: Option<DateTime<Utc>>,
    /// pipeline: the period figures (deals created, won, lost, slipped,
    /// win rate) from this time (or a date: from its start, UTC) to `as_of`.
    #[serde(default, deserialize_with = "crate::moment::start")]
    pub from: Option<DateTime<Utc>>,
    /// data-quality and owners: days since the last touch after which a record is stale (default 90).
    pub stale_days: Option<u32>,
    /// data-quality and owners: days without any change since creation (default 30).
    pub never_updated_days: Option<u32>,
    /// neglected-accounts: days without a call, email or meeting (default 30).
    pub days: Option<u32>,
    /// neglected-accounts: only accounts this department had no call, email
    /// or meeting with for `days` (whoever else did).
    pub not_touched_by: Option<String>,
    /// Only records this user owns.
    pub owner_id: Option<Uuid>,
    /// Only records owned by people of this department.
    pub department: Option<String>,
    /// Only records of this kind: contact, account or deal.
    pub kind: Option<String>,
    /// Only this account, its contacts and its deals.
    pub account_id: Option<Uuid>,
    /// Only contacts at this lifecycle stage: lead, prospect or customer
    /// (churned contacts are in no report). Not on the pipeline or
    /// neglected-accounts.
    pub lifecycle: Option<String>,
    /// Only deals in this stage of the pipeline. Not on neglected-accounts.
    pub stage: Option<String>,
    /// incomplete: only records missing this (email or phone, owner, account, domain, amount, expected close).
    pub missing: Option<String>,
    /// Entries per list page (default 100, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the page before (list endpoints and neglected-accounts).
    pub cursor: Option<String>,
}

impl ReportQuery {
    /// Where the report cuts the log, if it is not the live report.
    pub(super) fn cut(&self) -> Result<Option<Cut>, ApiError> {
        Cut::asked(self.as_of, self.as_recorded).map_err(ApiError::bad_request)
    }

    pub(super) fn thresholds(&self) -> QualityThresholds {
        let defaults = QualityThresholds::default();
        QualityThresholds {
            stale_days: self.stale_days.unwrap_or(defaults.stale_days),
            never_updated_days: self.never_updated_days.unwrap_or(defaults.never_updated_days),
        }
    }

    pub(super) fn scope(&self) -> Result<Scope, ApiError> {
        let kind = match self.kind.as_deref() {
            None => None,
            Some(raw) => Some(
                projections::reports::record_kind(raw)
                    .ok_or_else(|| ApiError::bad_request(format!("kind={raw:?}: one of contact, account, deal")))?,
            ),
        };
        Ok(Scope {
            owner_id: self.owner_id,
            department: self.department.clone(),
            kind,
            missing: self.missing.clone(),
            account_id: self.account_id,
            lifecycle: self.lifecycle.clone(),
            stage: self.stage.clone(),
        })
    }

    /// The page asked for; a cursor only where the answer is one list.
    fn page(&self, paged: bool) -> Result<PageRequest, ApiError> {
        if self.cursor.is_some() && !paged {
            return Err(ApiError::bad_request(
                "cursor pages one list: use /v1/reports/data-quality/{list} or the report's list endpoint",
            ));
        }
        Ok(PageRequest {
            cursor: self.cursor.clone(),
            limit: self.limit.unwrap_or(REPORT_PAGE_DEFAULT).clamp(1, REPORT_PAGE_MAX),
        })
    }
}

async fn report(state: &AppState, request: ReportRequest, cut: Option<Cut>) -> Result<Json<Value>, ApiError> {
    let pipeline = &state.app.rules.pipeline;
    let value = state.projector.report(pipeline, &request, cut, Utc::now()).await?;
    Ok(Json(value))
}

#[utoipa::path(get, path = "/v1/reports/pipeline", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "per stage in pipeline order: count, amount and weighted amount per currency, average days in stage; totals; won, lost, win rate; the first page of rotting deals, rotting_deals_total and next_cursors.rotting_deals", body = Object),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn pipeline(
    State(state): State<AppState>,
    _reader: Reader,
    Params(query): Params<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = ReportRequest::Pipeline {
        scope: query.scope()?,
        page: query.page(false)?,
        from: query.from,
    };
    report(&state, request, query.cut()?).await
}

#[utoipa::path(get, path = "/v1/reports/data-quality", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "summary counts; the first page of stale, never_updated, incomplete, duplicates and rotting_deals, each entry with its reason, owner and the event that last reset its clock; next_cursors per list", body = Object),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn data_quality(
    State(state): State<AppState>,
    _reader: Reader,
    Params(query): Params<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = ReportRequest::DataQuality {
        thresholds: query.thresholds(),
        scope: query.scope()?,
        page: query.page(false)?,
    };
    report(&state, request, query.cut()?).await
}

#[utoipa::path(get, path = "/v1/reports/data-quality/{list}", tag = "reports",
    params(("list" = String, Path, description = "stale, never_updated, incomplete, duplicates or rotting_deals"), ReportQuery),
    responses((status = 200, description = "{as_of, list, total, items, next_cursor}: one page of one list", body = Object),
              (status = 400, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn data_quality_list(
    State(state): State<AppState>,
    Path(list): Path<String>,
    _reader: Reader,
    Params(query): Params<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let list = QualityList::parse(&list).ok_or_else(|| {
        ApiError::not_found(format!(
            "no data-quality list {list:?}; one of stale, never_updated, incomplete, duplicates, rotting_deals"
        ))
    })?;
    let request = ReportRequest::QualityList {
        list,
        thresholds: query.thresholds(),
        scope: query.scope()?,
        page: query.page(true)?,
    };
    report(&state, request, query.cut()?).await
}

#[utoipa::path(get, path = "/v1/reports/neglected-accounts", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "{as_of, days, not_touched_by, total, accounts, next_cursor}: accounts with open deals or customer contacts and no call, email or meeting for `days` (by anyone, or by the department `not_touched_by` names), or never; never contacted first, then the longest silence. Each account lists every department's contact with it (interactions, last_interaction_at, days_since), the expected departments without contact for `days` (uncovered), and what would clear it", body = Object),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn neglected_accounts(
    State(state): State<AppState>,
    _reader: Reader,
    Params(query): Params<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = ReportRequest::NeglectedAccounts {
        days: query.days.unwrap_or(30),
        departments: DepartmentRules {
            expected: state.app.expected_departments.clone(),
            not_touched_by: query.not_touched_by.clone(),
        },
        scope: query.scope()?,
        page: query.page(true)?,
    };
    report(&state, request, query.cut()?).await
}

#[utoipa::path(get, path = "/v1/reports/owners", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "per owner: records owned, stale and never-updated counts, last activity", body = Object),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn owners(
    State(state): State<AppState>,
    _reader: Reader,
    Params(query): Params<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    let request = ReportRequest::Owners {
        thresholds: query.thresholds(),
        scope: query.scope()?,
    };
    report(&state, request, query.cut()?).await
}
