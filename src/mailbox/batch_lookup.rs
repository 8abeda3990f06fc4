//! What a group commit's sends read before they write: the idempotency
//! records of their ids (a retry is answered from its record), the local
//! recipients' accounts and devices, and the federation rules when some
//! recipient is remote. On PostgreSQL that is one statement, so one round
//! trip in the writer's serial conversation; on SQLite a few.

use std::collections::HashMap;

use diesel::prelude::*;

use super::deliver::{by_alias, load_recipients, DeviceState};
use super::rows_pg::{self, StoredRecord};
use super::send_batch::SendJob;
use super::MailboxError;
use crate::federation::policy;
use crate::storage::schema::send_idempotency;
use crate::storage::DbConnection;

/// The batch's reads.
pub(super) struct Found {
    /// (sender, message id, digest, response) of the ids already sent.
    pub records: Vec<StoredRecord>,
    /// Each local recipient's account and live devices, by alias.
    pub known: HashMap<String, (String, Vec<DeviceState>)>,
    /// Whether each remote server of the batch may be sent to.
    pub allowed: HashMap<String, bool>,
}

pub(super) fn look_up(
    conn: &mut DbConnection,
    jobs: &[&mut SendJob],
) -> Result<Found, MailboxError> {
    let keys: Vec<(&str, &str)> = jobs
        .iter()
        .map(|job| (job.sender.account_key.as_str(), job.prepared.message_id()))
        .collect();
    let mut aliases = Vec::new();
    let mut remote = Vec::new();
    for job in jobs {
        for recipient in &job.prepared.parsed.recipients {
            let server = recipient.address.server();
            if job.context.local_names.contains(server) {
                aliases.push(recipient.address.alias().as_str());
            } else {
                remote.push(server);
            }
        }
    }
    aliases.sort_unstable();
    aliases.dedup();
    remote.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    remote.dedup();
    let (records, known, rules) = match conn {
        DbConnection::Postgres(pg) => {
            let read = rows_pg::look_up(pg, &keys, &aliases)?;
            (read.records, by_alias(read.recipients), read.rules)
        }
        DbConnection::Sqlite(c) => {
            let records = sqlite_records(c, &keys)?;
            let rules = if remote.is_empty() {
                Vec::new()
            } else {
                policy::load_rules(conn)?
            };
            (records, load_recipients(conn, &aliases)?, rules)
        }
    };
    let allowed = match jobs.first() {
        Some(job) => remote
            .iter()
            .map(|server| {
                let verdict = policy::decide(&job.context.federation, server, &rules);
                (server.to_string(), verdict)
            })
            .collect(),
        None => HashMap::new(),
    };
    Ok(Found {
        records,
        known,
        allowed,
    })
}

/// The records of these (sender, message id) pairs. Both key columns, so
/// the look-up seeks the primary key.
fn sqlite_records(
    c: &mut diesel::SqliteConnection,
    keys: &[(&str, &str)],
) -> QueryResult<Vec<StoredRecord>> {
    let mut senders: Vec<&str> = keys.iter().map(|k| k.0).collect();
    senders.sort_unstable();
    senders.dedup();
    let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    send_idempotency::table
        .filter(send_idempotency::sender_account.eq_any(&senders))
        .filter(send_idempotency::message_id.eq_any(&ids))
        .select((
            send_idempotency::sender_account,
            send_idempotency::message_id,
            send_idempotency::request_digest,
            send_idempotency::response,
        ))
        .load::<StoredRecord>(c)
}
