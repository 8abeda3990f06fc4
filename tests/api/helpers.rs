//! `spawn_app()`: the real application on port 0 with a fresh database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use homing::api::AppState;
use homing::config::Settings;
use homing::crypto::identity::{DeviceCertificate, DeviceId};
use homing::startup::Application;
use homing_client::keys::{AccountKeys, DeviceKeys};
use serde_json::{json, Value};

/// The variable naming a PostgreSQL server for the suite; each test gets a
/// fresh database on it.
pub const TEST_DATABASE_ENV: &str = "HOMING_TEST_DATABASE_URL";

/// A running test server.
pub struct TestApp {
    pub address: String,
    pub server_name: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub database: TestDatabase,
    server: Option<RunningServer>,
    extra_env: Vec<(String, String)>,
    /// The `HOMING__…` settings the daemon runs with, for `homingd admin`
    /// commands that need its whole configuration.
    pub daemon_env: Vec<(String, String)>,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request to the test server failed")
    }
}

/// The `homing` command of the `homing-client` package. Cargo builds it,
/// beside this test binary's `deps/` directory, whenever the workspace's
/// tests are built (that package has integration tests of its own).
pub fn homing_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let binary = profile_dir.join(format!("homing{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run the workspace's tests (`cargo test` at the top), \
         or build the client first with `cargo build -p homing-client`",
        binary.display()
    );
    binary
}

/// Starts the application with the default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Vec::new()).await
}

/// Starts the application with extra `HOMING__…` settings.
pub async fn spawn_app_with(extra_env: Vec<(&str, &str)>) -> TestApp {
    spawn_app_on(extra_env, false).await
}

/// Starts the application on SQLite even when the suite runs on
/// PostgreSQL (for tests that move a server from one to the other).
pub async fn spawn_app_on_sqlite() -> TestApp {
    spawn_app_on(Vec::new(), true).await
}

/// Starts the application listening on `bind` (an address such as
/// `127.0.0.2:443`), or `None` when that address cannot be bound (not
/// root, or taken): the caller skips with a message.
pub async fn spawn_app_at(bind: &str, extra_env: Vec<(&str, &str)>) -> Option<TestApp> {
    match TcpListener::bind(bind) {
        Ok(listener) => Some(spawn_app_on_listener(listener, extra_env, false).await),
        Err(error) => {
            eprintln!("skipped: cannot bind {bind} ({error}); this test needs root");
            None
        }
    }
}

async fn spawn_app_on(extra_env: Vec<(&str, &str)>, sqlite: bool) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    spawn_app_on_listener(listener, extra_env, sqlite).await
}

async fn spawn_app_on_listener(
    listener: TcpListener,
    extra_env: Vec<(&str, &str)>,
    sqlite: bool,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let database = if sqlite {
        TestDatabase::sqlite(data_dir.path())
    } else {
        TestDatabase::create(data_dir.path()).await
    };
    let extra: Vec<(String, String)> = extra_env
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (state, server, daemon_env) =
        start(&listener, data_dir.path(), &database.url, &extra).await;
    // The configured name: tests may set one that points at a proxy.
    let server_name = state.settings.server_name.to_string();
    let listen = listener.local_addr().expect("address");
    TestApp {
        address: format!("http://{listen}"),
        server_name,
        http: reqwest::Client::new(),
        state,
        database,
        server: Some(server),
        extra_env: extra,
        daemon_env,
        _data_dir: data_dir,
    }
}

/// Another replica of `primary`'s server: same name, same database, its
/// own port.
pub async fn spawn_replica(primary: &TestApp, extra_env: Vec<(&str, &str)>) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let database = TestDatabase {
        url: primary.database.url.clone(),
        postgres: primary.database.postgres.clone(),
        owned: false,
    };
    let mut extra: Vec<(String, String)> =
        vec![("HOMING__SERVER__NAME".into(), primary.server_name.clone())];
    extra.extend(
        primary
            .extra_env
            .iter()
            .filter(|(k, _)| k != "HOMING__SERVER__NAME")
            .cloned(),
    );
    extra.extend(
        extra_env
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let (state, server, daemon_env) =
        start(&listener, data_dir.path(), &database.url, &extra).await;
    let listen = listener.local_addr().expect("address");
    TestApp {
        address: format!("http://{listen}"),
        server_name: state.settings.server_name.to_string(),
        http: reqwest::Client::new(),
        state,
        database,
        server: Some(server),
        extra_env: extra,
        daemon_env,
        _data_dir: data_dir,
    }
}

