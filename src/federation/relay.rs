//! The relay: sends each destination's queued mail as transactions, one
//! task per destination so a slow or dead peer never delays the others,
//! under a database lease so one replica sends to a destination at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use super::client::{put_recall, put_transaction, RequestError, Signer};
use super::resolver::FederationClient;
use super::resolver::{Destination, ResolveError};
use super::wire::{Recall, RecallResponse};
use crate::address::ServerName;
use crate::config::Settings;
use crate::gateway::Notifier;
use crate::mailbox::WriteQueue;
use crate::metrics::{CauseLabels, Metrics};
use crate::storage::mail::outbox::{self, recalls, Batch, Due};
use crate::storage::{Database, StorageError};
use crate::tasks::Tasks;

/// Most destinations worked on at once by one replica.
const MAX_PARALLEL: usize = 64;
/// Of those, most that have never answered or are failing now. A peer that
/// accepts connections and never answers holds its worker for a request
/// time-out; made-up or dead peers share these few workers, and peers that
/// work keep the rest.
const MAX_UNPROVEN: usize = MAX_PARALLEL / 4;
/// Longest the loop sleeps without a wake-up.
const IDLE: Duration = Duration::from_secs(5);
/// Transactions to one destination awaiting their answer at once: the next
/// one is read and sent while the remote stores the previous one, so a
/// destination's rate is not one round trip (and one commit on each side)
/// per transaction. Four keep a loopback peer busy; more only queue there.
const WINDOW: usize = 4;

/// Hellos in flight at once when the daemon starts, and how long each may
/// take: a greeting is a courtesy, and peers also retry on their own.
const HELLOS_AT_ONCE: usize = 16;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Relay writes on PostgreSQL at once, each on a connection of the pool:
/// two let one batch be read while another's answer is recorded, and leave
/// the rest of the pool to the API.
const POOLED_WRITES: usize = 2;

/// New transactions in a row that read the queue from past the last one's
/// rows; then one reads it from its start again. Every row with a lower id
/// is by then in a transaction or answered, unless it committed after
/// rows with higher ids (several writers or replicas): such a row waits
/// for at most this many transactions.
const READS_FROM_LAST: usize = 32;

/// Destinations this replica is sending to right now, each with whether
/// mail was queued for it since its worker last looked, and the permits
/// for the relay's writes on PostgreSQL.
pub struct InFlight {
    destinations: Mutex<HashMap<String, Worker>>,
    pooled_writes: tokio::sync::Semaphore,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            destinations: Mutex::default(),
            pooled_writes: tokio::sync::Semaphore::new(POOLED_WRITES),
        }
    }
}

