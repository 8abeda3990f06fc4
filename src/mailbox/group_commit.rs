//! Group commit for the mailbox's hot writes (sends and acks): concurrent
//! writes wait in a bounded queue, a writer takes everything waiting (up to
//! a batch), runs them in one transaction, commits once, and only then
//! answers each of them. Throughput is then bounded by the disk's flush
//! rate times the batch size instead of one flush per request, and
//! durability is unchanged: nobody is answered before the commit that holds
//! their write.
//!
//! A batch first runs without savepoints, which on PostgreSQL cost two
//! round trips per write. A write that is refused before it writes anything
//! (stale devices, a full mailbox) leaves the transaction clean, so that is
//! fine; a write that fails after writing (a unique violation, a deadlock)
//! rolls the whole batch back, and the batch runs again with a savepoint
//! around each write so that the failure stays with its own request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::send::{send_within, PreparedSend, SendContext, SendOutcome, Sender};
use super::send_batch::{store_batch, SendJob};
use super::MailboxError;
use crate::storage::{write_transaction, Database, DbConnection, Pooled, StorageError};

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;
/// Writes waiting for a writer before new ones wait to enter (backpressure).
const QUEUE: usize = 4_096;
/// Tries a write gets when PostgreSQL picks it as a deadlock victim or the
/// batch's commit fails for a reason that a second try can clear.
const ATTEMPTS: usize = 3;

/// How a write runs inside its batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Straight in the shared transaction: any failure other than a
    /// refusal rolls the whole batch back.
    Shared,
    /// In a savepoint of its own, which the writer has already taken.
    Savepoint,
}

/// What running one write did to the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It succeeded, or was refused before writing anything.
    Clean,
    /// It failed and may have written part of its rows; `transient` when
    /// the next transaction may succeed where this one did not.
    Failed { transient: bool },
}

/// One queued write, type-erased so sends and acks share the writers.
trait Work: Send {
    /// Runs inside the batch's transaction and keeps the result.
    fn run(&mut self, conn: &mut DbConnection, isolation: Isolation) -> Ran;
    /// Answers the caller once the batch's fate is known.
    fn answer(self: Box<Self>, commit: Result<(), String>);
    /// A send, which a shared batch stores together with the others.
    fn as_send(&mut self) -> Option<&mut SendJob> {
        None
    }
    fn is_send(&self) -> bool {
        false
    }
}

/// Runs `work` as `isolation` says and classifies its result.
fn run_isolated<T>(
    conn: &mut DbConnection,
    isolation: Isolation,
    work: impl FnOnce(&mut DbConnection) -> Result<T, MailboxError>,
) -> (Result<T, MailboxError>, Ran) {
    use diesel::Connection;
    let result = match isolation {
        Isolation::Shared => work(conn),
        Isolation::Savepoint => conn.transaction(work),
    };
    let ran = match &result {
        Err(error) if !error.is_refusal() => Ran::Failed {
            transient: is_transient(error),
        },
        _ => Ran::Clean,
    };
    (result, ran)
}

/// What a write's caller hears, given its result and its batch's commit.
fn settle<T>(
    commit: Result<(), String>,
    result: Option<Result<T, MailboxError>>,
) -> Result<T, MailboxError> {
    match (commit, result) {
        // Out of tries on a deadlock or the like: say "try again" (503),
        // not "server error".
        (Ok(()), Some(Err(error))) if is_transient(&error) => {
            Err(StorageError::Unavailable(error.to_string()).into())
        }
        (Ok(()), Some(result)) => result,
        // The commit failed: nothing in the batch is stored.
        (Err(error), _) => Err(StorageError::Unavailable(error).into()),
        (Ok(()), None) => Err(StorageError::Unavailable("the write did not run".into()).into()),
    }
}

/// A queued send and where its answer goes.
struct QueuedSend {
    job: SendJob,
    reply: oneshot::Sender<Result<SendOutcome, MailboxError>>,
}

impl Work for QueuedSend {
    fn run(&mut self, conn: &mut DbConnection, isolation: Isolation) -> Ran {
        let job = &self.job;
        let (result, ran) = run_isolated(conn, isolation, |conn| {
            send_within(conn, isolation, &job.context, &job.sender, &job.prepared)
        });
        self.job.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let _ = self.reply.send(settle(commit, self.job.result));
    }

    fn as_send(&mut self) -> Option<&mut SendJob> {
        Some(&mut self.job)
    }

    fn is_send(&self) -> bool {
        true
    }
}

struct Job<T, F> {
    work: F,
    result: Option<Result<T, MailboxError>>,
    reply: oneshot::Sender<Result<T, MailboxError>>,
}

impl<T, F> Work for Job<T, F>
where
    T: Send,
    F: FnMut(&mut DbConnection, Isolation) -> Result<T, MailboxError> + Send,
{
    fn run(&mut self, conn: &mut DbConnection, isolation: Isolation) -> Ran {
        let work = &mut self.work;
        let (result, ran) = run_isolated(conn, isolation, |conn| work(conn, isolation));
        self.result = Some(result);
        ran
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let _ = self.reply.send(settle(commit, self.result));
    }
}

