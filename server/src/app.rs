//! The application layer: load a record's stream, let the domain decide the
//! command, append what it decided. It also checks what one stream cannot
//! know alone: that a deal's account exists, that an owner is a user.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::{
    Account, AccountChanges, AccountCommand, Aggregate, Contact, ContactChanges, ContactCommand, Deal, DealCommand,
    DealOutcome, DomainError, Event, Input, Interaction, InteractionCommand, InteractionLogged, RecordKind, Rules,
    User, UserCommand, values::ExternalId,
};
use eventstore::{AppendRequest, AppendResult, Claim, ExpectedVersion, NewEvent, Store, StoreError};
use uuid::Uuid;

use crate::memo::Bounded;

/// How often a command is decided again after losing a race for its stream,
/// when the caller did not pin a version.
const CONFLICT_RETRIES_MAX: usize = 5;

/// How far ahead of this clock a business time may lie (other clocks drift).
/// Anything later would be an event that has not happened yet, which would
/// make live reports disagree with reports "as of now".
const OCCURRED_AT_SKEW_MAX: chrono::Duration = chrono::Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The domain refused the command: a 4xx for the caller.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The caller's `If-Match` / expected version is stale.
    #[error("the record is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    /// Lost the race for the stream too often, or the store refused the append.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be read: the log is damaged or newer than this code.
    #[error("the log holds an unreadable event at position {position}: {reason}")]
    Unreadable { position: u64, reason: String },
    /// Another live record of the kind holds this external id.
    #[error("external_id {external_id:?} is already used by {kind} {holder}")]
    Taken {
        kind: RecordKind,
        external_id: String,
        holder: Uuid,
    },
    /// The read-model tables failed; the write itself may have committed.
    #[error("{0}")]
    ReadModel(String),
    /// The database cannot answer now (unreachable, full, locked); the same
    /// request may succeed later.
    #[error("{0}")]
    Unavailable(String),
}

/// Who is acting, and what ties their request together.
#[derive(Debug, Clone)]
pub struct Actor {
    /// A user id, or `system` for the machine itself.
    pub id: String,
    pub correlation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    /// A fingerprint of the request behind `idempotency_key`.
    pub request_hash: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            id: "system".into(),
            correlation_id: Some(Uuid::now_v7()),
            idempotency_key: None,
            request_hash: None,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: RecordKind,
    pub id: Uuid,
    /// The record's version after the command.
    pub version: u64,
    /// `None` when the command changed nothing.
    pub appended: Option<AppendResult>,
}

#[derive(Debug, Clone)]
pub struct App {
    pub store: Store,
    pub rules: Rules,
    /// The departments expected to have contact with every account: the
    /// neglected-accounts report names those that did not.
    pub expected_departments: Vec<String>,
    /// Registered users by id. A user's name and role never change once
    /// registered (there is no event that changes them), so an entry never
    /// goes stale; authentication reads it instead of the user's stream.
    users: Arc<Bounded<Uuid, Registered>>,
    /// API tokens read recently (see `auth::TOKEN_RECHECK`).
    pub tokens: Arc<crate::auth::TokenCache>,
    /// Records' states as this process last appended to them (see
    /// `STATES_CACHED_MAX`).
    states: Arc<Bounded<Uuid, State>>,
    /// Commands on one record take turns in this process (striped by the
    /// record's id), so concurrent writers to a hot record queue instead of
    /// losing races and retrying; races with other processes still retry.
    record_turns: Arc<[tokio::sync::Mutex<()>]>,
}

/// Stripes of `record_turns`: two records share a turn one time in this many.
const RECORD_TURN_STRIPES: usize = 1_024;

/// What never changes about a registered user.
#[derive(Debug, Clone)]
pub struct Registered {
    pub name: String,
    pub role: domain::Role,
}

/// Records' states as this process last appended to them, so that a
/// command on a record written recently does not read its stream again.
/// Always safe to use: every append names the version its decision was
/// made at, so a state another process has moved on from fails the append
/// as a conflict, and the command is decided again from the log.
type State = Arc<dyn std::any::Any + Send + Sync>;

/// Records whose states one process remembers; past it the memory is
/// cleared and refilled as records are written again.
const STATES_CACHED_MAX: usize = 10_000;

/// Users remembered by one process; past it the memory is cleared and
/// refilled from the log as users come back.
const USERS_CACHED_MAX: usize = 100_000;

