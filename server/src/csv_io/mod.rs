//! CSV import and export, shared by the command line and the HTTP API.
//!
//! Import: a header row names the columns. A column named like a field
//! feeds it; a mapping (`header::Mapping`) says what another system's
//! columns hold, and a header neither explains is refused before any row
//! is read, with the columns that were and were not understood. Rows are
//! matched to records by `external_id`, else by `id`, so importing the same
//! file twice changes nothing. `created_at` (records), `occurred_at`
//! (interactions), `closed_at` (deals) and `last_activity_at` keep what a
//! legacy system knew; references may name records by the other system's
//! ids, by name or email (`resolve`). One bad row is reported by its line
//! and the others go on. Rows are parsed as they arrive, so a large file is
//! never held whole, and `Limits` caps what one import may bring.
//!
//! Export: the current (not archived) records, in columns that import again.

mod header;
mod resolve;

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use domain::{DealStatus, Input, RecordKind};
use futures_util::StreamExt as _;
use futures_util::future::{Either, FutureExt as _, Shared, ready};
use projections::Projector;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use header::{HeaderProblem, Mapping};

use crate::app::{Actor, App, AppError};
use header::Plan;
use resolve::Resolver;

/// Most rows waiting between the parser and the importer.
const ROWS_IN_FLIGHT_MAX: usize = 256;
/// Row errors an import report lists; `failed` counts them all.
const ERRORS_LISTED_MAX: usize = 1_000;

/// What one import may bring: past either cap it stops (HTTP 413), and the
/// rows before stay imported (a second run of the file changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes_max: u64,
    pub rows_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bytes_max: 1 << 30,
            rows_max: 1_000_000,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Rows read (the header not counted).
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows refused; the first `ERRORS_LISTED_MAX` are in `errors`.
    pub failed: u64,
    pub errors: Vec<LineError>,
    /// Columns of the file left out: named so by the mapping, or feeding no
    /// field of an import that had a mapping.
    pub ignored_columns: Vec<String>,
    /// With the duplicate warning asked for: rows whose new record shares
    /// an email, phone, name within an account or domain with a live one
    /// (the row is imported either way); the first `ERRORS_LISTED_MAX`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub possible_duplicates: Option<Vec<LineDuplicates>>,
}

/// A row of an import whose new record looks like a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineDuplicates {
    pub line: u64,
    /// The record the row made.
    pub id: uuid::Uuid,
    /// The live records it shares a value with, and which.
    pub records: Vec<PossibleDuplicate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PossibleDuplicate {
    pub id: uuid::Uuid,
    pub reason: String,
}

impl ImportReport {
    fn refused(&mut self, error: LineError) {
        self.failed += 1;
        if self.errors.len() < ERRORS_LISTED_MAX {
            self.errors.push(error);
        }
    }
}

/// A row refused, by its line in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// Why an import stopped as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The header: nothing was imported.
    #[error("{}", .0.message)]
    Header(HeaderProblem),
    #[error("the file has more than {rows_max} rows; the first {rows_max} were imported")]
    TooManyRows { rows_max: u64, report: ImportReport },
    /// The file could not be read on (or grew past the byte cap).
    #[error("reading the file stopped after {} rows: {message}", report.rows)]
    Broken { message: String, report: ImportReport },
    #[error(transparent)]
    Failed(#[from] AppError),
}

/// What the parser sends: the header first, then rows by their line.
#[derive(Debug)]
pub enum Parsed {
    Header(Vec<String>),
    Row(u64, csv::StringRecord),
    Bad(LineError),
    /// Reading failed: the parser stops.
    Broken(String),
}

/// Notes whether the file's first line ends in CRLF, as bytes pass.
struct LineEnds<R> {
    inner: R,
    last: u8,
    crlf: Option<bool>,
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.crlf.is_none() {
            for &byte in &buf[..n] {
                if byte == b'\n' {
                    self.crlf = Some(self.last == b'\r');
                    break;
                }
                self.last = byte;
            }
        }
        Ok(n)
    }
}

