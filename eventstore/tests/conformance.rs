//! The conformance suite: every behaviour the log promises, written once and
//! run against SQLite and PostgreSQL alike.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use eventstore::testing::{BackendKind, TestDatabase};
use eventstore::{
    AppendRequest, Claim, ExpectedVersion, LogFilter, NewEvent, RecordedEvent, Snapshot, Store, StoreError,
};
use uuid::Uuid;

/// Generates one `#[tokio::test]` per case and backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&eventstore::testing::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(database) = eventstore::testing::TestDatabase::postgres().await else { return };
                    super::$case(&database).await;
                }
            )*
        }
    };
}

conformance!(
    appended_events_read_back_exactly,
    a_wrong_expected_version_is_a_conflict_and_stores_nothing,
    racing_writers_on_one_stream_exactly_one_wins,
    concurrent_writers_on_different_streams_get_gapless_positions,
    a_reader_paging_during_appends_sees_every_event_once_in_order,
    the_database_refuses_update_and_delete,
    verify_names_the_position_of_an_altered_event,
    verify_names_the_position_of_a_removed_event,
    verify_names_the_first_bad_position_before_a_sealed_part_that_no_longer_opens,
    an_idempotent_retry_returns_the_first_result_and_writes_nothing,
    reopening_the_store_keeps_everything,
    invalid_appends_are_refused_and_change_nothing,
    a_waiting_reader_wakes_on_a_new_append,
    an_audit_reads_one_actors_events_within_a_time_span,
    a_snapshot_keeps_its_state_and_position_together,
    a_token_is_found_by_its_public_id_and_its_id_is_unique,
    a_commit_that_fails_changes_nothing_and_the_next_one_lands,
    a_commit_hook_that_panics_fails_its_batch_and_the_store_goes_on,
    a_commit_hook_that_fails_has_its_writes_undone_and_the_events_commit,
    racing_appends_for_one_claimed_value_exactly_one_wins_until_it_is_given_up,
    claims_of_an_older_log_are_filled_once_and_only_at_the_head_they_were_folded_to,
    personal_parts_are_stored_sealed_and_read_as_erased_once_their_key_is_destroyed,
    an_erasure_by_another_server_reaches_this_ones_next_append,
);

