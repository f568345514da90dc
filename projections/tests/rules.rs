//! Each report rule with a fixed clock, including its edges.

mod support;

use domain::RecordKind;
use projections::reports::{
    self, DataQualityReport, NeglectedAccountsReport, OwnersReport, PipelineReport, QualityThresholds, ReportRequest,
};
use serde_json::json;
use support::{History, day0, days_ago, report};
use uuid::Uuid;

fn thresholds() -> QualityThresholds {
    QualityThresholds {
        stale_days: 90,
        never_updated_days: 30,
    }
}

fn ids<T>(entries: &[T], id: impl Fn(&T) -> Uuid) -> Vec<Uuid> {
    entries.iter().map(id).collect()
}

fn quality_with(history: &History, thresholds: QualityThresholds) -> DataQualityReport {
    let request = ReportRequest::DataQuality {
        thresholds,
        scope: reports::Scope::default(),
        page: reports::PageRequest::default(),
    };
    report(&history.model(), request)
}

fn quality(history: &History) -> DataQualityReport {
    quality_with(history, thresholds())
}

fn pipeline(history: &History) -> PipelineReport {
    let request = ReportRequest::Pipeline {
        scope: reports::Scope::default(),
        page: reports::PageRequest::default(),
        from: None,
    };
    report(&history.model(), request)
}

fn neglected(history: &History) -> NeglectedAccountsReport {
    neglected_by(history, 30, reports::DepartmentRules::default())
}

fn neglected_by(history: &History, days: u32, departments: reports::DepartmentRules) -> NeglectedAccountsReport {
    let request = ReportRequest::NeglectedAccounts {
        days,
        departments,
        scope: reports::Scope::default(),
        page: reports::PageRequest::default(),
    };
    report(&history.model(), request)
}

fn owners(history: &History) -> OwnersReport {
    let request = ReportRequest::Owners {
        thresholds: thresholds(),
        scope: reports::Scope::default(),
    };
    report(&history.model(), request)
}

#[test]
fn a_record_exactly_stale_days_old_is_not_stale_one_second_more_is() {
    let mut history = History::default();
    let exact = history.contact(json!({"name": "Exactly Ninety"}), "system", days_ago(90));
    let older = history.contact(
        json!({"name": "Ninety And A Bit"}),
        "system",
        days_ago(90) - chrono::Duration::seconds(1),
    );
    let stale = ids(&quality(&history).stale, |e| e.id);
    assert_eq!(stale, [older], "{exact} is exactly 90 days old and not stale yet");
}

#[test]
fn an_interaction_alone_resets_the_clock_and_is_named_as_the_reason() {
    let mut history = History::default();
    let touched = history.contact(json!({"name": "Called Lately"}), "system", days_ago(200));
    let untouched = history.contact(json!({"name": "Never Called"}), "system", days_ago(200));
    let call = history.interaction(json!({"contact_id": touched.to_string()}), "system", days_ago(10));
    let report = quality(&history);
    assert_eq!(ids(&report.stale, |e| e.id), [untouched]);
    let model = history.model();
    let contact = &model.contacts[&touched];
    assert_eq!((contact.meta.version, contact.meta.interaction_count), (1, 1));
    assert_eq!(contact.meta.last_touched_at, days_ago(10));
    assert_eq!(contact.meta.last_touch.event_type, "InteractionLogged");
    assert_eq!(model.interactions[&call].at.position, contact.meta.last_touch.position);
    let stale = &report.stale[0];
    assert_eq!(
        (stale.days_since_touch, stale.clock_reset_by.event_type.as_str()),
        (200, "ContactCreated")
    );
    assert!(stale.reason.contains("200 days"), "{}", stale.reason);
}

#[test]
fn a_backfilled_interaction_does_not_move_the_clock_back() {
    let mut history = History::default();
    let contact = history.contact(json!({"name": "Imported"}), "system", days_ago(5));
    history.interaction(json!({"contact_id": contact.to_string()}), "system", days_ago(400));
    let model = history.model();
    assert_eq!(model.contacts[&contact].meta.last_touched_at, days_ago(5));
    assert_eq!(model.contacts[&contact].meta.last_touch.event_type, "ContactCreated");
}

#[test]
fn never_updated_means_no_change_and_no_interaction_since_creation() {
    let mut history = History::default();
    let idle = history.contact(json!({"name": "Idle"}), "system", days_ago(31));
    let edited = history.contact(json!({"name": "Edited"}), "system", days_ago(60));
    history.update_contact(edited, json!({"title": "CTO"}), "system", days_ago(50));
    let called = history.contact(json!({"name": "Called"}), "system", days_ago(60));
    history.interaction(json!({"contact_id": called.to_string()}), "system", days_ago(59));
    let young = history.contact(json!({"name": "Thirty Days Exactly"}), "system", days_ago(30));
    let report = quality(&history);
    assert_eq!(
        ids(&report.never_updated, |e| e.id),
        [idle],
        "{young} is exactly 30 days old"
    );
}

