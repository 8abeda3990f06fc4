//! Prometheus metrics, served at `/metrics` in the text exposition format.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request: the route template (never the raw path, so a
/// stranger cannot create new series) and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

/// Labels of a destination server's queue. Only the servers with the
/// largest queues get a series (see `MAX_DESTINATION_SERIES`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

/// Why a relay attempt failed, from a short fixed list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

/// Where a token check was answered from: `cache` or `database`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenCheckLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// Destinations with a series of their own: a server federating with
/// thousands of others still exports a bounded number of series.
pub const MAX_DESTINATION_SERIES: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    backend: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_seconds: Family<RequestLabels, Histogram>,
    pub messages_accepted: Counter,
    pub message_bytes: Histogram,
    pub deliveries_acked: Counter,
    pub deliveries_expired: Counter,
    pub gateway_sessions: Gauge,
    pub pending_deliveries: Gauge,
    pub pending_bytes: Gauge,
    pub relayed_messages: Counter,
    pub relay_failures: Family<CauseLabels, Counter>,
    /// Web Push wake-ups by what became of them (`cause`: sent, skipped,
    /// retry, rate_limited, gone, refused).
    pub push_outcomes: Family<CauseLabels, Counter>,
    pub inbound_messages: Counter,
    pub outbox_queued: Gauge,
    pub outbox_depth: Family<DestinationLabels, Gauge>,
    pub outbox_oldest_age_seconds: Family<DestinationLabels, Gauge>,
    pub write_queue_depth: Gauge,
    pub write_batch_size: Histogram,
    pub write_queue_wait_seconds: Histogram,
    pub write_commit_seconds: Histogram,
    pub token_checks: Family<TokenCheckLabels, Counter>,
    db_pool_connections: Family<PoolLabels, Gauge>,
    db_pool_max: Gauge,
}