/// One event of `subject` whose personal part names `name`.
fn personal(subject: Uuid, name: &str) -> AppendRequest {
    let mut request = append(&format!("contact-{subject}"), ExpectedVersion::Any, 1);
    request.events[0].personal = Some(eventstore::Personal {
        subject,
        data: format!(r#"{{"fields.name":"{name}"}}"#),
    });
    request
}

fn opened(events: &[RecordedEvent]) -> Vec<Option<String>> {
    events
        .iter()
        .map(|e| e.sealed.as_ref().and_then(|s| s.opened.clone()))
        .collect()
}

async fn personal_parts_are_stored_sealed_and_read_as_erased_once_their_key_is_destroyed(database: &TestDatabase) {
    let store = database.open().await;
    assert_eq!(
        store.sealed_from().await.expect("format"),
        1,
        "a new store seals from its first event"
    );
    let (ada, grace) = (Uuid::now_v7(), Uuid::now_v7());
    for request in [
        personal(ada, "Ada Lovelace"),
        personal(grace, "Grace Hopper"),
        personal(ada, "Ada King"),
    ] {
        store.append(request).await.expect("append");
    }
    let log = whole_log(&store).await;
    assert_eq!(
        opened(&log),
        [
            Some(r#"{"fields.name":"Ada Lovelace"}"#.to_owned()),
            Some(r#"{"fields.name":"Grace Hopper"}"#.to_owned()),
            Some(r#"{"fields.name":"Ada King"}"#.to_owned())
        ]
    );
    let stored = database.stored_event_text().await.expect("raw rows").join("\n");
    for name in ["Ada", "Grace", "Lovelace"] {
        assert!(!stored.contains(name), "{name} is stored in plain text");
    }

    // Erasing Ada: her events stay (the chain verifies), their personal
    // parts read as erased on every read path; Grace's are untouched.
    let mut erase = append(&format!("contact-{ada}"), ExpectedVersion::Any, 1);
    erase.erase = vec![ada];
    store.append(erase).await.expect("erase");
    let log = whole_log(&store).await;
    assert_eq!(
        opened(&log),
        [None, Some(r#"{"fields.name":"Grace Hopper"}"#.to_owned()), None, None]
    );
    assert!(
        log[0].sealed.is_some() && log[2].sealed.is_some(),
        "the sealed parts stay in the log"
    );
    let stream = store.read_stream(&format!("contact-{ada}"), 1).await.expect("stream");
    assert_eq!(opened(&stream), [None, None, None]);
    if let Some(mut bulk) = store.bulk_reader().expect("bulk reader") {
        let all = bulk.read_all(0, 100).expect("bulk read");
        assert_eq!(opened(&all), opened(&log));
    }
    // What is appended for her from now on is not kept either.
    store
        .append(personal(ada, "Ada again"))
        .await
        .expect("append after erasure");
    let after = store.read_stream(&format!("contact-{ada}"), 4).await.expect("stream");
    assert_eq!(opened(&after), [None]);
    assert_verifies(&store, 5).await;
    // And a reopened store reads the same.
    store.close().await;
    let reopened = database.open().await;
    assert_eq!(
        opened(&whole_log(&reopened).await)[1].as_deref(),
        Some(r#"{"fields.name":"Grace Hopper"}"#)
    );
    assert_eq!(opened(&whole_log(&reopened).await)[4], None);
}

/// A hook that keeps the personal parts each commit shows it, as the read
/// models would fold them.
#[derive(Default)]
struct ShownParts(std::sync::Mutex<Vec<Option<String>>>);

impl eventstore::CommitHook for ShownParts {
    fn in_transaction<'a>(
        &'a self,
        _conn: eventstore::HookConnection<'a>,
        events: &'a [RecordedEvent],
    ) -> futures_util::future::BoxFuture<'a, Result<Option<u64>, String>> {
        Box::pin(async move {
            self.0.lock().map_err(|e| e.to_string())?.extend(opened(events));
            Ok(None)
        })
    }

    fn committed(&self, _covered: Option<u64>) {}
}

/// A server keeps the keys it has used; an erasure committed by another
/// server (or by `crm erase` in another process) must reach it before it
/// seals again, or it would seal with the destroyed key and show its hook
/// (the read models) the person's data in plain text.
async fn an_erasure_by_another_server_reaches_this_ones_next_append(database: &TestDatabase) {
    let here = database.open().await;
    let shown = std::sync::Arc::new(ShownParts::default());
    here.set_commit_hook(shown.clone());
    let there = database.shared().open().await;
    let (ada, grace) = (Uuid::now_v7(), Uuid::now_v7());
    for request in [personal(ada, "Ada Lovelace"), personal(grace, "Grace Hopper")] {
        here.append(request).await.expect("append");
    }
    let mut erase = append(&format!("contact-{ada}"), ExpectedVersion::Any, 1);
    erase.erase = vec![ada];
    there.append(erase).await.expect("erased on the other server");
    for request in [personal(ada, "Ada again"), personal(grace, "Grace again")] {
        here.append(request).await.expect("append after the other's erasure");
    }
    assert_eq!(
        *shown.0.lock().expect("not poisoned"),
        [
            Some(r#"{"fields.name":"Ada Lovelace"}"#.to_owned()),
            Some(r#"{"fields.name":"Grace Hopper"}"#.to_owned()),
            None,
            Some(r#"{"fields.name":"Grace again"}"#.to_owned()),
        ],
        "Ada's new part is sealed for nobody; Grace's key is read again and still opens"
    );
    let log = whole_log(&there).await;
    assert_eq!(
        opened(&log),
        [
            None,
            Some(r#"{"fields.name":"Grace Hopper"}"#.to_owned()),
            None,
            None,
            Some(r#"{"fields.name":"Grace again"}"#.to_owned()),
        ]
    );
    // And an erasure on this server is in its own cache at once.
    let mut erase = append(&format!("contact-{grace}"), ExpectedVersion::Any, 1);
    erase.erase = vec![grace];
    here.append(erase).await.expect("erased here");
    here.append(personal(grace, "Grace once more")).await.expect("append");
    assert_eq!(shown.0.lock().expect("not poisoned").last(), Some(&None));
    assert_verifies(&here, 7).await;
}

fn stream() -> String {
    format!("contact-{}", Uuid::now_v7())
}

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_type: "ContactUpdated".into(),
        schema_version: 1,
        data: format!(r#"{{"n":{n},"note":"naïve café ✓"}}"#),
        occurred_at: Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).single().expect("valid")
            + chrono::Duration::microseconds(535_897),
        personal: None,
    }
}

fn append(stream_id: &str, expected: ExpectedVersion, n_events: usize) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.into(),
        expected,
        events: (0..n_events).map(event).collect(),
        actor: "user-7".into(),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        idempotency_key: None,
        request_hash: None,
        claims: Vec::new(),
        erase: Vec::new(),
    }
}

async fn whole_log(store: &Store) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let batch = store
            .read_all(events.last().map_or(0, |e: &RecordedEvent| e.position), 1000)
            .await
            .expect("read");
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

async fn assert_verifies(store: &Store, n_events: u64) {
    let report = store.verify().await.expect("verify runs");
    assert!(report.ok, "chain must verify: {report:?}");
    assert_eq!(report.events, n_events);
}

async fn appended_events_read_back_exactly(database: &TestDatabase) {
    let store = database.open().await;
    let (a, b) = (stream(), stream());
    let request = append(&a, ExpectedVersion::NoStream, 3);
    let first = store.append(request.clone()).await.expect("append to a new stream");
    assert_eq!(
        (first.first_position, first.last_position, first.stream_version),
        (1, 3, 3)
    );
    store
        .append(append(&b, ExpectedVersion::Any, 1))
        .await
        .expect("append to another stream");

    let events = store.read_stream(&a, 1).await.expect("read stream");
    assert_eq!(events.len(), 3);
    for (index, stored) in events.iter().enumerate() {
        assert_eq!(stored.version, index as u64 + 1);
        assert_eq!(stored.position, index as u64 + 1);
        assert_eq!(stored.data, request.events[index].data, "data is stored byte for byte");
        assert_eq!(
            stored.occurred_at, request.events[index].occurred_at,
            "occurred_at keeps its microseconds"
        );
        assert_eq!(stored.actor, "user-7");
        assert_eq!(stored.correlation_id, request.correlation_id);
        assert!(stored.recorded_at >= stored.occurred_at);
    }
    assert_eq!(store.read_stream(&a, 3).await.expect("read from version 3").len(), 1);
    let positions: Vec<u64> = whole_log(&store).await.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(store.head().await.expect("head"), 4);
    assert_verifies(&store, 4).await;
}

async fn a_wrong_expected_version_is_a_conflict_and_stores_nothing(database: &TestDatabase) {
    let store = database.open().await;
    let id = stream();
    store
        .append(append(&id, ExpectedVersion::NoStream, 2))
        .await
        .expect("create");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        match store.append(append(&id, expected, 1)).await {
            Err(StoreError::Conflict { stream_id, actual, .. }) => {
                assert_eq!((stream_id.as_str(), actual), (id.as_str(), Some(2)));
            }
            other => panic!("expected a conflict for {expected}, got {other:?}"),
        }
    }
    assert_eq!(store.head().await.expect("head"), 2, "a refused append stores nothing");
    let result = store
        .append(append(&id, ExpectedVersion::Exact(2), 1))
        .await
        .expect("the right version wins");
    assert_eq!(result.stream_version, 3);
    store
        .append(append(&id, ExpectedVersion::Any, 1))
        .await
        .expect("any version");
    assert_verifies(&store, 4).await;
}

async fn racing_writers_on_one_stream_exactly_one_wins(database: &TestDatabase) {
    let store = database.open().await;
    let id = stream();
    store
        .append(append(&id, ExpectedVersion::NoStream, 1))
        .await
        .expect("create");
    let racers: Vec<_> = (0..32)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move { store.append(append(&id, ExpectedVersion::Exact(1), 3)).await })
        })
        .collect();
    let mut n_won = 0;
    for racer in racers {
        match racer.await.expect("task") {
            Ok(result) => {
                n_won += 1;
                assert_eq!((result.first_position, result.last_position), (2, 4));
            }
            Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, Some(4)),
            Err(other) => panic!("a racer failed with {other:?}"),
        }
    }
    assert_eq!(n_won, 1, "exactly one writer wins");
    let versions: Vec<u64> = store
        .read_stream(&id, 1)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4], "nothing partial is stored");
    assert_verifies(&store, 4).await;
}

