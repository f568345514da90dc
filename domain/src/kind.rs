//! The kinds of record, and how a record's id becomes its stream's id.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Contact,
    Account,
    Deal,
    Interaction,
    User,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [Self::Contact, Self::Account, Self::Deal, Self::Interaction, Self::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Account => "account",
            Self::Deal => "deal",
            Self::Interaction => "interaction",
            Self::User => "user",
        }
    }

    /// The stream that holds one record's events: `contact-<uuid>`. The kind
    /// comes first so a stream id says what it is, and time-ordered (v7) ids
    /// keep the store's index appends local.
    pub fn stream_id(self, id: Uuid) -> String {
        format!("{}-{}", self.as_str(), id)
    }

    /// Splits a stream id into its kind and record id.
    pub fn parse_stream_id(stream_id: &str) -> Option<(RecordKind, Uuid)> {
        let (kind, id) = stream_id.split_once('-')?;
        let kind = Self::ALL.into_iter().find(|k| k.as_str() == kind)?;
        Some((kind, Uuid::parse_str(id).ok()?))
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let singular = raw.strip_suffix('s').unwrap_or(raw);
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == singular)
            .ok_or_else(|| format!("unknown record kind {raw:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip() {
        let id = Uuid::now_v7();
        for kind in RecordKind::ALL {
            assert_eq!(RecordKind::parse_stream_id(&kind.stream_id(id)), Some((kind, id)));
        }
        assert_eq!(RecordKind::parse_stream_id("lead-123"), None);
        assert_eq!("contacts".parse(), Ok(RecordKind::Contact));
    }
}
