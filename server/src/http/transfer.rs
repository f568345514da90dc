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
use serde_json::Value;
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
}

#[utoipa::path(post, path = "/v1/import/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "contacts, accounts, deals or interactions"), ImportParams),
    request_body(content = String, content_type = "text/csv", description = "a header row naming the columns, then one record per row"),
    responses((status = 200, description = "{\"rows\", \"created\", \"updated\", \"unchanged\", \"failed\", \"errors\": [{\"line\", \"message\"}], \"ignored_columns\"}", body = Object),
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
) -> Result<Json<Value>, ApiError> {
    let kind = importable(&kind)?;
    let mapping = match &params.map {
        Some(text) => csv_io::Mapping::parse(text).map_err(|e| ApiError::bad_request(format!("map: {e}")))?,
        None => csv_io::Mapping::default(),
    };
    let limits = state.imports;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.bytes_max) {
        return Err(too_large(limits, &csv_io::ImportReport::default(), "bytes"));
    }
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
    let request = csv_io::ImportRequest {
        kind,
        mapping: &mapping,
        limits,
        actor: &admin.actor,
    };
    let imported = csv_io::import(&state.app, &state.projector, request, received, |_| {}).await;
    parser.await.map_err(|e| ApiError::internal(&e))?;
    match imported {
        Ok(report) => Ok(Json(serde_json::to_value(report).expect("reports serialise"))),
        Err(csv_io::ImportError::Header(problem)) => {
            Err(
                ApiError::new(StatusCode::BAD_REQUEST, "unreadable-import", problem.message)
                    .with("understood_columns", problem.understood)
                    .with("not_understood_columns", problem.not_understood),
            )
        }
        Err(csv_io::ImportError::TooManyRows { report, .. }) => Err(too_large(limits, &report, "rows")),
        Err(csv_io::ImportError::Broken { report, .. }) if over.load(Ordering::Relaxed) => {
            Err(too_large(limits, &report, "bytes"))
        }
        Err(error @ csv_io::ImportError::Broken { .. }) => {
            let csv_io::ImportError::Broken { report, .. } = &error else {
                unreachable!("matched above")
            };
            let report = report.clone();
            Err(ApiError::bad_request(error.to_string()).with("imported", report))
        }
        Err(csv_io::ImportError::Failed(error)) => Err(error.into()),
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
