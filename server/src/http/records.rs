//! Contacts, accounts and deals; deal stages and closing; interactions.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::RecordKind;
use eventstore::AppendResult;
use projections::CrmModel;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{IdempotencyKey, IfMatch, JsonObject, Params, Path, Reader, Writer};
use crate::app::{Actor, App, AppError, Outcome};

/// Most records one list page returns.
pub const PAGE_SIZE_MAX: usize = 500;
pub const PAGE_SIZE_DEFAULT: usize = 50;

/// `contacts`, `accounts` or `deals`: the record kinds with these routes.
pub fn record_kind(raw: &str) -> Result<RecordKind, ApiError> {
    match raw.parse::<RecordKind>() {
        Ok(kind @ (RecordKind::Contact | RecordKind::Account | RecordKind::Deal)) if raw.ends_with('s') => Ok(kind),
        _ => Err(ApiError::not_found(format!(
            "no such collection /v1/{raw}; use contacts, accounts or deals"
        ))),
    }
}

fn collection(kind: RecordKind) -> String {
    format!("{}s", kind.as_str())
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// A response carrying a record view, its ETag and, for creations, its Location.
fn record_response(status: StatusCode, kind: RecordKind, id: Uuid, view: Value) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(version) = view.get("version").and_then(Value::as_u64) {
        headers.insert(header::ETAG, etag(version));
    }
    if status == StatusCode::CREATED {
        let location = format!("/v1/{}/{id}", collection(kind));
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).expect("ids are valid header text"),
        );
    }
    (status, headers, Json(view)).into_response()
}

/// The live view after a write, once the read model has folded it.
/// How a write answers: its status, and whether it names the likely
/// duplicates it made (`?warn=duplicates`).
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: StatusCode,
    duplicates: bool,
}

impl From<StatusCode> for Reply {
    fn from(status: StatusCode) -> Self {
        Self {
            status,
            duplicates: false,
        }
    }
}

/// A create's or patch's query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteParams {
    /// `duplicates`: the answer names the live records the contact or
    /// account now shares an email, phone, name within an account or domain
    /// with, in `possible_duplicates` (the write goes through either way).
    warn: Option<String>,
}

impl WriteParams {
    fn reply(&self, status: StatusCode) -> Result<Reply, ApiError> {
        Ok(Reply {
            status,
            duplicates: warns_of_duplicates(self.warn.as_deref())?,
        })
    }
}

/// A `warn` parameter (of a write or an import): whether it asks for the
/// likely duplicates; anything but `duplicates` is refused.
pub(super) fn warns_of_duplicates(warn: Option<&str>) -> Result<bool, ApiError> {
    match warn {
        None => Ok(false),
        Some("duplicates") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "warn={other:?}: the only warning there is is warn=duplicates"
        ))),
    }
}

async fn written(state: &AppState, reply: Reply, outcome: Outcome) -> Result<Response, ApiError> {
    let view = match &outcome.appended {
        Some(appended) => {
            state
                .projector
                .view_as_written(outcome.kind, outcome.id, appended.last_position)
                .await?
        }
        None => state.projector.view(outcome.kind, outcome.id).await?,
    };
    let mut view = view.ok_or_else(|| ApiError::internal(&"a written record is missing from the read model"))?;
    // A write that makes a likely duplicate goes through, with a warning:
    // the records it now shares a value with (the duplicates report's rules).
    if reply.duplicates && outcome.appended.is_some() {
        let shared = state
            .projector
            .likely_duplicates(outcome.kind, outcome.id, projections::DUPLICATES_NAMED_MAX)
            .await?;
        if !shared.is_empty()
            && let Some(object) = view.as_object_mut()
        {
            let named: Vec<Value> = shared
                .iter()
                .map(|(id, reason)| json!({"id": id, "reason": reason}))
                .collect();
            object.insert("possible_duplicates".into(), Value::Array(named));
        }
    }
    Ok(record_response(reply.status, outcome.kind, outcome.id, view))
}

