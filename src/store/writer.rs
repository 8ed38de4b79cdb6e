//! Group commit. Submissions queue on a channel; writer tasks take
//! everything queued (up to a cap) and commit it as one transaction, then
//! answer each submitter. Under load one fsync serves a whole batch; an idle
//! engine commits a lone submission at once.
//!
//! With several writer tasks (PostgreSQL), each has its own queue and a
//! submission goes to the queue its booking (else its payment intent, else
//! its stream) hashes to: events of one booking meet in one batch, folded
//! once, instead of in several concurrent transactions that wait for each
//! other's locks (measured: a quarter of each batch's time was that wait).

use super::unit::JobResult;
use super::{StoreError, Submission, SubmitError};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Most submissions committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// Most submissions waiting for a writer. Beyond it a submission is refused
/// at once (the caller answers 503, Stripe retries) instead of queueing
/// without bound.
pub(crate) const MAX_QUEUED: usize = MAX_BATCH * 8;

/// A backend's way of committing one batch atomically.
#[async_trait]
pub(crate) trait BatchRunner: Send + Sync + 'static {
    async fn run(&self, subs: &[Submission]) -> Result<Vec<JobResult>, StoreError>;
}

struct Job {
    sub: Submission,
    reply: oneshot::Sender<JobResult>,
}

/// Where submissions go, and the writer tasks that take them. The tasks
/// are owned here: [`Writer::close`] stops taking submissions, lets the
/// tasks commit what is queued and waits for them; [`Writer::alive`] says
/// whether every task still runs (a task that panicked or stopped makes the
/// engine unhealthy: `/health` answers 503).
#[derive(Clone)]
pub(crate) struct Writer {
    queues: Vec<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
}

/// The writer's figures for monitoring: submissions waiting now, and
/// histograms of every committed batch's size and commit time.
#[derive(Debug, Clone)]
pub struct WriterStats {
    pub queued: usize,
    pub batch_size: prometheus_client::metrics::histogram::Histogram,
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

struct Shared {
    tasks: usize,
    batch_size: prometheus_client::metrics::histogram::Histogram,
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
    running: AtomicUsize,
    closed: AtomicBool,
    /// When the latest batch failed (ms since `epoch`), 0 after a success:
    /// a writer that cannot write makes `/health` 503 until one commits.
    last_failure_ms: AtomicU64,
    epoch: std::time::Instant,
    stop: tokio::sync::watch::Sender<bool>,
    handles: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Counts a task as running until it ends, however it ends (a panic too).
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Writer {
    /// Starts `tasks` writer tasks over one queue.
    pub fn spawn<R: BatchRunner>(runner: Arc<R>, tasks: usize) -> Self {
        Self::spawn_with_capacity(runner, tasks, MAX_QUEUED)
    }

    fn spawn_with_capacity<R: BatchRunner>(runner: Arc<R>, tasks: usize, capacity: usize) -> Self {
        let tasks = tasks.max(1);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
        let shared = Arc::new(Shared {
            tasks,
            // 1, 2, 4 … 512 submissions (MAX_BATCH).
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            // 0.25 ms … about 4 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            running: AtomicUsize::new(tasks),
            closed: AtomicBool::new(false),
            last_failure_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            stop,
            handles: Mutex::new(Vec::new()),
        });
        let mut queues = Vec::with_capacity(tasks);
        let mut handles = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            // The bound is the writer's, shared out over its queues.
            let (queue, rx) = mpsc::channel::<Job>((capacity / tasks).max(1));
            queues.push(queue);
            let guard = RunningGuard(shared.clone());
            handles.push(tokio::spawn(writer_loop(
                runner.clone(),
                rx,
                stopped.clone(),
                guard,
            )));
        }
        if let Ok(mut slot) = shared.handles.try_lock() {
            *slot = handles;
        }
        Self { queues, shared }
    }

    /// Every writer task is running and the writer is not closed.
    pub fn alive(&self) -> bool {
        !self.shared.closed.load(Ordering::SeqCst)
            && self.shared.running.load(Ordering::SeqCst) == self.shared.tasks
    }

    /// The latest batch failed, less than `within` ago, and none has
    /// committed since. (Older failures are not held against it: with no
    /// writes to try, there is no news; the next write tells.)
    pub fn failing(&self, within: std::time::Duration) -> bool {
        let last = self.shared.last_failure_ms.load(Ordering::SeqCst);
        last != 0 && {
            let now = self.shared.epoch.elapsed().as_millis() as u64;
            now.saturating_sub(last) < within.as_millis() as u64
        }
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            queued: self
                .queues
                .iter()
                .map(|q| q.max_capacity() - q.capacity())
                .sum(),
            batch_size: self.shared.batch_size.clone(),
            commit_seconds: self.shared.commit_seconds.clone(),
        }
    }

