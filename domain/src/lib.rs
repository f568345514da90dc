//! The business rules of the CRM: records, commands, events, validation, and
//! the pure `decide`/`evolve` functions that turn commands into events and
//! events into state.
//!
//! This crate does no I/O, has no async code, reads no clock and makes no
//! random numbers: ids and times arrive inside commands and event envelopes,
//! so every decision is deterministic and testable.

mod account;
mod activity;
mod aggregate;
mod contact;
mod deal;
mod error;
mod event;
mod fields;
mod input;
mod interaction;
mod kind;
mod patch;
mod personal;
mod user;
pub mod values;

pub use account::{
    Account, AccountArchived, AccountChanges, AccountCommand, AccountCreated, AccountFields, AccountUpdated,
};
pub use activity::ActivityImported;
pub use aggregate::{Aggregate, Rules, external_id_claim};
pub use contact::{
    Contact, ContactArchived, ContactChanges, ContactCommand, ContactCreated, ContactErased, ContactFields,
    ContactUpdated, LifecycleStage,
};
pub use deal::{
    Deal, DealArchived, DealChanges, DealClosed, DealCommand, DealCreated, DealFields, DealOutcome, DealStageChanged,
    DealStatus, DealUpdated, parse_deal_input,
};
pub use error::{DomainError, FieldError, Validator};
pub use event::{DecodeError, EncodedEvent, Event};
pub use input::{DomainName, FromInput, Input, TAG_CHARS_MAX, Tag};
pub use interaction::{Direction, Interaction, InteractionCommand, InteractionKind, InteractionLogged};
pub use kind::RecordKind;
pub use personal::{
    ERASED, ERASURES, PersonalPart, erased_name, erased_text, merge as merge_personal, merged as merged_personal,
};
pub use user::{Role, User, UserCommand, UserErased, UserRegistered};
pub use values::{CallingCode, Pipeline, StageDefinition, StageName};
