//! The HTTP API (axum). `router(state)` builds every route of the contract;
//! the OpenAPI document is generated from the same route definitions, so the
//! two cannot drift apart. `serve` runs it with graceful shutdown.

mod admin;
mod consistency;
mod error;
mod events;
pub mod extract;
pub mod metrics;
mod personal;
mod read;
mod records;
mod socket;
mod transfer;
mod trend;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use projections::Projector;
use serde_json::json;
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
    /// What `/metrics` renders; none where no recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Webhook subscriptions and their delivery; none where this server
    /// does not deliver them.
    pub webhooks: Option<Arc<crate::webhooks::Dispatcher>>,
    /// The caps of one import.
    pub imports: crate::csv_io::Limits,
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
    tags((name = "records"), (name = "history"), (name = "events"), (name = "reports"), (name = "webhooks"), (name = "admin"))
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

#[utoipa::path(get, path = "/healthz", tag = "admin", responses((status = 200, description = "liveness: the process answers; no token needed")))]
async fn healthz() -> &'static str {
    "ok"
}

/// How long readiness waits for the database to answer.
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read models further behind the log than this many events are not ready.
pub const READY_LAG_EVENTS_MAX: u64 = 10_000;
/// How long a failed commit (with none committed since) keeps the server
/// not ready; after it, traffic comes back and the next write tells again.
pub const READY_WRITE_FAILURE_HOLD: Duration = Duration::from_secs(10);

#[utoipa::path(get, path = "/readyz", tag = "admin",
    responses((status = 200, description = "readiness: the database answers, the last commit went through (or failed over 10 s ago), the read models are within 10,000 events of the log. No token needed. {\"ready\": true, \"database\": {ok, head, millis, error}, \"writes\": {ok, last_ok, last_error, last_error_at}, \"read_models\": {ok, position, lag}}", body = Object),
              (status = 503, description = "not ready: the same body, with `Retry-After`", body = Object)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let head = match tokio::time::timeout(READY_PROBE_TIMEOUT, state.app.store.head()).await {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", READY_PROBE_TIMEOUT.as_secs())),
    };
    let database = json!({
        "ok": head.is_ok(),
        "head": head.as_ref().ok(),
        "millis": started.elapsed().as_millis() as u64,
        "error": head.as_ref().err(),
    });
    let health = state.app.store.write_health();
    let hold = chrono::Duration::from_std(READY_WRITE_FAILURE_HOLD).unwrap_or_default();
    let writes_ok = !health.failing()
        || health
            .last_error
            .as_ref()
            .is_some_and(|(at, _)| Utc::now() - *at > hold);
    let writes = json!({
        "ok": writes_ok,
        "last_ok": health.last_ok,
        "last_error": health.last_error.as_ref().map(|(_, reason)| reason),
        "last_error_at": health.last_error.as_ref().map(|(at, _)| at),
    });
    let position = state.projector.position();
    let lag = head.as_ref().ok().map(|head| head.saturating_sub(position));
    let read_models_ok = lag.is_some_and(|lag| lag <= READY_LAG_EVENTS_MAX);
    // Whether this server is the one that folds what the shared tables lack.
    let projector = state.projector.is_projector().await;
    let read_models = json!({"ok": read_models_ok, "position": position, "lag": lag, "projector": projector});
    let ready = head.is_ok() && writes_ok && read_models_ok;
    let body = Json(json!({"ready": ready, "database": database, "writes": writes, "read_models": read_models}));
    if ready {
        (StatusCode::OK, body).into_response()
    } else {
        let retry_after = [(header::RETRY_AFTER, error::RETRY_AFTER_SECS.to_string())];
        (StatusCode::SERVICE_UNAVAILABLE, retry_after, body).into_response()
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method; see /v1/openapi.json",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json")
}

