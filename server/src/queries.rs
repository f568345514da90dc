//! Read-side queries shared by the command line and the HTTP API: reports
//! live or as of a date, and a record's history, timeline and view.

use chrono::{DateTime, Utc};
use domain::{Pipeline, RecordKind};
use eventstore::StoreError;
use projections::reports::{self, QualityThresholds};
use projections::{CrmModel, HistoryEntry, ProjectionError, Projector, TimelineItem};
use serde_json::Value;
use uuid::Uuid;

/// Runs `report` over the live read models measured now (`live` loads
/// what the report reads), or over the model as it stood at `as_of`: the
/// same report function either way.
pub async fn at<R>(
    projector: &Projector,
    as_of: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    live: Reads,
    report: impl FnOnce(&CrmModel, DateTime<Utc>) -> R,
) -> Result<R, ProjectionError> {
    match as_of {
        None => {
            projector.catch_up().await?;
            let model = match live {
                Reads::Deals => projector.deals().await?,
                Reads::Records => projector.whole(false).await?,
            };
            Ok(report(&model, now))
        }
        Some(as_of) => Ok(report(&projector.as_of(as_of).await?, as_of)),
    }
}

/// What a live report reads from the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Users and deals.
    Deals,
    /// Users, contacts, accounts and deals (never interactions).
    Records,
}

/// Which report, with its parameters.
#[derive(Debug, Clone)]
pub enum ReportRequest {
    Pipeline,
    DataQuality(QualityThresholds),
    NeglectedAccounts { days: u32 },
    Owners(QualityThresholds),
}

pub async fn report(
    projector: &Projector,
    pipeline: &Pipeline,
    request: &ReportRequest,
    as_of: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Value, ProjectionError> {
    let json = |value: Result<Value, serde_json::Error>| value.expect("reports serialise");
    let reads = match request {
        ReportRequest::Pipeline => Reads::Deals,
        _ => Reads::Records,
    };
    at(projector, as_of, now, reads, |model, as_of| match request {
        ReportRequest::Pipeline => json(serde_json::to_value(reports::pipeline(model, pipeline, as_of))),
        ReportRequest::DataQuality(thresholds) => json(serde_json::to_value(reports::data_quality(
            model,
            pipeline,
            as_of,
            *thresholds,
        ))),
        ReportRequest::NeglectedAccounts { days } => {
            json(serde_json::to_value(reports::neglected_accounts(model, as_of, *days)))
        }
        ReportRequest::Owners(thresholds) => json(serde_json::to_value(reports::owners(model, as_of, *thresholds))),
    })
    .await
}

/// Why a record query found nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no {kind} has the id {id}")]
    NotFound { kind: RecordKind, id: Uuid },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        Self::Projection(error.into())
    }
}

async fn stream(
    projector: &Projector,
    kind: RecordKind,
    id: Uuid,
) -> Result<Vec<eventstore::RecordedEvent>, QueryError> {
    let events = projector.store().read_stream(&kind.stream_id(id), 1).await?;
    if events.is_empty() {
        return Err(QueryError::NotFound { kind, id });
    }
    Ok(events)
}

pub async fn history(projector: &Projector, kind: RecordKind, id: Uuid) -> Result<Vec<HistoryEntry>, QueryError> {
    let events = stream(projector, kind, id).await?;
    projector.catch_up().await?;
    let model = projector.record_context(kind, id).await?;
    Ok(projections::history(kind, id, &events, &model)?)
}

pub async fn timeline(projector: &Projector, kind: RecordKind, id: Uuid) -> Result<Vec<TimelineItem>, QueryError> {
    let events = stream(projector, kind, id).await?;
    projector.catch_up().await?;
    let model = projector.record_context(kind, id).await?;
    Ok(projections::timeline(kind, id, &events, &model)?)
}
