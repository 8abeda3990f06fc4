//! Web Push wake-ups for devices that are not connected: when mail arrives
//! for a device with no gateway session here, and the device gave a push
//! subscription, the push service is asked to wake it (RFC 8030), with a
//! body that says only that there is mail and up to which cursor.
//!
//! Durable: what is owed is a column of the subscription's row
//! (`storage::push`), so it survives a restart, retries back off there,
//! and a device is owed at most one wake-up at a time. Handlers tell the
//! pusher which devices got mail while offline (`offline`, after the
//! commit); a hint lost in a crash is made good at start, when every
//! subscribed device holding mail no wake-up announced is owed one.

pub mod endpoint;
mod send;
pub mod vapid;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use crate::config::Settings;
use crate::federation::resolver::FederationClient;
use crate::gateway::Hub;
use crate::metrics::{CauseLabels, Metrics};
use crate::storage::push::{self as subscriptions, Claimed, Settled};
use crate::storage::{Database, StorageError};
use crate::tasks::Tasks;
pub use vapid::VapidKey;

/// Requests to push services in flight at once; a push service that
/// never answers holds one for `push.request_timeout`.
const MAX_IN_FLIGHT: usize = 32;
/// Devices remembered between two passes of the loop; past this, the
/// loop looks in the database for everything owed instead.
const MAX_HINTS: usize = 100_000;
/// Longest the loop sleeps without a wake-up.
const IDLE: Duration = Duration::from_secs(30);
/// Shortest time between two passes: under a flood of mail to offline
/// devices, hints gather for this long and cost one pass (a few reads)
/// instead of one per send. A wake-up waits at most this much longer.
const MIN_PASS_GAP: Duration = Duration::from_millis(10);
/// Back-off after a failure: doubling from this, up to `MAX_BACKOFF`.
const FIRST_BACKOFF_MS: i64 = 2_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// Failed tries after which a wake-up is given up, about three hours
/// after the first (the mail waits for the device's next sync all the
/// same).
const MAX_ATTEMPTS: i32 = 14;

/// What the pusher works with.
pub struct Parts {
    pub settings: Arc<Settings>,
    pub db: Database,
    pub hub: Arc<Hub>,
    pub federation: Arc<FederationClient>,
    pub key: VapidKey,
    pub metrics: Arc<Metrics>,
    pub tasks: Tasks,
}

/// The push service. Cheap to clone.
#[derive(Clone)]
pub struct Pusher(Arc<Inner>);

struct Inner {
    parts: Parts,
    hints: Mutex<Hints>,
    wake: Notify,
    in_flight: Arc<Semaphore>,
    /// The VAPID `sub`: the admin's contact, or the server's URL.
    subject: String,
}

#[derive(Default)]
struct Hints {
    devices: HashSet<i64>,
    overflowed: bool,
}

impl Pusher {
    pub fn new(parts: Parts) -> Self {
        // RFC 8292 asks for a `mailto:` or `https:` contact; the admin's
        // may be a plain-HTTP URL on a test server.
        let subject = parts
            .settings
            .about
            .contact
            .as_ref()
            .map(|contact| contact.href())
            .filter(|href| href.starts_with("mailto:") || href.starts_with("https:"))
            .unwrap_or_else(|| format!("https://{}", parts.settings.server_name));
        Self(Arc::new(Inner {
            parts,
            hints: Mutex::default(),
            wake: Notify::new(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            subject,
        }))
    }

    /// The VAPID public key browsers subscribe with.
    pub fn public_key_b64(&self) -> &str {
        self.0.parts.key.public_key_b64()
    }

    /// Mail was committed for `device_rows`, which have no session here.
    pub fn hint(&self, device_rows: impl IntoIterator<Item = i64>) {
        let mut any = false;
        {
            let mut hints = self.0.hints.lock().unwrap_or_else(|e| e.into_inner());
            for row in device_rows {
                any = true;
                if hints.devices.len() < MAX_HINTS {
                    hints.devices.insert(row);
                } else {
                    hints.overflowed = true;
                }
            }
        }
        if any {
            self.0.wake.notify_one();
        }
    }

    /// Runs until the daemon stops.
    pub fn start(&self) {
        self.0.parts.tasks.spawn(push_loop(self.clone()));
    }

    fn take_hints(&self) -> Hints {
        let mut hints = self.0.hints.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *hints)
    }

