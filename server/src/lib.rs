//! The `crm` binary's library: the command line, the application layer that
//! turns requests into commands, and configuration. Only this crate reads the
//! environment, the wall clock for business time, or makes ids.

pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod csv_io;
pub mod demo;
pub mod http;
mod memo;
pub mod moment;
pub mod queries;
pub mod read_bench;
pub mod render;
pub mod serve;
pub mod trend;
pub mod webhooks;
pub mod wire;
