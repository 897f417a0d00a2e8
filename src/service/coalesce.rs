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
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::{KeyValue, metrics::Histogram};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tracing::Instrument;

use crate::error::AppError;

/// Reads the rows for a batch of keys: one answer per key, in the keys' order (`None`:
/// no such row).
pub(super) type ReadMany<K, V> = Arc<
    dyn Fn(Vec<K>) -> Pin<Box<dyn Future<Output = Result<Vec<Option<V>>, AppError>> + Send>>
        + Send
        + Sync,
>;

/// For each key, in order, a copy of the first row `is` pairs it with: how a
/// [`ReadMany`] turns a statement's rows (in any order, one per distinct key) into
/// answers. A batch is small, so a scan is cheaper than building a map.
pub(super) fn answers<K, V: Clone>(
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
}

struct Job<K, V> {
    key: K,
    reply: oneshot::Sender<Answer<V>>,
    /// The caller's span: the shared read is traced under (or linked to) it.
    span: tracing::Span,
}

/// One kind of read, shared through a queue when it has workers. Workers stop when
/// every clone is dropped.
pub(super) struct Coalescer<K, V> {
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
        read: ReadMany<K, V>,
    ) -> Self {
        if workers == 0 || max_batch == 0 {
            return Self::direct(read);
        }
        let (queue, rx) = mpsc::channel(workers * max_batch * 4);
        let shared = Arc::new(Queue {
            rx: Mutex::new(rx),
            reading: AtomicUsize::new(0),
            done: Notify::new(),
        });
        for _ in 0..workers {
            let worker = Worker {
                name,
                max_batch,
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

/// What the workers of one kind share: the queue, and how many statements are running.
struct Queue<K, V> {
    rx: Mutex<mpsc::Receiver<Job<K, V>>>,
    reading: AtomicUsize,
    done: Notify,
}

struct Worker<K, V> {
    name: &'static str,
    max_batch: usize,
    sizes: Option<Histogram<u64>>,
    read: ReadMany<K, V>,
    queue: Arc<Queue<K, V>>,
}

impl<K: Clone + Send + 'static, V: Send + 'static> Worker<K, V> {
    /// Adds what has queued to `jobs`, up to a full batch.
    fn gather(&self, rx: &mut mpsc::Receiver<Job<K, V>>, jobs: &mut Vec<Job<K, V>>) {
        while jobs.len() < self.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    }

    async fn run(self) {
        loop {
            let mut jobs = {
                // The worker holding the queue gathers; the others wait for it.
                let mut rx = self.queue.rx.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut jobs = vec![first];
                self.gather(&mut rx, &mut jobs);
                // While another statement runs, the calls arriving meanwhile would have
                // to wait for a statement anyway: wait for it to end (or to look stuck)
                // and take them all, so that two workers make batches as large as one
                // would. A lone read finds no statement running and goes straight on.
                if jobs.len() < self.max_batch {
                    let done = self.queue.done.notified();
                    if self.queue.reading.load(Ordering::Acquire) > 0 {
                        let _ = tokio::time::timeout(STALL, done).await;
                        self.gather(&mut rx, &mut jobs);
                    }
                }
                jobs
            };
            // Nobody waits for these any more (deadline, disconnect).
            jobs.retain(|j| !j.reply.is_closed());
            if jobs.is_empty() {
                continue;
            }
            let span = tracing::info_span!(parent: &jobs[0].span, "read_batch", kind = self.name, size = jobs.len());
            for job in &jobs[1..] {
                span.follows_from(&job.span);
            }
            let keys = jobs.iter().map(|j| j.key.clone()).collect();
            self.queue.reading.fetch_add(1, Ordering::AcqRel);
            let read = (self.read)(keys).instrument(span).await;
            self.queue.reading.fetch_sub(1, Ordering::AcqRel);
            self.queue.done.notify_waiters();
            match read {
                Ok(rows) if rows.len() == jobs.len() => {
                    if let Some(sizes) = &self.sizes {
                        sizes.record(jobs.len() as u64, &[KeyValue::new("kind", self.name)]);
                    }
                    for (job, row) in jobs.into_iter().zip(rows) {
                        let _ = job.reply.send(row.map_or(Answer::NotFound, Answer::Found));
                    }
                }
                outcome => {
                    match outcome {
                        Err(err) => {
                            tracing::warn!(error = %err, kind = self.name, size = jobs.len(), "shared read failed; each call reads alone")
                        }
                        Ok(rows) => {
                            tracing::error!(
                                kind = self.name,
                                keys = jobs.len(),
                                rows = rows.len(),
                                "shared read answered a different number of keys; each call reads alone"
                            )
                        }
                    }
                    for job in jobs {
                        let _ = job.reply.send(Answer::Alone);
                    }
                }
            }
        }
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
        let reads = Coalescer::start("test", 1, 64, None, read);
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
