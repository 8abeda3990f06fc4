//! Telling devices that something changed: this replica's sessions through
//! the hub, other replicas' through the cluster publisher. Handlers, the
//! relay and the purge hand it what a mailbox call returned, once.

use std::sync::Arc;

use super::cluster::{ClusterEvent, Publisher};
use super::{FeedTail, GatewayEvent, Hub};
use crate::mailbox::{NewDelivery, StatusEvent};

pub struct Notifier {
    hub: Arc<Hub>,
    cluster: Publisher,
    feed: FeedTail,
    offline: Arc<dyn OfflineDevices>,
}

/// Who hears of devices that got mail with no session here (the push
/// service, which wakes them another way).
pub trait OfflineDevices: Send + Sync {
    fn offline(&self, device_rows: Vec<i64>);
}

impl Notifier {
    pub fn new(
        hub: Arc<Hub>,
        cluster: Publisher,
        feed: FeedTail,
        offline: Arc<dyn OfflineDevices>,
    ) -> Self {
        Self {
            hub,
            cluster,
            feed,
            offline,
        }
    }

    /// Wakes the devices that got new deliveries, here and on other
    /// replicas, and names those with no session here to `offline`.
    pub fn deliveries(&self, deliveries: Vec<NewDelivery>) {
        let mut cluster = Vec::with_capacity(deliveries.len());
        let mut offline = Vec::new();
        for delivery in deliveries {
            cluster.push(ClusterEvent::Notify {
                device_row: delivery.device_row,
                cursor: delivery.cursor,
            });
            let connected = self.hub.notify_device(
                delivery.device_row,
                GatewayEvent::DmNotify {
                    cursor: delivery.cursor,
                    message: delivery.inline,
                },
            );
            if !connected {
                offline.push(delivery.device_row);
            }
        }
        // Without holding up the caller; a lost hint costs latency only
        // (devices resume from their cursor).
        self.cluster.publish(cluster);
        if !offline.is_empty() {
            self.offline.offline(offline);
        }
    }

    /// Receipts changed (`events`, committed, each in the delivery feed):
    /// the feed tails here and on other replicas send them to the senders'
    /// devices, in the feed's order and with its cursors.
    pub fn statuses(&self, events: Vec<StatusEvent>) {
        if events.is_empty() {
            return;
        }
        self.feed.wake();
        self.cluster.publish(vec![ClusterEvent::FeedChanged]);
    }
}
