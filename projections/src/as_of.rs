//! Reports as of a date, kept folded between asks.
//!
//! A report as of T reads the fold of the events that had happened by T
//! (`occurred_at` at or before it), in position order. That fold is a
//! projection of its own, over the log filtered by T: an event recorded
//! after the fold was made changes it only if it happened by T (a backfill,
//! an import of old history), and then folding that event on top gives
//! exactly what folding the whole filtered log again would, since it comes
//! last in position order. So the tables of a fold are kept (up to
//! `ProjectorOptions::as_of_cached` dates, the least recently asked
//! dropped first), each with the log position it has read through, and an
//! ask for the same date reads only the log after that position: events
//! that happened later are passed over, those that happened by T are folded
//! in, by the live catch-up's own write path (`fold_rows`, on a
//! `ScratchFolder`, as a trend folds).
//! Nothing is ever answered from a fold that misses an event it should hold.
//!
//! An auditor asks the other question too: what did the system show at T,
//! the events *recorded* by T (`Cut::Recorded`). Its fold is kept the same
//! way; an event recorded after T is passed over whenever it happened, so a
//! kept answer holds until an erasure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use eventstore::RecordedEvent;

use crate::tables::Tables;

/// Where a report as of a moment cuts the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// What had happened by then: the events whose `occurred_at` is at or
    /// before it (business time, backfills included).
    Happened(DateTime<Utc>),
    /// What the system had recorded by then: the events whose
    /// `recorded_at` is at or before it (system time), as the reports
    /// showed at that moment.
    Recorded(DateTime<Utc>),
}

impl Cut {
    /// The cut a report asks for with `as_of` or `as_recorded` (neither:
    /// the live report); both at once ask two questions and are refused.
    pub fn asked(as_of: Option<DateTime<Utc>>, as_recorded: Option<DateTime<Utc>>) -> Result<Option<Self>, String> {
        match (as_of, as_recorded) {
            (Some(_), Some(_)) => Err(
                "as_of (what had happened by then) and as_recorded (what had been recorded \
                 by then) ask two questions: give one"
                    .into(),
            ),
            (Some(at), None) => Ok(Some(Self::Happened(at))),
            (None, Some(at)) => Ok(Some(Self::Recorded(at))),
            (None, None) => Ok(None),
        }
    }

    /// The moment the report measures ages from.
    pub fn at(self) -> DateTime<Utc> {
        match self {
            Self::Happened(at) | Self::Recorded(at) => at,
        }
    }

    /// Whether the fold cut here holds `recorded`.
    pub fn holds(self, recorded: &RecordedEvent) -> bool {
        match self {
            Self::Happened(at) => recorded.occurred_at <= at,
            Self::Recorded(at) => recorded.recorded_at <= at,
        }
    }
}

/// Dates whose folds a process keeps by default (each a scratch SQLite
/// file, about as large as the read-model tables were then).
pub const AS_OF_CACHED: usize = 4;

/// The folds kept, most recently asked last.
#[derive(Debug)]
pub(crate) struct AsOfCache {
    capacity: usize,
    entries: std::sync::Mutex<Vec<Arc<Entry>>>,
    /// Whole folds made from the start of the log (not updates of a kept one).
    folds: AtomicU64,
    /// Trends answered, most recently asked last: what was asked (its
    /// dates and reports, as text), the answers, the log position read.
    trends: std::sync::Mutex<Vec<(String, Vec<serde_json::Value>, u64)>>,
}

/// One date's place in the cache. Its fold is taken out while it is brought
/// up to date, and put back once a report has read it: a fold that fails
/// halfway is never put back, and the next ask folds from the start.
#[derive(Debug)]
pub(crate) struct Entry {
    cut: Cut,
    pub(crate) held: tokio::sync::Mutex<Option<FoldedAsOf>>,
}

/// A fold as of a date in tables of its own, in a scratch directory that
/// goes when this is dropped.
#[derive(Debug)]
pub(crate) struct FoldedAsOf {
    /// The tables, read-only; a `ScratchFolder` opened on `file` folds into
    /// them.
    pub(crate) tables: Tables,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) file: std::path::PathBuf,
    /// The position of the last event folded (the tables' state row).
    pub(crate) folded: u64,
    /// The position of the last event read, folded or passed over.
    pub(crate) read: u64,
}

impl AsOfCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: std::sync::Mutex::new(Vec::new()),
            folds: AtomicU64::new(0),
            trends: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The answers kept for the trend `key`, and the position they read to.
    pub(crate) fn kept_trend(&self, key: &str) -> Option<(Vec<serde_json::Value>, u64)> {
        let trends = self.trends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        trends
            .iter()
            .find(|(kept, _, _)| kept == key)
            .map(|(_, answers, read)| (answers.clone(), *read))
    }

    /// Keeps a trend's answers, dropping the least recently asked past the
    /// capacity.
    pub(crate) fn keep_trend(&self, key: String, answers: Vec<serde_json::Value>, read: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut trends = self.trends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        trends.retain(|(kept, _, _)| *kept != key);
        trends.push((key, answers, read));
        if trends.len() > self.capacity {
            trends.remove(0);
        }
    }

    /// The place of the fold cut at `cut`, made if there is none (dropping
    /// the least recently asked past the capacity); none when nothing is
    /// kept.
    pub(crate) fn entry(&self, cut: Cut) -> Option<Arc<Entry>> {
        if self.capacity == 0 {
            return None;
        }
        // A panic while this lock is held cannot leave the list half made.
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = match entries.iter().position(|entry| entry.cut == cut) {
            Some(n) => entries.remove(n),
            None => Arc::new(Entry {
                cut,
                held: tokio::sync::Mutex::new(None),
            }),
        };
        entries.push(Arc::clone(&entry));
        if entries.len() > self.capacity {
            // Whoever still reads a dropped fold keeps it until done.
            entries.remove(0);
        }
        Some(entry)
    }

    /// Drops every kept fold and trend answer (their scratch files go as
    /// soon as nobody reads them).
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.trends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// The cuts whose folds are kept.
    pub(crate) fn kept(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub(crate) fn count_fold(&self) {
        self.folds.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn folds(&self) -> u64 {
        self.folds.load(Ordering::Relaxed)
    }
}
