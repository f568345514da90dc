//! Every error the API returns, as `application/problem+json` (RFC 9457):
//! `type`, `title`, `status`, `detail`, and `errors` per field where it helps.
//! Business rejections, concurrency conflicts and infrastructure failures are
//! kept apart; internal detail is logged once and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{DomainError, FieldError};
use eventstore::StoreError;
use projections::ProjectionError;
use serde::Serialize;

use crate::app::AppError;
use crate::queries::QueryError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; stable, for programs to branch on.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Per-field details for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    /// Members beyond the standard ones (RFC 9457 section 3.2), such as an
    /// import's columns: added to the problem object as they are.
    extensions: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
        }
    }

    /// The problem with an extension member `name`.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        self.extensions
            .insert(name.to_owned(), serde_json::to_value(value).unwrap_or_default());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed-request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required: Authorization: Bearer <token>",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let detail = format!("fix these fields: {}", fields.join(", "));
        Self {
            errors,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
        }
    }

    /// A failure of ours, not the caller's: logged in full, reported plainly.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; the request may be retried",
        )
    }

    /// The database cannot serve for now: 503 with `Retry-After`.
    pub fn unavailable(error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%error, "the database is unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database cannot take requests right now; nothing was written; retry after the time in Retry-After",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem object a response carries, extension members included:
    /// also what a streamed answer (an import's progress) ends with.
    pub fn into_problem(self) -> serde_json::Value {
        let problem = Problem {
            problem_type: format!("https://crm.invalid/problems/{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let mut body = serde_json::to_value(problem).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            for (name, value) in self.extensions {
                object.entry(name).or_insert(value);
            }
        }
        body
    }
}

/// Seconds a 503 asks the client to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(self.into_problem())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so this connection cannot
            // carry another request: say so, or a client's next request on
            // it fails half-way.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Validation(errors) => Self::validation(errors),
            DomainError::NotFound { .. } => Self::not_found(error.to_string()),
            DomainError::AlreadyExists { .. } => Self::new(StatusCode::CONFLICT, "already-exists", error.to_string()),
            DomainError::Archived { .. } => Self::new(StatusCode::CONFLICT, "archived", error.to_string()),
            DomainError::Erased { .. } => Self::new(StatusCode::GONE, "erased", error.to_string()),
            DomainError::InvalidState(_) => Self::new(StatusCode::CONFLICT, "invalid-state", error.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the record changed concurrently; retry",
            ),
            StoreError::IdempotencyKeyReused { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "this Idempotency-Key was used for another request",
            ),
            StoreError::Claimed { claim, .. } => Self::new(
                StatusCode::CONFLICT,
                "claimed",
                format!("{claim} is already held by another record"),
            ),
            StoreError::InvalidAppend(detail) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail),
            StoreError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "the server is shutting down",
            ),
            other if other.is_unavailable() => Self::unavailable(&other),
            other => Self::internal(&other),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Rejected(error) => error.into(),
            AppError::VersionMismatch { expected, actual } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                format!("If-Match names version {expected}, but the record is at version {actual}"),
            ),
            AppError::Store(error) => error.into(),
            AppError::Taken { kind, holder, .. } => Self {
                errors: vec![FieldError::new(
                    "external_id",
                    format!("already used by {kind} {holder}"),
                )],
                ..Self::new(StatusCode::CONFLICT, "external-id-taken", error.to_string())
            },
            AppError::Unavailable(_) => Self::unavailable(&error),
            AppError::Unreadable { .. } | AppError::ReadModel(_) => Self::internal(&error),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Store(error) => error.into(),
            ProjectionError::BadRequest(detail) => Self::bad_request(detail),
            ProjectionError::Busy(detail) => Self::new(StatusCode::CONFLICT, "busy", detail),
            error if error.is_unavailable() => Self::unavailable(&error),
            ProjectionError::Unreadable { .. }
            | ProjectionError::Database(_)
            | ProjectionError::Sqlite(_)
            | ProjectionError::ReadModel(_)
            | ProjectionError::Internal(_) => Self::internal(&error),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::NotFound { .. } => Self::not_found(error.to_string()),
            QueryError::Projection(error) => error.into(),
        }
    }
}
