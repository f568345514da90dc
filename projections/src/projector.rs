//! Keeping the read-model tables current, durable and rebuildable.
//!
//! - Live: `catch_up` folds what the log holds after the tables' position,
//!   a batch at a time; `run` does it whenever new events commit, and
//!   `wait_until` lets a writer wait for its own events (read-your-writes)
//!   without folding anything itself when another task already is.
//! - Checkpoints: a batch's rows and the position they reach commit in one
//!   transaction (`Tables::fold_batch`), and cost what the batch changed,
//!   never the whole model. A restart resumes at that position at once.
//! - Rebuild: fresh tables are folded aside while reads keep using the live
//!   ones, then swapped in with one transaction. Killed halfway, the live
//!   tables keep serving and the next rebuild starts over.
//! - As of: the same fold, over the events that had happened by a date,
//!   into tables of its own in a scratch file, in bounded memory.
//!
//! Every path runs `CrmModel::apply`: the tables hold what it produced, row
//! by row, and a batch loads exactly the rows `CrmModel::add_keys` names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::{Event, RecordKind};
use eventstore::{CommitHook, HookConnection, RecordedEvent, Store};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, watch};
use uuid::Uuid;

use crate::ProjectionError;
use crate::as_of::{AsOfCache, Cut, FoldedAsOf};
use crate::history::decode;
use crate::model::{CrmModel, Keys, MODEL_VERSION};
use crate::schema::{ACCOUNTS, CONTACTS, DEALS, INTERACTIONS, USERS};
use crate::sql::Exec;
use crate::tables::{
    AsideRows, AsideWriter, Flush, Folded, HeldLock, ListFilter, Role, RowCache, ScratchFolder, State, Swap, Tables,
};

/// Events read from the log and folded in one transaction by catch-up
/// (appends made through this process fold in their own transaction).
pub const FOLD_BATCH_EVENTS: usize = 5_000;
/// Events a rebuild reads and folds at a time.
pub const REBUILD_BATCH_EVENTS: usize = 5_000;
/// Records a rebuild holds at most between writes (about 2 KB each in
/// memory); interactions, written once, are held apart in batches of this
/// size or fewer.
pub const REBUILD_ROWS_MAX: usize = 50_000;
/// How long the live loop waits for news before checking again (it is woken
/// at once by appends of this process; this bounds the delay for others').
pub const LIVE_POLL: Duration = Duration::from_millis(500);
/// The least time between two catch-ups of the live loop, so that a busy
/// server's stream of commit notifications costs its peers one read of the
/// log per pause, not one per commit.
const CATCH_UP_PAUSE: Duration = Duration::from_millis(20);

/// Reports as of a date folding at once in one process; more wait their
/// turn, so that memory is that of one fold (see `Projector::as_of`).
pub const AS_OF_FOLDS_MAX: usize = 1;

/// How often a process that needs the tables to move, while another holds
/// the projector lease, looks whether they have (or whether the lease is free).
const PROJECTOR_WAIT: Duration = Duration::from_millis(20);

/// How often a starting server looks whether another one's rebuild is done.
const REBUILD_WAIT: Duration = Duration::from_secs(1);

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub millis: u64,
}

/// How a projector folds.
#[derive(Debug, Clone, Copy)]
pub struct ProjectorOptions {
    /// Events per live batch; small values make tests cross batch edges often.
    pub fold_batch_events: usize,
    /// Events per rebuild batch.
    pub rebuild_batch_events: usize,
    /// Records a rebuild holds (and writes back once) before it writes them
    /// and starts again: what bounds its memory. More rows, fewer rewrites
    /// of records that many events touch.
    pub rebuild_rows_max: usize,
    /// Connections kept for reading the tables.
    pub read_connections_max: u32,
    /// Dates whose folds are kept for reports asked as of them again
    /// (`crate::as_of`); 0 folds every such report from the start.
    pub as_of_cached: usize,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            fold_batch_events: FOLD_BATCH_EVENTS,
            rebuild_batch_events: REBUILD_BATCH_EVENTS,
            rebuild_rows_max: REBUILD_ROWS_MAX,
            read_connections_max: 8,
            as_of_cached: crate::as_of::AS_OF_CACHED,
        }
    }
}