/// Parses CSV from a blocking reader, sending the header and then rows as
/// they are read.
pub fn parse_rows(reader: impl Read, rows: &mpsc::Sender<Parsed>) {
    let reader = LineEnds {
        inner: reader,
        last: 0,
        crlf: None,
    };
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = match csv.headers() {
        Ok(header) if header.iter().all(str::is_empty) => Parsed::Bad(LineError {
            line: 1,
            message: "the file is empty: it needs a header row naming its columns".into(),
        }),
        Ok(header) => Parsed::Header(header.iter().map(str::to_owned).collect()),
        Err(error) if matches!(error.kind(), csv::ErrorKind::Io(_)) => Parsed::Broken(error.to_string()),
        Err(error) => Parsed::Bad(LineError {
            line: 1,
            message: format!("the header row is not CSV: {error}"),
        }),
    };
    let go_on = matches!(header, Parsed::Header(_));
    if rows.blocking_send(header).is_err() || !go_on {
        return;
    }
    // The csv reader counts a record's line before it has read the LF that
    // ends the line before it, so in a CRLF file its lines run one low.
    let offset = u64::from(csv.get_ref().crlf == Some(true));
    let mut record = csv::StringRecord::new();
    loop {
        let parsed = match csv.read_record(&mut record) {
            Ok(false) => return,
            Ok(true) => Parsed::Row(record.position().map_or(0, |p| p.line() + offset), record.clone()),
            Err(error) if matches!(error.kind(), csv::ErrorKind::Io(_)) => {
                let _ = rows.blocking_send(Parsed::Broken(error.to_string()));
                return;
            }
            Err(error) => Parsed::Bad(LineError {
                line: error.position().map_or(0, |p| p.line() + offset),
                message: format!("not valid CSV: {error}"),
            }),
        };
        if rows.blocking_send(parsed).is_err() {
            return;
        }
    }
}

/// A channel for `parse_rows` to fill and `import` to drain.
pub fn row_channel() -> (mpsc::Sender<Parsed>, mpsc::Receiver<Parsed>) {
    mpsc::channel(ROWS_IN_FLIGHT_MAX)
}

fn split_list(cell: &str) -> impl Iterator<Item = &str> {
    cell.split(';').map(str::trim).filter(|s| !s.is_empty())
}

/// A time as RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD` (UTC), or
/// in the mapping's `@date_format`.
fn parse_time(raw: &str, format: Option<&str>) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(time.with_timezone(&Utc));
    }
    let formats = format
        .into_iter()
        .chain(["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]);
    for format in formats {
        if let Ok(time) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(time.and_utc());
        }
    }
    for format in format.into_iter().chain(["%Y-%m-%d"]) {
        if let Ok(date) = NaiveDate::parse_from_str(raw, format) {
            return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
        }
    }
    Err(match format {
        Some(format) => format!("{raw:?} is not a time in {format:?}, RFC 3339 or YYYY-MM-DD"),
        None => format!("{raw:?} is not a time (RFC 3339) or a date (YYYY-MM-DD)"),
    })
}

/// An amount in major units (`12500`, `12500.50`) in minor units of `currency`.
fn minor_units(raw: &str, currency: &str) -> Result<i64, String> {
    let code = domain::values::CurrencyCode::parse(currency).map_err(|e| format!("amount_currency: {e}"))?;
    let digits = code.minor_digits() as usize;
    let bad = || format!("amount {raw:?} is not an amount in {currency} such as 1250.50");
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits_only = whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit());
    if whole.is_empty() || fraction.len() > digits || !digits_only {
        return Err(bad());
    }
    format!("{whole}{fraction:0<digits$}").parse::<i64>().map_err(|_| bad())
}

/// A reference the row names another system's way, resolved before writing.
#[derive(Debug)]
enum Lookup {
    /// By the other system's id alone (`account_external_id`, ...).
    External(RecordKind, String),
    Record(RecordKind, String),
    Records(RecordKind, Vec<String>),
    User(String),
}

/// What a row says beyond the record's own fields.
#[derive(Debug, Default)]
struct RowMeta {
    id: Option<Uuid>,
    external_id: Option<String>,
    at: Option<DateTime<Utc>>,
    status: Option<String>,
    closed_at: Option<DateTime<Utc>>,
    last_activity_at: Option<DateTime<Utc>>,
    /// The user an interaction is by, as the other system named them.
    actor: Option<String>,
    /// Fields to fill from references: (field, how it is named).
    lookups: Vec<(String, Lookup)>,
}