async fn concurrent_writers_on_different_streams_get_gapless_positions(database: &TestDatabase) {
    let store = database.open().await;
    let (n_writers, n_appends, n_events) = (32, 10, 2);
    let writers: Vec<_> = (0..n_writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = stream();
                for version in 0..n_appends {
                    store
                        .append(append(
                            &id,
                            ExpectedVersion::Exact(version * n_events),
                            n_events as usize,
                        ))
                        .await
                        .expect("every writer succeeds");
                }
                id
            })
        })
        .collect();
    let mut streams = Vec::new();
    for writer in writers {
        streams.push(writer.await.expect("task"));
    }
    let total = n_writers * n_appends * n_events;
    let log = whole_log(&store).await;
    let positions: Vec<u64> = log.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>(), "positions 1..n with no gap");
    let mut per_stream: HashMap<&str, Vec<u64>> = HashMap::new();
    for stored in &log {
        per_stream.entry(&stored.stream_id).or_default().push(stored.version);
    }
    for id in &streams {
        assert_eq!(per_stream[id.as_str()], (1..=n_appends * n_events).collect::<Vec<_>>());
    }
    assert!(
        log.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at),
        "recorded_at never decreases"
    );
    assert_verifies(&store, total).await;
}

async fn a_reader_paging_during_appends_sees_every_event_once_in_order(database: &TestDatabase) {
    let store = database.open().await;
    let (n_writers, n_appends) = (8, 50);
    let writers: Vec<_> = (0..n_writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = stream();
                for _ in 0..n_appends {
                    store
                        .append(append(&id, ExpectedVersion::Any, 1))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    let total = n_writers * n_appends;
    let mut seen = 0;
    while seen < total {
        let batch = store.read_all(seen, 7).await.expect("read a page");
        for stored in &batch {
            seen += 1;
            assert_eq!(stored.position, seen, "the reader never skips or repeats a position");
        }
        if batch.is_empty() {
            store.wait_for(seen, Duration::from_millis(200)).await.expect("wait");
        }
    }
    for writer in writers {
        writer.await.expect("task");
    }
    assert!(store.read_all(seen, 7).await.expect("read").is_empty());
}

async fn the_database_refuses_update_and_delete(database: &TestDatabase) {
    let store = database.open().await;
    let mut request = append(&stream(), ExpectedVersion::NoStream, 2);
    request.idempotency_key = Some("key-1".into());
    store.append(request).await.expect("append");
    let mut refused = vec![
        "UPDATE events SET data = '{}' WHERE position = 1",
        "UPDATE events SET actor = 'someone-else'",
        "DELETE FROM events WHERE position = 2",
        "DELETE FROM events",
        "UPDATE idempotency_keys SET stream_id = 'x'",
        "DELETE FROM idempotency_keys",
    ];
    if database.kind == BackendKind::Postgres {
        refused.extend(["TRUNCATE events", "TRUNCATE idempotency_keys"]);
    }
    for sql in refused {
        let outcome = database.execute_raw(sql).await;
        let message = outcome.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("append-only"),
            "{sql:?} must be refused, got {message:?}"
        );
    }
    assert_eq!(whole_log(&store).await.len(), 2);
    assert_verifies(&store, 2).await;
}

/// A COMMIT can fail (a full disk, an I/O error, a deferred constraint):
/// that append is refused and leaves nothing, and the store keeps writing
/// once the cause is gone, without a restart.
async fn a_commit_that_fails_changes_nothing_and_the_next_one_lands(database: &TestDatabase) {
    let store = database.open().await;
    store
        .append(append(&stream(), ExpectedVersion::NoStream, 1))
        .await
        .expect("append");
    // Each append now breaks a constraint checked only at COMMIT.
    database.fail_commits().await.expect("set the trap");
    for _ in 0..2 {
        let refused = store.append(append(&stream(), ExpectedVersion::NoStream, 2)).await;
        assert!(
            matches!(refused, Err(StoreError::Database(_) | StoreError::Sqlite(_))),
            "a failed COMMIT is the database's error: {refused:?}"
        );
    }
    assert_eq!(whole_log(&store).await.len(), 1, "nothing of the failed appends stays");
    let health = store.write_health();
    assert!(health.failing(), "readiness sees the failure: {health:?}");
    assert!(
        health
            .last_error
            .is_some_and(|(_, reason)| reason.contains("FOREIGN KEY") || reason.contains("foreign key"))
    );
    database.let_commits_through().await.expect("remove the trap");
    let landed = store
        .append(append(&stream(), ExpectedVersion::NoStream, 2))
        .await
        .expect("the store writes again");
    assert_eq!((landed.first_position, landed.last_position), (2, 3));
    assert!(!store.write_health().failing(), "a commit clears the failure");
    assert_verifies(&store, 3).await;
}

/// A hook that panics on its first batch, then folds nothing.
struct PanicsOnce(std::sync::atomic::AtomicBool);

impl eventstore::CommitHook for PanicsOnce {
    fn in_transaction<'a>(
        &'a self,
        _conn: eventstore::HookConnection<'a>,
        _events: &'a [RecordedEvent],
    ) -> futures_util::future::BoxFuture<'a, Result<Option<u64>, String>> {
        let first = !self.0.swap(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            assert!(!first, "a bug in the hook");
            Ok(None)
        })
    }

    fn committed(&self, _covered: Option<u64>) {}
}

