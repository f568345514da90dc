//! Interactions: calls, emails, meetings and notes. An interaction is logged
//! once and never changes; it touches every record it names.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{ExternalId, Text};
use crate::{Aggregate, DomainError, Event, FromInput, Input, Rules, Validator};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    Call,
    Email,
    Meeting,
    Note,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

macro_rules! enum_input {
    ($type:ty, $expected:literal) => {
        impl FromInput for $type {
            fn from_input(value: &serde_json::Value) -> Result<Self, String> {
                serde_json::from_value(value.clone()).map_err(|_| concat!("must be one of ", $expected).into())
            }
        }
    };
}
enum_input!(InteractionKind, "call, email, meeting, note");
enum_input!(Direction, "inbound, outbound");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionLogged {
    pub interaction_id: Uuid,
    pub kind: InteractionKind,
    #[serde(default)]
    pub contact_id: Option<Uuid>,
    #[serde(default)]
    pub account_id: Option<Uuid>,
    #[serde(default)]
    pub deal_id: Option<Uuid>,
    pub summary: Text,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub external_id: Option<ExternalId>,
}

impl InteractionLogged {
    /// Fields an interaction's input may carry; `occurred_at` belongs to the
    /// event's envelope and is read by the caller.
    pub const FIELD_NAMES: &'static [&'static str] = &[
        "kind",
        "contact_id",
        "account_id",
        "deal_id",
        "summary",
        "direction",
        "external_id",
        "occurred_at",
    ];

    /// Parses untrusted input into the interaction to log.
    pub fn parse(interaction_id: Uuid, input: &Input) -> Result<Self, DomainError> {
        let mut validator = Validator::default();
        for key in input.keys() {
            if !Self::FIELD_NAMES.contains(&key.as_str()) {
                validator.push(key, "is not a field of an interaction");
            }
        }
        let kind = required::<InteractionKind>(&mut validator, input, "kind");
        let summary = required::<Text>(&mut validator, input, "summary");
        let contact_id = optional::<Uuid>(&mut validator, input, "contact_id");
        let account_id = optional::<Uuid>(&mut validator, input, "account_id");
        let deal_id = optional::<Uuid>(&mut validator, input, "deal_id");
        let direction = optional::<Direction>(&mut validator, input, "direction");
        let external_id = optional::<ExternalId>(&mut validator, input, "external_id");
        if contact_id.is_none() && account_id.is_none() && deal_id.is_none() {
            validator.push("contact_id", "an interaction needs a contact_id, account_id or deal_id");
        }
        validator.finish(|| Self {
            interaction_id,
            kind: kind.expect("checked by the validator"),
            contact_id,
            account_id,
            deal_id,
            summary: summary.expect("checked by the validator"),
            direction,
            external_id,
        })
    }
}

fn required<T: FromInput>(validator: &mut Validator, input: &Input, field: &str) -> Option<T> {
    match input.get(field) {
        None | Some(serde_json::Value::Null) => {
            validator.push(field, "is required");
            None
        }
        Some(value) => validator.check(field, T::from_input(value)),
    }
}

fn optional<T: FromInput>(validator: &mut Validator, input: &Input, field: &str) -> Option<T> {
    match input.get(field) {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => validator.check(field, T::from_input(value)),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InteractionCommand {
    LogInteraction(InteractionLogged),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interaction {
    pub logged: Option<InteractionLogged>,
    pub version: u64,
}

impl Aggregate for Interaction {
    type Command = InteractionCommand;

    fn decide(&self, command: &InteractionCommand, _rules: &Rules) -> Result<Vec<Event>, DomainError> {
        let InteractionCommand::LogInteraction(logged) = command;
        if self.logged.is_some() {
            return Err(DomainError::AlreadyExists { kind: "interaction" });
        }
        if logged.contact_id.is_none() && logged.account_id.is_none() && logged.deal_id.is_none() {
            return Err(DomainError::field(
                "contact_id",
                "an interaction needs a contact_id, account_id or deal_id",
            ));
        }
        Ok(vec![Event::InteractionLogged(logged.clone())])
    }

    fn evolve(&mut self, event: &Event) {
        if let Event::InteractionLogged(logged) = event {
            self.logged = Some(logged.clone());
            self.version += 1;
        }
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn external_id(&self) -> Option<&ExternalId> {
        self.logged.as_ref()?.external_id.as_ref()
    }
}
