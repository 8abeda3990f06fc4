//! Group commit for sends: concurrent sends wait in a bounded queue, a
//! writer takes everything waiting (up to a batch), stores each send in a
//! savepoint of one transaction, commits once, and only then answers each
//! of them. Throughput is then bounded by the disk's flush rate times the
//! batch size instead of one flush per message, and durability is
//! unchanged: nobody is answered before the commit that holds their send.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::send::{send_within, PreparedSend, SendContext, SendOutcome, Sender};
use super::MailboxError;
use crate::storage::{write_transaction, Database, StorageError};

/// Most sends in one transaction.
const MAX_BATCH: usize = 256;
/// Sends waiting for a writer before new ones wait to enter (backpressure).
const QUEUE: usize = 4_096;

struct Job {
    context: Arc<SendContext>,
    sender: Sender,
    prepared: PreparedSend,
    reply: oneshot::Sender<Result<SendOutcome, MailboxError>>,
}

/// The queue in front of the writers.
pub struct SendQueue {
    jobs: mpsc::Sender<Job>,
}

impl SendQueue {
    /// Starts `writers` writer threads (SQLite: one is right, it has one
    /// write lock; PostgreSQL: a few overlap their commits).
    /// `batch_sizes` hears how many sends each transaction held.
    pub fn start(db: Database, writers: usize, batch_sizes: Histogram) -> Self {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..writers.max(1) {
            let (db, receiver, sizes) = (db.clone(), receiver.clone(), batch_sizes.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("homing-writer-{index}"))
                .spawn(move || writer(db, receiver, sizes));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a send writer");
            }
        }
        Self { jobs }
    }

    /// Sends waiting for a writer.
    pub fn depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Queues a send and waits for the commit that holds it.
    pub async fn send(
        &self,
        context: Arc<SendContext>,
        sender: Sender,
        prepared: PreparedSend,
    ) -> Result<SendOutcome, MailboxError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            context,
            sender,
            prepared,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| StorageError::Unavailable("the send writers stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the send writer failed".into()))?
    }
}

/// Takes what is waiting, up to a batch; blocks for the first job only.
fn next_batch(receiver: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut receiver = match receiver.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let first = receiver.blocking_recv()?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn writer(db: Database, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, sizes: Histogram) {
    while let Some(mut batch) = next_batch(&receiver) {
        for attempt in 1..=ATTEMPTS {
            sizes.observe(batch.len() as f64);
            let results = commit(&db, &batch);
            let mut retry = Vec::new();
            for (job, result) in batch.into_iter().zip(results) {
                if attempt < ATTEMPTS && result.as_ref().is_err_and(is_transient) {
                    retry.push(job);
                } else {
                    let _ = job.reply.send(result);
                }
            }
            if retry.is_empty() {
                break;
            }
            batch = retry;
        }
    }
}

/// Tries a send gets when PostgreSQL picks it as a deadlock victim or the
/// batch's commit fails for a reason that a second try can clear.
const ATTEMPTS: usize = 3;

/// Sends of one batch lock the recipients' device rows in whatever order
/// they arrive, so two writers can deadlock; PostgreSQL then fails one
/// statement, which its savepoint rolls back alone. Such a send is tried
/// again in the next transaction instead of failing the request.
fn is_transient(error: &MailboxError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        MailboxError::Storage(StorageError::Query(Error::DatabaseError(kind, info))) => {
            matches!(kind, DatabaseErrorKind::SerializationFailure)
                || info.message().contains("deadlock detected")
                || info.message().contains("database is locked")
        }
        MailboxError::Storage(StorageError::Unavailable(_)) => true,
        _ => false,
    }
}

/// Runs one transaction over `batch`: one result per job, in order. When
/// the commit itself fails nothing in the batch is stored, and every job
/// gets that failure.
fn commit(db: &Database, batch: &[Job]) -> Vec<Result<SendOutcome, MailboxError>> {
    let failed = |error: String| {
        (0..batch.len())
            .map(|_| {
                Err(MailboxError::Storage(StorageError::Unavailable(
                    error.clone(),
                )))
            })
            .collect()
    };
    let mut conn = match db.get() {
        Ok(conn) => conn,
        Err(error) => return failed(error.to_string()),
    };
    let mut results = Vec::with_capacity(batch.len());
    let committed = write_transaction(&mut conn, |conn| {
        for job in batch {
            results.push(send_within(conn, &job.context, &job.sender, &job.prepared));
        }
        Ok::<_, MailboxError>(())
    });
    match committed {
        Ok(()) => results,
        Err(error) => failed(error.to_string()),
    }
}
