//! Properties of the one fold, over random histories of valid commands with
//! random business times (out of order, as imports are):
//! - folding live (event by event) equals a rebuild from zero and equals
//!   `as_of` the far future, byte for byte in every report's JSON;
//! - `as_of(T)` equals the live result over the log cut at T;
//! - applying the log in two halves with a restart (snapshot round trip)
//!   between equals applying it at once;
//! - the read-model tables, folded in batches of any size (each loading
//!   only the rows its events name), hold exactly the pure fold, and so give
//!   every report byte for byte;
//! - a report as of T from a fold kept since an earlier ask, brought up to
//!   date with the events recorded since (some of which happened by T),
//!   equals the pure fold of the whole log cut at T;
//! - a trend (every report as of each of a series of dates, from one pass
//!   over the log) equals each date's pure fold, and a log written in time
//!   order costs that one pass alone.

mod support;

use chrono::{DateTime, Duration, Utc};
use domain::*;
use projections::reports::{PageRequest, QualityList, ReportRequest, Scope};
use projections::{CrmModel, Cut};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{History, append_request, day0, every_report, reports_json, thresholds};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Account(u8),
    Contact {
        account: u8,
        owner: u8,
        customer: bool,
        email: u8,
    },
    UpdateContact {
        contact: u8,
        title: u8,
    },
    ArchiveContact(u8),
    /// Erases a contact's personal data.
    EraseContact(u8),
    /// Erases a user's personal data (the user's events stay theirs).
    EraseUser(u8),
    Deal {
        account: u8,
        owner: u8,
        amount: u32,
    },
    MoveDeal {
        deal: u8,
        stage: u8,
    },
    CloseDeal {
        deal: u8,
        won: bool,
    },
    /// A new expected close: later than the one before slips the deal.
    ExpectClose {
        deal: u8,
        week: u8,
    },
    Interaction {
        contact: u8,
        actor: u8,
    },
    /// An interaction naming only a deal: it reaches the account through the deal.
    DealInteraction {
        deal: u8,
        actor: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<u8>().prop_map(Op::Account),
        4 => (any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(account, owner, customer, email)| Op::Contact { account, owner, customer, email }),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(contact, title)| Op::UpdateContact { contact, title }),
        1 => any::<u8>().prop_map(Op::ArchiveContact),
        3 => (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(account, owner, amount)| Op::Deal { account, owner, amount }),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(deal, stage)| Op::MoveDeal { deal, stage }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(deal, won)| Op::CloseDeal { deal, won }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(deal, week)| Op::ExpectClose { deal, week }),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(contact, actor)| Op::Interaction { contact, actor }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(deal, actor)| Op::DealInteraction { deal, actor }),
    ]
}

/// `op`, and now and then an erasure (kept apart so that the fixed
/// histories `op` generates stay as they were).
fn op_or_erasure() -> impl Strategy<Value = Op> {
    prop_oneof![
        38 => op(),
        2 => any::<u8>().prop_map(Op::EraseContact),
        1 => any::<u8>().prop_map(Op::EraseUser),
    ]
}

fn pick(ids: &[Uuid], n: u8) -> Option<Uuid> {
    (!ids.is_empty()).then(|| ids[n as usize % ids.len()])
}

