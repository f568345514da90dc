//! The `crm` program, built inside this package (as `crm-blackbox`, so as
//! not to overwrite `target/*/crm`) so that the black-box tests can start it:
//! Cargo tells a package's tests only its own binaries' paths. It is the
//! same entry point as `server/src/main.rs`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    server::cli::main().await
}