/// A daemon running on a tokio task, with the handle to stop it.
pub struct RunningServer {
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(
    listener: &TcpListener,
    data_dir: &std::path::Path,
    database_url: &str,
    extra: &[(String, String)],
) -> (AppState, RunningServer, Vec<(String, String)>) {
    let bound = listener.local_addr().expect("local address");
    // On Homing's default port the name carries no port, as deployed.
    let server_name = if bound.port() == 443 {
        bound.ip().to_string()
    } else {
        bound.to_string()
    };
    let mut env: Vec<(String, String)> = vec![
        ("HOMING__SERVER__NAME".into(), server_name),
        ("HOMING__SERVER__BIND".into(), bound.to_string()),
        (
            "HOMING__SERVER__DATA_DIR".into(),
            data_dir.display().to_string(),
        ),
        ("HOMING__DATABASE__URL".into(), database_url.to_string()),
        ("HOMING__DATABASE__POOL_SIZE".into(), "4".into()),
        (
            "HOMING__FEDERATION__ALLOW_INSECURE_HTTP".into(),
            "true".into(),
        ),
        // Every test server, peer and fake listens on loopback, which
        // federation refuses to reach by default.
        (
            "HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES".into(),
            "true".into(),
        ),
        ("HOMING__SERVER__SHUTDOWN_TIMEOUT".into(), "1s".into()),
        // Tests never reach the Internet: names that are not IP literals
        // resolve through a loopback port where nothing answers.
        (
            "HOMING__FEDERATION__NAMESERVERS".into(),
            "127.0.0.1:9".into(),
        ),
    ];
    env.extend(extra.iter().cloned());
    let settings = Settings::load_from(None, env.clone()).expect("test settings are valid");
    if std::env::var_os("TEST_LOG").is_some() {
        homing::telemetry::init(settings.log_format, "debug");
    }
    let listener = listener.try_clone().expect("clone listener");
    let app = Application::build_on(settings, listener)
        .await
        .expect("the application starts");
    let state = app.state().clone();
    let handle = app.server_handle();
    let task = tokio::spawn(app.run_until_stopped());
    (state, RunningServer { handle, task }, env)
}

impl TestApp {
    /// Stops the daemon (its port stays reserved for `restart`).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.handle.stop(false).await;
            let _ = server.task.await;
        }
    }

    /// Starts the daemon again on the same port, data and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listen = self.address.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind(&listen).expect("re-bind the same port");
        let (state, server, daemon_env) = start(
            &listener,
            self._data_dir.path(),
            &self.database.url,
            &self.extra_env,
        )
        .await;
        self.state = state;
        self.server = Some(server);
        self.daemon_env = daemon_env;
    }

    /// Stops the daemon and starts it again on the same port and data
    /// directory but on `database` (which replaces the old one).
    pub async fn restart_on(&mut self, database: TestDatabase) {
        self.stop().await;
        self.database = database;
        self.restart().await;
    }
}

/// A database used by one test: a SQLite file in the test's temporary
/// directory, or a PostgreSQL database created for the test and dropped
/// after it.
pub struct TestDatabase {
    pub url: String,
    postgres: Option<(String, String)>,
    /// Replicas share the primary's database and do not drop it.
    owned: bool,
}

