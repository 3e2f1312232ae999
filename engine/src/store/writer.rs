//! The single writer: a thread that owns every write transaction and commits whatever has
//! queued up while the previous commit was in flight, so the cost of an fsync is shared by
//! all the transitions that waited for it (group commit).

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Batch, Store, StoreError};
use crate::metrics::Metrics;

/// The outcome of a commit, shared by every batch that went into it.
pub type CommitResult = Result<(), Arc<StoreError>>;

struct Job {
    batch: Batch,
    done: oneshot::Sender<CommitResult>,
}

/// Handle to the writer thread. Dropping it lets the thread finish the queue and exit;
/// [`Writer::finish`] also waits for that.
#[derive(Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: thread::JoinHandle<()>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Store, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("rivet-store-writer".into())
            .spawn(move || run(&store, &queue, &metrics))?;
        Ok(Self { jobs, thread })
    }

    /// Commits what is queued, then stops the thread (and closes its copy of the store).
    pub fn finish(self) {
        drop(self.jobs);
        if self.thread.join().is_err() {
            tracing::error!("the store writer panicked");
        }
    }

    /// Queues `batch`; the receiver resolves once it is durable (or failed).
    pub fn submit(&self, batch: Batch) -> oneshot::Receiver<CommitResult> {
        let (done, result) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job { batch, done }) {
            let _ = job.done.send(Err(Arc::new(StoreError::Corrupt(
                "the store writer has stopped".into(),
            ))));
        }
        result
    }
}

fn run(store: &Store, queue: &mpsc::Receiver<Job>, metrics: &Metrics) {
    while let Ok(first) = queue.recv() {
        let mut batch = first.batch;
        let mut waiting = vec![first.done];
        while let Ok(more) = queue.try_recv() {
            batch.absorb(more.batch);
            waiting.push(more.done);
        }
        let started = Instant::now();
        let result = store.commit(&batch).map_err(Arc::new);
        metrics.record_commit(started.elapsed(), batch.hosts.len() + batch.forget.len());
        if let Err(err) = &result {
            tracing::error!(error = %err, "commit failed");
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}
