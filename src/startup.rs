//! Building and running the daemon: config → database → migrations →
//! server key → HTTP server. Tests use the same path through `Application`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server, Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App};
use anyhow::Context;
use tracing::Instrument;

use crate::api::{self, AppState, RateLimiters};
use crate::config::Settings;
use crate::federation::keys::PeerKeys;
use crate::federation::relay::{self, Relay};
use crate::federation::resolver::FederationClient;
use crate::gateway::{FeedTail, Hub, Notifier};
use crate::metrics::Metrics;
use crate::push::Pusher;
use crate::server_key;
use crate::storage::{Backend, Database};
use crate::tasks::Tasks;

/// A daemon bound to its port and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

/// How long a stopping daemon waits for its tasks and threads; a relay
/// attempt or a database call in flight ends at its next await.
const TASKS_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Application {
    /// Opens the database, applies migrations, loads the server key and binds
    /// `server.bind`. Errors name their cause for a one-line report.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        Self::build_on(settings, listener).await
    }

    /// Like `build`, on a listener the caller already bound (tests bind port
    /// 0 first so the server name can carry the port).
    pub async fn build_on(settings: Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let db_settings = settings.database.clone();
        let db = tokio::task::spawn_blocking(move || {
            let db = Database::connect(&db_settings)?;
            db.run_migrations()?;
            Ok::<_, crate::storage::StorageError>(db)
        })
        .await
        .context("database start-up task failed")?
        .with_context(|| format!("database {}", settings.database.url.describe()))?;
        let server_key = server_key::load_or_create(&db)
            .await
            .context("loading the server key")?;
        let backend = match db.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let metrics = Arc::new(Metrics::new(backend));
        metrics.register_database(&db);
        let replica_id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let tasks = Tasks::default();
        let hub = Arc::new(Hub::default());
        let settings = Arc::new(settings);
        let federation = Arc::new(
            FederationClient::new(&settings.federation, db.clone()).context("federation client")?,
        );
        let pusher = Pusher::new(crate::push::Parts {
            settings: settings.clone(),
            db: db.clone(),
            hub: hub.clone(),
            federation: federation.clone(),
            key: crate::push::vapid::load_or_create(&db)
                .await
                .context("loading the VAPID key")?,
            metrics: metrics.clone(),
            tasks: tasks.clone(),
        });
        let feed_tail = FeedTail::new(db.clone(), hub.clone());
        feed_tail.start(&tasks);
        let notifier = Arc::new(Notifier::new(
            hub.clone(),
            crate::gateway::cluster::Publisher::start(&db, replica_id.clone(), &tasks),
            feed_tail.clone(),
            Arc::new(pusher.clone()),
        ));
        let write_queue = Arc::new(crate::mailbox::WriteQueue::start(
            db.clone(),
            settings.database.writers,
            metrics.write_timings(),
            &tasks,
        ));
        let relay = Relay::new(relay::Parts {
            settings: settings.clone(),
            db: db.clone(),
            write_queue: write_queue.clone(),
            federation: federation.clone(),
            replica_id: replica_id.clone(),
            notifier: notifier.clone(),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
        });
        let state = AppState {
            rate_limits: Arc::new(RateLimiters::new(&settings.rate_limits)),
            hub,
            notifier,
            federation,
            peer_keys: Arc::new(PeerKeys::new(db.clone())),
            relay,
            pusher,
            write_queue,
            replica_id: replica_id.clone(),
            tokens: Arc::default(),
            send_context: Arc::new(crate::mailbox::SendContext::new(&settings)),
            new_destinations: Arc::new(crate::federation::new_destinations::NewDestinations::new(
                settings.rate_limits.new_destinations_per_account,
            )),
            tasks,
            settings,
            db,
            metrics: metrics.clone(),
            server_key: Arc::new(server_key),
        };
        let port = listener.local_addr()?.port();
        let server = http_server(listener, state.clone())?;
        tracing::info!(
            server_name = %state.settings.server_name,
            port,
            backend,
            key_id = state.server_key.key_id(),
            "homingd ready"
        );
        crate::gateway::cluster::spawn_listener(
            &state.db,
            &state.hub,
            feed_tail.waker(),
            state.replica_id.clone(),
            &state.tasks,
        );
        let tasks = &state.tasks;
        tasks.spawn(crate::background::purge_loop(
            state.db.clone(),
            state.settings.retention.clone(),
            state.metrics.clone(),
            state.notifier.clone(),
        ));
        tasks.spawn(crate::token_cache::watch_revocations(
            state.db.clone(),
            state.hub.clone(),
            state.tokens.clone(),
        ));
        state.relay.start();
        state.pusher.start();
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle to stop the server from elsewhere (tests restart daemons).
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM, then stops accepting and lets in-flight
    /// requests finish within `server.shutdown_timeout`; then stops every
    /// background task and thread and waits for them.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if !self.state.tasks.stop(TASKS_STOP_TIMEOUT).await {
            tracing::warn!(
                still_running = self.state.tasks.running(),
                "background tasks did not stop in time"
            );
        }
        result
    }
}

/// The App every request is served by; each worker builds two (one for
/// plain requests, one for upgrades), sharing `state`.
fn app(
    state: &AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    let settings = state.settings.clone();
    let body_grace = settings.body_timeout;
    App::new()
        // Inside the metrics wrapper, so a late body is counted as its 408.
        .wrap(actix_web::middleware::from_fn(move |request, next| {
            api::body_deadline(body_grace, request, next)
        }))
        .wrap_fn(move |request, service| {
            let started = Instant::now();
            let route = request
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_string());
            let metrics = metrics.clone();
            // Debug level: free unless someone is following a slow request.
            let span = tracing::debug_span!(
                "request",
                method = %request.method(),
                route = %route,
                status = tracing::field::Empty,
            );
            let response = span.in_scope(|| service.call(request));
            async move {
                let response = response.instrument(span.clone()).await?;
                span.record("status", response.status().as_u16());
                metrics.observe_request(
                    &route,
                    response.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
                Ok(response)
            }
        })
        .app_data(web::Data::new(state.clone()))
        .configure(move |cfg| api::configure(cfg, &settings))
}

/// The HTTP server: actix-web's App on actix-http's HTTP/1 service, as
/// `HttpServer` would build it, plus the upgrade hook that serves the
/// gateway's WebSocket without the dispatcher's buffers (`api::upgraded`).
fn http_server(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let shutdown_secs = state.settings.shutdown_timeout.as_secs();
    let client_timeout = state.settings.client_timeout;
    let write_stall = state.settings.gateway.heartbeat_timeout;
    let local_addr = listener.local_addr()?;
    let builder = actix_server::Server::build();
    let shutting_down = builder.graceful_shutdown_signal();
    let server = builder
        .listen("homingd", listener, move || {
            let (state, shutting_down) = (state.clone(), shutting_down.clone());
            let make_app = move || map_config(app(&state).into_factory(), |_| AppConfig::default());
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = shutting_down.clone();
                    async move { signal.notified().await }
                })
                .client_request_timeout(client_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                // Gateway frames are small writes; with Nagle's algorithm
                // each waited for the client's delayed ACK (up to 40 ms)
                // once notifications came faster than one per round trip.
                .tcp_nodelay(true)
                .local_addr(local_addr)
                .upgrade(api::upgraded::service(make_app.clone(), write_stall))
                // Boxed futures: the dispatcher holds its service's future
                // inline, in every connection's task, idle or not.
                .finish(actix_service::boxed::factory(make_app()))
                .tcp()
        })?
        .shutdown_timeout(shutdown_secs)
        .run();
    Ok(server)
}
