//! Test helper for the crash tests: appends from many concurrent clients
//! until it is killed, printing `ack STREAM VERSION POSITION` for every
//! append the store acknowledged. Usage: append_until_killed URL [SCHEMA]

use std::io::Write;

use chrono::Utc;
use eventstore::{AppendRequest, ExpectedVersion, NewEvent, Store, StoreOptions};

const CLIENTS: usize = 16;

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: append_until_killed URL [SCHEMA]")?;
    let options = StoreOptions {
        schema: args.next(),
        ..StoreOptions::default()
    };
    let store = Store::open(&url, &options).await.map_err(|e| e.to_string())?;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let subject = uuid::Uuid::now_v7();
                let stream_id = format!("contact-{subject}");
                for version in 0u64.. {
                    let request = AppendRequest {
                        stream_id: stream_id.clone(),
                        expected: ExpectedVersion::Exact(version),
                        events: vec![NewEvent {
                            event_type: "ContactUpdated".into(),
                            schema_version: 1,
                            data: format!(r#"{{"n":{version},"padding":"{}"}}"#, "x".repeat(400)),
                            occurred_at: Utc::now(),
                            // Sealed with the stream's own key, made by its first append.
                            personal: Some(eventstore::Personal {
                                subject,
                                data: format!(r#"{{"changes.name":"Person {version}"}}"#),
                            }),
                        }],
                        actor: "crash-test".into(),
                        correlation_id: None,
                        causation_id: None,
                        idempotency_key: None,
                        request_hash: None,
                        claims: Vec::new(),
                        erase: Vec::new(),
                    };
                    let result = store.append(request).await.map_err(|e| e.to_string())?;
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "ack {} {} {}",
                        stream_id, result.stream_version, result.last_position
                    )
                    .map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for client in clients {
        client.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
