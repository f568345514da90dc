//! The `crm` command line. Every subcommand reads `--database` (or
//! `CRM_DATABASE_URL`), prints human text or, with `--json`, JSON, and exits
//! 0 on success, 1 when the operation is refused or fails, 2 on bad usage.

use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};
use domain::{Account, Contact, Deal, Input, RecordKind, Rules, User};
use eventstore::{Store, StoreOptions};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::{Actor, App, AppError, Outcome};
use crate::config::{Config, DatabaseUrl};

#[derive(Debug, Parser)]
#[command(
    name = "crm",
    version,
    about = "An event-sourced CRM: every change is an immutable, attributed event."
)]
pub struct Cli {
    /// Database URL: sqlite://PATH (created on first use) or postgres://...
    #[arg(long, global = true, env = "CRM_DATABASE_URL", default_value = DatabaseUrl::DEFAULT, hide_env_values = true)]
    database: String,
    /// PostgreSQL schema that holds the log (created if missing).
    #[arg(long, global = true, env = "CRM_DATABASE_SCHEMA")]
    schema: Option<String>,
    /// Seconds a request waits for a database connection before it is
    /// answered 503 (a database that is down or unreachable).
    #[arg(long, global = true, env = "CRM_DATABASE_WAIT_SECS", default_value_t = eventstore::CONNECT_WAIT_DEFAULT.as_secs())]
    database_wait_secs: u64,
    /// 64 hexadecimal digits that wrap every data subject's key where the
    /// database stores it, so that a copy of the database alone opens no
    /// personal data. Once a store has keys wrapped, it needs the same key
    /// to open them.
    #[arg(long, global = true, env = "CRM_MASTER_KEY", hide_env_values = true, value_parser = eventstore::MasterKey::from_hex)]
    master_key: Option<eventstore::MasterKey>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Pipeline stages as a JSON file: [{"name", "probability_percent", "rotting_days"}, ...].
    #[arg(long, global = true, env = "CRM_PIPELINE_FILE", value_name = "FILE")]
    pipeline: Option<std::path::PathBuf>,
    /// Country calling code a phone number written without one is placed
    /// in ("1", "44"): "(206) 555-9857" is then stored as +12065559857, and
    /// matches "+1 206 555 9857" as a duplicate. Numbers already stored
    /// stay as they were written.
    #[arg(long, global = true, env = "CRM_PHONE_REGION", value_name = "CODE", value_parser = domain::CallingCode::parse)]
    phone_region: Option<domain::CallingCode>,
    /// Departments expected to have calls, emails or meetings with every
    /// account, comma-separated ("Sales,Support"): neglected-accounts names
    /// those that did not.
    #[arg(
        long,
        global = true,
        env = "CRM_EXPECTED_DEPARTMENTS",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    expected_departments: Vec<String>,
    /// Networks webhook deliveries may reach besides public addresses,
    /// comma-separated CIDRs or addresses ("10.20.0.0/16,127.0.0.1"). By
    /// default private, loopback, link-local and other special-purpose
    /// addresses are refused, so a subscription cannot make the server
    /// reach what only it can reach (a metadata service, a local database).
    #[arg(
        long,
        global = true,
        env = "CRM_WEBHOOK_ALLOW_NETWORKS",
        value_delimiter = ',',
        value_name = "NETWORKS"
    )]
    webhook_allow_networks: Vec<String>,
    /// The user id recorded as the actor of changes made from the command line.
    #[arg(long = "as", global = true, env = "CRM_ACTOR", value_name = "USER_ID")]
    acting_user: Option<Uuid>,
    #[command(subcommand)]
    command: Command,
}

