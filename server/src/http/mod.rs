//! The HTTP API (axum). `router(state)` builds every route of the contract;
//! the OpenAPI document is generated from the same route definitions, so the
//! two cannot drift apart. `serve` runs it with graceful shutdown.

mod admin;
mod error;
mod events;
pub mod extract;
mod read;
mod records;
mod transfer;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::get;
use axum::{Json, Router};
use projections::Projector;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, Problem};

use crate::app::App;

/// Largest request body, in bytes, except CSV imports, which are streamed.
pub const REQUEST_BODY_BYTES_MAX: usize = 1 << 20;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub projector: Arc<Projector>,
    /// Turns true when the server is shutting down; long-lived responses
    /// (the SSE tail) end so that shutdown can finish.
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.app.store)
            .finish_non_exhaustive()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "crm", description = "An event-sourced CRM: every change is an immutable, attributed event. Errors are application/problem+json."),
    modifiers(&BearerAuth),
    tags((name = "records"), (name = "history"), (name = "events"), (name = "reports"), (name = "admin"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(get, path = "/healthz", tag = "admin", responses((status = 200, description = "the server is up; no token needed")))]
async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json")
}

/// The routes of the contract and the OpenAPI document describing them.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(records::create, records::list))
        .routes(routes!(records::get, records::patch, records::archive))
        .routes(routes!(records::move_stage))
        .routes(routes!(records::close))
        .routes(routes!(records::log_interaction))
        .routes(routes!(records::get_interaction))
        .routes(routes!(read::history))
        .routes(routes!(read::timeline))
        .routes(routes!(read::audit))
        .routes(routes!(read::pipeline))
        .routes(routes!(read::data_quality))
        .routes(routes!(read::data_quality_list))
        .routes(routes!(read::neglected_accounts))
        .routes(routes!(read::owners))
        .routes(routes!(events::list))
        .routes(routes!(events::stream_events))
        .routes(routes!(admin::create_user, admin::list_users))
        .routes(routes!(admin::rebuild))
        .routes(routes!(admin::verify))
        .routes(routes!(transfer::import))
        .routes(routes!(transfer::export))
        .split_for_parts()
}

/// The whole API, ready to serve.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = routes();
    let openapi = Arc::new(openapi);
    routes
        .route("/v1/openapi.json", get(move || async move { Json(openapi.as_ref().clone()) }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %request_id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Serves until `shutdown` turns true, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