#[test]
fn imported_last_activity_resets_the_clocks_at_its_own_time_and_only_from_then() {
    let mut history = History::default();
    let migrated = history.contact(json!({"name": "Migrated"}), "admin", days_ago(400));
    let imported = |kind, record_id| {
        vec![domain::Event::ActivityImported(domain::ActivityImported {
            kind,
            record_id,
        })]
    };
    history.record(
        RecordKind::Contact,
        migrated,
        imported(RecordKind::Contact, migrated),
        "admin",
        days_ago(10),
    );
    let left = history.contact(json!({"name": "Left alone"}), "admin", days_ago(400));
    let report = quality(&history);
    assert_eq!(ids(&report.stale, |e| e.id), [left]);
    assert_eq!(ids(&report.never_updated, |e| e.id), [left]);
    let model = history.model();
    let meta = &model.contacts[&migrated].meta;
    assert_eq!((meta.version, meta.interaction_count), (2, 0));
    assert_eq!((meta.last_touched_at, meta.updated_at), (days_ago(10), days_ago(400)));
    assert_eq!(meta.last_touch.event_type, "ActivityImported");
    // Before the activity happened, the record was as idle as the other.
    let before = history.model_until(Some(days_ago(20)));
    assert_eq!(before.contacts[&migrated].meta.last_touched_at, days_ago(400));
    // A deal's rotting clock too, as a call would.
    let acme = history.account(json!({"name": "Acme"}), "admin", days_ago(100));
    let deal = history.deal(
        json!({"title": "Old", "account_id": acme.to_string()}),
        "admin",
        days_ago(90),
    );
    history.record(
        RecordKind::Deal,
        deal,
        imported(RecordKind::Deal, deal),
        "admin",
        days_ago(2),
    );
    assert_eq!(history.model().deals[&deal].last_activity.occurred_at, days_ago(2));
}

#[test]
fn archived_records_leave_every_report() {
    let mut history = History::default();
    let account = history.account(json!({"name": "Gone Inc"}), "system", days_ago(300));
    let contact = history.contact(
        json!({"name": "Gone", "account_id": account.to_string(), "lifecycle_stage": "customer"}),
        "system",
        days_ago(300),
    );
    history.contact(
        json!({"name": "Gone", "account_id": account.to_string()}),
        "system",
        days_ago(300),
    );
    history.archive_contact(contact, "system", days_ago(200));
    let report = quality(&history);
    assert!(!report.stale.iter().any(|e| e.id == contact));
    assert!(!report.incomplete.iter().any(|e| e.id == contact));
    assert!(
        report.duplicates.is_empty(),
        "an archived contact is nobody's duplicate: {:?}",
        report.duplicates
    );
    let neglected = neglected(&history);
    assert!(neglected.accounts.is_empty(), "its only customer contact is archived");
}

#[test]
fn records_with_no_owner_are_listed_without_one_and_counted_as_unowned() {
    let mut history = History::default();
    let ann = history.user("Ann", "Sales", days_ago(400));
    let owned = history.contact(
        json!({"name": "Owned", "owner_id": ann.to_string(), "email": "o@x.com"}),
        &ann.to_string(),
        days_ago(100),
    );
    let orphan = history.contact(json!({"name": "Orphan", "email": "p@x.com"}), "system", days_ago(100));
    let report = quality(&history);
    let stale_orphan = report
        .stale
        .iter()
        .find(|e| e.id == orphan)
        .expect("the orphan is stale");
    assert_eq!(stale_orphan.owner, None);
    let stale_owned = report
        .stale
        .iter()
        .find(|e| e.id == owned)
        .expect("the owned contact is stale");
    assert_eq!(
        stale_owned
            .owner
            .as_ref()
            .map(|o| (o.name.as_str(), o.department.as_str())),
        Some(("Ann", "Sales"))
    );
    let owners = owners(&history);
    assert_eq!(owners.unowned.records, 1);
    assert_eq!(owners.unowned.stale, 1);
    let ann_line = owners
        .owners
        .iter()
        .find(|l| l.owner.as_ref().is_some_and(|o| o.id == ann))
        .expect("Ann's line");
    assert_eq!(
        (ann_line.contacts, ann_line.stale, ann_line.stale_share),
        (1, 1, Some(1.0))
    );
    assert_eq!(ann_line.last_activity_at, Some(days_ago(100)));
}

#[test]
fn incomplete_contacts_name_what_is_missing_and_score_completeness() {
    let mut history = History::default();
    let ann = history.user("Ann", "Sales", days_ago(10));
    let account = history.account(
        json!({"name": "Acme", "domain": "acme.com", "owner_id": ann.to_string()}),
        "system",
        days_ago(5),
    );
    let bare = history.contact(json!({"name": "Bare"}), "system", day0());
    let phone_only = history.contact(
        json!({"name": "Phone Only", "phone": "+44 20 7946 0958", "owner_id": ann.to_string()}),
        "system",
        day0(),
    );
    history.contact(json!({"name": "Complete", "email": "c@acme.com", "owner_id": ann.to_string(), "account_id": account.to_string()}), "system", day0());
    let report = quality(&history);
    let entries: Vec<(Uuid, Vec<&str>, f64)> = report
        .incomplete
        .iter()
        .map(|e| (e.id, e.missing.iter().map(String::as_str).collect(), e.completeness))
        .collect();
    assert_eq!(
        entries,
        [
            (bare, vec!["email or phone", "owner", "account"], 0.0),
            (phone_only, vec!["account"], 0.67)
        ]
    );
}