/// Turns a row's cells into record input; empty cells are null.
fn row_input(kind: RecordKind, cells: Vec<(String, String)>, plan: &Plan) -> Result<(Input, RowMeta), String> {
    let mut input = Input::new();
    let mut meta = RowMeta::default();
    let (mut value_minor, mut major, mut currency) = (None, None, None);
    let time = |column: &str, cell: &str| {
        (!cell.is_empty())
            .then(|| parse_time(cell, plan.date_format.as_deref()))
            .transpose()
            .map_err(|e| format!("{column}: {e}"))
    };
    for (column, cell) in cells {
        let empty = cell.is_empty();
        match column.as_str() {
            "id" => {
                meta.id = (!empty)
                    .then(|| Uuid::parse_str(&cell).map_err(|_| format!("id {cell:?} is not a UUID")))
                    .transpose()?
            }
            "updated_at" => {}
            "created_at" | "occurred_at" => meta.at = time(&column, &cell)?,
            "closed_at" => meta.closed_at = time(&column, &cell)?,
            "last_activity_at" => meta.last_activity_at = time(&column, &cell)?,
            "status" if kind == RecordKind::Deal => meta.status = (!empty).then(|| cell.to_lowercase()),
            // A stage called won or lost (a legacy pipeline's last stages)
            // closes the deal where it stands.
            "stage" if kind == RecordKind::Deal && ["won", "lost"].contains(&cell.to_lowercase().as_str()) => {
                meta.status.get_or_insert(cell.to_lowercase());
            }
            // A date written another way (the mapping's format, or with a
            // time of day) is written the ISO way; one that is no date at
            // all goes on as it is, for the field's own error.
            "expected_close" if !empty => {
                let date =
                    parse_time(&cell, plan.date_format.as_deref()).map_or(cell, |t| t.format("%Y-%m-%d").to_string());
                input.insert(column, json!(date));
            }
            "amount_value_minor" => value_minor = (!empty).then_some(cell),
            "amount" => major = (!empty).then_some(cell),
            "amount_currency" => currency = (!empty).then_some(cell),
            "tags" | "contact_ids" => {
                let list = split_list(&cell).map(|s| json!(s)).collect();
                input.insert(column, if empty { Value::Null } else { Value::Array(list) });
            }
            "custom" => {
                let custom = if empty {
                    Value::Null
                } else {
                    serde_json::from_str(&cell).map_err(|e| format!("custom is not a JSON object: {e}"))?
                };
                input.insert(column, custom);
            }
            reference @ ("account_external_id" | "contact_external_id" | "deal_external_id") => {
                if !empty {
                    let target = reference.trim_end_matches("_external_id");
                    meta.lookups.push((
                        format!("{target}_id"),
                        Lookup::External(target.parse::<RecordKind>()?, cell),
                    ));
                }
            }
            "account" | "contact" | "deal" if !empty => {
                let target = column.parse::<RecordKind>()?;
                meta.lookups
                    .push((format!("{column}_id"), Lookup::Record(target, cell)));
            }
            "contacts" if !empty => {
                let names = split_list(&cell).map(str::to_owned).collect();
                meta.lookups
                    .push(("contact_ids".into(), Lookup::Records(RecordKind::Contact, names)));
            }
            "owner" if !empty => meta.lookups.push(("owner_id".into(), Lookup::User(cell))),
            "actor" => meta.actor = (!empty).then_some(cell),
            "account" | "contact" | "deal" | "contacts" | "owner" => {}
            _ => {
                if column == "external_id" && !empty {
                    meta.external_id = Some(cell.clone());
                }
                input.insert(column, if empty { Value::Null } else { json!(cell) });
            }
        }
    }
    let value_minor = match (value_minor, major, &currency) {
        (Some(_), Some(_), _) => return Err("give amount or amount_value_minor, not both".into()),
        (Some(value), None, _) => Some(
            value
                .parse::<i64>()
                .map_err(|_| format!("amount_value_minor {value:?} is not a whole number"))?,
        ),
        (None, Some(major), Some(currency)) => Some(minor_units(&major, currency)?),
        (None, Some(_), None) => return Err("an amount needs its amount_currency".into()),
        (None, None, _) => None,
    };
    match (value_minor, currency) {
        (None, None) => {}
        (Some(value), Some(currency)) => {
            input.insert("amount".into(), json!({"value_minor": value, "currency": currency}));
        }
        _ => return Err("amount_value_minor and amount_currency go together".into()),
    }
    Ok((input, meta))
}

