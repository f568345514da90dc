//! Personal data (GDPR): erasing a contact's or a user's, and everything
//! held about one.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use domain::RecordKind;
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, JsonObject, Path};
use crate::queries;

#[utoipa::path(post, path = "/v1/contacts/{id}/erase", tag = "personal data",
    params(("id" = Uuid, Path)),
    request_body(content = Object, description = "{\"reason\": \"why (must not name the person)\"}"),
    responses((status = 200, description = "the contact as it stands erased: personal fields gone, `erased` saying who, when and why; erasing again changes nothing", body = Object),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem),
              (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    admin: Admin,
    JsonObject(input): JsonObject,
) -> Result<Json<Value>, ApiError> {
    erase_subject(&state, RecordKind::Contact, id, &admin, &input).await?;
    let view = state.projector.view(RecordKind::Contact, id).await?;
    view.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no contact has the id {id}")))
}

#[utoipa::path(post, path = "/v1/users/{id}/erase", tag = "personal data",
    params(("id" = Uuid, Path)),
    request_body(content = Object, description = "{\"reason\": \"why (must not name the person)\"}"),
    responses((status = 200, description = "the user as `/v1/users` lists it, erased: name and email gone, `erased` saying who, when and why; the user's tokens are revoked; erasing again changes nothing", body = Object),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem),
              (status = 409, description = "an admin cannot erase themselves", body = super::error::Problem),
              (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
/// A user's department and role stay, so what they did still counts for
/// their department in every report.
pub async fn erase_user(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    admin: Admin,
    JsonObject(input): JsonObject,
) -> Result<Json<Value>, ApiError> {
    erase_subject(&state, RecordKind::User, id, &admin, &input).await?;
    let users = state.projector.users().await?;
    users
        .users
        .get(&id)
        .map(|user| Json(crate::wire::user_json(user)))
        .ok_or_else(|| ApiError::not_found(format!("no user has the id {id}")))
}

/// Erases the contact's or user's personal data, for the reason `input`
/// gives, and waits until the read models show it.
async fn erase_subject(
    state: &AppState,
    kind: RecordKind,
    id: Uuid,
    admin: &Admin,
    input: &serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    let outcome = state
        .app
        .erase(kind, id, reason(input)?, &admin.actor, Utc::now())
        .await?;
    if let Some(appended) = outcome.appended {
        state.projector.wait_until(appended.last_position).await?;
    }
    Ok(())
}

/// An erasure's one parameter: why.
fn reason(input: &serde_json::Map<String, Value>) -> Result<&str, ApiError> {
    let mut unknown: Vec<domain::FieldError> = input
        .keys()
        .filter(|key| *key != "reason")
        .map(|key| domain::FieldError::new(key, "is not a parameter of an erasure"))
        .collect();
    let reason = match input.get("reason") {
        Some(Value::String(reason)) => Some(reason.as_str()),
        Some(_) => {
            unknown.push(domain::FieldError::new("reason", "must be a string"));
            None
        }
        None => {
            unknown.push(domain::FieldError::new("reason", "is required: say why"));
            None
        }
    };
    match (reason, unknown.is_empty()) {
        (Some(reason), true) => Ok(reason),
        _ => Err(ApiError::validation(unknown)),
    }
}

#[utoipa::path(get, path = "/v1/contacts/{id}/personal-data", tag = "personal data",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "{subject, generated_at, erased, record, history, timeline}: everything held about the person, with who changed what", body = Object),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
/// Admins only: the document gathers a person's data in one place, for
/// whoever answers the person's request.
pub async fn personal_data(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(queries::personal_data(&state.projector, id, Utc::now()).await?))
}

#[utoipa::path(get, path = "/v1/users/{id}/personal-data", tag = "personal data",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "{subject, generated_at, erased, record, activity: {items, next_cursor}}: the user as `/v1/users` lists it, and the first page of what the user did (as `/v1/audit?actor_id=` pages it on)", body = Object),
              (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = [])))]
/// Admins only, as a contact's: a person who works with the system may ask
/// too.
pub async fn user_personal_data(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        queries::user_personal_data(&state.projector, id, Utc::now()).await?,
    ))
}
