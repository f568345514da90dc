//! CSV import (streamed) and export.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use domain::RecordKind;
use futures_util::TryStreamExt;
use serde_json::Value;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, Path};
use crate::csv_io;

fn importable(raw: &str) -> Result<RecordKind, ApiError> {
    match raw.parse::<RecordKind>() {
        Ok(kind) if kind != RecordKind::User && raw.ends_with('s') => Ok(kind),
        _ => Err(ApiError::not_found(format!(
            "cannot import or export {raw:?}; use contacts, accounts, deals or interactions"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/import/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "contacts, accounts, deals or interactions")),
    request_body(content = String, content_type = "text/csv", description = "a header row naming the fields, then one record per row"),
    responses((status = 200, description = "{\"created\", \"updated\", \"unchanged\", \"errors\": [{\"line\", \"message\"}]}", body = Object),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    admin: Admin,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let kind = importable(&kind)?;
    let (rows, received) = csv_io::row_channel();
    let bytes = body.into_data_stream().map_err(std::io::Error::other);
    let reader = SyncIoBridge::new(StreamReader::new(bytes));
    let parser = tokio::task::spawn_blocking(move || csv_io::parse_rows(reader, &rows));
    let report = csv_io::import(&state.app, &state.projector, kind, received, &admin.actor, |_| {}).await?;
    parser.await.map_err(|e| ApiError::internal(&e))?;
    Ok(Json(serde_json::to_value(report).expect("reports serialise")))
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
    let chunks = csv_io::export(std::sync::Arc::clone(&state.projector), kind).map_ok(axum::body::Bytes::from);
    let mut response = Body::from_stream(chunks).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(response)
}
