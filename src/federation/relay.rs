//! The relay: sends each destination's queued mail as transactions, one
//! task per destination so a slow or dead peer never delays the others,
//! under a database lease so one replica sends to a destination at a time.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use super::client::{put_transaction, RequestError, Signer};
use super::outbox;
use super::resolver::ResolveError;
use crate::address::ServerName;
use crate::metrics::CauseLabels;
use crate::startup::AppState;
use crate::storage::StorageError;

/// Most destinations worked on at once by one replica.
const MAX_PARALLEL: usize = 64;
/// Longest the loop sleeps without a wake-up.
const IDLE: Duration = Duration::from_secs(5);

/// Destinations this replica is sending to right now.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    fn start(&self, destination: &str) -> bool {
        match self.0.lock() {
            Ok(mut set) => set.len() < MAX_PARALLEL && set.insert(destination.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(destination.to_string()),
        }
    }

    fn finish(&self, destination: &str) {
        match self.0.lock() {
            Ok(mut set) => set.remove(destination),
            Err(poisoned) => poisoned.into_inner().remove(destination),
        };
    }
}

/// Runs until the daemon stops: start work for due destinations, then wait
/// for a wake-up (a send, a `hello`) or the next due time.
pub async fn relay_loop(state: AppState) {
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
            _ = state.relay_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn next_wait(state: &AppState) -> Duration {
    match state.db.run(outbox::next_due_at).await {
        Ok(Some(at)) => {
            let delta = at.saturating_sub(crate::time::now_ms()).max(0);
            Duration::from_millis(u64::try_from(delta).unwrap_or(0))
                .clamp(Duration::from_millis(50), IDLE)
        }
        _ => IDLE,
    }
}

async fn start_due(state: &AppState) -> Result<(), StorageError> {
    let now = crate::time::now_ms();
    let due = state
        .db
        .run(move |conn| outbox::due_destinations(conn, now, MAX_PARALLEL as i64))
        .await?;
    for destination in due {
        if state.relay_in_flight.start(&destination) {
            let state = state.clone();
            tokio::spawn(async move {
                deliver_destination(&state, &destination).await;
                state.relay_in_flight.finish(&destination);
            });
        }
    }
    Ok(())
}

/// Sends everything due to all destinations once and waits for it: what
/// tests call instead of sleeping.
pub async fn run_once(state: &AppState) -> Result<(), StorageError> {
    let now = crate::time::now_ms();
    let due = state
        .db
        .run(move |conn| outbox::due_destinations(conn, now, 1_000))
        .await?;
    let tasks: Vec<_> = due
        .into_iter()
        .map(|destination| {
            let state = state.clone();
            tokio::spawn(async move { deliver_destination(&state, &destination).await })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Drains one destination while it answers; backs off on the first failure.
async fn deliver_destination(state: &AppState, destination: &str) {
    let owner = state.replica_id.clone();
    let name = destination.to_string();
    let claimed = state
        .db
        .run({
            let owner = owner.clone();
            let lease = state.settings.federation.relay_lease;
            move |conn| outbox::claim(conn, &name, &owner, crate::time::now_ms(), lease)
        })
        .await;
    if !matches!(claimed, Ok(true)) {
        return;
    }
    if let Err(error) = drain(state, destination, &owner).await {
        tracing::info!(destination, %error, "relay attempt failed");
        let (name, message) = (destination.to_string(), error.to_string());
        if let Err(error) = state
            .db
            .run(move |conn| outbox::fail(conn, &name, &message, crate::time::now_ms()))
            .await
        {
            tracing::warn!(destination, %error, "recording a relay failure failed");
        }
        state
            .metrics
            .relay_failures
            .get_or_create(&CauseLabels {
                cause: failure_cause(&error),
            })
            .inc();
    }
    let name = destination.to_string();
    let _ = state
        .db
        .run(move |conn| outbox::release(conn, &name, &owner))
        .await;
}

async fn drain(state: &AppState, destination: &str, owner: &str) -> anyhow::Result<()> {
    let server = ServerName::parse(destination)?;
    let target = state.federation.resolve(&server).await?;
    let origin = state.settings.server_name.to_string();
    loop {
        let (origin_name, name) = (origin.clone(), destination.to_string());
        let Some(batch) = state
            .db
            .run(move |conn| outbox::next_batch(conn, &origin_name, &name))
            .await?
        else {
            return Ok(());
        };
        // Sign with whatever key is current now, so a rotation takes effect
        // without a restart.
        let key = crate::server_key::load_current(&state.db).await?;
        let signer = Signer {
            client: &state.federation,
            key: &key,
            origin: &origin,
            timeout: state.settings.federation.request_timeout,
        };
        let response = put_transaction(&signer, &target, &batch.txn_id, &batch.transaction).await?;
        let name = destination.to_string();
        let events = state
            .db
            .run(move |conn| {
                outbox::complete(conn, &name, &batch, &response, crate::time::now_ms())
            })
            .await?;
        state.metrics.relayed_messages.inc_by(events.len() as u64);
        crate::api::publish_status(state, events);
        let (name, owner) = (destination.to_string(), owner.to_string());
        state
            .db
            .run({
                let lease = state.settings.federation.relay_lease;
                move |conn| outbox::claim(conn, &name, &owner, crate::time::now_ms(), lease)
            })
            .await?;
    }
}

/// Announces this server to every peer it knows (destinations it sends to
/// and origins that sent to it), so peers holding mail for it retry now.
pub async fn say_hello(state: AppState) {
    let peers = match state.db.run(outbox::known_peers).await {
        Ok(peers) => peers,
        Err(error) => {
            tracing::warn!(%error, "listing peers for hello failed");
            return;
        }
    };
    let origin = state.settings.server_name.to_string();
    for peer in peers {
        let Ok(server) = ServerName::parse(&peer) else {
            continue;
        };
        let Ok(target) = state.federation.resolve(&server).await else {
            continue;
        };
        let Ok(key) = crate::server_key::load_current(&state.db).await else {
            return;
        };
        let signer = Signer {
            client: &state.federation,
            key: &key,
            origin: &origin,
            timeout: state.settings.federation.request_timeout,
        };
        if let Err(error) = super::client::post_hello(&signer, &target).await {
            tracing::debug!(peer, %error, "hello not delivered");
        }
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