/// The live record of `kind` that holds `external_id`, from the log's
/// claims: exact, and one indexed lookup, however large the store.
async fn holder(app: &App, kind: RecordKind, external_id: &str) -> Result<Option<Uuid>, AppError> {
    let claim = domain::external_id_claim(kind, external_id);
    let stream = app.store.claim_holder(&claim).await?;
    Ok(stream
        .and_then(|stream| RecordKind::parse_stream_id(&stream))
        .map(|(_, id)| id))
}

enum Effect {
    Created(uuid::Uuid),
    Updated,
    Unchanged,
}

/// One import: what it brings, how its columns read, who runs it.
#[derive(Debug)]
pub struct ImportRequest<'a> {
    pub kind: RecordKind,
    pub mapping: &'a Mapping,
    pub limits: Limits,
    pub actor: &'a Actor,
    /// Name the likely duplicates each new contact or account makes
    /// (`ImportReport::possible_duplicates`); a lookup per created row.
    pub warn_duplicates: bool,
}

/// Imports the rows `parse_rows` sends, one command per row. `progress`
/// sees the report once the header is accepted and after every row.
pub async fn import(
    app: &App,
    projector: &Projector,
    request: ImportRequest<'_>,
    mut rows: mpsc::Receiver<Parsed>,
    mut progress: impl FnMut(&ImportReport),
) -> Result<ImportReport, ImportError> {
    let ImportRequest {
        kind,
        mapping,
        limits,
        actor,
        warn_duplicates,
    } = request;
    let refused = |message: String| {
        ImportError::Header(HeaderProblem {
            message,
            understood: Vec::new(),
            not_understood: Vec::new(),
        })
    };
    let plan = match rows.recv().await {
        Some(Parsed::Header(header)) => Plan::new(kind, &header, mapping).map_err(ImportError::Header)?,
        Some(Parsed::Bad(error)) => return Err(refused(error.message)),
        Some(Parsed::Broken(message)) => {
            return Err(ImportError::Broken {
                message,
                report: ImportReport::default(),
            });
        }
        Some(Parsed::Row(..)) | None => {
            return Err(refused(
                "the file is empty: it needs a header row naming its columns".into(),
            ));
        }
    };
    let mut report = ImportReport {
        ignored_columns: plan.ignored.clone(),
        ..ImportReport::default()
    };
    progress(&report);
    let resolver = Resolver::default();
    // Rows are written `ROWS_AT_ONCE` at a time (their appends share group
    // commits) and counted in file order. A row that names the same record
    // as one still in flight (its external id or id) waits for it, so the
    // file's last word on a record is the one that stays.
    let mut seen = 0u64;
    let mut recent: VecDeque<(String, Shared<oneshot::Receiver<()>>)> = VecDeque::new();
    let parsed = futures_util::stream::unfold(rows, |mut rows| async move { rows.recv().await.map(|p| (p, rows)) });
    let steps = parsed
        .map(|parsed| {
            let (line, record) = match parsed {
                Parsed::Row(line, record) => (line, record),
                Parsed::Bad(error) => {
                    seen += 1;
                    return Either::Left(ready(Step::Bad(error)));
                }
                Parsed::Broken(message) => return Either::Left(ready(Step::Broken(message))),
                Parsed::Header(_) => return Either::Left(ready(Step::Skip)),
            };
            if seen >= limits.rows_max {
                return Either::Left(ready(Step::TooMany));
            }
            seen += 1;
            let cells = plan.cells(&record);
            let key = ["external_id", "id"]
                .iter()
                .find_map(|field| cells.iter().find(|(f, c)| f == field && !c.is_empty()))
                .map(|(f, c)| format!("{f}:{c}"));
            let (done, finished) = oneshot::channel::<()>();
            let before = key.as_ref().and_then(|key| {
                recent
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, finished)| finished.clone())
            });
            if let Some(key) = key {
                recent.push_back((key, finished.shared()));
                if recent.len() > ROWS_AT_ONCE {
                    recent.pop_front();
                }
            }
            let row = Row {
                kind,
                cells,
                plan: &plan,
                actor,
            };
            let resolver = &resolver;
            Either::Right(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                let outcome = match import_row(app, projector, resolver, row).await {
                    Ok(Effect::Created(id)) if warn_duplicates => projector
                        .likely_duplicates(kind, id, projections::DUPLICATES_NAMED_MAX)
                        .await
                        .map(|shared| (Effect::Created(id), shared))
                        .map_err(|e| RowError::Failed(e.into())),
                    other => other.map(|effect| (effect, Vec::new())),
                };
                let _ = done.send(());
                Step::Row(line, outcome)
            })
        })
        .buffered(ROWS_AT_ONCE);
    if warn_duplicates {
        report.possible_duplicates = Some(Vec::new());
    }
    let mut steps = std::pin::pin!(steps);
    while let Some(step) = steps.next().await {
        match step {
            Step::Row(line, outcome) => {
                report.rows += 1;
                match outcome {
                    Ok((Effect::Created(id), shared)) => {
                        report.created += 1;
                        if let Some(listed) = report.possible_duplicates.as_mut()
                            && !shared.is_empty()
                            && listed.len() < ERRORS_LISTED_MAX
                        {
                            listed.push(LineDuplicates {
                                line,
                                id,
                                records: shared
                                    .into_iter()
                                    .map(|(id, reason)| PossibleDuplicate {
                                        id,
                                        reason: reason.to_owned(),
                                    })
                                    .collect(),
                            });
                        }
                    }
                    Ok((Effect::Updated, _)) => report.updated += 1,
                    Ok((Effect::Unchanged, _)) => report.unchanged += 1,
                    Err(RowError::Refused(message)) => report.refused(LineError { line, message }),
                    Err(RowError::Failed(error)) => return Err(error.into()),
                }
            }
            Step::Bad(error) => {
                report.rows += 1;
                report.refused(error);
            }
            Step::Broken(message) => return Err(ImportError::Broken { message, report }),
            Step::TooMany => {
                return Err(ImportError::TooManyRows {
                    rows_max: limits.rows_max,
                    report,
                });
            }
            Step::Skip => continue,
        }
        progress(&report);
    }
    Ok(report)
}

