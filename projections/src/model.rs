//! The one fold. `CrmModel::apply` turns each event of the log, in position
//! order, into the current views of users, contacts, accounts, deals and
//! interactions. Live updates, rebuilds and `as_of` reports all run this same
//! function; reports are pure queries over its result.
//!
//! # The clocks
//! Each is defined here and nowhere else; the README's report section says
//! the same in a manager's words.
//!
//! **Stale** (`last_touched_at`, which the stale list measures from) is reset by:
//! - the record's creation;
//! - a change to a substantive field, by anyone: every field but the tags,
//!   the custom fields and the external id; for a deal also a stage move
//!   and its closing;
//! - a change to the tags, custom fields or external id only when the
//!   record's owner makes it (a colleague tidying labels has not looked
//!   after the customer);
//! - a customer-facing interaction (call, email or meeting) that names the
//!   record; for an account also one that names one of its contacts or
//!   deals. A note is internal and resets nothing;
//! - the last activity a previous system knew of, brought over by an import
//!   (`ActivityImported`, at its own time), for the record it names.
//!
//! Archiving resets nothing: it takes the record out of the reports.
//!
//! **Never updated** holds from creation until the stale clock is first
//! reset by anything after it.
//!
//! **Rotting** (deals, `last_activity`) is measured from the later of the
//! deal entering its stage and the last customer-facing interaction naming
//! the deal, the way Pipedrive counts idle days: an edit of the amount or a
//! note does not keep a deal fresh, a call does (and so does the last
//! activity an import brought over).
//!
//! **Slipped** (deals, `slipped`) is the last time an open deal's expected
//! close was moved later; setting one where there was none, clearing it or
//! pulling it in is no slip.
//!
//! **Department coverage** (accounts) counts customer-facing interactions
//! only, per department of the person who logged them; a record edit is
//! not contact with the customer.
//!
//! Times are business times (`occurred_at`). An event that happened before
//! a clock's last reset (a backfilled import) does not move it back; the
//! reference kept beside each clock always names the event that set it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::{
    AccountFields, ContactFields, DealFields, DealOutcome, DealStatus, Event, InteractionKind, InteractionLogged,
    LifecycleStage, RecordKind, Role, StageName,
};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Bumped whenever `apply`, the views or the tables change shape: read-model
/// tables written by another version are refolded from the log aside and
/// swapped in (`Projector::open`).
pub const MODEL_VERSION: u32 = 13;

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
    /// Whether anything reset the stale clock after the creation: a record
    /// without is "never updated".
    pub updated_since_created: bool,
    pub interaction_count: u64,
    pub archived: bool,
    /// The record's personal data was erased: by whom, when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<Erasure>,
}

/// An erasure of a record's personal data (`ContactErased`, `UserErased`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub at: EventRef,
    pub reason: String,
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
            updated_since_created: false,
            interaction_count: 0,
            archived: false,
            erased: None,
        }
    }

    /// An event of the record's own stream; `resets` says whether it
    /// resets the stale clock.
    fn changed(&mut self, at: &EventRef, resets: bool) {
        self.version += 1;
        self.updated_at = self.updated_at.max(at.occurred_at);
        if resets {
            self.touch(at);
        }
    }

    fn touch(&mut self, at: &EventRef) {
        self.updated_since_created = true;
        if at.occurred_at >= self.last_touched_at {
            self.last_touched_at = at.occurred_at;
            self.last_touch = at.clone();
        }
    }

    fn interacted(&mut self, at: &EventRef, kind: InteractionKind) {
        self.interaction_count += 1;
        if customer_facing(kind) {
            self.touch(at);
        }
    }
}

/// Calls, emails and meetings: contact with the customer. Notes are not.
pub fn customer_facing(kind: InteractionKind) -> bool {
    match kind {
        InteractionKind::Call | InteractionKind::Email | InteractionKind::Meeting => true,
        InteractionKind::Note => false,
    }
}