/// The response the first request got: the record as it stood right after
/// that append, folded from its own stream. Nothing is appended.
async fn replay(state: &AppState, status: StatusCode, result: &AppendResult) -> Result<Response, ApiError> {
    let (kind, id) = RecordKind::parse_stream_id(&result.stream_id)
        .ok_or_else(|| ApiError::internal(&format!("unexpected stream {}", result.stream_id)))?;
    let stream = state.app.store.read_stream(&result.stream_id, 1).await?;
    let mut model = CrmModel::default();
    for recorded in stream.iter().take_while(|e| e.version <= result.stream_version) {
        model.apply(recorded, &projections::decode(recorded)?);
    }
    let view =
        projections::view_of(&model, kind, id).ok_or_else(|| ApiError::internal(&"a replayed record has no view"))?;
    let mut response = record_response(status, kind, id, view);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// SHA-256 of the route and the body with its keys sorted: the same request
/// sent again has the same fingerprint, whatever its key order or spacing.
fn fingerprint(route: &str, input: &domain::Input) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::to_string(input).expect("a JSON object serialises");
    format!("{:x}", Sha256::digest(format!("{route}\n{body}").as_bytes()))
}

/// Replays the first response, unless the key was first used for another
/// request: then the key is being reused by mistake, and nothing is done.
async fn replay_if_same(
    state: &AppState,
    status: StatusCode,
    first: &AppendResult,
    fingerprint: &str,
) -> Result<Response, ApiError> {
    if first.request_hash.as_deref().is_some_and(|first| first != fingerprint) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was first used for a different request; use a new key for a new request",
        ));
    }
    replay(state, status, first).await
}