/// What the relay knows of one destination it is sending to.
struct Worker {
    /// Mail was queued since the worker last looked.
    more: bool,
    /// The destination has answered before and is not failing.
    proven: bool,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Worker>> {
        self.destinations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start(&self, due: &Due) -> bool {
        let mut set = self.lock();
        if set.len() >= MAX_PARALLEL || set.contains_key(&due.server_name) {
            return false;
        }
        if !due.proven && set.values().filter(|w| !w.proven).count() >= MAX_UNPROVEN {
            return false;
        }
        set.insert(
            due.server_name.clone(),
            Worker {
                more: false,
                proven: due.proven,
            },
        );
        true
    }

    /// The worker ran out of mail (`drained`) or failed: it stops, unless
    /// it drained and mail was queued meanwhile, when it looks again.
    fn finish(&self, destination: &str, drained: bool) -> bool {
        let mut set = self.lock();
        match set.get_mut(destination) {
            Some(worker) if drained && worker.more => {
                worker.more = false;
                false
            }
            _ => {
                set.remove(destination);
                true
            }
        }
    }

    /// Mail was committed for `destinations`. A destination being worked on
    /// is only marked, so a burst of sends to it costs the relay loop
    /// nothing; true when some destination has no worker and the loop must
    /// look for due ones.
    pub fn queued(&self, destinations: &[String]) -> bool {
        let mut set = self.lock();
        let mut unworked = false;
        for destination in destinations {
            match set.get_mut(destination.as_str()) {
                Some(worker) => worker.more = true,
                None => unworked = true,
            }
        }
        unworked
    }
}

/// The relay as the rest of the daemon sees it: handlers say what they
/// queued (`queued`) or that a peer is back (`wake`), and `run` sends.
/// Cloning shares one relay.
#[derive(Clone)]
pub struct Relay(Arc<Inner>);

/// What the relay works with.
pub struct Parts {
    pub settings: Arc<Settings>,
    pub db: Database,
    /// Relay writes on SQLite go through the group commit's writers.
    pub write_queue: Arc<WriteQueue>,
    pub federation: Arc<FederationClient>,
    /// Identifies this replica in destination leases.
    pub replica_id: String,
    pub notifier: Arc<Notifier>,
    pub metrics: Arc<Metrics>,
    /// Every attempt is a task of these, stopped with the daemon.
    pub tasks: Tasks,
}

/// The relay's own state beside its parts.
struct Inner {
    parts: Parts,
    in_flight: InFlight,
    wake: tokio::sync::Notify,
}

impl Relay {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(Inner {
            parts,
            in_flight: InFlight::default(),
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// Mail was committed for `destinations`: wakes the loop when one of
    /// them has no worker yet.
    pub fn queued(&self, destinations: &[String]) {
        if self.0.in_flight.queued(destinations) {
            self.0.wake.notify_one();
        }
    }

    /// A peer said it is back, or an admin asked: look for due work now.
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Runs until the daemon stops: the relay loop, and a greeting to
    /// every known peer at start.
    pub fn start(&self) {
        self.tasks.spawn(relay_loop(self.clone()));
        self.tasks.spawn(say_hello(self.clone()));
    }
}

impl std::ops::Deref for Relay {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0.parts
    }
}

/// Runs until the daemon stops: start work for due destinations, then wait
/// for a wake-up (a send, a `hello`) or the next due time.
async fn relay_loop(state: Relay) {
    loop {
        let started = start_due(&state).await;
        let wait = match started {
            Ok(()) => next_wait(&state).await,
            Err(error) => {
                tracing::warn!(%error, "relay: listing due destinations failed");
                IDLE
            }
        };
        tokio::select! {
            _ = state.0.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn next_wait(state: &Relay) -> Duration {
    match state.db.run(outbox::next_due_at).await {
        Ok(Some(at)) => {
            let delta = at.saturating_sub(crate::time::now_ms()).max(0);
            Duration::from_millis(u64::try_from(delta).unwrap_or(0))
                .clamp(Duration::from_millis(50), IDLE)
        }
        _ => IDLE,
    }
}

async fn start_due(state: &Relay) -> Result<(), StorageError> {
    let now = crate::time::now_ms();
    let due = state
        .db
        .run(move |conn| outbox::due_destinations(conn, now, MAX_PARALLEL as i64))
        .await?;
    for due in due {
        if state.0.in_flight.start(&due) {
            let attempt = state.clone();
            let destination = due.server_name;
            state.tasks.spawn(async move {
                loop {
                    let span = tracing::debug_span!("relay_attempt", %destination);
                    let drained = deliver_destination(&attempt, &destination)
                        .instrument(span)
                        .await;
                    if attempt.0.in_flight.finish(&destination, drained) {
                        break;
                    }
                }
            });
        }
    }
    Ok(())
}

/// Drains one destination while it answers; backs off on the first
/// failure. True when it sent everything it found.
async fn deliver_destination(state: &Relay, destination: &str) -> bool {
    let owner = state.replica_id.clone();
    let lease = state.settings.federation.relay_lease;
    let claimed = write(state, {
        let (name, owner) = (destination.to_string(), owner.clone());
        move |conn| outbox::claim(conn, &name, &owner, crate::time::now_ms(), lease)
    })
    .await;
    if !matches!(claimed, Ok(true)) {
        return false;
    }
    let drained = drain(state, destination, &owner).await;
    // The back-off (after a failure) and the lease's release in one write;
    // the failure is counted once it is on record.
    let failure = drained.as_ref().err().map(|error| error.to_string());
    let name = destination.to_string();
    let recorded = write(state, move |conn| {
        if let Some(message) = &failure {
            outbox::fail(conn, &name, message, crate::time::now_ms())?;
        }
        outbox::release(conn, &name, &owner)
    })
    .await;
    if let Err(error) = &drained {
        log_failure(destination, error);
        if let Err(error) = recorded {
            tracing::warn!(destination, %error, "recording a relay failure failed");
        }
        state
            .metrics
            .relay_failures
            .get_or_create(&CauseLabels {
                cause: failure_cause(error),
            })
            .inc();
    }
    drained.is_ok()
}

/// Runs one relay write. On SQLite through the write queue, so it shares
/// the sends' commits instead of competing with them for the write lock;
/// on PostgreSQL in a transaction of its own beside the writer, whose
/// serial conversation with the database it would otherwise lengthen.
async fn write<T, F>(state: &Relay, mut work: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnMut(&mut crate::storage::DbConnection) -> Result<T, StorageError> + Send + 'static,
{
    match state.db.backend() {
        crate::storage::Backend::Postgres => {
            let _permit = state
                .0
                .in_flight
                .pooled_writes
                .acquire()
                .await
                .map_err(|_| StorageError::Unavailable("the relay stopped".into()))?;
            state
                .db
                .run(move |conn| crate::storage::write_transaction(conn, |conn| work(conn)))
                .await
        }
        crate::storage::Backend::Sqlite => state.write_queue.run(move |conn, _| work(conn)).await,
    }
}

/// Sends the destination's batches, up to `WINDOW` at once, until none is
/// left or one fails; then waits for those still out. Each batch is a task
/// of its own: one that waits for a permit to record its answer must make
/// progress while this loop waits for its own permit to read the next.
async fn drain(state: &Relay, destination: &str, owner: &str) -> anyhow::Result<()> {
    let server = ServerName::parse(destination)?;
    let target = Arc::new(state.federation.resolve(&server).await?);
    let origin = state.settings.server_name.to_string();
    let mut sending = JoinSet::new();
    let mut in_flight: Vec<String> = Vec::new();
    let mut empty = false;
    // Transactions an earlier attempt sent and never heard back about go
    // first, under their ids. None appears during this attempt: one of
    // its own that fails ends it. So once a new transaction is made, the
    // look-up for them is skipped.
    let mut resend = true;
    // Past the last new transaction's rows, for so many more.
    let mut after: Option<i64> = None;
    let mut reads_from_last = 0;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        while failure.is_none() && !empty && in_flight.len() < WINDOW {
            let (origin, name, skip) = (origin.clone(), destination.to_string(), in_flight.clone());
            match write(state, move |conn| {
                outbox::next_batch(conn, &origin, &name, &skip, resend, after)
            })
            .await
            {
                Ok(Some(batch)) => {
                    resend = resend && batch.resent;
                    if !batch.resent {
                        reads_from_last = (reads_from_last + 1) % READS_FROM_LAST;
                        after = (reads_from_last > 0)
                            .then(|| batch.rows.iter().map(|row| row.0).max())
                            .flatten();
                    }
                    in_flight.push(batch.txn_id.clone());
                    sending.spawn(send_batch(
                        state.clone(),
                        target.clone(),
                        destination.to_string(),
                        owner.to_string(),
                        batch,
                    ));
                }
                Ok(None) => empty = true,
                Err(error) => failure = Some(error.into()),
            }
        }
        let Some(joined) = sending.join_next().await else {
            break;
        };
        let (txn_id, sent) = joined.unwrap_or_else(|error| {
            // The batch's task panicked: its transaction stays open and is
            // resent under its id by the next attempt.
            (
                String::new(),
                Err(anyhow::anyhow!("relay batch task failed: {error}")),
            )
        });
        in_flight.retain(|id| *id != txn_id);
        match sent {
            // Mail may have been queued meanwhile: look again.
            Ok(()) => empty = false,
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    send_recalls(state, &target, destination, owner).await
}

/// Sends the destination's recalls, one at a time, once its mail is out:
/// a recall goes only after every transaction carrying its message was
/// answered (`recalls::next`), so it cannot reach the peer before the
/// message does. The first failure ends the attempt like a failed
/// transaction, and the destination backs off. Each answer renews the
/// lease, as a transaction's does.
async fn send_recalls(
    state: &Relay,
    target: &Destination,
    destination: &str,
    owner: &str,
) -> anyhow::Result<()> {
    let origin = state.settings.server_name.to_string();
    loop {
        let next = {
            let (origin, name) = (origin.clone(), destination.to_string());
            write(state, move |conn| recalls::next(conn, &origin, &name)).await?
        };
        let Some(recall) = next else {
            return Ok(());
        };
        let key = crate::server_key::load_current(&state.db).await?;
        let signer = Signer {
            client: &state.federation,
            key: &key,
            origin: &origin,
            timeout: state.settings.federation.request_timeout,
        };
        let body = Recall {
            origin: origin.clone(),
            recipients: recall.recipients.clone(),
        };
        let answer = match put_recall(&signer, target, &recall.message_id, &body).await {
            Ok(answer) => answer,
            // A refusal that a retry would meet again (a peer without
            // recalls, a record reused): the recipients are not recalled,
            // and the destination's mail is not held up by it.
            Err(RequestError::Status { status, code, .. })
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                tracing::info!(
                    destination,
                    status,
                    code = code.as_deref().unwrap_or("-"),
                    "a peer refused a recall"
                );
                RecallResponse {
                    message_id: recall.message_id.clone(),
                    recipients: Vec::new(),
                }
            }
            Err(error) => return Err(error.into()),
        };
        let (name, owner) = (destination.to_string(), owner.to_string());
        let lease = state.settings.federation.relay_lease;
        let events = write(state, move |conn| {
            let now = crate::time::now_ms();
            outbox::claim(conn, &name, &owner, now, lease)?;
            recalls::complete(conn, &recall, &answer, now)
        })
        .await?;
        state.notifier.statuses(events);
    }
}

/// Signs and sends one batch and, on a `200`, records the results (and
/// renews the lease) in one write. Yields the batch's transaction id.
async fn send_batch(
    state: Relay,
    target: Arc<Destination>,
    destination: String,
    owner: String,
    batch: Batch,
) -> (String, anyhow::Result<()>) {
    let state = &state;
    let txn_id = batch.txn_id.clone();
    let sent = async {
        // Sign with whatever key is current now, so a rotation takes effect
        // without a restart.
        let key = crate::server_key::load_current(&state.db).await?;
        let origin = state.settings.server_name.to_string();
        let signer = Signer {
            client: &state.federation,
            key: &key,
            origin: &origin,
            timeout: state.settings.federation.request_timeout,
        };
        let response = put_transaction(&signer, &target, &batch.txn_id, &batch.transaction).await?;
        let (batch, response) = (Arc::new(batch), Arc::new(response));
        let lease = state.settings.federation.relay_lease;
        let events = write(state, move |conn| {
            let now = crate::time::now_ms();
            let events =
                outbox::complete(conn, &destination, &owner, lease, &batch, &response, now)?;
            // The sender's next look-up of a recipient whose devices
            // changed fetches the list the remote holds now.
            for event in events.iter().filter(|e| e.state == "stale_devices") {
                super::directory::cache::expire_copy(conn, &event.recipient, now)?;
            }
            Ok(events)
        })
        .await?;
        state.metrics.relayed_messages.inc_by(events.len() as u64);
        state.notifier.statuses(events);
        Ok(())
    }
    .await;
    (txn_id, sent)
}

/// Announces this server to every peer it knows (destinations it sends to
/// and origins that sent to it), so peers holding mail for it retry now.
async fn say_hello(state: Relay) {
    let peers = match state.db.run(outbox::known_peers).await {
        Ok(peers) => peers,
        Err(error) => {
            tracing::warn!(%error, "listing peers for hello failed");
            return;
        }
    };
    let Ok(key) = crate::server_key::load_current(&state.db).await else {
        return;
    };
    let origin = state.settings.server_name.to_string();
    let signer = Signer {
        client: &state.federation,
        key: &key,
        origin: &origin,
        timeout: HELLO_TIMEOUT.min(state.settings.federation.request_timeout),
    };
    // Several at once, each briefly: a peer that never answers must not
    // hold up the greeting of all the others behind it.
    use futures_util::StreamExt;
    futures_util::stream::iter(peers)
        .for_each_concurrent(HELLOS_AT_ONCE, |peer| {
            let (state, signer) = (&state, &signer);
            async move {
                let Ok(server) = ServerName::parse(&peer) else {
                    return;
                };
                let Ok(target) = state.federation.resolve(&server).await else {
                    return;
                };
                if let Err(error) = super::client::post_hello(signer, &target).await {
                    tracing::debug!(peer, %error, "hello not delivered");
                }
            }
        })
        .await;
}

/// A failed attempt is a WARN: mail is held until the destination answers.
/// A peer's refusal is logged by its status and error code only, never by
/// its body.
fn log_failure(destination: &str, error: &anyhow::Error) {
    match error.downcast_ref::<RequestError>() {
        Some(RequestError::Status { status, code, .. }) => tracing::warn!(
            destination,
            status,
            code = code.as_deref().unwrap_or("-"),
            "relay attempt failed: the peer refused the transaction"
        ),
        _ => tracing::warn!(destination, error = %format!("{error:#}"), "relay attempt failed"),
    }
}

/// The metrics label for a failed relay attempt: a short fixed list, so
/// what a remote server answers cannot create new series.
fn failure_cause(error: &anyhow::Error) -> &'static str {
    if let Some(error) = error.downcast_ref::<RequestError>() {
        return match error {
            RequestError::Resolve(_) => "resolve",
            RequestError::Connect(_) => "connect",
            RequestError::Timeout(_) => "timeout",
            RequestError::Status { status, .. } if (400..500).contains(status) => "rejected",
            RequestError::Status { .. } => "remote_error",
            RequestError::Body(_) => "bad_response",
            RequestError::Sign(_) => "other",
        };
    }
    if error.downcast_ref::<ResolveError>().is_some() {
        "resolve"
    } else if error.downcast_ref::<StorageError>().is_some() {
        "storage"
    } else {
        "other"
    }
}