/// Whether a change resets the stale clock: one of its fields is
/// substantive (`upkeep_only` says it is not), or its author owns the
/// record.
fn change_resets(upkeep_only: bool, owner_id: Option<Uuid>, actor: &str) -> bool {
    !upkeep_only || owner_id.is_some_and(|owner| Uuid::parse_str(actor).ok() == Some(owner))
}

/// Whether a change touches only the labels around the customer (tags,
/// custom fields, the external id) and no substantive field.
fn contact_upkeep_only(changes: &domain::ContactChanges) -> bool {
    let mut substantive = changes.clone();
    (substantive.tags, substantive.custom, substantive.external_id) = (None, None, None);
    substantive.is_empty()
}

fn account_upkeep_only(changes: &domain::AccountChanges) -> bool {
    let mut substantive = changes.clone();
    (substantive.custom, substantive.external_id) = (None, None);
    substantive.is_empty()
}

fn deal_upkeep_only(changes: &domain::DealChanges) -> bool {
    let mut substantive = changes.clone();
    substantive.external_id = None;
    substantive.is_empty()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub department: String,
    pub role: Role,
    /// How other systems name the user; none for users registered without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub registered_at: DateTime<Utc>,
    /// Latest business time of any event this user caused.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// The user's personal data was erased: by whom, when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<Erasure>,
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
    /// Per department, the customer-facing interactions its people had with
    /// the account, its contacts or its deals.
    pub coverage: BTreeMap<String, Coverage>,
    /// Its open deals (not archived): with its customers, what puts the
    /// account at stake when nobody talks to it.
    #[serde(default)]
    pub open_deals: u64,
    /// Its contacts who are customers (not archived).
    #[serde(default)]
    pub customer_contacts: u64,
}

/// One department's contact with an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Calls, emails and meetings logged by the department's people.
    pub interactions: u64,
    /// The latest of them.
    pub last: EventRef,
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
    /// The event that put the deal in its current stage.
    pub stage_entered: EventRef,
    /// The event rotting is measured from: `stage_entered`, or a later
    /// call, email or meeting about the deal.
    pub last_activity: EventRef,
    pub closed: Option<DealClosing>,
    /// The last event that moved the open deal's expected close later (it
    /// slipped); none if it never did.
    #[serde(default)]
    pub slipped: Option<EventRef>,
    pub meta: RecordMeta,
}

impl DealView {
    /// Activity on the deal: the rotting clock starts again.
    fn active(&mut self, at: &EventRef) {
        if at.occurred_at >= self.last_activity.occurred_at {
            self.last_activity = at.clone();
        }
    }
}