#[test]
fn duplicates_group_by_normalised_email_phone_or_name_within_an_account() {
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", day0());
    let other = history.account(json!({"name": "Other"}), "system", day0());
    let a = history.contact(json!({"name": "Ada", "email": "Ada@Acme.com"}), "system", day0());
    let b = history.contact(
        json!({"name": "A. Lovelace", "email": "ada@acme.COM"}),
        "system",
        day0(),
    );
    let c = history.contact(json!({"name": "Grace", "phone": "+1 415 555 2671"}), "system", day0());
    let d = history.contact(
        json!({"name": "G. Hopper", "phone": "+1-415-555-2671"}),
        "system",
        day0(),
    );
    let e = history.contact(
        json!({"name": "Alan  Turing", "account_id": acme.to_string()}),
        "system",
        day0(),
    );
    let f = history.contact(
        json!({"name": "alan turing", "account_id": acme.to_string()}),
        "system",
        day0(),
    );
    history.contact(
        json!({"name": "Alan Turing", "account_id": other.to_string()}),
        "system",
        day0(),
    );
    let groups: Vec<(String, Vec<Uuid>)> = quality(&history)
        .duplicates
        .iter()
        .map(|g| (g.reason.clone(), ids(&g.records, |m| m.id)))
        .collect();
    assert_eq!(
        groups,
        [
            ("same email".to_string(), vec![a, b]),
            ("same name within one account".to_string(), vec![e, f]),
            ("same phone".to_string(), vec![c, d]),
        ]
    );
}

#[test]
fn a_large_duplicate_group_lists_its_first_records_and_says_there_are_more() {
    let mut history = History::default();
    let shared = reports::MEMBERS_LISTED_MAX + 3;
    let mut switchboard: Vec<Uuid> = (0..shared)
        .map(|n| {
            history.contact(
                json!({"name": format!("Caller {n}"), "phone": "+44 20 7946 0000"}),
                "system",
                day0(),
            )
        })
        .collect();
    let pair = [
        history.contact(json!({"name": "Ada", "email": "ada@acme.com"}), "system", day0()),
        history.contact(json!({"name": "Ada L.", "email": "ADA@acme.com"}), "system", day0()),
    ];
    let report = quality(&history);
    let group = |reason: &str| {
        report
            .duplicates
            .iter()
            .find(|g| g.reason == reason)
            .unwrap_or_else(|| panic!("a group for {reason}"))
    };
    switchboard.sort();
    let phone = group("same phone");
    assert_eq!(
        ids(&phone.records, |m| m.id),
        switchboard[..reports::MEMBERS_LISTED_MAX],
        "the first records in id order"
    );
    assert!(phone.more_records);
    let mut pair = pair.to_vec();
    pair.sort();
    let email = group("same email");
    assert_eq!(ids(&email.records, |m| m.id), pair);
    assert!(!email.more_records);
}

#[test]
fn deals_rot_after_their_stage_rotting_days_measured_from_entering_the_stage() {
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", days_ago(100));
    let deal = |h: &mut History, title: &str| {
        h.deal(
            json!({"title": title, "account_id": acme.to_string()}),
            "system",
            days_ago(60),
        )
    };
    let rotting = deal(&mut history, "Stuck in proposal");
    history.move_deal(rotting, "proposal", "system", days_ago(11));
    let fresh = deal(&mut history, "Just moved");
    history.move_deal(fresh, "negotiation", "system", days_ago(7));
    let closed = deal(&mut history, "Won long ago");
    history.close_deal(closed, true, "system", days_ago(50));
    let report = pipeline(&history);
    assert_eq!(
        ids(&report.rotting_deals, |d| d.id),
        [rotting],
        "negotiation rots after 7 days: exactly 7 is not rotting"
    );
    assert_eq!(report.rotting_deals[0].clock_reset_by.event_type, "DealStageChanged");
    assert_eq!((report.won, report.lost, report.win_rate), (1, 0, Some(1.0)));
    let quality_rotting = ids(&quality(&history).rotting_deals, |d| d.id);
    assert_eq!(quality_rotting, [rotting], "one rule, two reports");
}

#[test]
fn pipeline_sums_amounts_per_currency_and_weights_them_by_stage() {
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", days_ago(10));
    let amount = |value: i64, currency: &str| json!({"value_minor": value, "currency": currency});
    history.deal(
        json!({"title": "A", "account_id": acme.to_string(), "stage": "proposal", "amount": amount(100_000, "EUR")}),
        "system",
        days_ago(4),
    );
    history.deal(
        json!({"title": "B", "account_id": acme.to_string(), "stage": "proposal", "amount": amount(50_000, "EUR")}),
        "system",
        days_ago(2),
    );
    history.deal(
        json!({"title": "C", "account_id": acme.to_string(), "stage": "lead", "amount": amount(9_999, "USD")}),
        "system",
        days_ago(1),
    );
    let report = pipeline(&history);
    let proposal = report
        .stages
        .iter()
        .find(|s| s.stage == "proposal")
        .expect("proposal line");
    assert_eq!(proposal.count, 2);
    assert_eq!(proposal.amount.get("EUR"), Some(&150_000));
    assert_eq!(proposal.weighted_amount.get("EUR"), Some(&75_000));
    assert_eq!(proposal.average_days_in_stage, Some(3.0));
    let stage_order: Vec<&str> = report.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stage_order, ["lead", "qualified", "proposal", "negotiation"]);
    assert_eq!(
        report.totals.weighted_amount.get("USD"),
        Some(&999),
        "10% of 9,999 rounds down"
    );
    assert_eq!(report.win_rate, None);
}