/// Rows of one import written at once.
const ROWS_AT_ONCE: usize = 32;

/// The live records a new one shares a value with, and which rule says so.
type Duplicates = Vec<(uuid::Uuid, &'static str)>;

/// What one parsed item came to, in file order.
enum Step {
    /// A row, with the likely duplicates of the record it created.
    Row(u64, Result<(Effect, Duplicates), RowError>),
    Bad(LineError),
    Broken(String),
    TooMany,
    Skip,
}

enum RowError {
    /// This row is wrong; report it and go on.
    Refused(String),
    /// The store failed; stop the import.
    Failed(AppError),
}

impl From<AppError> for RowError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Rejected(domain::DomainError::Validation(errors)) => Self::Refused(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            AppError::Rejected(rejection) => Self::Refused(rejection.to_string()),
            AppError::VersionMismatch { .. } | AppError::Taken { .. } => Self::Refused(error.to_string()),
            other => Self::Failed(other),
        }
    }
}

impl From<projections::ProjectionError> for RowError {
    fn from(error: projections::ProjectionError) -> Self {
        Self::Failed(error.into())
    }
}

/// One row on its way in.
struct Row<'a> {
    kind: RecordKind,
    cells: Vec<(String, String)>,
    plan: &'a Plan,
    actor: &'a Actor,
}

