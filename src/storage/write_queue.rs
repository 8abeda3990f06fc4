//! Group commit for the hot writes (sends, acks, inbound transactions and,
//! on SQLite, the relay's bookkeeping): concurrent writes wait in a
//! bounded queue, a writer takes everything waiting (up to
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
//!
//! One kind of write (`Batched`, the mailbox's sends) is stored together
//! with the others of its kind in a batch, by one statement per table; any
//! other write is a closure run in turn. Each write has its own error type,
//! which says whether it was refused before writing (`WriteFailure`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use tokio_util::sync::CancellationToken;

use super::{write_transaction, Database, DbConnection, Pooled, StorageError};
use crate::tasks::Tasks;

/// A write's error, as the queue needs to see it.
pub trait WriteFailure: From<StorageError> + From<diesel::result::Error> + Send + 'static {
    /// Raised before the write wrote anything, so a shared transaction is
    /// left as it was.
    fn is_refusal(&self) -> bool;
    /// The next transaction may succeed where this one did not.
    fn is_transient(&self) -> bool;
}

impl WriteFailure for StorageError {
    fn is_refusal(&self) -> bool {
        false
    }

    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

/// The kind of write a batch stores together: each keeps its own result,
/// which the queue hands back once the batch's fate is known.
pub trait Batched: Send + 'static {
    type Output: Send + 'static;
    type Error: WriteFailure;

    /// Stores `items` in the batch's shared transaction and sets each
    /// one's result. An error means a statement failed and the
    /// transaction must roll back. It always reads before it returns, so
    /// its success shows the transaction is still open.
    fn store_together(conn: &mut DbConnection, items: &mut [&mut Self]) -> Result<(), Self::Error>;

    /// Stores this one alone, in a savepoint of its own.
    fn store_alone(&mut self, conn: &mut DbConnection) -> Result<Self::Output, Self::Error>;

    /// The result `store_together` set.
    fn take_result(&mut self) -> Option<Result<Self::Output, Self::Error>>;
}

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

/// One queued write, type-erased so all kinds share the writers.
trait Work<B>: Send {
    /// Runs inside the batch's transaction and keeps the result.
    fn run(&mut self, conn: &mut DbConnection, isolation: Isolation) -> Ran;
    /// Answers the caller once the batch's fate is known.
    fn answer(self: Box<Self>, commit: Result<(), String>);
    /// A batched write, which a shared batch stores with the others.
    fn as_batched(&mut self) -> Option<&mut B> {
        None
    }
    fn is_batched(&self) -> bool {
        false
    }
}