type Queued = Box<dyn Work>;
/// A write and when it was queued.
type Timed = (Instant, Queued);

/// The queue in front of the writers.
pub struct WriteQueue {
    jobs: mpsc::Sender<(Instant, Queued)>,
}

/// What the writers report: how many writes each transaction held, how
/// long a write waited for its batch, and how long each batch's
/// transaction took to commit. A slow send is one of the latter two.
#[derive(Clone)]
pub struct WriteTimings {
    pub batch_sizes: Histogram,
    pub queue_wait_seconds: Histogram,
    pub commit_seconds: Histogram,
}

impl WriteQueue {
    /// Starts `writers` writer threads (one is right for SQLite, which has
    /// one write lock, and for PostgreSQL when writes share rows).
    /// `timings` hears about every batch.
    pub fn start(db: Database, writers: usize, timings: WriteTimings) -> Self {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..writers.max(1) {
            let (db, receiver, timings) = (db.clone(), receiver.clone(), timings.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("homing-writer-{index}"))
                .spawn(move || writer(db, receiver, timings));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a writer");
            }
        }
        Self { jobs }
    }

    /// Writes waiting for a writer.
    pub fn depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Queues `work` and waits for the commit that holds it. `work` runs
    /// inside a shared transaction, perhaps more than once (after another
    /// write's failure or a deadlock). It must refuse (any error but
    /// `Storage` and `Invalid`) only before its first write.
    pub async fn run<T, F>(&self, work: F) -> Result<T, MailboxError>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConnection, Isolation) -> Result<T, MailboxError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            work,
            result: None,
            reply,
        });
        self.jobs
            .send((Instant::now(), job))
            .await
            .map_err(|_| StorageError::Unavailable("the writers stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the writer failed".into()))?
    }

    /// Queues a send and waits for the commit that holds it.
    pub async fn send(
        &self,
        context: Arc<SendContext>,
        sender: Sender,
        prepared: PreparedSend,
    ) -> Result<SendOutcome, MailboxError> {
        let (reply, answer) = oneshot::channel();
        let job = SendJob {
            context,
            sender,
            prepared,
            result: None,
        };
        self.jobs
            .send((Instant::now(), Box::new(QueuedSend { job, reply })))
            .await
            .map_err(|_| StorageError::Unavailable("the writers stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the writer failed".into()))?
    }
}

/// Takes what is waiting, up to a batch; blocks for the first job only.
/// The next batch: the first write to come, and all queued behind it up to
/// `MAX_BATCH`. Each write's wait in the queue is reported as it is taken.
fn next_batch(receiver: &Mutex<mpsc::Receiver<Timed>>, waits: &Histogram) -> Option<Vec<Queued>> {
    let mut receiver = match receiver.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let (queued_at, first) = receiver.blocking_recv()?;
    let taken = Instant::now();
    waits.observe(taken.saturating_duration_since(queued_at).as_secs_f64());
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok((queued_at, job)) => {
                waits.observe(taken.saturating_duration_since(queued_at).as_secs_f64());
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

fn writer(db: Database, receiver: Arc<Mutex<mpsc::Receiver<Timed>>>, timings: WriteTimings) {
    let sizes = &timings.batch_sizes;
    let timed_commit = |held: &mut Option<Pooled>, batch: &mut [Queued], isolation| {
        let started = Instant::now();
        let outcome = commit(&db, held, batch, isolation);
        timings
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    };
    // The connection of the last batch that committed, kept for the next:
    // a checkout from the pool would test it with a round trip first. A
    // batch that fails gives it back, and the next takes a tested one.
    let mut held = None;
    while let Some(mut batch) = next_batch(&receiver, &timings.queue_wait_seconds) {
        sizes.observe(batch.len() as f64);
        // Debug level: free unless someone is following a slow write.
        let _span = tracing::debug_span!("write_batch", writes = batch.len()).entered();
        // A panic in one write must not take the writer (and with it every
        // later send) down: its batch was not committed, so each caller is
        // told to try again and the writer goes on.
        let shared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            timed_commit(&mut held, &mut batch, Isolation::Shared)
        }));
        if let Ok((Ok(()), _)) = shared {
            for job in batch {
                job.answer(Ok(()));
            }
            continue;
        }
        for attempt in 1..=ATTEMPTS {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                timed_commit(&mut held, &mut batch, Isolation::Savepoint)
            }));
            let (committed, transient) = match outcome {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::error!("a write panicked; its batch was rolled back");
                    let failed = Err("the write failed".to_string());
                    for job in batch {
                        job.answer(failed.clone());
                    }
                    break;
                }
            };
            let last = attempt == ATTEMPTS;
            let mut retry = Vec::new();
            for (job, transient) in batch.into_iter().zip(transient) {
                if !last && (transient || committed.is_err()) {
                    retry.push(job);
                } else {
                    job.answer(committed.clone());
                }
            }
            if retry.is_empty() {
                break;
            }
            batch = retry;
            sizes.observe(batch.len() as f64);
        }
    }
}

