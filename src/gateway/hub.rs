//! The notification hub: which devices are connected to this daemon and a
//! bounded queue to each session. A session that cannot keep up is cut off
//! rather than buffered for (it reconnects and resumes from its cursor).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::queue::{queue, FrameReceiver, FrameSender};
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
    /// What happened to a message this account sent, with its position
    /// in the delivery feed (`GET /api/v1/dms/status?since=` resumes
    /// after it).
    DeliveryStatus {
        cursor: String,
        #[serde(flatten)]
        event: StatusEvent,
    },
}

/// Frames queued per session before it counts as too slow.
const SESSION_QUEUE: usize = 256;

/// An event as the text frame sessions send: serialised once however many
/// sessions get it (a shared, reference-counted buffer).
pub type Frame = bytestring::ByteString;

pub(super) fn frame(event: &GatewayEvent) -> Option<Frame> {
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
    /// The hash of the token the session was opened with.
    token_hash: Vec<u8>,
    sender: FrameSender,
    revoked: Arc<AtomicBool>,
}

/// A registered session: its id and its event queue.
pub struct SessionTicket {
    pub id: u64,
    pub device_row: i64,
    pub events: FrameReceiver,
    /// Set before the queue closes when the session's token stopped
    /// working, so the session can say why it ends.
    pub revoked: Arc<AtomicBool>,
}

/// Why a session could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("this device already has {0} gateway sessions")]
pub struct TooManySessions(pub usize);

/// All sessions on this daemon, by device, and the devices of each
/// account that has sessions here (so an account's events do not scan
/// every session).
#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    by_device: HashMap<i64, Vec<SessionSlot>>,
    by_account: HashMap<String, HashSet<i64>>,
}