/// Plays the operations; each at its own random day within two years.
fn play(ops: &[(Op, u16)]) -> History {
    let mut history = History::default();
    // Two sellers: a department of several owners, whose lists are read
    // owner by owner and merged.
    let users: Vec<Uuid> = [
        ("Sales", "Sales"),
        ("Support", "Support"),
        ("Marketing", "Marketing"),
        ("Sales 2", "Sales"),
    ]
    .iter()
    .map(|(name, department)| history.user(name, department, day0() - Duration::days(800)))
    .collect();
    let (mut accounts, mut contacts, mut deals) = (Vec::new(), Vec::new(), Vec::new());
    let stages = ["lead", "qualified", "proposal", "negotiation"];
    for (op, day) in ops {
        let at = day0() - Duration::days(i64::from(*day % 730)) - Duration::minutes(i64::from(*day));
        let actor = users[*day as usize % users.len()].to_string();
        match op {
            Op::Account(n) => accounts.push(history.account(
                json!({"name": format!("Account {}", n % 5), "domain": format!("a{}.com", n % 4)}),
                &actor,
                at,
            )),
            Op::Contact {
                account,
                owner,
                customer,
                email,
            } => {
                let mut fields =
                    json!({"name": format!("Person {}", email % 6), "email": format!("p{}@x.com", email % 7)});
                if let Some(account) = pick(&accounts, *account) {
                    fields["account_id"] = json!(account);
                }
                if owner % 3 != 0 {
                    fields["owner_id"] = json!(users[*owner as usize % users.len()]);
                }
                if *customer {
                    fields["lifecycle_stage"] = json!("customer");
                }
                contacts.push(history.contact(fields, &actor, at));
            }
            Op::UpdateContact { contact, title } => {
                if let Some(contact) = pick(&contacts, *contact) {
                    // Mostly a title; now and then another account or
                    // lifecycle stage, which moves the contact's stake.
                    let input = match title % 6 {
                        0 => match pick(&accounts, title / 6) {
                            Some(account) => json!({"account_id": account}),
                            None => json!({"account_id": null}),
                        },
                        1 => json!({"lifecycle_stage": "customer"}),
                        2 => json!({"lifecycle_stage": "churned"}),
                        _ => json!({"title": format!("T{}", title % 3)}),
                    };
                    let changes = ContactChanges::parse(input.as_object().expect("object"), &[]).expect("valid");
                    let _ = history.try_decide::<Contact>(
                        RecordKind::Contact,
                        contact,
                        ContactCommand::UpdateContact { changes },
                        &actor,
                        at,
                    );
                }
            }
            Op::ArchiveContact(n) => {
                if let Some(contact) = pick(&contacts, *n) {
                    let _ = history.try_decide::<Contact>(
                        RecordKind::Contact,
                        contact,
                        ContactCommand::ArchiveContact,
                        &actor,
                        at,
                    );
                }
            }
            Op::EraseContact(n) => {
                if let Some(contact) = pick(&contacts, *n) {
                    let reason = domain::values::Text::parse("asked to be forgotten").expect("a reason");
                    let _ = history.try_decide::<Contact>(
                        RecordKind::Contact,
                        contact,
                        ContactCommand::EraseContact { reason },
                        &actor,
                        at,
                    );
                }
            }
            Op::EraseUser(n) => {
                if let Some(user) = pick(&users, *n) {
                    let reason = domain::values::Text::parse("left the company").expect("a reason");
                    let _ = history.try_decide::<User>(
                        RecordKind::User,
                        user,
                        UserCommand::EraseUser { reason },
                        "system",
                        at,
                    );
                }
            }
            Op::Deal { account, owner, amount } => {
                if let Some(account) = pick(&accounts, *account) {
                    let mut fields = json!({"title": "Deal", "account_id": account, "amount": {"value_minor": amount % 1_000_000, "currency": if amount % 2 == 0 { "EUR" } else { "USD" }}});
                    if owner % 2 == 0 {
                        fields["owner_id"] = json!(users[*owner as usize / 2 % users.len()]);
                    }
                    deals.push(history.deal(fields, &actor, at));
                }
            }
            Op::MoveDeal { deal, stage } => {
                if let Some(deal) = pick(&deals, *deal) {
                    let command = DealCommand::MoveDealStage {
                        stage: stages[*stage as usize % stages.len()].into(),
                    };
                    let _ = history.try_decide::<Deal>(RecordKind::Deal, deal, command, &actor, at);
                }
            }
            Op::CloseDeal { deal, won } => {
                if let Some(deal) = pick(&deals, *deal) {
                    let outcome = if *won { DealOutcome::Won } else { DealOutcome::Lost };
                    let _ = history.try_decide::<Deal>(
                        RecordKind::Deal,
                        deal,
                        DealCommand::CloseDeal { outcome, reason: None },
                        &actor,
                        at,
                    );
                }
            }
            Op::ExpectClose { deal, week } => {
                if let Some(deal) = pick(&deals, *deal) {
                    let close = day0().date_naive() + Duration::weeks(i64::from(*week % 20));
                    // Now and then the deal moves to another account instead.
                    let input = match pick(&accounts, week / 5).filter(|_| week % 5 == 0) {
                        Some(account) => json!({"account_id": account}),
                        None => json!({"expected_close": close.to_string()}),
                    };
                    let changes = DealChanges::parse(input.as_object().expect("object"), &[]).expect("valid");
                    let command = DealCommand::UpdateDeal { changes, stage: None };
                    let _ = history.try_decide::<Deal>(RecordKind::Deal, deal, command, &actor, at);
                }
            }
            Op::Interaction { contact, actor: who } => {
                if let Some(contact) = pick(&contacts, *contact) {
                    let actor = users[*who as usize % users.len()].to_string();
                    history.interaction(json!({"contact_id": contact}), &actor, at);
                }
            }
            Op::DealInteraction { deal, actor: who } => {
                if let Some(deal) = pick(&deals, *deal) {
                    let actor = users[*who as usize % users.len()].to_string();
                    history.interaction(json!({"deal_id": deal, "kind": "meeting"}), &actor, at);
                }
            }
        }
    }
    history
}

