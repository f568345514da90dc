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
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The user id recorded as the actor of changes made from the command line.
    #[arg(long = "as", global = true, env = "CRM_ACTOR", value_name = "USER_ID")]
    actor: Option<Uuid>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage users, the people who act.
    User {
        #[command(subcommand)]
        command: UserCommand,
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
    /// Measure append throughput on the configured database (use a scratch one).
    Bench {
        /// Concurrent clients; each appends single events to its own streams.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Appends per client.
        #[arg(long, default_value_t = 1000)]
        appends: usize,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Register a user.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        department: String,
        /// admin, member or viewer.
        #[arg(long)]
        role: String,
    },
}

/// Runs the command line and turns the outcome into an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let config = Config {
        database: DatabaseUrl(cli.database.clone()),
        schema: cli.schema.clone(),
    };
    let json = cli.json;
    match execute(cli, &config).await {
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
}

fn print(output: &Output, json: bool) {
    if json {
        println!("{}", output.value);
    } else if !output.text.is_empty() {
        println!("{}", output.text);
    }
}

async fn open(config: &Config) -> Result<Store, String> {
    let options = StoreOptions {
        schema: config.schema.clone(),
        ..StoreOptions::default()
    };
    Store::open(&config.database.0, &options)
        .await
        .map_err(|e| format!("cannot open {:?}: {e}", config.database))
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

async fn execute(cli: Cli, config: &Config) -> Result<Output, String> {
    let store = open(config).await?;
    let app = App::new(store.clone(), Rules::default());
    let mut actor = Actor::system();
    if let Some(user_id) = cli.actor {
        let user: User = app.load(RecordKind::User, user_id).await.map_err(describe)?;
        if user.registered.is_none() {
            return Err(format!("--as {user_id}: no such user"));
        }
        actor.id = user_id.to_string();
    }
    let now = Utc::now();
    let result = match cli.command {
        Command::User {
            command: UserCommand::Add { name, department, role },
        } => {
            let outcome = app
                .register_user(&name, &department, &role, &actor, now)
                .await
                .map_err(describe)?;
            Ok(Output {
                value: json!({"id": outcome.id, "name": name, "department": department, "role": role}),
                text: format!("user {} registered", outcome.id),
            })
        }
        Command::Create { kind, fields } => {
            let input = parse_input(&fields)?;
            changed(app.create(kind, &input, &actor, now).await.map_err(describe)?)
        }
        Command::Update {
            kind,
            id,
            fields,
            if_version,
        } => {
            let input = parse_input(&fields)?;
            changed(
                app.update(kind, id, &input, if_version, &actor, now)
                    .await
                    .map_err(describe)?,
            )
        }
        Command::Archive { kind, id } => changed(app.archive(kind, id, None, &actor, now).await.map_err(describe)?),
        Command::Stage { deal_id, stage } => changed(
            app.move_deal(deal_id, &stage, None, &actor, now)
                .await
                .map_err(describe)?,
        ),
        Command::Close {
            deal_id,
            outcome,
            reason,
        } => changed(
            app.close_deal(deal_id, &outcome, reason.as_deref(), None, &actor, now)
                .await
                .map_err(describe)?,
        ),
        Command::Interaction { fields, occurred_at } => {
            let input = parse_input(&fields)?;
            changed(
                app.log_interaction(&input, &actor, occurred_at.unwrap_or(now))
                    .await
                    .map_err(describe)?,
            )
        }
        Command::Show { kind, id } => show(&app, kind, id).await,
        Command::Events { after, limit } => events(&store, after, limit).await,
        Command::Verify => verify(&store).await,
        Command::Bench { clients, appends } => {
            crate::bench::append_throughput(&store, clients, appends)
                .await
                .map(|report| Output {
                    text: report.to_string(),
                    value: serde_json::to_value(&report).unwrap_or(Value::Null),
                })
        }
    };
    store.close().await;
    result
}

fn changed(outcome: Outcome) -> Result<Output, String> {
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
    Ok(Output { value, text })
}

async fn show(app: &App, kind: RecordKind, id: Uuid) -> Result<Output, String> {
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
    Ok(Output { value, text })
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
        value: json!({"items": items}),
        text,
    })
}

async fn verify(store: &Store) -> Result<Output, String> {
    let report = store.verify().await.map_err(|e| e.to_string())?;
    if !report.ok {
        return Err(format!(
            "the log fails verification: the event at position {} was altered or removed ({} events before it are intact)",
            report.first_bad_position.unwrap_or_default(),
            report.events
        ));
    }
    Ok(Output {
        value: json!({"ok": true, "events": report.events, "first_bad_position": null, "head_hash": report.head_hash}),
        text: format!(
            "ok: {} events, chain intact; head hash {}",
            report.events, report.head_hash
        ),
    })
}

/// Parses arguments; clap itself exits with 2 on bad usage.
pub fn parse() -> Cli {
    Cli::parse()
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