    /// Stops taking submissions, commits what is queued, waits for the
    /// tasks to end.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.shared.stop.send(true);
        let handles = std::mem::take(&mut *self.shared.handles.lock().await);
        for h in handles {
            let _ = h.await;
        }
    }

    pub async fn submit(&self, sub: Submission) -> JobResult {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the writer is closed".into()).into());
        }
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[partition(&sub, self.queues.len())];
        queue.try_send(Job { sub, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("the writer's queue is full; retry later".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Unavailable("the writer has stopped".into())
            }
        })?;
        answer.await.map_err(|_| {
            SubmitError::Store(StoreError::Unavailable("the writer has stopped".into()))
        })?
    }
}

/// The queue of `sub` among `n`: by booking, else payment intent, else
/// stream.
fn partition(sub: &Submission, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if n <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match (sub.command.booking_id(), sub.command.payment_intent_id()) {
        (Some(b), _) => b.hash(&mut h),
        (None, Some(pi)) => pi.hash(&mut h),
        (None, None) => sub.command.stream().hash(&mut h),
    }
    (h.finish() % n as u64) as usize
}

async fn writer_loop<R: BatchRunner>(
    runner: Arc<R>,
    mut rx: mpsc::Receiver<Job>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    running: RunningGuard,
) {
    loop {
        let mut jobs = Vec::new();
        {
            if *stop.borrow() {
                // Closing: commit what is queued, then end.
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => jobs.push(job),
                        None => return,
                    },
                    _ = stop.changed() => continue,
                }
            }
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let subs: Vec<Submission> = jobs.iter().map(|j| j.sub.clone()).collect();
        let started = std::time::Instant::now();
        let outcome = runner.run(&subs).await;
        let shared = &running.0;
        let mark = |failed: bool| {
            let now = (shared.epoch.elapsed().as_millis() as u64).max(1);
            // The latest failure's time: while failures go on, the window
            // runs from the newest one (a disk full for minutes keeps
            // `/health` at 503 for as long as writes fail).
            shared
                .last_failure_ms
                .store(if failed { now } else { 0 }, Ordering::SeqCst);
        };
        match outcome {
            Ok(results) => {
                mark(false);
                running.0.batch_size.observe(subs.len() as f64);
                running
                    .0
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) if jobs.len() > 1 => {
                // One poisoned submission must not fail its neighbours:
                // commit each alone.
                tracing::warn!(error = %e, batch = jobs.len(), "batch failed, retrying one by one");
                for job in jobs {
                    let result = match runner.run(std::slice::from_ref(&job.sub)).await {
                        Ok(mut r) => {
                            mark(false);
                            r.pop().unwrap_or_else(|| {
                                Err(StoreError::Corrupt("batch returned no result".into()).into())
                            })
                        }
                        Err(e) => {
                            mark(true);
                            Err(e.into())
                        }
                    };
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                mark(true);
                tracing::warn!(error = %e, "batch failed");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(e.to_string()).into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decide::RequestBooking;
    use crate::domain::{Command, Source};

    /// Commits nothing until told to: lets a test fill the queue.
    struct Held(tokio::sync::Semaphore);

    #[async_trait]
    impl BatchRunner for Held {
        async fn run(&self, subs: &[Submission]) -> Result<Vec<JobResult>, StoreError> {
            let _permit = self.0.acquire().await;
            Err(StoreError::Unavailable(format!(
                "held batch of {}",
                subs.len()
            )))
        }
    }

    fn sub(n: usize) -> Submission {
        Submission::new(
            Command::RequestBooking(RequestBooking {
                booking_id: format!("b{n}"),
                trip_id: "t".into(),
                user_id: "u".into(),
                passengers: 1,
            }),
            Source::Api,
            chrono::Utc::now(),
        )
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_instead_of_growing() {
        let runner = Arc::new(Held(tokio::sync::Semaphore::new(0)));
        let writer = Writer::spawn_with_capacity(runner.clone(), 1, 2);
        // The writer takes one job and holds it; two more fill the queue.
        let mut waiting = Vec::new();
        for n in 0..3 {
            let w = writer.clone();
            waiting.push(tokio::spawn(async move { w.submit(sub(n)).await }));
            tokio::task::yield_now().await;
        }
        // Wait until the queue is full (the writer holds one, two queued).
        while writer.queues[0].capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = writer.submit(sub(9)).await;
        assert!(
            matches!(&refused, Err(SubmitError::Store(StoreError::Unavailable(m))) if m.contains("queue is full")),
            "{refused:?}"
        );
        runner.0.add_permits(100);
        for w in waiting {
            let answered = w.await.map(|r| r.is_err());
            assert_eq!(
                answered.ok(),
                Some(true),
                "held batches answer, they do not hang"
            );
        }
    }

    #[test]
    fn one_bookings_submissions_share_a_queue() {
        for n in 0..50 {
            let q = partition(&sub(n), 4);
            assert!(q < 4);
            assert_eq!(partition(&sub(n), 4), q, "stable");
        }
        let spread: std::collections::HashSet<usize> =
            (0..50).map(|n| partition(&sub(n), 4)).collect();
        assert!(spread.len() > 1, "bookings spread over the queues");
        assert_eq!(partition(&sub(7), 1), 0);
    }
}