/// Each account's stakes as its deals and contacts say: open deals (not
/// archived), customer contacts (not archived).
fn stakes_counted(model: &CrmModel) -> Vec<(Uuid, u64, u64)> {
    model
        .accounts
        .keys()
        .map(|id| {
            let open = model
                .deals
                .values()
                .filter(|d| d.fields.account_id == *id && !d.meta.archived && d.status == DealStatus::Open)
                .count();
            let customers = model
                .contacts
                .values()
                .filter(|c| {
                    c.fields.account_id == Some(*id)
                        && !c.meta.archived
                        && c.fields.lifecycle_stage == Some(LifecycleStage::Customer)
                })
                .count();
            (*id, open as u64, customers as u64)
        })
        .collect()
}

/// Every report and the model itself, as JSON text.
fn all_reports(model: &CrmModel, as_of: DateTime<Utc>) -> String {
    json!({"reports": reports_json(model, &every_report(as_of), as_of), "model": model}).to_string()
}

fn decode(recorded: &eventstore::RecordedEvent) -> Event {
    projections::decode(recorded).expect("decodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn live_equals_rebuild_equals_as_of_the_far_future(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80)) {
        let history = play(&ops);
        let mut live = CrmModel::default();
        for recorded in &history.log {
            live.apply(recorded, &decode(recorded));
        }
        let rebuilt = history.model();
        let far_future = history.model_until(Some(day0() + Duration::days(365 * 100)));
        prop_assert_eq!(all_reports(&live, day0()), all_reports(&rebuilt, day0()));
        prop_assert_eq!(all_reports(&live, day0()), all_reports(&far_future, day0()));
    }

    #[test]
    fn an_erasure_leaves_the_live_models_as_a_rebuild_reads_the_log_after_it(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80)) {
        let history = play(&ops);
        let mut live = CrmModel::default();
        for recorded in &history.log {
            live.apply(recorded, &decode(recorded));
        }
        let mut rebuilt = CrmModel::default();
        for recorded in &history.as_read_after_erasures() {
            rebuilt.apply(recorded, &decode(recorded));
        }
        prop_assert_eq!(all_reports(&live, day0()), all_reports(&rebuilt, day0()));
    }

    #[test]
    fn an_accounts_stakes_are_what_its_deals_and_contacts_say(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80)) {
        let model = play(&ops).model();
        let kept: Vec<(Uuid, u64, u64)> =
            model.accounts.values().map(|a| (a.id, a.open_deals, a.customer_contacts)).collect();
        prop_assert_eq!(kept, stakes_counted(&model));
    }

    #[test]
    fn as_of_equals_the_live_result_over_the_log_cut_there(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80), days_back in 0i64..800) {
        let history = play(&ops);
        let cut = day0() - Duration::days(days_back);
        let mut live_over_cut = CrmModel::default();
        // Erased data reads as erased as of any date: the key is gone.
        for recorded in history.as_read_after_erasures().iter().filter(|e| e.occurred_at <= cut) {
            live_over_cut.apply(recorded, &decode(recorded));
        }
        prop_assert_eq!(all_reports(&history.model_until(Some(cut)), cut), all_reports(&live_over_cut, cut));
    }

    #[test]
    fn two_halves_with_a_restart_between_equal_one_run(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80), split in any::<prop::sample::Index>()) {
        let history = play(&ops);
        let split = split.index(history.log.len() + 1);
        let mut first = CrmModel::default();
        for recorded in &history.log[..split] {
            first.apply(recorded, &decode(recorded));
        }
        let saved = serde_json::to_string(&first).expect("serialise");
        let mut restarted: CrmModel = serde_json::from_str(&saved).expect("deserialise");
        // A restart replays from an older checkpoint: the overlap must be harmless.
        let overlap = split.saturating_sub(3);
        for recorded in &history.log[overlap..] {
            restarted.apply(recorded, &decode(recorded));
        }
        prop_assert_eq!(all_reports(&restarted, day0()), all_reports(&history.model(), day0()));
    }
}

