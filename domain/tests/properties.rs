//! Properties the product promises, over random sequences of commands (valid
//! and invalid) against a handful of records:
//! - a refused command yields no events and leaves the state as it was;
//! - the log folds to the same state however it is replayed: all at once, in
//!   two halves, stream by stream, or after a trip through its stored form;
//! - a record's version is the number of its events;
//! - encoding then decoding any event gives the event back.

use std::collections::BTreeMap;

use domain::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};
use uuid::Uuid;

const N_IDS: u128 = 3;

fn id(kind: u128, n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | (kind << 8) | n)
}

/// One record's state, of whichever kind.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Contact(Contact),
    Account(Account),
    Deal(Deal),
}

impl State {
    fn empty(kind: RecordKind) -> Self {
        match kind {
            RecordKind::Account => Self::Account(Account::default()),
            RecordKind::Deal => Self::Deal(Deal::default()),
            _ => Self::Contact(Contact::default()),
        }
    }

    fn evolve(&mut self, event: &Event) {
        match self {
            Self::Contact(s) => s.evolve(event),
            Self::Account(s) => s.evolve(event),
            Self::Deal(s) => s.evolve(event),
        }
    }

    fn version(&self) -> u64 {
        match self {
            Self::Contact(s) => s.version(),
            Self::Account(s) => s.version(),
            Self::Deal(s) => s.version(),
        }
    }

    fn external_id(&self) -> Option<&str> {
        match self {
            Self::Contact(s) => s.external_id(),
            Self::Account(s) => s.external_id(),
            Self::Deal(s) => s.external_id(),
        }
        .map(|e| e.as_str())
    }
}

type World = BTreeMap<String, State>;

fn fold_world(log: &[Event]) -> World {
    let mut world = World::new();
    for event in log {
        let (kind, id) = event.record();
        world
            .entry(kind.stream_id(id))
            .or_insert_with(|| State::empty(kind))
            .evolve(event);
    }
    world
}

#[derive(Debug, Clone)]
enum Step {
    Create(RecordKind, u128, Input),
    Update(RecordKind, u128, Input),
    Archive(RecordKind, u128),
    Erase(u128),
    Move(u128, String),
    Close(u128, bool),
}

/// A value from `valid` mostly, sometimes `null`, sometimes the `invalid` one.
fn value_of(valid: &'static [&'static str], invalid: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => Just(json!(invalid)),
        12 => proptest::sample::select(valid).prop_map(|s| json!(s)),
    ]
}

fn field_input(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Input> {
    let entries: Vec<_> = fields
        .into_iter()
        .map(|(name, value)| proptest::option::weighted(0.3, value).prop_map(move |v| (name, v)))
        .collect();
    entries
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect()
        })
        .boxed()
}

fn contact_input() -> BoxedStrategy<Input> {
    field_input(vec![
        ("name", value_of(&["Ada Lovelace", "Grace Hopper", "Alan"], " ").boxed()),
        ("email", value_of(&["ada@example.com", "ADA@Example.com", "grace@navy.mil"], "not-an-email").boxed()),
        ("phone", value_of(&["+44 20 7946 0958", "030 1234567"], "call me").boxed()),
        ("account_id", value_of(&["0190a000-0000-7000-8000-000000000001"], "nope").boxed()),
        ("lifecycle_stage", value_of(&["lead", "customer"], "vip").boxed()),
        ("tags", prop_oneof![4 => Just(json!(["vip", "partner"])), 4 => Just(json!([])), 1 => Just(json!("vip"))].boxed()),
        ("custom", prop_oneof![4 => Just(json!({"tier": "gold"})), 4 => Just(json!({"tier": null, "n": 1.5})), 1 => Just(json!(3))].boxed()),
        ("external_id", value_of(&["C-1", "C-2"], "").boxed()),
    ])
}

fn account_input() -> BoxedStrategy<Input> {
    field_input(vec![
        ("name", value_of(&["Acme", "Initech"], "").boxed()),
        (
            "domain",
            value_of(&["acme.com", "https://www.initech.com/"], "bad domain").boxed(),
        ),
        ("industry", value_of(&["Manufacturing", "Software"], "\u{7}").boxed()),
        ("external_id", value_of(&["A-1", "A-2"], "").boxed()),
    ])
}

fn deal_input() -> BoxedStrategy<Input> {
    field_input(vec![
        ("title", value_of(&["Fleet renewal", "Pilot"], " ").boxed()),
        ("account_id", value_of(&["0190a000-0000-7000-8000-000000000002"], "x").boxed()),
        ("amount", prop_oneof![6 => Just(json!({"value_minor": 5000, "currency": "EUR"})), 1 => Just(json!({"value_minor": -1, "currency": "EUR"})), 1 => Just(Value::Null)].boxed()),
        ("stage", value_of(&["lead", "proposal", "negotiation"], "won").boxed()),
        ("expected_close", value_of(&["2027-03-31"], "31/03/2027").boxed()),
        ("external_id", value_of(&["D-1"], "").boxed()),
    ])
}

