//! CSV import (streamed) and export.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::RecordKind;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, Params, Path};
use crate::csv_io;

fn importable(raw: &str) -> Result<RecordKind, ApiError> {
    match raw.parse::<RecordKind>() {
        Ok(kind) if kind != RecordKind::User && raw.ends_with('s') => Ok(kind),
        _ => Err(ApiError::not_found(format!(
            "cannot import or export {raw:?}; use contacts, accounts, deals or interactions"
        ))),
    }
}

/// `POST /v1/import/{kind}`'s parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// A column mapping: `First Name+Last Name=name,Email=email,Company Name=account`
    /// (entries by comma or new line, as in a mapping file).
    map: Option<String>,
    /// `duplicates`: the report names the rows whose new contact or account
    /// shares an email, phone, name within an account or domain with a live
    /// record, in `possible_duplicates` (imported either way).
    warn: Option<String>,
}

/// How often a streamed import reports its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a streamed import's progress lines count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
struct Progress {
    rows: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
}

impl From<&csv_io::ImportReport> for Progress {
    fn from(report: &csv_io::ImportReport) -> Self {
        Self {
            rows: report.rows,
            created: report.created,
            updated: report.updated,
            unchanged: report.unchanged,
            failed: report.failed,
        }
    }
}

/// Aborts the import's task when the answer is dropped (the client hung
/// up): the rows not yet written are never written.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[utoipa::path(post, path = "/v1/import/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "contacts, accounts, deals or interactions"), ImportParams),
    request_body(content = String, content_type = "text/csv", description = "a header row naming the columns, then one record per row"),
    responses((status = 200, description = "{\"rows\", \"created\", \"updated\", \"unchanged\", \"failed\", \"errors\": [{\"line\", \"message\"}], \"ignored_columns\"} (with `warn=duplicates`, also \"possible_duplicates\": [{\"line\", \"id\", \"records\": [{\"id\", \"reason\"}]}]). With `Accept: application/x-ndjson`, one JSON line a second as it goes, `{\"progress\": {rows, created, updated, unchanged, failed}}`, then `{\"report\": ...}` or `{\"problem\": ...}` (what the status would have said)", body = csv_io::ImportReport),
              (status = 400, description = "a header (or mapping) that explains no column, or a column it does not know: `understood_columns`, `not_understood_columns`; nothing was imported", body = super::error::Problem),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem),
              (status = 413, description = "more bytes or rows than the server's caps: `imported` reports the rows before the cap, which stay imported", body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    Params(params): Params<ImportParams>,
    admin: Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = importable(&kind)?;
    let mapping = match &params.map {
        Some(text) => csv_io::Mapping::parse(text).map_err(|e| ApiError::bad_request(format!("map: {e}")))?,
        None => csv_io::Mapping::default(),
    };
    let warn_duplicates = super::records::warns_of_duplicates(params.warn.as_deref())?;
    let limits = state.imports;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.bytes_max) {
        return Err(too_large(limits, &csv_io::ImportReport::default(), "bytes"));
    }
    let streamed = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/x-ndjson"));
    // A body that grows past the cap (sent without a length) ends the read
    // there: the rows before it stay imported.
    let over = Arc::new(AtomicBool::new(false));
    let mut seen = 0u64;
    let flag = Arc::clone(&over);
    let bytes = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limits.bytes_max {
            flag.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("the body is larger than the import byte cap"));
        }
        Ok(chunk)
    });
    let (rows, received) = csv_io::row_channel();
    let reader = SyncIoBridge::new(StreamReader::new(bytes));
    let parser = tokio::task::spawn_blocking(move || csv_io::parse_rows(reader, &rows));
    let (progress, mut watched) = tokio::sync::watch::channel(None::<Progress>);
    let task = AbortOnDrop(tokio::spawn(async move {
        let request = csv_io::ImportRequest {
            kind,
            mapping: &mapping,
            limits,
            actor: &admin.actor,
            warn_duplicates,
        };
        let imported = csv_io::import(&state.app, &state.projector, request, received, |report| {
            progress.send_replace(Some(Progress::from(report)));
        })
        .await;
        let _ = parser.await;
        imported.map_err(|error| import_problem(error, limits, over.load(Ordering::Relaxed)))
    }));
    if !streamed {
        let report = join(task).await?;
        return Ok(Json(serde_json::to_value(report).expect("reports serialise")).into_response());
    }
    // A header refused is a status of its own, not a line of a 200: the
    // stream starts once the header is accepted. The watch closes without
    // that only when the import ended first (its sender is the task's).
    if watched.wait_for(Option::is_some).await.is_err() {
        let report = join(task).await?;
        return Ok(ndjson(futures_util::stream::once(async move {
            line(&json!({"report": report}))
        })));
    }
    let lines = futures_util::stream::unfold(Some(task), move |task| {
        let mut watched = watched.clone();
        async move {
            let mut task = task?;
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            tokio::select! {
                finished = &mut task.0 => {
                    let last = match finished {
                        Ok(Ok(report)) => json!({"report": report}),
                        Ok(Err(problem)) => json!({"problem": problem.into_problem()}),
                        Err(error) => json!({"problem": ApiError::internal(&error).into_problem()}),
                    };
                    Some((line(&last), None))
                }
                _ = tick.tick() => {
                    let progress = *watched.borrow_and_update();
                    Some((line(&json!({"progress": progress})), Some(task)))
                }
            }
        }
    });
    Ok(ndjson(lines))
}