#[test]
fn pipeline_sums_stay_exact_past_64_bits() {
    // Amounts are capped at 10^15 minor units now, but a log written before
    // the cap may hold deals of up to i64::MAX: their sum must not wrap.
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", days_ago(10));
    for title in ["A", "B"] {
        history.deal(
            json!({"title": title, "account_id": acme.to_string(), "stage": "negotiation",
                   "amount": {"value_minor": 1, "currency": "EUR"}}),
            "system",
            days_ago(2),
        );
    }
    for recorded in history.log.iter_mut().filter(|e| e.event_type == "DealCreated") {
        recorded.data = recorded
            .data
            .replace("\"value_minor\":1}", &format!("\"value_minor\":{}}}", i64::MAX));
    }
    let report = pipeline(&history);
    let negotiation = report
        .stages
        .iter()
        .find(|s| s.stage == "negotiation")
        .expect("negotiation line");
    let exact = 2 * i128::from(i64::MAX);
    assert_eq!(negotiation.amount.get("EUR"), Some(&exact));
    assert_eq!(
        negotiation.weighted_amount.get("EUR"),
        Some(&(exact * i128::from(negotiation.probability_percent) / 100))
    );
    assert_eq!(report.totals.amount.get("EUR"), Some(&exact));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Any amounts up to the cap, in any stages and currencies: the report's
    /// sums and weighted sums equal exact arithmetic.
    #[test]
    fn pipeline_sums_equal_exact_arithmetic(
        deals in proptest::collection::vec((0..=domain::values::MAX_VALUE_MINOR, 0usize..4, proptest::bool::ANY), 1..40)
    ) {
        const STAGES: [&str; 4] = ["lead", "qualified", "proposal", "negotiation"];
        let mut history = History::default();
        let acme = history.account(json!({"name": "Acme"}), "system", days_ago(10));
        let mut expected: std::collections::BTreeMap<(&str, &str), i128> = Default::default();
        for (value, stage, euro) in &deals {
            let currency = if *euro { "EUR" } else { "JPY" };
            history.deal(
                json!({"title": "D", "account_id": acme.to_string(), "stage": STAGES[*stage],
                       "amount": {"value_minor": value, "currency": currency}}),
                "system",
                days_ago(1),
            );
            *expected.entry((STAGES[*stage], currency)).or_default() += i128::from(*value);
        }
        let report = pipeline(&history);
        let mut totals: std::collections::BTreeMap<&str, (i128, i128)> = Default::default();
        for line in &report.stages {
            for currency in ["EUR", "JPY"] {
                let sum = expected.get(&(line.stage.as_str(), currency)).copied();
                proptest::prop_assert_eq!(line.amount.get(currency).copied(), sum);
                let weighted = sum.map(|sum| sum * i128::from(line.probability_percent) / 100);
                proptest::prop_assert_eq!(line.weighted_amount.get(currency).copied(), weighted);
                if let (Some(sum), Some(weighted)) = (sum, weighted) {
                    let total = totals.entry(currency).or_default();
                    total.0 += sum;
                    total.1 += weighted;
                }
            }
        }
        let sums: std::collections::BTreeMap<String, i128> = totals.iter().map(|(c, t)| ((*c).to_owned(), t.0)).collect();
        let weighted: std::collections::BTreeMap<String, i128> = totals.iter().map(|(c, t)| ((*c).to_owned(), t.1)).collect();
        proptest::prop_assert_eq!(&report.totals.amount, &sums);
        proptest::prop_assert_eq!(&report.totals.weighted_amount, &weighted);
    }
}

#[test]
fn neglected_accounts_have_open_deals_or_customers_and_no_recent_interaction() {
    let mut history = History::default();
    let ann = history.user("Ann", "Sales", days_ago(500));
    let sam = history.user("Sam", "Support", days_ago(500));
    let quiet = history.account(
        json!({"name": "Quiet", "owner_id": ann.to_string()}),
        &ann.to_string(),
        days_ago(400),
    );
    let customer = history.contact(
        json!({"name": "Cust", "account_id": quiet.to_string(), "lifecycle_stage": "customer"}),
        &ann.to_string(),
        days_ago(400),
    );
    history.interaction(
        json!({"contact_id": customer.to_string()}),
        &sam.to_string(),
        days_ago(31),
    );
    let busy = history.account(json!({"name": "Busy"}), "system", days_ago(400));
    history.deal(
        json!({"title": "Open", "account_id": busy.to_string()}),
        "system",
        days_ago(300),
    );
    history.interaction(json!({"account_id": busy.to_string()}), "system", days_ago(30));
    let never = history.account(json!({"name": "Never"}), "system", days_ago(10));
    history.deal(
        json!({"title": "Open too", "account_id": never.to_string()}),
        "system",
        days_ago(10),
    );
    let idle = history.account(json!({"name": "Nothing to lose"}), "system", days_ago(400));
    let report = neglected(&history);
    assert_eq!(
        ids(&report.accounts, |a| a.id),
        [never, quiet],
        "never contacted first; {busy} was called exactly 30 days ago; {idle} has nothing open"
    );
    let quiet_line = &report.accounts[1];
    assert_eq!(quiet_line.days_since_interaction, Some(31));
    let departments: Vec<(&str, u64)> = quiet_line
        .departments
        .iter()
        .map(|d| (d.department.as_str(), d.interactions))
        .collect();
    assert_eq!(
        departments,
        [("Support", 1)],
        "the contact's call reached the account; Sales only created records"
    );
    assert_eq!(quiet_line.customer_contacts, 1);
    assert!(
        report.accounts[0].reason.contains("no call, email or meeting ever"),
        "{}",
        report.accounts[0].reason
    );
    assert!(report.accounts[0].clears_when.contains("call, email or meeting"));
}

