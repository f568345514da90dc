//! `crm bench --reads`: the read side of a given store, measured in this
//! process through the calls the HTTP handlers make (no HTTP in between):
//! start-up, a record by id, list and search pages, every report and a
//! report page, narrowed reports, a report as of a past date, and the
//! process's peak memory. Run it against a copy of a real store, or a
//! `crm demo` of the size in question. Kept out of `cargo test`.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::{Pipeline, RecordKind};
use eventstore::Store;
use projections::reports::{DepartmentRules, PageRequest, QualityList, QualityThresholds, ReportRequest, Scope};
use projections::{ListFilter, Projector};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// One question and how long its answers took.
#[derive(Debug, Serialize)]
pub struct ReadFigure {
    pub name: String,
    /// Answers measured.
    pub runs: usize,
    pub median_millis: f64,
    pub max_millis: f64,
    /// Size of one answer as JSON.
    pub answer_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct ReadBench {
    pub backend: &'static str,
    /// Log positions, and live records of each kind.
    pub events: u64,
    pub contacts: u64,
    pub accounts: u64,
    pub deals: u64,
    /// Opening the read models until the first answer could be given.
    pub start_up_millis: f64,
    pub figures: Vec<ReadFigure>,
    /// The most memory this process held (`VmHWM`, when the system says)
    /// after every question but the report as of a past date, and after it.
    pub peak_memory_mib: Option<u64>,
    pub peak_memory_mib_with_as_of: Option<u64>,
}

impl std::fmt::Display for ReadBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} events; {} contacts, {} accounts, {} deals; start-up {:.0} ms",
            self.backend, self.events, self.contacts, self.accounts, self.deals, self.start_up_millis
        )?;
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(["question", "runs", "median ms", "max ms", "answer bytes"]);
        for figure in &self.figures {
            table.add_row([
                figure.name.clone(),
                figure.runs.to_string(),
                format!("{:.2}", figure.median_millis),
                format!("{:.2}", figure.max_millis),
                figure.answer_bytes.to_string(),
            ]);
        }
        writeln!(f, "{table}")?;
        let mib = |value: Option<u64>| value.map_or("unknown".to_owned(), |mib| format!("{mib} MiB"));
        write!(
            f,
            "peak memory of this process: {} before the report as of a past date, {} after it",
            mib(self.peak_memory_mib),
            mib(self.peak_memory_mib_with_as_of)
        )
    }
}

/// Times `repeat` answers of `question`, which returns the answer's JSON.
async fn measure<F, Fut>(name: &str, repeat: usize, mut question: F) -> Result<ReadFigure, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value, String>>,
{
    let mut times = Vec::with_capacity(repeat);
    let mut answer_bytes = 0;
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        let answer = question().await.map_err(|e| format!("{name}: {e}"))?;
        times.push(started.elapsed());
        answer_bytes = answer.to_string().len();
    }
    times.sort();
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(ReadFigure {
        name: name.to_owned(),
        runs: times.len(),
        median_millis: millis(times[times.len() / 2]),
        max_millis: millis(times[times.len() - 1]),
        answer_bytes,
    })
}

/// What the questions are asked about, taken from the store itself.
struct Sample {
    contact: Uuid,
    /// The local part of a contact's email: a search few records match.
    rare: String,
    owner: Option<Uuid>,
    department: Option<String>,
}

async fn sample(projector: &Projector) -> Result<Sample, String> {
    let filter = ListFilter {
        limit: 50,
        ..ListFilter::default()
    };
    let (page, _) = projector
        .list(RecordKind::Contact, &filter)
        .await
        .map_err(|e| e.to_string())?;
    let contact = page
        .iter()
        .find(|view| view["email"].is_string())
        .or(page.first())
        .ok_or("the store holds no contact: fill it first (crm demo --contacts N)")?;
    let id = |value: &Value| value.as_str().and_then(|raw| Uuid::parse_str(raw).ok());
    let rare = contact["email"]
        .as_str()
        .and_then(|email| email.split('@').next())
        .or(contact["name"].as_str())
        .unwrap_or("a")
        .to_lowercase();
    // An owner of records on the page (reports narrowed to them find
    // something), and that owner's department.
    let owner = page.iter().find_map(|view| id(&view["owner_id"]));
    let users = projector.users().await.map_err(|e| e.to_string())?;
    let department = owner
        .and_then(|owner| users.users.get(&owner))
        .map(|user| user.department.clone());
    Ok(Sample {
        contact: id(&contact["id"]).ok_or("a contact without an id")?,
        rare,
        owner,
        department,
    })
}

