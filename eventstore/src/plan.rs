//! Deciding a group commit without touching the database: given the log's
//! tail, the current versions of the streams involved and the idempotency
//! keys already stored, which requests succeed, which conflict or are
//! retries, and which rows to insert. Both backends load the same context,
//! call `plan`, and insert what it says, inside one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::hash::{GENESIS_HASH, event_hash};
use crate::model::to_stored_precision;
use crate::seal::{Keyring, SubjectKey};
use crate::{AppendRequest, AppendResult, Claim, RecordedEvent, Sealed, StoreError};

/// The last event of the log, or the genesis values for an empty log.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    pub position: u64,
    pub hash: String,
    pub recorded_at: Option<DateTime<Utc>>,
}

impl Tail {
    pub fn empty() -> Self {
        Self {
            position: 0,
            hash: GENESIS_HASH.to_owned(),
            recorded_at: None,
        }
    }
}

/// What one stored idempotency key points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredKey {
    pub key: String,
    pub stream_id: String,
    pub first_position: u64,
    pub last_position: u64,
    pub stream_version: u64,
    pub request_hash: Option<String>,
}

impl StoredKey {
    pub fn result(&self, deduplicated: bool) -> AppendResult {
        AppendResult {
            stream_id: self.stream_id.clone(),
            first_position: self.first_position,
            last_position: self.last_position,
            stream_version: self.stream_version,
            deduplicated,
            request_hash: self.request_hash.clone(),
        }
    }
}

#[derive(Default)]
pub(crate) struct BatchContext {
    pub stream_versions: HashMap<String, u64>,
    pub keys: HashMap<String, StoredKey>,
    /// The holders of the claimed values the batch names that are held.
    pub claims: HashMap<String, String>,
    /// The keys of the data subjects the batch names that have a row in
    /// `subject_keys`: `None` for one erased.
    pub subjects: HashMap<uuid::Uuid, Option<SubjectKey>>,
}

impl std::fmt::Debug for BatchContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchContext")
            .field("stream_versions", &self.stream_versions)
            .field("keys", &self.keys)
            .field("claims", &self.claims)
            .field("subjects", &self.subjects.len())
            .finish()
    }
}

/// What a batch touches, each once: to load before planning it.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub streams: Vec<String>,
    pub keys: Vec<String>,
    /// Values the batch takes or gives up.
    pub claims: Vec<String>,
    /// Data subjects whose personal parts the batch seals or whose keys it destroys.
    pub subjects: Vec<uuid::Uuid>,
    /// Of those, the ones whose personal parts it seals.
    pub sealing: BTreeSet<uuid::Uuid>,
}

pub(crate) fn touched(requests: &[AppendRequest]) -> Touched {
    let streams: BTreeSet<&String> = requests.iter().map(|r| &r.stream_id).collect();
    let keys: BTreeSet<&String> = requests.iter().filter_map(|r| r.idempotency_key.as_ref()).collect();
    let claims: BTreeSet<&String> = requests
        .iter()
        .flat_map(|r| &r.claims)
        .map(|(Claim::Take(value) | Claim::Release(value))| value)
        .collect();
    let sealing: BTreeSet<uuid::Uuid> = requests
        .iter()
        .flat_map(|r| r.events.iter().filter_map(|e| e.personal.as_ref()).map(|p| p.subject))
        .collect();
    let subjects: BTreeSet<uuid::Uuid> = requests
        .iter()
        .flat_map(|r| r.erase.iter().copied())
        .chain(sealing.iter().copied())
        .collect();
    Touched {
        streams: streams.into_iter().cloned().collect(),
        keys: keys.into_iter().cloned().collect(),
        claims: claims.into_iter().cloned().collect(),
        subjects: subjects.into_iter().collect(),
        sealing,
    }
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub events: Vec<RecordedEvent>,
    pub keys: Vec<StoredKey>,
    /// Claimed values whose holder the batch changes: the new holder, or
    /// `None` where the value is given up.
    pub claims: BTreeMap<String, Option<String>>,
    /// Keys made for subjects first named by the batch: their stored forms.
    pub new_subjects: Vec<(uuid::Uuid, crate::seal::StoredKey)>,
    /// Subjects whose keys the batch destroys.
    pub erased: BTreeSet<uuid::Uuid>,
    /// Every subject the batch named, with its key once the batch has
    /// committed (`None`: erased): for the appender's `KeyCache`.
    pub subjects: HashMap<uuid::Uuid, Option<SubjectKey>>,
    /// One outcome per request, in request order.
    pub outcomes: Vec<Result<AppendResult, StoreError>>,
}