/// Runs `work` as `isolation` says and classifies its result.
fn run_isolated<T, E: WriteFailure>(
    conn: &mut DbConnection,
    isolation: Isolation,
    work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> (Result<T, E>, Ran) {
    use diesel::Connection;
    let result = match isolation {
        Isolation::Shared => work(conn),
        Isolation::Savepoint => conn.transaction(work),
    };
    let ran = match &result {
        Err(error) if !error.is_refusal() => Ran::Failed {
            transient: error.is_transient(),
        },
        _ => Ran::Clean,
    };
    (result, ran)
}

/// What a write's caller hears, given its result and its batch's commit.
fn settle<T, E: WriteFailure + std::fmt::Display>(
    commit: Result<(), String>,
    result: Option<Result<T, E>>,
) -> Result<T, E> {
    match (commit, result) {
        // Out of tries on a deadlock or the like: say "try again" (503),
        // not "server error".
        (Ok(()), Some(Err(error))) if error.is_transient() => {
            Err(StorageError::Unavailable(error.to_string()).into())
        }
        (Ok(()), Some(result)) => result,
        // The commit failed: nothing in the batch is stored.
        (Err(error), _) => Err(StorageError::Unavailable(error).into()),
        (Ok(()), None) => Err(StorageError::Unavailable("the write did not run".into()).into()),
    }
}

/// A queued batched write and where its answer goes.
struct QueuedBatched<B: Batched> {
    item: B,
    /// The result of the last `store_alone`, which wins over one a shared
    /// attempt that rolled back left in the item.
    alone: Option<Result<B::Output, B::Error>>,
    reply: oneshot::Sender<Result<B::Output, B::Error>>,
}

impl<B: Batched> Work<B> for QueuedBatched<B>
where
    B::Error: std::fmt::Display,
{
    /// Batched writes of a shared batch are stored together
    /// (`run_shared`); this is one alone, in its savepoint.
    fn run(&mut self, conn: &mut DbConnection, _: Isolation) -> Ran {
        let item = &mut self.item;
        let (result, ran) = run_isolated(conn, Isolation::Shared, |conn| item.store_alone(conn));
        self.alone = Some(result);
        ran
    }

    fn answer(mut self: Box<Self>, commit: Result<(), String>) {
        let result = self.alone.take().or_else(|| self.item.take_result());
        let _ = self.reply.send(settle(commit, result));
    }

    fn as_batched(&mut self) -> Option<&mut B> {
        Some(&mut self.item)
    }

    fn is_batched(&self) -> bool {
        true
    }
}

struct Job<T, E, F> {
    work: F,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<B, T, E, F> Work<B> for Job<T, E, F>
where
    T: Send,
    E: WriteFailure + std::fmt::Display,
    F: FnMut(&mut DbConnection, Isolation) -> Result<T, E> + Send,
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

type Queued<B> = Box<dyn Work<B>>;
/// A write and when it was queued.
type Timed<B> = (Instant, Queued<B>);

/// The queue in front of the writers; `B` is the kind of write stored
/// together.
pub struct WriteQueue<B> {
    jobs: mpsc::Sender<Timed<B>>,
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

impl<B: Batched> WriteQueue<B>
where
    B::Error: std::fmt::Display,
{
    /// Starts `writers` writer threads (one is right for SQLite, which has
    /// one write lock, and for PostgreSQL when writes share rows) among the
    /// daemon's `tasks`: a writer stops when the daemon does, after the
    /// batch it is writing. `timings` hears about every batch.
    pub fn start(db: Database, writers: usize, timings: WriteTimings, tasks: &Tasks) -> Self {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..writers.max(1) {
            let (db, receiver, timings) = (db.clone(), receiver.clone(), timings.clone());
            let spawned = tasks.spawn_thread(&format!("homing-writer-{index}"), move |stop| {
                writer(db, receiver, timings, stop)
            });
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
    /// write's failure or a deadlock). It must refuse (an error whose
    /// `is_refusal` is true) only before its first write.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: WriteFailure + std::fmt::Display,
        F: FnMut(&mut DbConnection, Isolation) -> Result<T, E> + Send + 'static,
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

    /// Queues a batched write and waits for the commit that holds it.
    pub async fn batched(&self, item: B) -> Result<B::Output, B::Error> {
        let (reply, answer) = oneshot::channel();
        let queued = QueuedBatched {
            item,
            alone: None,
            reply,
        };
        self.jobs
            .send((Instant::now(), Box::new(queued)))
            .await
            .map_err(|_| StorageError::Unavailable("the writers stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the writer failed".into()))?
    }
}

/// The next batch: the first write to come, and all queued behind it up to
/// `MAX_BATCH`; blocks for the first only, and returns none once the
/// daemon stops. Each write's wait in the queue is reported as it is
/// taken.
fn next_batch<B>(
    receiver: &Mutex<mpsc::Receiver<Timed<B>>>,
    waits: &Histogram,
    stop: &CancellationToken,
) -> Option<Vec<Queued<B>>> {
    let mut receiver = match receiver.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let (queued_at, first) = block_on(async {
        tokio::select! {
            job = receiver.recv() => job,
            () = stop.cancelled() => None,
        }
    })?;
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

/// Polls `future` on this thread until it is ready, sleeping between
/// wake-ups. The channel's and the token's futures need no runtime, and a
/// writer is a thread of its own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}

fn writer<B: Batched>(
    db: Database,
    receiver: Arc<Mutex<mpsc::Receiver<Timed<B>>>>,
    timings: WriteTimings,
    stop: CancellationToken,
) {
    let sizes = &timings.batch_sizes;
    let timed_commit = |held: &mut Option<Pooled>, batch: &mut [Queued<B>], isolation| {
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
    while let Some(mut batch) = next_batch(&receiver, &timings.queue_wait_seconds, &stop) {
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
fn commit<B: Batched>(
    db: &Database,
    held: &mut Option<Pooled>,
    batch: &mut [Queued<B>],
    isolation: Isolation,
) -> (Result<(), String>, Vec<bool>) {
    let mut conn = match held.take().map_or_else(|| db.get(), Ok) {
        Ok(conn) => conn,
        Err(error) => return (Err(error.to_string()), vec![true; batch.len()]),
    };
    let mut transient = Vec::with_capacity(batch.len());
    let only_sends = batch.iter().all(|job| job.is_batched());
    let committed = if isolation == Isolation::Shared
        && only_sends
        && matches!(*conn, DbConnection::Postgres(_))
    {
        // On PostgreSQL a group of sends writes with one statement (see
        // `mail::insert`), which is a transaction of its own: committed when it
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

/// Runs a batch without savepoints: the batched writes together, the
/// rest one by one. An error means some write failed and the batch must
/// roll back. True when the batch's last statement was the batched
/// writes' and succeeded, which shows the transaction is still open (see
/// [`still_open`]).
fn run_shared<B: Batched>(
    conn: &mut DbConnection,
    batch: &mut [Queued<B>],
) -> Result<bool, StorageError> {
    let failed =
        || StorageError::Unavailable("a write failed; the batch runs again with savepoints".into());
    let (mut together, others): (Vec<&mut Queued<B>>, Vec<&mut Queued<B>>) =
        batch.iter_mut().partition(|job| job.is_batched());
    for job in others {
        if job.run(conn, Isolation::Shared) != Ran::Clean {
            return Err(failed());
        }
    }
    let mut together: Vec<&mut B> = together
        .iter_mut()
        .filter_map(|job| job.as_batched())
        .collect();
    if together.is_empty() {
        return Ok(false);
    }
    B::store_together(conn, &mut together).map_err(|_| failed())?;
    Ok(true)
}

/// PostgreSQL turns the `COMMIT` of a transaction that an error aborted
/// into a silent rollback. Each write keeps its errors inside its savepoint,
/// but should one escape, the batch must not be answered as committed: a
/// statement on an aborted transaction fails, and the whole batch is then
/// rolled back and tried again.
fn still_open(conn: &mut DbConnection) -> Result<(), StorageError> {
    use diesel::connection::SimpleConnection;
    if let DbConnection::Postgres(pg) = conn {
        pg.batch_execute("SELECT 1")?;
    }
    Ok(())
}

/// Writes of one batch lock rows in whatever order they arrive, so two
/// writers can deadlock; PostgreSQL then fails one statement, which its
/// savepoint rolls back alone. Such a write is tried again in the next
/// transaction instead of failing the request.
pub fn is_transient(error: &StorageError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        StorageError::Query(Error::DatabaseError(kind, info)) => {
            matches!(kind, DatabaseErrorKind::SerializationFailure)
                || info.message().contains("deadlock detected")
                || info.message().contains("database is locked")
        }
        StorageError::Unavailable(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue whose tests use closures only.
    struct NoBatch;

    impl Batched for NoBatch {
        type Output = ();
        type Error = StorageError;
        fn store_together(_: &mut DbConnection, _: &mut [&mut Self]) -> Result<(), StorageError> {
            Ok(())
        }
        fn store_alone(&mut self, _: &mut DbConnection) -> Result<(), StorageError> {
            Ok(())
        }
        fn take_result(&mut self) -> Option<Result<(), StorageError>> {
            Some(Ok(()))
        }
    }

    fn queue(dir: &std::path::Path) -> WriteQueue<NoBatch> {
        let db = crate::storage::migrated_test_sqlite(dir, 2);
        let histogram = || Histogram::new([1.0]);
        let timings = WriteTimings {
            batch_sizes: histogram(),
            queue_wait_seconds: histogram(),
            commit_seconds: histogram(),
        };
        WriteQueue::start(db, 1, timings, &Tasks::default())
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path());
        let panicked = queue
            .run(
                |_conn: &mut DbConnection, _: Isolation| -> Result<(), StorageError> {
                    panic!("a bug in one write")
                },
            )
            .await;
        assert!(
            matches!(panicked, Err(StorageError::Unavailable(_))),
            "{panicked:?}"
        );
        let answer = queue
            .run(|_conn: &mut DbConnection, _: Isolation| Ok::<_, StorageError>(7))
            .await;
        assert_eq!(answer.unwrap(), 7);
    }
}
