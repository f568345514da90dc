//! `crm`: see `crm --help`.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// Logs to standard error: `CRM_LOG` sets the filter (default `info` for
/// `serve`, `warn` otherwise), `CRM_LOG_FORMAT=json` gives JSON lines.
fn init_logging(serving: bool) {
    let default = if serving { "info,sqlx=warn" } else { "warn" };
    let filter = EnvFilter::try_from_env("CRM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CRM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = server::cli::parse();
    init_logging(cli.is_serve());
    server::cli::run(cli).await
}
