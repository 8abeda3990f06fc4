//! Periodic work of the daemon. Each loop is safe to run on every replica.

use std::time::Duration;

use crate::federation::directory::cache as identity_cache;
use crate::federation::nonces;
use crate::mailbox::{self, PurgeSettings};
use std::sync::Arc;

use crate::config::Retention;
use crate::gateway::Notifier;
use crate::metrics::Metrics;
use crate::storage::Database;
use crate::storage::StorageError;

/// Rows of each kind one purge pass removes.
const PURGE_BATCH: i64 = 1_000;

/// Applies expiry, inactivity and retention, in bounded batches; when a
/// batch was full it goes again at once instead of waiting an interval.
pub async fn purge_loop(
    db: Database,
    retention: Retention,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
) {
    let settings = PurgeSettings {
        max_pending_age: retention.max_pending_age,
        device_inactivity: retention.device_inactivity,
        batch: PURGE_BATCH,
    };
    let interval = retention.purge_interval;
    loop {
        let pass_settings = settings.clone();
        let result = db
            .run(move |conn| {
                let now = crate::time::now_ms();
                let report = mailbox::purge_once(conn, &pass_settings, now)?;
                let identities = identity_cache::purge(conn, now, PURGE_BATCH)?;
                crate::auth::forget_expired(conn, now).map_err(StorageError::from)?;
                nonces::forget_expired(conn, now)?;
                let pending = mailbox::pending_total(conn)?;
                Ok::<_, mailbox::MailboxError>((report, identities, pending))
            })
            .await;
        let again = match result {
            Ok((report, identities, pending)) => {
                let removed = report.expired_deliveries + report.inactive_deliveries;
                metrics.deliveries_expired.inc_by(removed as u64);
                metrics.pending_deliveries.set(pending.0);
                metrics.pending_bytes.set(pending.1);
                let saturated = report.saturated(PURGE_BATCH)
                    || identities.documents as i64 >= PURGE_BATCH
                    || identities.pins as i64 >= PURGE_BATCH;
                notifier.statuses(report.status_events);
                saturated
            }
            Err(error) => {
                tracing::warn!(%error, "purge pass failed");
                false
            }
        };
        if !again {
            tokio::time::sleep(interval.max(Duration::from_millis(100))).await;
        }
    }
}