/// The import's outcome once its task ends.
async fn join(mut task: AbortOnDrop<Result<csv_io::ImportReport, ApiError>>) -> Result<csv_io::ImportReport, ApiError> {
    (&mut task.0).await.map_err(|e| ApiError::internal(&e))?
}

fn line(value: &Value) -> Result<axum::body::Bytes, std::io::Error> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(axum::body::Bytes::from(text))
}

fn ndjson(
    lines: impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut response = Body::from_stream(lines).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

/// The problem an import that stopped as a whole answers.
fn import_problem(error: csv_io::ImportError, limits: csv_io::Limits, over_bytes: bool) -> ApiError {
    match error {
        csv_io::ImportError::Header(problem) => {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable-import", problem.message)
                .with("understood_columns", problem.understood)
                .with("not_understood_columns", problem.not_understood)
        }
        csv_io::ImportError::TooManyRows { report, .. } => too_large(limits, &report, "rows"),
        csv_io::ImportError::Broken { report, .. } if over_bytes => too_large(limits, &report, "bytes"),
        csv_io::ImportError::Broken { message, report } => ApiError::bad_request(format!(
            "reading the file stopped after {} rows: {message}",
            report.rows
        ))
        .with("imported", report),
        csv_io::ImportError::Failed(error) => error.into(),
    }
}

/// The 413 of an import past a cap, with what it imported before.
fn too_large(limits: csv_io::Limits, report: &csv_io::ImportReport, cap: &str) -> ApiError {
    let detail = match cap {
        "rows" => format!(
            "an import takes at most {} rows; the first {} were imported: split the file and send the rest",
            limits.rows_max, report.rows
        ),
        _ => format!(
            "an import takes at most {} bytes; {} rows were imported before the cap: split the file and send the rest",
            limits.bytes_max, report.rows
        ),
    };
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "import-too-large", detail)
        .with("rows_max", limits.rows_max)
        .with("bytes_max", limits.bytes_max)
        .with("imported", report)
}

#[utoipa::path(get, path = "/v1/export/{file}", tag = "admin",
    params(("file" = String, Path, description = "contacts.csv, accounts.csv, deals.csv or interactions.csv")),
    responses((status = 200, description = "the current records as CSV, importable again", content_type = "text/csv", body = String),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    Path(file): Path<String>,
    _admin: Admin,
) -> Result<Response, ApiError> {
    let kind = file
        .strip_suffix(".csv")
        .ok_or_else(|| ApiError::not_found("export names a .csv file, such as contacts.csv"))?;
    let kind = importable(kind)?;
    // A database that cannot answer is a 503 now, not a cut-off CSV later.
    state.projector.page(kind, None, 1).await?;
    let chunks = csv_io::export(Arc::clone(&state.projector), kind).map_ok(axum::body::Bytes::from);
    let mut response = Body::from_stream(chunks).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(response)
}
