//! Read coalescing. Concurrent reads of one kind (balances, a member's offers) queue
//! here; a few workers each take what has queued (up to a limit) and answer all of it
//! with one statement, so under load many reads share a round trip and the database's
//! per-statement work, while a lone read goes straight through. A worker waits for more
//! only while another worker's statement runs (until it ends, or for `STALL` at most).
//!
//! A worker takes calls off the queue before it sends its statement, so every read's
//! statement starts after the call arrived: a read sees each write that committed before
//! it was made (a till that accrues and then reads gets the new balance), as when every
//! read had its own statement.
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures_util::FutureExt;
use opentelemetry::{KeyValue, metrics::Histogram};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::work_queue::{Batch, Queued, WorkQueue, linked};
use crate::error::AppError;

/// Reads the rows for a batch of keys: one answer per key, in the keys' order (`None`:
/// no such row).
pub(crate) type ReadMany<K, V> = Arc<
    dyn Fn(Vec<K>) -> Pin<Box<dyn Future<Output = Result<Vec<Option<V>>, AppError>> + Send>>
        + Send
        + Sync,
>;

/// For each key, in order, a copy of the first row `is` pairs it with: how a
/// [`ReadMany`] turns a statement's rows (in any order, one per distinct key) into
/// answers. A batch is small, so a scan is cheaper than building a map.
pub(crate) fn answers<K, V: Clone>(
    keys: &[K],
    rows: &[V],
    is: impl Fn(&K, &V) -> bool,
) -> Vec<Option<V>> {
    keys.iter()
        .map(|key| rows.iter().find(|row| is(key, row)).cloned())
        .collect()
}

/// What a queued read gets back.
enum Answer<V> {
    Found(V),
    NotFound,
    /// The shared statement failed: the call reads alone, so it gets its own error.
    Alone,
    /// The database is down or slow: reading alone would wait for it again.
    Failed(AppError),
}

struct Job<K, V> {
    key: K,
    reply: oneshot::Sender<Answer<V>>,
    /// The caller's span: the shared read is traced under (or linked to) it.
    span: tracing::Span,
}

impl<K, V> Queued for Job<K, V> {
    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn gone(&self) -> bool {
        self.reply.is_closed()
    }
}

/// One kind of read, shared through a queue when it has workers. Workers stop when
/// every clone is dropped.
pub(crate) struct Coalescer<K, V> {
    read: ReadMany<K, V>,
    /// `None`: every read runs its own statement.
    queue: Option<mpsc::Sender<Job<K, V>>>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Self {
            read: Arc::clone(&self.read),
            queue: self.queue.clone(),
        }
    }
}

impl<K: Clone + Send + 'static, V: Send + 'static> Coalescer<K, V> {
    /// Every read runs `read` for its own key alone.
    pub fn direct(read: ReadMany<K, V>) -> Self {
        Self { read, queue: None }
    }

    /// Starts `workers` workers answering at most `max_batch` calls at a time with
    /// `read`; `sizes` records how many calls each statement answered. With no workers
    /// (or a batch of 0), as [`Coalescer::direct`]. Needs a Tokio runtime.
    pub fn start(
        name: &'static str,
        workers: usize,
        max_batch: usize,
        sizes: Option<Histogram<u64>>,
        deadline: Duration,
        read: ReadMany<K, V>,
    ) -> Self {
        if workers == 0 || max_batch == 0 {
            return Self::direct(read);
        }
        let (queue, shared) = WorkQueue::new(workers * max_batch * 4);
        for _ in 0..workers {
            let worker = Worker {
                name,
                max_batch,
                deadline,
                sizes: sizes.clone(),
                read: Arc::clone(&read),
                queue: Arc::clone(&shared),
            };
            tokio::spawn(worker.run());
        }
        Self {
            read,
            queue: Some(queue),
        }
    }

    /// The row `key` names (`None`: there is none): through a shared statement when
    /// there are workers; alone when there are none or the shared statement failed, so
    /// that the call gets its own error.
    pub async fn one(&self, key: K) -> Result<Option<V>, AppError> {
        if let Some(queue) = &self.queue {
            let (reply, answer) = oneshot::channel();
            let job = Job {
                key: key.clone(),
                reply,
                span: tracing::Span::current(),
            };
            let stopped = || AppError::Internal(anyhow::anyhow!("read workers stopped"));
            queue.send(job).await.map_err(|_| stopped())?;
            match answer.await.map_err(|_| stopped())? {
                Answer::Found(row) => return Ok(Some(row)),
                Answer::NotFound => return Ok(None),
                Answer::Failed(err) => return Err(err),
                Answer::Alone => {}
            }
        }
        Ok((self.read)(vec![key]).await?.pop().flatten())
    }
}

/// How long a worker with a partial batch waits for another worker's statement to end
/// before it sends its own: past this the other statement is taken to be stuck (a cold
/// page on a large database), and reads should not queue behind it.
const STALL: Duration = Duration::from_millis(2);

