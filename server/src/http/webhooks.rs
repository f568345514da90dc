//! Webhook subscriptions (admin): make, list, read, delete and resume
//! them, and read each one's delivery log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, JsonObject, Params, Path};
use crate::webhooks::{Dispatcher, Subscription, WebhookError};

/// Most delivery-log lines one page returns.
const DELIVERIES_PAGE_MAX: usize = 500;

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        if error.is_unavailable() {
            Self::unavailable(&error)
        } else {
            Self::internal(&error)
        }
    }
}

fn dispatcher(state: &AppState) -> Result<&Dispatcher, ApiError> {
    state.webhooks.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks-off",
            "this server does not deliver webhooks",
        )
    })
}

fn view(subscription: &Subscription) -> Value {
    serde_json::to_value(subscription).unwrap_or(Value::Null)
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body(content = Object, description = "{\"url\": \"https://...\", \"event_types\"?: [\"ContactCreated\", ...] (default every type), \"kinds\"?: [\"contact\", \"account\", \"deal\", \"interaction\", \"user\"] (default every kind), \"secret\"?: at least 16 characters (default: one is made), \"description\"?, \"after\"?: a log position to start after (default: the head, so only new events)}"),
    responses((status = 201, description = "the subscription, with its `secret` (shown this once)", body = Object),
              (status = 403, body = super::error::Problem), (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    JsonObject(input): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let dispatcher = dispatcher(&state)?;
    let head = state.app.store.head().await?;
    let new = crate::webhooks::NewSubscription::parse(&input, head, &admin.actor.id).map_err(ApiError::validation)?;
    let subscription = dispatcher.table().create(&new, Utc::now()).await?;
    dispatcher.wake();
    let mut body = view(&subscription);
    body["secret"] = Value::String(new.secret);
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "{\"items\": [subscription]}: every subscription, oldest first (secrets are not shown)", body = Object),
              (status = 403, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = dispatcher(&state)?.table().list().await?.iter().map(view).collect();
    Ok(Json(json!({ "items": items })))
}

async fn found(state: &AppState, id: &str) -> Result<Subscription, ApiError> {
    dispatcher(state)?
        .table()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook {id}")))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the subscription's id")),
    responses((status = 200, description = "{id, url, description, event_types, kinds, created_at, created_by, position, state: active|disabled, attempts, next_attempt_at, last_error, last_success_at, disabled_at}", body = Object),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&found(&state, &id).await?)))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the subscription's id")),
    responses((status = 204, description = "deleted, with its delivery log"), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if dispatcher(&state)?.table().delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no webhook {id}")))
    }
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/resume", tag = "webhooks",
    params(("id" = String, Path, description = "the subscription's id")),
    responses((status = 200, description = "the subscription, active again at the position it kept and due at once", body = Object),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let dispatcher = dispatcher(&state)?;
    if !dispatcher.table().resume(&id, Utc::now()).await? {
        return Err(ApiError::not_found(format!("no webhook {id}")));
    }
    dispatcher.wake();
    Ok(Json(view(&found(&state, &id).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Attempts before this `seq` (the `next_before` of the previous page).
    pub before: Option<u64>,
    /// At most this many (default 100, at most 500).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "the subscription's id"), DeliveriesQuery),
    responses((status = 200, description = "{\"items\": [{seq, position (the delivery id), event_type, attempt, attempted_at, status, error, millis, ok}], \"next_before\"}: the newest attempts first (the last 1,000 are kept)", body = Object),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Params(query): Params<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    found(&state, &id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, DELIVERIES_PAGE_MAX);
    let items = dispatcher(&state)?.table().deliveries(&id, query.before, limit).await?;
    let next_before = (items.len() == limit).then(|| items.last().map(|d| d.seq)).flatten();
    Ok(Json(json!({ "items": items, "next_before": next_before })))
}
