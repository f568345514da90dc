//! CSV import and export, shared by the command line and the HTTP API.
//!
//! Import: a header row names the columns (the record's fields). Rows are
//! matched to records by `external_id`, else by `id`, so importing the same
//! file twice changes nothing. `created_at` (records) and `occurred_at`
//! (interactions) keep the history of a legacy system. References may name
//! the other system's ids: `account_external_id`, `contact_external_id`,
//! `deal_external_id`. One bad row is reported by its line and the others go
//! on. Rows are parsed as they arrive, so a large file is never held whole.
//!
//! Export: the current (not archived) records, in columns that import again.

use chrono::{DateTime, NaiveDate, Utc};
use domain::{DealStatus, Input, RecordKind};
use std::sync::Arc;

use projections::Projector;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::{Actor, App, AppError};

/// Most rows waiting between the parser and the importer.
const ROWS_IN_FLIGHT_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub errors: Vec<LineError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// One parsed row: its line in the file and its cells by column name.
pub type Row = Result<(u64, Vec<(String, String)>), LineError>;

/// Parses CSV from a blocking reader, sending rows as they are read.
pub fn parse_rows(reader: impl std::io::Read, rows: &mpsc::Sender<Row>) {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = match csv.headers() {
        Ok(headers) => headers.iter().map(str::to_owned).collect::<Vec<_>>(),
        Err(error) => {
            let _ = rows.blocking_send(Err(LineError {
                line: 1,
                message: format!("the header row is not CSV: {error}"),
            }));
            return;
        }
    };
    for record in csv.records() {
        let row = match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                Ok((
                    line,
                    headers.iter().cloned().zip(record.iter().map(str::to_owned)).collect(),
                ))
            }
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                Err(LineError {
                    line,
                    message: format!("not valid CSV: {error}"),
                })
            }
        };
        if rows.blocking_send(row).is_err() {
            return;
        }
    }
}

/// A channel for `parse_rows` to fill and `import` to drain.
pub fn row_channel() -> (mpsc::Sender<Row>, mpsc::Receiver<Row>) {
    mpsc::channel(ROWS_IN_FLIGHT_MAX)
}

fn split_list(cell: &str) -> Value {
    Value::Array(
        cell.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| json!(s))
            .collect(),
    )
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|date| date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("{raw:?} is not a time (RFC 3339) or a date (YYYY-MM-DD)"))
}

/// What a row says beyond the record's own fields.
#[derive(Debug, Default)]
struct RowMeta {
    id: Option<Uuid>,
    external_id: Option<String>,
    at: Option<DateTime<Utc>>,
    status: Option<String>,
    /// `{kind}_id` fields the row names by another system's id: (field, kind, external id).
    references: Vec<(String, RecordKind, String)>,
}

