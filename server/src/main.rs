//! `crm`: see `crm --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    server::cli::run(server::cli::parse()).await
}