/// Appends a history to a fresh SQLite store, folds it into the tables in
/// batches of `batch_events`, and reads the tables back as one model, with
/// every report the live tables answer.
async fn folded_through_tables(history: &History, batch_events: usize, split: usize) -> (CrmModel, Vec<Value>) {
    use eventstore::AppendRequest;
    let database = eventstore::testing::TestDatabase::sqlite();
    let store = database.open().await;
    let requests: Vec<AppendRequest> = history.log.iter().map(append_request).collect();
    let mut requests = requests.into_iter();
    // The first part is folded when the projector opens, the rest inside
    // the transactions that append it (group commits of any size).
    let before: Vec<AppendRequest> = requests.by_ref().take(split).collect();
    for result in store.append_all(before).await.expect("append") {
        result.expect("each append");
    }
    // A log longer than a batch is folded the way a rebuild does, in rows
    // written back when `batch_events` of them are held.
    let options = projections::ProjectorOptions {
        fold_batch_events: batch_events,
        rebuild_batch_events: batch_events,
        rebuild_rows_max: batch_events,
        ..projections::ProjectorOptions::default()
    };
    let projector = projections::Projector::open_with(store.clone(), options)
        .await
        .expect("fold");
    for result in store.append_all(requests.collect()).await.expect("append") {
        result.expect("each append");
    }
    assert_eq!(projector.position(), history.log.len() as u64, "folded as appended");
    let model = projector.whole(true).await.expect("read the tables");
    let mut reports = Vec::new();
    for request in every_report(day0()) {
        let report = projector.report(&Pipeline::default(), &request, None, day0()).await;
        reports.push(report.expect("a live report"));
    }
    projector.close().await;
    store.close().await;
    (model, reports)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_tables_folded_in_batches_of_any_size_equal_the_pure_fold(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80), batch_events in 1usize..12, split in any::<prop::sample::Index>()) {
        let history = play(&ops);
        let split = split.index(history.log.len() + 1);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (tables, live_reports) = runtime.block_on(folded_through_tables(&history, batch_events, split));
        drop(runtime);
        let pure = history.model();
        prop_assert_eq!(serde_json::to_string(&tables).expect("json"), serde_json::to_string(&pure).expect("json"));
        // The columns reports filter on, kept up to date row by row, give
        // what the same rows written at once give.
        let reports_of_pure_fold = reports_json(&pure, &every_report(day0()), day0());
        prop_assert_eq!(json!(live_reports).to_string(), json!(reports_of_pure_fold).to_string());
    }
}

