//! The one fold. `CrmModel::apply` turns each event of the log, in position
//! order, into the current views of users, contacts, accounts, deals and
//! interactions. Live updates, rebuilds and `as_of` reports all run this same
//! function; reports are pure queries over its result.
//!
//! # What counts as a touch
//! A record's clock (`last_touched_at`, which stale and neglect reports
//! measure from) is reset by:
//! - every event in the record's own stream (created, updated, stage changed,
//!   closed, archived), and
//! - every interaction that names the record. An interaction with a contact
//!   or a deal also touches that contact's or deal's account.
//!
//! Times are business times (`occurred_at`). An event that happened before
//! the record's last touch (a backfilled import) does not move the clock
//! back; the `last_touch` reference always names the event that set it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::{
    AccountFields, ContactFields, DealFields, DealOutcome, DealStatus, Event, InteractionLogged, RecordKind, Role,
    StageName,
};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bumped whenever `apply`, the views or the tables change shape: read-model
/// tables written by another version are refolded from the log aside and
/// swapped in (`Projector::open`).
pub const MODEL_VERSION: u32 = 5;

/// Which event did something, when, and who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub position: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
}

impl EventRef {
    pub fn of(recorded: &RecordedEvent) -> Self {
        Self {
            position: recorded.position,
            event_type: recorded.event_type.clone(),
            occurred_at: recorded.occurred_at,
            actor: recorded.actor.clone(),
        }
    }
}

/// What every record view carries besides its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Number of events in the record's stream.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Latest change to the record itself.
    pub updated_at: DateTime<Utc>,
    /// Latest change or interaction: what stale reports measure from.
    pub last_touched_at: DateTime<Utc>,
    /// The event that last reset `last_touched_at`.
    pub last_touch: EventRef,
    pub interaction_count: u64,
    pub archived: bool,
}

impl RecordMeta {
    fn created(at: &EventRef) -> Self {
        Self {
            version: 1,
            created_at: at.occurred_at,
            created_by: at.actor.clone(),
            updated_at: at.occurred_at,
            last_touched_at: at.occurred_at,
            last_touch: at.clone(),
            interaction_count: 0,
            archived: false,
        }
    }

    fn changed(&mut self, at: &EventRef) {
        self.version += 1;
        self.updated_at = self.updated_at.max(at.occurred_at);
        self.touch(at);
    }

    fn touch(&mut self, at: &EventRef) {
        if at.occurred_at >= self.last_touched_at {
            self.last_touched_at = at.occurred_at;
            self.last_touch = at.clone();
        }
    }