pub struct Projector {
    store: Store,
    tables: Tables,
    options: ProjectorOptions,
    /// Held while folding into the live tables, so this process runs one
    /// fold at a time (other processes are kept apart by the state row's lock).
    applying: Mutex<()>,
    /// The position the live tables are known to cover; appends that fold
    /// in their own transaction (`LiveFold`) move it too.
    applied: Arc<watch::Sender<u64>>,
    written: Arc<WrittenViews>,
    /// Turns of the as-of folds (`AS_OF_FOLDS_MAX`).
    as_of_turns: tokio::sync::Semaphore,
    /// The folds of reports as of a date kept for the next ask.
    as_of_cache: Arc<AsOfCache>,
    /// The projector lease, once this process took it: of all processes on
    /// the database, the one that folds what the live tables lack.
    lease: Mutex<Option<HeldLock>>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("position", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

/// Likely duplicates a warning (a write's answer, an import's report)
/// names of one record, at most, per rule.
pub const DUPLICATES_NAMED_MAX: usize = 10;

impl Projector {
    /// Opens the read-model tables in the log's database and folds in what
    /// the log holds after their position. Tables written by another
    /// `MODEL_VERSION`, or none at all over a log of more than a batch, are
    /// refolded from the start the way a rebuild does (aside, rows written
    /// once per fill; the old tables serve other servers meanwhile).
    pub async fn open(store: Store) -> Result<Arc<Self>, ProjectionError> {
        Self::open_with(store, ProjectorOptions::default()).await
    }

    pub async fn open_with(store: Store, options: ProjectorOptions) -> Result<Arc<Self>, ProjectionError> {
        let (projector, current) = Self::open_unfolded(store, options).await?;
        let empty_over_a_log =
            projector.position() == 0 && projector.store.head().await? > options.fold_batch_events as u64;
        if !current || empty_over_a_log {
            while let Err(error) = projector.rebuild().await {
                let ProjectionError::Busy(_) = error else {
                    return Err(error);
                };
                // Another server (started with this version too) is
                // refolding the same tables: take what it swaps in.
                tracing::info!("another process is rebuilding the read models; waiting for it");
                tokio::time::sleep(REBUILD_WAIT).await;
                if let Some(state) = projector.tables.state().await?
                    && state.model_version == MODEL_VERSION
                    && state.position > 0
                {
                    projector.applied.send_replace(state.position);
                    break;
                }
            }
        }
        projector.catch_up().await?;
        Ok(projector)
    }

    /// Opens the tables without folding what they lack: for a rebuild,
    /// which folds everything aside anyway, holding at most `rows_max`
    /// records between writes (`ProjectorOptions::rebuild_rows_max`).
    /// Serves stale reads until then.
    pub async fn open_for_rebuild(store: Store, rows_max: usize) -> Result<Arc<Self>, ProjectionError> {
        let options = ProjectorOptions {
            rebuild_rows_max: rows_max,
            ..ProjectorOptions::default()
        };
        Ok(Self::open_unfolded(store, options).await?.0)
    }

    /// Opens the tables; says whether they are of this `MODEL_VERSION`.
    async fn open_unfolded(store: Store, options: ProjectorOptions) -> Result<(Arc<Self>, bool), ProjectionError> {
        let tables = Tables::open(
            store.url(),
            store.schema(),
            options.read_connections_max,
            store.connect_wait(),
        )
        .await?;
        let (position, current) = match tables.state().await? {
            Some(state) if state.model_version == MODEL_VERSION => (state.position, true),
            Some(state) => {
                tracing::info!(
                    saved = state.model_version,
                    current = MODEL_VERSION,
                    "the read-model tables are from another version; refolding them from the log"
                );
                (0, false)
            }
            None => {
                tables.reset(1).await?;
                (0, true)
            }
        };
        let applied = Arc::new(watch::channel(position).0);
        let written = Arc::new(WrittenViews::default());
        let as_of_cache = Arc::new(AsOfCache::new(options.as_of_cached));
        store.set_commit_hook(Arc::new(LiveFold {
            applied: Arc::clone(&applied),
            written: Arc::clone(&written),
            as_of_cache: Arc::clone(&as_of_cache),
        }));
        let projector = Arc::new(Self {
            store,
            tables,
            options,
            applying: Mutex::new(()),
            applied,
            written,
            as_of_turns: tokio::sync::Semaphore::new(AS_OF_FOLDS_MAX),
            as_of_cache,
            lease: Mutex::new(None),
        });
        Ok((projector, current))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last log position the live tables are known to cover.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Folds every committed event not yet in the live tables; returns how
    /// many. When the tables are known to cover the head already (every
    /// append of this process folds itself), it takes no lock: every live
    /// report asks this first, and under one lock 64 clients' reports
    /// waited on each other's round trips.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let head = self.store.head().await?;
        if self.position() >= head {
            return Ok(0);
        }
        let _applying = self.applying.lock().await;
        self.fold_pending(head).await
    }

    /// Whether this process holds the projector lease (see `fold_pending`).
    pub async fn is_projector(&self) -> bool {
        self.lease.lock().await.is_some()
    }

    /// Folds batches until the live tables cover `target` or the log ends.
    /// The caller holds `applying`.
    ///
    /// Every append folds its own events inside its own transaction, on
    /// whichever server made it, so the shared tables almost always cover
    /// the log already: then this only reads the state row and moves this
    /// process's idea of the position, and neither reads the log nor takes
    /// a write transaction. What the tables do lack (appends by a process
    /// that folds nothing, a fold that failed) is folded by one process
    /// at a time per database, the holder of the projector lease (an
    /// advisory lock on PostgreSQL, a file lock beside a SQLite file), which
    /// keeps it until it exits; when it dies, the next process to need a
    /// fold takes the lease over. The others wait for the tables to move.
    async fn fold_pending(&self, target: u64) -> Result<u64, ProjectionError> {
        loop {
            if let Some(state) = self.tables.state().await?
                && state.model_version == MODEL_VERSION
            {
                eventstore::advance(&self.applied, state.position);
                if state.position >= target {
                    return Ok(0);
                }
            }
            if self.take_lease().await? {
                return self.fold_as_projector(target).await;
            }
            tokio::time::sleep(PROJECTOR_WAIT).await;
        }
    }

    /// Whether this process holds the projector lease, taking it if no
    /// other process does.
    async fn take_lease(&self) -> Result<bool, ProjectionError> {
        let mut lease = self.lease.lock().await;
        if lease.is_none() {
            *lease = self.tables.try_lock(Role::Projector).await?;
            if lease.is_some() {
                tracing::info!("this process now folds what the read models lack (the projector lease)");
            }
        }
        Ok(lease.is_some())
    }

    /// `fold_pending` by the holder of the projector lease.
    async fn fold_as_projector(&self, target: u64) -> Result<u64, ProjectionError> {
        let mut n_applied = 0;
        let mut after = self.position();
        let mut cache = RowCache::default();
        loop {
            let batch = self.store.read_all(after, self.options.fold_batch_events).await?;
            let Some(first) = batch.first().map(|e| e.position) else {
                return Ok(n_applied);
            };
            after = match fold_batch(&self.tables, first, &batch, Some(&mut cache)).await? {
                Folded::Covered(position) => {
                    n_applied += batch.len() as u64;
                    position
                }
                // The tables stand earlier than this process believed
                // (another process swapped in a rebuild): read from there.
                Folded::Skipped(Some(position)) if position < after => position,
                Folded::Skipped(_) => {
                    return Err(ProjectionError::ReadModel(
                        "the read-model tables were reset by another version of crm; restart to refold them".into(),
                    ));
                }
            };
            eventstore::advance(&self.applied, after);
            if after >= target && batch.len() < self.options.fold_batch_events {
                return Ok(n_applied);
            }
        }
    }

    /// Returns once the live tables cover `position` (read-your-writes). When
    /// another request is already folding, this waits for it instead of
    /// reading the log again.
    pub async fn wait_until(&self, position: u64) -> Result<(), ProjectionError> {
        if self.position() >= position {
            return Ok(());
        }
        let _applying = self.applying.lock().await;
        if self.position() >= position {
            return Ok(());
        }
        self.fold_pending(position).await.map(|_| ())
    }

    /// Keeps the live tables current until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let head = tokio::select! {
                head = self.store.wait_for(self.position(), LIVE_POLL) => head,
                _ = shutdown.changed() => break,
            };
            // Appends through this process fold themselves (`LiveFold`):
            // only what the tables still lack is worth reading the log for.
            if head.as_ref().is_ok_and(|head| self.position() >= *head) {
                continue;
            }
            let caught_up = tokio::select! {
                caught_up = self.catch_up() => caught_up,
                _ = shutdown.changed() => break,
            };
            match caught_up {
                // Other servers' appends wake this loop as they commit (on
                // PostgreSQL): let a few gather before reading the log again.
                Ok(_) => tokio::time::sleep(CATCH_UP_PAUSE).await,
                Err(error) => {
                    tracing::error!(%error, "folding new events failed; retrying");
                    tokio::time::sleep(LIVE_POLL).await;
                }
            }
        }
    }

    /// Refolds the whole log into fresh tables aside, then swaps them in.
    /// Reads keep being served from the live tables meanwhile.
    pub async fn rebuild(&self) -> Result<RebuildReport, ProjectionError> {
        self.rebuild_with_progress(|_| {}).await
    }

    /// `rebuild`, calling `progress` with the last position folded after
    /// each batch.
    pub async fn rebuild_with_progress(&self, progress: impl FnMut(u64)) -> Result<RebuildReport, ProjectionError> {
        let one_at_a_time = self.tables.lock_rebuild().await?;
        let rebuilt = self.rebuild_holding_the_lock(progress).await;
        one_at_a_time.release().await;
        rebuilt
    }

    async fn rebuild_holding_the_lock(&self, mut progress: impl FnMut(u64)) -> Result<RebuildReport, ProjectionError> {
        let started = Instant::now();
        let generation = self.tables.state().await?.map_or(1, |s| s.generation + 1);
        self.tables.prepare_next().await?;
        let mut rows = AsideRows::new(self.options.rebuild_rows_max);
        let mut position = self.fold_aside(0, &mut rows, &mut progress, None).await?;
        self.tables.flush_aside(&mut rows, Flush::All).await?;
        let filled = started.elapsed();
        self.tables.index_next(generation).await?;
        rows.tables_indexed();
        tracing::info!(
            events = position,
            filled_ms = filled.as_millis() as u64,
            indexed_ms = (started.elapsed() - filled).as_millis() as u64,
            "rebuild: tables filled and indexed"
        );
        // What was appended meanwhile, still without holding anyone up.
        position = self.fold_aside(position, &mut rows, &mut progress, None).await?;
        // The rest inside the swap, which appends wait for: none can fold
        // into the old tables after the new ones have caught up.
        let applying = self.applying.lock().await;
        let mut swap = self.tables.begin_swap().await?;
        position = self
            .fold_aside(position, &mut rows, &mut progress, Some(&mut swap))
            .await?;
        let state = State {
            model_version: MODEL_VERSION,
            generation,
            position,
        };
        swap.finish(&mut rows, state).await?;
        self.applied.send_replace(position);
        // Appends by processes that fold nothing themselves: fold them now.
        self.fold_pending(position).await?;
        drop(applying);
        Ok(RebuildReport {
            events: position,
            millis: started.elapsed().as_millis() as u64,
        })
    }

    /// Folds the log after `position` into the rebuild's rows (written to
    /// the rebuild tables when full), or inside `swap` when it is given.
    /// A task reads and decodes the next batches meanwhile, on the other core.
    async fn fold_aside(
        &self,
        mut position: u64,
        rows: &mut AsideRows,
        progress: &mut impl FnMut(u64),
        mut swap: Option<&mut Swap>,
    ) -> Result<u64, ProjectionError> {
        let mut batches = read_ahead(self.store.clone(), position, self.options.rebuild_batch_events, None);
        if swap.is_none()
            && let Some(writer) = self.tables.aside_writer()?
        {
            return fold_aside_natively(writer, batches, position, rows, progress).await;
        }
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            let fold = |model: &mut CrmModel| apply_all(model, pairs(&batch.events));
            match swap.as_deref_mut() {
                Some(swap) => swap.fold(rows, &batch.keys, fold).await?,
                None => self.tables.fold_aside(rows, &batch.keys, fold).await?,
            }
            position = batch.last;
            progress(position);
        }
        Ok(position)
    }

    /// The read models as they stood at `as_of`: the events that had
    /// happened by then (`occurred_at` at or before it), folded in position
    /// order into tables of their own in a scratch SQLite file, the way a
    /// rebuild folds (rows written back when `rebuild_rows_max` records are
    /// held), so memory stays bounded however long the log. Interactions
    /// are not kept: no report reads them. One fold at a time per process
    /// (`AS_OF_FOLDS_MAX`); the files live in the system's temporary
    /// directory (`TMPDIR`) and are removed with the answer.
    pub async fn as_of(&self, cut: Cut) -> Result<AsOf, ProjectionError> {
        let (dir, file, _, _) = self.fold_as_of(cut).await?;
        let tables = Tables::open_scratch(&file).await?;
        Ok(AsOf { tables, _dir: dir })
    }

    /// The dates (and recorded moments) whose folds this process keeps.
    pub fn kept_folds(&self) -> usize {
        self.as_of_cache.kept()
    }

    /// Reports as of a date folded from the start of the log: those a
    /// report asked as of an earlier date again updates instead are not
    /// counted (`crate::as_of`).
    pub fn as_of_folds(&self) -> u64 {
        self.as_of_cache.folds()
    }

    /// A turn of the scratch folds (`AS_OF_FOLDS_MAX`), a scratch directory
    /// named after `what`, its database file and a writer that made its
    /// tables.
    async fn scratch(
        &self,
        what: &str,
    ) -> Result<
        (
            tokio::sync::SemaphorePermit<'_>,
            tempfile::TempDir,
            std::path::PathBuf,
            AsideWriter,
        ),
        ProjectionError,
    > {
        let turn = self
            .as_of_turns
            .acquire()
            .await
            .map_err(|_| ProjectionError::Internal("the as-of folds were closed".into()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("crm-{what}-"))
            .tempdir()
            .map_err(|e| ProjectionError::Internal(format!("cannot make a scratch directory: {e}")))?;
        let file = dir.path().join(format!("{what}.db"));
        let writer = crate::tables::scratch_writer(&file)?;
        Ok((turn, dir, file, writer))
    }

    /// The fold of the log cut at `cut` into a scratch file: its directory,
    /// the file, and the positions of the last event folded and the last
    /// one read.
    async fn fold_as_of(&self, cut: Cut) -> Result<(tempfile::TempDir, std::path::PathBuf, u64, u64), ProjectionError> {
        let (_turn, dir, file, writer) = self.scratch("as-of").await?;
        let batches = read_ahead(self.store.clone(), 0, self.options.rebuild_batch_events, Some(cut));
        let rows_max = self.options.rebuild_rows_max;
        let (folded, read) = tokio::task::spawn_blocking(move || fold_scratch(writer, batches, rows_max))
            .await
            .map_err(|e| ProjectionError::Internal(format!("the as-of fold stopped: {e}")))??;
        self.as_of_cache.count_fold();
        Ok((dir, file, folded, read))
    }

    /// A report as of a date from its kept fold, brought up to date first,
    /// or from a new fold that is then kept.
    async fn report_as_of(
        &self,
        config: &domain::Pipeline,
        request: &crate::reports::ReportRequest,
        cut: Cut,
    ) -> Result<Value, ProjectionError> {
        let as_of = cut.at();
        let Some(entry) = self.as_of_cache.entry(cut) else {
            let then = self.as_of(cut).await?;
            let report = then.report(config, request, as_of).await;
            then.close().await;
            return report;
        };
        let mut held = entry.held.lock().await;
        let updated = match held.take() {
            Some(kept) => self.update_as_of(kept, cut).await?,
            None => None,
        };
        let current = match updated {
            Some(current) => current,
            None => {
                let (dir, file, folded, read) = self.fold_as_of(cut).await?;
                let tables = Tables::open_scratch(&file).await?;
                FoldedAsOf {
                    tables,
                    _dir: dir,
                    file,
                    folded,
                    read,
                }
            }
        };
        let report = current.tables.report(config, request, as_of).await;
        *held = Some(current);
        report
    }

    /// Reports as of each of several dates, in ascending order (a trend):
    /// each exactly the report as of its date.
    ///
    /// One pass over the log in position order folds into tables of its
    /// own and answers each date when the first event that happened after
    /// it is read: up to there, every event read happened by that date. The
    /// answer is the fold of the log cut at the date unless an event that
    /// happened by it is recorded later still (a backfill); the pass notes
    /// every date such an event falls before, and those alone are then
    /// folded on their own (`report` as of them, through the kept folds).
    /// A log written in the order things happen costs one fold up to the
    /// last date, whatever the number of dates.
    ///
    /// The answers are kept (as many trends as dates' folds are,
    /// `ProjectorOptions::as_of_cached`): the same trend asked again reads
    /// only the log recorded since, and answers from what it kept unless an
    /// event that happened by its last date is among it.
    pub async fn reports_over_time(
        &self,
        config: &domain::Pipeline,
        asks: &[(DateTime<Utc>, crate::reports::ReportRequest)],
    ) -> Result<Vec<Value>, ProjectionError> {
        if asks.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(ProjectionError::Internal("a trend's dates must ascend".into()));
        }
        let Some(last) = asks.last().map(|(date, _)| *date) else {
            return Ok(Vec::new());
        };
        let key = format!("{asks:?}");
        if let Some((answers, read)) = self.as_of_cache.kept_trend(&key)
            && let Some(read) = self.nothing_happened_by(last, read).await?
        {
            self.as_of_cache.keep_trend(key, answers.clone(), read);
            return Ok(answers);
        }
        let (answers, read) = self.fold_over_time(config, asks).await?;
        self.as_of_cache.keep_trend(key, answers.clone(), read);
        Ok(answers)
    }

    /// The log's end, if no event recorded after `read` had happened by
    /// `date`.
    async fn nothing_happened_by(&self, date: DateTime<Utc>, mut read: u64) -> Result<Option<u64>, ProjectionError> {
        loop {
            let batch = self.store.read_all(read, self.options.rebuild_batch_events).await?;
            let Some(end) = batch.last().map(|recorded| recorded.position) else {
                return Ok(Some(read));
            };
            // An erasure changes what earlier answers showed, too.
            if batch
                .iter()
                .any(|recorded| recorded.occurred_at <= date || is_erasure(recorded))
            {
                return Ok(None);
            }
            read = end;
        }
    }

    /// `reports_over_time` from the log, and the position it read through.
    async fn fold_over_time(
        &self,
        config: &domain::Pipeline,
        asks: &[(DateTime<Utc>, crate::reports::ReportRequest)],
    ) -> Result<(Vec<Value>, u64), ProjectionError> {
        let mut read = 0;
        let mut answers: Vec<Option<Value>> = vec![None; asks.len()];
        let mut missed = vec![false; asks.len()];
        {
            let (_turn, _dir, file, writer) = self.scratch("trend").await?;
            tokio::task::spawn_blocking(move || writer.finish_scratch(0))
                .await
                .map_err(|e| ProjectionError::Internal(format!("the trend's tables were not made: {e}")))??;
            let tables = Tables::open_scratch(&file).await?;
            self.as_of_cache.count_fold();
            let mut chain = Chain {
                folder: Some(ScratchFolder::open(&file, true)?),
                folded: 0,
                pending: Vec::new(),
            };
            let mut next = 0;
            let mut batches = read_ahead(self.store.clone(), 0, self.options.rebuild_batch_events, None);
            while let Some(batch) = batches.recv().await {
                let batch = batch?;
                read = batch.last;
                for (recorded, event) in batch.events {
                    let at = recorded.occurred_at;
                    // The dates answered already that this event happened
                    // by: their answers missed it.
                    for k in (0..next).rev() {
                        if asks[k].0 < at {
                            break;
                        }
                        missed[k] = true;
                    }
                    while next < asks.len() && at > asks[next].0 {
                        chain.fold().await?;
                        answers[next] = Some(tables.report(config, &asks[next].1, asks[next].0).await?);
                        next += 1;
                    }
                    // Past the last date only late events matter, and they
                    // are noted above.
                    if next < asks.len() {
                        chain.pending.push((recorded, event));
                        if chain.pending.len() >= self.options.rebuild_batch_events {
                            chain.fold().await?;
                        }
                    }
                }
            }
            // The log ended before the last dates: they hold all of it.
            while next < asks.len() {
                chain.fold().await?;
                answers[next] = Some(tables.report(config, &asks[next].1, asks[next].0).await?);
                next += 1;
            }
            tables.close().await;
        }
        let mut reports = Vec::with_capacity(asks.len());
        for ((as_of, request), (answer, missed)) in asks.iter().zip(answers.into_iter().zip(missed)) {
            reports.push(match answer {
                Some(answer) if !missed => answer,
                _ => self.report_as_of(config, request, Cut::Happened(*as_of)).await?,
            });
        }
        Ok((reports, read))
    }

    /// Folds into a kept fold cut at `cut` the events recorded since it
    /// read the log that the cut holds; passes over the others. `None` if
    /// an erasure was recorded since: the kept fold holds what it erased
    /// (the erasure is past the cut, so folding it on would not take it
    /// out), and is dropped for a fold afresh, which reads the erased
    /// values as erased.
    async fn update_as_of(&self, mut kept: FoldedAsOf, cut: Cut) -> Result<Option<FoldedAsOf>, ProjectionError> {
        if kept.read >= self.store.head().await? {
            return Ok(Some(kept));
        }
        let mut batches = read_ahead(
            self.store.clone(),
            kept.read,
            self.options.rebuild_batch_events,
            Some(cut),
        );
        // A short fold as a rule (the events recorded since the last ask):
        // no rows kept between its batches.
        let mut folder = ScratchFolder::open(&kept.file, false)?;
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            if batch.erasures {
                return Ok(None);
            }
            // The events passed over were never part of this fold: the
            // batch follows the last event folded.
            (folder, kept.folded) = fold_into_scratch(folder, kept.folded, batch.events).await?;
            kept.read = batch.last;
        }
        Ok(Some(kept))
    }

    /// Answers a report: from the live tables measured at `now`, or, with
    /// `cut`, from the log folded up to there (what had happened by a
    /// moment, or what had been recorded by it), put in tables of its own
    /// and read by the same queries. An answer cut at what was recorded
    /// says so (`as_recorded`, the moment) beside its `as_of`.
    pub async fn report(
        &self,
        config: &domain::Pipeline,
        request: &crate::reports::ReportRequest,
        cut: Option<Cut>,
        now: DateTime<Utc>,
    ) -> Result<Value, ProjectionError> {
        let Some(cut) = cut else {
            self.catch_up().await?;
            return self.tables.report(config, request, now).await;
        };
        let mut report = self.report_as_of(config, request, cut).await?;
        if let (Cut::Recorded(at), Value::Object(fields)) = (cut, &mut report) {
            fields.insert("as_recorded".into(), serde_json::json!(at));
        }
        Ok(report)
    }

    /// The view of one contact, account, deal or interaction.
    pub async fn view(&self, kind: RecordKind, id: Uuid) -> Result<Option<Value>, ProjectionError> {
        Ok(self.views(kind, &[id]).await?.pop())
    }

    /// The view of a record as the append that ended at `position` left
    /// it: what the answer to that write shows. Waits until the live tables
    /// cover the append (read-your-writes for every later read too).
    pub async fn view_as_written(
        &self,
        kind: RecordKind,
        id: Uuid,
        position: u64,
    ) -> Result<Option<Value>, ProjectionError> {
        self.wait_until(position).await?;
        if let Some(view) = self.written.take(&(kind, id, position)) {
            return Ok(Some(view));
        }
        self.view(kind, id).await
    }

    /// The views of several records of one kind, in the order given; ids
    /// with no record are left out.
    pub async fn views(&self, kind: RecordKind, ids: &[Uuid]) -> Result<Vec<Value>, ProjectionError> {
        let mut keys = Keys::default();
        keys.of_kind_mut(kind).extend(ids.iter().copied());
        let model = self.tables.load(&keys).await?;
        Ok(ids.iter().filter_map(|id| crate::view_of(&model, kind, *id)).collect())
    }

    /// Up to `limit` views of a kind's live records (every interaction)
    /// after the id `after`, in id order, and the cursor of the next page
    /// (`None` after the last): to walk a whole kind a page at a time (an
    /// export), in memory bounded by the page.
    pub async fn page(
        &self,
        kind: RecordKind,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<Uuid>), ProjectionError> {
        let table = match kind {
            RecordKind::Contact => &CONTACTS,
            RecordKind::Account => &ACCOUNTS,
            RecordKind::Deal => &DEALS,
            RecordKind::Interaction => &INTERACTIONS,
            RecordKind::User => &USERS,
        };
        let limit = limit.max(1);
        let ids = self.tables.ids_after(table, after, limit).await?;
        let next = ids.last().copied().filter(|_| ids.len() == limit);
        Ok((self.views(kind, &ids).await?, next))
    }

    /// One page of live contacts, accounts or deals, in id order, and the
    /// cursor of the next page.
    pub async fn list(
        &self,
        kind: RecordKind,
        filter: &ListFilter,
    ) -> Result<(Vec<Value>, Option<Uuid>), ProjectionError> {
        let table = match kind {
            RecordKind::Contact => "contacts",
            RecordKind::Account => "accounts",
            RecordKind::Deal => "deals",
            RecordKind::Interaction | RecordKind::User => return Ok((Vec::new(), None)),
        };
        let limit = filter.limit.max(1);
        let mut ids = self
            .tables
            .list(
                table,
                &ListFilter {
                    limit: limit + 1,
                    ..filter.clone()
                },
            )
            .await?;
        let next_cursor = (ids.len() > limit).then(|| ids[limit - 1]);
        ids.truncate(limit);
        Ok((self.views(kind, &ids).await?, next_cursor))
    }

    /// The records `keys` names (those that exist), in a partial model.
    pub async fn records(&self, keys: &Keys) -> Result<CrmModel, ProjectionError> {
        self.tables.load(keys).await
    }

    /// Live records that look like duplicates of the contact or account
    /// `id` (the duplicates report's rules: the same email, phone, or name
    /// within one account; an account's domain), each with the reason, at
    /// most `limit` per rule (a warning names `DUPLICATES_NAMED_MAX`). A
    /// deal or interaction has none.
    pub async fn likely_duplicates(
        &self,
        kind: RecordKind,
        id: Uuid,
        limit: usize,
    ) -> Result<Vec<(Uuid, &'static str)>, ProjectionError> {
        let table = match kind {
            RecordKind::Contact => CONTACTS.name,
            RecordKind::Account => ACCOUNTS.name,
            _ => return Ok(Vec::new()),
        };
        let rules = crate::reports::duplicate_warnings(table);
        let columns: Vec<&'static str> = rules.iter().map(|(column, _)| *column).collect();
        let found = self.tables.sharing(table, &columns, id, limit).await?;
        Ok(found
            .into_iter()
            .map(|(other, column)| {
                let reason = rules.iter().find(|(c, _)| *c == column).map_or(column, |(_, r)| *r);
                (other, reason)
            })
            .collect())
    }

    /// Live (not archived) contacts, accounts and deals, counted in the tables.
    pub async fn live_counts(&self) -> Result<[u64; 3], ProjectionError> {
        self.tables.live_counts().await
    }

    /// Every user, in a model of their own: to name the people behind events.
    pub async fn users(&self) -> Result<CrmModel, ProjectionError> {
        self.tables.users().await
    }

    /// The users, the record and the interactions that name it: all that its
    /// history and timeline read.
    pub async fn record_context(&self, kind: RecordKind, id: Uuid) -> Result<CrmModel, ProjectionError> {
        let mut model = self.tables.users().await?;
        let column = match kind {
            RecordKind::Contact => Some("contact_id"),
            RecordKind::Account => Some("account_id"),
            RecordKind::Deal => Some("deal_id"),
            RecordKind::Interaction | RecordKind::User => None,
        };
        let mut keys = Keys::default();
        keys.of_kind_mut(kind).insert(id);
        let record = self.tables.load(&keys).await?;
        model.contacts = record.contacts;
        model.accounts = record.accounts;
        model.deals = record.deals;
        model.interactions = record.interactions;
        if let Some(column) = column {
            for interaction in self.tables.interactions_of(column, id).await? {
                model.interactions.insert(interaction.id, interaction);
            }
        }
        Ok(model)
    }

    /// Every record of the live tables in one model, interactions only when
    /// asked for: what CSV exports and imports read (reports never do). It
    /// costs memory for the length of one request, not for the life of the
    /// server.
    pub async fn whole(&self, with_interactions: bool) -> Result<CrmModel, ProjectionError> {
        self.tables.whole(with_interactions).await
    }

    /// Gives up the projector lease and closes the connections.
    pub async fn close(&self) {
        if let Some(lease) = self.lease.lock().await.take() {
            lease.release().await;
        }
        self.tables.close().await;
    }
}

