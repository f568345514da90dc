//! The projector over a real log, on both backends: live catch-up into the
//! read-model tables, restart, rebuild while reads continue (and killed
//! halfway), and `as_of`, all equal to the pure fold, byte for byte.

mod support;

use std::sync::Arc;

use chrono::Duration;
use domain::{Pipeline, RecordKind};
use eventstore::Store;
use eventstore::testing::TestDatabase;
use projections::{CrmModel, Projector, ProjectorOptions};
use serde_json::json;
use sqlx::Connection;
use support::{History, append_request, day0, days_ago, every_report, reports_json};

/// A history with every kind of event, spread over time.
fn history() -> History {
    let mut h = History::default();
    let ann = h.user("Ann", "Sales", days_ago(500));
    let sam = h.user("Sam", "Support", days_ago(500));
    for n in 0..12 {
        let actor = if n % 2 == 0 { ann } else { sam }.to_string();
        let account = h.account(
            json!({"name": format!("Account {n}"), "owner_id": ann.to_string()}),
            &actor,
            days_ago(400 - n * 20),
        );
        // Contacts share a phone three by three: groups form, grow, and
        // (below) shrink and break up, each folded live.
        let contact = h.contact(
            json!({"name": format!("Contact {n}"), "account_id": account.to_string(), "lifecycle_stage": "customer",
                   "phone": format!("+1 415 555 {:04}", n / 3)}),
            &actor,
            days_ago(390 - n * 20),
        );
        match n % 6 {
            4 => h.update_contact(
                contact,
                json!({"phone": "+1 415 555 9999"}),
                &actor,
                days_ago(300 - n * 10),
            ),
            5 => h.archive_contact(contact, &actor, days_ago(300 - n * 10)),
            _ => {}
        }
        let deal = h.deal(
            json!({"title": format!("Deal {n}"), "account_id": account.to_string()}),
            &actor,
            days_ago(380 - n * 20),
        );
        h.move_deal(deal, "proposal", &actor, days_ago(370 - n * 20));
        if n % 3 == 0 {
            h.close_deal(deal, n % 2 == 0, &actor, days_ago(200 - n * 10));
        }
        h.interaction(
            json!({"contact_id": contact.to_string()}),
            &sam.to_string(),
            days_ago(150 - n * 10),
        );
    }
    h
}

/// Appends the history's events to the store, one append per stream run.
async fn append_all(store: &Store, history: &History, range: std::ops::Range<usize>) {
    for recorded in &history.log[range] {
        let result = store.append(append_request(recorded)).await.expect("append");
        assert_eq!(
            result.last_position, recorded.position,
            "positions match the pure history"
        );
    }
}

fn json_of(model: &CrmModel) -> String {
    serde_json::to_string(model).expect("serialise")
}

/// Small batches, so that every test crosses many batch edges: a record
/// created in one batch and touched in the next must come back from its row.
fn small_batches() -> ProjectorOptions {
    ProjectorOptions {
        fold_batch_events: 3,
        rebuild_batch_events: 7,
        rebuild_rows_max: 5,
        ..ProjectorOptions::default()
    }
}

/// Everything the live tables hold, as one model.
/// What a report as of `as_of` reads: the records then.
async fn model_as_of(projector: &Projector, as_of: chrono::DateTime<chrono::Utc>) -> CrmModel {
    let then = projector.as_of(projections::Cut::Happened(as_of)).await.expect("as of");
    let model = then.model().await.expect("read the scratch tables");
    then.close().await;
    model
}

fn without_interactions(mut model: CrmModel) -> CrmModel {
    model.interactions.clear();
    model
}

async fn tables_of(projector: &Projector) -> String {
    json_of(&projector.whole(true).await.expect("read the tables"))
}