/// Turns a row's cells into record input; empty cells are null.
fn row_input(kind: RecordKind, cells: Vec<(String, String)>) -> Result<(Input, RowMeta), String> {
    let mut input = Input::new();
    let mut meta = RowMeta::default();
    let (mut value_minor, mut currency) = (None, None);
    for (column, cell) in cells {
        let empty = cell.is_empty();
        match column.as_str() {
            "id" => {
                meta.id = (!empty)
                    .then(|| Uuid::parse_str(&cell).map_err(|_| format!("id {cell:?} is not a UUID")))
                    .transpose()?
            }
            "updated_at" => {}
            "created_at" | "occurred_at" => {
                meta.at = (!empty)
                    .then(|| parse_time(&cell))
                    .transpose()
                    .map_err(|e| format!("{column}: {e}"))?
            }
            "status" if kind == RecordKind::Deal => meta.status = (!empty).then_some(cell),
            "amount_value_minor" => value_minor = (!empty).then_some(cell),
            "amount_currency" => currency = (!empty).then_some(cell),
            "tags" | "contact_ids" => {
                input.insert(column, if empty { Value::Null } else { split_list(&cell) });
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
                    let kind = target.parse::<RecordKind>()?;
                    meta.references.push((format!("{target}_id"), kind, cell));
                }
            }
            _ => {
                if column == "external_id" && !empty {
                    meta.external_id = Some(cell.clone());
                }
                input.insert(column, if empty { Value::Null } else { json!(cell) });
            }
        }
    }
    match (value_minor, currency) {
        (None, None) => {}
        (Some(value), Some(currency)) => {
            let value: i64 = value
                .parse()
                .map_err(|_| format!("amount_value_minor {value:?} is not a whole number"))?;
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
    Created,
    Updated,
    Unchanged,
}

/// Imports rows of `kind` as `actor`, one command per row.
pub async fn import(
    app: &App,
    projector: &Projector,
    kind: RecordKind,
    mut rows: mpsc::Receiver<Row>,
    actor: &Actor,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, AppError> {
    let mut report = ImportReport::default();
    let mut n_rows = 0;
    while let Some(row) = rows.recv().await {
        n_rows += 1;
        progress(n_rows);
        let (line, cells) = match row {
            Ok(row) => row,
            Err(error) => {
                report.errors.push(error);
                continue;
            }
        };
        match import_row(app, projector, kind, cells, actor).await {
            Ok(Effect::Created) => report.created += 1,
            Ok(Effect::Updated) => report.updated += 1,
            Ok(Effect::Unchanged) => report.unchanged += 1,
            Err(RowError::Refused(message)) => report.errors.push(LineError { line, message }),
            Err(RowError::Failed(error)) => return Err(error),
        }
    }
    Ok(report)
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

async fn import_row(
    app: &App,
    projector: &Projector,
    kind: RecordKind,
    cells: Vec<(String, String)>,
    actor: &Actor,
) -> Result<Effect, RowError> {
    let (mut input, meta) = row_input(kind, cells).map_err(RowError::Refused)?;
    for (field, target, external_id) in &meta.references {
        let id = holder(app, *target, external_id)
            .await?
            .ok_or_else(|| RowError::Refused(format!("{target}_external_id {external_id:?} names no live {target}")))?;
        input.insert(field.clone(), json!(id));
    }
    let now = Utc::now();
    // Match by external id; failing that, by our own id if that record exists.
    let by_external_id = match meta.external_id.as_deref() {
        Some(external_id) => holder(app, kind, external_id).await?,
        None => None,
    };
    let mut existing = match (by_external_id, meta.id) {
        (Some(id), _) => Some(id),
        (None, Some(id)) if record_exists(projector, kind, id).await? => Some(id),
        _ => None,
    };
    let outcome = loop {
        let written = match (kind, existing) {
            (RecordKind::Interaction, Some(_)) => return Ok(Effect::Unchanged),
            (RecordKind::Interaction, None) => {
                app.log_interaction(&strip(input.clone(), &["occurred_at"]), actor, meta.at.unwrap_or(now))
                    .await
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
        projector
            .wait_until(appended.last_position)
            .await
            .map_err(|e| RowError::Failed(e.into()))?;
    }
    let mut changed = outcome.appended.is_some();
    if let Some(status) = meta.status.as_deref() {
        changed |= close_if_needed(app, projector, outcome.id, status, actor, meta.at.unwrap_or(now)).await?;
    }
    Ok(match (existing, changed) {
        (None, _) => Effect::Created,
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

async fn record_exists(projector: &Projector, kind: RecordKind, id: Uuid) -> Result<bool, RowError> {
    let view = projector.view(kind, id).await.map_err(|e| RowError::Failed(e.into()))?;
    Ok(view.is_some())
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
    let keys = projections::Keys {
        deals: [deal_id].into(),
        ..projections::Keys::default()
    };
    let current = projector
        .records(&keys)
        .await
        .map_err(|e| RowError::Failed(e.into()))?
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
                projector
                    .wait_until(appended.last_position)
                    .await
                    .map_err(|e| RowError::Failed(e.into()))?;
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