/// Asks every report cut at `cut` (made once the log's first `split`
/// events are appended) over those events (the folds are kept), appends
/// the rest, and asks again: the answers of the second ask, how many folds
/// were made from the start of the log, and the cut.
async fn as_of_asked_twice(history: &History, split: usize, cut: impl Fn() -> Cut) -> (Vec<Value>, u64, Cut) {
    let database = eventstore::testing::TestDatabase::sqlite();
    let store = database.open().await;
    let mut requests = history.log.iter().map(append_request);
    for result in store
        .append_all(requests.by_ref().take(split).collect())
        .await
        .expect("append")
    {
        result.expect("each append");
    }
    let options = projections::ProjectorOptions {
        fold_batch_events: 4,
        rebuild_batch_events: 4,
        rebuild_rows_max: 4,
        ..projections::ProjectorOptions::default()
    };
    let projector = projections::Projector::open_with(store.clone(), options)
        .await
        .expect("open");
    let cut = cut();
    // What is appended next is recorded after the cut.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let ask = || async {
        let mut reports = Vec::new();
        for request in every_report(cut.at()) {
            let report = projector
                .report(&Pipeline::default(), &request, Some(cut), day0())
                .await;
            reports.push(report.expect("a report as of the cut"));
        }
        reports
    };
    ask().await;
    for result in store.append_all(requests.collect()).await.expect("append") {
        result.expect("each append");
    }
    let reports = ask().await;
    let folds = projector.as_of_folds();
    projector.close().await;
    store.close().await;
    (reports, folds, cut)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_kept_fold_as_of_a_date_brought_up_to_date_equals_the_log_cut_there(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80), split in any::<prop::sample::Index>(), days_back in 0i64..400) {
        let history = play(&ops);
        let split = split.index(history.log.len() + 1);
        let cut = day0() - Duration::days(days_back);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (reports, folds, _) = runtime.block_on(as_of_asked_twice(&history, split, || Cut::Happened(cut)));
        drop(runtime);
        // Unless an erasure was appended since: the kept fold held what it
        // erased, so the second ask folds afresh.
        let erased_since = history.log[split..]
            .iter()
            .any(|e| domain::ERASURES.contains(&e.event_type.as_str()));
        prop_assert_eq!(folds, 1 + u64::from(erased_since), "the second ask updates the first fold");
        let pure = reports_json(&history.model_until(Some(cut)), &every_report(cut), cut);
        prop_assert_eq!(json!(reports).to_string(), json!(pure).to_string());
    }

    #[test]
    fn as_recorded_is_the_fold_of_what_the_log_held_then_whenever_it_happened(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..80), split in any::<prop::sample::Index>()) {
        let history = play(&ops);
        let split = split.index(history.log.len() + 1);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (reports, folds, cut) = runtime.block_on(as_of_asked_twice(&history, split, || {
            Cut::Recorded(eventstore::to_stored_precision(chrono::Utc::now()))
        }));
        drop(runtime);
        let erased_since = history.log[split..]
            .iter()
            .any(|e| domain::ERASURES.contains(&e.event_type.as_str()));
        prop_assert_eq!(folds, 1 + u64::from(erased_since), "the second ask passes over what came after");
        // The log's first `split` events, whatever their business time, as
        // read once the log's erasures have destroyed their keys.
        let mut prefix = CrmModel::default();
        for recorded in &history.as_read_after_erasures()[..split] {
            prefix.apply(recorded, &decode(recorded));
        }
        let mut pure = reports_json(&prefix, &every_report(cut.at()), cut.at());
        for report in &mut pure {
            report["as_recorded"] = json!(cut.at());
        }
        prop_assert_eq!(json!(reports).to_string(), json!(pure).to_string());
    }
}

/// Every report, each as of every one of `dates` through
/// `reports_over_time`, with the folds each trend made from the start of
/// the log.
async fn trends(history: &History, dates: &[DateTime<Utc>]) -> (Vec<Vec<Value>>, Vec<u64>) {
    let database = eventstore::testing::TestDatabase::sqlite();
    let store = database.open().await;
    for result in store
        .append_all(history.log.iter().map(append_request).collect())
        .await
        .expect("append")
    {
        result.expect("each append");
    }
    let options = projections::ProjectorOptions {
        rebuild_batch_events: 5,
        as_of_cached: 0,
        ..projections::ProjectorOptions::default()
    };
    let projector = projections::Projector::open_with(store.clone(), options)
        .await
        .expect("open");
    let (mut reports, mut folds) = (Vec::new(), Vec::new());
    for n in 0..every_report(day0()).len() {
        let asks: Vec<(DateTime<Utc>, ReportRequest)> = dates
            .iter()
            .map(|date| (*date, every_report(*date).remove(n)))
            .collect();
        let before = projector.as_of_folds();
        let trend = projector
            .reports_over_time(&Pipeline::default(), &asks)
            .await
            .expect("a trend");
        folds.push(projector.as_of_folds() - before);
        reports.push(trend);
    }
    projector.close().await;
    store.close().await;
    (reports, folds)
}

