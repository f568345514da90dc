//! Building histories by hand: each call decides a command with the domain
//! and records its events at a chosen business time, as the store would.

#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::*;
use eventstore::{AppendRequest, ExpectedVersion, GENESIS_HASH, NewEvent, RecordedEvent};
use projections::CrmModel;
use serde_json::{Value, json};
use uuid::Uuid;

/// The append that stores `recorded` again, at its version, in a real log.
pub fn append_request(recorded: &RecordedEvent) -> AppendRequest {
    AppendRequest {
        stream_id: recorded.stream_id.clone(),
        expected: ExpectedVersion::Exact(recorded.version - 1),
        events: vec![NewEvent {
            event_type: recorded.event_type.clone(),
            schema_version: recorded.schema_version,
            data: recorded.data.clone(),
            occurred_at: recorded.occurred_at,
            // An erased part (recorded after its subject's erasure) goes
            // in as any other: the store seals it with no key.
            personal: recorded.sealed.as_ref().map(|sealed| eventstore::Personal {
                subject: sealed.subject,
                data: sealed.opened.clone().unwrap_or_else(|| "{}".into()),
            }),
        }],
        actor: recorded.actor.clone(),
        correlation_id: None,
        causation_id: None,
        idempotency_key: None,
        request_hash: None,
        claims: Vec::new(),
        erase: if domain::ERASURES.contains(&recorded.event_type.as_str()) {
            RecordKind::parse_stream_id(&recorded.stream_id)
                .map(|(_, id)| vec![id])
                .unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

/// The fixed "now" of the tests.
pub fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).single().expect("valid time")
}

pub fn days_ago(days: i64) -> DateTime<Utc> {
    day0() - Duration::days(days)
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub log: Vec<RecordedEvent>,
    n_ids: u128,
    /// Subjects erased so far: what is recorded for them after is sealed
    /// with no key, as the store does.
    erased: std::collections::BTreeSet<Uuid>,
}

fn input(value: Value) -> Input {
    value.as_object().cloned().expect("object input")
}

impl History {
    pub fn new_id(&mut self) -> Uuid {
        self.n_ids += 1;
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + self.n_ids)
    }

    fn stream(&self, kind: RecordKind, id: Uuid) -> Vec<Event> {
        self.log
            .iter()
            .filter(|e| e.stream_id == kind.stream_id(id))
            .map(|e| projections::decode(e).expect("decodes"))
            .collect()
    }

    /// Records `events` as appended by `actor` at business time `at`.
    pub fn record(&mut self, kind: RecordKind, id: Uuid, events: Vec<Event>, actor: &str, at: DateTime<Utc>) {
        let version = self.stream(kind, id).len() as u64;
        for (offset, event) in events.into_iter().enumerate() {
            let encoded = event.encode();
            let position = self.log.len() as u64 + 1;
            self.log.push(RecordedEvent {
                position,
                stream_id: kind.stream_id(id),
                version: version + 1 + offset as u64,
                event_type: encoded.event_type.into(),
                schema_version: encoded.schema_version,
                data: encoded.data,
                actor: actor.into(),
                occurred_at: at,
                recorded_at: day0(),
                correlation_id: None,
                causation_id: None,
                hash: GENESIS_HASH.into(),
                // As a read while the key exists.
                sealed: encoded.personal.map(|(subject, opened)| eventstore::Sealed {
                    subject,
                    stored: Vec::new(),
                    opened: Some(opened).filter(|_| !self.erased.contains(&subject)),
                }),
            });
            if let Some(subject) = event.erased_subject() {
                self.erased.insert(subject);
            }
        }
    }

    fn decide<A: Aggregate>(
        &mut self,
        kind: RecordKind,
        id: Uuid,
        command: A::Command,
        actor: &str,
        at: DateTime<Utc>,
    ) {
        self.try_decide::<A>(kind, id, command, actor, at)
            .expect("test commands are valid");
    }

    /// Decides and records; a refused command records nothing.
    pub fn try_decide<A: Aggregate>(
        &mut self,
        kind: RecordKind,
        id: Uuid,
        command: A::Command,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let state = A::fold(&self.stream(kind, id));
        let events = state.decide(&command, &Rules::default())?;
        self.record(kind, id, events, actor, at);
        Ok(())
    }

    pub fn user(&mut self, name: &str, department: &str, at: DateTime<Utc>) -> Uuid {
        let id = self.new_id();
        let command = UserCommand::RegisterUser {
            user_id: id,
            name: name.into(),
            department: department.into(),
            role: "member".into(),
            email: None,
        };
        self.decide::<User>(RecordKind::User, id, command, "system", at);
        id
    }

    pub fn account(&mut self, fields: Value, actor: &str, at: DateTime<Utc>) -> Uuid {
        let id = self.new_id();
        let changes = AccountChanges::parse(&input(fields), &[]).expect("valid");
        self.decide::<Account>(
            RecordKind::Account,
            id,
            AccountCommand::CreateAccount {
                account_id: id,
                changes,
            },
            actor,
            at,
        );
        id
    }

    pub fn contact(&mut self, fields: Value, actor: &str, at: DateTime<Utc>) -> Uuid {
        let id = self.new_id();
        let changes = ContactChanges::parse(&input(fields), &[]).expect("valid");
        self.decide::<Contact>(
            RecordKind::Contact,
            id,
            ContactCommand::CreateContact {
                contact_id: id,
                changes,
            },
            actor,
            at,
        );
        id
    }

    pub fn update_contact(&mut self, id: Uuid, fields: Value, actor: &str, at: DateTime<Utc>) {
        let changes = ContactChanges::parse(&input(fields), &[]).expect("valid");
        self.decide::<Contact>(
            RecordKind::Contact,
            id,
            ContactCommand::UpdateContact { changes },
            actor,
            at,
        );
    }

    /// Updates any record kind from a JSON patch.
    pub fn update(&mut self, kind: RecordKind, id: Uuid, fields: Value, actor: &str, at: DateTime<Utc>) {
        match kind {
            RecordKind::Contact => self.update_contact(id, fields, actor, at),
            RecordKind::Account => {
                let changes = domain::AccountChanges::parse(&input(fields), &[]).expect("valid");
                let command = domain::AccountCommand::UpdateAccount { changes };
                self.decide::<domain::Account>(kind, id, command, actor, at);
            }
            RecordKind::Deal => {
                let changes = domain::DealChanges::parse(&input(fields), &[]).expect("valid");
                let command = domain::DealCommand::UpdateDeal { changes, stage: None };
                self.decide::<Deal>(kind, id, command, actor, at);
            }
            RecordKind::Interaction | RecordKind::User => panic!("{kind:?} records are not updated"),
        }
    }

    /// The log as it reads once the keys of the subjects erased in it are
    /// gone: what a rebuild folds.
    pub fn as_read_after_erasures(&self) -> Vec<RecordedEvent> {
        let mut log = self.log.clone();
        for recorded in &mut log {
            if let Some(sealed) = recorded.sealed.as_mut().filter(|s| self.erased.contains(&s.subject)) {
                sealed.opened = None;
            }
        }
        log
    }

    pub fn archive_contact(&mut self, id: Uuid, actor: &str, at: DateTime<Utc>) {
        self.decide::<Contact>(RecordKind::Contact, id, ContactCommand::ArchiveContact, actor, at);
    }

    pub fn deal(&mut self, fields: Value, actor: &str, at: DateTime<Utc>) -> Uuid {
        let id = self.new_id();
        let (changes, stage) = parse_deal_input(&input(fields)).expect("valid");
        self.decide::<Deal>(
            RecordKind::Deal,
            id,
            DealCommand::CreateDeal {
                deal_id: id,
                changes,
                stage,
            },
            actor,
            at,
        );
        id
    }

    pub fn move_deal(&mut self, id: Uuid, stage: &str, actor: &str, at: DateTime<Utc>) {
        self.decide::<Deal>(
            RecordKind::Deal,
            id,
            DealCommand::MoveDealStage { stage: stage.into() },
            actor,
            at,
        );
    }

    pub fn close_deal(&mut self, id: Uuid, won: bool, actor: &str, at: DateTime<Utc>) {
        let outcome = if won { DealOutcome::Won } else { DealOutcome::Lost };
        self.decide::<Deal>(
            RecordKind::Deal,
            id,
            DealCommand::CloseDeal { outcome, reason: None },
            actor,
            at,
        );
    }

    pub fn interaction(&mut self, subject: Value, actor: &str, at: DateTime<Utc>) -> Uuid {
        let id = self.new_id();
        let mut fields = json!({"kind": "call", "summary": "Checked in"});
        if let (Some(fields), Some(subject)) = (fields.as_object_mut(), subject.as_object()) {
            fields.extend(subject.clone());
        }
        let logged = InteractionLogged::parse(id, &input(fields)).expect("valid");
        self.decide::<Interaction>(
            RecordKind::Interaction,
            id,
            InteractionCommand::LogInteraction(logged),
            actor,
            at,
        );
        id
    }

    /// The model folded from the whole history.
    pub fn model(&self) -> CrmModel {
        self.model_until(None)
    }

    /// The model folded from the events that had happened by `until`.
    pub fn model_until(&self, until: Option<DateTime<Utc>>) -> CrmModel {
        let mut model = CrmModel::default();
        // As a store reads it: without what its erasures destroyed.
        for recorded in &self.as_read_after_erasures() {
            if until.is_some_and(|t| recorded.occurred_at > t) {
                continue;
            }
            let event = projections::decode(recorded).expect("decodes");
            model.apply(recorded, &event);
        }
        model
    }
}

