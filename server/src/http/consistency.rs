//! Reading one's own writes on any server. Every answer carries
//! `Crm-Position`: the log position this server's read models had folded
//! when it answered (for a write, at least the write's own). A request that
//! sends it back as `Crm-Min-Position`, to this server or any other on the
//! same database, is served only once that server's read models cover it:
//! it waits up to `WAIT_MAX`, then answers 503 with `Retry-After`. So a
//! client behind a load balancer that is not sticky never reads a state
//! older than its own last write.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// The response header: the position the answer reflects.
pub const POSITION: &str = "crm-position";
/// The request header: the position the answer must reflect at least.
pub const MIN_POSITION: &str = "crm-min-position";
/// The longest a request waits for this server's read models.
pub const WAIT_MAX: Duration = Duration::from_secs(5);

pub async fn consistent(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(raw) = request.headers().get(MIN_POSITION) {
        let Some(wanted) = raw.to_str().ok().and_then(|raw| raw.trim().parse::<u64>().ok()) else {
            return ApiError::bad_request(
                "Crm-Min-Position must be a log position (a whole number), as a Crm-Position header gave it",
            )
            .into_response();
        };
        if let Err(error) = reach(&state, wanted).await {
            return error.into_response();
        }
    }
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(POSITION, HeaderValue::from(state.projector.position()));
    response
}

/// Returns once this server's read models cover `wanted`.
async fn reach(state: &AppState, wanted: u64) -> Result<(), ApiError> {
    let projector = &state.projector;
    if projector.position() >= wanted {
        return Ok(());
    }
    let head = state.app.store.head().await?;
    if wanted > head {
        return Err(ApiError::bad_request(format!(
            "Crm-Min-Position {wanted} lies beyond the end of the log ({head}); send back a Crm-Position this API gave"
        )));
    }
    match tokio::time::timeout(WAIT_MAX, projector.wait_until(wanted)).await {
        Ok(Ok(())) if projector.position() >= wanted => Ok(()),
        Ok(Err(error)) => Err(error.into()),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-caught-up",
            format!(
                "this server's read models stand at position {}, not yet at {wanted}; retry after the time in Retry-After",
                projector.position()
            ),
        )),
    }
}
