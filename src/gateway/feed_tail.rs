//! `DELIVERY_STATUS` from the delivery feed. Each replica tails the whole
//! feed (`storage::mail::feed::tail`) in its (transaction, id) order and
//! under its horizon, and sends each change to its sender's sessions here
//! with the change's cursor. Live events and feed reads so come in one
//! order: a device that drops off resumes with `GET /api/v1/dms/status
//! ?since=` the last cursor it got, and misses nothing. (Sending each
//! change as its transaction commits could not promise that on
//! PostgreSQL: transactions commit, and handlers publish, out of the
//! feed's order.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::hub::{GatewayEvent, Hub};
use crate::mailbox::StatusEvent;
use crate::storage::mail::feed::{self, FeedCursor};
use crate::storage::Database;
use crate::tasks::Tasks;

/// How often the tail looks without a wake-up: changes of a transaction
/// that commits after an older one still running become visible only
/// once that one ends, and another replica's changes arrive here only by
/// a cluster hint, which may be lost.
const TICK: Duration = Duration::from_millis(250);
/// Changes read at once.
const PAGE: i64 = 500;

/// The tail. Cheap to clone.
#[derive(Clone)]
pub struct FeedTail(Arc<Inner>);

struct Inner {
    db: Database,
    hub: Arc<Hub>,
    wake: Arc<Notify>,
}

impl FeedTail {
    pub fn new(db: Database, hub: Arc<Hub>) -> Self {
        Self(Arc::new(Inner {
            db,
            hub,
            wake: Arc::default(),
        }))
    }

    /// Receipts changed (here or on another replica): look now.
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// What `wake` does, for a holder that must not keep the hub alive
    /// (the cluster listener's thread).
    pub fn waker(&self) -> Arc<Notify> {
        self.0.wake.clone()
    }

    /// Runs until the daemon stops, from the feed's head when it starts.
    pub fn start(&self, tasks: &Tasks) {
        tasks.spawn(tail_loop(self.clone()));
    }
}

async fn tail_loop(tail: FeedTail) {
    let inner = &tail.0;
    let mut last = loop {
        match inner.db.run(feed::head).await {
            Ok(head) => break head,
            Err(error) => {
                tracing::warn!(%error, "feed tail: reading the head failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        if let Err(error) = catch_up(inner, &mut last).await {
            tracing::warn!(%error, "feed tail: reading the feed failed");
        }
    }
}

/// Sends every visible change past `last`, moving it past each one sent
/// (so a read that fails half-way sends nothing twice). With no session
/// here, only moves to the head: a device that connects later resumes
/// from its own cursor.
async fn catch_up(
    inner: &Inner,
    last: &mut FeedCursor,
) -> Result<(), crate::storage::StorageError> {
    loop {
        if inner.hub.session_count() == 0 {
            *last = inner.db.run(feed::head).await?;
            return Ok(());
        }
        let after = *last;
        let rows = inner
            .db
            .run(move |conn| feed::tail(conn, after, PAGE))
            .await?;
        let full = rows.len() as i64 == PAGE;
        for (sender, (position, message_id, recipient, state, detail, at)) in rows {
            *last = position;
            // A send's first states are in its own answer; devices hear of
            // what changes after (the feed has both).
            if state == "stored" || state == "queued" {
                continue;
            }
            let event = StatusEvent::new("", message_id, recipient, state, at)
                .with_detail(detail.as_deref());
            inner.hub.notify_account(
                &sender,
                GatewayEvent::DeliveryStatus {
                    cursor: position.to_string(),
                    event,
                },
            );
        }
        if !full {
            return Ok(());
        }
    }
}
