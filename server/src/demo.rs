//! `crm demo`: a realistic, reproducible history, so that every report has
//! something true to show on first run. The same seed and end date give the
//! same events, in the same order, byte for byte.
//!
//! Two years of work by a dozen people in four departments: a few hundred
//! accounts, contacts (some incomplete, some duplicated), deals moving
//! through the pipeline and closing, calls, emails, meetings and notes, and a
//! share of accounts that go quiet and records nobody touches again.
//!
//! The people differ, so that every report has someone to single out: each
//! seller keeps up with their customers to a degree of their own
//! (`DILIGENCE`): a careful one calls their contacts until the last week
//! and keeps their open deals moving, a careless one stops months before
//! and leaves deals to rot. Support talks to the customers of the accounts
//! it looks after (most, not all), Marketing emails leads and prospects, and
//! nobody else calls a customer: the departments' coverage differs per
//! account.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use domain::*;
use eventstore::{AppendRequest, ExpectedVersion, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub contacts: usize,
    pub seed: u64,
    /// The history ends here (default: today, midnight UTC).
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    pub events: u64,
    pub users: u64,
    pub accounts: u64,
    pub contacts: u64,
    pub deals: u64,
    pub interactions: u64,
}

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Leslie",
    "Hedy",
    "John",
    "Katherine",
    "Tim",
    "Sophie",
    "Linus",
    "Anita",
    "Niklaus",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Lamport",
    "Lamarr",
    "Backus",
    "Johnson",
    "Berners-Lee",
    "Wilson",
    "Torvalds",
    "Borg",
    "Wirth",
];
const COMPANY_WORDS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Aperture",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Nakatomi",
    "Monarch",
    "Pied Piper",
    "Dunder",
    "Massive",
];
const COMPANY_SUFFIXES: &[&str] = &[
    "Ltd",
    "GmbH",
    "Inc",
    "Group",
    "Systems",
    "Logistics",
    "Foods",
    "Energy",
    "Labs",
    "Partners",
];
const INDUSTRIES: &[&str] = &[
    "Manufacturing",
    "Software",
    "Retail",
    "Logistics",
    "Healthcare",
    "Energy",
    "Finance",
    "Food",
];
const TITLES: &[&str] = &[
    "Head of Procurement",
    "CTO",
    "Operations Manager",
    "CFO",
    "Buyer",
    "IT Director",
    "Office Manager",
    "CEO",
];
const STAGES: &[&str] = &["lead", "qualified", "proposal", "negotiation"];
const DEPARTMENTS: &[(&str, usize)] = &[
    ("Sales", 4),
    ("Account Management", 3),
    ("Support", 3),
    ("Marketing", 2),
];
/// How well each seller (Sales, then Account Management, in order) keeps up
/// with their customers, from 0 (not at all) to 1.
const DILIGENCE: &[f64] = &[0.95, 0.35, 0.8, 0.1, 0.6, 0.9, 0.25];
/// The diligence of nobody in particular: records without an owner.
const NOBODY: f64 = 0.3;
/// Share of accounts whose customers Support looks after.
const SUPPORTED: f64 = 0.7;

/// Builds the log in memory, deciding every command with the domain, in
/// the order things happened.
struct Builder {
    rng: ChaCha8Rng,
    rules: Rules,
    versions: HashMap<String, u64>,
    requests: Vec<AppendRequest>,
    contacts: HashMap<Uuid, Contact>,
    accounts: HashMap<Uuid, Account>,
    deals: HashMap<Uuid, Deal>,
}