    /// Puts back hints that could not be recorded, for the next pass.
    fn restore_hints(&self, devices: Vec<i64>, overflowed: bool) {
        let mut hints = self.0.hints.lock().unwrap_or_else(|e| e.into_inner());
        hints.overflowed |= overflowed;
        for row in devices {
            if hints.devices.len() < MAX_HINTS {
                hints.devices.insert(row);
            } else {
                hints.overflowed = true;
            }
        }
    }
}

impl crate::gateway::OfflineDevices for Pusher {
    fn offline(&self, device_rows: Vec<i64>) {
        self.hint(device_rows);
    }
}

/// Owes what was hinted (everything unannounced at start and after an
/// overflow), sends what is due, then waits for a hint, a finished
/// request or the next due time.
async fn push_loop(pusher: Pusher) {
    let mut everything = true;
    loop {
        let hints = pusher.take_hints();
        let devices: Vec<i64> = hints.devices.into_iter().collect();
        let look_everywhere = everything || hints.overflowed;
        match owe(&pusher, devices.clone(), look_everywhere).await {
            Ok(()) => everything = false,
            Err(error) => {
                tracing::warn!(%error, "push: recording owed wake-ups failed");
                pusher.restore_hints(devices, look_everywhere);
            }
        }
        let wait = match send_due(&pusher).await {
            // Every request slot is taken: each one that ends wakes the
            // loop, so there is nothing to poll for.
            Ok(()) if pusher.0.in_flight.available_permits() == 0 => IDLE,
            Ok(()) => next_wait(&pusher).await,
            Err(error) => {
                tracing::warn!(%error, "push: claiming due wake-ups failed");
                IDLE
            }
        };
        tokio::select! {
            _ = pusher.0.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(MIN_PASS_GAP).await;
    }
}

async fn owe(pusher: &Pusher, devices: Vec<i64>, everything: bool) -> Result<(), StorageError> {
    let min_interval = crate::time::duration_ms(pusher.0.parts.settings.push.min_interval);
    pusher
        .0
        .parts
        .db
        .run(move |conn| {
            let now = crate::time::now_ms();
            for chunk in devices.chunks(500) {
                subscriptions::owe(conn, chunk, now, min_interval)?;
            }
            if everything {
                subscriptions::owe_unannounced(conn, now)?;
            }
            Ok(())
        })
        .await
}

async fn next_wait(pusher: &Pusher) -> Duration {
    let now = crate::time::now_ms();
    match pusher
        .0
        .parts
        .db
        .run(move |conn| subscriptions::next_due(conn, now))
        .await
    {
        Ok(Some(at)) => {
            let delta = at.saturating_sub(crate::time::now_ms()).max(0);
            // Not in a spin when something is due this very moment.
            Duration::from_millis(u64::try_from(delta).unwrap_or(0))
                .clamp(Duration::from_millis(50), IDLE)
        }
        _ => IDLE,
    }
}

/// Claims as many due wake-ups as there are free request slots and sends
/// each in a task of its own.
async fn send_due(pusher: &Pusher) -> Result<(), StorageError> {
    let free = pusher.0.in_flight.available_permits();
    if free == 0 {
        return Ok(());
    }
    let now = crate::time::now_ms();
    let timeout = crate::time::duration_ms(pusher.0.parts.settings.push.request_timeout);
    let claimed = pusher
        .0
        .parts
        .db
        .run(move |conn| subscriptions::claim(conn, now, free as i64, timeout))
        .await?;
    for wake_up in claimed {
        let Ok(permit) = pusher.0.in_flight.clone().try_acquire_owned() else {
            break;
        };
        let pusher = pusher.clone();
        pusher.0.parts.tasks.clone().spawn(async move {
            let attempts = wake_up.attempts;
            let settled = deliver(&pusher, &wake_up).await;
            let now = crate::time::now_ms();
            let min_interval = crate::time::duration_ms(pusher.0.parts.settings.push.min_interval);
            let recorded = pusher
                .0
                .parts
                .db
                .run(move |conn| subscriptions::settle(conn, &wake_up, settled, now, min_interval))
                .await;
            if let Err(error) = recorded {
                // The lease runs out and the wake-up is tried again.
                tracing::warn!(%error, attempts, "push: recording an outcome failed");
            }
            drop(permit);
            pusher.0.wake.notify_one();
        });
    }
    Ok(())
}

/// Sends one claimed wake-up unless there is no longer a reason to.
async fn deliver(pusher: &Pusher, wake_up: &Claimed) -> Settled {
    let parts = &pusher.0.parts;
    let outcome = |cause: &'static str| {
        parts
            .metrics
            .push_outcomes
            .get_or_create(&CauseLabels { cause })
            .inc();
    };
    if wake_up.revoked {
        outcome("gone");
        return Settled::Unsubscribed;
    }
    let Some(cursor) = wake_up.cursor else {
        outcome("skipped");
        return Settled::Dropped;
    };
    if parts.hub.is_connected(wake_up.device_row) {
        outcome("skipped");
        return Settled::Dropped;
    }
    let Ok(endpoint) = reqwest::Url::parse(&wake_up.endpoint) else {
        outcome("refused");
        return Settled::Unsubscribed;
    };
    if let Some(refusal) = endpoint
        .host_str()
        .and_then(|host| parts.federation.literal_refusal(host))
    {
        // The address rules changed since the device subscribed.
        tracing::info!(%refusal, "push: endpoint no longer allowed, subscription removed");
        outcome("refused");
        return Settled::Unsubscribed;
    }
    let request = send::Request {
        client: parts.federation.push_http(),
        key: &parts.key,
        subject: &pusher.0.subject,
        ttl: parts.settings.push.ttl,
        timeout: parts.settings.push.request_timeout,
    };
    let answer = send::post(&request, &endpoint, &wake_up.p256dh, &wake_up.auth, cursor).await;
    let now = crate::time::now_ms();
    match answer {
        send::Answer::Accepted => {
            outcome("sent");
            Settled::Sent { cursor }
        }
        send::Answer::Gone => {
            outcome("gone");
            Settled::Unsubscribed
        }
        send::Answer::Refused(status) => {
            tracing::info!(status, "push: the push service refused a wake-up");
            outcome("refused");
            Settled::Dropped
        }
        send::Answer::Unencryptable => {
            tracing::warn!("push: a stored subscription's keys are unusable; removed");
            outcome("refused");
            Settled::Unsubscribed
        }
        send::Answer::SlowDown(wait) => {
            outcome("rate_limited");
            let wait = wait.map(crate::time::duration_ms);
            retry(now, wake_up.attempts, wait)
        }
        send::Answer::Failed(reason) => {
            tracing::info!(%reason, attempts = wake_up.attempts + 1, "push: a wake-up failed");
            outcome("retry");
            retry(now, wake_up.attempts, None)
        }
    }
}

