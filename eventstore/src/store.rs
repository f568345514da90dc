//! `Store`: the event log as the rest of the system sees it. It checks every
//! append against the limits, hands it to the group-commit writer, and reads
//! through the backend chosen by the database URL.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::{Mutex, oneshot, watch};
use uuid::Uuid;

use crate::backend::{Backend, Tokens};
use crate::hash::{GENESIS_HASH, event_hash};
use crate::hook::{CommitHook, HookSlot};
use crate::model::{
    APPEND_CLAIMS_MAX, APPEND_EVENTS_MAX, CLAIM_BYTES_MAX, EVENT_DATA_BYTES_MAX, IDENTIFIER_BYTES_MAX, READ_BATCH_MAX,
};
use crate::writer::{self, Pending};
use crate::{
    AppendRequest, AppendResult, Claim, LogFilter, RecordedEvent, Snapshot, StoreError, TokenRecord, VerifyReport,
};

/// Events `verify` reads at a time: small enough that walking a large log
/// leaves no lasting mark on the process's memory.
const VERIFY_BATCH_EVENTS: usize = 1_000;

/// How to open a store, beyond its URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL only: the schema that holds the log (created if missing).
    /// `None` uses the connection's default search path.
    pub schema: Option<String>,
    /// Connections kept for reads, besides the writer's own.
    pub read_connections_max: u32,
    /// The longest anything waits for a database connection (a pool's free
    /// connection, or a new one to an unreachable server) before failing as
    /// unavailable: what bounds a request's wait during an outage.
    pub connect_wait: Duration,
    /// Wraps every data subject's key where `subject_keys` stores it
    /// (`seal`); without one the keys are stored as they are.
    pub master_key: Option<crate::MasterKey>,
}

/// `StoreOptions::connect_wait` unless configured.
pub const CONNECT_WAIT_DEFAULT: Duration = Duration::from_secs(5);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            schema: None,
            read_connections_max: 8,
            connect_wait: CONNECT_WAIT_DEFAULT,
            master_key: None,
        }
    }
}

/// A handle to the log; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    writer: Mutex<Option<tokio::sync::mpsc::Sender<Pending>>>,
    writer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    head: watch::Receiver<u64>,
    hook: HookSlot,
    url: String,
    schema: Option<String>,
    connect_wait: Duration,
    writes: std::sync::Mutex<WriteHealth>,
    /// Hears of other processes' appends, to wake waiters at once.
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

/// How the store's last commits went, for readiness checks: whether the
/// database took the last append, and the last failure and when it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteHealth {
    /// When an append last committed.
    pub last_ok: Option<DateTime<Utc>>,
    /// When an append last failed for the database's sake (not a conflict
    /// or a refused request), and why.
    pub last_error: Option<(DateTime<Utc>, String)>,
}