pub(crate) fn plan(
    mut tail: Tail,
    mut context: BatchContext,
    requests: &[AppendRequest],
    now: DateTime<Utc>,
    keyring: &Keyring,
) -> Plan {
    // recorded_at never decreases along the log, even if the clock steps back.
    let recorded_at = to_stored_precision(tail.recorded_at.map_or(now, |last| last.max(now)));
    let mut plan = Plan {
        events: Vec::new(),
        keys: Vec::new(),
        claims: BTreeMap::new(),
        new_subjects: Vec::new(),
        erased: BTreeSet::new(),
        subjects: HashMap::new(),
        outcomes: Vec::with_capacity(requests.len()),
    };
    for request in requests {
        let outcome = plan_one(&mut tail, &mut context, &mut plan, request, recorded_at, keyring);
        plan.outcomes.push(outcome);
    }
    plan.subjects = context.subjects;
    plan
}

fn plan_one(
    tail: &mut Tail,
    context: &mut BatchContext,
    plan: &mut Plan,
    request: &AppendRequest,
    recorded_at: DateTime<Utc>,
    keyring: &Keyring,
) -> Result<AppendResult, StoreError> {
    if let Some(key) = &request.idempotency_key
        && let Some(stored) = context.keys.get(key)
    {
        let other_request = match (&stored.request_hash, &request.request_hash) {
            (Some(first), Some(this)) => first != this,
            _ => false,
        };
        if stored.stream_id != request.stream_id || other_request {
            return Err(StoreError::IdempotencyKeyReused { key: key.clone() });
        }
        return Ok(stored.result(true));
    }
    let current = context.stream_versions.get(&request.stream_id).copied().unwrap_or(0);
    if !request.expected.admits(current) {
        return Err(StoreError::Conflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected,
            actual: Some(current),
        });
    }
    for claim in &request.claims {
        if let Claim::Take(value) = claim
            && let Some(holder) = context.claims.get(value)
            && *holder != request.stream_id
        {
            return Err(StoreError::Claimed {
                claim: value.clone(),
                holder: holder.clone(),
            });
        }
    }
    for claim in &request.claims {
        match claim {
            Claim::Take(value) if context.claims.get(value) != Some(&request.stream_id) => {
                context.claims.insert(value.clone(), request.stream_id.clone());
                plan.claims.insert(value.clone(), Some(request.stream_id.clone()));
            }
            Claim::Release(value) if context.claims.get(value) == Some(&request.stream_id) => {
                context.claims.remove(value);
                plan.claims.insert(value.clone(), None);
            }
            Claim::Take(_) | Claim::Release(_) => {}
        }
    }
    let first_position = tail.position + 1;
    for (offset, new) in request.events.iter().enumerate() {
        let mut event = RecordedEvent {
            position: tail.position + 1,
            stream_id: request.stream_id.clone(),
            version: current + 1 + offset as u64,
            event_type: new.event_type.clone(),
            schema_version: new.schema_version,
            data: new.data.clone(),
            actor: request.actor.clone(),
            occurred_at: to_stored_precision(new.occurred_at),
            recorded_at,
            correlation_id: request.correlation_id,
            causation_id: request.causation_id,
            hash: String::new(),
            sealed: new
                .personal
                .as_ref()
                .map(|personal| seal(context, plan, keyring, personal)),
        };
        event.hash = event_hash(&tail.hash, &event);
        *tail = Tail {
            position: event.position,
            hash: event.hash.clone(),
            recorded_at: Some(recorded_at),
        };
        plan.events.push(event);
    }
    for &subject in &request.erase {
        context.subjects.insert(subject, None);
        plan.erased.insert(subject);
    }
    let stream_version = current + request.events.len() as u64;
    context
        .stream_versions
        .insert(request.stream_id.clone(), stream_version);
    let stored = StoredKey {
        key: request.idempotency_key.clone().unwrap_or_default(),
        stream_id: request.stream_id.clone(),
        first_position,
        last_position: tail.position,
        stream_version,
        request_hash: request.request_hash.clone(),
    };
    if let Some(key) = &request.idempotency_key {
        context.keys.insert(key.clone(), stored.clone());
        plan.keys.push(stored.clone());
    }
    Ok(stored.result(false))
}