/// How `crm serve` delivers webhooks (see `webhooks::Options`).
#[derive(Debug, clap::Args)]
struct WebhookArgs {
    /// Milliseconds a webhook receiver has to answer one delivery.
    #[arg(long, env = "CRM_WEBHOOK_TIMEOUT_MS", default_value_t = millis(crate::webhooks::Options::default().timeout))]
    webhook_timeout_ms: u64,
    /// Milliseconds before the first retry of a failed delivery; each
    /// further failure doubles it (with jitter).
    #[arg(long, env = "CRM_WEBHOOK_RETRY_MIN_MS", default_value_t = millis(crate::webhooks::Options::default().retry_min))]
    webhook_retry_min_ms: u64,
    /// The longest wait, in milliseconds, between two attempts.
    #[arg(long, env = "CRM_WEBHOOK_RETRY_MAX_MS", default_value_t = millis(crate::webhooks::Options::default().retry_max))]
    webhook_retry_max_ms: u64,
    /// Failed attempts in a row after which a subscription is disabled.
    #[arg(long, env = "CRM_WEBHOOK_ATTEMPTS_MAX", default_value_t = crate::webhooks::Options::default().attempts_max)]
    webhook_attempts_max: u32,
    /// Milliseconds a server's hold on a subscription lasts unless renewed:
    /// another server takes over a dead one's deliveries after this.
    #[arg(long, env = "CRM_WEBHOOK_LEASE_MS", default_value_t = millis(crate::webhooks::Options::default().lease))]
    webhook_lease_ms: u64,
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl WebhookArgs {
    fn options(&self, reach: crate::webhooks::Reach) -> crate::webhooks::Options {
        let ms = std::time::Duration::from_millis;
        crate::webhooks::Options {
            reach,
            timeout: ms(self.webhook_timeout_ms.max(1)),
            retry_min: ms(self.webhook_retry_min_ms.max(1)),
            retry_max: ms(self.webhook_retry_max_ms.max(self.webhook_retry_min_ms.max(1))),
            attempts_max: self.webhook_attempts_max.max(1),
            lease: ms(self.webhook_lease_ms.max(100)),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API. On a store without users, creates an admin and prints its token once.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// First fill an empty store with the demo history.
        #[arg(long)]
        demo: bool,
        /// Contacts in the demo history.
        #[arg(long, default_value_t = 3000)]
        contacts: usize,
        /// Seed of the demo history: the same seed gives the same history.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Open connections at most; past it a new one is answered 503 and
        /// closed. Keep `ulimit -n` above this plus 128.
        #[arg(long, env = "CRM_CONNECTIONS_MAX", default_value_t = crate::http::ConnectionLimits::default().connections_max)]
        connections_max: usize,
        /// Seconds a client may take to send a request's headers, or leave
        /// a kept-alive connection idle.
        #[arg(long, env = "CRM_HEADER_TIMEOUT_SECS", default_value_t = crate::http::ConnectionLimits::default().header_timeout.as_secs())]
        header_timeout_secs: u64,
        /// Bytes one import (`POST /v1/import/...`) may send; past it the
        /// import stops with 413.
        #[arg(long, env = "CRM_IMPORT_BYTES_MAX", default_value_t = crate::csv_io::Limits::default().bytes_max)]
        import_bytes_max: u64,
        /// Rows one import may hold; past it the import stops with 413.
        #[arg(long, env = "CRM_IMPORT_ROWS_MAX", default_value_t = crate::csv_io::Limits::default().rows_max)]
        import_rows_max: u64,
        #[command(flatten)]
        webhooks: WebhookArgs,
    },
    /// Fill an empty store with a realistic, reproducible two-year history.
    Demo {
        #[arg(long, default_value_t = 3000)]
        contacts: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The day the history ends (default today); with the seed, fixes it byte for byte.
        #[arg(long)]
        until: Option<chrono::NaiveDate>,
    },
    /// Import records from a CSV file: a header row naming the columns, by
    /// our field names or through a mapping.
    Import {
        kind: RecordKind,
        file: std::path::PathBuf,
        /// What the file's columns hold: "First Name+Last Name=name,Email=email,Company Name=account".
        #[arg(long)]
        map: Option<String>,
        /// A mapping file: one "Column=field" per line (examples in import-maps/).
        #[arg(long)]
        map_file: Option<std::path::PathBuf>,
        /// Name the rows whose new contact or account looks like a duplicate
        /// of a live record (same email, phone, name within an account or
        /// domain); they are imported either way.
        #[arg(long)]
        warn_duplicates: bool,
    },
    /// Export the current records of a kind as CSV to standard output.
    Export { kind: RecordKind },
    /// Manage users, the people who act.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage webhook subscriptions (as `/v1/webhooks`; a running server
    /// picks a change up within a second).
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Create a contact, account or deal from a JSON object of its fields.
    Create { kind: RecordKind, fields: String },
    /// Change some fields of a record; `null` clears a field.
    Update {
        kind: RecordKind,
        id: Uuid,
        fields: String,
        /// Refuse unless the record is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Archive a record: it leaves lists and reports, its history stays.
    Archive { kind: RecordKind, id: Uuid },
    /// Erase a contact's or a user's personal data (GDPR Art. 17): its key
    /// is destroyed, every read model, report and export shows it erased,
    /// and the log still verifies; an erased user's tokens are revoked.
    /// Cannot be undone.
    Erase {
        /// `contact` or `user`: the kinds that hold a person's data.
        kind: RecordKind,
        id: Uuid,
        /// Why (a request under Art. 17, say); must not name the person.
        #[arg(long)]
        reason: String,
    },
    /// Everything held about a person (GDPR Art. 15), as one JSON document:
    /// a contact's fields, every change with who made it, its timeline; a
    /// user's name, email, department and role, and what the user did.
    PersonalData { kind: RecordKind, id: Uuid },
    /// Move a deal to another pipeline stage.
    Stage { deal_id: Uuid, stage: String },
    /// Close a deal as won or lost.
    Close {
        deal_id: Uuid,
        outcome: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Log a call, email, meeting or note from a JSON object.
    Interaction {
        fields: String,
        /// When it happened (RFC 3339); default now.
        #[arg(long)]
        occurred_at: Option<chrono::DateTime<Utc>>,
    },
    /// A record's current state, folded from its events.
    Show { kind: RecordKind, id: Uuid },
    /// The raw log, from a position on.
    Events {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Walk the hash chain and report the first altered event, if any.
    Verify,
    /// A report, live or as of a past date.
    Report {
        #[command(subcommand)]
        report: ReportKind,
        /// Report as of this time (RFC 3339, or a date: as of its end, UTC):
        /// folds the events that had happened by then.
        #[arg(long, global = true, value_parser = crate::moment::parse_end)]
        as_of: Option<chrono::DateTime<Utc>>,
        /// Report as the system showed it at this time (RFC 3339, or a
        /// date: as of its end): folds the events recorded by then,
        /// whenever they happened.
        #[arg(long, global = true, value_parser = crate::moment::parse_end, conflicts_with_all = ["as_of", "every"])]
        as_recorded: Option<chrono::DateTime<Utc>>,
        /// A trend instead: the report's figures at the end of every day,
        /// week or month from --since to --as-of (default now), each exact
        /// as of then; printed as CSV (JSON with --json).
        #[arg(long, global = true, value_parser = ["day", "week", "month"], requires = "since")]
        every: Option<String>,
        /// The first period of a trend (--every): the one holding this time
        /// (RFC 3339, or a date).
        #[arg(long, global = true, value_parser = crate::moment::parse_start)]
        since: Option<chrono::DateTime<Utc>>,
        #[command(flatten)]
        scope: ReportScope,
    },
    /// Every change to a record, oldest first, with who made it.
    History { kind: RecordKind, id: Uuid },
    /// Changes and interactions of a record together, newest first.
    Timeline { kind: RecordKind, id: Uuid },
    /// Who changed what, across all records.
    Audit {
        /// Only this user's changes.
        #[arg(long)]
        actor: Option<String>,
        /// Written to the log at or after (recorded time; RFC 3339, or a
        /// date: from its start, UTC).
        #[arg(long, alias = "since", value_parser = crate::moment::parse_start)]
        recorded_since: Option<chrono::DateTime<Utc>>,
        /// Written to the log at or before (a date: to its end).
        #[arg(long, alias = "until", value_parser = crate::moment::parse_end)]
        recorded_until: Option<chrono::DateTime<Utc>>,
        /// Happened at or after (business time: a backfilled call happened
        /// before it was recorded; a date: from its start).
        #[arg(long, value_parser = crate::moment::parse_start)]
        occurred_since: Option<chrono::DateTime<Utc>>,
        /// Happened at or before (business time; a date: to its end).
        #[arg(long, value_parser = crate::moment::parse_end)]
        occurred_until: Option<chrono::DateTime<Utc>>,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Replay the whole log into fresh read models.
    Rebuild {
        /// Records held in memory between writes (about 2 KB each): more
        /// rows, fewer rewrites of records that many events touch.
        #[arg(long, default_value_t = projections::REBUILD_ROWS_MAX)]
        rows_in_memory: usize,
    },
    /// Measure append throughput on the configured database (use a scratch one).
    Bench {
        /// Concurrent clients; each appends single events to its own streams.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Appends per client.
        #[arg(long, default_value_t = 1000)]
        appends: usize,
        /// Measure the read side of this store instead (appends nothing):
        /// start-up, a record, lists and searches, every report, a report
        /// as of a year ago, peak memory.
        #[arg(long)]
        reads: bool,
        /// With `--reads`: answers timed per question (their median and
        /// maximum are printed).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Append each event's personal fields in plain text instead of
        /// sealed: what sealing costs, by comparison.
        #[arg(long)]
        plain: bool,
        /// The events are about this many contacts, each key made once;
        /// 0: each event is about a new contact (a key made per event).
        #[arg(long, default_value_t = 0)]
        subjects: usize,
    },
}

/// Which records a report covers, and which page of its list.
#[derive(Debug, clap::Args)]
struct ReportScope {
    /// Only records this user owns.
    #[arg(long, global = true)]
    owner_id: Option<Uuid>,
    /// Only records owned by people of this department.
    #[arg(long, global = true)]
    department: Option<String>,
    /// Only records of this kind (contact, account, deal).
    #[arg(long, global = true, value_parser = ["contact", "account", "deal"])]
    kind: Option<String>,
    /// Only this account, its contacts and its deals.
    #[arg(long, global = true)]
    account_id: Option<Uuid>,
    /// Only contacts at this lifecycle stage (lead, prospect, customer).
    #[arg(long, global = true)]
    lifecycle: Option<String>,
    /// Only deals in this stage of the pipeline.
    #[arg(long, global = true)]
    stage: Option<String>,
    /// Entries per list.
    #[arg(long, global = true, default_value_t = projections::reports::REPORT_PAGE_DEFAULT)]
    limit: usize,
    /// The next page of a list (the cursor the page before printed).
    #[arg(long, global = true)]
    cursor: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ReportKind {
    /// Open deals per stage, weighted amounts, win rate, rotting deals.
    Pipeline {
        /// The period figures (deals created, won, lost, slipped, win rate)
        /// from this time (or a date: from its start) to --as-of.
        #[arg(long, value_parser = crate::moment::parse_start)]
        from: Option<chrono::DateTime<Utc>>,
    },
    /// Stale, never-updated, incomplete and duplicate records; rotting deals.
    DataQuality {
        #[arg(long, default_value_t = 90)]
        stale_days: u32,
        #[arg(long, default_value_t = 30)]
        never_updated_days: u32,
        /// One list only, a page at a time (stale, never_updated, incomplete, duplicates, rotting_deals).
        #[arg(long)]
        list: Option<String>,
        /// incomplete: only records missing this (owner, email or phone, ...).
        #[arg(long)]
        missing: Option<String>,
    },
    /// Accounts with open deals or customers and no call, email or meeting for DAYS.
    NeglectedAccounts {
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Only accounts this department had no call, email or meeting with for DAYS.
        #[arg(long, value_name = "DEPARTMENT")]
        not_touched_by: Option<String>,
    },
    /// Per owner: records owned, stale and never-updated counts, last activity.
    Owners {
        #[arg(long, default_value_t = 90)]
        stale_days: u32,
        #[arg(long, default_value_t = 30)]
        never_updated_days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Subscribe a URL to the log; prints the secret, once.
    Add {
        #[arg(long)]
        url: String,
        /// An event type wanted (repeat for more; none: every type).
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// A record kind wanted (repeat for more; none: every kind).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// At least 16 characters; one is made if none is given.
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Start after this log position (default: the head, new events only).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Every subscription, with its position and state.
    List,
    /// One subscription.
    Show { id: String },
    /// Delete a subscription and its delivery log.
    Rm { id: String },
    /// Restart a disabled subscription from the position it kept.
    Resume { id: String },
    /// The newest delivery attempts of a subscription.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Issue another token for a user (the old ones stay valid).
    Token { user_id: Uuid },
    /// Revoke a token by its id (the part between `crm_` and the next `_`).
    Revoke { token_id: String },
    /// Register a user and print its token, once.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        department: String,
        /// admin, member or viewer.
        #[arg(long)]
        role: String,
        /// How imports from another system name the user (as owner or actor).
        #[arg(long)]
        email: Option<String>,
    },
}

/// Runs the command line and turns the outcome into an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let config = Config {
        database: DatabaseUrl(cli.database.clone()),
        schema: cli.schema.clone(),
        connect_wait: std::time::Duration::from_secs(cli.database_wait_secs.max(1)),
        master_key: cli.master_key.clone(),
    };
    let json = cli.json;
    match execute(cli, &config).await {
        Ok(output) if output.refused => {
            if json {
                println!("{}", output.value);
            } else {
                eprintln!("crm: {}", output.text);
            }
            ExitCode::from(1)
        }
        Ok(output) => {
            print(&output, json);
            ExitCode::SUCCESS
        }
        Err(message) => {
            if json {
                println!("{}", json!({ "error": message }));
            } else {
                eprintln!("crm: {message}");
            }
            ExitCode::from(1)
        }
    }
}

/// What a command prints: a JSON value, and its text form.
struct Output {
    value: Value,
    text: String,
    /// The answer says the operation failed (exit code 1), as `crm verify`
    /// of an altered log does: printed as it is, in text or JSON.
    refused: bool,
}

/// Prints an answer; one with neither a value nor a text was written as
/// it was made (an export).
fn print(output: &Output, json: bool) {
    if json && !(output.value.is_null() && output.text.is_empty()) {
        println!("{}", output.value);
    } else if !json && !output.text.is_empty() {
        println!("{}", output.text);
    }
}

async fn open(config: &Config) -> Result<Store, String> {
    try_open(config).await.map_err(|failure| failure.message)
}

/// Why a store could not be opened, and whether waiting may help.
struct OpenFailure {
    message: String,
    /// The database could not be reached or could not answer: it may yet.
    unavailable: bool,
}

async fn try_open(config: &Config) -> Result<Store, OpenFailure> {
    let options = StoreOptions {
        schema: config.schema.clone(),
        connect_wait: config.connect_wait,
        master_key: config.master_key.clone(),
        ..StoreOptions::default()
    };
    let store = Store::open(&config.database.0, &options)
        .await
        .map_err(|e| OpenFailure {
            message: format!("cannot open {:?}: {e}", config.database),
            unavailable: e.is_unavailable(),
        })?;
    if let Err(e) = crate::app::fill_claims(&store).await {
        store.close().await;
        return Err(OpenFailure {
            message: format!("cannot fill in the external-id claims of {:?}: {e}", config.database),
            unavailable: matches!(&e, AppError::Unavailable(_))
                || matches!(&e, AppError::Store(s) if s.is_unavailable()),
        });
    }
    Ok(store)
}

/// How often `crm serve` tries again to reach a database that is down.
const OPEN_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `crm serve` on a PostgreSQL server that cannot be reached yet: listens
/// at once, answers 503 (and `/healthz` 200) while it tries again every
/// second, then serves. An orchestrator that starts the database and `crm`
/// together needs no start-up order. (SQLite is a file: failing to open it
/// is not an outage to wait out.)
async fn open_for_serving(
    config: &Config,
    addr: std::net::SocketAddr,
) -> Result<(Store, Option<tokio::net::TcpListener>), String> {
    let first = match try_open(config).await {
        Ok(store) => return Ok((store, None)),
        Err(failure) if failure.unavailable && !config.database.0.starts_with("sqlite:") => failure,
        Err(failure) => return Err(failure.message),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::warn!(reason = %first.message, "the database is not reachable; answering 503 until it is");
    println!("waiting for the database; answering 503 until it is reachable");
    println!("listening on http://{local}");
    let retrying = async {
        loop {
            tokio::time::sleep(OPEN_RETRY_EVERY).await;
            match try_open(config).await {
                Ok(store) => return Ok(store),
                Err(failure) if failure.unavailable => {
                    tracing::debug!(reason = %failure.message, "the database is still not reachable");
                }
                Err(failure) => return Err(failure.message),
            }
        }
    };
    let (listener, opened) = crate::http::unavailable_until(listener, retrying).await;
    tracing::info!("the database is reachable; serving");
    Ok((opened?, Some(listener)))
}

fn parse_input(raw: &str) -> Result<Input, String> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(input)) => Ok(input),
        Ok(_) => Err("fields must be a JSON object, as in '{\"name\": \"Ada\"}'".into()),
        Err(e) => Err(format!("fields are not valid JSON: {e}")),
    }
}

fn describe(error: AppError) -> String {
    match error {
        AppError::Rejected(domain::DomainError::Validation(errors)) => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {}: {}", e.field, e.message)).collect();
            format!("refused, fix these fields:\n{}", lines.join("\n"))
        }
        other => other.to_string(),
    }
}

fn load_pipeline(path: Option<&std::path::Path>) -> Result<domain::Pipeline, String> {
    let Some(path) = path else {
        return Ok(domain::Pipeline::default());
    };
    let raw =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read pipeline file {}: {e}", path.display()))?;
    let stages: Vec<domain::StageDefinition> =
        serde_json::from_str(&raw).map_err(|e| format!("pipeline file {}: {e}", path.display()))?;
    domain::Pipeline::new(stages).map_err(|e| format!("pipeline file {}: {e}", path.display()))
}

async fn execute(cli: Cli, config: &Config) -> Result<Output, String> {
    let pipeline = load_pipeline(cli.pipeline.as_deref())?;
    let json = cli.json;
    let (store, listener) = match &cli.command {
        Command::Serve { addr, .. } => open_for_serving(config, *addr).await?,
        _ => (open(config).await?, None),
    };
    let rules = Rules {
        pipeline,
        phone_region: cli.phone_region.clone(),
    };
    let mut app = App::new(store.clone(), rules);
    app.expected_departments = cli
        .expected_departments
        .iter()
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let actor = acting_user(&app, cli.acting_user).await?;
    let reach = crate::webhooks::Reach::allowing(&cli.webhook_allow_networks)
        .map_err(|e| format!("--webhook-allow-networks: {e}"))?;
    let now = Utc::now();
    let result = match cli.command {
        Command::User { command } => user(&app, command, &actor, now).await,
        Command::Webhook { command } => webhook(&app.store, command, &actor, &reach).await,
        Command::Serve {
            addr,
            demo,
            contacts,
            seed,
            connections_max,
            header_timeout_secs,
            import_bytes_max,
            import_rows_max,
            webhooks,
        } => {
            let options = crate::serve::Options {
                connections: crate::http::ConnectionLimits {
                    connections_max: connections_max.max(1),
                    header_timeout: std::time::Duration::from_secs(header_timeout_secs.max(1)),
                },
                webhooks: webhooks.options(reach),
                imports: crate::csv_io::Limits {
                    bytes_max: import_bytes_max.max(1),
                    rows_max: import_rows_max.max(1),
                },
            };
            serve(&app, addr, listener, demo.then_some((contacts, seed)), options).await
        }
        Command::Demo { contacts, seed, until } => demo(&store, contacts, seed, until).await,
        Command::Import {
            kind,
            file,
            map,
            map_file,
            warn_duplicates,
        } => {
            let mapping = import_mapping(map.as_deref(), map_file.as_deref())?;
            import_file(&app, kind, &file, &mapping, &actor, warn_duplicates).await
        }
        Command::Export { kind } => export(&store, kind, json).await,
        Command::Create { kind, fields } => changed(app.create(kind, &parse_input(&fields)?, &actor, now).await),
        Command::Update {
            kind,
            id,
            fields,
            if_version,
        } => changed(
            app.update(kind, id, &parse_input(&fields)?, if_version, &actor, now)
                .await,
        ),
        Command::Archive { kind, id } => changed(app.archive(kind, id, None, &actor, now).await),
        Command::Erase { kind, id, reason } => changed(app.erase(kind, id, &reason, &actor, now).await),
        Command::PersonalData { kind, id } => personal_data(&store, kind, id, now).await,
        Command::Stage { deal_id, stage } => changed(app.move_deal(deal_id, &stage, None, &actor, now).await),
        Command::Close {
            deal_id,
            outcome,
            reason,
        } => changed(
            app.close_deal(deal_id, &outcome, reason.as_deref(), None, &actor, now)
                .await,
        ),
        Command::Interaction { fields, occurred_at } => changed(
            app.log_interaction(&parse_input(&fields)?, &actor, occurred_at.unwrap_or(now))
                .await,
        ),
        Command::Show { kind, id } => show(&app, kind, id).await,
        Command::Events { after, limit } => events(&store, after, limit).await,
        Command::Verify => verify(&store).await,
        Command::Report {
            report,
            as_of,
            as_recorded,
            every,
            since,
            scope,
        } => {
            let trend = every.zip(since);
            let cut = projections::Cut::asked(as_of, as_recorded)?;
            run_report(&app, report, scope, cut, trend, now).await
        }
        Command::History { kind, id } => history(&store, kind, id).await,
        Command::Timeline { kind, id } => timeline(&store, kind, id).await,
        Command::Audit {
            actor,
            recorded_since,
            recorded_until,
            occurred_since,
            occurred_until,
            after,
            limit,
        } => {
            let filter = eventstore::LogFilter {
                actor,
                recorded_since,
                recorded_until,
                occurred_since,
                occurred_until,
            };
            audit(&store, filter, after, limit).await
        }
        Command::Rebuild { rows_in_memory } => rebuild(&store, rows_in_memory).await,
        Command::Bench {
            reads: true, repeat, ..
        } => crate::read_bench::read_side(&store, &app.rules.pipeline, repeat, now)
            .await
            .map(|report| Output {
                refused: false,
                text: report.to_string(),
                value: serde_json::to_value(&report).unwrap_or(Value::Null),
            }),
        Command::Bench {
            clients,
            appends,
            plain,
            subjects,
            ..
        } => crate::bench::append_throughput(&store, clients, appends, !plain, subjects)
            .await
            .map(|report| Output {
                refused: false,
                text: report.to_string(),
                value: serde_json::to_value(&report).unwrap_or(Value::Null),
            }),
    };
    store.close().await;
    result
}

/// The actor of changes made from the command line: `--as USER_ID`, or `system`.
async fn acting_user(app: &App, user_id: Option<Uuid>) -> Result<Actor, String> {
    let mut actor = Actor::system();
    if let Some(user_id) = user_id {
        let user: User = app.load(RecordKind::User, user_id).await.map_err(describe)?;
        if user.registered.is_none() {
            return Err(format!("--as {user_id}: no such user"));
        }
        actor.id = user_id.to_string();
    }
    Ok(actor)
}

async fn webhook(
    store: &Store,
    command: WebhookCommand,
    actor: &Actor,
    reach: &crate::webhooks::Reach,
) -> Result<Output, String> {
    use crate::webhooks::{NewSubscription, Subscription, Table};
    let table = Table::open(store.url(), store.schema(), store.connect_wait())
        .await
        .map_err(|e| format!("cannot open the webhook tables: {e}"))?;
    let line = |s: &Subscription| {
        let wanted = match (s.event_types.is_empty(), s.kinds.is_empty()) {
            (true, true) => "every event".to_owned(),
            _ => [s.event_types.join(","), s.kinds.join(",")]
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let error = s
            .last_error
            .as_deref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        format!(
            "{}  {}  after {}  {}  {wanted}{error}",
            s.id, s.state, s.position, s.url
        )
    };
    let view = |s: &Subscription| serde_json::to_value(s).unwrap_or(Value::Null);
    let missing = |id: &str| format!("no webhook {id}");
    let failed = |e: crate::webhooks::WebhookError| e.to_string();
    let (value, text) = match command {
        WebhookCommand::Add {
            url,
            event_types,
            kinds,
            secret,
            description,
            after,
        } => {
            let mut input = domain::Input::new();
            input.insert("url".into(), json!(url));
            if !event_types.is_empty() {
                input.insert("event_types".into(), json!(event_types));
            }
            if !kinds.is_empty() {
                input.insert("kinds".into(), json!(kinds));
            }
            for (field, value) in [("secret", secret), ("description", description)] {
                if let Some(value) = value {
                    input.insert(field.into(), json!(value));
                }
            }
            if let Some(after) = after {
                input.insert("after".into(), json!(after));
            }
            let head = store.head().await.map_err(|e| e.to_string())?;
            let new = NewSubscription::parse(&input, head, &actor.id, reach).map_err(|errors| {
                let fields: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                fields.join("; ")
            })?;
            let made = table.create(&new, Utc::now()).await.map_err(failed)?;
            let mut value = view(&made);
            value["secret"] = json!(new.secret);
            let text = format!("{}\nsecret (shown this once): {}", line(&made), new.secret);
            (value, text)
        }
        WebhookCommand::List => {
            let all = table.list().await.map_err(failed)?;
            let text = if all.is_empty() {
                "no webhooks".to_owned()
            } else {
                all.iter().map(line).collect::<Vec<_>>().join("\n")
            };
            (json!({"items": all.iter().map(view).collect::<Vec<_>>()}), text)
        }
        WebhookCommand::Show { id } => {
            let found = table.get(&id).await.map_err(failed)?.ok_or_else(|| missing(&id))?;
            (view(&found), line(&found))
        }
        WebhookCommand::Rm { id } => {
            if !table.delete(&id).await.map_err(failed)? {
                return Err(missing(&id));
            }
            (json!({"deleted": id}), format!("deleted {id}"))
        }
        WebhookCommand::Resume { id } => {
            if !table.resume(&id, Utc::now()).await.map_err(failed)? {
                return Err(missing(&id));
            }
            let found = table.get(&id).await.map_err(failed)?.ok_or_else(|| missing(&id))?;
            (view(&found), line(&found))
        }
        WebhookCommand::Deliveries { id, limit } => {
            table.get(&id).await.map_err(failed)?.ok_or_else(|| missing(&id))?;
            let items = table.deliveries(&id, None, limit.clamp(1, 500)).await.map_err(failed)?;
            let text = items
                .iter()
                .map(|d| {
                    let outcome = match (&d.error, d.status) {
                        (None, Some(status)) => format!("ok {status}"),
                        (Some(error), _) => format!("failed: {error}"),
                        (None, None) => "failed".to_owned(),
                    };
                    format!(
                        "{}  position {}  {}  attempt {}  {}  {} ms",
                        d.attempted_at.format("%Y-%m-%d %H:%M:%S"),
                        d.position,
                        d.event_type,
                        d.attempt,
                        outcome,
                        d.millis
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            (json!({"items": items}), text)
        }
    };
    Ok(Output {
        value,
        text,
        refused: false,
    })
}

async fn user(app: &App, command: UserCommand, actor: &Actor, now: chrono::DateTime<Utc>) -> Result<Output, String> {
    let (user_id, registered) = match command {
        UserCommand::Add {
            name,
            department,
            role,
            email,
        } => {
            let outcome = app
                .register_user(&name, &department, &role, email.as_deref(), actor, now)
                .await
                .map_err(describe)?;
            (
                outcome.id,
                Some(json!({"name": name, "department": department, "role": role, "email": email})),
            )
        }
        UserCommand::Revoke { token_id } => {
            let token_id = token_id
                .strip_prefix("crm_")
                .map_or(token_id.as_str(), |rest| rest.split('_').next().unwrap_or(rest));
            if !app.store.revoke_token(token_id).await.map_err(|e| e.to_string())? {
                return Err(format!("no valid token has the id {token_id}"));
            }
            return Ok(Output {
                refused: false,
                value: json!({"revoked": token_id}),
                text: format!("token {token_id} revoked"),
            });
        }
        UserCommand::Token { user_id } => {
            let user: User = app.load(RecordKind::User, user_id).await.map_err(describe)?;
            if user.registered.is_none() {
                return Err(format!("no user has the id {user_id}"));
            }
            if user.erased {
                return Err(format!("user {user_id} was erased: it acts no more"));
            }
            (user_id, None)
        }
    };
    let token = crate::auth::issue(&app.store, user_id)
        .await
        .map_err(|e| e.to_string())?;
    let mut value = json!({"id": user_id, "token": token.token});
    if let (Some(Value::Object(fields)), Value::Object(out)) = (registered.clone(), &mut value) {
        out.extend(fields);
    }
    let registered_line = if registered.is_some() {
        format!("user {user_id} registered\n")
    } else {
        String::new()
    };
    Ok(Output {
        refused: false,
        value,
        text: format!("{registered_line}token (shown this once): {}", token.token),
    })
}

async fn serve(
    app: &App,
    addr: std::net::SocketAddr,
    listener: Option<tokio::net::TcpListener>,
    demo: Option<(usize, u64)>,
    options: crate::serve::Options,
) -> Result<Output, String> {
    if let Some((contacts, seed)) = demo
        && app.store.head().await.map_err(|e| e.to_string())? == 0
    {
        run_demo(&app.store, contacts, seed, None).await?;
    }
    crate::serve::run(app.clone(), addr, listener, options).await?;
    Ok(Output {
        refused: false,
        value: json!({"stopped": true}),
        text: String::new(),
    })
}

/// Records the demo's rebuild holds: every record of a demo of up to a
/// million contacts, each then written once (at 1M contacts, 3.2 min
/// against 9 min with the default bound of a store in service). Its plan
/// held as much already.
const DEMO_REBUILD_ROWS: usize = 2_000_000;

async fn demo(store: &Store, contacts: usize, seed: u64, until: Option<chrono::NaiveDate>) -> Result<Output, String> {
    let report = run_demo(store, contacts, seed, until).await?;
    // Fold the new history into the read models in one rebuild (the fast
    // path), so the first `serve` after the demo starts at once.
    projections::Projector::open_for_rebuild(store.clone(), DEMO_REBUILD_ROWS)
        .await
        .map_err(|e| format!("cannot open the read models: {e}"))?
        .rebuild()
        .await
        .map_err(|e| format!("cannot fold the demo into the read models: {e}"))?;
    Ok(Output {
        refused: false,
        text: format!(
            "demo history written: {} events; {} users, {} accounts, {} contacts, {} deals, {} interactions",
            report.events, report.users, report.accounts, report.contacts, report.deals, report.interactions
        ),
        value: serde_json::to_value(report).unwrap_or(Value::Null),
    })
}

async fn export(store: &Store, kind: RecordKind, json: bool) -> Result<Output, String> {
    if kind == RecordKind::User {
        return Err("users are not exported".into());
    }
    use futures_util::TryStreamExt as _;
    use std::io::Write as _;
    let projector = projector(store).await?;
    let mut chunks = std::pin::pin!(crate::csv_io::export(projector, kind));
    let failed = |e: std::io::Error| format!("cannot write the export: {e}");
    // Written as it is read: a page of records in memory at a time; with
    // --json as the object `{"csv": "..."}`, its text escaped chunk by chunk.
    let mut out = std::io::stdout().lock();
    if json {
        out.write_all(b"{\"csv\":\"").map_err(failed)?;
    }
    while let Some(chunk) = chunks.try_next().await.map_err(|e| e.to_string())? {
        if json {
            // Each chunk is whole CSV records, so whole characters.
            let text = std::str::from_utf8(&chunk).map_err(|e| e.to_string())?;
            let quoted = serde_json::to_string(text).map_err(|e| e.to_string())?;
            let escaped = quoted.get(1..quoted.len() - 1).unwrap_or_default();
            out.write_all(escaped.as_bytes()).map_err(failed)?;
        } else {
            out.write_all(&chunk).map_err(failed)?;
        }
    }
    if json {
        out.write_all(b"\"}\n").map_err(failed)?;
    }
    out.flush().map_err(failed)?;
    Ok(Output {
        refused: false,
        value: Value::Null,
        text: String::new(),
    })
}

async fn history(store: &Store, kind: RecordKind, id: Uuid) -> Result<Output, String> {
    let projector = projector(store).await?;
    let entries = crate::queries::history(&projector, kind, id)
        .await
        .map_err(|e| e.to_string())?;
    let value = serde_json::to_value(&entries).unwrap_or(Value::Null);
    Ok(Output {
        refused: false,
        text: crate::render::history(&value, &people(&projector).await?),
        value: json!({"items": value}),
    })
}

async fn timeline(store: &Store, kind: RecordKind, id: Uuid) -> Result<Output, String> {
    let projector = projector(store).await?;
    let items = crate::queries::timeline(&projector, kind, id)
        .await
        .map_err(|e| e.to_string())?;
    let value = serde_json::to_value(&items).unwrap_or(Value::Null);
    Ok(Output {
        refused: false,
        text: crate::render::timeline(&value, &people(&projector).await?),
        value: json!({"items": value}),
    })
}

/// The access document gathers a contact's data; a user's is its name and
/// The access document of a contact or a user; the other kinds hold no
/// personal data of their own.
async fn personal_data(
    store: &Store,
    kind: RecordKind,
    id: Uuid,
    now: chrono::DateTime<Utc>,
) -> Result<Output, String> {
    let projector = projector(store).await?;
    let value = match kind {
        RecordKind::Contact => crate::queries::personal_data(&projector, id, now).await,
        RecordKind::User => crate::queries::user_personal_data(&projector, id, now).await,
        other => return Err(format!("{other} records hold no personal data of their own")),
    }
    .map_err(|e| e.to_string())?;
    Ok(Output {
        refused: false,
        text: serde_json::to_string_pretty(&value).unwrap_or_default(),
        value,
    })
}

async fn audit(store: &Store, filter: eventstore::LogFilter, after: u64, limit: usize) -> Result<Output, String> {
    let projector = projector(store).await?;
    let limit = limit.clamp(1, eventstore::READ_BATCH_MAX);
    let (items, next) = crate::queries::audit(&projector, &filter, after, limit)
        .await
        .map_err(|e| e.to_string())?;
    let value = json!({"items": items, "next_cursor": next});
    Ok(Output {
        refused: false,
        text: crate::render::audit(&value, &people(&projector).await?),
        value,
    })
}

async fn rebuild(store: &Store, rows_in_memory: usize) -> Result<Output, String> {
    let projector = projections::Projector::open_for_rebuild(store.clone(), rows_in_memory.max(1))
        .await
        .map_err(|e| format!("cannot open the read models: {e}"))?;
    let bar = progress_bar(
        store.head().await.map_err(|e| e.to_string())?,
        "rebuilding the read models",
    );
    let report = projector
        .rebuild_with_progress(|position| bar.set_position(position))
        .await;
    bar.finish_and_clear();
    let report = report.map_err(|e| e.to_string())?;
    Ok(Output {
        refused: false,
        value: json!({"events": report.events, "millis": report.millis}),
        text: format!(
            "rebuilt the read models from {} events in {} ms",
            report.events, report.millis
        ),
    })
}

fn progress_bar(total: u64, message: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

async fn run_demo(
    store: &Store,
    contacts: usize,
    seed: u64,
    until: Option<chrono::NaiveDate>,
) -> Result<crate::demo::DemoReport, String> {
    let until = until
        .unwrap_or_else(|| Utc::now().date_naive())
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    let options = crate::demo::DemoOptions { contacts, seed, until };
    let bar = progress_bar(0, "writing the demo history");
    let report = crate::demo::generate(store, &options, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    report
}

/// The mapping `--map` and `--map-file` name together (the file's first).
fn import_mapping(map: Option<&str>, file: Option<&std::path::Path>) -> Result<crate::csv_io::Mapping, String> {
    let mut mapping = crate::csv_io::Mapping::default();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        mapping = crate::csv_io::Mapping::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if let Some(map) = map {
        mapping = mapping.and(crate::csv_io::Mapping::parse(map).map_err(|e| format!("--map: {e}"))?);
    }
    Ok(mapping)
}

async fn import_file(
    app: &App,
    kind: RecordKind,
    file: &std::path::Path,
    mapping: &crate::csv_io::Mapping,
    actor: &Actor,
    warn_duplicates: bool,
) -> Result<Output, String> {
    use crate::csv_io::ImportError;
    let reader = std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let projector = projector(&app.store).await?;
    let (rows, received) = crate::csv_io::row_channel();
    let parser = tokio::task::spawn_blocking(move || crate::csv_io::parse_rows(std::io::BufReader::new(reader), &rows));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("importing {kind}s"));
    let request = crate::csv_io::ImportRequest {
        kind,
        mapping,
        limits: crate::csv_io::Limits {
            bytes_max: u64::MAX,
            rows_max: u64::MAX,
        },
        actor,
        warn_duplicates,
    };
    let report = crate::csv_io::import(app, &projector, request, received, |report| {
        bar.set_position(report.rows)
    })
    .await;
    bar.finish_and_clear();
    parser.await.map_err(|e| e.to_string())?;
    let report = match report {
        Ok(report) => report,
        Err(ImportError::Header(problem)) => {
            let mut text = format!("{}: {}", file.display(), problem.message);
            if !problem.understood.is_empty() {
                text += &format!("\n  understood: {}", problem.understood.join(", "));
            }
            if !problem.not_understood.is_empty() {
                text += &format!("\n  not understood: {}", problem.not_understood.join(", "));
            }
            return Err(text);
        }
        Err(ImportError::Failed(error)) => return Err(describe(error)),
        Err(other) => return Err(format!("{}: {other}", file.display())),
    };
    let mut text = format!(
        "{} rows: {} created, {} updated, {} unchanged, {} errors",
        report.rows, report.created, report.updated, report.unchanged, report.failed
    );
    if !report.ignored_columns.is_empty() {
        text += &format!("\n  columns left out: {}", report.ignored_columns.join(", "));
    }
    for error in &report.errors {
        text += &format!("\n  line {}: {}", error.line, error.message);
    }
    if report.failed > report.errors.len() as u64 {
        text += &format!("\n  ... and {} more", report.failed - report.errors.len() as u64);
    }
    let value = serde_json::to_value(&report).unwrap_or(Value::Null);
    if report.failed == 0 {
        Ok(Output {
            value,
            text,
            refused: false,
        })
    } else {
        Err(text)
    }
}

async fn projector(store: &Store) -> Result<std::sync::Arc<projections::Projector>, String> {
    projections::Projector::open(store.clone())
        .await
        .map_err(|e| format!("cannot bring the read models up to date: {e}"))
}

async fn run_report(
    app: &App,
    report: ReportKind,
    scope: ReportScope,
    cut: Option<projections::Cut>,
    trend: Option<(String, chrono::DateTime<Utc>)>,
    now: chrono::DateTime<Utc>,
) -> Result<Output, String> {
    use projections::reports::{DepartmentRules, PageRequest, QualityList, QualityThresholds, ReportRequest, Scope};
    let projector = projector(&app.store).await?;
    let kind = scope.kind.as_deref().and_then(projections::reports::record_kind);
    let mut filter = Scope {
        owner_id: scope.owner_id,
        department: scope.department,
        kind,
        missing: None,
        account_id: scope.account_id,
        lifecycle: scope.lifecycle,
        stage: scope.stage,
    };
    let page = PageRequest {
        cursor: scope.cursor,
        limit: scope.limit.clamp(1, projections::reports::REPORT_PAGE_MAX),
    };
    let thresholds = |stale_days, never_updated_days| QualityThresholds {
        stale_days,
        never_updated_days,
    };
    let (request, render): (ReportRequest, fn(&Value) -> String) = match report {
        ReportKind::Pipeline { from } => (
            ReportRequest::Pipeline {
                scope: filter,
                page,
                from,
            },
            crate::render::pipeline,
        ),
        ReportKind::DataQuality {
            stale_days,
            never_updated_days,
            list,
            missing,
        } => {
            filter.missing = missing;
            let thresholds = thresholds(stale_days, never_updated_days);
            match list {
                None => (
                    ReportRequest::DataQuality {
                        thresholds,
                        scope: filter,
                        page,
                    },
                    crate::render::data_quality,
                ),
                Some(name) => {
                    let list = QualityList::parse(&name).ok_or_else(|| {
                        format!("no data-quality list {name:?}; one of stale, never_updated, incomplete, duplicates, rotting_deals")
                    })?;
                    let request = ReportRequest::QualityList {
                        list,
                        thresholds,
                        scope: filter,
                        page,
                    };
                    (request, crate::render::quality_list)
                }
            }
        }
        ReportKind::NeglectedAccounts { days, not_touched_by } => (
            ReportRequest::NeglectedAccounts {
                days,
                departments: DepartmentRules {
                    expected: app.expected_departments.clone(),
                    not_touched_by,
                },
                scope: filter,
                page,
            },
            crate::render::neglected_accounts,
        ),
        ReportKind::Owners {
            stale_days,
            never_updated_days,
        } => (
            ReportRequest::Owners {
                thresholds: thresholds(stale_days, never_updated_days),
                scope: filter,
            },
            crate::render::owners,
        ),
    };
    if let Some((every, since)) = trend {
        let every = crate::trend::Every::parse(Some(&every))?;
        let to = cut.map_or(now, projections::Cut::at);
        let series = crate::trend::series(since, to, every)?;
        let asks = series
            .iter()
            .map(|point| Ok((point.as_of, crate::trend::at_point(&request, point)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let answers = projector
            .reports_over_time(&app.rules.pipeline, &asks)
            .await
            .map_err(|e| e.to_string())?;
        let points = crate::trend::points(&asks, answers);
        let text = crate::trend::csv_of(&points)?;
        let value = json!({"every": every.name(), "from": since, "to": to, "points": points});
        return Ok(Output {
            refused: false,
            text: text.trim_end().to_owned(),
            value,
        });
    }
    let value = projector
        .report(&app.rules.pipeline, &request, cut, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Output {
        refused: false,
        text: render(&value),
        value,
    })
}

fn changed(outcome: Result<Outcome, AppError>) -> Result<Output, String> {
    let outcome = outcome.map_err(describe)?;
    let text = match &outcome.appended {
        Some(appended) => format!(
            "{} {} is at version {} (log positions {}..={})",
            outcome.kind, outcome.id, outcome.version, appended.first_position, appended.last_position
        ),
        None => format!(
            "{} {} unchanged at version {}",
            outcome.kind, outcome.id, outcome.version
        ),
    };
    let value = json!({
        "kind": outcome.kind, "id": outcome.id, "version": outcome.version,
        "changed": outcome.appended.is_some(),
        "positions": outcome.appended.map(|a| [a.first_position, a.last_position]),
    });
    Ok(Output {
        value,
        text,
        refused: false,
    })
}

async fn show(app: &App, kind: RecordKind, id: Uuid) -> Result<Output, String> {
    if kind != RecordKind::User {
        // The view the HTTP API answers, and a table of it for people.
        let projector = projector(&app.store).await?;
        let view = projector
            .view(kind, id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no {kind} has the id {id}"))?;
        let names = names_in(&projector, &view).await?;
        return Ok(Output {
            refused: false,
            text: crate::render::record(&view, &names),
            value: view,
        });
    }
    let (version, archived, fields) = match kind {
        RecordKind::Contact => {
            let s: Contact = app.load(kind, id).await.map_err(describe)?;
            (s.version, s.archived, json!(s.fields))
        }
        RecordKind::Account => {
            let s: Account = app.load(kind, id).await.map_err(describe)?;
            (s.version, s.archived, json!(s.fields))
        }
        RecordKind::Deal => {
            let s: Deal = app.load(kind, id).await.map_err(describe)?;
            let mut fields = json!(s.fields);
            if let Value::Object(map) = &mut fields {
                map.insert("stage".into(), json!(s.stage));
                map.insert("status".into(), json!(s.status));
            }
            (s.version, s.archived, fields)
        }
        RecordKind::Interaction => {
            let s: domain::Interaction = app.load(kind, id).await.map_err(describe)?;
            (s.version, false, json!(s.logged))
        }
        RecordKind::User => {
            let s: User = app.load(kind, id).await.map_err(describe)?;
            (s.version, false, json!(s.registered))
        }
    };
    if version == 0 {
        return Err(format!("no {kind} has the id {id}"));
    }
    let value = json!({"kind": kind, "id": id, "version": version, "archived": archived, "fields": fields});
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    Ok(Output {
        value,
        text,
        refused: false,
    })
}

/// Everyone's name and department, by id.
async fn people(projector: &projections::Projector) -> Result<crate::render::Names, String> {
    let users = projector.users().await.map_err(|e| e.to_string())?;
    Ok(users
        .users
        .values()
        .map(|user| (user.id.to_string(), format!("{} ({})", user.name, user.department)))
        .collect())
}

/// The names of the people and the account a view refers to, by id.
async fn names_in(projector: &projections::Projector, view: &Value) -> Result<crate::render::Names, String> {
    let mut names = people(projector).await?;
    let account = view["account_id"]
        .as_str()
        .or(view["touched_account_id"].as_str())
        .and_then(|raw| Uuid::parse_str(raw).ok());
    if let Some(account) = account
        && let Some(found) = projector
            .view(RecordKind::Account, account)
            .await
            .map_err(|e| e.to_string())?
        && let Some(name) = found["name"].as_str()
    {
        names.insert(account.to_string(), name.to_owned());
    }
    Ok(names)
}

async fn events(store: &Store, after: u64, limit: usize) -> Result<Output, String> {
    let events = store.read_all(after, limit).await.map_err(|e| e.to_string())?;
    let items: Vec<Value> = events.iter().map(crate::wire::event_json).collect();
    let text = events
        .iter()
        .map(|e| {
            format!(
                "{:>8}  {}  {:<18} {} v{}  by {}",
                e.position,
                e.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                e.event_type,
                e.stream_id,
                e.version,
                e.actor
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Output {
        refused: false,
        value: json!({"items": items}),
        text,
    })
}

async fn verify(store: &Store) -> Result<Output, String> {
    let report = store.verify().await.map_err(|e| e.to_string())?;
    // The same object as `GET /v1/admin/verify`, passed or not.
    let value = json!({"ok": report.ok, "events": report.events, "first_bad_position": report.first_bad_position, "head_hash": report.head_hash});
    let text = match report.first_bad_position {
        Some(position) if !report.ok => format!(
            "the log fails verification: the event at position {position} was altered or removed ({} events before it are intact)",
            report.events
        ),
        _ if !report.ok => "the log fails verification".to_owned(),
        _ => format!(
            "ok: {} events, chain intact; head hash {}",
            report.events, report.head_hash
        ),
    };
    Ok(Output {
        value,
        text,
        refused: !report.ok,
    })
}

impl Cli {
    /// True for `crm serve`, which logs requests.
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
}

/// Logs to standard error: `CRM_LOG` sets the filter (default `info` for
/// `serve`, `warn` otherwise), `CRM_LOG_FORMAT=json` gives JSON lines.
fn init_logging(serving: bool) {
    use tracing_subscriber::EnvFilter;
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

/// The whole `crm` program: parse arguments (clap exits with 2 on bad
/// usage), set up logging, run, and turn the outcome into an exit code.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error, std::env::args().any(|arg| arg == "--json")),
    };
    init_logging(cli.is_serve());
    run(cli).await
}

/// Bad usage exits with 2, as clap does; with `--json` the message is the
/// JSON every other error is (`{"error": ...}`, on standard output), so a
/// script reads one shape whatever went wrong. Help and the version print
/// as they always do.
fn usage_error(error: &clap::Error, json: bool) -> ExitCode {
    let code = u8::try_from(error.exit_code()).unwrap_or(2);
    // Help and the version go to standard output, with 0.
    if !json || !error.use_stderr() {
        let _ = error.print();
        return ExitCode::from(code);
    }
    let message = error.render().to_string();
    let message = message.trim().trim_start_matches("error: ");
    println!("{}", json!({ "error": message }));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