/// Something that happens at a time to one record.
#[derive(Debug, Clone)]
enum Action {
    User { id: Uuid, name: String, department: String },
    Account { id: Uuid, owner: Uuid, fields: Fields },
    Contact { id: Uuid, fields: Fields },
    UpdateContact { id: Uuid, fields: Fields },
    Deal { id: Uuid, fields: Fields },
    UpdateDeal { id: Uuid, fields: Fields },
    Stage { id: Uuid, stage: &'static str },
    Close { id: Uuid, won: bool },
    Interaction { id: Uuid, fields: Fields },
}

/// A planned action's fields as compact JSON text: millions of actions are
/// planned before the first is written, and a parsed `Value` costs several
/// times the memory of its text.
#[derive(Debug, Clone)]
struct Fields(Box<str>);

impl From<Value> for Fields {
    fn from(value: Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }
}

impl Builder {
    fn id(&mut self, at: DateTime<Utc>) -> Uuid {
        let random: [u8; 10] = self.rng.random();
        uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis().max(0) as u64, &random).into_uuid()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn push(&mut self, kind: RecordKind, id: Uuid, events: Vec<Event>, actor: Uuid, at: DateTime<Utc>) {
        if events.is_empty() {
            return;
        }
        let stream_id = kind.stream_id(id);
        let version = self.versions.entry(stream_id.clone()).or_default();
        let expected = if *version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(*version)
        };
        *version += events.len() as u64;
        let events = events.iter().map(|event| crate::app::encode(event, at)).collect();
        self.requests.push(AppendRequest {
            stream_id,
            expected,
            events,
            actor: actor.to_string(),
            correlation_id: None,
            causation_id: None,
            idempotency_key: None,
            request_hash: None,
            claims: Vec::new(),
            erase: Vec::new(),
        });
    }

    fn decide<A: Aggregate>(
        rules: &Rules,
        states: &mut HashMap<Uuid, A>,
        id: Uuid,
        command: &A::Command,
    ) -> Vec<Event> {
        let state = states.entry(id).or_default();
        let events = state.decide(command, rules).unwrap_or_default();
        for event in &events {
            state.evolve(event);
        }
        events
    }

    fn input(fields: &Fields) -> Input {
        serde_json::from_str(&fields.0).unwrap_or_default()
    }

    fn apply(&mut self, at: DateTime<Utc>, actor: Uuid, action: &Action) {
        let rules = self.rules.clone();
        match action {
            Action::User { id, name, department } => {
                let command = UserCommand::RegisterUser {
                    user_id: *id,
                    name: name.clone(),
                    department: department.clone(),
                    role: "member".into(),
                    email: None,
                };
                let events = User::default().decide(&command, &rules).unwrap_or_default();
                self.push(RecordKind::User, *id, events, *id, at);
            }
            Action::Account { id, owner, fields } => {
                let Ok(changes) = AccountChanges::parse(&Self::input(fields), &[]) else {
                    return;
                };
                let events = Self::decide(
                    &rules,
                    &mut self.accounts,
                    *id,
                    &AccountCommand::CreateAccount {
                        account_id: *id,
                        changes,
                    },
                );
                self.push(RecordKind::Account, *id, events, *owner, at);
            }
            Action::Contact { id, fields } => {
                let Ok(changes) = ContactChanges::parse(&Self::input(fields), &[]) else {
                    return;
                };
                let events = Self::decide(
                    &rules,
                    &mut self.contacts,
                    *id,
                    &ContactCommand::CreateContact {
                        contact_id: *id,
                        changes,
                    },
                );
                self.push(RecordKind::Contact, *id, events, actor, at);
            }
            Action::UpdateContact { id, fields } => {
                let Ok(changes) = ContactChanges::parse(&Self::input(fields), &[]) else {
                    return;
                };
                let events = Self::decide(
                    &rules,
                    &mut self.contacts,
                    *id,
                    &ContactCommand::UpdateContact { changes },
                );
                self.push(RecordKind::Contact, *id, events, actor, at);
            }
            Action::Deal { id, fields } => {
                let Ok((changes, stage)) = parse_deal_input(&Self::input(fields)) else {
                    return;
                };
                let events = Self::decide(
                    &rules,
                    &mut self.deals,
                    *id,
                    &DealCommand::CreateDeal {
                        deal_id: *id,
                        changes,
                        stage,
                    },
                );
                self.push(RecordKind::Deal, *id, events, actor, at);
            }
            Action::UpdateDeal { id, fields } => {
                let Ok((changes, stage)) = parse_deal_input(&Self::input(fields)) else {
                    return;
                };
                let events = Self::decide(
                    &rules,
                    &mut self.deals,
                    *id,
                    &DealCommand::UpdateDeal { changes, stage },
                );
                self.push(RecordKind::Deal, *id, events, actor, at);
            }
            Action::Stage { id, stage } => {
                let events = Self::decide(
                    &rules,
                    &mut self.deals,
                    *id,
                    &DealCommand::MoveDealStage { stage: (*stage).into() },
                );
                self.push(RecordKind::Deal, *id, events, actor, at);
            }
            Action::Close { id, won } => {
                let outcome = if *won { DealOutcome::Won } else { DealOutcome::Lost };
                let reason = Some(
                    values::Text::parse(if *won {
                        "Best offer on price and support"
                    } else {
                        "Went with a competitor"
                    })
                    .expect("valid text"),
                );
                let events = Self::decide(
                    &rules,
                    &mut self.deals,
                    *id,
                    &DealCommand::CloseDeal { outcome, reason },
                );
                self.push(RecordKind::Deal, *id, events, actor, at);
            }
            Action::Interaction { id, fields } => {
                let Ok(logged) = InteractionLogged::parse(*id, &Self::input(fields)) else {
                    return;
                };
                let events = Interaction::default()
                    .decide(&InteractionCommand::LogInteraction(logged), &rules)
                    .unwrap_or_default();
                self.push(RecordKind::Interaction, *id, events, actor, at);
            }
        }
    }
}

