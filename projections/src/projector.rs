//! Keeping the read models current, durable and rebuildable.
//!
//! - Live: `run` waits for new events and folds them in as they commit;
//!   `catch_up` does the same on demand (read-your-writes after an append).
//! - Checkpoints: the model is saved as one snapshot row holding its state
//!   and the last position folded into it, so the two can never disagree. A
//!   restart loads the snapshot and folds only what came after it; since
//!   `apply` ignores positions already folded, nothing is applied twice and
//!   nothing skipped. A snapshot from another `MODEL_VERSION` is discarded
//!   and the model rebuilt from the log.
//! - Rebuild: a fresh model is folded aside while reads keep using the
//!   current one, then swapped in. Memory is two models and one batch of
//!   events, never the log.
//! - As of: the same fold over the events that had happened by a date.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::{Snapshot, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock, watch};

use crate::ProjectionError;
use crate::history::decode;
use crate::model::{CrmModel, MODEL_VERSION};

/// The snapshot row the model is saved under.
pub const SNAPSHOT_NAME: &str = "crm_model";
/// Events folded between two snapshots while running live.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 10_000;
/// Events read from the log at a time.
pub const FOLD_BATCH_EVENTS: usize = 1_000;
/// How long the live loop waits for news before checking again (it is woken
/// at once by appends of this process; this bounds the delay for others').
pub const LIVE_POLL: Duration = Duration::from_millis(500);

#[derive(Serialize)]
struct SnapshotOut<'a> {
    model_version: u32,
    model: &'a CrmModel,
}

#[derive(Deserialize)]
struct SnapshotIn {
    model_version: u32,
    model: CrmModel,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub millis: u64,
}