    fn interacted(&mut self, at: &EventRef) {
        self.interaction_count += 1;
        self.touch(at);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub department: String,
    pub role: Role,
    pub registered_at: DateTime<Utc>,
    /// Latest business time of any event this user caused.
    pub last_activity_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactView {
    pub id: Uuid,
    pub fields: ContactFields,
    pub meta: RecordMeta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: Uuid,
    pub fields: AccountFields,
    pub meta: RecordMeta,
    /// The latest interaction touching the account (directly or through one
    /// of its contacts or deals).
    pub last_interaction: Option<InteractionRef>,
    /// Departments of every user whose events ever touched the account, its
    /// contacts or its deals.
    pub departments: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionRef {
    pub id: Uuid,
    pub kind: domain::InteractionKind,
    pub summary: String,
    pub at: EventRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealView {
    pub id: Uuid,
    pub fields: DealFields,
    pub stage: StageName,
    pub status: DealStatus,
    /// The event that put the deal in its current stage: rotting is measured from it.
    pub stage_entered: EventRef,
    pub closed: Option<DealClosing>,
    pub meta: RecordMeta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealClosing {
    pub outcome: DealOutcome,
    pub reason: Option<String>,
    pub at: EventRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionView {
    pub id: Uuid,
    pub logged: InteractionLogged,
    /// The account it touched: named, or through its contact or deal.
    pub account_id: Option<Uuid>,
    pub at: EventRef,
}

/// Ids of records, per kind: the rows one batch of events needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub users: BTreeSet<Uuid>,
    pub contacts: BTreeSet<Uuid>,
    pub accounts: BTreeSet<Uuid>,
    pub deals: BTreeSet<Uuid>,
    pub interactions: BTreeSet<Uuid>,
    /// Records the batch creates (their stream's first event is in it): no
    /// row can exist for them before it, so none is looked for.
    pub created: BTreeSet<Uuid>,
}

impl Keys {
    /// Adds every key of `other`.
    pub fn extend(&mut self, other: Keys) {
        self.users.extend(other.users);
        self.contacts.extend(other.contacts);
        self.accounts.extend(other.accounts);
        self.deals.extend(other.deals);
        self.interactions.extend(other.interactions);
        self.created.extend(other.created);
    }

    /// The ids of one kind of record.
    pub fn of_kind_mut(&mut self, kind: RecordKind) -> &mut BTreeSet<Uuid> {
        match kind {
            RecordKind::Contact => &mut self.contacts,
            RecordKind::Account => &mut self.accounts,
            RecordKind::Deal => &mut self.deals,
            RecordKind::Interaction => &mut self.interactions,
            RecordKind::User => &mut self.users,
        }
    }
}

/// Every read model's state, folded from the log up to `position`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrmModel {
    /// The last log position applied.
    pub position: u64,
    pub users: BTreeMap<Uuid, UserView>,
    pub contacts: BTreeMap<Uuid, ContactView>,
    pub accounts: BTreeMap<Uuid, AccountView>,
    pub deals: BTreeMap<Uuid, DealView>,
    pub interactions: BTreeMap<Uuid, InteractionView>,
}

impl CrmModel {
    /// Applies one event. Events must come in position order; one the model
    /// has already applied is ignored, so replaying an overlap is harmless.
    pub fn apply(&mut self, recorded: &RecordedEvent, event: &Event) {
        if recorded.position <= self.position {
            return;
        }
        self.position = recorded.position;
        let at = EventRef::of(recorded);
        if let Some(user) = Uuid::parse_str(&recorded.actor)
            .ok()
            .and_then(|id| self.users.get_mut(&id))
        {
            user.last_activity_at = Some(user.last_activity_at.map_or(at.occurred_at, |t| t.max(at.occurred_at)));
        }
        match event {
            Event::UserRegistered(e) => self.register_user(e, &at),
            Event::AccountCreated(_) | Event::AccountUpdated(_) | Event::AccountArchived(_) => {
                self.apply_account(event, &at)
            }
            Event::ContactCreated(_) | Event::ContactUpdated(_) | Event::ContactArchived(_) => {
                self.apply_contact(event, &at)
            }
            Event::DealCreated(_)
            | Event::DealUpdated(_)
            | Event::DealStageChanged(_)
            | Event::DealClosed(_)
            | Event::DealArchived(_) => self.apply_deal(event, &at),
            Event::InteractionLogged(e) => self.log_interaction(e, &at),
        }
    }

    /// A new user: the people who act, with their departments.
    fn register_user(&mut self, e: &domain::UserRegistered, at: &EventRef) {
        self.users.entry(e.user_id).or_insert_with(|| UserView {
            id: e.user_id,
            name: e.name.to_string(),
            department: e.department.to_string(),
            role: e.role,
            registered_at: at.occurred_at,
            last_activity_at: None,
        });
    }

    /// Account events: the view, and which departments touched it.
    fn apply_account(&mut self, event: &Event, at: &EventRef) {
        match event {
            Event::AccountCreated(e) => {
                self.accounts.entry(e.account_id).or_insert_with(|| AccountView {
                    id: e.account_id,
                    fields: e.fields.clone(),
                    meta: RecordMeta::created(at),
                    last_interaction: None,
                    departments: BTreeSet::new(),
                });
                self.account_touched_by(Some(e.account_id), at);
            }
            Event::AccountUpdated(e) => {
                if let Some(account) = self.accounts.get_mut(&e.account_id) {
                    e.changes.apply_to(&mut account.fields);
                    account.meta.changed(at);
                }
                self.account_touched_by(Some(e.account_id), at);
            }
            Event::AccountArchived(e) => {
                if let Some(account) = self.accounts.get_mut(&e.account_id) {
                    account.meta.archived = true;
                    account.meta.changed(at);
                }
            }
            _ => {}
        }
    }

    /// Contact events; a contact's change also counts as work on its account.
    fn apply_contact(&mut self, event: &Event, at: &EventRef) {
        match event {
            Event::ContactCreated(e) => {
                self.contacts.entry(e.contact_id).or_insert_with(|| ContactView {
                    id: e.contact_id,
                    fields: e.fields.clone(),
                    meta: RecordMeta::created(at),
                });
                self.account_touched_by(e.fields.account_id, at);
            }
            Event::ContactUpdated(e) => {
                let account_id = self.contacts.get_mut(&e.contact_id).map(|contact| {
                    e.changes.apply_to(&mut contact.fields);
                    contact.meta.changed(at);
                    contact.fields.account_id
                });
                self.account_touched_by(account_id.flatten(), at);
            }
            Event::ContactArchived(e) => {
                if let Some(contact) = self.contacts.get_mut(&e.contact_id) {
                    contact.meta.archived = true;
                    contact.meta.changed(at);
                }
            }
            _ => {}
        }
    }

    /// Deal events: fields, stage and the event that entered it, closing.
    fn apply_deal(&mut self, event: &Event, at: &EventRef) {
        match event {
            Event::DealCreated(e) => {
                self.deals.entry(e.deal_id).or_insert_with(|| DealView {
                    id: e.deal_id,
                    fields: e.fields.clone(),
                    stage: e.stage.clone(),
                    status: DealStatus::Open,
                    stage_entered: at.clone(),
                    closed: None,
                    meta: RecordMeta::created(at),
                });
                self.account_touched_by(Some(e.fields.account_id), at);
            }
            Event::DealUpdated(e) => self.change_deal(e.deal_id, at, |deal| e.changes.apply_to(&mut deal.fields)),
            Event::DealStageChanged(e) => self.change_deal(e.deal_id, at, |deal| {
                deal.stage = e.to.clone();
                deal.stage_entered = at.clone();
            }),
            Event::DealClosed(e) => self.change_deal(e.deal_id, at, |deal| {
                deal.status = match e.outcome {
                    DealOutcome::Won => DealStatus::Won,
                    DealOutcome::Lost => DealStatus::Lost,
                };
                deal.closed = Some(DealClosing {
                    outcome: e.outcome,
                    reason: e.reason.as_ref().map(|r| r.to_string()),
                    at: at.clone(),
                });
            }),
            Event::DealArchived(e) => {
                if let Some(deal) = self.deals.get_mut(&e.deal_id) {
                    deal.meta.archived = true;
                    deal.meta.changed(at);
                }
            }
            _ => {}
        }
    }

    fn change_deal(&mut self, deal_id: Uuid, at: &EventRef, change: impl FnOnce(&mut DealView)) {
        let Some(deal) = self.deals.get_mut(&deal_id) else {
            return;
        };
        change(deal);
        deal.meta.changed(at);
        let account_id = deal.fields.account_id;
        self.account_touched_by(Some(account_id), at);
    }

    fn log_interaction(&mut self, logged: &InteractionLogged, at: &EventRef) {
        let via_contact = logged
            .contact_id
            .and_then(|id| self.contacts.get(&id))
            .and_then(|c| c.fields.account_id);
        let via_deal = logged
            .deal_id
            .and_then(|id| self.deals.get(&id))
            .map(|d| d.fields.account_id);
        let account_id = logged.account_id.or(via_contact).or(via_deal);
        if let Some(contact) = logged.contact_id.and_then(|id| self.contacts.get_mut(&id)) {
            contact.meta.interacted(at);
        }
        if let Some(deal) = logged.deal_id.and_then(|id| self.deals.get_mut(&id)) {
            deal.meta.interacted(at);
        }
        if let Some(account) = account_id.and_then(|id| self.accounts.get_mut(&id)) {
            account.meta.interacted(at);
            let newer = account
                .last_interaction
                .as_ref()
                .is_none_or(|last| at.occurred_at >= last.at.occurred_at);
            if newer {
                account.last_interaction = Some(InteractionRef {
                    id: logged.interaction_id,
                    kind: logged.kind,
                    summary: logged.summary.to_string(),
                    at: at.clone(),
                });
            }
        }
        self.account_touched_by(account_id, at);
        self.interactions.insert(
            logged.interaction_id,
            InteractionView {
                id: logged.interaction_id,
                logged: logged.clone(),
                account_id,
                at: at.clone(),
            },
        );
    }

    /// Records the acting user's department on the account.
    fn account_touched_by(&mut self, account_id: Option<Uuid>, at: &EventRef) {
        let department = Uuid::parse_str(&at.actor)
            .ok()
            .and_then(|id| self.users.get(&id))
            .map(|u| u.department.clone());
        if let (Some(account), Some(department)) = (account_id.and_then(|id| self.accounts.get_mut(&id)), department) {
            account.departments.insert(department);
        }
    }

    /// Adds to `keys` every record `apply(recorded, event)` reads or writes,
    /// as far as the event alone names them. Records reached through another
    /// record (the account of a contact or deal it names) are found once
    /// the named records are loaded (`tables::fold_rows`). Kept beside `apply` so that the two change
    /// together: the table-backed fold loads exactly these rows before it
    /// applies a batch.
    pub fn add_keys(recorded: &RecordedEvent, event: &Event, keys: &mut Keys) {
        if let Ok(actor) = Uuid::parse_str(&recorded.actor) {
            keys.users.insert(actor);
        }
        let (kind, id) = event.record();
        keys.of_kind_mut(kind).insert(id);
        if recorded.version == 1 {
            keys.created.insert(id);
        }
        match event {
            Event::ContactCreated(e) => keys.accounts.extend(e.fields.account_id),
            Event::ContactUpdated(e) => keys.accounts.extend(e.changes.account_id.flatten()),
            Event::DealCreated(e) => keys.accounts.extend([e.fields.account_id]),
            Event::DealUpdated(e) => keys.accounts.extend(e.changes.account_id),
            Event::InteractionLogged(e) => {
                keys.contacts.extend(e.contact_id);
                keys.deals.extend(e.deal_id);
                keys.accounts.extend(e.account_id);
            }
            // Events that name no record but their own.
            Event::UserRegistered(_)
            | Event::AccountCreated(_)
            | Event::AccountUpdated(_)
            | Event::AccountArchived(_)
            | Event::ContactArchived(_)
            | Event::DealStageChanged(_)
            | Event::DealClosed(_)
            | Event::DealArchived(_) => {}
        }
    }

    /// The user behind an actor id, if the actor is a registered user.
    pub fn user(&self, actor: &str) -> Option<&UserView> {
        Uuid::parse_str(actor).ok().and_then(|id| self.users.get(&id))
    }

    /// The meta of any record.
    pub fn meta(&self, kind: RecordKind, id: Uuid) -> Option<&RecordMeta> {
        match kind {
            RecordKind::Contact => self.contacts.get(&id).map(|r| &r.meta),
            RecordKind::Account => self.accounts.get(&id).map(|r| &r.meta),
            RecordKind::Deal => self.deals.get(&id).map(|r| &r.meta),
            RecordKind::Interaction | RecordKind::User => None,
        }
    }
}
