//! Group commit. Every append goes through one writer task, which takes all
//! requests waiting in its queue (up to a limit) and commits them in a single
//! transaction, so many concurrent clients share one commit and one fsync.
//! A caller is answered only after its transaction has committed: nothing
//! acknowledged can be lost, even if the process is killed right after.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::Backend;
use crate::hook::{self, HookSlot};
use crate::{AppendRequest, AppendResult, StoreError};

/// Most requests committed in one transaction.
pub const GROUP_COMMIT_REQUESTS_MAX: usize = 512;
/// Most events committed in one transaction (a batch stops growing once past it).
pub const GROUP_COMMIT_EVENTS_MAX: usize = 10_000;
/// Most appends waiting for the writer; further callers wait for room.
pub const WRITER_QUEUE_MAX: usize = 4_096;

pub(crate) struct Pending {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

pub(crate) fn spawn(
    backend: Arc<dyn Backend>,
    head: Arc<watch::Sender<u64>>,
    hook: HookSlot,
) -> (mpsc::Sender<Pending>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(WRITER_QUEUE_MAX);
    let task = tokio::spawn(run(backend, receiver, head, hook));
    (sender, task)
}

async fn run(
    backend: Arc<dyn Backend>,
    mut queue: mpsc::Receiver<Pending>,
    head: Arc<watch::Sender<u64>>,
    hook: HookSlot,
) {
    while let Some(first) = queue.recv().await {
        // Callers answered by the last commit are waking up to send their
        // next append. Let them run once before draining the queue, or the
        // first to arrive is committed alone while the rest wait for the
        // next round.
        tokio::task::yield_now().await;
        let mut n_events = first.request.events.len();
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_REQUESTS_MAX && n_events < GROUP_COMMIT_EVENTS_MAX {
            let Ok(next) = queue.try_recv() else { break };
            n_events += next.request.events.len();
            batch.push(next);
        }
        metrics::gauge!("crm_writer_queue_depth").set(queue.len() as f64);
        metrics::histogram!("crm_commit_batch_requests").record(batch.len() as f64);
        metrics::histogram!("crm_commit_batch_events").record(n_events as f64);
        let hook = hook::current(&hook);
        let started = std::time::Instant::now();
        commit(backend.as_ref(), batch, &head, hook.as_ref()).await;
        metrics::histogram!("crm_commit_seconds").record(started.elapsed().as_secs_f64());
    }
}

async fn commit(
    backend: &dyn Backend,
    batch: Vec<Pending>,
    head: &watch::Sender<u64>,
    hook: Option<&Arc<dyn hook::CommitHook>>,
) {
    let (requests, replies): (Vec<AppendRequest>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    match guarded(backend.commit(&requests, hook)).await {
        Ok((outcomes, covered)) => {
            if let Some(hook) = hook {
                hook.committed(covered);
            }
            answer(outcomes, replies, head);
        }
        Err(error) if requests.len() == 1 => answer(vec![Err(error)], replies, head),
        Err(_) => {
            // Something in the batch failed the whole transaction. Commit each
            // request alone so one bad request cannot sink the others.
            for (request, reply) in requests.into_iter().zip(replies) {
                let outcome = match guarded(backend.commit(std::slice::from_ref(&request), hook)).await {
                    Ok((mut outcomes, covered)) => {
                        if let Some(hook) = hook {
                            hook.committed(covered);
                        }
                        outcomes.pop().expect("a backend answers every request of a batch")
                    }
                    Err(error) => Err(error),
                };
                answer(vec![outcome], vec![reply], head);
            }
        }
    }
}

/// A commit whose panic (a bug, most likely in the hook) fails its batch
/// instead of ending the writer, and with it every append after.
async fn guarded<T>(commit: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(commit)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Internal("an append panicked and was rolled back".into())))
}

/// Moves a log position (the head, or how far a reader has got) forward
/// to `position`, never back, waking its waiters only if it moved.
pub fn advance(watch: &watch::Sender<u64>, position: u64) {
    watch.send_if_modified(|current| {
        let advanced = position > *current;
        *current = (*current).max(position);
        advanced
    });
}

fn answer(
    outcomes: Vec<Result<AppendResult, StoreError>>,
    replies: Vec<oneshot::Sender<Result<AppendResult, StoreError>>>,
    head: &watch::Sender<u64>,
) {
    debug_assert_eq!(outcomes.len(), replies.len(), "one outcome per request");
    let committed = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|r| r.last_position)
        .max();
    if let Some(last) = committed {
        advance(head, last);
    }
    for (outcome, reply) in outcomes.into_iter().zip(replies) {
        if let Err(error) = &outcome {
            metrics::counter!("crm_append_failures_total", "kind" => error.kind()).increment(1);
        }
        // A caller that gave up waiting is not an error: its append stands.
        let _ = reply.send(outcome);
    }
}