/// The routes of the contract and the OpenAPI document describing them.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(records::create, records::list))
        .routes(routes!(records::get, records::patch, records::archive))
        .routes(routes!(records::move_stage))
        .routes(routes!(records::close))
        .routes(routes!(records::log_interaction))
        .routes(routes!(records::get_interaction))
        .routes(routes!(personal::erase))
        .routes(routes!(personal::erase_user))
        .routes(routes!(personal::personal_data))
        .routes(routes!(personal::user_personal_data))
        .routes(routes!(read::history))
        .routes(routes!(read::timeline))
        .routes(routes!(read::audit))
        .routes(routes!(read::pipeline))
        .routes(routes!(read::data_quality))
        .routes(routes!(read::data_quality_list))
        .routes(routes!(read::neglected_accounts))
        .routes(routes!(read::owners))
        .routes(routes!(trend::pipeline))
        .routes(routes!(trend::data_quality))
        .routes(routes!(trend::neglected_accounts))
        .routes(routes!(trend::owners))
        .routes(routes!(events::list))
        .routes(routes!(events::stream_events))
        .routes(routes!(admin::create_user, admin::list_users))
        .routes(routes!(admin::rebuild))
        .routes(routes!(admin::verify))
        .routes(routes!(transfer::import))
        .routes(routes!(transfer::export))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::delete))
        .routes(routes!(webhooks::resume))
        .routes(routes!(webhooks::deliveries))
        .split_for_parts()
}

/// The whole API, ready to serve.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = routes();
    let openapi = Arc::new(openapi);
    routes
        .route("/v1/openapi.json", get(move || async move { Json(openapi.as_ref().clone()) }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), consistency::consistent))
        .layer(axum::middleware::from_fn(metrics::track))
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

/// What one server takes on at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most. Past it, a new connection is answered 503
    /// with `Retry-After` and closed (up to 64 at a time; more are closed
    /// unanswered), so the process never runs out of file descriptors (keep
    /// its limit, `ulimit -n`, above this plus 128).
    pub connections_max: usize,
    /// How long a client may take to send a request's headers, and how long
    /// a kept-alive connection may sit idle before its next request.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            connections_max: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Connections over the limit being answered at once; past this many more,
/// a new one is closed unanswered.
const REFUSING_MAX: usize = 64;
/// How long a connection over the limit may take to send its request.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers one connection over the limit: reads its request (for at most
/// `REFUSAL_TIMEOUT`) and answers 503 with `Retry-After`, then closes it.
async fn refuse(stream: tokio::net::TcpStream) {
    answer_unavailable(
        stream,
        "over-capacity",
        "the server has too many open connections; retry after the time in Retry-After",
        false,
    )
    .await;
}

/// Answers one connection's request with a 503 problem (`/healthz`, if
/// `alive`, with 200: the process lives) and closes it.
async fn answer_unavailable(stream: tokio::net::TcpStream, slug: &'static str, detail: &'static str, alive: bool) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| async move {
        let mut response = if alive && request.uri().path() == "/healthz" {
            Json(json!({"status": "starting"})).into_response()
        } else {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, slug, detail).into_response()
        };
        response
            .headers_mut()
            .insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 2, connection).await;
}

/// Answers every connection on `listener` with 503 (`/healthz`: 200) until
/// `ready` resolves, then hands back the listener and what `ready` gave:
/// a server whose database is not reachable yet is up and says so.
pub async fn unavailable_until<T>(
    listener: tokio::net::TcpListener,
    ready: impl std::future::Future<Output = T>,
) -> (tokio::net::TcpListener, T) {
    let answering = Arc::new(tokio::sync::Semaphore::new(REFUSING_MAX));
    tokio::pin!(ready);
    loop {
        tokio::select! {
            done = &mut ready => return (listener, done),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if let Ok(slot) = Arc::clone(&answering).try_acquire_owned() {
                    tokio::spawn(async move {
                        answer_unavailable(
                            stream,
                            "starting",
                            "the server is waiting for its database to be reachable; retry after the time in Retry-After",
                            true,
                        )
                        .await;
                        drop(slot);
                    });
                }
            }
        }
    }
}

/// Serves until `shutdown` turns true, then lets in-flight requests finish.
/// Each connection gets `limits.header_timeout` to send each request's
/// headers (a client that sends half a request, or keeps an idle connection,
/// is cut off then), and at most `limits.connections_max` are open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let app = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSING_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors (or a connection reset before it was
                // taken): wait a moment rather than spin on the error.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Ok(refusing) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusing);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let socket = socket::Shared::new(stream);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(socket.clone()), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%error, "connection ended");
                },
                // Whatever it was doing is for nobody now: dropping the
                // connection drops its request's work (an import stops).
                () = socket.hung_up() => tracing::debug!("the client hung up"),
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