/// The view of each record an append wrote, as its last event there left
/// it (users have none).
fn written_views(model: &CrmModel, decoded: &[(&RecordedEvent, Event)]) -> Vec<(WrittenKey, Value)> {
    let mut last: HashMap<(RecordKind, Uuid), u64> = HashMap::new();
    for (recorded, event) in decoded {
        last.insert(event.record(), recorded.position);
    }
    last.into_iter()
        .filter_map(|((kind, id), position)| {
            let view = crate::view_of(model, kind, id)?;
            Some(((kind, id, position), view))
        })
        .collect()
}

/// Applies decoded events in order: the one fold, over whatever model.
fn apply_all<'a>(model: &mut CrmModel, decoded: impl IntoIterator<Item = (&'a RecordedEvent, &'a Event)>) {
    for (recorded, event) in decoded {
        model.apply(recorded, event);
    }
}

/// Decodes a batch, which starts at `first`, and folds it into the live
/// tables in one transaction of its own.
async fn fold_batch(
    tables: &Tables,
    first: u64,
    batch: &[RecordedEvent],
    cache: Option<&mut RowCache>,
) -> Result<Folded, ProjectionError> {
    let decoded = decode_all(batch)?;
    let keys = keys_of(pairs(&decoded));
    tables
        .fold_batch(first, &keys, cache, |model| apply_all(model, pairs(&decoded)))
        .await
}

