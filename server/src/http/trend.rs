//! `/v1/reports/{report}/trend`: a report's figures at each date of a
//! series (`crate::trend`), as JSON or CSV.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use projections::reports::{DepartmentRules, PageRequest, ReportRequest};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{Params, Reader};
use super::read::ReportQuery;
use crate::trend::{Every, at_point, csv_of, points, series};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TrendQuery {
    /// The first period of the series: the day, week or month holding this
    /// time (RFC 3339, or a date).
    #[serde(default, deserialize_with = "crate::moment::start")]
    pub from: Option<DateTime<Utc>>,
    /// The last date of the series (default now; a date means its end):
    /// the last point is the end of its period, or this time if sooner.
    #[serde(default, deserialize_with = "crate::moment::end")]
    pub to: Option<DateTime<Utc>>,
    /// day, week (Monday to Sunday) or month (default): one point at the
    /// end of each.
    pub every: Option<String>,
    /// data-quality and owners: days since the last touch after which a record is stale (default 90).
    pub stale_days: Option<u32>,
    /// data-quality and owners: days without any change since creation (default 30).
    pub never_updated_days: Option<u32>,
    /// neglected-accounts: days without a call, email or meeting (default 30).
    pub days: Option<u32>,
    /// neglected-accounts: only accounts this department had no call, email or meeting with for `days`.
    pub not_touched_by: Option<String>,
    /// Only records this user owns.
    pub owner_id: Option<Uuid>,
    /// Only records owned by people of this department.
    pub department: Option<String>,
    /// Only records of this kind: contact, account or deal.
    pub kind: Option<String>,
    /// Only this account, its contacts and its deals.
    pub account_id: Option<Uuid>,
    /// Only contacts at this lifecycle stage (not on the pipeline or neglected-accounts).
    pub lifecycle: Option<String>,
    /// Only deals in this stage of the pipeline (not on neglected-accounts).
    pub stage: Option<String>,
    /// data-quality: only records missing this.
    pub missing: Option<String>,
}

impl TrendQuery {
    /// The same filters as a report's query (no date, no page).
    fn report_query(&self) -> ReportQuery {
        ReportQuery {
            as_of: None,
            as_recorded: None,
            from: None,
            stale_days: self.stale_days,
            never_updated_days: self.never_updated_days,
            days: self.days,
            not_touched_by: self.not_touched_by.clone(),
            owner_id: self.owner_id,
            department: self.department.clone(),
            kind: self.kind.clone(),
            account_id: self.account_id,
            lifecycle: self.lifecycle.clone(),
            stage: self.stage.clone(),
            missing: self.missing.clone(),
            limit: None,
            cursor: None,
        }
    }
}

/// Which report a trend follows.
#[derive(Debug, Clone, Copy)]
enum Followed {
    Pipeline,
    DataQuality,
    NeglectedAccounts,
    Owners,
}

impl Followed {
    fn name(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::DataQuality => "data-quality",
            Self::NeglectedAccounts => "neglected-accounts",
            Self::Owners => "owners",
        }
    }

    fn request(self, state: &AppState, query: &ReportQuery) -> Result<ReportRequest, ApiError> {
        let page = PageRequest { cursor: None, limit: 1 };
        Ok(match self {
            Self::Pipeline => ReportRequest::Pipeline {
                scope: query.scope()?,
                page,
                from: None,
            },
            Self::DataQuality => ReportRequest::DataQuality {
                thresholds: query.thresholds(),
                scope: query.scope()?,
                page,
            },
            Self::NeglectedAccounts => ReportRequest::NeglectedAccounts {
                days: query.days.unwrap_or(30),
                departments: DepartmentRules {
                    expected: state.app.expected_departments.clone(),
                    not_touched_by: query.not_touched_by.clone(),
                },
                scope: query.scope()?,
                page,
            },
            Self::Owners => ReportRequest::Owners {
                thresholds: query.thresholds(),
                scope: query.scope()?,
            },
        })
    }
}

async fn trend(
    state: &AppState,
    followed: Followed,
    query: TrendQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let from = query
        .from
        .ok_or_else(|| ApiError::bad_request("from: the first date of the series is required (2026-01-01)"))?;
    let to: DateTime<Utc> = query.to.unwrap_or_else(Utc::now);
    let every = Every::parse(query.every.as_deref()).map_err(ApiError::bad_request)?;
    let series = series(from, to, every).map_err(ApiError::bad_request)?;
    let base = followed.request(state, &query.report_query())?;
    let asks = series
        .iter()
        .map(|point| Ok((point.as_of, at_point(&base, point).map_err(ApiError::bad_request)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let answers = state
        .projector
        .reports_over_time(&state.app.rules.pipeline, &asks)
        .await?;
    let points = points(&asks, answers);
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if wants_csv {
        let csv = csv_of(&points).map_err(|e| ApiError::internal(&e))?;
        let mut response = csv.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(response);
    }
    Ok(Json(json!({
        "report": followed.name(),
        "every": every.name(),
        "from": from,
        "to": to,
        "points": points,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/v1/reports/pipeline/trend", tag = "reports", params(TrendQuery),
    responses((status = 200, description = "{report, every, from, to, points: [{as_of, totals, stages, won, lost, win_rate, rotting_deals_total, period}]}: the pipeline's figures at the end of each period, each exact as of then; period counts the deals created, won, lost and slipped within it. With Accept: text/csv, a row per date", body = Object,
               content((Object = "application/json"), (String = "text/csv"))),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn pipeline(
    State(state): State<AppState>,
    _reader: Reader,
    headers: HeaderMap,
    Params(query): Params<TrendQuery>,
) -> Result<Response, ApiError> {
    trend(&state, Followed::Pipeline, query, &headers).await
}

#[utoipa::path(get, path = "/v1/reports/data-quality/trend", tag = "reports", params(TrendQuery),
    responses((status = 200, description = "{report, every, from, to, points: [{as_of, summary}]}: the data-quality counts (stale, never updated, incomplete, duplicate groups, rotting deals) at the end of each period, each exact as of then. With Accept: text/csv, a row per date", body = Object,
               content((Object = "application/json"), (String = "text/csv"))),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn data_quality(
    State(state): State<AppState>,
    _reader: Reader,
    headers: HeaderMap,
    Params(query): Params<TrendQuery>,
) -> Result<Response, ApiError> {
    trend(&state, Followed::DataQuality, query, &headers).await
}

#[utoipa::path(get, path = "/v1/reports/neglected-accounts/trend", tag = "reports", params(TrendQuery),
    responses((status = 200, description = "{report, every, from, to, points: [{as_of, total}]}: neglected accounts at the end of each period. With Accept: text/csv, a row per date", body = Object,
               content((Object = "application/json"), (String = "text/csv"))),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn neglected_accounts(
    State(state): State<AppState>,
    _reader: Reader,
    headers: HeaderMap,
    Params(query): Params<TrendQuery>,
) -> Result<Response, ApiError> {
    trend(&state, Followed::NeglectedAccounts, query, &headers).await
}

#[utoipa::path(get, path = "/v1/reports/owners/trend", tag = "reports", params(TrendQuery),
    responses((status = 200, description = "{report, every, from, to, points: [{as_of, owners, unowned}]}: each owner's records, stale and never-updated counts at the end of each period. With Accept: text/csv, a row per date", body = Object,
               content((Object = "application/json"), (String = "text/csv"))),
              (status = 400, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn owners(
    State(state): State<AppState>,
    _reader: Reader,
    headers: HeaderMap,
    Params(query): Params<TrendQuery>,
) -> Result<Response, ApiError> {
    trend(&state, Followed::Owners, query, &headers).await
}