impl WriteHealth {
    /// Whether the last append that reached the database failed.
    pub fn failing(&self) -> bool {
        match (&self.last_error, self.last_ok) {
            (Some((failed, _)), Some(ok)) => *failed > ok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the log at `url`: `sqlite://path` or
    /// `postgres://...`, and brings its schema up to date.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let backend: Arc<dyn Backend> = if url.starts_with("sqlite:") {
            Arc::new(crate::sqlite::SqliteBackend::open(url, options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(crate::postgres::PostgresBackend::open(url, options).await?)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://...",
                redact(url)
            )));
        };
        Self::with_backend(backend, url, options).await
    }

    async fn with_backend(backend: Arc<dyn Backend>, url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let head_position = backend.head().await?;
        let (head_sender, head) = watch::channel(head_position);
        let head_sender = Arc::new(head_sender);
        let hook = HookSlot::default();
        let (sender, task) = writer::spawn(backend.clone(), Arc::clone(&head_sender), hook.clone());
        let follower = backend
            .follow_appends(Box::new(move |last| writer::advance(&head_sender, last)))
            .map(tokio::spawn);
        let inner = Inner {
            backend,
            writer: Mutex::new(Some(sender)),
            writer_task: Mutex::new(Some(task)),
            head,
            hook,
            url: url.to_owned(),
            schema: options.schema.clone(),
            connect_wait: options.connect_wait,
            writes: std::sync::Mutex::default(),
            follower,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The database URL the log was opened at. Read models live in the same
    /// database, so they open their own connections to it.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Sets the work the writer runs inside every append transaction from
    /// now on (see `CommitHook`), replacing any earlier one.
    pub fn set_commit_hook(&self, hook: Arc<dyn CommitHook>) {
        let mut slot = self.inner.hook.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(hook);
    }

    /// The longest a caller waits for a database connection (see
    /// `StoreOptions::connect_wait`); the read models' pools use it too.
    pub fn connect_wait(&self) -> Duration {
        self.inner.connect_wait
    }

    /// PostgreSQL only: the schema that holds the log, if one was named.
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// Appends a batch of events to one stream, atomically, once its
    /// transaction has committed.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        validate(&request)?;
        let (reply, answer) = oneshot::channel();
        let sender = self.inner.writer.lock().await.clone().ok_or(StoreError::Closed)?;
        sender
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        let result = answer.await.map_err(|_| StoreError::Closed)?;
        self.note(&result);
        result
    }

    /// Notes how an append went, for `write_health`.
    fn note(&self, result: &Result<AppendResult, StoreError>) {
        let failure = match result {
            Ok(_) => None,
            Err(error @ (StoreError::Database(_) | StoreError::Sqlite(_) | StoreError::Internal(_))) => {
                Some(error.to_string())
            }
            // Conflicts and refused requests say nothing of the database.
            Err(_) => return,
        };
        let mut writes = self
            .inner
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match failure {
            None => writes.last_ok = Some(Utc::now()),
            Some(reason) => writes.last_error = Some((Utc::now(), reason)),
        }
    }

    /// How the last appends went.
    pub fn write_health(&self) -> WriteHealth {
        self.inner
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Appends many requests in exactly the order given, sharing group
    /// commits: every request is queued before any answer is awaited. Each
    /// request still succeeds or fails on its own. For bulk loads from one
    /// producer (the demo, migrations from other systems).
    pub async fn append_all(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        let sender = self.inner.writer.lock().await.clone().ok_or(StoreError::Closed)?;
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let (reply, answer) = oneshot::channel();
            match validate(&request) {
                Ok(()) => sender
                    .send(Pending { request, reply })
                    .await
                    .map_err(|_| StoreError::Closed)?,
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
            answers.push(answer);
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            let result = answer.await.map_err(|_| StoreError::Closed)?;
            self.note(&result);
            results.push(result);
        }
        Ok(results)
    }

    /// A stream's events from `from_version` (1-based) on, oldest first.
    pub async fn read_stream(&self, stream_id: &str, from_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.backend.read_stream(stream_id, from_version.max(1)).await
    }

    /// Up to `limit` (at most `READ_BATCH_MAX`) events after position `after`.
    /// Positions are gapless and commit-ordered, so paging by the last
    /// position seen never skips an event, however many writers there are.
    pub async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.backend.read_all(after, limit.clamp(1, READ_BATCH_MAX)).await
    }

    /// A blocking reader for long runs of the log (`Backend::bulk_reader`),
    /// where the backend has one.
    pub fn bulk_reader(&self) -> Result<Option<crate::BulkReader>, StoreError> {
        self.inner.backend.bulk_reader()
    }

    /// Up to `limit` events after position `after` that match `filter`.
    pub async fn read_filtered(
        &self,
        filter: &LogFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .backend
            .read_filtered(filter, after, limit.clamp(1, READ_BATCH_MAX))
            .await
    }

    /// Saves a read model's state with the position it reflects, atomically.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.backend.save_snapshot(snapshot).await
    }

    pub async fn load_snapshot(&self, name: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.backend.load_snapshot(name).await
    }

    /// Stores a new API token (its public id and secret hash only).
    pub async fn save_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.inner.backend.save_token(token).await
    }

    /// Revokes a token: it authenticates nobody from now on. False if no
    /// unrevoked token has this id.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool, StoreError> {
        let revoked = self
            .inner
            .backend
            .revoke_tokens(Tokens::Id(token_id), crate::to_stored_precision(chrono::Utc::now()))
            .await?;
        Ok(revoked == 1)
    }

    /// Revokes every token of a user; how many were still valid.
    pub async fn revoke_tokens_of(&self, user_id: Uuid) -> Result<u64, StoreError> {
        self.inner
            .backend
            .revoke_tokens(
                Tokens::OfUser(&user_id.to_string()),
                crate::to_stored_precision(chrono::Utc::now()),
            )
            .await
    }

    /// The token with this public id, if any.
    pub async fn find_token(&self, token_id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.backend.find_token(token_id).await
    }

    /// The position of the last committed event, 0 for an empty log.
    pub async fn head(&self) -> Result<u64, StoreError> {
        self.inner.backend.head().await
    }

    /// Waits until the log holds an event after `after`, or `timeout` has
    /// passed, and returns the head position. Appends through this store wake
    /// waiters at once, and so do other processes' (PostgreSQL: their commits
    /// notify; SQLite: within 50 ms, see `follow_appends`); should the feed
    /// of those fail, the head is read again when `timeout` passes.
    pub async fn wait_for(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        let mut head = self.inner.head.clone();
        let seen = *head.borrow_and_update();
        if seen > after {
            return Ok(seen);
        }
        let _ = tokio::time::timeout(timeout, head.wait_for(|position| *position > after)).await;
        let local = *head.borrow();
        if local > after {
            return Ok(local);
        }
        self.head().await
    }

    /// The result of the append that stored this idempotency key, if any.
    pub async fn find_idempotent(&self, key: &str) -> Result<Option<AppendResult>, StoreError> {
        self.inner.backend.find_idempotent(key).await
    }

    /// The stream that holds `claim` (see `Claim`), if any.
    pub async fn claim_holder(&self, claim: &str) -> Result<Option<String>, StoreError> {
        self.inner.backend.claim_holder(claim).await
    }

    /// Whether the log predates claims and its owner has yet to fill them in.
    /// The first position whose personal fields are sealed (see `Backend::sealed_from`).
    pub async fn sealed_from(&self) -> Result<u64, StoreError> {
        self.inner.backend.sealed_from().await
    }

    pub async fn claims_unfilled(&self) -> Result<bool, StoreError> {
        self.inner.backend.claims_unfilled().await
    }

    /// Fills in the claims of a log that predates them: `claims` are
    /// (value, holding stream) as folded from the log up to `head`. Returns
    /// false, writing nothing, if the log has moved past `head` meanwhile;
    /// fold the new events and call again.
    pub async fn fill_claims(&self, claims: &[(String, String)], head: u64) -> Result<bool, StoreError> {
        self.inner.backend.fill_claims(claims, head).await
    }

    /// Walks the whole log, recomputing the hash chain, and names the first
    /// position whose event was altered, removed or reordered.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut previous_hash = GENESIS_HASH.to_owned();
        let mut expected_position = 1;
        // A row that cannot be read as stored (a sealed part that no
        // longer opens with its key, say) was altered too. An event before
        // it in the same read may be the first bad one, so from there the
        // log is read one event at a time up to the row that fails.
        let mut one_by_one = false;
        loop {
            let size = if one_by_one { 1 } else { VERIFY_BATCH_EVENTS };
            let batch = match self.read_all(expected_position - 1, size).await {
                Err(StoreError::Corrupt { position, .. }) if one_by_one => {
                    return Ok(VerifyReport {
                        ok: false,
                        events: expected_position - 1,
                        // A gap before the row that fails comes first.
                        first_bad_position: Some(expected_position.min(position)),
                        head_hash: previous_hash,
                    });
                }
                Err(StoreError::Corrupt { .. }) => {
                    one_by_one = true;
                    continue;
                }
                read => read?,
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                break;
            };
            for event in &batch {
                if event.position != expected_position || event_hash(&previous_hash, event) != event.hash {
                    return Ok(VerifyReport {
                        ok: false,
                        events: expected_position - 1,
                        first_bad_position: Some(expected_position.min(event.position)),
                        head_hash: previous_hash,
                    });
                }
                previous_hash.clone_from(&event.hash);
                expected_position += 1;
            }
            debug_assert_eq!(last + 1, expected_position);
        }
        Ok(VerifyReport {
            ok: true,
            events: expected_position - 1,
            first_bad_position: None,
            head_hash: previous_hash,
        })
    }

    /// Stops taking appends, lets the writer finish what it has queued (each
    /// waiting caller gets its answer), and closes the connections.
    pub async fn close(&self) {
        self.inner.writer.lock().await.take();
        if let Some(task) = self.inner.writer_task.lock().await.take() {
            let _ = task.await;
        }
        if let Some(follower) = &self.inner.follower {
            follower.abort();
        }
        self.inner.backend.close().await;
    }
}

