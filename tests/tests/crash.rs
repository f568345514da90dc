//! Nothing acknowledged is ever lost, even when the process is killed
//! mid-write: a writer is SIGKILLed at a random moment, again and again, and
//! after each kill every acknowledged event is in the log and the chain verifies.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventstore::testing::TestDatabase;

const KILLS: usize = 4;

/// Runs the writer until it has acknowledged `n_acks` appends (at least), kills it.
fn run_and_kill(database: &TestDatabase, n_acks: usize) -> Vec<(String, u64, u64)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_append_until_killed"));
    command
        .arg(&database.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(schema) = &database.options.schema {
        command.arg(schema);
    }
    let mut child = command.spawn().expect("the writer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acks = Vec::new();
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line from the writer");
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["ack", stream, version, position] = parts.as_slice() {
            acks.push((
                stream.to_string(),
                version.parse().expect("version"),
                position.parse().expect("position"),
            ));
        }
        if acks.len() >= n_acks || started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    child.kill().expect("SIGKILL the writer mid-write");
    child.wait().expect("reap the writer");
    acks
}

async fn acknowledged_appends_survive_sigkill(database: TestDatabase) {
    let mut acknowledged: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    for round in 0..KILLS {
        // Vary the moment of the kill from round to round.
        let acks = run_and_kill(&database, 150 + round * 170);
        assert!(!acks.is_empty(), "the writer acknowledged nothing in round {round}");
        for (stream, version, position) in acks {
            acknowledged.insert(position, (stream, version));
        }
        let store = database.open().await;
        let report = store.verify().await.expect("verify runs");
        assert!(report.ok, "after kill {round} the chain must verify: {report:?}");
        let last_acknowledged = *acknowledged.keys().last().expect("acks");
        assert!(
            report.events >= last_acknowledged,
            "acknowledged position {last_acknowledged} lost: log ends at {}",
            report.events
        );
        let mut after = 0;
        loop {
            let batch = store.read_all(after, 5000).await.expect("read the log");
            let Some(last) = batch.last() else { break };
            after = last.position;
            for event in batch {
                if let Some((stream, version)) = acknowledged.get(&event.position) {
                    assert_eq!(
                        (&event.stream_id, event.version),
                        (stream, *version),
                        "position {} holds what was acknowledged",
                        event.position
                    );
                }
            }
        }
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_appends_survive_sigkill() {
    acknowledged_appends_survive_sigkill(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_appends_survive_sigkill() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    // The writer creates the schema itself on first open.
    acknowledged_appends_survive_sigkill(database).await;
}
