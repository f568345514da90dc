//! `crm serve`: the HTTP API with live read models, started and stopped
//! cleanly. On SIGTERM or ctrl-c the server stops accepting, lets in-flight
//! requests finish, ends the SSE tails and
//! drains the writer: nothing acknowledged is lost.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use projections::Projector;
use tokio::sync::watch;

use crate::app::{Actor, App};
use crate::http::{self, AppState};

/// Creates the first admin on a store that has none (a new store, or one
/// filled by the demo), so that somebody can log in. Returns its token, to
/// be shown once.
pub async fn ensure_admin(app: &App, projector: &Projector) -> Result<Option<String>, String> {
    projector.catch_up().await.map_err(|e| e.to_string())?;
    let users = projector.users().await.map_err(|e| e.to_string())?;
    if users.users.values().any(|u| u.role == domain::Role::Admin) {
        return Ok(None);
    }
    let outcome = app
        .register_user("Administrator", "IT", "admin", None, &Actor::system(), Utc::now())
        .await
        .map_err(|e| e.to_string())?;
    let token = crate::auth::issue(&app.store, outcome.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(token.token))
}

/// Resolves when the process is asked to stop.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stop with ctrl-c");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// How a server serves: its connections, webhook deliveries and imports.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub connections: http::ConnectionLimits,
    pub webhooks: crate::webhooks::Options,
    pub imports: crate::csv_io::Limits,
}

/// Serves on `listener` if the caller already listens (it answered 503
/// while the database was down), else on a new one bound to `addr`.
pub async fn run(
    app: App,
    addr: SocketAddr,
    listener: Option<tokio::net::TcpListener>,
    options: Options,
) -> Result<(), String> {
    let projector = Projector::open(app.store.clone())
        .await
        .map_err(|e| format!("cannot bring the read models up to date: {e}"))?;
    if let Some(token) = ensure_admin(&app, &projector).await? {
        println!("created the first admin user; its token is shown this once:");
        println!("admin token: {token}");
    }
    let listener = match listener {
        Some(listener) => listener,
        None => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            println!("listening on http://{local}");
            listener
        }
    };
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    let live = tokio::spawn(Arc::clone(&projector).run(shutdown.clone()));
    let table = crate::webhooks::Table::open(app.store.url(), app.store.schema(), app.store.connect_wait())
        .await
        .map_err(|e| format!("cannot open the webhook tables: {e}"))?;
    let dispatcher =
        crate::webhooks::Dispatcher::new(table, app.store.clone(), options.webhooks).map_err(|e| e.to_string())?;
    let delivering = tokio::spawn(Arc::clone(&dispatcher).run(shutdown.clone()));
    let state = AppState {
        app: app.clone(),
        projector,
        shutdown: shutdown.clone(),
        metrics: http::metrics::install(),
        webhooks: Some(dispatcher),
        imports: options.imports,
    };
    let served = http::serve(listener, state, shutdown, options.connections).await;
    let _ = live.await;
    let _ = delivering.await;
    app.store.close().await;
    tracing::info!("stopped");
    served.map_err(|e| format!("the server failed: {e}"))
}