#[test]
fn changing_a_threshold_applies_to_all_history() {
    let mut history = History::default();
    history.contact(json!({"name": "Forty Days"}), "system", days_ago(40));
    let strict = quality_with(
        &history,
        QualityThresholds {
            stale_days: 30,
            never_updated_days: 30,
        },
    );
    let lenient = quality(&history);
    assert_eq!((strict.summary.stale, lenient.summary.stale), (1, 0));
}

#[test]
fn history_names_each_changed_field_with_from_to_and_the_actor() {
    let mut history = History::default();
    let ann = history.user("Ann", "Sales", days_ago(10));
    let contact = history.contact(
        json!({"name": "Ada", "email": "ada@acme.com"}),
        &ann.to_string(),
        days_ago(5),
    );
    history.update_contact(
        contact,
        json!({"email": null, "title": "Countess"}),
        &ann.to_string(),
        days_ago(4),
    );
    history.archive_contact(contact, "system", days_ago(3));
    let stream: Vec<_> = history
        .log
        .iter()
        .filter(|e| e.stream_id == RecordKind::Contact.stream_id(contact))
        .cloned()
        .collect();
    let entries = projections::history(RecordKind::Contact, contact, &stream, &history.model()).expect("history");
    let changes = serde_json::to_value(entries.iter().map(|e| &e.changes).collect::<Vec<_>>()).expect("json");
    assert_eq!(changes[0]["name"], json!({"from": null, "to": "Ada"}));
    assert_eq!(
        changes[1],
        json!({"email": {"from": "ada@acme.com", "to": null}, "title": {"from": null, "to": "Countess"}})
    );
    assert_eq!(changes[2], json!({"archived": {"from": false, "to": true}}));
    assert_eq!(
        (entries[1].actor.name.as_deref(), entries[1].actor.department.as_deref()),
        (Some("Ann"), Some("Sales"))
    );
}

/// Stale and never-updated list ids of one data-quality report.
fn clock_lists(history: &History) -> (Vec<Uuid>, Vec<Uuid>) {
    let report = quality(history);
    (ids(&report.stale, |e| e.id), ids(&report.never_updated, |e| e.id))
}

#[test]
fn labels_by_a_colleague_reset_no_clock_the_owners_labels_and_any_real_change_do() {
    for kind in [RecordKind::Contact, RecordKind::Account, RecordKind::Deal] {
        let mut history = History::default();
        let owner = history.user("Olga Owner", "Sales", days_ago(500));
        let colleague = history.user("Carl Colleague", "Marketing", days_ago(500));
        let acme = history.account(json!({"name": "Acme"}), "system", days_ago(400));
        let create = |h: &mut History, name: &str| {
            let owner_id = owner.to_string();
            match kind {
                RecordKind::Contact => h.contact(json!({"name": name, "owner_id": owner_id}), "system", days_ago(200)),
                RecordKind::Account => h.account(json!({"name": name, "owner_id": owner_id}), "system", days_ago(200)),
                _ => h.deal(
                    json!({"title": name, "owner_id": owner_id, "account_id": acme.to_string()}),
                    "system",
                    days_ago(200),
                ),
            }
        };
        let label = match kind {
            RecordKind::Contact => json!({"tags": ["vip"], "custom": {"tier": "gold"}}),
            RecordKind::Account => json!({"custom": {"tier": "gold"}}),
            _ => json!({"external_id": "crm-old-17"}),
        };
        let substantive = match kind {
            RecordKind::Contact => json!({"title": "CTO"}),
            RecordKind::Account => json!({"industry": "Mining"}),
            _ => json!({"amount": {"value_minor": 10_000, "currency": "EUR"}}),
        };
        let tidied = create(&mut history, "Tidied by a colleague");
        history.update(kind, tidied, label.clone(), &colleague.to_string(), days_ago(1));
        let labelled = create(&mut history, "Labelled by its owner");
        history.update(kind, labelled, label, &owner.to_string(), days_ago(1));
        let changed = create(&mut history, "Changed by a colleague");
        history.update(kind, changed, substantive, &colleague.to_string(), days_ago(1));
        let (stale, never_updated) = clock_lists(&history);
        assert!(
            stale.contains(&tidied) && never_updated.contains(&tidied),
            "{kind:?}: a colleague's labels are no upkeep"
        );
        for cleared in [labelled, changed] {
            assert!(
                !stale.contains(&cleared) && !never_updated.contains(&cleared),
                "{kind:?}: {cleared} was looked after"
            );
        }
        let entry = quality(&history)
            .stale
            .into_iter()
            .find(|e| e.id == tidied)
            .expect("listed");
        assert_eq!(entry.clock_reset_by.event_type, format!("{kind:?}Created"));
        assert!(entry.clears_when.contains("owner"), "{}", entry.clears_when);
    }
}

