//! Request extractors. Authentication and the role a route needs are part of
//! each handler's signature (`Reader`, `Writer`, `Admin`), so no route can
//! forget them.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use domain::{Input, Role};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::app::Actor;
use crate::auth::{Principal, authenticate};

/// Longest Idempotency-Key accepted, in bytes.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 100;

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    authenticate(&state.app, token.trim())
        .await?
        .ok_or_else(ApiError::unauthorized)
}

fn actor(parts: &Parts, principal: &Principal) -> Actor {
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok());
    Actor {
        id: principal.user_id.to_string(),
        correlation_id: request_id,
        idempotency_key: None,
        request_hash: None,
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $allowed:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pub principal: Principal,
            pub actor: Actor,
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                let principal = principal(parts, state).await?;
                let allowed: fn(Role) -> bool = $allowed;
                if !allowed(principal.role) {
                    return Err(ApiError::forbidden(format!("{} requires {}; you are {:?}", parts.uri.path(), $what, principal.role)));
                }
                let actor = actor(parts, &principal);
                Ok(Self { principal, actor })
            }
        }
    };
}

role_extractor!(
    /// Any authenticated user: admin, member or viewer.
    Reader, |_| true, "any role"
);
role_extractor!(
    /// A user who may change records: admin or member.
    Writer, Role::can_write, "the member or admin role"
);
role_extractor!(
    /// An administrator.
    Admin, Role::is_admin, "the admin role"
);

/// A JSON object body. Malformed JSON is 400; a body over the limit is 413.
#[derive(Debug)]
pub struct JsonObject(pub Input);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(body_rejection)?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(input)) => Ok(Self(input)),
            Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
            Err(error) => Err(ApiError::bad_request(format!("the body is not valid JSON: {error}"))),
        }
    }
}

pub fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the request body is over the limit",
        );
    }
    ApiError::bad_request(rejection.body_text())
}

/// `If-Match: "<version>"`: the version the caller last saw. `*` or absent:
/// any version.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let raw = value
            .to_str()
            .map_err(|_| ApiError::bad_request("If-Match is not text"))?
            .trim();
        if raw == "*" {
            return Ok(Self(None));
        }
        let version = raw.trim_start_matches("W/").trim_matches('"');
        version
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| ApiError::bad_request(format!("If-Match {raw:?} is not an ETag of this API, such as \"3\"")))
    }
}

/// `Idempotency-Key`: a retry with the same key returns the first response
/// and appends nothing.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Idempotency-Key is not text"))?
            .trim();
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_CHARS_MAX {
            return Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} bytes"
            )));
        }
        Ok(Self(Some(key.to_owned())))
    }
}

impl IdempotencyKey {
    /// The key as stored: scoped to the user and the route, so two users (or
    /// two routes) can never collide.
    pub fn scoped(&self, user_id: Uuid, route: &str) -> Option<String> {
        self.0.as_ref().map(|key| format!("{user_id} {route} {key}"))
    }
}

/// Query parameters, refused as problem+json (400) naming the parameter when
/// they do not parse. Every query type denies unknown parameters, so a
/// misspelt filter is an error rather than a silently wider answer.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// The path's parameters (axum's `Path`): a segment that does not parse
/// (`/v1/contacts/not-an-id`) names nothing here, so it is a 404 problem
/// rather than axum's plain-text 400.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| ApiError::not_found(format!("no such resource: {}", rejection.body_text())))
    }
}