impl Hub {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // A panic while holding the lock leaves the maps consistent (every
        // operation is a single insert or removal), so keep serving.
        match self.sessions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a session of `device_row`, at most `max_per_device` each.
    pub fn register(
        &self,
        device_row: i64,
        account: &str,
        token_hash: &[u8],
        max_per_device: usize,
    ) -> Result<SessionTicket, TooManySessions> {
        let mut sessions = self.sessions();
        sessions
            .by_account
            .entry(account.to_string())
            .or_default()
            .insert(device_row);
        let slots = sessions.by_device.entry(device_row).or_default();
        slots.retain(|slot| !slot.sender.is_closed());
        if slots.len() >= max_per_device {
            return Err(TooManySessions(max_per_device));
        }
        let (sender, events) = queue(SESSION_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = Arc::new(AtomicBool::new(false));
        slots.push(SessionSlot {
            id,
            account: account.to_string(),
            token_hash: token_hash.to_vec(),
            sender,
            revoked: revoked.clone(),
        });
        Ok(SessionTicket {
            id,
            device_row,
            events,
            revoked,
        })
    }

    /// The tokens the open sessions were opened with, each once.
    pub fn session_tokens(&self) -> Vec<Vec<u8>> {
        let sessions = self.sessions();
        let tokens: HashSet<&Vec<u8>> = sessions
            .by_device
            .values()
            .flatten()
            .map(|slot| &slot.token_hash)
            .collect();
        tokens.into_iter().cloned().collect()
    }

    /// Ends every session whose token is not in `valid`: its queue closes
    /// and the session hangs up, saying the token was revoked. Returns how
    /// many ended.
    pub fn end_sessions_without(&self, valid: &HashSet<Vec<u8>>) -> usize {
        let mut sessions = self.sessions();
        let mut ended = 0;
        for slots in sessions.by_device.values_mut() {
            slots.retain(|slot| {
                let keep = valid.contains(&slot.token_hash);
                if !keep {
                    slot.revoked.store(true, Ordering::Release);
                    ended += 1;
                }
                keep
            });
        }
        ended
    }

    /// Forgets a session (it ended).
    pub fn unregister(&self, device_row: i64, id: u64) {
        let mut sessions = self.sessions();
        let Some(slots) = sessions.by_device.get_mut(&device_row) else {
            return;
        };
        let account = slots
            .iter()
            .find(|slot| slot.id == id)
            .map(|slot| slot.account.clone());
        slots.retain(|slot| slot.id != id);
        if !slots.is_empty() {
            return;
        }
        sessions.by_device.remove(&device_row);
        match account {
            Some(account) => {
                if let Some(devices) = sessions.by_account.get_mut(&account) {
                    devices.remove(&device_row);
                    if devices.is_empty() {
                        sessions.by_account.remove(&account);
                    }
                }
            }
            // The slot was already dropped (its queue overflowed), taking
            // the account name with it: rare, so search.
            None => sessions.by_account.retain(|_, devices| {
                devices.remove(&device_row);
                !devices.is_empty()
            }),
        }
    }

    /// Queues `event` for every session of `device_row`.
    /// False when it has none that took it (the device is not connected
    /// to this daemon).
    pub fn notify_device(&self, device_row: i64, event: GatewayEvent) -> bool {
        // Most deliveries are for devices that are not connected here; the
        // frame (which may carry the whole message) is made only for those
        // that are, and outside the lock.
        if !self.sessions().by_device.contains_key(&device_row) {
            return false;
        }
        let Some(event) = frame(&event) else {
            return false;
        };
        let mut sessions = self.sessions();
        let Some(slots) = sessions.by_device.get_mut(&device_row) else {
            return false;
        };
        // A full queue drops the slot: the session sees its queue close
        // and disconnects the slow device.
        slots.retain(|slot| slot.sender.try_send(event.clone()).is_ok());
        !slots.is_empty()
    }

    /// True when `device_row` has a live session on this daemon.
    pub fn is_connected(&self, device_row: i64) -> bool {
        self.sessions()
            .by_device
            .get(&device_row)
            .is_some_and(|slots| slots.iter().any(|slot| !slot.sender.is_closed()))
    }

    /// Queues `event` for every session of every device of `account`.
    pub fn notify_account(&self, account: &str, event: GatewayEvent) {
        let mut sessions = self.sessions();
        let Some(devices) = sessions.by_account.get(account) else {
            return;
        };
        let devices: Vec<i64> = devices.iter().copied().collect();
        let Some(event) = frame(&event) else {
            return;
        };
        for device_row in devices {
            if let Some(slots) = sessions.by_device.get_mut(&device_row) {
                slots.retain(|slot| slot.sender.try_send(event.clone()).is_ok());
            }
        }
    }

    /// Open sessions on this daemon.
    pub fn session_count(&self) -> usize {
        self.sessions().by_device.values().map(Vec::len).sum()
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
        let mut a = hub.register(1, "acct-a", b"token", 2).unwrap();
        let mut b = hub.register(2, "acct-b", b"token", 2).unwrap();
        let _second = hub.register(1, "acct-a", b"token", 2).unwrap();
        assert!(hub.register(1, "acct-a", b"token", 2).is_err());
        hub.notify_device(1, notify(7));
        let expected = serde_json::to_string(&notify(7)).unwrap();
        assert_eq!(&*a.events.try_recv().unwrap(), expected.as_str());
        assert!(b.events.try_recv().is_none());
        hub.unregister(1, a.id);
        assert_eq!(hub.session_count(), 2);
    }

    #[test]
    fn account_events_reach_that_accounts_devices_only_and_the_index_empties() {
        let hub = Hub::default();
        let mut phone = hub.register(1, "acct-a", b"token", 2).unwrap();
        let mut laptop = hub.register(2, "acct-a", b"token", 2).unwrap();
        let mut other = hub.register(3, "acct-b", b"token", 2).unwrap();
        hub.notify_account("acct-a", notify(5));
        assert!(phone.events.try_recv().is_some());
        assert!(laptop.events.try_recv().is_some());
        assert!(other.events.try_recv().is_none());
        for (device_row, id) in [(1, phone.id), (2, laptop.id), (3, other.id)] {
            hub.unregister(device_row, id);
        }
        let sessions = hub.sessions();
        assert!(sessions.by_device.is_empty());
        assert!(sessions.by_account.is_empty());
    }

    #[test]
    fn a_slow_session_is_cut_off_instead_of_buffered() {
        let hub = Hub::default();
        let mut ticket = hub.register(1, "acct", b"token", 1).unwrap();
        for cursor in 0..(SESSION_QUEUE as i64 + 10) {
            hub.notify_device(1, notify(cursor));
        }
        let mut received = 0;
        while ticket.events.try_recv().is_some() {
            received += 1;
        }
        assert_eq!(received, SESSION_QUEUE);
        assert_eq!(
            hub.session_count(),
            0,
            "the overflowing session was dropped"
        );
        hub.unregister(1, ticket.id);
        assert!(hub.sessions().by_account.is_empty());
    }

    #[test]
    fn sessions_whose_token_stopped_working_end_and_say_so() {
        let hub = Hub::default();
        let mut kept = hub.register(1, "acct", b"kept", 2).unwrap();
        let mut ended = hub.register(1, "acct", b"gone", 2).unwrap();
        let mut tokens = hub.session_tokens();
        tokens.sort();
        assert_eq!(tokens, vec![b"gone".to_vec(), b"kept".to_vec()]);

        let valid: HashSet<Vec<u8>> = [b"kept".to_vec()].into();
        assert_eq!(hub.end_sessions_without(&valid), 1);
        assert!(ended.revoked.load(Ordering::Acquire));
        assert!(ended.events.try_recv().is_none(), "its queue closed");
        assert!(!kept.revoked.load(Ordering::Acquire));
        hub.notify_device(1, notify(5));
        assert!(
            kept.events.try_recv().is_some(),
            "the other session still hears"
        );
        assert_eq!(hub.session_count(), 1);
    }
}