/// `personal` sealed with its subject's key: the one stored, a new one for
/// a subject the log has not named before, or one nobody keeps for a
/// subject erased.
fn seal(context: &mut BatchContext, plan: &mut Plan, keyring: &Keyring, personal: &crate::Personal) -> Sealed {
    let subject = personal.subject;
    let key = context.subjects.entry(subject).or_insert_with(|| {
        let (key, stored) = keyring.generate(subject);
        plan.new_subjects.push((subject, stored));
        Some(key)
    });
    let (stored, opened) = match key {
        Some(key) => (keyring.seal(key, subject, &personal.data), Some(personal.data.clone())),
        None => (keyring.seal_for_nobody(subject, &personal.data), None),
    };
    Sealed {
        subject,
        stored,
        opened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, NewEvent};

    fn request(stream: &str, expected: ExpectedVersion, n: usize, key: Option<&str>) -> AppendRequest {
        AppendRequest {
            stream_id: stream.into(),
            expected,
            events: (0..n)
                .map(|i| NewEvent {
                    event_type: "E".into(),
                    schema_version: 1,
                    data: format!("{{\"i\":{i}}}"),
                    occurred_at: Utc::now(),
                    personal: None,
                })
                .collect(),
            actor: "system".into(),
            correlation_id: None,
            causation_id: None,
            idempotency_key: key.map(str::to_owned),
            request_hash: None,
            claims: Vec::new(),
            erase: Vec::new(),
        }
    }

    #[test]
    fn a_batch_assigns_consecutive_positions_and_chains_hashes_across_requests() {
        let requests = [
            request("a", ExpectedVersion::NoStream, 2, None),
            request("b", ExpectedVersion::Any, 1, None),
            request("a", ExpectedVersion::Exact(2), 1, None),
        ];
        let plan = plan(
            Tail::empty(),
            BatchContext::default(),
            &requests,
            Utc::now(),
            &Keyring::default(),
        );
        let positions: Vec<u64> = plan.events.iter().map(|e| e.position).collect();
        assert_eq!(positions, [1, 2, 3, 4]);
        let versions: Vec<(&str, u64)> = plan.events.iter().map(|e| (e.stream_id.as_str(), e.version)).collect();
        assert_eq!(versions, [("a", 1), ("a", 2), ("b", 1), ("a", 3)]);
        let mut previous = GENESIS_HASH.to_owned();
        for event in &plan.events {
            assert_eq!(event.hash, event_hash(&previous, event));
            previous = event.hash.clone();
        }
    }

    #[test]
    fn a_conflict_fails_only_its_own_request() {
        let requests = [
            request("a", ExpectedVersion::NoStream, 1, None),
            request("a", ExpectedVersion::NoStream, 1, None),
            request("b", ExpectedVersion::NoStream, 1, None),
        ];
        let plan = plan(
            Tail::empty(),
            BatchContext::default(),
            &requests,
            Utc::now(),
            &Keyring::default(),
        );
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Err(StoreError::Conflict { actual: Some(1), .. })
        ));
        assert_eq!(plan.outcomes[2].as_ref().map(|r| r.first_position).ok(), Some(2));
        assert_eq!(plan.events.len(), 2);
    }

    #[test]
    fn a_repeated_key_in_one_batch_is_answered_from_the_first() {
        let requests = [
            request("a", ExpectedVersion::Any, 1, Some("k")),
            request("a", ExpectedVersion::Any, 1, Some("k")),
            request("b", ExpectedVersion::Any, 1, Some("k")),
        ];
        let plan = plan(
            Tail::empty(),
            BatchContext::default(),
            &requests,
            Utc::now(),
            &Keyring::default(),
        );
        assert_eq!(plan.events.len(), 1);
        let second = plan.outcomes[1].as_ref().expect("a retry succeeds");
        assert!(second.deduplicated);
        assert_eq!(second.first_position, 1);
        assert!(matches!(plan.outcomes[2], Err(StoreError::IdempotencyKeyReused { .. })));
    }

    #[test]
    fn recorded_at_never_goes_back_in_time() {
        let later = Utc::now() + chrono::Duration::hours(1);
        let tail = Tail {
            position: 7,
            hash: GENESIS_HASH.into(),
            recorded_at: Some(later),
        };
        let plan = plan(
            tail,
            BatchContext::default(),
            &[request("a", ExpectedVersion::Any, 1, None)],
            Utc::now(),
            &Keyring::default(),
        );
        assert_eq!(plan.events[0].recorded_at, to_stored_precision(later));
        assert_eq!(plan.events[0].position, 8);
    }

    fn claiming(stream: &str, claims: Vec<Claim>) -> AppendRequest {
        AppendRequest {
            claims,
            ..request(stream, ExpectedVersion::Any, 1, None)
        }
    }

    #[test]
    fn a_value_one_stream_holds_is_refused_to_another_until_given_up_even_within_a_batch() {
        let take = |v: &str| Claim::Take(v.into());
        let release = |v: &str| Claim::Release(v.into());
        let context = BatchContext {
            claims: HashMap::from([("held".to_owned(), "old".to_owned())]),
            ..BatchContext::default()
        };
        let requests = [
            claiming("a", vec![take("x")]),
            claiming("b", vec![take("x")]),
            claiming("a", vec![take("x")]),
            claiming("b", vec![take("held")]),
            claiming("c", vec![release("held")]),
            claiming("old", vec![release("held")]),
            claiming("b", vec![take("held"), release("never-held")]),
        ];
        let plan = plan(Tail::empty(), context, &requests, Utc::now(), &Keyring::default());
        let refused: Vec<usize> = (0..requests.len()).filter(|&i| plan.outcomes[i].is_err()).collect();
        assert_eq!(refused, [1, 3]);
        assert!(
            matches!(&plan.outcomes[1], Err(StoreError::Claimed { claim, holder }) if claim == "x" && holder == "a")
        );
        assert!(matches!(&plan.outcomes[3], Err(StoreError::Claimed { holder, .. }) if holder == "old"));
        // A refused request appends nothing; one giving up a value it does not hold changes no holder.
        assert_eq!(plan.events.len(), 5);
        let expected = BTreeMap::from([
            ("held".to_owned(), Some("b".to_owned())),
            ("x".to_owned(), Some("a".to_owned())),
        ]);
        assert_eq!(plan.claims, expected);
    }

    fn personal(stream: &str, subject: uuid::Uuid, erase: Vec<uuid::Uuid>) -> AppendRequest {
        let mut request = request(stream, ExpectedVersion::Any, 1, None);
        request.events[0].personal = Some(crate::Personal {
            subject,
            data: format!("{{\"name\":\"{stream}\"}}"),
        });
        request.erase = erase;
        request
    }

    #[test]
    fn a_subject_gets_one_key_and_an_erased_one_none_even_within_a_batch() {
        let (known, new, gone) = (
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            uuid::Uuid::from_u128(3),
        );
        let keyring = Keyring::default();
        let (key, _) = keyring.generate(known);
        let context = BatchContext {
            subjects: HashMap::from([(known, Some(key)), (gone, None)]),
            ..BatchContext::default()
        };
        let requests = [
            personal("a", known, vec![]),
            personal("b", new, vec![]),
            personal("c", new, vec![]),
            personal("d", gone, vec![]),
            // Erases `new` after sealing its own event; `e` comes after.
            personal("x", new, vec![new]),
            personal("e", new, vec![]),
        ];
        let touched = touched(&requests);
        assert_eq!(touched.subjects, [known, new, gone]);
        let plan = plan(Tail::empty(), context, &requests, Utc::now(), &keyring);
        assert_eq!(plan.new_subjects.len(), 1, "one key for the new subject, made once");
        assert_eq!(plan.new_subjects[0].0, new);
        assert_eq!(plan.erased, BTreeSet::from([new]));
        let opened: Vec<Option<&str>> = plan
            .events
            .iter()
            .map(|e| e.sealed.as_ref().and_then(|s| s.opened.as_deref()))
            .collect();
        assert_eq!(
            opened,
            [
                Some("{\"name\":\"a\"}"),
                Some("{\"name\":\"b\"}"),
                Some("{\"name\":\"c\"}"),
                None,
                Some("{\"name\":\"x\"}"),
                None
            ]
        );
        for event in &plan.events {
            let sealed = event.sealed.as_ref().map(|s| s.stored.as_slice()).unwrap_or_default();
            assert!(!sealed.windows(6).any(|w| w == b"\"name\""), "stored sealed");
        }
    }
}