/// `fold_aside` on SQLite, outside the swap: a blocking thread folds the
/// batches `read_ahead` sends and writes them through `writer`, while this
/// task reports its progress.
async fn fold_aside_natively(
    mut writer: AsideWriter,
    mut batches: mpsc::Receiver<Result<DecodedBatch, ProjectionError>>,
    mut position: u64,
    rows: &mut AsideRows,
    progress: &mut impl FnMut(u64),
) -> Result<u64, ProjectionError> {
    let (folded, mut done) = mpsc::unbounded_channel();
    let mut owned = rows.take();
    let worker = tokio::task::spawn_blocking(move || {
        let mut fold_all = || {
            while let Some(batch) = batches.blocking_recv() {
                let batch = batch?;
                writer.fold(&mut owned, &batch.keys, |model| apply_all(model, pairs(&batch.events)))?;
                // The receiver only goes away with this function's caller.
                let _ = folded.send(batch.last);
            }
            // The rows handed back must be all that is not yet written.
            writer.settle()
        };
        let result = fold_all();
        (owned, result)
    });
    while let Some(last) = done.recv().await {
        position = last;
        progress(position);
    }
    let (owned, result) = worker
        .await
        .map_err(|e| ProjectionError::Internal(format!("the rebuild's writer stopped: {e}")))?;
    *rows = owned;
    result.map(|()| position)
}

