//! Periodic work of the daemon. Each loop is safe to run on every replica.

use std::time::Duration;

use crate::federation::identity_cache;
use crate::mailbox::{self, PurgeSettings};
use crate::startup::AppState;

/// Rows of each kind one purge pass removes.
const PURGE_BATCH: i64 = 1_000;

/// Applies expiry, inactivity and retention, in bounded batches; when a
/// batch was full it goes again at once instead of waiting an interval.
pub async fn purge_loop(state: AppState) {
    let settings = PurgeSettings {
        max_pending_age: state.settings.retention.max_pending_age,
        device_inactivity: state.settings.retention.device_inactivity,
        batch: PURGE_BATCH,
    };
    let interval = state.settings.retention.purge_interval;
    loop {
        let pass_settings = settings.clone();
        let result = state
            .db
            .run(move |conn| {
                let now = crate::time::now_ms();
                let report = mailbox::purge_once(conn, &pass_settings, now)?;
                let identities = identity_cache::purge(conn, now, PURGE_BATCH)?;
                let pending = mailbox::pending_total(conn)?;
                Ok::<_, mailbox::MailboxError>((report, identities, pending))
            })
            .await;
        let again = match result {
            Ok((report, identities, pending)) => {
                let removed = report.expired_deliveries + report.inactive_deliveries;
                state.metrics.deliveries_expired.inc_by(removed as u64);
                state.metrics.pending_deliveries.set(pending.0);
                state.metrics.pending_bytes.set(pending.1);
                let saturated = report.saturated(PURGE_BATCH)
                    || identities.documents as i64 >= PURGE_BATCH
                    || identities.pins as i64 >= PURGE_BATCH;
                state.notifier.statuses(report.status_events);
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
