//! Reading history: a record's changes and timeline, the audit across all
//! records, and the reports.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use eventstore::LogFilter;
use projections::reports::QualityThresholds;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::Reader;
use super::records::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, record_kind};
use crate::queries::{self, ReportRequest};

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
pub struct AuditQuery {
    /// Only this user's changes.
    pub actor_id: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Recorded at or before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page (a log position).
    pub cursor: Option<u64>,
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "history", params(AuditQuery),
    responses((status = 200, description = "{\"items\": [{position, recorded_at, occurred_at, actor, type, stream_id, record}], \"next_cursor\"}", body = Object)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    _reader: Reader,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(PAGE_SIZE_DEFAULT).clamp(1, PAGE_SIZE_MAX);
    let filter = LogFilter {
        actor: query.actor_id,
        since: query.since,
        until: query.until,
    };
    let events = state
        .app
        .store
        .read_filtered(&filter, query.cursor.unwrap_or(0), limit)
        .await?;
    let users = state.projector.users().await?;
    let items: Vec<Value> = events.iter().map(|e| crate::wire::audit_json(&users, e)).collect();
    let next_cursor = (events.len() == limit)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReportQuery {
    /// Report as of this time (RFC 3339; default now): folds the events that
    /// had happened by then and measures ages from it.
    pub as_of: Option<DateTime<Utc>>,
    /// data-quality and owners: days since the last touch after which a record is stale (default 90).
    pub stale_days: Option<u32>,
    /// data-quality and owners: days without any change since creation (default 30).
    pub never_updated_days: Option<u32>,
    /// neglected-accounts: days without an interaction (default 30).
    pub days: Option<u32>,
}

impl ReportQuery {
    fn thresholds(&self) -> QualityThresholds {
        let defaults = QualityThresholds::default();
        QualityThresholds {
            stale_days: self.stale_days.unwrap_or(defaults.stale_days),
            never_updated_days: self.never_updated_days.unwrap_or(defaults.never_updated_days),
        }
    }
}

async fn report(
    state: &AppState,
    request: ReportRequest,
    as_of: Option<DateTime<Utc>>,
) -> Result<Json<Value>, ApiError> {
    let value = queries::report(&state.projector, &state.app.rules.pipeline, &request, as_of, Utc::now()).await?;
    Ok(Json(value))
}

#[utoipa::path(get, path = "/v1/reports/pipeline", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "per stage in pipeline order: count, amount and weighted amount per currency, average days in stage; totals; won, lost, win rate; rotting deals", body = Object)),
    security(("bearer" = [])))]
pub async fn pipeline(
    State(state): State<AppState>,
    _reader: Reader,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    report(&state, ReportRequest::Pipeline, query.as_of).await
}

#[utoipa::path(get, path = "/v1/reports/data-quality", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "summary; stale, never_updated, incomplete, duplicates, rotting_deals; each entry with its reason, owner and the event that last reset its clock", body = Object)),
    security(("bearer" = [])))]
pub async fn data_quality(
    State(state): State<AppState>,
    _reader: Reader,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    report(&state, ReportRequest::DataQuality(query.thresholds()), query.as_of).await
}

#[utoipa::path(get, path = "/v1/reports/neglected-accounts", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "accounts with open deals or customer contacts and no interaction for `days`, or never", body = Object)),
    security(("bearer" = [])))]
pub async fn neglected_accounts(
    State(state): State<AppState>,
    _reader: Reader,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    report(
        &state,
        ReportRequest::NeglectedAccounts {
            days: query.days.unwrap_or(30),
        },
        query.as_of,
    )
    .await
}

#[utoipa::path(get, path = "/v1/reports/owners", tag = "reports", params(ReportQuery),
    responses((status = 200, description = "per owner: records owned, stale and never-updated counts, last activity", body = Object)),
    security(("bearer" = [])))]
pub async fn owners(
    State(state): State<AppState>,
    _reader: Reader,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    report(&state, ReportRequest::Owners(query.thresholds()), query.as_of).await
}
