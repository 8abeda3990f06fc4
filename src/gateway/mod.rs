//! The real-time gateway: WebSocket sessions of devices and the hub that
//! tells them something changed.

pub mod cluster;
mod hub;
mod notifier;
mod session;

pub use hub::{GatewayEvent, Hub, SessionTicket};
pub use notifier::{Notifier, OfflineDevices};
pub use session::{run_session, SessionConfig};
