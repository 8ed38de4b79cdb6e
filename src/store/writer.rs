//! Group commit. Submissions queue on a channel; writer tasks take
//! everything queued (up to a cap) and commit it as one transaction, then
//! answer each submitter. Under load one fsync serves a whole batch; an idle
//! engine commits a lone submission at once.

use super::unit::JobResult;
use super::{StoreError, Submission, SubmitError};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Most submissions committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// A backend's way of committing one batch atomically.
#[async_trait]
pub(crate) trait BatchRunner: Send + Sync + 'static {
    async fn run(&self, subs: &[Submission]) -> Result<Vec<JobResult>, StoreError>;
}

struct Job {
    sub: Submission,
    reply: oneshot::Sender<JobResult>,
}

/// Where submissions go. Dropping every handle stops the writers.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts `tasks` writer tasks over one queue.
    pub fn spawn<R: BatchRunner>(runner: Arc<R>, tasks: usize) -> Self {
        let (queue, rx) = mpsc::channel::<Job>(MAX_BATCH * 8);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..tasks.max(1) {
            tokio::spawn(writer_loop(runner.clone(), rx.clone()));
        }
        Self { queue }
    }

    pub async fn submit(&self, sub: Submission) -> JobResult {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { sub, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| {
            SubmitError::Store(StoreError::Unavailable("the writer has stopped".into()))
        })?
    }
}

async fn writer_loop<R: BatchRunner>(runner: Arc<R>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let subs: Vec<Submission> = jobs.iter().map(|j| j.sub.clone()).collect();
        match runner.run(&subs).await {
            Ok(results) => {
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
                        Ok(mut r) => r.pop().unwrap_or_else(|| {
                            Err(StoreError::Corrupt("batch returned no result".into()).into())
                        }),
                        Err(e) => Err(e.into()),
                    };
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(e.to_string()).into()));
                }
            }
        }
    }
}