impl TestDatabase {
    pub async fn create(dir: &std::path::Path) -> Self {
        match Self::postgres().await {
            Some(database) => database,
            None => Self::sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, when the suite has PostgreSQL.
    pub async fn postgres() -> Option<Self> {
        let base = std::env::var(TEST_DATABASE_ENV)
            .ok()
            .filter(|base| !base.is_empty())?;
        let name = format!("homing_test_{:016x}", rand::random::<u64>());
        let admin_url = base.clone();
        let statement = format!("CREATE DATABASE {name}");
        tokio::task::spawn_blocking(move || postgres_admin(&admin_url, &statement))
            .await
            .expect("create database task");
        Some(Self {
            url: replace_database(&base, &name),
            postgres: Some((base, name)),
            owned: true,
        })
    }

    /// A SQLite file in `dir`.
    pub fn sqlite(dir: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}", dir.join("homing.db").display()),
            postgres: None,
            owned: true,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Some((base, name)) = &self.postgres {
            postgres_admin(
                base,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

fn postgres_admin(url: &str, statement: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::PgConnection::establish(url).unwrap_or_else(|e| {
        panic!("{TEST_DATABASE_ENV} is set but PostgreSQL is unreachable: {e}")
    });
    conn.batch_execute(statement)
        .unwrap_or_else(|e| panic!("`{statement}` failed: {e}"));
}

/// Swaps the database name in a PostgreSQL URL, keeping any query string.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    format!("{}/{}{}", &base[..authority_end], name, query)
}

/// A user with one signed-in device, made through the real API.
pub struct TestUser {
    pub alias: String,
    pub account: AccountKeys,
    pub devices: Vec<TestDevice>,
    pub list_version: u64,
}

/// One device of a test user and its bearer token.
pub struct TestDevice {
    pub keys: DeviceKeys,
    pub certificate: DeviceCertificate,
    pub token: String,
}

impl TestUser {
    pub fn device(&self, index: usize) -> &TestDevice {
        &self.devices[index]
    }

    pub fn certificates(&self) -> Vec<DeviceCertificate> {
        self.devices.iter().map(|d| d.certificate.clone()).collect()
    }
}

pub fn device_id(name: &str) -> DeviceId {
    DeviceId::parse(name).expect("valid device id")
}

impl TestApp {
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("request to the test server failed")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request to the test server failed")
    }

    /// A fresh challenge nonce.
    pub async fn challenge(&self) -> String {
        let response = self
            .post_json("/api/v1/auth/challenge", &json!({}), None)
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("challenge json");
        body["nonce"].as_str().expect("nonce").to_string()
    }

    /// Signs the device behind `token` out (`DELETE /api/v1/auth/token`)
    /// and returns the answer's status.
    pub async fn sign_out(&self, token: &str) -> u16 {
        self.http
            .delete(self.url("/api/v1/auth/token"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Signs `device` in and returns the token.
    pub async fn sign_in(&self, account: &AccountKeys, device: &DeviceKeys) -> String {
        let nonce = self.challenge().await;
        let body = device
            .token_request(&self.server_name, &nonce, &account.public())
            .expect("sign challenge");
        let response = self.post_json("/api/v1/auth/token", &body, None).await;
        assert_eq!(
            response.status(),
            200,
            "sign-in failed: {}",
            response.text().await.unwrap_or_default()
        );
        let grant: Value = response.json().await.expect("token json");
        grant["token"].as_str().expect("token").to_string()
    }

    /// Registers `alias` with one device and signs it in.
    pub async fn register(&self, alias: &str) -> TestUser {
        let account = AccountKeys::generate();
        let keys = DeviceKeys::generate(device_id("first"));
        let body = account
            .registration(alias, &self.server_name, &keys, None)
            .expect("registration body");
        let response = self.post_json("/api/v1/accounts", &body, None).await;
        assert_eq!(
            response.status(),
            201,
            "registration failed: {}",
            response.text().await.unwrap_or_default()
        );
        let certificate: DeviceCertificate =
            serde_json::from_value(body["device_certificate"]["certificate"].clone())
                .expect("certificate");
        let token = self.sign_in(&account, &keys).await;
        TestUser {
            alias: alias.to_string(),
            account,
            devices: vec![TestDevice {
                keys,
                certificate,
                token,
            }],
            list_version: 1,
        }
    }

    /// Adds a device to `user` through the API and signs it in.
    pub async fn add_device(&self, user: &mut TestUser, name: &str) {
        let keys = DeviceKeys::generate(device_id(name));
        let signed = user
            .account
            .certify(&keys, homing::time::now_ms())
            .expect("certify");
        let mut certificates = user.certificates();
        certificates.push(signed.certificate.clone());
        let version = user.list_version + 1;
        let list = user
            .account
            .device_list(version, certificates)
            .expect("list");
        let body = json!({ "device_certificate": signed, "device_list": list });
        let response = self
            .post_json("/api/v1/devices", &body, Some(&user.device(0).token))
            .await;
        assert_eq!(
            response.status(),
            201,
            "add device failed: {}",
            response.text().await.unwrap_or_default()
        );
        user.list_version = version;
        let token = self.sign_in(&user.account, &keys).await;
        user.devices.push(TestDevice {
            keys,
            certificate: signed.certificate,
            token,
        });
    }
}

/// A random 32-character message id.
pub fn new_message_id() -> String {
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    homing::crypto::b64(&bytes)
}

/// A send request to the given users' devices (by index) with `body` as
/// the opaque encrypted body; key wraps are random bytes.
pub fn message_to(
    app: &TestApp,
    targets: &[(&TestUser, &[usize])],
    body: &[u8],
    mode: &str,
) -> Value {
    let recipients: Vec<Value> = targets
        .iter()
        .map(|(user, devices)| {
            let devices: Vec<Value> = devices
                .iter()
                .map(|index| {
                    let mut wrap = [0u8; 80];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut wrap);
                    json!({
                        "device_id": user.device(*index).keys.device_id,
                        "key_wrap": homing::crypto::b64(&wrap),
                    })
                })
                .collect();
            json!({ "address": format!("{}@{}", user.alias.to_lowercase(), app.server_name), "devices": devices })
        })
        .collect();
    json!({
        "message_id": new_message_id(),
        "body": homing::crypto::b64(body),
        "delivery": mode,
        "recipients": recipients,
    })
}

impl TestApp {
    /// Syncs `token`'s device from cursor 0.
    pub async fn sync(&self, token: &str) -> Value {
        let response = self
            .post_json("/api/v1/dms/sync", &json!({}), Some(token))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("sync json")
    }

    pub async fn ack(&self, token: &str, ids: &[&str]) -> Value {
        let response = self
            .post_json(
                "/api/v1/dms/ack",
                &json!({ "message_ids": ids }),
                Some(token),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("ack json")
    }

    /// Rows in a table, straight from the database.
    pub fn count(&self, table: &str) -> i64 {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.state.db.get().expect("connection");
        let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {table}");
        let rows: Vec<Count> =
            homing::with_backend!(&mut *conn, c => diesel::sql_query(&sql).load(c)).expect("count");
        rows[0].n
    }

    /// Deliveries and outbox rows whose message or device is gone: no
    /// foreign key removes them, so every delete must (federation-spec/
    /// storage.md). Tests that delete assert this is zero.
    pub fn orphans(&self) -> i64 {
        self.count(
            "deliveries d WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = d.message_row) \
             OR NOT EXISTS (SELECT 1 FROM devices v WHERE v.id = d.device_row)",
        ) + self.count(
            "outbox o WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = o.message_row)",
        )
    }
}