async fn import_row(app: &App, projector: &Projector, resolver: &Resolver, row: Row<'_>) -> Result<Effect, RowError> {
    let Row {
        kind,
        cells,
        plan,
        actor,
    } = row;
    let (mut input, meta) = row_input(kind, cells, plan).map_err(RowError::Refused)?;
    for (field, lookup) in &meta.lookups {
        let value = match lookup {
            Lookup::External(target, raw) => {
                let id = holder(app, *target, raw)
                    .await?
                    .ok_or_else(|| RowError::Refused(format!("{target}_external_id {raw:?} names no live {target}")))?;
                json!(id)
            }
            Lookup::Record(target, raw) => json!(resolver.record(app, projector, field, *target, raw).await?),
            Lookup::Records(target, names) => {
                let mut ids = Vec::with_capacity(names.len());
                for raw in names {
                    ids.push(json!(resolver.record(app, projector, field, *target, raw).await?));
                }
                Value::Array(ids)
            }
            Lookup::User(raw) => json!(resolver.user(projector, field, raw).await?),
        };
        input.insert(field.clone(), value);
    }
    let now = Utc::now();
    // Match by external id; failing that, by our own id if that record exists.
    let by_external_id = match meta.external_id.as_deref() {
        Some(external_id) => holder(app, kind, external_id).await?,
        None => None,
    };
    let mut existing = match (by_external_id, meta.id) {
        (Some(id), _) => Some(id),
        (None, Some(id)) if projector.view(kind, id).await?.is_some() => Some(id),
        _ => None,
    };
    let outcome = loop {
        let written = match (kind, existing) {
            (RecordKind::Interaction, Some(_)) => return Ok(Effect::Unchanged),
            (RecordKind::Interaction, None) => {
                let by = match &meta.actor {
                    Some(raw) => Actor {
                        id: resolver.user(projector, "actor", raw).await?.to_string(),
                        ..actor.clone()
                    },
                    None => actor.clone(),
                };
                let input = strip(input.clone(), &["occurred_at"]);
                app.log_interaction(&input, &by, meta.at.unwrap_or(now)).await
            }
            (_, None) => app.create(kind, &input, actor, meta.at.unwrap_or(now)).await,
            (_, Some(id)) => app.update(kind, id, &input, None, actor, now).await,
        };
        match written {
            // Another writer (a concurrent import, say) created the record
            // since it was looked up: this row updates that one instead.
            Err(AppError::Taken { holder, .. }) if existing.is_none() => existing = Some(holder),
            written => break written?,
        }
    };
    if let Some(appended) = &outcome.appended {
        projector.wait_until(appended.last_position).await?;
    }
    let mut changed = outcome.appended.is_some();
    if let Some(status) = meta.status.as_deref() {
        let at = meta.closed_at.or(meta.at).unwrap_or(now);
        changed |= close_if_needed(app, projector, outcome.id, status, actor, at).await?;
    }
    if let Some(at) = meta.last_activity_at {
        changed |= import_activity(app, projector, kind, outcome.id, actor, at.min(now)).await?;
    }
    Ok(match (existing, changed) {
        (None, _) => Effect::Created(outcome.id),
        (Some(_), true) => Effect::Updated,
        (Some(_), false) => Effect::Unchanged,
    })
}

fn strip(mut input: Input, keys: &[&str]) -> Input {
    for key in keys {
        input.remove(*key);
    }
    input
}

/// The record as the read models hold it: its row alone, with its meta.
async fn current(projector: &Projector, kind: RecordKind, id: Uuid) -> Result<projections::CrmModel, RowError> {
    let mut keys = projections::Keys::default();
    keys.of_kind_mut(kind).insert(id);
    Ok(projector.records(&keys).await?)
}

