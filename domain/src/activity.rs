//! Activity a previous system knew of: the last time someone was in touch
//! with the customer about a contact, account or deal, brought over by an
//! import so that a migrated record keeps its place on the stale and
//! rotting clocks instead of looking neglected since the day of the import.
//!
//! It is an event of the record's own stream, recorded with the legacy time
//! as its business time (`occurred_at`), so that an as-of report before that
//! time does not see it. It resets the clocks a call would, and is not an
//! interaction: nothing says which kind of contact it was, so it counts for
//! no department and in no interaction total.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::live;
use crate::{DomainError, Event, RecordKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityImported {
    /// A contact, account or deal.
    pub kind: RecordKind,
    pub record_id: Uuid,
}

/// The event for a live record of `kind`, or why there is none.
pub(crate) fn import<F>(
    kind: RecordKind,
    id: Option<Uuid>,
    fields: &Option<F>,
    archived: bool,
    name: &'static str,
) -> Result<Vec<Event>, DomainError> {
    let (record_id, _) = live(id, fields, archived, name)?;
    Ok(vec![Event::ActivityImported(ActivityImported { kind, record_id })])
}