struct Worker<K, V> {
    name: &'static str,
    max_batch: usize,
    /// A shared statement that takes longer (a database gone silent) fails every call
    /// in it with UNAVAILABLE, and frees this worker.
    deadline: Duration,
    sizes: Option<Histogram<u64>>,
    read: ReadMany<K, V>,
    queue: Arc<WorkQueue<Job<K, V>>>,
}

impl<K: Clone + Send + 'static, V: Send + 'static> Worker<K, V> {
    /// Adds what has queued to the batch, up to a full one.
    fn gather(&self, batch: &mut Batch<'_, Job<K, V>>) {
        while batch.jobs.len() < self.max_batch {
            let Some(job) = batch.queued() else { break };
            batch.jobs.push(job);
        }
    }

    async fn run(self) {
        while let Some(mut batch) = self.queue.take().await {
            self.gather(&mut batch);
            // While another statement runs, the calls arriving meanwhile would have to
            // wait for a statement anyway: wait for it to end (or to look stuck) and take
            // them all, so that two workers make batches as large as one would. A lone
            // read finds no statement running and goes straight on.
            if batch.jobs.len() < self.max_batch && batch.wait_for_running(STALL).await {
                self.gather(&mut batch);
            }
            let jobs = batch.into_jobs();
            if jobs.is_empty() {
                continue;
            }
            let span = linked(
                &jobs,
                tracing::info_span!(parent: &jobs[0].span, "read_batch", kind = self.name, size = jobs.len()),
            );
            let keys = jobs.iter().map(|j| j.key.clone()).collect();
            // A panic in the read is a bug: this batch's callers hear INTERNAL and the
            // worker goes on serving the others.
            let guarded = std::panic::AssertUnwindSafe(
                tokio::time::timeout(self.deadline, (self.read)(keys)).instrument(span),
            )
            .catch_unwind();
            let read = match self.queue.run(guarded).await {
                Ok(Ok(read)) => read,
                Ok(Err(_)) => Err(AppError::Unavailable(sea_orm::DbErr::Custom(
                    "a shared read ran out of time".into(),
                ))),
                Err(_) => Err(AppError::Internal(anyhow::anyhow!(
                    "a shared read panicked"
                ))),
            };
            let rows = match read {
                Ok(rows) if rows.len() == jobs.len() => rows,
                Ok(rows) => {
                    tracing::error!(
                        kind = self.name,
                        keys = jobs.len(),
                        rows = rows.len(),
                        "shared read answered a different number of keys; each call reads alone"
                    );
                    return_alone(jobs);
                    continue;
                }
                Err(err) if err.is_transient() => {
                    tracing::warn!(error = %err, kind = self.name, size = jobs.len(), "shared read failed; its callers may retry");
                    for job in jobs {
                        let _ = job.reply.send(Answer::Failed(err.again()));
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(error = %err, kind = self.name, size = jobs.len(), "shared read failed; each call reads alone");
                    return_alone(jobs);
                    continue;
                }
            };
            if let Some(sizes) = &self.sizes {
                sizes.record(jobs.len() as u64, &[KeyValue::new("kind", self.name)]);
            }
            for (job, row) in jobs.into_iter().zip(rows) {
                let _ = job.reply.send(row.map_or(Answer::NotFound, Answer::Found));
            }
        }
    }
}

/// Sends each call of a failed shared read back to read alone.
fn return_alone<K, V>(jobs: Vec<Job<K, V>>) {
    for job in jobs {
        let _ = job.reply.send(Answer::Alone);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::{Coalescer, ReadMany, answers};
    use crate::error::AppError;

    #[tokio::test]
    async fn a_failed_shared_read_sends_each_call_to_read_alone() {
        let failed = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&failed);
        // Key k has the row 10 k, key 0 none; a statement for more than one key fails.
        let read: ReadMany<u32, u32> = Arc::new(move |keys: Vec<u32>| {
            let counter = Arc::clone(&counter);
            Box::pin(async move {
                if keys.len() > 1 {
                    counter.fetch_add(1, Ordering::SeqCst);
                    return Err(AppError::Internal(anyhow::anyhow!("shared read failed")));
                }
                Ok(keys.iter().map(|&k| (k != 0).then_some(10 * k)).collect())
            })
        });
        let reads = Coalescer::start("test", 1, 64, None, std::time::Duration::from_secs(5), read);
        let calls: Vec<_> = (0..20u32)
            .map(|k| {
                let reads = reads.clone();
                tokio::spawn(async move { (k, reads.one(k).await) })
            })
            .collect();
        for call in calls {
            let (k, row) = call.await.expect("call");
            assert_eq!(row.expect("read alone"), (k != 0).then_some(10 * k));
        }
        assert!(failed.load(Ordering::SeqCst) > 0, "no shared statement ran");
    }

    #[test]
    fn each_key_gets_its_own_row_in_order_and_a_repeated_key_gets_it_again() {
        let rows = [(2, "two"), (1, "one")];
        assert_eq!(
            answers(&[1, 3, 2, 1], &rows, |key, row| row.0 == *key),
            [Some((1, "one")), None, Some((2, "two")), Some((1, "one"))]
        );
    }
}
