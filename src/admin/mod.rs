//! `homingd admin …`: operations on the server's database that need no
//! running daemon.

pub mod check;
pub mod cli;
pub mod federation;
pub use crate::identity::invites;
pub mod migrate_store;
pub mod users;