fn step() -> impl Strategy<Value = Step> {
    let n = 0..N_IDS;
    let kind = proptest::sample::select(vec![RecordKind::Contact, RecordKind::Account, RecordKind::Deal]);
    prop_oneof![
        3 => (n.clone(), contact_input()).prop_map(|(n, i)| Step::Create(RecordKind::Contact, n, i)),
        3 => (n.clone(), contact_input()).prop_map(|(n, i)| Step::Update(RecordKind::Contact, n, i)),
        2 => (n.clone(), account_input()).prop_map(|(n, i)| Step::Create(RecordKind::Account, n, i)),
        2 => (n.clone(), account_input()).prop_map(|(n, i)| Step::Update(RecordKind::Account, n, i)),
        2 => (n.clone(), deal_input()).prop_map(|(n, i)| Step::Create(RecordKind::Deal, n, i)),
        2 => (n.clone(), deal_input()).prop_map(|(n, i)| Step::Update(RecordKind::Deal, n, i)),
        1 => (kind, n.clone()).prop_map(|(k, n)| Step::Archive(k, n)),
        // One contact only may be erased, so that the others stay open to change.
        1 => Just(Step::Erase(0)),
        2 => (n.clone(), proptest::sample::select(vec!["lead", "qualified", "proposal", "won"])).prop_map(|(n, s)| Step::Move(n, s.into())),
        1 => (n, any::<bool>()).prop_map(|(n, won)| Step::Close(n, won)),
    ]
}

fn kind_code(kind: RecordKind) -> u128 {
    match kind {
        RecordKind::Contact => 1,
        RecordKind::Account => 2,
        _ => 3,
    }
}

/// Decides one step against the world; parse errors count as refusals.
fn decide(world: &World, step: &Step, rules: &Rules) -> (String, Result<Vec<Event>, DomainError>) {
    let (kind, n) = match step {
        Step::Create(k, n, _) | Step::Update(k, n, _) | Step::Archive(k, n) => (*k, *n),
        Step::Move(n, _) | Step::Close(n, _) => (RecordKind::Deal, *n),
        Step::Erase(n) => (RecordKind::Contact, *n),
    };
    let record_id = id(kind_code(kind), n);
    let stream = kind.stream_id(record_id);
    let state = world.get(&stream).cloned().unwrap_or_else(|| State::empty(kind));
    let result = match (state, step) {
        (State::Contact(s), Step::Create(_, _, input)) => ContactChanges::parse(input, &[]).and_then(|changes| {
            s.decide(
                &ContactCommand::CreateContact {
                    contact_id: record_id,
                    changes,
                },
                rules,
            )
        }),
        (State::Contact(s), Step::Update(_, _, input)) => ContactChanges::parse(input, &[])
            .and_then(|changes| s.decide(&ContactCommand::UpdateContact { changes }, rules)),
        (State::Contact(s), Step::Archive(..)) => s.decide(&ContactCommand::ArchiveContact, rules),
        (State::Contact(s), Step::Erase(..)) => values::Text::parse("asked to be forgotten")
            .map_err(|e| DomainError::field("reason", e))
            .and_then(|reason| s.decide(&ContactCommand::EraseContact { reason }, rules)),
        (State::Account(s), Step::Create(_, _, input)) => AccountChanges::parse(input, &[]).and_then(|changes| {
            s.decide(
                &AccountCommand::CreateAccount {
                    account_id: record_id,
                    changes,
                },
                rules,
            )
        }),
        (State::Account(s), Step::Update(_, _, input)) => AccountChanges::parse(input, &[])
            .and_then(|changes| s.decide(&AccountCommand::UpdateAccount { changes }, rules)),
        (State::Account(s), Step::Archive(..)) => s.decide(&AccountCommand::ArchiveAccount, rules),
        (State::Deal(s), Step::Create(_, _, input)) => parse_deal_input(input).and_then(|(changes, stage)| {
            s.decide(
                &DealCommand::CreateDeal {
                    deal_id: record_id,
                    changes,
                    stage,
                },
                rules,
            )
        }),
        (State::Deal(s), Step::Update(_, _, input)) => parse_deal_input(input)
            .and_then(|(changes, stage)| s.decide(&DealCommand::UpdateDeal { changes, stage }, rules)),
        (State::Deal(s), Step::Archive(..)) => s.decide(&DealCommand::ArchiveDeal, rules),
        (State::Deal(s), Step::Move(_, stage)) => s.decide(&DealCommand::MoveDealStage { stage: stage.clone() }, rules),
        (State::Deal(s), Step::Close(_, won)) => {
            let outcome = if *won { DealOutcome::Won } else { DealOutcome::Lost };
            s.decide(&DealCommand::CloseDeal { outcome, reason: None }, rules)
        }
        (state, step) => panic!("test generator mismatch: {state:?} / {step:?}"),
    };
    (stream, result)
}

