//! What a group commit's sends read before they write: the idempotency
//! records of their ids (a retry is answered from its record), the local
//! recipients' accounts and devices, and whether each remote server may be
//! sent to. The reads themselves are `storage::mail::send_reads`.

use std::collections::HashMap;

use super::send_batch::SendJob;
use super::MailboxError;
use crate::storage::mail::{self, Recipients, StoredRecord};
use crate::storage::DbConnection;

/// The batch's reads.
pub(super) struct Found {
    /// (sender, message id, digest, response) of the ids already sent.
    pub records: Vec<StoredRecord>,
    /// Each local recipient's account and live devices, by alias.
    pub known: Recipients,
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
    let read = mail::send_reads(conn, &keys, &aliases, !remote.is_empty())?;
    let allowed = match jobs.first() {
        Some(job) => remote
            .iter()
            .map(|server| {
                let verdict = job.context.federation.permits(server, &read.rules);
                (server.to_string(), verdict)
            })
            .collect(),
        None => HashMap::new(),
    };
    Ok(Found {
        records: read.records,
        known: read.recipients,
        allowed,
    })
}
