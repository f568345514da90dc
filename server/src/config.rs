//! Configuration, read once at start-up from flags and the environment
//! (through clap), then passed explicitly.

/// Where the log lives. The URL may carry a password, so `Debug` redacts it.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&eventstore::redact(&self.0))
    }
}

impl DatabaseUrl {
    /// `sqlite://crm.db` creates `crm.db` in the working directory on first use.
    pub const DEFAULT: &'static str = "sqlite://crm.db";
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseUrl,
    /// PostgreSQL schema to keep the log in; `None` for the default.
    pub schema: Option<String>,
    /// The longest a request waits for a database connection.
    pub connect_wait: std::time::Duration,
    /// Wraps the personal-data keys (`CRM_MASTER_KEY`).
    pub master_key: Option<eventstore::MasterKey>,
}