/// A contact, as its interactions depend on it.
struct Touched {
    contact: Uuid,
    owner: Option<Uuid>,
    stage: &'static str,
    /// Whether Support looks after its account.
    supported: bool,
}

/// A planned action: when, by whom, what.
type Planned = (DateTime<Utc>, Uuid, Action);

/// Plans two years of activity: the people, then each account with its
/// contacts, their interactions and the account's deals.
struct Planner<'a> {
    builder: &'a mut Builder,
    until: DateTime<Utc>,
    plan: Vec<Planned>,
    sellers: Vec<Uuid>,
    /// Each seller's `DILIGENCE`.
    diligence: HashMap<Uuid, f64>,
    support: Vec<Uuid>,
    marketing: Vec<Uuid>,
    everyone: Vec<Uuid>,
    /// Addresses handed out so far: a few are reused, as duplicates are.
    emails: Vec<String>,
}

impl Planner<'_> {
    fn users(&mut self, start: DateTime<Utc>) {
        for (department, count) in DEPARTMENTS {
            for _ in 0..*count {
                let name = format!("{} {}", self.builder.pick(FIRST_NAMES), self.builder.pick(LAST_NAMES));
                let id = self.builder.id(start);
                match *department {
                    "Sales" | "Account Management" => {
                        let diligence = DILIGENCE[self.sellers.len() % DILIGENCE.len()];
                        self.diligence.insert(id, diligence);
                        self.sellers.push(id);
                    }
                    "Support" => self.support.push(id),
                    _ => self.marketing.push(id),
                }
                self.everyone.push(id);
                self.plan.push((
                    start,
                    id,
                    Action::User {
                        id,
                        name,
                        department: (*department).into(),
                    },
                ));
            }
        }
    }

    fn account(&mut self, n: usize, start: DateTime<Utc>, n_contacts: usize) {
        let created = start + Duration::minutes(self.builder.rng.random_range(0..60 * 24 * 540));
        let id = self.builder.id(created);
        let owner = *self.builder.pick(&self.sellers);
        let name = format!(
            "{} {} {}",
            self.builder.pick(COMPANY_WORDS),
            self.builder.pick(COMPANY_SUFFIXES),
            n + 1
        );
        let domain = format!("{}.example", name.to_lowercase().replace(' ', "-"));
        let industry = *self.builder.pick(INDUSTRIES);
        let fields = json!({"name": name, "domain": domain, "industry": industry, "owner_id": owner});
        self.plan.push((
            created,
            owner,
            Action::Account {
                id,
                owner,
                fields: fields.into(),
            },
        ));
        // A share of accounts goes quiet for the last months: nobody calls
        // them. More of a careless owner's than of a careful one's.
        let quiet = 0.1 + 0.4 * (1.0 - self.diligence(Some(owner)));
        let quiet_after = if self.builder.rng.random_bool(quiet) {
            self.until - Duration::days(self.builder.rng.random_range(60..300))
        } else {
            self.until
        };
        let supported = self.builder.rng.random_bool(SUPPORTED);
        let contacts: Vec<Uuid> = (0..n_contacts)
            .map(|_| self.contact(id, &domain, created, quiet_after, supported))
            .collect();
        for _ in 0..self.builder.rng.random_range(0..4) {
            self.deal(id, &name, created, contacts.first().copied());
        }
    }

    fn contact(
        &mut self,
        account: Uuid,
        domain: &str,
        account_created: DateTime<Utc>,
        quiet_after: DateTime<Utc>,
        supported: bool,
    ) -> Uuid {
        let at = account_created + Duration::minutes(self.builder.rng.random_range(10..60 * 24 * 30));
        let id = self.builder.id(at);
        let name = format!("{} {}", self.builder.pick(FIRST_NAMES), self.builder.pick(LAST_NAMES));
        let stage = *self
            .builder
            .pick(&["lead", "prospect", "customer", "customer", "churned"]);
        let mut fields =
            json!({"name": name, "account_id": account, "title": self.builder.pick(TITLES), "lifecycle_stage": stage});
        let email = if !self.emails.is_empty() && self.builder.rng.random_bool(0.03) {
            self.builder.pick(&self.emails).clone()
        } else {
            format!(
                "{}.{}@{domain}",
                name.to_lowercase().replace(' ', "."),
                self.builder.rng.random_range(1..99)
            )
        };
        if self.builder.rng.random_bool(0.85) {
            fields["email"] = json!(email);
            self.emails.push(email);
        }
        if self.builder.rng.random_bool(0.5) {
            let (a, b) = (
                self.builder.rng.random_range(0..10_000),
                self.builder.rng.random_range(0..10_000),
            );
            fields["phone"] = json!(format!("+44 20 {a:04} {b:04}"));
        }
        let owner = self
            .builder
            .rng
            .random_bool(0.85)
            .then(|| *self.builder.pick(&self.sellers));
        if let Some(owner) = owner {
            fields["owner_id"] = json!(owner);
        }
        let author = *self.builder.pick(&self.everyone);
        self.plan.push((
            at,
            author,
            Action::Contact {
                id,
                fields: fields.into(),
            },
        ));
        if self.builder.rng.random_bool(0.25) {
            let later = at + Duration::days(self.builder.rng.random_range(5..300));
            let editor = *self.builder.pick(&self.everyone);
            self.plan.push((
                later,
                editor,
                Action::UpdateContact {
                    id,
                    fields: json!({"title": self.builder.pick(TITLES)}).into(),
                },
            ));
        }
        let contact = Touched {
            contact: id,
            owner,
            stage,
            supported,
        };
        self.interactions(&contact, at, quiet_after);
        id
    }

    fn diligence(&self, seller: Option<Uuid>) -> f64 {
        seller.and_then(|s| self.diligence.get(&s).copied()).unwrap_or(NOBODY)
    }

    /// A contact's interactions until its account goes quiet; some get
    /// none. Its owner's (for a contact without one, any seller's) own
    /// calls stop up to 240 days before the end, the less the more diligent
    /// the owner, who (as often as they are diligent) also checked in
    /// within the 60 days before they stopped; Support's and Marketing's go
    /// on while the account talks.
    fn interactions(&mut self, contact: &Touched, from: DateTime<Utc>, quiet_after: DateTime<Utc>) {
        let diligence = self.diligence(contact.owner);
        let lapse = self.builder.rng.random_range(0..=((1.0 - diligence) * 240.0) as i64);
        let owner_until = quiet_after.min(self.until - Duration::days(lapse));
        let author = match contact.owner {
            Some(owner) => owner,
            None => *self.builder.pick(&self.sellers),
        };
        for _ in 0..self.builder.rng.random_range(0..=(1.0 + 4.0 * diligence) as u32) {
            let kind = *self.builder.pick(&["call", "email", "meeting", "note"]);
            self.log(contact.contact, None, author, kind, from, owner_until);
        }
        if self.builder.rng.random_bool(diligence) {
            let kind = *self.builder.pick(&["call", "email", "meeting"]);
            let recent = (owner_until - Duration::days(60)).max(from);
            self.log(contact.contact, None, author, kind, recent, owner_until);
        }
        if contact.supported && contact.stage == "customer" {
            for _ in 0..self.builder.rng.random_range(0..=2) {
                let author = *self.builder.pick(&self.support);
                let kind = *self.builder.pick(&["call", "email"]);
                self.log(contact.contact, None, author, kind, from, quiet_after);
            }
        }
        if matches!(contact.stage, "lead" | "prospect") && self.builder.rng.random_bool(0.5) {
            let author = *self.builder.pick(&self.marketing);
            self.log(contact.contact, None, author, "email", from, quiet_after);
        }
    }

    /// One interaction with `contact` (and `deal`) by `author`, at a time
    /// between `from` and `to`.
    fn log(
        &mut self,
        contact: Uuid,
        deal: Option<Uuid>,
        author: Uuid,
        kind: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) {
        const SUMMARIES: &[&str] = &[
            "Discussed renewal terms",
            "Sent the new price list",
            "Quarterly review",
            "Support follow-up",
            "Introduced the new product line",
            "Checked in after onboarding",
        ];
        let span = (to - from).num_minutes().max(1);
        let when = from + Duration::minutes(self.builder.rng.random_range(0..span));
        let id = self.builder.id(when);
        let summary = *self.builder.pick(SUMMARIES);
        let direction = *self.builder.pick(&["inbound", "outbound"]);
        let mut fields = json!({"kind": kind, "contact_id": contact, "summary": summary, "direction": direction});
        if let Some(deal) = deal {
            fields["deal_id"] = json!(deal);
        }
        self.plan.push((
            when,
            author,
            Action::Interaction {
                id,
                fields: fields.into(),
            },
        ));
    }

    /// A deal that moves some way through the pipeline and may close.
    fn deal(&mut self, account: Uuid, account_name: &str, account_created: DateTime<Utc>, contact: Option<Uuid>) {
        let opened = account_created + Duration::days(self.builder.rng.random_range(1..500));
        let id = self.builder.id(opened);
        let seller = *self.builder.pick(&self.sellers);
        let value = self.builder.rng.random_range(5..500) * 100_000;
        let currency = *self.builder.pick(&["EUR", "EUR", "USD", "GBP"]);
        let title = format!(
            "{} for {account_name}",
            self.builder.pick(&["Renewal", "Expansion", "Pilot", "Fleet deal"])
        );
        let mut fields = json!({"title": title, "account_id": account, "owner_id": seller, "amount": {"value_minor": value, "currency": currency}});
        let expected_close = self.builder.rng.random_bool(0.7).then(|| opened + Duration::days(90));
        if let Some(close) = expected_close {
            fields["expected_close"] = json!(close.format("%Y-%m-%d").to_string());
        }
        if let Some(contact) = contact {
            fields["contact_ids"] = json!([contact]);
        }
        self.plan.push((
            opened,
            seller,
            Action::Deal {
                id,
                fields: fields.into(),
            },
        ));
        // A diligent seller meets the customer before each move, closes the
        // deal or keeps calling about it; a careless one closes fewer and
        // leaves some to rot.
        let diligence = self.diligence(Some(seller));
        let mut at = opened;
        let last_stage = self.builder.rng.random_range(0..STAGES.len());
        for stage in &STAGES[1..=last_stage] {
            let before = at;
            at += Duration::days(self.builder.rng.random_range(3..25));
            if let Some(contact) = contact
                && self.builder.rng.random_bool(diligence)
            {
                self.log(contact, Some(id), seller, "meeting", before, at);
            }
            self.plan.push((at, seller, Action::Stage { id, stage }));
        }
        // A careless seller pushes the expected close out when it comes.
        if let Some(close) = expected_close
            && self.builder.rng.random_bool(1.0 - diligence)
        {
            let later = close + Duration::days(self.builder.rng.random_range(30..120));
            let fields = json!({"expected_close": later.format("%Y-%m-%d").to_string()});
            self.plan.push((
                close.max(at),
                seller,
                Action::UpdateDeal {
                    id,
                    fields: fields.into(),
                },
            ));
        }
        if self.builder.rng.random_bool(0.6 + 0.35 * diligence) {
            at += Duration::days(self.builder.rng.random_range(3..40));
            let won = self.builder.rng.random_bool(0.45);
            self.plan.push((at, seller, Action::Close { id, won }));
        } else if let Some(contact) = contact
            && self.builder.rng.random_bool(0.5 + 0.5 * diligence)
        {
            // Still open at the end: its seller called about it last week.
            let recent = (self.until - Duration::days(6)).max(at);
            self.log(contact, Some(id), seller, "call", recent, self.until);
        }
    }
}