#[test]
fn a_note_resets_no_clock_a_call_an_email_or_a_meeting_does() {
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", days_ago(400));
    let noted = history.contact(
        json!({"name": "Noted", "account_id": acme.to_string()}),
        "system",
        days_ago(200),
    );
    history.interaction(
        json!({"contact_id": noted.to_string(), "kind": "note"}),
        "system",
        days_ago(1),
    );
    let mut met = Vec::new();
    for kind in ["call", "email", "meeting"] {
        let contact = history.contact(json!({"name": format!("Had a {kind}")}), "system", days_ago(200));
        history.interaction(
            json!({"contact_id": contact.to_string(), "kind": kind}),
            "system",
            days_ago(1),
        );
        met.push(contact);
    }
    let (stale, never_updated) = clock_lists(&history);
    assert!(stale.contains(&noted) && never_updated.contains(&noted));
    assert!(
        stale.contains(&acme),
        "a note about its contact is no contact with the account"
    );
    for contact in met {
        assert!(!stale.contains(&contact) && !never_updated.contains(&contact));
    }
    let model = history.model();
    assert_eq!(
        model.contacts[&noted].meta.interaction_count, 1,
        "the note is still counted"
    );
    assert!(model.accounts[&acme].last_interaction.is_none());
}

#[test]
fn a_call_about_a_rotting_deal_resets_its_rot_an_edit_or_a_note_does_not() {
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", days_ago(100));
    let deal = |h: &mut History, title: &str| {
        let id = h.deal(
            json!({"title": title, "account_id": acme.to_string()}),
            "system",
            days_ago(60),
        );
        h.move_deal(id, "proposal", "system", days_ago(30));
        id
    };
    let called = deal(&mut history, "Called");
    history.interaction(json!({"deal_id": called.to_string()}), "system", days_ago(3));
    let edited = deal(&mut history, "Edited");
    history.update(
        RecordKind::Deal,
        edited,
        json!({"amount": {"value_minor": 1_000, "currency": "EUR"}}),
        "system",
        days_ago(3),
    );
    let noted = deal(&mut history, "Noted");
    history.interaction(
        json!({"deal_id": noted.to_string(), "kind": "note"}),
        "system",
        days_ago(3),
    );
    let report = pipeline(&history);
    assert_eq!(
        ids(&report.rotting_deals, |d| d.id),
        [edited, noted],
        "proposal rots after 10 idle days; the call made {called} active again"
    );
    let entry = &report.rotting_deals[0];
    assert_eq!((entry.days_in_stage, entry.days_idle), (30, 30));
    assert_eq!(entry.clock_reset_by.event_type, "DealStageChanged");
    assert!(entry.clears_when.contains("call"), "{}", entry.clears_when);
    // The call's deal rots again 10 days after the call, not the stage move.
    let later = ReportRequest::Pipeline {
        scope: reports::Scope::default(),
        page: reports::PageRequest::default(),
        from: None,
    };
    let model = history.model();
    assert_eq!(model.deals[&called].last_activity.event_type, "InteractionLogged");
    let report: PipelineReport = support::report(&model, later);
    assert_eq!(report.stages.iter().map(|s| s.count).sum::<u64>(), 3);
}

#[test]
fn churned_contacts_are_no_longer_listed_as_stale_or_never_updated() {
    let mut history = History::default();
    let churned = history.contact(
        json!({"name": "Gone Elsewhere", "lifecycle_stage": "churned"}),
        "system",
        days_ago(200),
    );
    let lead = history.contact(
        json!({"name": "Old Lead", "lifecycle_stage": "lead"}),
        "system",
        days_ago(200),
    );
    let (stale, never_updated) = clock_lists(&history);
    assert_eq!((stale, never_updated), (vec![lead], vec![lead]), "{churned} has left");
    assert_eq!(quality(&history).summary.records, 1);
}

