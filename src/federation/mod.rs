//! Talking to other Homing servers.
pub mod client;
pub mod directory;
pub mod inbound;
pub mod keys;
pub mod new_destinations;
pub mod nonces;
pub mod policy;
pub mod relay;
pub mod resolver;
pub mod signing;
pub use homing_proto::federation as wire;
