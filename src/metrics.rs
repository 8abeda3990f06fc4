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
    pub relayed_messages: Counter,
    pub relay_failures: Counter,
    pub inbound_messages: Counter,
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
        let relay_failures = Counter::default();
        registry.register(
            "relay_failures",
            "Failed relay attempts (any destination)",
            relay_failures.clone(),
        );
        let inbound_messages = Counter::default();
        registry.register(
            "inbound_messages",
            "Messages received from other servers",
            inbound_messages.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            relayed_messages,
            relay_failures,
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
