//! Gateway events across replicas. Several `homingd` replicas on one
//! PostgreSQL database each hold some devices' WebSocket sessions; an event
//! raised on one replica reaches the others through PostgreSQL
//! `LISTEN/NOTIFY` (channel `homing_events`). On SQLite there is only one
//! replica and this is a no-op.

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

use super::hub::{GatewayEvent, Hub};
use crate::storage::{Database, DbConnection, StorageError};

const CHANNEL: &str = "homing_events";
/// PostgreSQL caps a payload at 8000 bytes; stay well below.
const MAX_PAYLOAD: usize = 7_000;
/// How often the listener looks for notifications (the latency it adds
/// across replicas).
const POLL: Duration = Duration::from_millis(5);

/// One event as it travels between replicas: only what a hub needs, never
/// a message body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterEvent {
    Notify {
        device_row: i64,
        cursor: i64,
    },
    /// Receipts changed: wake the feed tail.
    FeedChanged,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    events: Vec<ClusterEvent>,
}

/// Sends `events` to the other replicas (PostgreSQL only).
pub fn publish(
    conn: &mut DbConnection,
    replica: &str,
    events: Vec<ClusterEvent>,
) -> Result<(), StorageError> {
    let DbConnection::Postgres(pg) = conn else {
        return Ok(());
    };
    let mut batch: Vec<ClusterEvent> = Vec::new();
    let mut size = 0;
    let flush = |pg: &mut diesel::PgConnection,
                 batch: &mut Vec<ClusterEvent>|
     -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_string(&Envelope {
            from: replica.to_string(),
            events: std::mem::take(batch),
        })
        .map_err(|e| StorageError::Encode(e.to_string()))?;
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(payload)
            .execute(pg)?;
        Ok(())
    };
    for event in events {
        let approx = serde_json::to_string(&event)
            .map(|s| s.len())
            .unwrap_or(256);
        if size + approx > MAX_PAYLOAD {
            flush(pg, &mut batch)?;
            size = 0;
        }
        size += approx;
        batch.push(event);
    }
    flush(pg, &mut batch)
}

/// Most events gathered into one round of notifications.
const MAX_COALESCED: usize = 4_096;
/// Bursts of events waiting for the publisher; beyond this they are
/// dropped, which costs other replicas' devices latency only.
const PUBLISH_QUEUE: usize = 1_024;

/// Publishes this replica's events from one task, coalescing whatever
/// arrived meanwhile into one transaction. Each `NOTIFY` transaction
/// commits (and flushes) on its own and PostgreSQL serialises notifying
/// commits, so a transaction per send would bound the send rate.
pub struct Publisher {
    queue: Option<tokio::sync::mpsc::Sender<Vec<ClusterEvent>>>,
}

impl Publisher {
    /// Starts the publishing task on PostgreSQL; a no-op elsewhere.
    pub fn start(db: &Database, replica: String, tasks: &crate::tasks::Tasks) -> Self {
        if db.backend() != crate::storage::Backend::Postgres {
            return Self { queue: None };
        }
        let (queue, mut bursts) = tokio::sync::mpsc::channel::<Vec<ClusterEvent>>(PUBLISH_QUEUE);
        let db = db.clone();
        tasks.spawn(async move {
            while let Some(mut events) = bursts.recv().await {
                while events.len() < MAX_COALESCED {
                    match bursts.try_recv() {
                        Ok(more) => events.extend(more),
                        Err(_) => break,
                    }
                }
                let replica = replica.clone();
                let published = db.run(move |conn| publish(conn, &replica, events)).await;
                if let Err(error) = published {
                    tracing::warn!(%error, "publishing gateway events to other replicas failed");
                }
            }
        });
        Self { queue: Some(queue) }
    }

    /// Hands `events` to the publishing task without waiting.
    pub fn publish(&self, events: Vec<ClusterEvent>) {
        let Some(queue) = &self.queue else {
            return;
        };
        if events.is_empty() {
            return;
        }
        if queue.try_send(events).is_err() {
            tracing::warn!(
                "cluster publish queue full; other replicas' devices resume from their cursor"
            );
        }
    }
}

/// Listens for other replicas' events and hands them to this replica's hub,
/// on a thread of its own (libpq's notification polling is blocking). Runs
/// until the daemon stops; reconnects after errors.
pub fn spawn_listener(
    db: &Database,
    hub: &Arc<Hub>,
    feed: Arc<tokio::sync::Notify>,
    replica: String,
    tasks: &crate::tasks::Tasks,
) {
    if db.backend() != crate::storage::Backend::Postgres {
        return;
    }
    let db = db.clone();
    // Weak: the thread must not keep the hub (and its sessions) alive.
    let hub = Arc::downgrade(hub);
    let spawned = tasks.spawn_thread("homing-cluster", move |stop| {
        while !stop.is_cancelled() && hub.strong_count() > 0 {
            if let Err(error) = listen(&db, &hub, &feed, &replica, &stop) {
                tracing::warn!(%error, "cluster listener failed; reconnecting");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the cluster listener");
    }
}

fn listen(
    db: &Database,
    hub: &std::sync::Weak<Hub>,
    feed: &tokio::sync::Notify,
    replica: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), StorageError> {
    let url = db
        .postgres_url()
        .ok_or_else(|| StorageError::Unavailable("not PostgreSQL".into()))?;
    let mut conn = crate::storage::open_postgres(&url).map_err(StorageError::Unavailable)?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    while !stop.is_cancelled() {
        let Some(hub) = hub.upgrade() else {
            return Ok(());
        };
        for notification in conn.notifications_iter() {
            let notification = notification?;
            let Ok(envelope) = serde_json::from_str::<Envelope>(&notification.payload) else {
                continue;
            };
            if envelope.from == replica {
                continue;
            }
            for event in envelope.events {
                match event {
                    ClusterEvent::Notify { device_row, cursor } => {
                        hub.notify_device(
                            device_row,
                            GatewayEvent::DmNotify {
                                cursor,
                                message: None,
                            },
                        );
                    }
                    ClusterEvent::FeedChanged => feed.notify_one(),
                }
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}