/// A report over a model measured at `as_of`, as the product answers it: the
/// model put in tables of its own and read by the live queries.
pub fn reports_json(
    model: &CrmModel,
    requests: &[projections::reports::ReportRequest],
    as_of: DateTime<Utc>,
) -> Vec<Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(projections::reports::of_model(
            model,
            &Pipeline::default(),
            requests,
            as_of,
        ))
        .expect("report")
}

/// `report_json` at day 0, typed.
pub fn report<T: serde::de::DeserializeOwned>(model: &CrmModel, request: projections::reports::ReportRequest) -> T {
    let mut reports = reports_json(model, &[request], day0());
    serde_json::from_value(reports.pop().unwrap_or_default()).expect("the report has its type")
}

/// The thresholds the report properties use.
pub fn thresholds() -> projections::reports::QualityThresholds {
    projections::reports::QualityThresholds {
        stale_days: 60,
        never_updated_days: 20,
    }
}

/// Every report asked at `as_of`, and each data-quality list on its own.
pub fn every_report(as_of: DateTime<Utc>) -> Vec<projections::reports::ReportRequest> {
    use projections::reports::{PageRequest, QualityList, ReportRequest, Scope};
    let (scope, page) = (Scope::default(), PageRequest::default());
    let mut requests = vec![
        ReportRequest::Pipeline {
            scope: scope.clone(),
            page: page.clone(),
            from: None,
        },
        // A period: the 120 days up to the report's as_of.
        ReportRequest::Pipeline {
            scope: scope.clone(),
            page: page.clone(),
            from: Some(as_of - Duration::days(120)),
        },
        ReportRequest::DataQuality {
            thresholds: thresholds(),
            scope: scope.clone(),
            page: page.clone(),
        },
        ReportRequest::NeglectedAccounts {
            days: 30,
            departments: projections::reports::DepartmentRules {
                expected: vec!["Sales".into(), "Support".into()],
                not_touched_by: None,
            },
            scope: scope.clone(),
            page: page.clone(),
        },
        ReportRequest::Owners {
            thresholds: thresholds(),
            scope: scope.clone(),
        },
    ];
    // Narrowed to owners and to a kind, which the counts kept per owner and
    // table answer, and to what they do not (a lifecycle stage), which is counted.
    let sales = Scope {
        department: Some("Sales".into()),
        ..Scope::default()
    };
    let contacts = Scope {
        kind: Some(domain::RecordKind::Contact),
        ..Scope::default()
    };
    let leads = Scope {
        lifecycle: Some("lead".into()),
        ..Scope::default()
    };
    let ownerless = Scope {
        missing: Some("owner".into()),
        ..Scope::default()
    };
    for scope in [sales.clone(), contacts, leads, ownerless] {
        requests.push(ReportRequest::DataQuality {
            thresholds: thresholds(),
            scope,
            page: page.clone(),
        });
    }
    requests.push(ReportRequest::Owners {
        thresholds: thresholds(),
        scope: sales.clone(),
    });
    // The pipeline's sums, kept per owner and stage, narrowed to both.
    let qualified = Scope {
        stage: Some("qualified".into()),
        ..Scope::default()
    };
    for scope in [sales, qualified] {
        requests.push(ReportRequest::Pipeline {
            scope,
            page: page.clone(),
            from: None,
        });
    }
    requests.extend(QualityList::ALL.into_iter().map(|list| ReportRequest::QualityList {
        list,
        thresholds: thresholds(),
        scope: scope.clone(),
        page: page.clone(),
    }));
    requests
}
