//! Talking to other Homing servers.
pub mod signing;