/// Runs one transaction over `batch` on the `held` connection (or one from
/// the pool); says whether it committed and, per job, whether it failed
/// transiently. With `Isolation::Shared` a failed write rolls the batch
/// back. The connection is kept only when the batch committed.
fn commit(
    db: &Database,
    held: &mut Option<Pooled>,
    batch: &mut [Queued],
    isolation: Isolation,
) -> (Result<(), String>, Vec<bool>) {
    let mut conn = match held.take().map_or_else(|| db.get(), Ok) {
        Ok(conn) => conn,
        Err(error) => return (Err(error.to_string()), vec![true; batch.len()]),
    };
    let mut transient = Vec::with_capacity(batch.len());
    let only_sends = batch.iter().all(|job| job.is_send());
    let committed = if isolation == Isolation::Shared
        && only_sends
        && matches!(*conn, DbConnection::Postgres(_))
    {
        // On PostgreSQL a group of sends writes with one statement (see
        // `rows`), which is a transaction of its own: committed when it
        // answers, nothing written when it fails. BEGIN and COMMIT would
        // be two more round trips. The read before it sees what any
        // statement of a READ COMMITTED transaction would.
        run_shared(&mut conn, batch).map(|_| ())
    } else {
        write_transaction(&mut conn, |conn| {
            let open = if isolation == Isolation::Shared {
                run_shared(conn, batch)?
            } else {
                for job in batch.iter_mut() {
                    let ran = job.run(conn, isolation);
                    transient.push(matches!(ran, Ran::Failed { transient: true }));
                }
                false
            };
            if open {
                Ok(())
            } else {
                still_open(conn)
            }
        })
    };
    match committed {
        Ok(()) => {
            *held = Some(conn);
            // A shared batch commits only when every write in it ran clean.
            if isolation == Isolation::Shared {
                transient = vec![false; batch.len()];
            }
            (Ok(()), transient)
        }
        Err(error) => (Err(error.to_string()), vec![true; batch.len()]),
    }
}

/// Runs a batch without savepoints: the sends together, the rest one by
/// one. An error means some write failed and the batch must roll back.
/// True when the batch's last statement was the sends' and succeeded,
/// which shows the transaction is still open (see [`still_open`]).
fn run_shared(conn: &mut DbConnection, batch: &mut [Queued]) -> Result<bool, MailboxError> {
    let failed = || {
        MailboxError::Storage(StorageError::Unavailable(
            "a write failed; the batch runs again with savepoints".into(),
        ))
    };
    let (mut sends, others): (Vec<&mut Queued>, Vec<&mut Queued>) =
        batch.iter_mut().partition(|job| job.is_send());
    for job in others {
        if job.run(conn, Isolation::Shared) != Ran::Clean {
            return Err(failed());
        }
    }
    let mut sends: Vec<&mut SendJob> = sends.iter_mut().filter_map(|job| job.as_send()).collect();
    if sends.is_empty() {
        return Ok(false);
    }
    // `store_batch` always reads before it returns, so its success means
    // a statement ran after every other write of the batch.
    store_batch(conn, &mut sends).map_err(|_| failed())?;
    Ok(true)
}

/// PostgreSQL turns the `COMMIT` of a transaction that an error aborted
/// into a silent rollback. Each write keeps its errors inside its savepoint,
/// but should one escape, the batch must not be answered as committed: a
/// statement on an aborted transaction fails, and the whole batch is then
/// rolled back and tried again.
fn still_open(conn: &mut DbConnection) -> Result<(), MailboxError> {
    use diesel::connection::SimpleConnection;
    if let DbConnection::Postgres(pg) = conn {
        pg.batch_execute("SELECT 1")
            .map_err(|error| MailboxError::Storage(StorageError::Query(error)))?;
    }
    Ok(())
}

/// Writes of one batch lock rows in whatever order they arrive, so two
/// writers can deadlock; PostgreSQL then fails one statement, which its
/// savepoint rolls back alone. Such a write is tried again in the next
/// transaction instead of failing the request.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(dir: &std::path::Path) -> WriteQueue {
        let db = crate::storage::migrated_test_sqlite(dir, 2);
        let histogram = || Histogram::new([1.0]);
        let timings = WriteTimings {
            batch_sizes: histogram(),
            queue_wait_seconds: histogram(),
            commit_seconds: histogram(),
        };
        WriteQueue::start(db, 1, timings)
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path());
        let panicked = queue
            .run(
                |_conn: &mut DbConnection, _: Isolation| -> Result<(), MailboxError> {
                    panic!("a bug in one write")
                },
            )
            .await;
        assert!(
            matches!(
                panicked,
                Err(MailboxError::Storage(StorageError::Unavailable(_)))
            ),
            "{panicked:?}"
        );
        let answer = queue
            .run(|_conn: &mut DbConnection, _: Isolation| Ok::<_, MailboxError>(7))
            .await;
        assert_eq!(answer.unwrap(), 7);
    }
}
