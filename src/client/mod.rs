//! The client library: what a device does with its keys and how it talks to
//! its home server. The `homing` CLI, the tests and `examples/` use it.

pub mod api;
pub mod keys;
pub mod store;
