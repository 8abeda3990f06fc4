//! The real-time gateway: WebSocket sessions of devices and the hub that
//! tells them something changed.

mod hub;
mod session;

pub use hub::{GatewayEvent, Hub, SessionTicket};
pub use session::{run_session, SessionConfig};