/// The same operations, each at the same business time, played in the
/// order of those times: a log written as things happen.
fn in_time_order(ops: &[(Op, u16)]) -> Vec<(Op, u16)> {
    let mut ops = ops.to_vec();
    // `play` puts an operation `day % 730` days and `day` minutes before day0.
    ops.sort_by_key(|(_, day)| std::cmp::Reverse(u32::from(day % 730) * 24 * 60 + u32::from(*day)));
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn a_trend_is_each_dates_report_and_one_pass_over_a_log_in_time_order(ops in prop::collection::vec((op_or_erasure(), any::<u16>()), 1..60), first in 0i64..700, step in 1i64..200, in_order in any::<bool>()) {
        let ops = if in_order { in_time_order(&ops) } else { ops };
        let history = play(&ops);
        let dates: Vec<DateTime<Utc>> = (0..4).map(|n| day0() - Duration::days(first) + Duration::days(n * step)).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (trends, folds) = runtime.block_on(trends(&history, &dates));
        drop(runtime);
        for (n, trend) in trends.iter().enumerate() {
            let pure: Vec<Value> = dates
                .iter()
                .map(|date| reports_json(&history.model_until(Some(*date)), &[every_report(*date).remove(n)], *date).remove(0))
                .collect();
            prop_assert_eq!(json!(trend).to_string(), json!(pure).to_string(), "report {}", n);
        }
        if in_order {
            prop_assert!(folds.iter().all(|f| *f == 1), "{:?}", folds);
        }
    }
}

/// A history of 300 random operations (deterministic).
fn generated_history() -> History {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = prop::collection::vec((op(), any::<u16>()), 300)
        .new_tree(&mut runner)
        .expect("generate")
        .current();
    play(&ops)
}

fn list_request(list: QualityList, scope: &Scope, cursor: Option<String>, limit: usize) -> ReportRequest {
    ReportRequest::QualityList {
        list,
        thresholds: thresholds(),
        scope: scope.clone(),
        page: PageRequest { cursor, limit },
    }
}

#[test]
fn generated_histories_exercise_every_report() {
    // Guards the properties against a generator whose histories are empty.
    let model = generated_history().model();
    let reports = reports_json(&model, &every_report(day0()), day0());
    let summary = &reports[2]["summary"];
    for figure in [
        "stale",
        "never_updated",
        "incomplete",
        "duplicate_groups",
        "rotting_deals",
    ] {
        assert!(summary[figure].as_u64() > Some(0), "{figure}: {summary}");
    }
    // The narrowed reports count something too: a department's stale
    // records, contacts, records missing one check.
    for (n, figure) in [(5, "stale"), (6, "never_updated"), (8, "incomplete")] {
        let summary = &reports[n]["summary"];
        assert!(summary[figure].as_u64() > Some(0), "{n} {figure}: {summary}");
    }
    assert!(reports[0]["totals"]["count"].as_u64() > Some(0));
    assert!(model.interactions.len() > 10 && model.deals.values().any(|d| d.closed.is_some()));
    assert!(reports[3]["total"].as_u64() > Some(0), "{}", reports[3]);
    let period = &reports[1]["period"];
    for figure in ["new", "slipped"] {
        assert!(period[figure].as_u64() > Some(0), "{figure}: {period}");
    }
}