/// Every question of the read side, each asked `repeat` times (as of a
/// past date: once, it folds the log).
pub async fn read_side(
    store: &Store,
    pipeline: &Pipeline,
    repeat: usize,
    now: DateTime<Utc>,
) -> Result<ReadBench, String> {
    let started = Instant::now();
    let projector = Projector::open(store.clone()).await.map_err(|e| e.to_string())?;
    let start_up_millis = started.elapsed().as_secs_f64() * 1000.0;
    let sample = sample(&projector).await?;
    let projector = &projector;
    let mut figures = Vec::new();

    figures.push(
        measure("contact by id", repeat, || async {
            let view = projector.view(RecordKind::Contact, sample.contact).await;
            view.map(Option::unwrap_or_default).map_err(|e| e.to_string())
        })
        .await?,
    );
    let lists = [
        ("contact list, 50 a page", None),
        ("search, no match", Some("zq-no-such-text-qz".to_owned())),
        ("search, a rare piece of an email", Some(sample.rare.clone())),
        ("search, a common piece (example)", Some("example".to_owned())),
        ("search, two letters", Some("an".to_owned())),
    ];
    for (name, text) in lists {
        let filter = ListFilter {
            text,
            limit: 50,
            ..ListFilter::default()
        };
        figures.push(
            measure(name, repeat, || async {
                let (page, _) = projector
                    .list(RecordKind::Contact, &filter)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Value::Array(page))
            })
            .await?,
        );
    }
    for (name, request) in report_questions(&sample) {
        let figure = measure(&name, repeat, || async {
            projector
                .report(pipeline, &request, None, now)
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
        figures.push(figure);
    }
    let peak_memory_before_as_of = peak_memory_mib();
    let then = now - chrono::Duration::days(365);
    let request = ReportRequest::Pipeline {
        scope: Scope::default(),
        page: PageRequest::default(),
        from: None,
    };
    figures.push(
        measure("pipeline as of a year ago", 1, || async {
            projector
                .report(pipeline, &request, Some(projections::Cut::Happened(then)), then)
                .await
                .map_err(|e| e.to_string())
        })
        .await?,
    );
    // The fold is kept: asked again, the report reads only the log
    // recorded since (`projections::as_of`).
    figures.push(
        measure("pipeline as of a year ago, asked again", repeat, || async {
            projector
                .report(pipeline, &request, Some(projections::Cut::Happened(then)), then)
                .await
                .map_err(|e| e.to_string())
        })
        .await?,
    );
    let peak_memory_mib_with_as_of = peak_memory_mib();
    let [contacts, accounts, deals] = projector.live_counts().await.map_err(|e| e.to_string())?;
    let report = ReadBench {
        backend: store.backend_name(),
        events: store.head().await.map_err(|e| e.to_string())?,
        contacts,
        accounts,
        deals,
        start_up_millis,
        figures,
        peak_memory_mib: peak_memory_before_as_of,
        peak_memory_mib_with_as_of,
    };
    projector.close().await;
    Ok(report)
}

/// The reports a manager opens, whole and a page of each list, then narrowed
/// to one owner and to one department.
fn report_questions(sample: &Sample) -> Vec<(String, ReportRequest)> {
    let thresholds = QualityThresholds::default();
    let page = PageRequest::default();
    let all = Scope::default();
    let mut questions = vec![
        (
            "pipeline".to_owned(),
            ReportRequest::Pipeline {
                scope: all.clone(),
                page: page.clone(),
                from: None,
            },
        ),
        (
            "data quality (summary and first page of each list)".to_owned(),
            ReportRequest::DataQuality {
                thresholds,
                scope: all.clone(),
                page: page.clone(),
            },
        ),
    ];
    for list in QualityList::ALL {
        questions.push((
            format!("data quality, {} page", list.name()),
            ReportRequest::QualityList {
                list,
                thresholds,
                scope: all.clone(),
                page: page.clone(),
            },
        ));
    }
    questions.push((
        "neglected accounts".to_owned(),
        ReportRequest::NeglectedAccounts {
            days: 30,
            departments: DepartmentRules::default(),
            scope: all.clone(),
            page: page.clone(),
        },
    ));
    questions.push(("owners".to_owned(), ReportRequest::Owners { thresholds, scope: all }));
    let narrowed = [
        ("one owner", sample.owner.map(|owner_id| (Some(owner_id), None))),
        (
            "one department",
            sample.department.clone().map(|department| (None, Some(department))),
        ),
    ];
    for (what, scope) in narrowed {
        let Some((owner_id, department)) = scope else { continue };
        questions.push((
            format!("data quality, {what}"),
            ReportRequest::DataQuality {
                thresholds,
                scope: Scope {
                    owner_id,
                    department,
                    ..Scope::default()
                },
                page: page.clone(),
            },
        ));
    }
    questions
}

/// `VmHWM` of this process, on systems that have `/proc`.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