/// Brings over the last activity a previous system knew of, unless the
/// record was touched since (a second import of the file, or work done in
/// crm after the migration); true if that changed it.
async fn import_activity(
    app: &App,
    projector: &Projector,
    kind: RecordKind,
    id: Uuid,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<bool, RowError> {
    if kind == RecordKind::Interaction {
        return Ok(false);
    }
    let model = current(projector, kind, id).await?;
    let touched = model.meta(kind, id).map(|meta| meta.last_touched_at);
    if touched.is_none_or(|touched| touched >= at) {
        return Ok(false);
    }
    let outcome = app.import_activity(kind, id, actor, at).await?;
    if let Some(appended) = &outcome.appended {
        projector.wait_until(appended.last_position).await?;
    }
    Ok(outcome.appended.is_some())
}

/// Closes a deal the row says was won or lost; true if that changed it.
async fn close_if_needed(
    app: &App,
    projector: &Projector,
    deal_id: Uuid,
    status: &str,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<bool, RowError> {
    let current = current(projector, RecordKind::Deal, deal_id)
        .await?
        .deals
        .get(&deal_id)
        .map(|d| d.status);
    let wanted = match status {
        "open" => DealStatus::Open,
        "won" => DealStatus::Won,
        "lost" => DealStatus::Lost,
        other => return Err(RowError::Refused(format!("status {other:?} must be open, won or lost"))),
    };
    match current {
        Some(current) if current == wanted => Ok(false),
        Some(DealStatus::Open) => {
            let outcome = app
                .close_deal(deal_id, status, None, None, actor, at.min(Utc::now()))
                .await?;
            if let Some(appended) = outcome.appended {
                projector.wait_until(appended.last_position).await?;
            }
            Ok(true)
        }
        _ => Err(RowError::Refused(format!(
            "the deal is {current:?} and cannot become {status}"
        ))),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

/// The columns each kind exports, in order.
pub fn columns(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Contact => &[
            "id",
            "external_id",
            "name",
            "email",
            "phone",
            "title",
            "account_id",
            "owner_id",
            "lifecycle_stage",
            "tags",
            "custom",
            "created_at",
            "updated_at",
        ],
        RecordKind::Account => &[
            "id",
            "external_id",
            "name",
            "domain",
            "industry",
            "owner_id",
            "custom",
            "created_at",
            "updated_at",
        ],
        RecordKind::Deal => &[
            "id",
            "external_id",
            "title",
            "account_id",
            "contact_ids",
            "owner_id",
            "amount_value_minor",
            "amount_currency",
            "stage",
            "expected_close",
            "status",
            "created_at",
            "updated_at",
        ],
        RecordKind::Interaction => &[
            "id",
            "external_id",
            "kind",
            "contact_id",
            "account_id",
            "deal_id",
            "summary",
            "direction",
            "occurred_at",
        ],
        RecordKind::User => &[],
    }
}

/// The current records of `kind` as CSV, archived ones left out.
/// Records per page of an export: what one step holds in memory.
const EXPORT_PAGE: usize = 1_000;

/// The current records of `kind` (not archived; every interaction) as CSV
/// that imports again, a chunk at a time: the header row, then one chunk per
/// page of records in id order. Memory stays bounded by a page however many
/// records there are; a record written during the export is in it if its
/// page is read after the write.
pub fn export(
    projector: Arc<Projector>,
    kind: RecordKind,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    use futures_util::StreamExt as _;
    let header = futures_util::stream::once(async move { csv_chunk(|out| out.write_record(columns(kind))) });
    // The state is the cursor of the next page; `None` once the last was read.
    let pages = futures_util::stream::try_unfold(Some(None), move |cursor: Option<Option<Uuid>>| {
        let projector = Arc::clone(&projector);
        async move {
            let Some(after) = cursor else { return Ok(None) };
            let (page, next) = projector
                .page(kind, after, EXPORT_PAGE)
                .await
                .map_err(std::io::Error::other)?;
            let chunk = csv_chunk(|out| {
                for view in &page {
                    out.write_record(export_row(kind, view))?;
                }
                Ok(())
            })?;
            Ok(Some((chunk, next.map(Some))))
        }
    });
    header.chain(pages)
}

fn csv_chunk(
    write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> Result<(), csv::Error>,
) -> Result<Vec<u8>, std::io::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    write(&mut out).map_err(std::io::Error::other)?;
    out.into_inner().map_err(|e| std::io::Error::other(e.into_error()))
}

/// A record's view as a row of `columns(kind)`.
fn export_row(kind: RecordKind, view: &Value) -> Vec<String> {
    let amount = view.get("amount");
    columns(kind)
        .iter()
        .map(|column| match *column {
            "amount_value_minor" => amount.and_then(|a| a.get("value_minor")).map(cell).unwrap_or_default(),
            "amount_currency" => amount.and_then(|a| a.get("currency")).map(cell).unwrap_or_default(),
            column => cell(view.get(column).unwrap_or(&Value::Null)),
        })
        .collect()
}
