//! The shape every record follows: a state folded from its stream's events
//! (`evolve`) and a pure decision that turns a command into new events or a
//! rejection (`decide`). Neither does I/O or reads a clock.

use crate::values::ExternalId;
use crate::{DomainError, Event, Pipeline, RecordKind};

/// Rules that are configuration rather than data, handed to `decide`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub pipeline: Pipeline,
    /// Where a phone number written without a country code is placed
    /// (`PhoneNumber::in_region`); none keeps it as its digits.
    pub phone_region: Option<crate::values::CallingCode>,
}

pub trait Aggregate: Default + Clone + std::fmt::Debug + Send + Sync + 'static {
    type Command;

    /// The events this command causes, or why it is refused. An empty list
    /// means the command changes nothing (a no-op patch).
    fn decide(&self, command: &Self::Command, rules: &Rules) -> Result<Vec<Event>, DomainError>;

    /// The state after `event`. Events come from the log and have already been
    /// accepted: evolve never refuses one. Events of other record kinds are
    /// ignored.
    fn evolve(&mut self, event: &Event);

    /// How many events have been folded into this state.
    fn version(&self) -> u64;

    /// The external id this record holds among the live records of its
    /// kind, where no other may hold it at once: none once archived. Kept in
    /// step with `Event::external_id_effect` (a test folds both).
    fn external_id(&self) -> Option<&ExternalId> {
        None
    }

    /// Folds a stream's events, oldest first, into a state.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.evolve(event);
        }
        state
    }
}

/// The id and fields of a record that exists and is not archived: the state
/// every change to an existing record requires.
pub(crate) fn live<'a, F>(
    id: Option<uuid::Uuid>,
    fields: &'a Option<F>,
    archived: bool,
    kind: &'static str,
) -> Result<(uuid::Uuid, &'a F), DomainError> {
    let (Some(id), Some(fields)) = (id, fields) else {
        return Err(DomainError::NotFound { kind });
    };
    if archived {
        return Err(DomainError::Archived { kind });
    }
    Ok((id, fields))
}

/// The name under which a record holds `external_id` among its kind, for
/// the log's claims: one definition for every writer.
pub fn external_id_claim(kind: RecordKind, external_id: &str) -> String {
    format!("{kind}:external_id:{external_id}")
}
