//! Talking to other Homing servers.
pub mod client;
pub mod directory;
pub mod inbound;
pub mod keys;
pub mod new_destinations;
pub mod outbox;
pub mod policy;
pub mod relay;
pub mod resolver;
pub mod signing;
pub mod wire;