impl Metrics {
    pub fn new(backend: &str) -> Self {
        let mut registry = Registry::with_prefix("homing");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                backend: backend.to_string(),
            })
            .set(1);
        registry.register("build_info", "Build and storage backend", build_info);
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_request_seconds = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route and status",
            http_request_seconds.clone(),
        );
        let messages_accepted = Counter::default();
        registry.register(
            "messages_accepted",
            "Messages accepted from local senders",
            messages_accepted.clone(),
        );
        let message_bytes = Histogram::new(exponential_buckets(256.0, 4.0, 8));
        registry.register(
            "message_bytes",
            "Size of accepted message bodies",
            message_bytes.clone(),
        );
        let deliveries_acked = Counter::default();
        registry.register(
            "deliveries_acked",
            "Deliveries acknowledged by devices",
            deliveries_acked.clone(),
        );
        let deliveries_expired = Counter::default();
        registry.register(
            "deliveries_expired",
            "Deliveries removed unacknowledged (expiry or device inactivity)",
            deliveries_expired.clone(),
        );
        let gateway_sessions = Gauge::default();
        registry.register(
            "gateway_sessions",
            "Open WebSocket gateway sessions",
            gateway_sessions.clone(),
        );
        let pending_deliveries = Gauge::default();
        registry.register(
            "pending_deliveries",
            "Deliveries waiting for an acknowledgement (as of the last purge pass)",
            pending_deliveries.clone(),
        );
        let relayed_messages = Counter::default();
        registry.register(
            "relayed_recipients",
            "Remote recipients whose server confirmed custody",
            relayed_messages.clone(),
        );
        let push_outcomes = Family::<CauseLabels, Counter>::default();
        registry.register(
            "push_outcomes",
            "Web Push wake-ups by outcome",
            push_outcomes.clone(),
        );
        let relay_failures = Family::<CauseLabels, Counter>::default();
        registry.register(
            "relay_failures",
            "Failed relay attempts by cause (resolve, connect, timeout, rejected, remote_error, bad_response, storage, other)",
            relay_failures.clone(),
        );
        let inbound_messages = Counter::default();
        registry.register(
            "inbound_messages",
            "Messages received from other servers",
            inbound_messages.clone(),
        );
        let pending_bytes = Gauge::default();
        registry.register(
            "pending_bytes",
            "Body bytes waiting for acknowledgements, counted per target device (as of the last purge pass)",
            pending_bytes.clone(),
        );
        let outbox_queued = Gauge::default();
        registry.register(
            "outbox_queued",
            "Messages waiting to be relayed, all destinations",
            outbox_queued.clone(),
        );
        let outbox_depth = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "outbox_depth",
            "Messages waiting for one destination server (the largest queues only)",
            outbox_depth.clone(),
        );
        let outbox_oldest_age_seconds = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest message waiting for one destination server",
            outbox_oldest_age_seconds.clone(),
        );
        let write_queue_depth = Gauge::default();
        registry.register(
            "write_queue_depth",
            "Sends and acks waiting for a group commit",
            write_queue_depth.clone(),
        );
        let write_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "write_batch_size",
            "Sends and acks committed together in one transaction",
            write_batch_size.clone(),
        );
        let write_queue_wait_seconds = latency_histogram();
        registry.register(
            "write_queue_wait_seconds",
            "Time a send or ack waited in the queue before a writer took it into a batch",
            write_queue_wait_seconds.clone(),
        );
        let write_commit_seconds = latency_histogram();
        registry.register(
            "write_commit_seconds",
            "Time one batch's transaction took, from its first statement to its commit on disk",
            write_commit_seconds.clone(),
        );
        let token_checks = Family::<TokenCheckLabels, Counter>::default();
        registry.register(
            "token_checks",
            "Bearer token checks by where they were answered (cache, database)",
            token_checks.clone(),
        );
        let db_pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections by state (in_use, idle)",
            db_pool_connections.clone(),
        );
        let db_pool_max = Gauge::default();
        registry.register(
            "db_pool_max",
            "Most database connections the pool opens",
            db_pool_max.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            pending_bytes,
            outbox_queued,
            outbox_depth,
            outbox_oldest_age_seconds,
            write_queue_depth,
            write_batch_size,
            write_queue_wait_seconds,
            write_commit_seconds,
            token_checks,
            db_pool_connections,
            db_pool_max,
            relayed_messages,
            relay_failures,
            push_outcomes,
            inbound_messages,
            http_requests,
            http_request_seconds,
            messages_accepted,
            message_bytes,
            deliveries_acked,
            deliveries_expired,
            gateway_sessions,
            pending_deliveries,
        }
    }

    /// Records one finished request.
    /// The histograms the writers report to.
    pub fn write_timings(&self) -> crate::mailbox::WriteTimings {
        crate::mailbox::WriteTimings {
            batch_sizes: self.write_batch_size.clone(),
            queue_wait_seconds: self.write_queue_wait_seconds.clone(),
            commit_seconds: self.write_commit_seconds.clone(),
        }
    }

    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            route: route.to_string(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_request_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Registers the database pool's checkout-wait histogram.
    pub fn register_database(&self, db: &crate::storage::Database) {
        if let Ok(mut registry) = self.registry.lock() {
            let pool_wait: Histogram = db.pool_wait_histogram();
            registry.register(
                "db_pool_wait_seconds",
                "Time a request waited for a free database connection",
                pool_wait,
            );
        }
    }

    /// Records the pool's occupancy now.
    pub fn observe_pool(&self, pool: crate::storage::PoolState) {
        let in_use = pool.open.saturating_sub(pool.idle);
        let gauge = |state| {
            self.db_pool_connections
                .get_or_create(&PoolLabels { state })
        };
        gauge("in_use").set(i64::from(in_use));
        gauge("idle").set(i64::from(pool.idle));
        self.db_pool_max.set(i64::from(pool.max));
    }

    /// Replaces the per-destination queue series with `queues` (largest
    /// first, already cut to `MAX_DESTINATION_SERIES`), so a destination
    /// that drained stops being reported.
    pub fn observe_outbox(
        &self,
        total: i64,
        queues: &[crate::storage::mail::outbox::DestinationQueue],
        now_ms: i64,
    ) {
        self.outbox_queued.set(total);
        self.outbox_depth.clear();
        self.outbox_oldest_age_seconds.clear();
        for queue in queues {
            let labels = DestinationLabels {
                destination: queue.destination.clone(),
            };
            self.outbox_depth.get_or_create(&labels).set(queue.queued);
            let age = (now_ms - queue.oldest_created_at).max(0) / 1000;
            self.outbox_oldest_age_seconds
                .get_or_create(&labels)
                .set(age);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let registry = self.registry.lock().map_err(|_| std::fmt::Error)?;
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// 100 µs to about 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}
