//! One sender's share of a device's pending quota: what one origin server
//! (for relayed mail) or one local account (for local mail) may hold in a
//! device's mailbox, `limits.max_pending_share_per_origin` of each quota,
//! so no single peer or account can fill a mailbox for everyone else.
//!
//! The hot path pays nothing for it while mailboxes are not near full: a
//! sender can only be over its share on a device whose whole mailbox is
//! past the share, so only such devices (usually none) are looked up, once
//! per batch. Within one batch the counts of devices looked up follow the
//! batch's own deliveries; a device that crosses the share within a batch
//! is checked from the next batch on.

use std::collections::HashMap;

use diesel::prelude::*;

use super::deliver::DeviceState;
use super::MailboxError;
use crate::config::Limits;
use crate::storage::schema::{deliveries, messages};
use crate::storage::DbConnection;
use crate::with_backend;

/// Who a delivery counts against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// Relayed mail, by origin server.
    Origin,
    /// Local mail, by sending account.
    Account,
}

/// The share caps and, for devices past them, what each sender holds.
#[derive(Debug, Default)]
pub(crate) struct Share {
    cap_messages: i64,
    cap_bytes: i64,
    /// `(device row, sender)` → pending messages and bytes.
    held: HashMap<(i64, String), (i64, i64)>,
}

impl Share {
    /// Loads what `senders` hold on those of `devices` whose mailbox is past
    /// the share of its quota (so that a message of up to the largest size
    /// might take one sender over).
    pub(crate) fn load<'a>(
        conn: &mut DbConnection,
        limits: &Limits,
        source: Source,
        senders: &[&str],
        devices: impl Iterator<Item = &'a DeviceState>,
    ) -> Result<Self, MailboxError> {
        let share = limits.max_pending_share_per_origin;
        // Rounded up, and at least one message: a share never shuts a
        // sender out of a small mailbox entirely.
        let cap_messages =
            ((f64::from(limits.max_pending_messages_per_device) * share).ceil() as i64).max(1);
        let cap_bytes = ((limits.max_pending_bytes_per_device as f64 * share).ceil() as i64)
            .max(i64::try_from(limits.max_message_bytes).unwrap_or(i64::MAX));
        let largest = i64::try_from(limits.max_message_bytes).unwrap_or(i64::MAX);
        let mut near: Vec<i64> = devices
            .filter(|(_, _, _, messages, bytes)| {
                *messages >= cap_messages || bytes.saturating_add(largest) > cap_bytes
            })
            .map(|(row, ..)| *row)
            .collect();
        let mut found = Self {
            cap_messages,
            cap_bytes,
            held: HashMap::new(),
        };
        if near.is_empty() || senders.is_empty() {
            return Ok(found);
        }
        near.sort_unstable();
        near.dedup();
        let query = deliveries::table
            .inner_join(messages::table)
            .filter(deliveries::device_row.eq_any(&near));
        let rows: Vec<(i64, Option<String>, i64)> = match source {
            Source::Origin => with_backend!(conn, c => query
                .filter(messages::origin.eq_any(senders))
                .select((deliveries::device_row, messages::origin.nullable(), deliveries::body_bytes))
                .load(c))?,
            Source::Account => with_backend!(conn, c => query
                .filter(messages::sender_account.eq_any(senders))
                .select((deliveries::device_row, messages::sender_account, deliveries::body_bytes))
                .load(c))?,
        };
        for (device, sender, bytes) in rows {
            let Some(sender) = sender else { continue };
            let entry = found.held.entry((device, sender)).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(bytes);
        }
        // Devices looked up where a sender holds nothing yet: counted from
        // zero as the batch delivers.
        for device in near {
            for sender in senders {
                found.held.entry((device, sender.to_string())).or_default();
            }
        }
        Ok(found)
    }

    /// True when one more message of `body_len` bytes from `sender` would
    /// take it past its share on `device`.
    pub(crate) fn over(&self, device: i64, sender: &str, body_len: i64) -> bool {
        if self.held.is_empty() {
            return false;
        }
        self.held
            .get(&(device, sender.to_string()))
            .is_some_and(|(messages, bytes)| {
                *messages >= self.cap_messages || bytes.saturating_add(body_len) > self.cap_bytes
            })
    }

    /// Counts a batch's own deliveries to devices that were looked up.
    pub(crate) fn count(&mut self, targets: &[(i64, Vec<u8>)], sender: &str, body_len: i64) {
        for (device, _) in targets {
            if let Some(entry) = self.held.get_mut(&(*device, sender.to_string())) {
                entry.0 += 1;
                entry.1 = entry.1.saturating_add(body_len);
            }
        }
    }
}
