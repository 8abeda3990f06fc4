//! The real-time gateway: WebSocket sessions of devices and the hub that
//! tells them something changed.

pub mod cluster;
mod feed_tail;
mod hub;
mod notifier;
mod queue;
mod session;

pub use feed_tail::FeedTail;
pub use hub::{GatewayEvent, Hub, SessionTicket};
pub use notifier::{Notifier, OfflineDevices};
pub use session::{SessionBody, SessionConfig};
