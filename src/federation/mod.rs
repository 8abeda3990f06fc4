//! Talking to other Homing servers.
pub mod resolver;
pub mod signing;
