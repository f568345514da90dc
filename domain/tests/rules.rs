//! Business rules, one scenario each: given these events, when this command,
//! then these events or this rejection.

use domain::*;
use serde_json::{Value, json};
use uuid::Uuid;

struct Scenario<A: Aggregate> {
    state: A,
    rules: Rules,
}

fn given<A: Aggregate>(history: &[Event]) -> Scenario<A> {
    Scenario {
        state: A::fold(history),
        rules: Rules::default(),
    }
}

impl<A: Aggregate> Scenario<A> {
    fn when(&self, command: A::Command) -> Result<Vec<Event>, DomainError> {
        let decided = self.state.decide(&command, &self.rules);
        if let Ok(events) = &decided {
            let mut next = self.state.clone();
            events.iter().for_each(|event| next.evolve(event));
            assert_eq!(
                next.version(),
                self.state.version() + events.len() as u64,
                "evolve accepts what decide emits"
            );
        }
        decided
    }
}

fn input(value: Value) -> Input {
    value.as_object().cloned().expect("test input is an object")
}

fn contact_changes(value: Value) -> ContactChanges {
    ContactChanges::parse(&input(value), &[]).expect("test input is valid")
}

fn field_names(error: DomainError) -> Vec<String> {
    match error {
        DomainError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

const CONTACT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
const ACCOUNT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
const DEAL: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003);

fn ada_created() -> Event {
    let fields =
        contact_changes(json!({"name": "Ada Lovelace", "email": "ada@example.com", "custom": {"tier": "gold"}}))
            .into_fields()
            .expect("has a name");
    Event::ContactCreated(ContactCreated {
        contact_id: CONTACT,
        fields,
    })
}

#[test]
fn creating_a_contact_requires_a_name() {
    let refused = given::<Contact>(&[]).when(ContactCommand::CreateContact {
        contact_id: CONTACT,
        changes: contact_changes(json!({"email": "ada@example.com"})),
    });
    assert_eq!(refused.map_err(field_names), Err(vec!["name".to_string()]));
}

#[test]
fn input_reports_every_bad_field_at_once() {
    let parsed = ContactChanges::parse(
        &input(json!({"name": " ", "email": "nope", "phone": "call me", "lifecycle_stage": "vip", "colour": "red"})),
        &[],
    );
    let mut fields = parsed.map_err(field_names).expect_err("five bad fields");
    fields.sort();
    assert_eq!(fields, ["colour", "email", "lifecycle_stage", "name", "phone"]);
}

#[test]
fn creating_a_contact_twice_is_refused() {
    let command = ContactCommand::CreateContact {
        contact_id: CONTACT,
        changes: contact_changes(json!({"name": "Ada"})),
    };
    assert_eq!(
        given::<Contact>(&[ada_created()]).when(command),
        Err(DomainError::AlreadyExists { kind: "contact" })
    );
}

#[test]
fn an_update_records_exactly_the_fields_that_changed() {
    let events = given::<Contact>(&[ada_created()]).when(ContactCommand::UpdateContact {
        changes: contact_changes(json!({"name": "Ada Lovelace", "email": "ADA@example.com", "title": "Countess"})),
    });
    let expected = ContactChanges {
        email: Some(Some(values::EmailAddress::parse("ADA@example.com").expect("valid"))),
        title: Some(Some(values::Text::parse("Countess").expect("valid"))),
        ..ContactChanges::default()
    };
    assert_eq!(
        events,
        Ok(vec![Event::ContactUpdated(ContactUpdated {
            contact_id: CONTACT,
            changes: expected
        })])
    );
}

#[test]
fn a_patch_that_changes_nothing_yields_no_event() {
    let events = given::<Contact>(&[ada_created()]).when(ContactCommand::UpdateContact {
        changes: contact_changes(
            json!({"name": " Ada Lovelace ", "email": "ada@EXAMPLE.com", "custom": {"tier": "gold"}}),
        ),
    });
    assert_eq!(events, Ok(vec![]));
}

#[test]
fn null_clears_a_field_and_custom_fields_merge() {
    let events = given::<Contact>(&[ada_created()])
        .when(ContactCommand::UpdateContact {
            changes: contact_changes(json!({"email": null, "custom": {"tier": null, "region": "north"}})),
        })
        .expect("a valid patch");
    let [Event::ContactUpdated(updated)] = events.as_slice() else {
        panic!("one update expected: {events:?}")
    };
    assert_eq!(updated.changes.email, Some(None));
    assert_eq!(
        updated.changes.custom.as_ref().map(|c| json!(c)),
        Some(json!({"region": "north"}))
    );
}

#[test]
fn a_required_field_cannot_be_cleared() {
    let parsed = ContactChanges::parse(&input(json!({"name": null})), &[]);
    assert_eq!(parsed.map_err(field_names), Err(vec!["name".to_string()]));
}

#[test]
fn archived_contact_refuses_updates_and_archiving_again_changes_nothing() {
    let archived = Event::ContactArchived(ContactArchived { contact_id: CONTACT });
    let scenario = given::<Contact>(&[ada_created(), archived]);
    let update = ContactCommand::UpdateContact {
        changes: contact_changes(json!({"title": "CEO"})),
    };
    assert_eq!(scenario.when(update), Err(DomainError::Archived { kind: "contact" }));
    assert_eq!(scenario.when(ContactCommand::ArchiveContact), Ok(vec![]));
}

#[test]
fn updating_a_contact_that_does_not_exist_is_not_found() {
    let update = ContactCommand::UpdateContact {
        changes: contact_changes(json!({"title": "CEO"})),
    };
    assert_eq!(
        given::<Contact>(&[]).when(update),
        Err(DomainError::NotFound { kind: "contact" })
    );
}

fn deal_command(value: Value) -> DealCommand {
    let (changes, stage) = parse_deal_input(&input(value)).expect("valid deal input");
    DealCommand::CreateDeal {
        deal_id: DEAL,
        changes,
        stage,
    }
}

fn open_deal() -> Vec<Event> {
    given::<Deal>(&[])
        .when(deal_command(
            json!({"title": "Fleet renewal", "account_id": ACCOUNT.to_string(),
                                  "amount": {"value_minor": 1_250_000, "currency": "EUR"}}),
        ))
        .expect("a valid deal")
}

#[test]
fn a_deal_needs_an_account_and_a_known_stage() {
    let refused = given::<Deal>(&[]).when(deal_command(json!({"title": "Fleet renewal", "stage": "dreaming"})));
    let mut fields = refused.map_err(field_names).expect_err("two bad fields");
    fields.sort();
    assert_eq!(fields, ["account_id", "stage"]);
}

#[test]
fn a_new_deal_starts_open_in_the_first_stage() {
    let deal = Deal::fold(&open_deal());
    assert_eq!(deal.stage.as_ref().map(StageName::as_str), Some("lead"));
    assert_eq!(deal.status, Some(DealStatus::Open));
}

#[test]
fn status_changes_only_by_closing() {
    let refused = parse_deal_input(&input(json!({"status": "won"})));
    assert_eq!(refused.map_err(field_names), Err(vec!["status".to_string()]));
}

#[test]
fn a_patch_with_a_stage_moves_the_deal_and_records_both_stages() {
    let (changes, stage) =
        parse_deal_input(&input(json!({"stage": "proposal", "title": "Fleet renewal 2027"}))).expect("valid patch");
    let events = given::<Deal>(&open_deal())
        .when(DealCommand::UpdateDeal { changes, stage })
        .expect("valid");
    let types: Vec<&str> = events.iter().map(Event::event_type).collect();
    assert_eq!(types, ["DealUpdated", "DealStageChanged"]);
    let Event::DealStageChanged(moved) = &events[1] else {
        panic!("stage change expected")
    };
    assert_eq!((moved.from.as_str(), moved.to.as_str()), ("lead", "proposal"));
}

#[test]
fn moving_a_deal_to_its_own_stage_yields_no_event() {
    let events = given::<Deal>(&open_deal()).when(DealCommand::MoveDealStage { stage: "lead".into() });
    assert_eq!(events, Ok(vec![]));
}

#[test]
fn a_closed_deal_cannot_move_or_close_again() {
    let mut history = open_deal();
    history.push(Event::DealClosed(DealClosed {
        deal_id: DEAL,
        outcome: DealOutcome::Won,
        reason: None,
    }));
    let scenario = given::<Deal>(&history);
    assert!(matches!(
        scenario.when(DealCommand::MoveDealStage {
            stage: "proposal".into()
        }),
        Err(DomainError::InvalidState(_))
    ));
    let close_again = DealCommand::CloseDeal {
        outcome: DealOutcome::Lost,
        reason: None,
    };
    assert!(matches!(scenario.when(close_again), Err(DomainError::InvalidState(_))));
    // Naming the stage it closed in is no move: an exported deal imports again.
    let (changes, stage) = parse_deal_input(&input(json!({"stage": "lead"}))).expect("valid patch");
    assert_eq!(scenario.when(DealCommand::UpdateDeal { changes, stage }), Ok(vec![]));
}

#[test]
fn legacy_activity_is_brought_over_for_a_live_record_only() {
    let events = given::<Deal>(&open_deal()).when(DealCommand::ImportActivity);
    assert_eq!(
        events,
        Ok(vec![Event::ActivityImported(ActivityImported {
            kind: RecordKind::Deal,
            record_id: DEAL,
        })])
    );
    let mut history = open_deal();
    history.push(Event::DealArchived(DealArchived { deal_id: DEAL }));
    let refused = given::<Deal>(&history).when(DealCommand::ImportActivity);
    assert!(matches!(refused, Err(DomainError::Archived { .. })));
    let unknown = given::<Contact>(&[]).when(ContactCommand::ImportActivity);
    assert!(matches!(unknown, Err(DomainError::NotFound { .. })));
}

#[test]
fn an_unknown_stage_is_refused_on_move() {
    let refused = given::<Deal>(&open_deal()).when(DealCommand::MoveDealStage { stage: "won".into() });
    assert_eq!(refused.map_err(field_names), Err(vec!["stage".to_string()]));
}

#[test]
fn an_interaction_needs_a_subject_kind_and_summary() {
    let refused = InteractionLogged::parse(Uuid::nil(), &input(json!({"kind": "fax"})));
    let mut fields = refused.map_err(field_names).expect_err("three problems");
    fields.sort();
    assert_eq!(fields, ["contact_id", "kind", "summary"]);
    let logged = InteractionLogged::parse(
        Uuid::nil(),
        &input(json!({"kind": "call", "summary": "Intro", "contact_id": CONTACT.to_string()})),
    );
    assert!(logged.is_ok());
}

#[test]
fn a_user_needs_a_known_role() {
    let command = UserCommand::RegisterUser {
        user_id: Uuid::nil(),
        name: "Grace".into(),
        department: "Sales".into(),
        role: "boss".into(),
        email: Some("grace-at-example".into()),
    };
    assert_eq!(
        given::<User>(&[]).when(command).map_err(field_names),
        Err(vec!["role".to_string(), "email".to_string()])
    );
}

/// With a default region, a number written without a country code is
/// stored placed in it, on create and on update alike; an update to the
/// same number written the other way changes nothing.
#[test]
fn a_national_phone_number_is_stored_in_the_default_region() {
    let mut scenario = given::<Contact>(&[]);
    scenario.rules.phone_region = Some(CallingCode::parse("1").expect("a calling code"));
    let created = scenario.when(ContactCommand::CreateContact {
        contact_id: CONTACT,
        changes: contact_changes(json!({"name": "Ada", "phone": "(206) 555-9857"})),
    });
    let Ok(events) = created else {
        panic!("created: {created:?}");
    };
    let Some(Event::ContactCreated(created)) = events.first() else {
        panic!("a creation: {events:?}");
    };
    assert_eq!(created.fields.phone.as_ref().map(|p| p.as_str()), Some("+12065559857"));
    let mut scenario = given::<Contact>(&events);
    scenario.rules.phone_region = Some(CallingCode::parse("1").expect("a calling code"));
    let same = scenario.when(ContactCommand::UpdateContact {
        changes: contact_changes(json!({"phone": "+1 206 555 9857"})),
    });
    assert_eq!(same, Ok(vec![]), "the same number, written the other way");
    let moved = scenario.when(ContactCommand::UpdateContact {
        changes: contact_changes(json!({"phone": "206.555.0000"})),
    });
    let expected = ContactChanges {
        phone: Some(Some(values::PhoneNumber::parse("+12065550000").expect("valid"))),
        ..ContactChanges::default()
    };
    assert_eq!(
        moved,
        Ok(vec![Event::ContactUpdated(ContactUpdated {
            contact_id: CONTACT,
            changes: expected
        })])
    );
    // Without a region the number is kept as its digits.
    let plain = given::<Contact>(&[]).when(ContactCommand::CreateContact {
        contact_id: CONTACT,
        changes: contact_changes(json!({"name": "Ada", "phone": "(206) 555-9857"})),
    });
    assert!(
        matches!(&plain, Ok(events) if matches!(events.first(), Some(Event::ContactCreated(c)) if c.fields.phone.as_ref().map(|p| p.as_str()) == Some("2065559857"))),
        "{plain:?}"
    );
}
