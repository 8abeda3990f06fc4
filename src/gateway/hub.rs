//! The notification hub: which devices are connected to this daemon and a
//! bounded queue to each session. A session that cannot keep up is cut off
//! rather than buffered for (it reconnects and resumes from its cursor).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::mailbox::{StatusEvent, SyncItem};

/// Events a session may be sent. Serialised as the frame the device sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GatewayEvent {
    /// Something new is pending for this device, up to `cursor`.
    DmNotify {
        cursor: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<SyncItem>,
    },
    /// What happened to a message this account sent.
    DeliveryStatus(StatusEvent),
}

/// Frames queued per session before it counts as too slow.
const SESSION_QUEUE: usize = 256;

/// An event as the text frame sessions send: serialised once however many
/// sessions get it (a shared, reference-counted buffer).
pub type Frame = bytestring::ByteString;

fn frame(event: &GatewayEvent) -> Option<Frame> {
    match serde_json::to_string(event) {
        Ok(text) => Some(Frame::from(text)),
        Err(error) => {
            tracing::error!(%error, "a gateway event could not be serialised");
            None
        }
    }
}

struct SessionSlot {
    id: u64,
    account: String,
    sender: mpsc::Sender<Frame>,
}

/// A registered session: its id and its event queue.
pub struct SessionTicket {
    pub id: u64,
    pub device_row: i64,
    pub events: mpsc::Receiver<Frame>,
}

/// Why a session could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("this device already has {0} gateway sessions")]
pub struct TooManySessions(pub usize);

/// All sessions on this daemon, by device.
#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    by_device: Mutex<HashMap<i64, Vec<SessionSlot>>>,
}

impl Hub {
    fn sessions(&self) -> MutexGuard<'_, HashMap<i64, Vec<SessionSlot>>> {
        // A panic while holding the lock leaves the map consistent (every
        // operation is a single insert or removal), so keep serving.
        match self.by_device.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a session of `device_row`, at most `max_per_device` each.
    pub fn register(
        &self,
        device_row: i64,
        account: &str,
        max_per_device: usize,
    ) -> Result<SessionTicket, TooManySessions> {
        let mut sessions = self.sessions();
        let slots = sessions.entry(device_row).or_default();
        slots.retain(|slot| !slot.sender.is_closed());
        if slots.len() >= max_per_device {
            return Err(TooManySessions(max_per_device));
        }
        let (sender, events) = mpsc::channel(SESSION_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        slots.push(SessionSlot {
            id,
            account: account.to_string(),
            sender,
        });
        Ok(SessionTicket {
            id,
            device_row,
            events,
        })
    }

    /// Forgets a session (it ended).
    pub fn unregister(&self, device_row: i64, id: u64) {
        let mut sessions = self.sessions();
        if let Some(slots) = sessions.get_mut(&device_row) {
            slots.retain(|slot| slot.id != id);
            if slots.is_empty() {
                sessions.remove(&device_row);
            }
        }
    }

    /// Queues `event` for every session of `device_row`.
    pub fn notify_device(&self, device_row: i64, event: GatewayEvent) {
        let Some(event) = frame(&event) else {
            return;
        };
        let mut sessions = self.sessions();
        if let Some(slots) = sessions.get_mut(&device_row) {
            // A full queue drops the slot: the session sees its queue close
            // and disconnects the slow device.
            slots.retain(|slot| slot.sender.try_send(event.clone()).is_ok());
        }
    }

    /// Queues `event` for every session of every device of `account`.
    pub fn notify_account(&self, account: &str, event: GatewayEvent) {
        let Some(event) = frame(&event) else {
            return;
        };
        let mut sessions = self.sessions();
        for slots in sessions.values_mut() {
            slots.retain(|slot| {
                slot.account != account || slot.sender.try_send(event.clone()).is_ok()
            });
        }
    }

    /// Open sessions on this daemon.
    pub fn session_count(&self) -> usize {
        self.sessions().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(cursor: i64) -> GatewayEvent {
        GatewayEvent::DmNotify {
            cursor,
            message: None,
        }
    }

    #[test]
    fn events_reach_only_the_device_and_sessions_are_capped() {
        let hub = Hub::default();
        let mut a = hub.register(1, "acct-a", 2).unwrap();
        let mut b = hub.register(2, "acct-b", 2).unwrap();
        let _second = hub.register(1, "acct-a", 2).unwrap();
        assert!(hub.register(1, "acct-a", 2).is_err());
        hub.notify_device(1, notify(7));
        let expected = serde_json::to_string(&notify(7)).unwrap();
        assert_eq!(&*a.events.try_recv().unwrap(), expected.as_str());
        assert!(b.events.try_recv().is_err());
        hub.unregister(1, a.id);
        assert_eq!(hub.session_count(), 2);
    }

    #[test]
    fn a_slow_session_is_cut_off_instead_of_buffered() {
        let hub = Hub::default();
        let mut ticket = hub.register(1, "acct", 1).unwrap();
        for cursor in 0..(SESSION_QUEUE as i64 + 10) {
            hub.notify_device(1, notify(cursor));
        }
        let mut received = 0;
        while ticket.events.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, SESSION_QUEUE);
        assert_eq!(
            hub.session_count(),
            0,
            "the overflowing session was dropped"
        );
    }
}
