//! The queue that commit batching (accruals) and read coalescing share: calls wait here
//! for a few workers, each of which takes the first call, holds the queue while it adds
//! more (how many, and whether to wait for them, is the worker's own policy), and runs
//! the batch. The queue counts the batches running, so a worker can tell whether the
//! calls arriving now would wait for another batch anyway.
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Mutex, MutexGuard, Notify, mpsc};

/// A call waiting in a [`WorkQueue`].
pub(crate) trait Queued {
    /// The caller's span: the batch's work is traced under (or linked to) it.
    fn span(&self) -> &tracing::Span;
    /// Whether the caller has stopped waiting (deadline, disconnect).
    fn gone(&self) -> bool;
}

pub(crate) struct WorkQueue<J> {
    rx: Mutex<mpsc::Receiver<J>>,
    running: AtomicUsize,
    done: Notify,
}

impl<J: Queued> WorkQueue<J> {
    /// A queue holding up to `capacity` calls, and where callers send them. The workers
    /// see the end of the queue once every sender is dropped.
    pub fn new(capacity: usize) -> (mpsc::Sender<J>, Arc<Self>) {
        let (tx, rx) = mpsc::channel(capacity);
        let queue = Self {
            rx: Mutex::new(rx),
            running: AtomicUsize::new(0),
            done: Notify::new(),
        };
        (tx, Arc::new(queue))
    }

    /// Waits for a call and starts a batch with it, holding the queue (the other workers
    /// wait) until the batch is taken; `None` once every sender has gone.
    pub async fn take(&self) -> Option<Batch<'_, J>> {
        let mut rx = self.rx.lock().await;
        let first = rx.recv().await?;
        Some(Batch {
            queue: self,
            rx,
            jobs: vec![first],
        })
    }

    /// Runs a batch's work, counted as running until it ends.
    pub async fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.running.fetch_add(1, Ordering::AcqRel);
        let out = work.await;
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.done.notify_waiters();
        out
    }
}

/// The span of a batch's work, made a child of the first caller's span by `span`, linked
/// to the other callers' spans.
pub(crate) fn linked<J: Queued>(jobs: &[J], span: tracing::Span) -> tracing::Span {
    for job in jobs.iter().skip(1) {
        span.follows_from(job.span());
    }
    span
}

/// A batch being gathered, holding the queue.
pub(crate) struct Batch<'a, J> {
    queue: &'a WorkQueue<J>,
    rx: MutexGuard<'a, mpsc::Receiver<J>>,
    pub jobs: Vec<J>,
}

impl<J: Queued> Batch<'_, J> {
    /// Whether another worker's batch is running.
    pub fn others_running(&self) -> bool {
        self.queue.running.load(Ordering::Acquire) > 0
    }

    /// A call that is waiting in the queue now.
    pub fn queued(&mut self) -> Option<J> {
        self.rx.try_recv().ok()
    }

    /// The next call to arrive before `until`.
    pub async fn arriving_by(&mut self, until: tokio::time::Instant) -> Option<J> {
        tokio::time::timeout_at(until, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for the batch running now to end, or `stall` at most (a batch stuck behind a
    /// cold page should not hold the calls behind it); false when none was running.
    /// (`&mut`, so that a worker awaiting it needs its calls to be `Send`, not `Sync`.)
    pub async fn wait_for_running(&mut self, stall: Duration) -> bool {
        // Registered before the check, so an end between the two is not missed.
        let done = self.queue.done.notified();
        if !self.others_running() {
            return false;
        }
        let _ = tokio::time::timeout(stall, done).await;
        true
    }

    /// The batch's calls, less those whose callers have gone; releases the queue.
    pub fn into_jobs(self) -> Vec<J> {
        let mut jobs = self.jobs;
        jobs.retain(|j| !j.gone());
        jobs
    }
}