async fn the_projector_agrees_with_the_pure_fold(database: TestDatabase) {
    let history = history();
    let half = history.log.len() / 2;
    let store = database.open().await;
    append_all(&store, &history, 0..half).await;

    let first = Projector::open_with(store.clone(), small_batches())
        .await
        .expect("open");
    assert_eq!(first.position(), half as u64);
    // Appends through a store with a projector fold in their own transaction.
    append_all(&store, &history, half..history.log.len()).await;
    assert_eq!(
        first.position(),
        history.log.len() as u64,
        "covered when the append returns"
    );
    assert_eq!(first.catch_up().await.expect("catch up"), 0, "nothing left to fold");
    let expected = json_of(&history.model());
    assert_eq!(tables_of(&first).await, expected, "live equals the pure fold");
    // Duplicate groups, which live writes keep current value by value,
    // formed, broken up and formed again by the appends above.
    let mut reports_folded_live = Vec::new();
    for request in every_report(day0()) {
        let report = first.report(&Pipeline::default(), &request, None, day0()).await;
        reports_folded_live.push(report.expect("a live report"));
    }
    let pure_reports = tokio::task::block_in_place(|| reports_json(&history.model(), &every_report(day0()), day0()));
    assert_eq!(
        json!(reports_folded_live),
        json!(pure_reports),
        "live reports equal the pure fold's"
    );
    first.close().await;

    // A restart resumes where the tables stand and folds nothing again.
    store.close().await;
    let store = database.open().await;
    let restarted = Projector::open_with(store.clone(), small_batches())
        .await
        .expect("reopen");
    assert_eq!(restarted.position(), history.log.len() as u64);
    assert_eq!(restarted.catch_up().await.expect("catch up"), 0, "nothing to refold");
    assert_eq!(tables_of(&restarted).await, expected, "restart equals one run");

    // Rebuild aside while readers keep reading the live tables.
    let contact = *history.model().contacts.keys().next().expect("a contact");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let projector = Arc::clone(&restarted);
            tokio::spawn(async move {
                for _ in 0..50 {
                    let view = projector.view(RecordKind::Contact, contact).await.expect("read");
                    assert!(view.is_some(), "readers never see a half-built model");
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let report = restarted.rebuild().await.expect("rebuild");
    for reader in readers {
        reader.await.expect("reader");
    }
    assert_eq!(report.events, history.log.len() as u64);
    assert_eq!(tables_of(&restarted).await, expected, "rebuild equals live");
    // A second rebuild (new generation of indexes) works as well.
    restarted.rebuild().await.expect("rebuild again");
    assert_eq!(tables_of(&restarted).await, expected, "a second rebuild equals live");

    // As of a date, the tables of a scratch fold hold every record (but no
    // interaction: no report reads them) as the pure fold does.
    let far_future = model_as_of(&restarted, day0() + Duration::days(36_500)).await;
    assert_eq!(json_of(&far_future), json_of(&without_interactions(history.model())));
    // Every report the live tables answer (on this backend) is the one the
    // pure fold's rows answer (on SQLite, as reports as of a date are).
    let mut live_reports = Vec::new();
    for request in every_report(day0()) {
        let report = restarted.report(&Pipeline::default(), &request, None, day0()).await;
        live_reports.push(report.expect("a live report"));
    }
    let pure_reports = tokio::task::block_in_place(|| reports_json(&history.model(), &every_report(day0()), day0()));
    assert_eq!(json!(live_reports), json!(pure_reports));
    assert!(
        live_reports[2]["summary"]["stale"].as_u64() > Some(0),
        "{}",
        live_reports[2]
    );
    assert!(
        live_reports[2]["summary"]["duplicate_groups"].as_u64() > Some(0),
        "{}",
        live_reports[2]
    );
    let cut = days_ago(250);
    let then = model_as_of(&restarted, cut).await;
    assert_eq!(
        json_of(&then),
        json_of(&without_interactions(history.model_until(Some(cut))))
    );
    assert!(
        then.contacts.len() < history.model().contacts.len(),
        "the past had fewer contacts"
    );
    // Every report as of the cut, folded in rows of five records written
    // back at a time, is the one the pure fold of the log cut there gives.
    let mut reports_then = Vec::new();
    for request in every_report(cut) {
        let report = restarted
            .report(
                &Pipeline::default(),
                &request,
                Some(projections::Cut::Happened(cut)),
                day0(),
            )
            .await;
        reports_then.push(report.expect("a report as of the cut"));
    }
    let pure_then =
        tokio::task::block_in_place(|| reports_json(&history.model_until(Some(cut)), &every_report(cut), cut));
    assert_eq!(json!(reports_then), json!(pure_then));
}

/// An erasure this process commits drops the folds kept for past dates at
/// once (their scratch files hold what it erased), before any ask: the
/// next ask folds afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_drops_the_kept_folds_at_once() {
    let database = TestDatabase::sqlite();
    let store = database.open().await;
    let mut history = history();
    append_all(&store, &history, 0..history.log.len()).await;
    let projector = Projector::open_with(store.clone(), small_batches())
        .await
        .expect("open");
    let cut = Some(projections::Cut::Happened(days_ago(100)));
    let request = &every_report(days_ago(100))[0];
    let pipeline = Pipeline::default();
    let ask = || projector.report(&pipeline, request, cut, day0());
    ask().await.expect("a report");
    ask().await.expect("a report");
    assert_eq!(
        (projector.as_of_folds(), projector.kept_folds()),
        (1, 1),
        "the second ask reads the kept fold"
    );
    let contact = *history.model().contacts.keys().next().expect("a contact");
    let before = history.log.len();
    let reason = domain::values::Text::parse("asked to be forgotten").expect("a reason");
    history
        .try_decide::<domain::Contact>(
            RecordKind::Contact,
            contact,
            domain::ContactCommand::EraseContact { reason },
            "system",
            day0(),
        )
        .expect("erased");
    append_all(&store, &history, before..history.log.len()).await;
    assert_eq!(projector.kept_folds(), 0, "dropped with the erasure's commit");
    ask().await.expect("a report");
    assert_eq!(projector.as_of_folds(), 2, "folded afresh");
    projector.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_projector_agrees_with_the_pure_fold() {
    the_projector_agrees_with_the_pure_fold(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_projector_agrees_with_the_pure_fold() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    the_projector_agrees_with_the_pure_fold(database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_from_another_model_version_are_refolded() {
    let database = TestDatabase::sqlite();
    let store = database.open().await;
    let history = history();
    append_all(&store, &history, 0..history.log.len()).await;
    let projector = Projector::open(store.clone()).await.expect("open");
    projector.close().await;
    // Pretend an older version wrote the tables, with rows it would not write.
    let mut conn = sqlx::SqliteConnection::connect(&database.url).await.expect("connect");
    sqlx::query("UPDATE rm_state SET model_version = 1, position = 3")
        .execute(&mut conn)
        .await
        .expect("age the tables");
    sqlx::query("UPDATE rm_contacts SET view = '{}'")
        .execute(&mut conn)
        .await
        .expect("damage the rows");
    conn.close().await.expect("close");
    let projector = Projector::open(store).await.expect("reopen");
    assert_eq!(tables_of(&projector).await, json_of(&history.model()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_halfway_leaves_the_live_tables_serving() {
    let database = TestDatabase::sqlite();
    let store = database.open().await;
    let history = history();
    append_all(&store, &history, 0..history.log.len()).await;
    let projector = Projector::open_with(store.clone(), small_batches())
        .await
        .expect("open");
    let expected = json_of(&history.model());
    let halfway = history.log.len() as u64 / 2;
    let doomed = Arc::clone(&projector);
    let killed = tokio::spawn(async move {
        doomed
            .rebuild_with_progress(|position| assert!(position < halfway, "killed halfway"))
            .await
    })
    .await;
    assert!(killed.is_err(), "the rebuild was stopped halfway");
    assert_eq!(tables_of(&projector).await, expected, "the live tables still serve");
    projector.rebuild().await.expect("a later rebuild starts over");
    assert_eq!(tables_of(&projector).await, expected);
}

/// Appends keep coming while a rebuild folds aside and swaps: none may be
/// lost between the old tables and the new ones.
async fn a_rebuild_under_appends_misses_none(database: TestDatabase) {
    let store = database.open().await;
    let history = history();
    let half = history.log.len() / 2;
    append_all(&store, &history, 0..half).await;
    let projector = Projector::open_with(store.clone(), small_batches())
        .await
        .expect("open");
    let writer = {
        let (store, history) = (store.clone(), history.clone());
        tokio::spawn(async move {
            for n in half..history.log.len() {
                append_all(&store, &history, n..n + 1).await;
                tokio::task::yield_now().await;
            }
        })
    };
    for _ in 0..3 {
        projector.rebuild().await.expect("rebuild");
    }
    writer.await.expect("the writer");
    projector.catch_up().await.expect("catch up");
    assert_eq!(tables_of(&projector).await, json_of(&history.model()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_under_appends_misses_none() {
    a_rebuild_under_appends_misses_none(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_under_appends_misses_none() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    a_rebuild_under_appends_misses_none(database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_loop_folds_another_process_appends_without_being_asked() {
    let database = TestDatabase::sqlite();
    let store = database.open().await;
    let projector = Projector::open(store.clone()).await.expect("open");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(Arc::clone(&projector).run(shutdown));
    let history = history();
    // Another process appends: its store runs no fold of ours.
    let other = database.open().await;
    append_all(&other, &history, 0..5).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while projector.position() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the live loop did not fold the appends"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    live.await.expect("the loop stops");
    let mut five = History::default();
    five.log = history.log[..5].to_vec();
    assert_eq!(tables_of(&projector).await, json_of(&five.model()));
}

/// Whether `projector` catches up within `wait`.
async fn catches_up_within(projector: &Arc<Projector>, wait: std::time::Duration) -> bool {
    let projector = Arc::clone(projector);
    tokio::time::timeout(wait, async move { projector.catch_up().await.expect("catch up") })
        .await
        .is_ok()
}

/// What the tables lack (appends by a process that folds nothing) is folded
/// by one process at a time, the holder of the projector lease; another
/// waits for it, and takes the lease over once the holder is gone.
async fn one_process_at_a_time_folds_what_the_tables_lack(database: TestDatabase) {
    let history = history();
    let n = history.log.len();
    let first = Projector::open(database.open().await).await.expect("open the first");
    let second = Projector::open(database.open().await).await.expect("open the second");
    let other = database.open().await;
    append_all(&other, &history, 0..n / 3).await;
    assert!(catches_up_within(&first, std::time::Duration::from_secs(10)).await);
    assert!(first.is_projector().await, "the first to need a fold takes the lease");

    append_all(&other, &history, n / 3..2 * n / 3).await;
    let waiting = tokio::spawn({
        let second = Arc::clone(&second);
        async move { catches_up_within(&second, std::time::Duration::from_secs(30)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second folds nothing while the first holds the lease"
    );
    assert!(!second.is_projector().await);
    first.catch_up().await.expect("the holder folds");
    assert!(waiting.await.expect("the waiter"), "the second sees the tables move");
    assert_eq!(second.position(), (2 * n / 3) as u64);

    // The holder goes away: the next process that needs a fold takes over.
    first.close().await;
    append_all(&other, &history, 2 * n / 3..n).await;
    assert!(catches_up_within(&second, std::time::Duration::from_secs(10)).await);
    assert!(second.is_projector().await, "the lease passed to the second");
    assert_eq!(tables_of(&second).await, json_of(&history.model()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_one_process_at_a_time_folds_what_the_tables_lack() {
    one_process_at_a_time_folds_what_the_tables_lack(TestDatabase::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_process_at_a_time_folds_what_the_tables_lack() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    one_process_at_a_time_folds_what_the_tables_lack(database).await;
}