fn validate(request: &AppendRequest) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::InvalidAppend(message));
    if request.events.is_empty() || request.events.len() > APPEND_EVENTS_MAX {
        return invalid(format!(
            "an append carries 1 to {APPEND_EVENTS_MAX} events, not {}",
            request.events.len()
        ));
    }
    for (name, value) in [
        ("stream id", Some(&request.stream_id)),
        ("actor", Some(&request.actor)),
        ("idempotency key", request.idempotency_key.as_ref()),
    ] {
        if let Some(value) = value
            && (value.is_empty() || value.len() > IDENTIFIER_BYTES_MAX)
        {
            return invalid(format!("the {name} must be 1 to {IDENTIFIER_BYTES_MAX} bytes"));
        }
    }
    if request.claims.len() > APPEND_CLAIMS_MAX {
        return invalid(format!(
            "an append takes or gives up at most {APPEND_CLAIMS_MAX} claims"
        ));
    }
    for claim in &request.claims {
        let (Claim::Take(value) | Claim::Release(value)) = claim;
        if value.is_empty() || value.len() > CLAIM_BYTES_MAX {
            return invalid(format!("a claimed value must be 1 to {CLAIM_BYTES_MAX} bytes"));
        }
    }
    for event in &request.events {
        if event.event_type.is_empty() || event.event_type.len() > IDENTIFIER_BYTES_MAX {
            return invalid(format!("an event type must be 1 to {IDENTIFIER_BYTES_MAX} bytes"));
        }
        let personal = event.personal.as_ref().map(|p| p.data.as_str());
        let bytes = event.data.len() + personal.map_or(0, str::len);
        if bytes > EVENT_DATA_BYTES_MAX {
            return invalid(format!(
                "event data is {bytes} bytes; the limit is {EVENT_DATA_BYTES_MAX}"
            ));
        }
        for part in std::iter::once(event.data.as_str()).chain(personal) {
            if serde_json::from_str::<serde::de::IgnoredAny>(part).is_err() {
                return invalid(format!("the data of a {} event is not JSON", event.event_type));
            }
        }
        // Years outside 1..=9999 have no RFC 3339 form and would not sort.
        if !(1..=9999).contains(&chrono::Datelike::year(&event.occurred_at)) {
            return invalid("occurred_at must lie between the years 1 and 9999".into());
        }
    }
    Ok(())
}

/// A database URL with any password replaced, fit for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://crm:s3cret@db:5432/crm"),
            "postgres://crm:***@db:5432/crm"
        );
        assert_eq!(redact("postgres://crm@db/crm"), "postgres://crm@db/crm");
        assert_eq!(redact("sqlite://crm.db"), "sqlite://crm.db");
    }
}
