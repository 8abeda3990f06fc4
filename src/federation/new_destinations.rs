//! How many servers one account may add to the relay's work. Mail for a
//! server the relay already knows costs nothing here; a server it has never
//! queued mail for takes one of the sending account's
//! `rate_limits.new_destinations_per_account`. Without this, one account
//! could queue mail for thousands of made-up servers that accept a
//! connection and never answer, and every one of them would hold a relay
//! worker for a request time-out, again and again for the whole pending age.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use diesel::prelude::*;

use crate::address::{Host, ServerName};
use crate::config::Rate;
use crate::federation::resolver::is_private;
use crate::ratelimit::RateLimiter;
use crate::storage::schema::destinations;
use crate::storage::{Database, StorageError};
use crate::with_backend;

/// Destination names remembered as known; past this the set starts over
/// (a forgotten name is looked up again, which is all it costs).
const MAX_KNOWN: usize = 10_000;

/// Why a send may not add its destinations.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("this account added {per} new destination servers recently; retry in {retry_after:?}")]
    TooMany { per: String, retry_after: Duration },
    /// The server is named by a loopback or private address (or
    /// `localhost`), which federation never reaches unless allowed.
    #[error("{0} is a loopback or private address, which this server does not federate with")]
    PrivateAddress(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The budget of new destinations per account, and the names known to be
/// destinations already.
pub struct NewDestinations {
    rate: Rate,
    per_account: RateLimiter<String>,
    known: Mutex<HashSet<String>>,
}

impl NewDestinations {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            per_account: RateLimiter::new(rate),
            known: Mutex::new(HashSet::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `account` queue mail for `servers`, charging it for each one
    /// that is not yet a destination. A server named by a private address
    /// is refused outright unless `allow_private`: the relay could never
    /// reach it, and the mail would wait out the pending age for nothing.
    pub async fn admit(
        &self,
        db: &Database,
        account: &str,
        mut servers: Vec<String>,
        allow_private: bool,
    ) -> Result<(), AdmissionError> {
        if !allow_private {
            if let Some(private) = servers.iter().find(|server| names_private_host(server)) {
                return Err(AdmissionError::PrivateAddress(private.clone()));
            }
        }
        servers.retain(|server| !self.known().contains(server));
        if servers.is_empty() {
            return Ok(());
        }
        let asked = servers.clone();
        let existing: Vec<String> = db
            .run(move |conn| -> Result<Vec<String>, StorageError> {
                Ok(with_backend!(conn, c => destinations::table
                    .filter(destinations::server_name.eq_any(&asked))
                    .select(destinations::server_name)
                    .load(c))?)
            })
            .await?;
        // Charged and marked known under one lock: sends racing to the same
        // new server (before any of them has committed its destination
        // row) pay for it once, not once each.
        let mut known = self.known();
        if known.len() + servers.len() > MAX_KNOWN {
            known.clear();
        }
        for server in servers {
            if existing.contains(&server) || known.contains(&server) {
                known.insert(server);
                continue;
            }
            if let Err(retry_after) = self.per_account.check(&account.to_string()) {
                return Err(AdmissionError::TooMany {
                    per: format!("{}/{}s", self.rate.burst, self.rate.per.as_secs()),
                    retry_after,
                });
            }
            known.insert(server);
        }
        Ok(())
    }
}

/// True for a server name whose host is a loopback, private or reserved IP
/// literal, or `localhost`: known without a look-up.
fn names_private_host(server: &str) -> bool {
    match ServerName::parse(server).as_ref().map(ServerName::host) {
        Ok(Host::Ip(ip)) => is_private(*ip),
        Ok(Host::Domain(domain)) => domain == "localhost" || domain.ends_with(".localhost"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::names_private_host;

    #[test]
    fn private_literals_and_localhost_are_known_without_a_look_up() {
        for private in [
            "127.0.0.1:8008",
            "10.1.2.3",
            "[::1]:443",
            "localhost:8008",
            "a.localhost",
        ] {
            assert!(names_private_host(private), "{private}");
        }
        for public in [
            "example.org",
            "192.0.2.1:8448",
            "[2001:db8::1]",
            "localhost.example",
        ] {
            assert!(!names_private_host(public), "{public}");
        }
    }
}