/// The next try after `attempts` earlier failures, or none past the last.
fn retry(now: i64, attempts: i32, asked_ms: Option<i64>) -> Settled {
    let attempts = attempts.saturating_add(1);
    if attempts >= MAX_ATTEMPTS {
        return Settled::Dropped;
    }
    let backoff = FIRST_BACKOFF_MS
        .saturating_mul(1 << (attempts - 1).clamp(0, 20))
        .min(MAX_BACKOFF_MS);
    let wait = asked_ms.map_or(backoff, |asked| asked.clamp(1_000, MAX_BACKOFF_MS));
    Settled::Retry {
        at: now + wait,
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_end() {
        assert_eq!(
            retry(0, 0, None),
            Settled::Retry {
                at: FIRST_BACKOFF_MS,
                attempts: 1
            }
        );
        assert_eq!(
            retry(0, 3, None),
            Settled::Retry {
                at: FIRST_BACKOFF_MS * 8,
                attempts: 4
            }
        );
        assert_eq!(
            retry(0, 10, None),
            Settled::Retry {
                at: FIRST_BACKOFF_MS * 1024,
                attempts: 11
            }
        );
        assert_eq!(
            retry(0, 11, None),
            Settled::Retry {
                at: MAX_BACKOFF_MS,
                attempts: 12
            }
        );
        // A damaged count does not break the arithmetic.
        assert!(matches!(retry(0, -5, None), Settled::Retry { .. }));
        assert_eq!(retry(0, MAX_ATTEMPTS - 1, None), Settled::Dropped);
        // Retry-After is honoured within bounds.
        assert_eq!(
            retry(0, 0, Some(30_000)),
            Settled::Retry {
                at: 30_000,
                attempts: 1
            }
        );
        assert_eq!(
            retry(0, 0, Some(0)),
            Settled::Retry {
                at: 1_000,
                attempts: 1
            }
        );
    }
}