/// The fold of a trend (`Projector::reports_over_time`): the events read
/// and not yet folded, and the position of the last one folded (the folder
/// is out while a fold runs, and stays out after one that failed).
struct Chain {
    folder: Option<ScratchFolder>,
    folded: u64,
    pending: Vec<(RecordedEvent, Event)>,
}

impl Chain {
    /// Folds the pending events into the tables on a blocking thread, as
    /// the folds as of a date are (no interactions: no report reads them).
    async fn fold(&mut self) -> Result<(), ProjectionError> {
        let folder = self
            .folder
            .take()
            .ok_or_else(|| ProjectionError::Internal("a trend's fold failed before".into()))?;
        let (folder, folded) = fold_into_scratch(folder, self.folded, std::mem::take(&mut self.pending)).await?;
        (self.folder, self.folded) = (Some(folder), folded);
        Ok(())
    }
}

/// Folds `events` into the scratch tables `folder` writes, which hold the
/// fold up to position `folded`, on a blocking thread, as the folds as of a
/// date are (no interactions: no report reads them); hands back the folder
/// and the position of the last event folded.
async fn fold_into_scratch(
    mut folder: ScratchFolder,
    folded: u64,
    events: Vec<(RecordedEvent, Event)>,
) -> Result<(ScratchFolder, u64), ProjectionError> {
    if events.is_empty() {
        return Ok((folder, folded));
    }
    let (folder, outcome) = tokio::task::spawn_blocking(move || {
        let keys = keys_of(pairs(&events));
        let outcome = folder.fold_batch(folded + 1, &keys, |model| {
            apply_all(model, pairs(&events));
            model.interactions.clear();
        });
        (folder, outcome)
    })
    .await
    .map_err(|e| ProjectionError::Internal(format!("a fold into scratch tables stopped: {e}")))?;
    match outcome? {
        Folded::Covered(position) => Ok((folder, position)),
        Folded::Skipped(_) => Err(ProjectionError::Internal(
            "scratch tables do not stand where their fold left them".into(),
        )),
    }
}

