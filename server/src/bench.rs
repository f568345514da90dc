//! `crm bench`: append throughput from many concurrent clients, the figure
//! the README reports. Kept out of `cargo test`.

use std::time::Duration;

use chrono::Utc;
use eventstore::{AppendRequest, ExpectedVersion, NewEvent, Store};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub backend: &'static str,
    /// Whether each event's personal fields were sealed (as the product
    /// stores them) or appended in plain text (`--plain`, for comparison).
    pub sealed: bool,
    /// How many contacts the events are about (0: a new one each).
    pub subjects: usize,
    pub clients: usize,
    pub events: usize,
    pub seconds: f64,
    pub events_per_second: f64,
    pub latency_p50_micros: u128,
    pub latency_p99_micros: u128,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} clients appended {} {} events in {:.2}s: {:.0} events/s (append latency p50 {}µs, p99 {}µs)",
            self.backend,
            self.clients,
            self.events,
            if self.sealed { "sealed" } else { "plain" },
            self.seconds,
            self.events_per_second,
            self.latency_p50_micros,
            self.latency_p99_micros
        )
    }
}

/// A contact-sized event for `contact_id`, about 600 bytes on average
/// (like the figures in EVENT-STORE-NOTES): its notes run from 0 to 960
/// characters, spread evenly, because real events vary and one fixed size
/// would measure how many rows of that size fill a page more than the
/// store. Its title and custom fields are personal, so it is sealed with
/// that contact's key (made by its first event), unless `sealed` is false.
fn event(n: usize, sealed: bool, contact_id: Uuid) -> Result<NewEvent, String> {
    let data = serde_json::json!({
        "contact_id": contact_id,
        "changes": {"title": format!("Head of Procurement {n}"), "custom": {"notes": "x".repeat(n * 7_919 % 961)}}
    });
    let event = domain::Event::decode("ContactUpdated", 1, &data.to_string()).map_err(|e| e.to_string())?;
    let mut new = crate::app::encode(&event, Utc::now());
    if !sealed {
        (new.data, new.personal) = (data.to_string(), None);
    }
    Ok(new)
}

pub async fn append_throughput(
    store: &Store,
    clients: usize,
    appends: usize,
    sealed: bool,
    subjects: usize,
) -> Result<BenchReport, String> {
    // With `subjects`, the events are about that many contacts, each key
    // made once (as updates of known people are); without, each event is
    // about a new one (the costliest case: a key made and stored per event).
    let pool: Vec<Uuid> = (0..subjects).map(|_| Uuid::now_v7()).collect();
    let mut drawn = 0usize;
    let mut subject = move || {
        drawn += 1;
        pool.get(drawn % pool.len().max(1))
            .copied()
            .unwrap_or_else(Uuid::now_v7)
    };
    // Every client's requests are made before the clock starts: what is
    // timed is the store, not the encoding of the events. Ids are minted
    // in the order the requests will arrive (round robin over the clients,
    // which move at about the same pace), as the server mints them when a
    // request comes in: time-ordered ids land at the right edge of the
    // log's indexes and of the key table, as they do in the product.
    let clients = clients.max(1);
    let mut prepared: Vec<Vec<AppendRequest>> = (0..clients).map(|_| Vec::with_capacity(appends)).collect();
    for n in 0..appends {
        for requests in &mut prepared {
            requests.push(AppendRequest {
                stream_id: format!("bench-{}", Uuid::now_v7()),
                expected: ExpectedVersion::NoStream,
                events: vec![event(n, sealed, subject())?],
                actor: "bench".into(),
                correlation_id: None,
                causation_id: None,
                idempotency_key: None,
                request_hash: None,
                claims: Vec::new(),
                erase: Vec::new(),
            });
        }
    }
    let started = std::time::Instant::now();
    let tasks: Vec<_> = prepared
        .into_iter()
        .map(|requests| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(requests.len());
                for request in requests {
                    let sent = std::time::Instant::now();
                    store.append(request).await.map_err(|e| e.to_string())?;
                    latencies.push(sent.elapsed());
                }
                Ok::<Vec<Duration>, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(clients * appends);
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: usize| latencies.get(latencies.len() * p / 100).map_or(0, Duration::as_micros);
    Ok(BenchReport {
        backend: store.backend_name(),
        sealed,
        subjects,
        clients,
        events: latencies.len(),
        seconds,
        events_per_second: latencies.len() as f64 / seconds,
        latency_p50_micros: percentile(50),
        latency_p99_micros: percentile(99),
    })
}