#[test]
fn department_coverage_counts_calls_emails_and_meetings_of_each_department() {
    let mut history = History::default();
    let ann = history.user("Ann", "Sales", days_ago(900));
    let sue = history.user("Sue", "Support", days_ago(900));
    let mia = history.user("Mia", "Marketing", days_ago(900));
    let account = |h: &mut History, name: &str| {
        let id = h.account(json!({"name": name}), &ann.to_string(), days_ago(800));
        h.deal(
            json!({"title": format!("{name} renewal"), "account_id": id.to_string()}),
            &ann.to_string(),
            days_ago(800),
        );
        id
    };
    // Support called long ago; Sales called lately; Marketing only edited.
    let drifting = account(&mut history, "Drifting");
    let contact = history.contact(
        json!({"name": "Dee", "account_id": drifting.to_string()}),
        &mia.to_string(),
        days_ago(700),
    );
    history.update_contact(contact, json!({"title": "Buyer"}), &mia.to_string(), days_ago(5));
    history.interaction(
        json!({"contact_id": contact.to_string(), "kind": "email"}),
        &sue.to_string(),
        days_ago(200),
    );
    history.interaction(
        json!({"account_id": drifting.to_string()}),
        &ann.to_string(),
        days_ago(2),
    );
    history.interaction(
        json!({"account_id": drifting.to_string(), "kind": "note"}),
        &sue.to_string(),
        days_ago(1),
    );
    // Support met this one lately.
    let looked_after = account(&mut history, "Looked after");
    history.interaction(
        json!({"account_id": looked_after.to_string(), "kind": "meeting"}),
        &sue.to_string(),
        days_ago(10),
    );
    // Nobody ever had contact with this one.
    let silent = account(&mut history, "Silent");
    let rules = |not_touched_by: Option<&str>| reports::DepartmentRules {
        expected: vec!["Sales".into(), "Support".into()],
        not_touched_by: not_touched_by.map(str::to_owned),
    };
    let by_support = neglected_by(&history, 180, rules(Some("Support")));
    assert_eq!(
        ids(&by_support.accounts, |a| a.id),
        [silent, drifting],
        "Support met {looked_after} 10 days ago"
    );
    let line = &by_support.accounts[1];
    let departments: Vec<(&str, u64, Option<i64>)> = line
        .departments
        .iter()
        .map(|d| (d.department.as_str(), d.interactions, d.days_since))
        .collect();
    assert_eq!(
        departments,
        [("Sales", 1, Some(2)), ("Support", 1, Some(200))],
        "Marketing's edit and Support's note are not contact"
    );
    assert_eq!(line.uncovered, ["Support"]);
    assert!(line.reason.contains("by Support for 200 days"), "{}", line.reason);
    assert!(line.clears_when.contains("Support"));
    let silent_line = &by_support.accounts[0];
    assert_eq!(silent_line.uncovered, ["Sales", "Support"]);
    assert!(
        silent_line
            .departments
            .iter()
            .all(|d| d.interactions == 0 && d.days_since.is_none())
    );
    assert_eq!(
        ids(&neglected_by(&history, 180, rules(Some("Marketing"))).accounts, |a| a
            .id)
        .len(),
        3,
        "Marketing never had contact with any"
    );
    assert_eq!(
        ids(&neglected_by(&history, 180, rules(None)).accounts, |a| a.id),
        [silent],
        "everyone's silence: the other two were contacted lately"
    );
}

/// The message a report refuses `request` with.
fn refusal(history: &History, request: ReportRequest) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer = runtime.block_on(reports::of_model(
        &history.model(),
        &domain::Pipeline::default(),
        &[request],
        day0(),
    ));
    match answer {
        Ok(answer) => panic!("answered instead of refusing: {answer:?}"),
        Err(e) => e.to_string(),
    }
}

/// Every report narrows alike: to one account (its own row, its contacts
/// and its deals), to contacts at a lifecycle stage, to deals in a stage;
/// and refuses a filter it has nothing to apply to.
#[test]
fn reports_narrow_to_an_account_a_lifecycle_stage_or_a_deal_stage() {
    let mut history = History::default();
    let long_ago = days_ago(200);
    let acme = history.account(json!({"name": "Acme"}), "system", long_ago);
    let globex = history.account(json!({"name": "Globex"}), "system", long_ago);
    let contact = |history: &mut History, name: &str, account: Uuid, stage: &str| {
        history.contact(
            json!({"name": name, "account_id": account, "lifecycle_stage": stage}),
            "system",
            long_ago,
        )
    };
    let ada = contact(&mut history, "Ada", acme, "customer");
    let bob = contact(&mut history, "Bob", acme, "lead");
    let cy = contact(&mut history, "Cy", globex, "customer");
    let deal = |history: &mut History, title: &str, account: Uuid, stage: &str| {
        history.deal(
            json!({"title": title, "account_id": account, "stage": stage}),
            "system",
            long_ago,
        )
    };
    let big = deal(&mut history, "Big", acme, "proposal");
    let small = deal(&mut history, "Small", globex, "lead");
    let scoped = |account_id: Option<Uuid>, lifecycle: Option<&str>, stage: Option<&str>| reports::Scope {
        account_id,
        lifecycle: lifecycle.map(str::to_owned),
        stage: stage.map(str::to_owned),
        ..reports::Scope::default()
    };
    let stale = |scope: reports::Scope| {
        let request = ReportRequest::DataQuality {
            thresholds: thresholds(),
            scope,
            page: reports::PageRequest::default(),
        };
        let report: DataQualityReport = report(&history.model(), request);
        assert_eq!(
            report.summary.stale,
            report.stale.len() as u64,
            "the count is the list's"
        );
        let mut ids = ids(&report.stale, |e| e.id);
        ids.sort();
        ids
    };
    let sorted = |mut ids: Vec<Uuid>| {
        ids.sort();
        ids
    };
    assert_eq!(stale(reports::Scope::default()).len(), 7, "all is stale");
    assert_eq!(stale(scoped(Some(acme), None, None)), sorted(vec![acme, ada, bob, big]));
    assert_eq!(stale(scoped(None, Some("customer"), None)), sorted(vec![ada, cy]));
    assert_eq!(stale(scoped(None, None, Some("proposal"))), vec![big]);
    assert_eq!(stale(scoped(Some(globex), Some("customer"), None)), vec![cy]);

    let request = ReportRequest::Pipeline {
        scope: scoped(None, None, Some("lead")),
        page: reports::PageRequest::default(),
        from: None,
    };
    let pipeline: PipelineReport = report(&history.model(), request);
    assert_eq!(pipeline.totals.count, 1);
    assert_eq!(ids(&pipeline.rotting_deals, |d| d.id), [small]);

    let request = ReportRequest::NeglectedAccounts {
        days: 30,
        departments: reports::DepartmentRules::default(),
        scope: scoped(Some(globex), None, None),
        page: reports::PageRequest::default(),
    };
    let neglected: NeglectedAccountsReport = report(&history.model(), request);
    assert_eq!(ids(&neglected.accounts, |a| a.id), [globex]);

    let refused = refusal(
        &history,
        ReportRequest::Pipeline {
            scope: scoped(None, Some("customer"), None),
            page: reports::PageRequest::default(),
            from: None,
        },
    );
    assert!(refused.contains("only contacts have a lifecycle stage"), "{refused}");
    let refused = refusal(
        &history,
        ReportRequest::NeglectedAccounts {
            days: 30,
            departments: reports::DepartmentRules::default(),
            scope: scoped(None, None, Some("lead")),
            page: reports::PageRequest::default(),
        },
    );
    assert!(refused.contains("only deals have a stage"), "{refused}");
    for (scope, says) in [
        (scoped(None, Some("churned"), None), "settled"),
        (scoped(None, Some("vip"), None), "one of lead, prospect, customer"),
        (scoped(None, None, Some("won-ish")), "unknown stage"),
    ] {
        let refused = refusal(
            &history,
            ReportRequest::Owners {
                thresholds: thresholds(),
                scope,
            },
        );
        assert!(refused.contains(says), "{refused}");
    }
}

