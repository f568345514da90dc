//! Users and tokens, rebuild and verify.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, JsonObject, Reader};

fn required_text<'a>(input: &'a domain::Input, field: &str) -> &'a str {
    input.get(field).and_then(Value::as_str).unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/users", tag = "admin",
    request_body(content = Object, description = "{\"name\", \"department\", \"role\": \"admin|member|viewer\"}"),
    responses((status = 201, description = "the user and its token, shown this once", body = Object),
              (status = 403, body = super::error::Problem), (status = 422, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    admin: Admin,
    JsonObject(input): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Some(unknown) = input
        .keys()
        .find(|k| !["name", "department", "role", "email"].contains(&k.as_str()))
    {
        return Err(ApiError::validation(vec![domain::FieldError::new(
            unknown,
            "is not a field of a user",
        )]));
    }
    let (name, department, role) = (
        required_text(&input, "name"),
        required_text(&input, "department"),
        required_text(&input, "role"),
    );
    let email = match input.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(email)) => Some(email.as_str()),
        Some(_) => {
            return Err(ApiError::validation(vec![domain::FieldError::new(
                "email",
                "must be a string",
            )]));
        }
    };
    let outcome = state
        .app
        .register_user(name, department, role, email, &admin.actor, Utc::now())
        .await?;
    let token = crate::auth::issue(&state.app.store, outcome.id).await?;
    if let Some(appended) = outcome.appended {
        state.projector.wait_until(appended.last_position).await?;
    }
    let body = json!({"id": outcome.id, "name": name.trim(), "department": department.trim(), "role": role.trim(), "email": email.map(str::trim), "token": token.token});
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/users", tag = "admin",
    responses((status = 200, description = "{\"items\": [{id, name, department, role, email, last_activity_at, erased?}]}", body = Object)),
    security(("bearer" = [])))]
pub async fn list_users(State(state): State<AppState>, _reader: Reader) -> Result<Json<Value>, ApiError> {
    let model = state.projector.users().await?;
    let users: Vec<Value> = model.users.values().map(crate::wire::user_json).collect();
    Ok(Json(json!({ "items": users })))
}

#[utoipa::path(post, path = "/v1/admin/rebuild", tag = "admin",
    responses((status = 200, description = "{\"events\": n, \"millis\": t}; reads keep being served meanwhile", body = Object),
              (status = 403, body = super::error::Problem),
              (status = 409, description = "another rebuild of this database is running", body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn rebuild(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let report = state.projector.rebuild().await?;
    Ok(Json(json!({ "events": report.events, "millis": report.millis })))
}

#[utoipa::path(get, path = "/v1/admin/verify", tag = "admin",
    responses((status = 200, description = "{\"ok\": bool, \"events\": n, \"first_bad_position\": p|null, \"head_hash\"}", body = Object),
              (status = 403, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn verify(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let report = state.app.store.verify().await?;
    Ok(Json(
        json!({"ok": report.ok, "events": report.events, "first_bad_position": report.first_bad_position, "head_hash": report.head_hash}),
    ))
}
