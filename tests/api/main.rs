//! Integration tests against the real daemon on 127.0.0.1, on SQLite by
//! default and on PostgreSQL when `HOMING_TEST_DATABASE_URL` is set.

mod admin;
mod cli;
mod crash;
mod daemon;
mod database_faults;
mod devices;
mod faults;
mod federation;
mod gateway;
mod group_commit;
mod health;
mod helpers;
mod hostile;
mod hostile_server;
mod identity;
mod inbox_safety;
mod linking;
mod mailbox;
mod migrate_store;
mod openapi;
mod properties;
mod relay_answers;
mod relay_batches;
mod replicas;
mod resolver;
mod schema;
mod test_servers;
mod upgrades;