/// Runs a write once per Idempotency-Key: a retry gets the first response.
async fn once<F, Fut>(
    state: &AppState,
    writer: &Writer,
    key: &IdempotencyKey,
    route: &str,
    input: &domain::Input,
    reply: Reply,
    write: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(App, Actor) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, AppError>>,
{
    let scoped = key.scoped(writer.principal.user_id, route);
    let fingerprint = fingerprint(route, input);
    if let Some(scoped) = &scoped
        && let Some(first) = state.app.store.find_idempotent(scoped).await?
    {
        return replay_if_same(state, reply.status, &first, &fingerprint).await;
    }
    let mut actor = writer.actor.clone();
    actor.request_hash = scoped.as_ref().map(|_| fingerprint.clone());
    actor.idempotency_key = scoped;
    match write(state.app.clone(), actor).await {
        Ok(outcome) => written(state, reply, outcome).await,
        // Two copies of one request raced: the other stored the key first.
        Err(AppError::Store(eventstore::StoreError::IdempotencyKeyReused { key })) => {
            match state.app.store.find_idempotent(&key).await? {
                Some(first) => replay_if_same(state, reply.status, &first, &fingerprint).await,
                None => Err(eventstore::StoreError::IdempotencyKeyReused { key }.into()),
            }
        }
        Err(error) => Err(error.into()),
    }
}

#[utoipa::path(post, path = "/v1/{kind}", tag = "records",
    params(("kind" = String, Path, description = "contacts, accounts or deals"),
           ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key returns the first response"), WriteParams),
    request_body(content = Object, description = "the record's fields; see the contract for each kind"),
    responses((status = 201, description = "created; Location and ETag set", body = Object),
              (status = 400, body = super::error::Problem), (status = 401, body = super::error::Problem),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem),
              (status = 413, body = super::error::Problem), (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    writer: Writer,
    key: IdempotencyKey,
    Params(params): Params<WriteParams>,
    JsonObject(input): JsonObject,
) -> Result<Response, ApiError> {
    let kind = record_kind(&kind)?;
    let route = format!("create {kind}");
    let input = &input;
    once(
        &state,
        &writer,
        &key,
        &route,
        input,
        params.reply(StatusCode::CREATED)?,
        |app, actor| async move { app.create(kind, input, &actor, Utc::now()).await },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Case-insensitive text in the name, title or email.
    pub q: Option<String>,
    pub owner_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    /// Deals only: the pipeline stage.
    pub stage: Option<String>,
    /// Page size, at most 500 (default 50).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/{kind}", tag = "records",
    params(("kind" = String, Path, description = "contacts, accounts or deals"), ListQuery),
    responses((status = 200, description = "{\"items\": [...], \"next_cursor\": id|null}, oldest first; archived records left out", body = Object),
              (status = 401, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    _reader: Reader,
    Params(query): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = record_kind(&kind)?;
    let filter = projections::ListFilter {
        after: query.cursor,
        owner_id: query.owner_id,
        account_id: query.account_id,
        stage: query.stage.clone(),
        text: query.q.clone().filter(|q| !q.is_empty()),
        limit: query.limit.unwrap_or(PAGE_SIZE_DEFAULT).clamp(1, PAGE_SIZE_MAX),
    };
    let (items, next_cursor) = state.projector.list(kind, &filter).await?;
    let page = json!({ "items": items, "next_cursor": next_cursor });
    Ok(Json(page))
}

#[utoipa::path(get, path = "/v1/{kind}/{id}", tag = "records",
    params(("kind" = String, Path, description = "contacts, accounts or deals"), ("id" = Uuid, Path)),
    responses((status = 200, description = "the record's view; ETag is its version", body = Object),
              (status = 401, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, Uuid)>,
    _reader: Reader,
) -> Result<Response, ApiError> {
    let kind = record_kind(&kind)?;
    let view = state.projector.view(kind, id).await?;
    let view = view.ok_or_else(|| ApiError::not_found(format!("no {kind} has the id {id}")))?;
    Ok(record_response(StatusCode::OK, kind, id, view))
}

#[utoipa::path(patch, path = "/v1/{kind}/{id}", tag = "records",
    params(("kind" = String, Path, description = "contacts, accounts or deals"), ("id" = Uuid, Path),
           ("If-Match" = Option<String>, Header, description = "the ETag last seen; a stale one is refused with 412"), WriteParams),
    request_body(content = Object, description = "the fields to change; null clears a field; nothing changed appends nothing"),
    responses((status = 200, description = "the record after the change", body = Object),
              (status = 400, body = super::error::Problem), (status = 404, body = super::error::Problem),
              (status = 409, body = super::error::Problem), (status = 412, body = super::error::Problem),
              (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, Uuid)>,
    writer: Writer,
    IfMatch(expected): IfMatch,
    key: IdempotencyKey,
    Params(params): Params<WriteParams>,
    JsonObject(input): JsonObject,
) -> Result<Response, ApiError> {
    let kind = record_kind(&kind)?;
    let route = format!("update {kind} {id}");
    let input = &input;
    once(
        &state,
        &writer,
        &key,
        &route,
        input,
        params.reply(StatusCode::OK)?,
        |app, actor| async move { app.update(kind, id, input, expected, &actor, Utc::now()).await },
    )
    .await
}

#[utoipa::path(delete, path = "/v1/{kind}/{id}", tag = "records",
    params(("kind" = String, Path, description = "contacts, accounts or deals"), ("id" = Uuid, Path),
           ("If-Match" = Option<String>, Header, description = "the ETag last seen")),
    responses((status = 204, description = "archived: gone from lists and reports, not from history"),
              (status = 404, body = super::error::Problem), (status = 412, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn archive(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, Uuid)>,
    writer: Writer,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode, ApiError> {
    let kind = record_kind(&kind)?;
    let outcome = state.app.archive(kind, id, expected, &writer.actor, Utc::now()).await?;
    if let Some(appended) = outcome.appended {
        state.projector.wait_until(appended.last_position).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn text_field<'a>(input: &'a domain::Input, field: &str, required: bool) -> Result<Option<&'a str>, ApiError> {
    match input.get(field) {
        Some(Value::String(value)) => Ok(Some(value)),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::validation(vec![domain::FieldError::new(
            field,
            "is required",
        )])),
        Some(_) => Err(ApiError::validation(vec![domain::FieldError::new(
            field,
            "must be a string",
        )])),
    }
}

#[utoipa::path(post, path = "/v1/deals/{id}/stage", tag = "records",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "{\"stage\": \"proposal\"}"),
    responses((status = 200, description = "the deal after the move", body = Object),
              (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem, description = "the deal is closed"),
              (status = 412, body = super::error::Problem), (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn move_stage(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    writer: Writer,
    IfMatch(expected): IfMatch,
    key: IdempotencyKey,
    JsonObject(input): JsonObject,
) -> Result<Response, ApiError> {
    let stage = text_field(&input, "stage", true)?.unwrap_or_default().to_owned();
    let route = format!("stage deal {id}");
    once(
        &state,
        &writer,
        &key,
        &route,
        &input,
        StatusCode::OK.into(),
        |app, actor| async move { app.move_deal(id, &stage, expected, &actor, Utc::now()).await },
    )
    .await
}

#[utoipa::path(post, path = "/v1/deals/{id}/close", tag = "records",
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "{\"outcome\": \"won\"|\"lost\", \"reason\": \"...\"}"),
    responses((status = 200, description = "the closed deal", body = Object),
              (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem, description = "already closed"),
              (status = 412, body = super::error::Problem), (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn close(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    writer: Writer,
    IfMatch(expected): IfMatch,
    key: IdempotencyKey,
    JsonObject(input): JsonObject,
) -> Result<Response, ApiError> {
    let outcome = text_field(&input, "outcome", true)?.unwrap_or_default().to_owned();
    let reason = text_field(&input, "reason", false)?.map(str::to_owned);
    let route = format!("close deal {id}");
    once(
        &state,
        &writer,
        &key,
        &route,
        &input,
        StatusCode::OK.into(),
        |app, actor| async move {
            app.close_deal(id, &outcome, reason.as_deref(), expected, &actor, Utc::now())
                .await
        },
    )
    .await
}

/// Reads `occurred_at` (RFC 3339) from an interaction's input; default now.
pub fn occurred_at(input: &domain::Input, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    match input.get("occurred_at") {
        None | Some(Value::Null) => Ok(now),
        Some(Value::String(raw)) => DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::validation(vec![domain::FieldError::new(
                    "occurred_at",
                    "must be an RFC 3339 time, such as 2025-06-01T10:00:00Z",
                )])
            }),
        Some(_) => Err(ApiError::validation(vec![domain::FieldError::new(
            "occurred_at",
            "must be a string",
        )])),
    }
}

#[utoipa::path(post, path = "/v1/interactions", tag = "records",
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "{\"kind\": \"call|email|meeting|note\", \"contact_id\"?, \"account_id\"?, \"deal_id\"?, \"summary\", \"direction\"?, \"occurred_at\"?}"),
    responses((status = 201, description = "logged", body = Object), (status = 400, body = super::error::Problem),
              (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn log_interaction(
    State(state): State<AppState>,
    writer: Writer,
    key: IdempotencyKey,
    JsonObject(input): JsonObject,
) -> Result<Response, ApiError> {
    let at = occurred_at(&input, Utc::now())?;
    let input = &input;
    once(
        &state,
        &writer,
        &key,
        "log interaction",
        input,
        StatusCode::CREATED.into(),
        |app, actor| async move { app.log_interaction(input, &actor, at).await },
    )
    .await
}

#[utoipa::path(get, path = "/v1/interactions/{id}", tag = "records",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn get_interaction(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    _reader: Reader,
) -> Result<Json<Value>, ApiError> {
    let view = state.projector.view(RecordKind::Interaction, id).await?;
    view.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no interaction has the id {id}")))
}