/// A bug that panics inside a commit fails that batch (rolled back, never
/// acknowledged) and leaves the store writing.
async fn a_commit_hook_that_panics_fails_its_batch_and_the_store_goes_on(database: &TestDatabase) {
    let store = database.open().await;
    store.set_commit_hook(std::sync::Arc::new(PanicsOnce(Default::default())));
    let failed = store.append(append(&stream(), ExpectedVersion::NoStream, 2)).await;
    assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
    assert!(
        whole_log(&store).await.is_empty(),
        "nothing of the panicked batch stays"
    );
    let landed = store
        .append(append(&stream(), ExpectedVersion::NoStream, 2))
        .await
        .expect("the store writes on");
    assert_eq!((landed.first_position, landed.last_position), (1, 2));
    assert_verifies(&store, 2).await;
}

/// A hook that writes a mark, then fails, on its first batch; on the next
/// it counts the marks it finds (`found`) and succeeds.
#[derive(Default)]
struct FailsOnce {
    failed: std::sync::atomic::AtomicBool,
    found: std::sync::atomic::AtomicI64,
    heard: std::sync::Mutex<Vec<Option<u64>>>,
}

impl eventstore::CommitHook for FailsOnce {
    fn in_transaction<'a>(
        &'a self,
        conn: eventstore::HookConnection<'a>,
        events: &'a [RecordedEvent],
    ) -> futures_util::future::BoxFuture<'a, Result<Option<u64>, String>> {
        let first = !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst);
        let last = events.last().map(|e| e.position);
        Box::pin(async move {
            let error = |e: &dyn std::fmt::Display| e.to_string();
            let marks = match conn {
                eventstore::HookConnection::Sqlite(conn) => {
                    conn.execute("INSERT INTO hook_marks (n) VALUES (1)", [])
                        .map_err(|e| error(&e))?;
                    conn.query_row("SELECT COUNT(*) FROM hook_marks", [], |row| row.get::<_, i64>(0))
                        .map_err(|e| error(&e))?
                }
                eventstore::HookConnection::Postgres(conn) => {
                    sqlx::query("INSERT INTO hook_marks (n) VALUES (1)")
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| error(&e))?;
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM hook_marks")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(|e| error(&e))?
                }
            };
            if first {
                return Err("the read models could not be written".into());
            }
            self.found.store(marks, std::sync::atomic::Ordering::SeqCst);
            Ok(last)
        })
    }

    fn committed(&self, covered: Option<u64>) {
        self.heard.lock().expect("not poisoned").push(covered);
    }
}

