//! Talking to other Homing servers.
pub mod client;
pub mod directory;
pub mod identity_cache;
pub mod inbound;
pub mod keys;
pub mod new_destinations;
pub mod outbox;
pub mod policy;
pub mod relay;
pub mod resolver;
pub mod signing;
pub mod wire;
