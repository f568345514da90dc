//! `crm`: see `crm --help`.

/// mimalloc instead of the system allocator: requests, folds and SQLite
/// allocate and free many small buffers across threads, where glibc's
/// malloc spent about a sixth of the server's CPU (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    server::cli::main().await
}
