//! Webhook subscriptions (admin): make, list, read, delete and resume
//! them, and read each one's delivery log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, JsonObject, Params, Path};
use crate::webhooks::{Delivery, Dispatcher, Subscription, WebhookError};

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

/// A subscription just made: the one answer that shows its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedSubscription {
    #[serde(flatten)]
    subscription: Subscription,
    /// The HMAC key of `Crm-Signature`, shown this once.
    secret: String,
}

/// Every subscription, oldest first (secrets are not shown).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionList {
    items: Vec<Subscription>,
}

/// A page of a subscription's delivery log, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    items: Vec<Delivery>,
    /// The `before` of the next page; none after the last.
    next_before: Option<u64>,
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body(content = Object, description = "{\"url\": \"https://...\" (a public address, or one the server allows with --webhook-allow-networks), \"event_types\"?: [\"ContactCreated\", ...] (default every type), \"kinds\"?: [\"contact\", \"account\", \"deal\", \"interaction\", \"user\"] (default every kind), \"secret\"?: at least 16 characters (default: one is made), \"description\"?, \"after\"?: a log position to start after (default: the head, so only new events)}"),
    responses((status = 201, description = "the subscription, with its `secret` (shown this once)", body = CreatedSubscription),
              (status = 403, body = super::error::Problem), (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    JsonObject(input): JsonObject,
) -> Result<(StatusCode, Json<CreatedSubscription>), ApiError> {
    let dispatcher = dispatcher(&state)?;
    let head = state.app.store.head().await?;
    let new = crate::webhooks::NewSubscription::parse(&input, head, &admin.actor.id, dispatcher.reach())
        .map_err(ApiError::validation)?;
    let subscription = dispatcher.table().create(&new, Utc::now()).await?;
    dispatcher.wake();
    let body = CreatedSubscription {
        subscription,
        secret: new.secret,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "every subscription, oldest first (secrets are not shown)", body = SubscriptionList),
              (status = 403, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<SubscriptionList>, ApiError> {
    let items = dispatcher(&state)?.table().list().await?;
    Ok(Json(SubscriptionList { items }))
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
    responses((status = 200, description = "the subscription, its position and state", body = Subscription),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(found(&state, &id).await?))
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
    responses((status = 200, description = "the subscription, active again at the position it kept and due at once", body = Subscription),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let dispatcher = dispatcher(&state)?;
    if !dispatcher.table().resume(&id, Utc::now()).await? {
        return Err(ApiError::not_found(format!("no webhook {id}")));
    }
    dispatcher.wake();
    Ok(Json(found(&state, &id).await?))
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
    responses((status = 200, description = "the newest attempts first (the last 1,000 are kept)", body = DeliveryPage),
              (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Params(query): Params<DeliveriesQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    found(&state, &id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, DELIVERIES_PAGE_MAX);
    let items = dispatcher(&state)?.table().deliveries(&id, query.before, limit).await?;
    let next_before = (items.len() == limit).then(|| items.last().map(|d| d.seq)).flatten();
    Ok(Json(DeliveryPage { items, next_before }))
}