#[test]
fn small_pages_followed_by_their_cursors_give_the_whole_list_and_its_total() {
    let model = generated_history().model();
    let whole_requests: Vec<ReportRequest> = QualityList::ALL
        .into_iter()
        .map(|list| list_request(list, &Scope::default(), None, 500))
        .collect();
    let wholes = reports_json(&model, &whole_requests, day0());
    for (list, whole) in QualityList::ALL.into_iter().zip(wholes) {
        let mut items = Vec::new();
        let mut cursor = None;
        loop {
            let page = reports_json(&model, &[list_request(list, &Scope::default(), cursor, 3)], day0()).remove(0);
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            assert_eq!(page["total"], whole["total"], "{}", list.name());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(json!(items), whole["items"], "{}", list.name());
        assert_eq!(whole["total"].as_u64(), Some(items.len() as u64), "{}", list.name());
    }
}

#[test]
fn a_scoped_list_is_the_whole_list_narrowed_to_the_scope() {
    let model = generated_history().model();
    let owner = *model.users.keys().next().expect("a user");
    let department = "Sales".to_owned();
    let of_department: Vec<String> = model
        .users
        .values()
        .filter(|u| u.department == department)
        .map(|u| u.id.to_string())
        .collect();
    let by_owner = Scope {
        owner_id: Some(owner),
        ..Scope::default()
    };
    let by_department = Scope {
        department: Some(department.clone()),
        ..Scope::default()
    };
    let contacts = Scope {
        kind: Some(domain::RecordKind::Contact),
        ..Scope::default()
    };
    let account = *model.accounts.keys().next().expect("an account");
    let of_account = Scope {
        account_id: Some(account),
        ..Scope::default()
    };
    let customers = Scope {
        lifecycle: Some("customer".into()),
        ..Scope::default()
    };
    // What the model says of an entry's record: its account, its lifecycle stage.
    let account_of = |e: &Value| -> Option<uuid::Uuid> {
        let id = e["id"].as_str().and_then(|raw| uuid::Uuid::parse_str(raw).ok())?;
        match e["kind"].as_str() {
            Some("account") => Some(id),
            Some("contact") => model.contacts.get(&id).and_then(|c| c.fields.account_id),
            _ => model.deals.get(&id).map(|d| d.fields.account_id),
        }
    };
    let is_customer = |e: &Value| {
        e["id"]
            .as_str()
            .and_then(|raw| uuid::Uuid::parse_str(raw).ok())
            .and_then(|id| model.contacts.get(&id))
            .is_some_and(|c| c.fields.lifecycle_stage == Some(domain::LifecycleStage::Customer))
    };
    for list in [QualityList::Stale, QualityList::NeverUpdated, QualityList::Incomplete] {
        let requests = [
            list_request(list, &Scope::default(), None, 500),
            list_request(list, &by_owner, None, 500),
            list_request(list, &by_department, None, 500),
            list_request(list, &contacts, None, 500),
            list_request(list, &of_account, None, 500),
            list_request(list, &customers, None, 500),
        ];
        let [whole, owned, departed, of_contacts, accounted, of_customers]: [Value; 6] =
            reports_json(&model, &requests, day0()).try_into().expect("six reports");
        let narrowed = |keep: &dyn Fn(&Value) -> bool| -> Value {
            json!(
                whole["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| keep(e))
                    .collect::<Vec<_>>()
            )
        };
        let owner_id = owner.to_string();
        assert_eq!(
            owned["items"],
            narrowed(&|e| e["owner"]["id"] == owner_id.as_str()),
            "{}",
            list.name()
        );
        assert_eq!(
            departed["items"],
            narrowed(&|e| of_department.iter().any(|id| e["owner"]["id"] == id.as_str())),
            "{}",
            list.name()
        );
        assert_eq!(
            of_contacts["items"],
            narrowed(&|e| e["kind"] == "contact"),
            "{}",
            list.name()
        );
        assert_eq!(
            accounted["items"],
            narrowed(&|e| account_of(e) == Some(account)),
            "{}",
            list.name()
        );
        assert_eq!(of_customers["items"], narrowed(&is_customer), "{}", list.name());
        // Every list fits its page: its total is its entries, whether the
        // total was added up from per-owner counts or counted.
        for scoped in [&whole, &owned, &departed, &of_contacts, &accounted, &of_customers] {
            let entries = scoped["items"].as_array().map(Vec::len);
            assert_eq!(scoped["total"].as_u64(), entries.map(|n| n as u64), "{}", list.name());
        }
        assert!(
            owned["total"].as_u64() < whole["total"].as_u64(),
            "{}: the scope narrows",
            list.name()
        );
    }
    // A department of several owners, read in small pages: each page
    // merges the owners' ranges, and the cursors lose and repeat nothing.
    assert!(of_department.len() > 1, "{of_department:?}");
    for list in [
        QualityList::Stale,
        QualityList::NeverUpdated,
        QualityList::Incomplete,
        QualityList::RottingDeals,
    ] {
        let whole = reports_json(&model, &[list_request(list, &Scope::default(), None, 500)], day0()).remove(0);
        let expected: Vec<Value> = whole["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| of_department.iter().any(|id| e["owner"]["id"] == id.as_str()))
            .cloned()
            .collect();
        let owners_listed: std::collections::BTreeSet<&str> =
            expected.iter().filter_map(|e| e["owner"]["id"].as_str()).collect();
        assert!(owners_listed.len() > 1, "{}: {owners_listed:?}", list.name());
        let (mut items, mut cursor) = (Vec::new(), None);
        loop {
            let page = reports_json(&model, &[list_request(list, &by_department, cursor, 3)], day0()).remove(0);
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            assert_eq!(page["total"].as_u64(), Some(expected.len() as u64), "{}", list.name());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(items, expected, "{}", list.name());
    }
}
