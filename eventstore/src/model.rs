//! What goes into the log and what comes out of it.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

/// Most events one append may carry.
pub const APPEND_EVENTS_MAX: usize = 1_000;
/// Largest `data` of one event, in bytes.
pub const EVENT_DATA_BYTES_MAX: usize = 1 << 20;
/// Longest stream id, idempotency key, actor or event type, in bytes.
pub const IDENTIFIER_BYTES_MAX: usize = 200;
/// Longest value a `Claim` names, in bytes.
pub const CLAIM_BYTES_MAX: usize = 1_024;
/// Most claims one append takes or gives up.
pub const APPEND_CLAIMS_MAX: usize = 16;
/// Most events one `read_all` call returns.
pub const READ_BATCH_MAX: usize = 10_000;

/// What the writer expects the stream's version to be before this append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet (creating a record).
    NoStream,
    /// The stream must be at exactly this version (its number of events).
    Exact(u64),
}

impl ExpectedVersion {
    pub fn admits(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::Exact(expected) => current == expected,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// One event to append, already encoded by its producer.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    /// A JSON document, stored and hashed byte for byte as given.
    pub data: String,
    /// Business time: when it happened. May lie before the recording.
    pub occurred_at: DateTime<Utc>,
    /// The fields that name a person, kept apart from `data` and stored
    /// sealed with that person's key (see `seal`).
    pub personal: Option<Personal>,
}

/// An event's personal fields and the data subject they belong to.
#[derive(Clone, PartialEq)]
pub struct Personal {
    /// A contact's or user's id: whose key seals the fields.
    pub subject: Uuid,
    /// A JSON document, opened back byte for byte.
    pub data: String,
}

impl std::fmt::Debug for Personal {
    // Never prints the personal data itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Personal")
            .field("subject", &self.subject)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// A batch of events for one stream, appended atomically: all or none.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Who caused these events: an authenticated user's id, or `system`.
    pub actor: String,
    /// Ties together everything one request or job caused.
    pub correlation_id: Option<Uuid>,
    /// The request or event that directly caused this append.
    pub causation_id: Option<Uuid>,
    /// A retry with a key already stored returns the first result and writes nothing.
    pub idempotency_key: Option<String>,
    /// The caller's fingerprint of the request behind `idempotency_key`: a
    /// later append with the same key and another fingerprint is refused as
    /// a reuse of the key.
    pub request_hash: Option<String>,
    /// Values this stream takes or gives up together with the events: a
    /// value another stream holds fails the append (`StoreError::Claimed`).
    pub claims: Vec<Claim>,
    /// Data subjects whose keys this append destroys, in its transaction:
    /// every personal part sealed for them reads as erased from then on,
    /// and one appended for them later is sealed with a key nobody keeps.
    pub erase: Vec<Uuid>,
}

/// A value only one stream may hold at a time, such as an external id
/// among the live records of a kind. Claims are checked and written inside
/// the append's transaction, under the log's single-writer lock, so two
/// appends racing for one value cannot both win, on any number of servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Claim {
    /// Hold the value; fails if another stream holds it, a no-op if this one does.
    Take(String),
    /// Give the value up, if this stream holds it.
    Release(String),
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub stream_id: String,
    pub first_position: u64,
    pub last_position: u64,
    /// The stream's version after the append: its number of events.
    pub stream_version: u64,
    /// True when this was a retry answered from an earlier append.
    pub deduplicated: bool,
    /// The fingerprint the append was made with, if its caller gave one.
    pub request_hash: Option<String>,
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global, gapless, strictly increasing in commit order; starts at 1.
    pub position: u64,
    pub stream_id: String,
    /// 1-based position within its stream.
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub data: String,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    /// System time of the commit; never decreases along the log.
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// SHA-256, hex, over this event and the hash of the event before it.
    pub hash: String,
    /// Its personal part, if it has one.
    pub sealed: Option<crate::Sealed>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    /// How many events were checked.
    pub events: u64,
    /// The first position whose hash or place in the chain is wrong.
    pub first_bad_position: Option<u64>,
    /// The hash of the last good event: record it elsewhere to detect a
    /// rewrite of the whole chain or a cut-off tail later.
    pub head_hash: String,
}

/// A position or version as stored (a signed integer the schema checks positive).
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).expect("positions and versions are checked positive by the schema")
}

/// Timestamps are kept to the microsecond, the precision both databases
/// store, so that what is hashed is exactly what is read back.
pub fn to_stored_precision(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

/// Which events an audit reads: one actor's, within a span of recording time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub actor: Option<String>,
    /// Recorded (written to the log) at or after.
    pub recorded_since: Option<DateTime<Utc>>,
    /// Recorded at or before.
    pub recorded_until: Option<DateTime<Utc>>,
    /// Happened (business time, `occurred_at`) at or after.
    pub occurred_since: Option<DateTime<Utc>>,
    /// Happened at or before.
    pub occurred_until: Option<DateTime<Utc>>,
}

/// A read model's saved state and the last log position folded into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub position: u64,
    pub data: String,
    pub saved_at: DateTime<Utc>,
}

/// A stored API token: its public id, the SHA-256 (hex) of its secret, and
/// the user it acts for. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: String,
    pub secret_sha256: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}