impl AccountView {
    /// A customer-facing interaction with the account (or one of its
    /// contacts or deals), by someone of `department`.
    fn contacted(&mut self, logged: &InteractionLogged, at: &EventRef, department: Option<String>) {
        let newer = self
            .last_interaction
            .as_ref()
            .is_none_or(|last| at.occurred_at >= last.at.occurred_at);
        if newer {
            self.last_interaction = Some(InteractionRef {
                id: logged.interaction_id,
                kind: logged.kind,
                summary: logged.summary.to_string(),
                at: at.clone(),
            });
        }
        if let Some(department) = department {
            let coverage = self.coverage.entry(department).or_insert_with(|| Coverage {
                interactions: 0,
                last: at.clone(),
            });
            coverage.interactions += 1;
            if at.occurred_at >= coverage.last.occurred_at {
                coverage.last = at.clone();
            }
        }
    }
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
    /// Contacts and deals whose account the batch reaches through them (an
    /// interaction names them): that account is loaded with them.
    pub via: BTreeSet<Uuid>,
    /// Accounts the batch's own events give a contact or deal (created with
    /// one, or moved to one): reached through that record when an
    /// interaction later in the batch names it, before its row exists or
    /// while the loaded row still names its old account.
    pub links: BTreeMap<Uuid, BTreeSet<Uuid>>,
    /// Contacts whose interactions the batch rewrites (an erasure): every
    /// interaction naming them is loaded, with the accounts they touched.
    pub interactions_of: BTreeSet<Uuid>,
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
        self.via.extend(other.via);
        self.interactions_of.extend(other.interactions_of);
        for (id, accounts) in other.links {
            self.links.entry(id).or_default().extend(accounts);
        }
    }

    /// Notes that the batch gives record `id` the account `account`.
    fn link(&mut self, id: Uuid, account: Option<Uuid>) {
        if let Some(account) = account {
            self.links.entry(id).or_default().insert(account);
        }
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
            Event::UserErased(e) => self.erase_user(e, &at),
            Event::AccountCreated(_) | Event::AccountUpdated(_) | Event::AccountArchived(_) => {
                self.apply_account(event, &at)
            }
            Event::ContactCreated(_)
            | Event::ContactUpdated(_)
            | Event::ContactArchived(_)
            | Event::ContactErased(_) => {
                let id = event.record().1;
                let before = self.customer_of(id);
                self.apply_contact(event, &at);
                let after = self.customer_of(id);
                self.restake(before, after, |account| &mut account.customer_contacts);
            }
            Event::DealCreated(_)
            | Event::DealUpdated(_)
            | Event::DealStageChanged(_)
            | Event::DealClosed(_)
            | Event::DealArchived(_) => {
                let id = event.record().1;
                let before = self.open_deal_of(id);
                self.apply_deal(event, &at);
                let after = self.open_deal_of(id);
                self.restake(before, after, |account| &mut account.open_deals);
            }
            Event::InteractionLogged(e) => self.log_interaction(e, &at),
            Event::ActivityImported(e) => self.import_activity(e, &at),
        }
    }

    /// A previous system's last activity on a record: the stale clock, and
    /// a deal's rotting clock, as a call would reset them.
    fn import_activity(&mut self, e: &domain::ActivityImported, at: &EventRef) {
        let meta = match e.kind {
            RecordKind::Contact => self.contacts.get_mut(&e.record_id).map(|r| &mut r.meta),
            RecordKind::Account => self.accounts.get_mut(&e.record_id).map(|r| &mut r.meta),
            RecordKind::Deal => self.deals.get_mut(&e.record_id).map(|deal| {
                deal.active(at);
                &mut deal.meta
            }),
            RecordKind::Interaction | RecordKind::User => None,
        };
        if let Some(meta) = meta {
            meta.version += 1;
            meta.touch(at);
        }
    }

    /// The account a contact is a customer of (not archived).
    fn customer_of(&self, contact: Uuid) -> Option<Uuid> {
        self.contacts
            .get(&contact)
            .filter(|c| !c.meta.archived && c.fields.lifecycle_stage == Some(LifecycleStage::Customer))
            .and_then(|c| c.fields.account_id)
    }

    /// The account of an open deal (not archived).
    fn open_deal_of(&self, deal: Uuid) -> Option<Uuid> {
        self.deals
            .get(&deal)
            .filter(|d| !d.meta.archived && d.status == DealStatus::Open)
            .map(|d| d.fields.account_id)
    }

    /// Moves a stake (`count` of the account) from the account it was in
    /// before an event to the one it is in after.
    fn restake(&mut self, before: Option<Uuid>, after: Option<Uuid>, count: fn(&mut AccountView) -> &mut u64) {
        if before == after {
            return;
        }
        if let Some(account) = before.and_then(|id| self.accounts.get_mut(&id)) {
            let n = count(account);
            *n = n.saturating_sub(1);
        }
        if let Some(account) = after.and_then(|id| self.accounts.get_mut(&id)) {
            *count(account) += 1;
        }
    }

    /// A new user: the people who act, with their departments.
    fn register_user(&mut self, e: &domain::UserRegistered, at: &EventRef) {
        self.users.entry(e.user_id).or_insert_with(|| UserView {
            id: e.user_id,
            name: e.name.to_string(),
            department: e.department.to_string(),
            role: e.role,
            email: e.email.as_ref().map(|e| e.as_str().to_owned()),
            registered_at: at.occurred_at,
            last_activity_at: None,
            erased: None,
        });
    }

    /// A user's erasure: the name and email read as erased ones do
    /// (`domain::personal`); the department and role stay, so what the
    /// user did still counts for the department.
    fn erase_user(&mut self, e: &domain::UserErased, at: &EventRef) {
        if let Some(user) = self.users.get_mut(&e.user_id) {
            user.name = domain::ERASED.to_owned();
            user.email = None;
            user.erased = Some(Erasure {
                at: at.clone(),
                reason: e.reason.to_string(),
            });
        }
    }

    /// Account events: the view and its stale clock.
    fn apply_account(&mut self, event: &Event, at: &EventRef) {
        match event {
            Event::AccountCreated(e) => {
                self.accounts.entry(e.account_id).or_insert_with(|| AccountView {
                    id: e.account_id,
                    fields: e.fields.clone(),
                    meta: RecordMeta::created(at),
                    last_interaction: None,
                    coverage: BTreeMap::new(),
                    open_deals: 0,
                    customer_contacts: 0,
                });
            }
            Event::AccountUpdated(e) => {
                if let Some(account) = self.accounts.get_mut(&e.account_id) {
                    let resets = change_resets(account_upkeep_only(&e.changes), account.fields.owner_id, &at.actor);
                    e.changes.apply_to(&mut account.fields);
                    account.meta.changed(at, resets);
                }
            }
            Event::AccountArchived(e) => {
                if let Some(account) = self.accounts.get_mut(&e.account_id) {
                    account.meta.archived = true;
                    account.meta.changed(at, false);
                }
            }
            _ => {}
        }
    }

    fn apply_contact(&mut self, event: &Event, at: &EventRef) {
        match event {
            Event::ContactCreated(e) => {
                self.contacts.entry(e.contact_id).or_insert_with(|| ContactView {
                    id: e.contact_id,
                    fields: e.fields.clone(),
                    meta: RecordMeta::created(at),
                });
            }
            Event::ContactUpdated(e) => {
                if let Some(contact) = self.contacts.get_mut(&e.contact_id) {
                    let resets = change_resets(contact_upkeep_only(&e.changes), contact.fields.owner_id, &at.actor);
                    e.changes.apply_to(&mut contact.fields);
                    contact.meta.changed(at, resets);
                }
            }
            Event::ContactArchived(e) => {
                if let Some(contact) = self.contacts.get_mut(&e.contact_id) {
                    contact.meta.archived = true;
                    contact.meta.changed(at, false);
                }
            }
            Event::ContactErased(e) => self.erase_contact(e, at),
            _ => {}
        }
    }

    /// An erasure: the contact's personal fields, and the summaries of the
    /// interactions logged with it (wherever they are shown), read as
    /// erased ones do (`domain::personal`), which is what a rebuild reads
    /// from the log once the key is gone. The contact is archived with it.
    fn erase_contact(&mut self, e: &domain::ContactErased, at: &EventRef) {
        if let Some(contact) = self.contacts.get_mut(&e.contact_id) {
            let fields = &mut contact.fields;
            fields.name = domain::erased_name();
            (fields.email, fields.phone, fields.title) = (None, None, None);
            fields.custom.clear();
            contact.meta.archived = true;
            contact.meta.erased = Some(Erasure {
                at: at.clone(),
                reason: e.reason.to_string(),
            });
            contact.meta.changed(at, false);
        }
        let mut erased = BTreeSet::new();
        for interaction in self.interactions.values_mut() {
            if interaction.logged.contact_id == Some(e.contact_id) {
                interaction.logged.summary = domain::erased_text();
                erased.insert(interaction.id);
            }
        }
        for account in self.accounts.values_mut() {
            if let Some(last) = account
                .last_interaction
                .as_mut()
                .filter(|last| erased.contains(&last.id))
            {
                last.summary = domain::ERASED.to_owned();
            }
        }
    }

    /// Deal events: fields, stage and the event that entered it, closing.
    fn apply_deal(&mut self, event: &Event, at: &EventRef) {
        let Some(deal) = self.deals.get_mut(&event.record().1) else {
            if let Event::DealCreated(e) = event {
                self.deals.insert(
                    e.deal_id,
                    DealView {
                        id: e.deal_id,
                        fields: e.fields.clone(),
                        stage: e.stage.clone(),
                        status: DealStatus::Open,
                        stage_entered: at.clone(),
                        last_activity: at.clone(),
                        closed: None,
                        slipped: None,
                        meta: RecordMeta::created(at),
                    },
                );
            }
            return;
        };
        let resets = match event {
            Event::DealUpdated(e) => {
                let resets = change_resets(deal_upkeep_only(&e.changes), deal.fields.owner_id, &at.actor);
                let slips = match (deal.fields.expected_close, e.changes.expected_close) {
                    (Some(before), Some(Some(after))) => deal.status == DealStatus::Open && after > before,
                    _ => false,
                };
                if slips && deal.slipped.as_ref().is_none_or(|s| at.occurred_at >= s.occurred_at) {
                    deal.slipped = Some(at.clone());
                }
                e.changes.apply_to(&mut deal.fields);
                resets
            }
            Event::DealStageChanged(e) => {
                deal.stage = e.to.clone();
                deal.stage_entered = at.clone();
                deal.active(at);
                true
            }
            Event::DealClosed(e) => {
                deal.status = match e.outcome {
                    DealOutcome::Won => DealStatus::Won,
                    DealOutcome::Lost => DealStatus::Lost,
                };
                deal.closed = Some(DealClosing {
                    outcome: e.outcome,
                    reason: e.reason.as_ref().map(|r| r.to_string()),
                    at: at.clone(),
                });
                true
            }
            Event::DealArchived(_) => {
                deal.meta.archived = true;
                false
            }
            // A second creation of the same id, or another kind's event.
            _ => return,
        };
        deal.meta.changed(at, resets);
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
            contact.meta.interacted(at, logged.kind);
        }
        if let Some(deal) = logged.deal_id.and_then(|id| self.deals.get_mut(&id)) {
            deal.meta.interacted(at, logged.kind);
            if customer_facing(logged.kind) {
                deal.active(at);
            }
        }
        let department = self.user(&at.actor).map(|u| u.department.clone());
        if let Some(account) = account_id.and_then(|id| self.accounts.get_mut(&id)) {
            account.meta.interacted(at, logged.kind);
            if customer_facing(logged.kind) {
                account.contacted(logged, at, department);
            }
        }
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
            Event::InteractionLogged(e) => {
                keys.contacts.extend(e.contact_id);
                keys.deals.extend(e.deal_id);
                keys.accounts.extend(e.account_id);
                keys.via.extend(e.contact_id.into_iter().chain(e.deal_id));
            }
            // What they link is kept for an interaction later in the
            // batch. Those that may move a stake (a customer, an open deal)
            // from one account to another, or make or end one, reach the
            // account the record had and the one it gets.
            Event::ContactCreated(e) => {
                keys.link(id, e.fields.account_id);
                if e.fields.lifecycle_stage == Some(LifecycleStage::Customer) {
                    keys.via.insert(id);
                }
            }
            Event::ContactUpdated(e) => {
                keys.link(id, e.changes.account_id.flatten());
                if e.changes.account_id.is_some() || e.changes.lifecycle_stage.is_some() {
                    keys.via.insert(id);
                }
            }
            Event::DealCreated(e) => {
                keys.link(id, Some(e.fields.account_id));
                keys.via.insert(id);
            }
            Event::DealUpdated(e) => {
                keys.link(id, e.changes.account_id);
                if e.changes.account_id.is_some() {
                    keys.via.insert(id);
                }
            }
            Event::ContactArchived(_) | Event::DealClosed(_) | Event::DealArchived(_) => {
                keys.via.insert(id);
            }
            Event::ContactErased(_) => {
                keys.via.insert(id);
                keys.interactions_of.insert(id);
            }
            // Events that change no record but their own.
            Event::UserRegistered(_)
            | Event::UserErased(_)
            | Event::AccountCreated(_)
            | Event::AccountUpdated(_)
            | Event::AccountArchived(_)
            | Event::DealStageChanged(_)
            | Event::ActivityImported(_) => {}
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