/// Folds `batches` into a scratch database through `writer`, holding at
/// most `rows_max` records between writes and no interaction, then indexes
/// it. Runs on a blocking thread.
fn fold_scratch(
    mut writer: AsideWriter,
    mut batches: mpsc::Receiver<Result<DecodedBatch, ProjectionError>>,
    rows_max: usize,
) -> Result<(u64, u64), ProjectionError> {
    let mut rows = AsideRows::in_tables(crate::tables::LIVE, rows_max);
    let mut position = 0;
    let mut read = 0;
    while let Some(batch) = batches.blocking_recv() {
        let batch = batch?;
        position = batch.events.last().map_or(position, |(recorded, _)| recorded.position);
        read = batch.last;
        writer.fold(&mut rows, &batch.keys, |model| {
            apply_all(model, pairs(&batch.events));
            model.interactions.clear();
        })?;
    }
    writer.flush(&mut rows, Flush::All)?;
    writer.finish_scratch(position)?;
    Ok((position, read))
}

/// The read models as they stood at a past date (`Projector::as_of`), in a
/// scratch database that is removed when this is dropped.
#[derive(Debug)]
pub struct AsOf {
    tables: Tables,
    _dir: tempfile::TempDir,
}

impl AsOf {
    /// A report over these tables, measured at `as_of`, by the queries the
    /// live tables answer.
    pub async fn report(
        &self,
        config: &domain::Pipeline,
        request: &crate::reports::ReportRequest,
        as_of: DateTime<Utc>,
    ) -> Result<Value, ProjectionError> {
        self.tables.report(config, request, as_of).await
    }