/// A period's figures count what happened between `from` and `as_of` by
/// business time: deals created, won (with their amounts), lost and
/// slipped (expected close moved later while open, not earlier); as of a
/// past date, nothing after it.
#[test]
fn a_period_counts_the_deals_created_won_lost_and_slipped_in_it() {
    let mut history = History::default();
    let acme = history.account(json!({"name": "Acme"}), "system", days_ago(300));
    let deal = |history: &mut History, title: &str, close: &str, created: i64| {
        history.deal(
            json!({"title": title, "account_id": acme, "expected_close": close,
                   "amount": {"value_minor": 70_000, "currency": "EUR"}}),
            "system",
            days_ago(created),
        )
    };
    let won = deal(&mut history, "Won", "2026-01-01", 100);
    history.close_deal(won, true, "system", days_ago(50));
    let lost = deal(&mut history, "Lost", "2026-01-01", 40);
    history.close_deal(lost, false, "system", days_ago(10));
    let slipping = deal(&mut history, "Slipping", "2026-01-01", 20);
    let close = |history: &mut History, id: Uuid, date: &str, at: i64| {
        history.update(
            RecordKind::Deal,
            id,
            json!({"expected_close": date}),
            "system",
            days_ago(at),
        );
    };
    close(&mut history, slipping, "2026-03-01", 5);
    close(&mut history, slipping, "2026-02-01", 3);
    let slipped_long_ago = deal(&mut history, "Slipped long ago", "2026-01-01", 60);
    close(&mut history, slipped_long_ago, "2026-06-01", 45);
    let pulled_in = deal(&mut history, "Pulled in", "2026-06-01", 80);
    close(&mut history, pulled_in, "2026-01-01", 4);

    let period = |as_of: chrono::DateTime<chrono::Utc>, from: i64| -> reports::PeriodFigures {
        let request = ReportRequest::Pipeline {
            scope: reports::Scope::default(),
            page: reports::PageRequest::default(),
            from: Some(days_ago(from)),
        };
        let model = history.model_until(Some(as_of));
        let answer = support::reports_json(&model, &[request], as_of)
            .pop()
            .unwrap_or_default();
        let report: PipelineReport = serde_json::from_value(answer).expect("a pipeline");
        report.period.expect("asked with from")
    };
    let last_30 = period(day0(), 30);
    assert_eq!(
        (last_30.new, last_30.won, last_30.lost, last_30.slipped),
        (1, 0, 1, 1),
        "the slipping deal is new and slipped, the lost one closed: {last_30:?}"
    );
    assert_eq!(last_30.win_rate, Some(0.0));
    assert_eq!((last_30.from, last_30.to), (days_ago(30), day0()));
    let last_60 = period(day0(), 60);
    assert_eq!(
        (last_60.new, last_60.won, last_60.lost, last_60.slipped),
        (3, 1, 1, 2),
        "created 60 days ago counts; pulling a close in is no slip: {last_60:?}"
    );
    assert_eq!(last_60.won_amount.get("EUR"), Some(&70_000));
    assert_eq!(last_60.win_rate, Some(0.5));
    // As of 8 days ago the slip 5 days ago had not happened yet.
    let then = period(days_ago(8), 60);
    assert_eq!((then.new, then.won, then.lost, then.slipped), (3, 1, 1, 1), "{then:?}");
    let refused = refusal(
        &history,
        ReportRequest::Pipeline {
            scope: reports::Scope::default(),
            page: reports::PageRequest::default(),
            from: Some(day0() + chrono::Duration::days(1)),
        },
    );
    assert!(refused.contains("after the report's as_of"), "{refused}");
}