/// Plans two years of activity, as (time, actor, action), in time order.
fn plan(builder: &mut Builder, options: &DemoOptions) -> Vec<Planned> {
    let start = options.until - Duration::days(730);
    let mut planner = Planner {
        builder,
        until: options.until,
        plan: Vec::new(),
        sellers: Vec::new(),
        diligence: HashMap::new(),
        support: Vec::new(),
        marketing: Vec::new(),
        everyone: Vec::new(),
        emails: Vec::new(),
    };
    planner.users(start);
    let n_accounts = (options.contacts / 10).max(5);
    let mut contacts_left = options.contacts;
    for n in 0..n_accounts {
        let n_contacts = if n + 1 == n_accounts {
            contacts_left
        } else {
            (options.contacts / n_accounts).min(contacts_left)
        };
        contacts_left -= n_contacts;
        planner.account(n, start, n_contacts);
    }
    let mut plan = planner.plan;
    plan.retain(|(at, _, _)| *at <= options.until);
    plan.sort_by_key(|(at, _, _)| *at);
    plan
}

/// Requests appended at a time.
const APPEND_CHUNK: usize = 2_000;

/// Writes the demo history into `store`, calling `progress(done, total)`
/// with the planned actions done.
pub async fn generate(
    store: &Store,
    options: &DemoOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<DemoReport, String> {
    let mut builder = Builder {
        rng: ChaCha8Rng::seed_from_u64(options.seed),
        rules: Rules::default(),
        versions: HashMap::new(),
        requests: Vec::new(),
        contacts: HashMap::new(),
        accounts: HashMap::new(),
        deals: HashMap::new(),
    };
    if store.head().await.map_err(|e| e.to_string())? > 0 {
        return Err("the demo fills an empty store; this one already holds events (use a new --database)".into());
    }
    let plan = plan(&mut builder, options);
    let mut report = DemoReport::default();
    let total = plan.len() as u64;
    // Decided and written as it goes, a few thousand requests at a time, so
    // the events never all sit in memory at once.
    for (done, (at, actor, action)) in plan.iter().enumerate() {
        let before = builder.requests.len();
        builder.apply(*at, *actor, action);
        if builder.requests.len() > before {
            match action {
                Action::User { .. } => report.users += 1,
                Action::Account { .. } => report.accounts += 1,
                Action::Contact { .. } => report.contacts += 1,
                Action::Deal { .. } => report.deals += 1,
                Action::Interaction { .. } => report.interactions += 1,
                _ => {}
            }
        }
        let last = done + 1 == plan.len();
        if builder.requests.len() >= APPEND_CHUNK || (last && !builder.requests.is_empty()) {
            let requests = std::mem::take(&mut builder.requests);
            for result in store.append_all(requests).await.map_err(|e| e.to_string())? {
                let appended = result.map_err(|e| format!("the demo history could not be written: {e}"))?;
                report.events += appended.last_position - appended.first_position + 1;
            }
            progress(done as u64 + 1, total);
        }
    }
    Ok(report)
}