/// A hook's failure undoes what it wrote and nothing else: the events of
/// its batch commit, and it hears that it covered nothing.
async fn a_commit_hook_that_fails_has_its_writes_undone_and_the_events_commit(database: &TestDatabase) {
    let store = database.open().await;
    database
        .execute_raw("CREATE TABLE hook_marks (n BIGINT NOT NULL)")
        .await
        .expect("a table for the hook");
    let hook = std::sync::Arc::new(FailsOnce::default());
    store.set_commit_hook(hook.clone());
    let landed = store
        .append(append(&stream(), ExpectedVersion::NoStream, 2))
        .await
        .expect("the events commit though the hook failed");
    assert_eq!((landed.first_position, landed.last_position), (1, 2));
    store
        .append(append(&stream(), ExpectedVersion::NoStream, 1))
        .await
        .expect("the next batch");
    assert_eq!(
        hook.found.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the second batch's mark: the failed one's was undone"
    );
    assert_eq!(*hook.heard.lock().expect("not poisoned"), [None, Some(3)]);
    assert_eq!(whole_log(&store).await.len(), 3);
    assert_verifies(&store, 3).await;
}

async fn verify_names_the_position_of_an_altered_event(database: &TestDatabase) {
    let store = database.open().await;
    let id = stream();
    store
        .append(append(&id, ExpectedVersion::NoStream, 5))
        .await
        .expect("append");
    assert_verifies(&store, 5).await;
    database
        .execute_raw(&database.tamper_sql(3, r#"{"n":2,"note":"naive cafe"}"#))
        .await
        .expect("tamper behind the store's back");
    let report = store.verify().await.expect("verify runs");
    assert!(!report.ok);
    assert_eq!(report.first_bad_position, Some(3));
    assert_eq!(report.events, 2, "the events before the altered one are good");
}

/// A sealed part that no longer opens is a bad position, but an event
/// altered before it in the same read is the first one.
async fn verify_names_the_first_bad_position_before_a_sealed_part_that_no_longer_opens(database: &TestDatabase) {
    let store = database.open().await;
    for n in 0..5 {
        store
            .append(personal(Uuid::now_v7(), &format!("Person {n}")))
            .await
            .expect("append");
    }
    assert_verifies(&store, 5).await;
    database
        .execute_raw(&database.sealed_tamper_sql(4))
        .await
        .expect("spoil a sealed part behind the store's back");
    let report = store.verify().await.expect("verify runs");
    assert_eq!(
        (report.ok, report.first_bad_position, report.events),
        (false, Some(4), 3)
    );
    database
        .execute_raw(&database.tamper_sql(2, r#"{"n":9}"#))
        .await
        .expect("alter an earlier event too");
    let report = store.verify().await.expect("verify runs");
    assert_eq!(
        (report.ok, report.first_bad_position, report.events),
        (false, Some(2), 1),
        "the altered event comes first"
    );
}

async fn verify_names_the_position_of_a_removed_event(database: &TestDatabase) {
    let store = database.open().await;
    store
        .append(append(&stream(), ExpectedVersion::NoStream, 5))
        .await
        .expect("append");
    database
        .execute_raw(&database.removal_sql(4))
        .await
        .expect("remove behind the store's back");
    let report = store.verify().await.expect("verify runs");
    assert_eq!((report.ok, report.first_bad_position), (false, Some(4)));
}

async fn an_idempotent_retry_returns_the_first_result_and_writes_nothing(database: &TestDatabase) {
    let store = database.open().await;
    let id = stream();
    let mut request = append(&id, ExpectedVersion::NoStream, 2);
    request.idempotency_key = Some("create-ada-1".into());
    let first = store.append(request.clone()).await.expect("first append");
    assert!(!first.deduplicated);
    let retry = store.append(request.clone()).await.expect("a retry is not a conflict");
    assert!(retry.deduplicated);
    assert_eq!(
        (retry.first_position, retry.last_position, retry.stream_version),
        (first.first_position, first.last_position, 2)
    );
    assert_eq!(store.head().await.expect("head"), 2, "the retry wrote nothing");
    assert_eq!(
        store.find_idempotent("create-ada-1").await.expect("lookup"),
        Some(retry)
    );
    assert_eq!(store.find_idempotent("never-used").await.expect("lookup"), None);

    let mut fingerprinted = append(&stream(), ExpectedVersion::NoStream, 1);
    fingerprinted.idempotency_key = Some("with-fingerprint".into());
    fingerprinted.request_hash = Some("body-a".into());
    let first_fingerprinted = store.append(fingerprinted.clone()).await.expect("append");
    assert!(
        store
            .append(fingerprinted.clone())
            .await
            .expect("same request again")
            .deduplicated
    );
    let mut other_body = fingerprinted.clone();
    other_body.request_hash = Some("body-b".into());
    assert!(
        matches!(
            store.append(other_body).await,
            Err(StoreError::IdempotencyKeyReused { .. })
        ),
        "the same key for a different request is refused"
    );
    assert_eq!(
        store
            .find_idempotent("with-fingerprint")
            .await
            .expect("lookup")
            .and_then(|r| r.request_hash),
        Some("body-a".into())
    );
    assert_eq!(store.head().await.expect("head"), first_fingerprinted.last_position);

    let mut elsewhere = append(&stream(), ExpectedVersion::Any, 1);
    elsewhere.idempotency_key = request.idempotency_key.clone();
    assert!(matches!(
        store.append(elsewhere).await,
        Err(StoreError::IdempotencyKeyReused { .. })
    ));

    // Concurrent retries of one request: one append, every caller the same answer.
    let mut concurrent = append(&stream(), ExpectedVersion::NoStream, 1);
    concurrent.idempotency_key = Some("burst".into());
    let retries: Vec<_> = (0..16)
        .map(|_| {
            let (s, r) = (store.clone(), concurrent.clone());
            tokio::spawn(async move { s.append(r).await })
        })
        .collect();
    for retry in retries {
        assert_eq!(
            retry.await.expect("task").expect("every retry succeeds").first_position,
            4
        );
    }
    assert_eq!(store.head().await.expect("head"), 4);
    assert_verifies(&store, 4).await;
}

async fn reopening_the_store_keeps_everything(database: &TestDatabase) {
    let id = stream();
    let before = {
        let store = database.open().await;
        store
            .append(append(&id, ExpectedVersion::NoStream, 3))
            .await
            .expect("append");
        let log = whole_log(&store).await;
        store.close().await;
        log
    };
    let store = database.open().await;
    assert_eq!(whole_log(&store).await, before);
    let next = store
        .append(append(&id, ExpectedVersion::Exact(3), 1))
        .await
        .expect("append after reopening");
    assert_eq!((next.first_position, next.stream_version), (4, 4));
    assert_verifies(&store, 4).await;
}

async fn invalid_appends_are_refused_and_change_nothing(database: &TestDatabase) {
    let store = database.open().await;
    let id = stream();
    let mut cases = Vec::new();
    cases.push(append(&id, ExpectedVersion::Any, 0));
    let mut not_json = append(&id, ExpectedVersion::Any, 1);
    not_json.events[0].data = "{not json".into();
    cases.push(not_json);
    let mut too_big = append(&id, ExpectedVersion::Any, 1);
    too_big.events[0].data = format!("\"{}\"", "x".repeat(eventstore::EVENT_DATA_BYTES_MAX));
    cases.push(too_big);
    cases.push(append("", ExpectedVersion::Any, 1));
    let mut no_actor = append(&id, ExpectedVersion::Any, 1);
    no_actor.actor.clear();
    cases.push(no_actor);
    for request in cases {
        assert!(matches!(store.append(request).await, Err(StoreError::InvalidAppend(_))));
    }
    assert_eq!(store.head().await.expect("head"), 0);
}

async fn a_waiting_reader_wakes_on_a_new_append(database: &TestDatabase) {
    let store = database.open().await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let head = store.wait_for(0, Duration::from_secs(10)).await.expect("wait");
            (head, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .append(append(&stream(), ExpectedVersion::Any, 1))
        .await
        .expect("append");
    let (head, waited) = waiter.await.expect("task");
    assert_eq!(head, 1);
    assert!(
        waited < Duration::from_secs(5),
        "woken by the append, not the timeout ({waited:?})"
    );
}

async fn an_audit_reads_one_actors_events_within_a_time_span(database: &TestDatabase) {
    let store = database.open().await;
    // Business times out of order with the recording: a backfill at 3.
    let happened = |day: i64| chrono::DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000 + day);
    for (actor, day) in [("ann", 1), ("bob", 2), ("ann", -30), ("bob", 4), ("ann", 5)] {
        let mut request = append(&stream(), ExpectedVersion::NoStream, 1);
        request.actor = actor.into();
        for event in &mut request.events {
            event.occurred_at = happened(day);
        }
        store.append(request).await.expect("append");
    }
    let by_ann = LogFilter {
        actor: Some("ann".into()),
        ..LogFilter::default()
    };
    let positions: Vec<u64> = store
        .read_filtered(&by_ann, 0, 100)
        .await
        .expect("audit")
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, [1, 3, 5]);
    let paged: Vec<u64> = store
        .read_filtered(&by_ann, 1, 1)
        .await
        .expect("audit page")
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(paged, [3], "pages continue after a cursor position");
    let log = whole_log(&store).await;
    let span = LogFilter {
        recorded_since: Some(log[1].recorded_at),
        recorded_until: Some(log[3].recorded_at),
        ..LogFilter::default()
    };
    let in_span = store.read_filtered(&span, 0, 100).await.expect("audit by time");
    assert!(
        in_span
            .iter()
            .all(|e| e.recorded_at >= log[1].recorded_at && e.recorded_at <= log[3].recorded_at)
    );
    assert!(in_span.iter().any(|e| e.position == 2) && in_span.iter().any(|e| e.position == 4));
    let future = LogFilter {
        recorded_since: Some(Utc::now() + chrono::Duration::days(1)),
        ..LogFilter::default()
    };
    assert!(store.read_filtered(&future, 0, 100).await.expect("audit").is_empty());
    // By business time: what happened on days 1 to 4, whenever recorded.
    let happened_in = LogFilter {
        occurred_since: Some(happened(1)),
        occurred_until: Some(happened(4)),
        ..LogFilter::default()
    };
    let positions: Vec<u64> = store
        .read_filtered(&happened_in, 0, 100)
        .await
        .expect("audit by business time")
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, [1, 2, 4], "the backfill at 3 happened before");
    let backfilled = LogFilter {
        occurred_until: Some(happened(0)),
        recorded_since: Some(log[1].recorded_at),
        ..LogFilter::default()
    };
    let positions: Vec<u64> = store
        .read_filtered(&backfilled, 0, 100)
        .await
        .expect("audit: recorded late, happened early")
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, [3]);
}

async fn a_snapshot_keeps_its_state_and_position_together(database: &TestDatabase) {
    let store = database.open().await;
    assert_eq!(store.load_snapshot("contacts").await.expect("load"), None);
    let saved_at = eventstore::to_stored_precision(Utc::now());
    let first = Snapshot {
        name: "contacts".into(),
        position: 7,
        data: r#"{"n":7}"#.into(),
        saved_at,
    };
    store.save_snapshot(&first).await.expect("save");
    let second = Snapshot {
        position: 9,
        data: r#"{"n":9}"#.into(),
        ..first.clone()
    };
    store.save_snapshot(&second).await.expect("replace");
    store.close().await;
    let reopened = database.open().await;
    assert_eq!(reopened.load_snapshot("contacts").await.expect("load"), Some(second));
}

async fn a_token_is_found_by_its_public_id_and_its_id_is_unique(database: &TestDatabase) {
    let store = database.open().await;
    let token = eventstore::TokenRecord {
        token_id: "a1b2c3".into(),
        secret_sha256: "f".repeat(64),
        user_id: Uuid::now_v7().to_string(),
        created_at: eventstore::to_stored_precision(Utc::now()),
        revoked_at: None,
    };
    store.save_token(&token).await.expect("save");
    assert_eq!(store.find_token("a1b2c3").await.expect("find"), Some(token.clone()));
    assert_eq!(store.find_token("zzz").await.expect("find"), None);
    assert!(store.save_token(&token).await.is_err(), "a token id is never reused");
    assert!(store.revoke_token("a1b2c3").await.expect("revoke"));
    assert!(
        !store.revoke_token("a1b2c3").await.expect("revoke again"),
        "revoking twice changes nothing"
    );
    let revoked = store.find_token("a1b2c3").await.expect("find").expect("still there");
    assert!(revoked.revoked_at.is_some());
}

async fn racing_appends_for_one_claimed_value_exactly_one_wins_until_it_is_given_up(database: &TestDatabase) {
    let store = database.open().await;
    let claim = format!("contact:external_id:{}", Uuid::now_v7());
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let (store, claim) = (store.clone(), claim.clone());
            tokio::spawn(async move {
                let stream_id = stream();
                let request = AppendRequest {
                    claims: vec![Claim::Take(claim)],
                    ..append(&stream_id, ExpectedVersion::NoStream, 1)
                };
                store.append(request).await.map(|_| stream_id)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        match racer.await.expect("task") {
            Ok(stream_id) => winners.push(stream_id),
            Err(StoreError::Claimed { claim: refused, holder }) => {
                assert_eq!(refused, claim);
                assert!(holder.starts_with("contact-"), "{holder}");
            }
            Err(other) => panic!("a racer failed with {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one stream takes the value");
    let winner = &winners[0];
    assert_eq!(store.claim_holder(&claim).await.expect("holder").as_ref(), Some(winner));
    assert_eq!(whole_log(&store).await.len(), 1, "a refused append writes nothing");

    // The holder taking it again changes nothing; giving it up frees it.
    let again = AppendRequest {
        claims: vec![Claim::Take(claim.clone())],
        ..append(winner, ExpectedVersion::Exact(1), 1)
    };
    store
        .append(again)
        .await
        .expect("the holder may take its own value again");
    let stranger = stream();
    let not_held = AppendRequest {
        claims: vec![Claim::Release(claim.clone())],
        ..append(&stranger, ExpectedVersion::NoStream, 1)
    };
    store
        .append(not_held)
        .await
        .expect("giving up a value one does not hold is a no-op");
    assert_eq!(store.claim_holder(&claim).await.expect("holder").as_ref(), Some(winner));
    let give_up = AppendRequest {
        claims: vec![Claim::Release(claim.clone())],
        ..append(winner, ExpectedVersion::Exact(2), 1)
    };
    store.append(give_up).await.expect("give up");
    assert_eq!(store.claim_holder(&claim).await.expect("holder"), None);
    let take = AppendRequest {
        claims: vec![Claim::Take(claim.clone())],
        ..append(&stranger, ExpectedVersion::Exact(1), 1)
    };
    store.append(take).await.expect("a value given up is free");
    assert_eq!(store.claim_holder(&claim).await.expect("holder"), Some(stranger));
    assert_verifies(&store, 5).await;
}

async fn claims_of_an_older_log_are_filled_once_and_only_at_the_head_they_were_folded_to(database: &TestDatabase) {
    let store = database.open().await;
    assert!(
        !store.claims_unfilled().await.expect("unfilled"),
        "a new log has nothing to fill"
    );
    let (first, second) = (stream(), stream());
    store
        .append(append(&first, ExpectedVersion::NoStream, 1))
        .await
        .expect("append");
    // As a log written before claims existed looks after its upgrade.
    database
        .execute_raw("INSERT INTO claims_unfilled (up_to_position) VALUES (1)")
        .await
        .expect("mark unfilled");
    assert!(store.claims_unfilled().await.expect("unfilled"));
    let claims = vec![("v:1".to_owned(), first.clone()), ("v:2".to_owned(), first.clone())];
    assert!(
        !store.fill_claims(&claims, 0).await.expect("fill"),
        "a fill folded to an older head writes nothing"
    );
    assert_eq!(store.claim_holder("v:1").await.expect("holder"), None);
    // An append claims a value before the fill lands; the fill, folded
    // from the whole log up to its head, has the last word.
    let taken = AppendRequest {
        claims: vec![Claim::Take("v:2".into()), Claim::Take("v:3".into())],
        ..append(&second, ExpectedVersion::NoStream, 1)
    };
    store.append(taken).await.expect("append");
    let claims = [claims, vec![("v:3".to_owned(), second.clone())]].concat();
    assert!(store.fill_claims(&claims, 2).await.expect("fill"));
    assert!(!store.claims_unfilled().await.expect("unfilled"));
    assert_eq!(store.claim_holder("v:1").await.expect("holder"), Some(first.clone()));
    assert_eq!(store.claim_holder("v:2").await.expect("holder"), Some(first));
    assert_eq!(store.claim_holder("v:3").await.expect("holder"), Some(second));
}