/// Runs the steps as the server would: decide, then append what was decided.
fn run(steps: &[Step]) -> (World, Vec<Event>, usize) {
    let rules = Rules::default();
    let mut world = World::new();
    let mut log = Vec::new();
    let mut n_refused = 0;
    for step in steps {
        let before = world.clone();
        let (stream, result) = decide(&world, step, &rules);
        match result {
            Ok(events) => {
                for event in &events {
                    assert_eq!(
                        event.record(),
                        RecordKind::parse_stream_id(&stream).expect("stream id"),
                        "event lands in its own stream"
                    );
                    let (kind, _) = event.record();
                    world
                        .entry(stream.clone())
                        .or_insert_with(|| State::empty(kind))
                        .evolve(event);
                }
                log.extend(events);
            }
            Err(_) => {
                n_refused += 1;
                assert_eq!(world, before, "a refused command changes nothing");
            }
        }
    }
    (world, log, n_refused)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_log_folds_to_the_same_state_however_it_is_replayed(steps in prop::collection::vec(step(), 1..60), cut in any::<prop::sample::Index>()) {
        let (world, log, _) = run(&steps);
        prop_assert_eq!(&fold_world(&log), &world);

        // In two halves, with the state carried over as after a restart.
        let cut = cut.index(log.len() + 1);
        let mut halves = fold_world(&log[..cut]);
        for event in &log[cut..] {
            let (kind, id) = event.record();
            halves.entry(kind.stream_id(id)).or_insert_with(|| State::empty(kind)).evolve(event);
        }
        prop_assert_eq!(&halves, &world);

        // Stream by stream, as a reader of one record's stream sees it.
        for (stream, state) in &world {
            let own: Vec<Event> = log.iter().filter(|e| { let (k, id) = e.record(); &k.stream_id(id) == stream }).cloned().collect();
            prop_assert_eq!(&fold_world(&own)[stream], state);
            prop_assert_eq!(state.version(), own.len() as u64, "version is the number of events");
        }

        // Through the stored form: with its personal part, whole; without
        // it (erased), every event still reads, and no personal value is
        // left in what it reads as.
        let decoded: Vec<Event> = log.iter().map(|e| {
            let stored = e.encode();
            let part = stored.personal.as_ref().map_or(PersonalPart::None, |(_, p)| PersonalPart::Open(p));
            Event::decode_parts(stored.event_type, stored.schema_version, &stored.data, part).expect("own events decode")
        }).collect();
        prop_assert_eq!(&decoded, &log);
        prop_assert_eq!(&fold_world(&decoded), &world);
        for event in &log {
            let stored = event.encode();
            if let Some((subject, _)) = &stored.personal {
                prop_assert_eq!(Some(*subject), event.data_subject());
            }
            let erased = Event::decode_parts(stored.event_type, stored.schema_version, &stored.data, PersonalPart::Erased)
                .expect("erased events decode");
            let text = serde_json::to_string(&erased).expect("events serialise");
            for secret in ["Ada", "Grace", "Alan", "ada@", "grace@", "7946", "1234567"] {
                prop_assert!(!text.contains(secret), "{} in {}", secret, text);
            }
        }

        // Each event's effect on the external id (what the log's claims are
        // filled from) agrees with the state's (what appends claim).
        let mut held: BTreeMap<String, Option<String>> = BTreeMap::new();
        for event in &log {
            let (kind, id) = event.record();
            if let Some(effect) = event.external_id_effect() {
                held.insert(kind.stream_id(id), effect.map(|e| e.as_str().to_owned()));
            }
        }
        for (stream, state) in &world {
            let from_events = held.get(stream).cloned().flatten();
            prop_assert_eq!(from_events.as_deref(), state.external_id(), "{}", stream);
        }
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic(raw in proptest::collection::btree_map("[a-z_]{1,16}", any::<String>().prop_map(Value::String), 0..8)) {
        let input: Input = raw.into_iter().collect();
        let _ = ContactChanges::parse(&input, &[]);
        let _ = AccountChanges::parse(&input, &[]);
        let _ = parse_deal_input(&input);
        let _ = InteractionLogged::parse(Uuid::nil(), &input);
    }

    #[test]
    fn value_parsers_never_panic_and_accept_their_own_output(raw in ".{0,40}") {
        if let Ok(email) = values::EmailAddress::parse(&raw) {
            prop_assert_eq!(values::EmailAddress::parse(email.as_str()), Ok(email.clone()));
        }
        if let Ok(phone) = values::PhoneNumber::parse(&raw) {
            prop_assert_eq!(values::PhoneNumber::parse(phone.as_str()), Ok(phone.clone()));
        }
        if let Ok(name) = values::Name::parse(&raw) {
            prop_assert_eq!(values::Name::parse(name.as_str()), Ok(name.clone()));
        }
    }
}

#[test]
fn the_generator_produces_both_accepted_and_refused_commands() {
    // Guards the property above against a generator that only ever refuses.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let steps = prop::collection::vec(step(), 400)
        .new_tree(&mut runner)
        .expect("generate")
        .current();
    let (_, log, n_refused) = run(&steps);
    assert!(log.len() > 20, "only {} events from 400 steps", log.len());
    assert!(n_refused > 20, "only {n_refused} refusals from 400 steps");
}
