//! Personal data (GDPR): erasing a contact's, and everything held about one.

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
    let (Some(reason), true) = (reason, unknown.is_empty()) else {
        return Err(ApiError::validation(unknown));
    };
    let outcome = state.app.erase_contact(id, reason, &admin.actor, Utc::now()).await?;
    if let Some(appended) = outcome.appended {
        state.projector.wait_until(appended.last_position).await?;
    }
    let view = state.projector.view(RecordKind::Contact, id).await?;
    view.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no contact has the id {id}")))
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