    /// Every user, contact, account and deal as they stood then (no
    /// interactions), and the position of the last event folded.
    pub async fn model(&self) -> Result<CrmModel, ProjectionError> {
        self.tables.whole(false).await
    }

    /// Closes the connections; the files go when this is dropped.
    pub async fn close(self) {
        self.tables.close().await;
    }
}

/// A batch of the log, decoded, with the keys of the rows it needs.
struct DecodedBatch {
    events: Vec<(RecordedEvent, Event)>,
    keys: Keys,
    last: u64,
    /// Whether the batch read holds an erasure, passed over or not.
    erasures: bool,
}

/// Reads and decodes the log after `position` in batches of `size` on a
/// task of its own, up to two batches ahead of the consumer, until the log
/// ends (or the consumer goes away). With `cut`, only the events it holds
/// are kept (a batch may then hold none).
fn read_ahead(
    store: Store,
    mut position: u64,
    size: usize,
    cut: Option<Cut>,
) -> mpsc::Receiver<Result<DecodedBatch, ProjectionError>> {
    let (sender, receiver) = mpsc::channel(2);
    match store.bulk_reader() {
        Ok(Some(reader)) => {
            tokio::task::spawn_blocking(move || read_ahead_natively(reader, position, size, cut, sender));
            return receiver;
        }
        Ok(None) => {}
        Err(error) => {
            // The channel has room for this one message.
            let _ = sender.try_send(Err(error.into()));
            return receiver;
        }
    }
    tokio::spawn(async move {
        loop {
            let batch = match store.read_all(position, size).await {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            let Some(last) = batch.last().map(|e| e.position) else {
                return;
            };
            let batch = decoded_batch(batch, last, cut);
            let failed = batch.is_err();
            if sender.send(batch).await.is_err() || failed {
                return;
            }
            position = last;
        }
    });
    receiver
}

/// `read_ahead` on a blocking thread with the store's native reader.
fn read_ahead_natively(
    mut reader: eventstore::BulkReader,
    mut position: u64,
    size: usize,
    cut: Option<Cut>,
    sender: mpsc::Sender<Result<DecodedBatch, ProjectionError>>,
) {
    loop {
        let batch = match reader.read_all(position, size) {
            Ok(batch) => batch,
            Err(error) => {
                let _ = sender.blocking_send(Err(error.into()));
                return;
            }
        };
        let Some(last) = batch.last().map(|e| e.position) else {
            return;
        };
        let batch = decoded_batch(batch, last, cut);
        let failed = batch.is_err();
        if sender.blocking_send(batch).is_err() || failed {
            return;
        }
        position = last;
    }
}

/// Decodes the events of a batch read up to `last` that `cut` holds (all
/// without it), with the keys of the rows they need.
fn decoded_batch(batch: Vec<RecordedEvent>, last: u64, cut: Option<Cut>) -> Result<DecodedBatch, ProjectionError> {
    let erasures = batch.iter().any(is_erasure);
    let events = batch
        .into_iter()
        .filter(|recorded| cut.is_none_or(|cut| cut.holds(recorded)))
        .map(|recorded| decode(&recorded).map(|event| (recorded, event)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedBatch {
        keys: keys_of(pairs(&events)),
        events,
        last,
        erasures,
    })
}

/// An event that destroys personal data (its key went with its append).
fn is_erasure(recorded: &RecordedEvent) -> bool {
    domain::ERASURES.contains(&recorded.event_type.as_str())
}

fn decode_all(batch: &[RecordedEvent]) -> Result<Vec<(&RecordedEvent, Event)>, ProjectionError> {
    batch
        .iter()
        .map(|recorded| decode(recorded).map(|event| (recorded, event)))
        .collect()
}

/// The rows decoded events read or write.
fn keys_of<'a>(decoded: impl IntoIterator<Item = (&'a RecordedEvent, &'a Event)>) -> Keys {
    let mut keys = Keys::default();
    for (recorded, event) in decoded {
        CrmModel::add_keys(recorded, event, &mut keys);
    }
    keys
}

/// Decoded events as the pairs `apply_all` and `keys_of` take.
fn pairs<'a, R: std::borrow::Borrow<RecordedEvent> + 'a>(
    decoded: &'a [(R, Event)],
) -> impl Iterator<Item = (&'a RecordedEvent, &'a Event)> {
    decoded.iter().map(|(recorded, event)| (recorded.borrow(), event))
}

/// Folds each append's events into the live tables inside the append's own
/// transaction, so a write is visible in every list and report (on every
/// server sharing the database) the moment it commits, and costs no second
/// transaction. When the tables are not right behind the append (a rebuild
/// was swapped in, or catch-up is still running), it folds nothing and
/// catch-up does it instead.
struct LiveFold {
    applied: Arc<watch::Sender<u64>>,
    written: Arc<WrittenViews>,
    /// The folds this process keeps as of past dates: an erasure it commits
    /// drops them at once, so that no scratch file on disk holds what it
    /// erased until the next ask would have dropped it. (Another server's
    /// kept folds go at their next ask, which sees the erasure in the log.)
    as_of_cache: Arc<AsOfCache>,
}

/// Views of records as each append left them, kept from the moment the
/// append commits until the request that made it takes its own: the answer
/// to a write then needs no second read. Keyed by the position of the
/// record's last event in that append, so a request gets exactly the state
/// its write produced, never a later one.
#[derive(Debug, Default)]
struct WrittenViews {
    /// Views of the append being committed; kept only if it commits.
    pending: std::sync::Mutex<Vec<(WrittenKey, Value)>>,
    committed: std::sync::Mutex<HashMap<WrittenKey, Value>>,
}

type WrittenKey = (RecordKind, Uuid, u64);

/// Views kept for requests that have not taken theirs yet (a request that
/// gave up waiting never will): past this, the oldest are dropped wholesale
/// and those requests read their view from the tables instead.
const WRITTEN_VIEWS_MAX: usize = 4_096;

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WrittenViews {
    fn stage(&self, views: Vec<(WrittenKey, Value)>) {
        *lock(&self.pending) = views;
    }

    fn settle(&self, committed: bool) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        if !committed {
            return;
        }
        let mut views = lock(&self.committed);
        if views.len() + pending.len() > WRITTEN_VIEWS_MAX {
            views.clear();
        }
        views.extend(pending);
    }

    fn take(&self, key: &WrittenKey) -> Option<Value> {
        lock(&self.committed).remove(key)
    }
}