impl App {
    pub fn new(store: Store, rules: Rules) -> Self {
        Self {
            store,
            rules,
            expected_departments: Vec::new(),
            users: Arc::new(Bounded::new(USERS_CACHED_MAX)),
            tokens: Arc::default(),
            states: Arc::new(Bounded::new(STATES_CACHED_MAX)),
            record_turns: (0..RECORD_TURN_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// A registered user's name and role, or `None` for an unknown id or
    /// an erased user.
    pub async fn registered_user(&self, user_id: Uuid) -> Result<Option<Registered>, AppError> {
        let cached = self.users.get(&user_id);
        if cached.is_some() {
            return Ok(cached);
        }
        let user: User = self.load(RecordKind::User, user_id).await?;
        let Some(registered) = user.registered.filter(|_| !user.erased).map(|u| Registered {
            name: u.name.to_string(),
            role: u.role,
        }) else {
            return Ok(None);
        };
        self.users.insert(user_id, registered.clone());
        Ok(Some(registered))
    }

    /// A record's state folded from its stream.
    pub async fn load<A: Aggregate>(&self, kind: RecordKind, id: Uuid) -> Result<A, AppError> {
        let stored = self.store.read_stream(&kind.stream_id(id), 1).await?;
        let mut state = A::default();
        for event in &stored {
            state.evolve(&projections::decode(event)?);
        }
        Ok(state)
    }

    /// Decides `command` against the record's current state and appends the
    /// result. With `expected` set, a different current version fails with
    /// `VersionMismatch`; without, a lost race is decided again.
    pub async fn execute<A: Aggregate>(
        &self,
        kind: RecordKind,
        id: Uuid,
        command: &A::Command,
        expected: Option<u64>,
        actor: &Actor,
        occurred_at: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        self.execute_from::<A>(Stream::Existing, kind, id, command, expected, actor, occurred_at)
            .await
    }

    /// `execute` for a record whose id this process has just minted: its
    /// stream cannot exist, so the first try decides against an empty state
    /// without reading the log (the append still insists on no stream).
    async fn execute_new<A: Aggregate>(
        &self,
        kind: RecordKind,
        id: Uuid,
        command: &A::Command,
        actor: &Actor,
        occurred_at: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        self.execute_from::<A>(Stream::New, kind, id, command, None, actor, occurred_at)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute_from<A: Aggregate>(
        &self,
        stream: Stream,
        kind: RecordKind,
        id: Uuid,
        command: &A::Command,
        expected: Option<u64>,
        actor: &Actor,
        occurred_at: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        if occurred_at > Utc::now() + OCCURRED_AT_SKEW_MAX {
            return Err(DomainError::field("occurred_at", "lies in the future; log things that have happened").into());
        }
        let stripe = (id.as_u128() % RECORD_TURN_STRIPES as u128) as usize;
        let _turn = self.record_turns[stripe].lock().await;
        for attempt in 0..CONFLICT_RETRIES_MAX {
            let remembered = (attempt == 0)
                .then(|| self.states.get(&id))
                .flatten()
                .and_then(|state| state.downcast_ref::<A>().cloned());
            let (state, from_memory): (A, bool) = match (stream, remembered) {
                (Stream::New, _) if attempt == 0 => (A::default(), false),
                // A pinned version the remembered state does not have may
                // be one written by another process: read the log.
                (_, Some(state)) if expected.is_none_or(|expected| expected == state.version()) => (state, true),
                _ => (self.load(kind, id).await?, false),
            };
            if let Some(expected) = expected
                && expected != state.version()
            {
                return Err(AppError::VersionMismatch {
                    expected,
                    actual: state.version(),
                });
            }
            let events = match state.decide(command, &self.rules) {
                Ok(events) => events,
                Err(_) if from_memory => Vec::new(),
                Err(refused) => return Err(refused.into()),
            };
            if events.is_empty() && from_memory {
                // Only an append checks a remembered state against the log:
                // a command that changes nothing (or a refusal) is decided
                // again on the record as it stands.
                self.states.remove(&id);
                continue;
            }
            if events.is_empty() {
                return Ok(Outcome {
                    kind,
                    id,
                    version: state.version(),
                    appended: None,
                });
            }
            let mut next = state.clone();
            for event in &events {
                next.evolve(event);
            }
            let request = AppendRequest {
                claims: external_id_claims(kind, state.external_id(), next.external_id()),
                stream_id: kind.stream_id(id),
                expected: if state.version() == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(state.version())
                },
                events: events.iter().map(|e| encode(e, occurred_at)).collect(),
                actor: actor.id.clone(),
                correlation_id: actor.correlation_id,
                causation_id: None,
                idempotency_key: actor.idempotency_key.clone(),
                request_hash: actor.request_hash.clone(),
                erase: events.iter().filter_map(Event::erased_subject).collect(),
            };
            match self.store.append(request).await {
                Ok(result) => {
                    self.states.insert(id, Arc::new(next));
                    return Ok(Outcome {
                        kind,
                        id,
                        version: result.stream_version,
                        appended: Some(result),
                    });
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    self.states.remove(&id);
                    if let Some(expected) = expected {
                        return Err(AppError::VersionMismatch {
                            expected,
                            actual: actual.unwrap_or_default(),
                        });
                    }
                }
                Err(StoreError::Claimed { claim, holder }) => {
                    self.states.remove(&id);
                    return Err(taken(kind, &claim, &holder));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(AppError::Store(StoreError::Conflict {
            stream_id: kind.stream_id(id),
            expected: ExpectedVersion::Any,
            actual: None,
        }))
    }

    pub async fn register_user(
        &self,
        name: &str,
        department: &str,
        role: &str,
        email: Option<&str>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        let user_id = Uuid::now_v7();
        let command = UserCommand::RegisterUser {
            user_id,
            name: name.into(),
            department: department.into(),
            role: role.into(),
            email: email.map(str::to_owned),
        };
        self.execute_new::<User>(RecordKind::User, user_id, &command, actor, now)
            .await
    }

    /// Parses a contact's, account's or deal's input and checks what it
    /// refers to: the same for creating and for updating.
    async fn checked_input(&self, kind: RecordKind, input: &Input) -> Result<CheckedInput, AppError> {
        match kind {
            RecordKind::Contact => {
                let changes = ContactChanges::parse(input, &[])?;
                self.check_references(changes.account_id.flatten(), changes.owner_id.flatten(), &[])
                    .await?;
                Ok(CheckedInput::Contact(changes))
            }
            RecordKind::Account => {
                let changes = AccountChanges::parse(input, &[])?;
                self.check_references(None, changes.owner_id.flatten(), &[]).await?;
                Ok(CheckedInput::Account(changes))
            }
            RecordKind::Deal => {
                let (changes, stage) = domain::parse_deal_input(input)?;
                let contacts = changes.contact_ids.clone().unwrap_or_default();
                self.check_references(changes.account_id, changes.owner_id.flatten(), &contacts)
                    .await?;
                Ok(CheckedInput::Deal(changes, stage))
            }
            RecordKind::Interaction | RecordKind::User => Err(not_a_record(kind)),
        }
    }

    /// Creates a contact, account or deal from untrusted input.
    pub async fn create(
        &self,
        kind: RecordKind,
        input: &Input,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        let id = Uuid::now_v7();
        match self.checked_input(kind, input).await? {
            CheckedInput::Contact(changes) => {
                let command = ContactCommand::CreateContact {
                    contact_id: id,
                    changes,
                };
                self.execute_new::<Contact>(kind, id, &command, actor, now).await
            }
            CheckedInput::Account(changes) => {
                let command = AccountCommand::CreateAccount {
                    account_id: id,
                    changes,
                };
                self.execute_new::<Account>(kind, id, &command, actor, now).await
            }
            CheckedInput::Deal(changes, stage) => {
                let command = DealCommand::CreateDeal {
                    deal_id: id,
                    changes,
                    stage,
                };
                self.execute_new::<Deal>(kind, id, &command, actor, now).await
            }
        }
    }

    /// Applies a partial update from untrusted input.
    pub async fn update(
        &self,
        kind: RecordKind,
        id: Uuid,
        input: &Input,
        expected: Option<u64>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        match self.checked_input(kind, input).await? {
            CheckedInput::Contact(changes) => {
                self.execute::<Contact>(
                    kind,
                    id,
                    &ContactCommand::UpdateContact { changes },
                    expected,
                    actor,
                    now,
                )
                .await
            }
            CheckedInput::Account(changes) => {
                self.execute::<Account>(
                    kind,
                    id,
                    &AccountCommand::UpdateAccount { changes },
                    expected,
                    actor,
                    now,
                )
                .await
            }
            CheckedInput::Deal(changes, stage) => {
                self.execute::<Deal>(
                    kind,
                    id,
                    &DealCommand::UpdateDeal { changes, stage },
                    expected,
                    actor,
                    now,
                )
                .await
            }
        }
    }

    pub async fn archive(
        &self,
        kind: RecordKind,
        id: Uuid,
        expected: Option<u64>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        match kind {
            RecordKind::Contact => {
                self.execute::<Contact>(kind, id, &ContactCommand::ArchiveContact, expected, actor, now)
                    .await
            }
            RecordKind::Account => {
                self.execute::<Account>(kind, id, &AccountCommand::ArchiveAccount, expected, actor, now)
                    .await
            }
            RecordKind::Deal => {
                self.execute::<Deal>(kind, id, &DealCommand::ArchiveDeal, expected, actor, now)
                    .await
            }
            RecordKind::Interaction | RecordKind::User => Err(not_a_record(kind)),
        }
    }

    /// Erases a person's personal data: a contact's (`erase_contact`) or a
    /// user's (`erase_user`); the other kinds hold none of their own.
    pub async fn erase(
        &self,
        kind: RecordKind,
        id: Uuid,
        reason: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        match kind {
            RecordKind::Contact => self.erase_contact(id, reason, actor, now).await,
            RecordKind::User => self.erase_user(id, reason, actor, now).await,
            other => Err(DomainError::InvalidState(format!(
                "{other} records hold no personal data of their own; a contact's or a user's is erased"
            ))
            .into()),
        }
    }

    /// Erases a contact's personal data: its key is destroyed in the same
    /// append as the `ContactErased` event (who, when, `reason`).
    async fn erase_contact(
        &self,
        id: Uuid,
        reason: &str,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        let reason = self.erasure_reason(reason).await?;
        let command = ContactCommand::EraseContact { reason };
        self.execute::<Contact>(RecordKind::Contact, id, &command, None, actor, now)
            .await
    }

    /// Erases a user's personal data (name, email) as `erase_contact` does
    /// a contact's, and revokes the user's tokens: an erased user acts no
    /// more. An admin cannot erase themselves (another admin must).
    async fn erase_user(&self, id: Uuid, reason: &str, actor: &Actor, now: DateTime<Utc>) -> Result<Outcome, AppError> {
        let reason = self.erasure_reason(reason).await?;
        if actor.id == id.to_string() {
            return Err(DomainError::InvalidState(
                "you cannot erase yourself: another admin must, so that someone can still administer the store".into(),
            )
            .into());
        }
        let command = UserCommand::EraseUser { reason };
        let outcome = self
            .execute::<User>(RecordKind::User, id, &command, None, actor, now)
            .await?;
        self.store.revoke_tokens_of(id).await?;
        self.users.remove(&id);
        Ok(outcome)
    }

    /// An erasure's reason, checked; refused on a store whose first events
    /// hold personal data in plain text, out of erasure's reach.
    async fn erasure_reason(&self, reason: &str) -> Result<domain::values::Text, AppError> {
        let reason = domain::values::Text::parse(reason).map_err(|e| DomainError::field("reason", e))?;
        let sealed_from = self.store.sealed_from().await?;
        if sealed_from > 1 {
            return Err(DomainError::InvalidState(format!(
                "this store was made before personal data was sealed: events 1 to {} hold it in plain text, \
                 where erasure cannot reach; export the records and import them into a new store",
                sealed_from - 1
            ))
            .into());
        }
        Ok(reason)
    }

    /// Records the last activity a previous system knew of on a record, at
    /// `at` (its business time): an import's `last_activity_at`.
    pub async fn import_activity(
        &self,
        kind: RecordKind,
        id: Uuid,
        actor: &Actor,
        at: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        match kind {
            RecordKind::Contact => {
                self.execute::<Contact>(kind, id, &ContactCommand::ImportActivity, None, actor, at)
                    .await
            }
            RecordKind::Account => {
                self.execute::<Account>(kind, id, &AccountCommand::ImportActivity, None, actor, at)
                    .await
            }
            RecordKind::Deal => {
                self.execute::<Deal>(kind, id, &DealCommand::ImportActivity, None, actor, at)
                    .await
            }
            RecordKind::Interaction | RecordKind::User => Err(not_a_record(kind)),
        }
    }

    pub async fn move_deal(
        &self,
        id: Uuid,
        stage: &str,
        expected: Option<u64>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        let command = DealCommand::MoveDealStage { stage: stage.into() };
        self.execute::<Deal>(RecordKind::Deal, id, &command, expected, actor, now)
            .await
    }

    pub async fn close_deal(
        &self,
        id: Uuid,
        outcome: &str,
        reason: Option<&str>,
        expected: Option<u64>,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        let mut validator = domain::Validator::default();
        let outcome = validator.check("outcome", DealOutcome::parse(outcome));
        let reason = reason.and_then(|r| validator.check("reason", domain::values::Text::parse(r)));
        let outcome = validator.finish(|| outcome.expect("checked"))?;
        let command = DealCommand::CloseDeal { outcome, reason };
        self.execute::<Deal>(RecordKind::Deal, id, &command, expected, actor, now)
            .await
    }

    /// Logs an interaction; every record it names must exist.
    pub async fn log_interaction(
        &self,
        input: &Input,
        actor: &Actor,
        occurred_at: DateTime<Utc>,
    ) -> Result<Outcome, AppError> {
        let id = Uuid::now_v7();
        let logged = InteractionLogged::parse(id, input)?;
        self.require(RecordKind::Contact, logged.contact_id, "contact_id")
            .await?;
        self.require(RecordKind::Account, logged.account_id, "account_id")
            .await?;
        self.require(RecordKind::Deal, logged.deal_id, "deal_id").await?;
        let command = InteractionCommand::LogInteraction(logged);
        self.execute_new::<Interaction>(RecordKind::Interaction, id, &command, actor, occurred_at)
            .await
    }

    async fn check_references(
        &self,
        account_id: Option<Uuid>,
        owner_id: Option<Uuid>,
        contact_ids: &[Uuid],
    ) -> Result<(), AppError> {
        self.require(RecordKind::Account, account_id, "account_id").await?;
        self.require(RecordKind::User, owner_id, "owner_id").await?;
        for contact_id in contact_ids {
            self.require(RecordKind::Contact, Some(*contact_id), "contact_ids")
                .await?;
        }
        Ok(())
    }

    /// Fails with a field error unless `id` names a live record of `kind`:
    /// one that exists and is not archived (nor, a user, erased). Nothing
    /// new may point at a record that was deleted.
    async fn require(&self, kind: RecordKind, id: Option<Uuid>, field: &str) -> Result<(), AppError> {
        let Some(id) = id else { return Ok(()) };
        let live = match kind {
            RecordKind::Contact => self
                .load::<Contact>(kind, id)
                .await
                .map(|c| c.fields.is_some() && !c.archived)?,
            RecordKind::Account => self.load::<Account>(kind, id).await?.is_live(),
            RecordKind::Deal => self
                .load::<Deal>(kind, id)
                .await
                .map(|d| d.fields.is_some() && !d.archived)?,
            RecordKind::User => self
                .load::<User>(kind, id)
                .await
                .map(|u| u.registered.is_some() && !u.erased)?,
            RecordKind::Interaction => self.load::<Interaction>(kind, id).await?.logged.is_some(),
        };
        if !live {
            return Err(DomainError::field(field, format!("no {kind} has the id {id}, or it is archived")).into());
        }
        Ok(())
    }
}

impl From<projections::ProjectionError> for AppError {
    fn from(error: projections::ProjectionError) -> Self {
        match error {
            projections::ProjectionError::Store(error) => Self::Store(error),
            projections::ProjectionError::Unreadable { position, reason } => Self::Unreadable { position, reason },
            other if other.is_unavailable() => Self::Unavailable(other.to_string()),
            other @ (projections::ProjectionError::Database(_)
            | projections::ProjectionError::Sqlite(_)
            | projections::ProjectionError::ReadModel(_)
            | projections::ProjectionError::Internal(_)
            | projections::ProjectionError::BadRequest(_)
            | projections::ProjectionError::Busy(_)) => Self::ReadModel(other.to_string()),
        }
    }
}

/// Whether a command's stream may already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Existing,
    /// Its id was just minted here.
    New,
}

/// A record's input, parsed, with its references checked.
enum CheckedInput {
    Contact(ContactChanges),
    Account(AccountChanges),
    Deal(domain::DealChanges, Option<String>),
}

/// Fills in the external-id claims of a log written before appends claimed
/// them (see `eventstore::Claim`), once: folds every event's effect on its
/// record's external id, and where two live records of a kind share one
/// (written before it was enforced), the one that took it first keeps it.
/// Returns how many values were claimed, or `None` if nothing was due.
pub async fn fill_claims(store: &Store) -> Result<Option<usize>, AppError> {
    if !store.claims_unfilled().await? {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    // Stream -> (claimed value, position it was taken at).
    let mut held: HashMap<String, (String, u64)> = HashMap::new();
    let mut folded = 0;
    for _ in 0..FILL_ATTEMPTS_MAX {
        let head = store.head().await?;
        while folded < head {
            let batch = store.read_all(folded, eventstore::READ_BATCH_MAX).await?;
            let Some(last) = batch.last() else { break };
            folded = last.position;
            for recorded in &batch {
                let event = projections::decode(recorded)?;
                let Some(effect) = event.external_id_effect() else {
                    continue;
                };
                let (kind, _) = event.record();
                match effect {
                    Some(value) => {
                        let claim = domain::external_id_claim(kind, value.as_str());
                        held.insert(recorded.stream_id.clone(), (claim, recorded.position));
                    }
                    None => {
                        held.remove(&recorded.stream_id);
                    }
                }
            }
        }
        let mut first: HashMap<&str, (u64, &str)> = HashMap::new();
        for (stream, (claim, taken_at)) in &held {
            let holder = first.entry(claim).or_insert((*taken_at, stream));
            if (*taken_at, stream.as_str()) < *holder {
                *holder = (*taken_at, stream);
            }
        }
        let claims: Vec<(String, String)> = first
            .into_iter()
            .map(|(claim, (_, stream))| (claim.to_owned(), stream.to_owned()))
            .collect();
        if store.fill_claims(&claims, folded).await? {
            tracing::info!(
                claims = claims.len(),
                events = folded,
                seconds = started.elapsed().as_secs_f64(),
                "filled in the external-id claims of a log that predates them"
            );
            return Ok(Some(claims.len()));
        }
    }
    Err(AppError::Unavailable(
        "the log kept growing while its external-id claims were filled in; try again".into(),
    ))
}

/// Tries to fill in claims while other processes append; each try folds
/// only what they appended since the last.
const FILL_ATTEMPTS_MAX: usize = 20;

/// What an append claims and gives up as a record's external id goes from
/// `before` to `after`.
fn external_id_claims(kind: RecordKind, before: Option<&ExternalId>, after: Option<&ExternalId>) -> Vec<Claim> {
    if before == after {
        return Vec::new();
    }
    let claim = |value: &ExternalId| domain::external_id_claim(kind, value.as_str());
    before
        .map(|value| Claim::Release(claim(value)))
        .into_iter()
        .chain(after.map(|value| Claim::Take(claim(value))))
        .collect()
}

/// The refusal of an append whose external id another record holds.
fn taken(kind: RecordKind, claim: &str, holder: &str) -> AppError {
    let prefix = domain::external_id_claim(kind, "");
    match (claim.strip_prefix(&prefix), RecordKind::parse_stream_id(holder)) {
        (Some(external_id), Some((_, holder))) => AppError::Taken {
            kind,
            external_id: external_id.to_owned(),
            holder,
        },
        _ => AppError::Store(StoreError::Claimed {
            claim: claim.to_owned(),
            holder: holder.to_owned(),
        }),
    }
}

fn not_a_record(kind: RecordKind) -> AppError {
    DomainError::InvalidState(format!("{kind} records are not created or changed this way")).into()
}

/// An event as the log takes it, its personal fields apart for their
/// subject's key.
pub(crate) fn encode(event: &Event, occurred_at: DateTime<Utc>) -> NewEvent {
    let encoded = event.encode();
    NewEvent {
        event_type: encoded.event_type.into(),
        schema_version: encoded.schema_version,
        data: encoded.data,
        occurred_at,
        personal: encoded
            .personal
            .map(|(subject, data)| eventstore::Personal { subject, data }),
    }
}
