//! `GET /metrics` in Prometheus' text format: requests and their latency
//! per route, commit batches and their time, the writer's queue, append
//! failures by kind, and how far the read models stand behind the log.
//! Recorded through the `metrics` facade (the store records its own) and
//! rendered by `metrics-exporter-prometheus`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

/// Latency buckets, in seconds.
const SECONDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch-size buckets, in requests or events.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the process-wide recorder; `None` (with a warning) if another
/// is installed already.
pub fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("crm_commit_batch_".into()), SIZES));
    match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "metrics are not recorded");
            None
        }
    }
}

/// Counts each request and times it, by method, route (the pattern, not
/// the path: ids do not make new series) and status.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("crm_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("crm_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

#[utoipa::path(get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "Prometheus text format: crm_http_requests_total and crm_http_request_seconds per method, route and status; crm_commit_batch_requests, crm_commit_batch_events, crm_commit_seconds, crm_writer_queue_depth, crm_append_failures_total by kind; crm_log_head_position, crm_read_model_position, crm_read_model_lag_events, crm_writes_failing. No token needed.", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not recorded in this process").into_response();
    };
    let position = state.projector.position();
    metrics::gauge!("crm_read_model_position").set(position as f64);
    if let Ok(head) = state.app.store.head().await {
        metrics::gauge!("crm_log_head_position").set(head as f64);
        metrics::gauge!("crm_read_model_lag_events").set(head.saturating_sub(position) as f64);
    }
    let failing = state.app.store.write_health().failing();
    metrics::gauge!("crm_writes_failing").set(if failing { 1.0 } else { 0.0 });
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}
