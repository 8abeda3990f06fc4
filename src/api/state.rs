//! What every handler shares: the daemon's services and settings, built
//! once by `startup` and handed to each worker.

use std::sync::Arc;

use crate::config::{RateLimits, Settings};
use crate::federation::keys::PeerKeys;
use crate::federation::relay::Relay;
use crate::federation::resolver::FederationClient;
use crate::gateway::{Hub, Notifier};
use crate::metrics::Metrics;
use crate::ratelimit::{AddressKey, RateLimiter};
use crate::server_key::ServerKey;
use crate::storage::Database;
use crate::tasks::Tasks;

/// Everything a request handler may need, shared by all workers.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Database,
    pub metrics: Arc<Metrics>,
    pub server_key: Arc<ServerKey>,
    pub rate_limits: Arc<RateLimiters>,
    pub hub: Arc<Hub>,
    pub federation: Arc<FederationClient>,
    pub peer_keys: Arc<PeerKeys>,
    /// Sends queued mail to other servers.
    pub relay: Relay,
    /// Wakes devices that are not connected through their push service.
    pub pusher: crate::push::Pusher,
    /// Group commit for sends and acks.
    pub write_queue: Arc<crate::mailbox::WriteQueue>,
    /// Identifies this daemon in relay leases.
    pub replica_id: String,
    /// Tells devices here and on other replicas what changed.
    pub notifier: Arc<Notifier>,
    /// Token checks already made, so most requests need no look-up.
    pub tokens: Arc<crate::token_cache::TokenCache>,
    /// The settings a send needs, shared instead of copied per request.
    pub send_context: Arc<crate::mailbox::SendContext>,
    /// Each account's budget of servers new to the relay.
    pub new_destinations: Arc<crate::federation::new_destinations::NewDestinations>,
    /// Every background task and thread, stopped together on shutdown.
    pub tasks: Tasks,
}

/// The rate limiters of the endpoints strangers can call.
pub struct RateLimiters {
    pub registration_per_ip: RateLimiter<AddressKey>,
    pub auth_per_ip: RateLimiter<AddressKey>,
    pub auth_per_account: RateLimiter<String>,
    pub send_per_device: RateLimiter<i64>,
    pub federation_per_origin: RateLimiter<String>,
    pub directory_per_account: RateLimiter<String>,
    /// Push subscriptions set, per device: a device subscribes rarely,
    /// and each one names a URL this server will post to.
    pub push_per_device: RateLimiter<i64>,
}

impl RateLimiters {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            registration_per_ip: RateLimiter::new(limits.registration_per_ip),
            auth_per_ip: RateLimiter::new(limits.auth_per_ip),
            auth_per_account: RateLimiter::new(limits.auth_per_account),
            send_per_device: RateLimiter::new(limits.send_per_device),
            federation_per_origin: RateLimiter::new(limits.federation_per_origin),
            directory_per_account: RateLimiter::new(limits.directory_per_account),
            push_per_device: RateLimiter::new(crate::config::Rate {
                burst: 10,
                per: std::time::Duration::from_secs(3600),
            }),
        }
    }
}