impl CommitHook for LiveFold {
    fn in_transaction<'a>(
        &'a self,
        conn: HookConnection<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<Option<u64>, String>> {
        Box::pin(async move {
            let Some(first) = events.first().map(|e| e.position) else {
                return Ok(None);
            };
            // Before the fold, which may fail while the events still
            // commit; should they not, a fold afresh is all it costs.
            if events.iter().any(is_erasure) {
                self.as_of_cache.clear();
            }
            let decoded = decode_all(events).map_err(|e| e.to_string())?;
            let keys = keys_of(pairs(&decoded));
            let conn: &mut dyn Exec = match conn {
                HookConnection::Sqlite(conn) => conn,
                HookConnection::Postgres(conn) => conn,
            };
            let last = events.last().map_or(first, |e| e.position);
            let mut views = Vec::new();
            let folded = crate::tables::fold_appended(conn, first, last, &keys, |model| {
                apply_all(model, pairs(&decoded));
                views = written_views(model, &decoded);
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(match folded {
                Folded::Covered(position) => {
                    self.written.stage(views);
                    Some(position)
                }
                Folded::Skipped(_) => None,
            })
        })
    }

    fn committed(&self, covered: Option<u64>) {
        self.written.settle(covered.is_some());
        if let Some(position) = covered {
            eventstore::advance(&self.applied, position);
        }
    }
}
