//! Integration tests against the real daemon on 127.0.0.1, on SQLite by
//! default and on PostgreSQL when `HOMING_TEST_DATABASE_URL` is set.

mod admin;
mod cli;
mod crash;
mod daemon;
mod database_faults;
mod deployed;
mod deployment;
mod devices;
mod directory_limits;
mod faults;
mod federation;
mod federation_check;
mod gateway;
mod group_commit;
mod health;
mod helpers;
mod hostile;
mod identity;
mod interop;
mod mailbox;
mod migrate_store;
mod openapi;
mod portless;
mod private_addresses;
mod properties;
mod relay_answers;
mod relay_batches;
mod replicas;
mod resolver;
mod schema;
mod signed_requests;
mod tarpits;
mod test_servers;
mod upgrades;