pub struct Projector {
    store: Store,
    model: RwLock<CrmModel>,
    /// Held while folding into the live model, so two folds never race.
    applying: Mutex<()>,
    applied: watch::Sender<u64>,
    snapshot_position: AtomicU64,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("position", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl Projector {
    /// Loads the last snapshot and folds in what the log holds after it.
    pub async fn open(store: Store) -> Result<Arc<Self>, ProjectionError> {
        let model = load_snapshot(&store).await?.unwrap_or_default();
        let position = model.position;
        let projector = Arc::new(Self {
            store,
            model: RwLock::new(model),
            applying: Mutex::new(()),
            applied: watch::channel(position).0,
            snapshot_position: AtomicU64::new(position),
        });
        projector.catch_up().await?;
        Ok(projector)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last log position folded into the live model.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Runs `query` against the live model.
    pub async fn read<R>(&self, query: impl FnOnce(&CrmModel) -> R) -> R {
        query(&*self.model.read().await)
    }

    /// Folds every committed event not yet in the live model; returns how many.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let _applying = self.applying.lock().await;
        let mut n_applied = 0;
        loop {
            let after = self.model.read().await.position;
            let batch = self.store.read_all(after, FOLD_BATCH_EVENTS).await?;
            if batch.is_empty() {
                break;
            }
            let decoded = batch
                .iter()
                .map(|recorded| decode(recorded).map(|event| (recorded, event)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut model = self.model.write().await;
            for (recorded, event) in &decoded {
                model.apply(recorded, event);
            }
            self.applied.send_replace(model.position);
            n_applied += batch.len() as u64;
        }
        drop(_applying);
        if self.position() - self.snapshot_position.load(Ordering::Relaxed) >= SNAPSHOT_EVERY_EVENTS {
            self.save_snapshot().await?;
        }
        Ok(n_applied)
    }

    /// Folds until the live model has applied `position` (read-your-writes).
    pub async fn wait_until(&self, position: u64) -> Result<(), ProjectionError> {
        if self.position() < position {
            self.catch_up().await?;
        }
        Ok(())
    }

    /// Keeps the live model current until `shutdown` turns true, then saves a
    /// snapshot.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            tokio::select! {
                _ = self.store.wait_for(self.position(), LIVE_POLL) => {}
                _ = shutdown.changed() => break,
            }
            if let Err(error) = self.catch_up().await {
                tracing::error!(%error, "folding new events failed; retrying");
                tokio::time::sleep(LIVE_POLL).await;
            }
        }
        if let Err(error) = self.save_snapshot_if_behind().await {
            tracing::error!(%error, "saving the read-model snapshot at shutdown failed");
        }
    }

    /// Saves a snapshot if the live model has folded events since the last
    /// one; returns whether it did. A snapshot is the whole model, so
    /// rewriting an unchanged one is pure cost.
    pub async fn save_snapshot_if_behind(&self) -> Result<bool, ProjectionError> {
        if self.position() == self.snapshot_position.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.save_snapshot().await.map(|()| true)
    }

    /// Saves the live model and its position as one snapshot row.
    pub async fn save_snapshot(&self) -> Result<(), ProjectionError> {
        let (position, data) = {
            let model = self.model.read().await;
            let data = serde_json::to_string(&SnapshotOut {
                model_version: MODEL_VERSION,
                model: &model,
            })
            .expect("the model serialises: all map keys are strings");
            (model.position, data)
        };
        let snapshot = Snapshot {
            name: SNAPSHOT_NAME.into(),
            position,
            data,
            saved_at: Utc::now(),
        };
        self.store.save_snapshot(&snapshot).await?;
        self.snapshot_position.store(position, Ordering::Relaxed);
        Ok(())
    }

    /// Replays the whole log into a fresh model aside, then swaps it in.
    /// Reads keep being served from the current model meanwhile.
    pub async fn rebuild(&self) -> Result<RebuildReport, ProjectionError> {
        self.rebuild_with_progress(|_| {}).await
    }

    /// `rebuild`, calling `progress` with the last position folded after
    /// each batch.
    pub async fn rebuild_with_progress(&self, progress: impl FnMut(u64)) -> Result<RebuildReport, ProjectionError> {
        let started = Instant::now();
        let mut fresh = fold_with_progress(&self.store, None, progress).await?;
        let applying = self.applying.lock().await;
        // Fold what was appended while the rebuild ran, then swap.
        loop {
            let batch = self.store.read_all(fresh.position, FOLD_BATCH_EVENTS).await?;
            if batch.is_empty() {
                break;
            }
            for recorded in &batch {
                fresh.apply(recorded, &decode(recorded)?);
            }
        }
        let events = fresh.position;
        *self.model.write().await = fresh;
        self.applied.send_replace(events);
        drop(applying);
        self.save_snapshot().await?;
        Ok(RebuildReport {
            events,
            millis: started.elapsed().as_millis() as u64,
        })
    }

    /// The model as it stood at `as_of`: the events that had happened by then.
    pub async fn as_of(&self, as_of: DateTime<Utc>) -> Result<CrmModel, ProjectionError> {
        fold(&self.store, Some(as_of)).await
    }
}

async fn load_snapshot(store: &Store) -> Result<Option<CrmModel>, ProjectionError> {
    let Some(snapshot) = store.load_snapshot(SNAPSHOT_NAME).await? else {
        return Ok(None);
    };
    match serde_json::from_str::<SnapshotIn>(&snapshot.data) {
        Ok(saved) if saved.model_version == MODEL_VERSION && saved.model.position == snapshot.position => {
            Ok(Some(saved.model))
        }
        Ok(saved) => {
            tracing::info!(
                saved = saved.model_version,
                current = MODEL_VERSION,
                "read-model snapshot is from another version; rebuilding from the log"
            );
            Ok(None)
        }
        Err(error) => {
            tracing::warn!(%error, "read-model snapshot is unreadable; rebuilding from the log");
            Ok(None)
        }
    }
}

/// Folds the log from the start into a new model, in bounded batches. With
/// `occurred_until`, only the events that had happened by then count.
pub async fn fold(store: &Store, occurred_until: Option<DateTime<Utc>>) -> Result<CrmModel, ProjectionError> {
    fold_with_progress(store, occurred_until, |_| {}).await
}

/// `fold`, calling `progress` with the last position read after each batch.
pub async fn fold_with_progress(
    store: &Store,
    occurred_until: Option<DateTime<Utc>>,
    mut progress: impl FnMut(u64),
) -> Result<CrmModel, ProjectionError> {
    let mut model = CrmModel::default();
    let mut after = 0;
    loop {
        let batch = store.read_all(after, FOLD_BATCH_EVENTS).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for recorded in &batch {
            if occurred_until.is_some_and(|until| recorded.occurred_at > until) {
                continue;
            }
            model.apply(recorded, &decode(recorded)?);
        }
        progress(after);
    }
    Ok(model)
}
