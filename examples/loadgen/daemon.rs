//! Starting `homingd` processes on loopback and the users that load them.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use homing::crypto::identity::DeviceId;
use homing_client::api::HomeServer;
use homing_client::keys::{AccountKeys, DeviceKeys};

/// A daemon process, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub name: String,
    pub url: String,
    database_url: String,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((base, name)) = &self.postgres {
            let _ = postgres_admin(
                base,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

fn homingd_path() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let candidate = me
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("homingd"))
        .filter(|p| p.exists());
    candidate.ok_or_else(|| anyhow::anyhow!("homingd not found next to the load generator: run `cargo build --release --bins` first"))
}

fn postgres_admin(url: &str, statement: &str) -> anyhow::Result<()> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::PgConnection::establish(url)?;
    conn.batch_execute(statement)?;
    Ok(())
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, String::new()), |(b, q)| (b, format!("?{q}")));
    let start = base.find("://").map_or(0, |i| i + 3);
    let end = base[start..].find('/').map_or(base.len(), |i| start + i);
    format!("{}/{name}{query}", &base[..end])
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a daemon with a fresh database and waits until it is ready.
pub async fn start(postgres: Option<&str>, extra: &[(&str, &str)]) -> anyhow::Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let name = format!("127.0.0.1:{port}");
    let (database_url, postgres) = match postgres {
        Some(base) => {
            let db = format!("homing_load_{:016x}", rand::random::<u64>());
            postgres_admin(base, &format!("CREATE DATABASE {db}"))?;
            (replace_database(base, &db), Some((base.to_string(), db)))
        }
        None => (
            format!("sqlite://{}", dir.path().join("homing.db").display()),
            None,
        ),
    };
    spawn(name.clone(), name, database_url, dir, postgres, extra).await
}

/// Another daemon of `primary`'s server: the same name and database, its
/// own port and data directory, as replicas are deployed.
pub async fn replica(primary: &Daemon, extra: &[(&str, &str)]) -> anyhow::Result<Daemon> {
    let bind = format!("127.0.0.1:{}", free_port()?);
    let dir = tempfile::tempdir()?;
    let database_url = primary.database_url.clone();
    spawn(primary.name.clone(), bind, database_url, dir, None, extra).await
}

async fn spawn(
    name: String,
    bind: String,
    database_url: String,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
    extra: &[(&str, &str)],
) -> anyhow::Result<Daemon> {
    let mut command = Command::new(homingd_path()?);
    command
        .env("HOMING__SERVER__NAME", &name)
        .env("HOMING__SERVER__BIND", &bind)
        .env("HOMING__SERVER__DATA_DIR", dir.path())
        .env("HOMING__DATABASE__URL", &database_url)
        .env("HOMING__DATABASE__POOL_SIZE", "16")
        .env("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "true")
        // The daemons federate with each other on loopback, which
        // federation refuses to reach by default.
        .env("HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true")
        .env("HOMING__FEDERATION__NAMESERVERS", "127.0.0.1:9")
        .env("HOMING__RATE_LIMITS__SEND_PER_DEVICE", "100000000/s")
        .env("HOMING__RATE_LIMITS__AUTH_PER_IP", "100000000/s")
        .env("HOMING__RATE_LIMITS__AUTH_PER_ACCOUNT", "100000000/s")
        .env("HOMING__RATE_LIMITS__REGISTRATION_PER_IP", "100000000/s")
        .env("HOMING__RATE_LIMITS__FEDERATION_PER_ORIGIN", "100000000/s")
        .env(
            "HOMING__RATE_LIMITS__NEW_DESTINATIONS_PER_ACCOUNT",
            "100000000/s",
        )
        .env("HOMING__RATE_LIMITS__DIRECTORY_PER_ACCOUNT", "100000000/s")
        .env(
            "HOMING__LIMITS__MAX_PENDING_MESSAGES_PER_DEVICE",
            "100000000",
        )
        .env(
            "HOMING__LIMITS__MAX_PENDING_BYTES_PER_DEVICE",
            "1000000000000",
        )
        .env("HOMING__GATEWAY__MAX_SESSIONS_PER_DEVICE", "100000")
        .stdout(Stdio::null());
    // `LOADGEN_LOG_DIR` keeps each daemon's log there, at `info`, for a
    // run that went wrong; by default only errors, and nowhere.
    match std::env::var_os("LOADGEN_LOG_DIR") {
        Some(dir) => {
            let log = std::fs::File::create(
                std::path::Path::new(&dir).join(format!("homingd-{}.log", bind.replace(':', "-"))),
            )?;
            command.env("HOMING__LOG__FILTER", "info").stderr(log);
        }
        None => {
            command
                .env("HOMING__LOG__FILTER", "error")
                .stderr(Stdio::null());
        }
    }
    for (key, value) in extra {
        command.env(key, value);
    }
    let child = command.spawn()?;
    let daemon = Daemon {
        child,
        url: format!("http://{bind}"),
        name,
        database_url,
        _dir: dir,
        postgres,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(format!("{}/readyz", daemon.url)).await {
            if response.status() == 200 {
                return Ok(daemon);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "homingd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A registered, signed-in user with `devices` devices.
pub struct User {
    pub address: String,
    pub device_ids: Vec<String>,
    pub tokens: Vec<String>,
}

pub async fn user(daemon: &Daemon, alias: &str, devices: usize) -> anyhow::Result<User> {
    let account = AccountKeys::generate();
    let mut keys: Vec<DeviceKeys> = (0..devices)
        .map(|i| DeviceKeys::generate(DeviceId::parse(&format!("d{i}")).expect("valid device id")))
        .collect();
    let server = HomeServer::new(&daemon.url);
    server
        .register(&account.registration(alias, &daemon.name, &keys[0], None)?)
        .await?;
    let (first_token, _) = server
        .sign_in(&daemon.name, &account.public(), &keys[0])
        .await?;
    let mut certificates = vec![keys[0].certificate(account.public(), 0)];
    // The registration certificate carries its own timestamp; re-read it.
    let document = HomeServer::new(&daemon.url)
        .with_token(&first_token)
        .directory(&format!("{alias}@{}", daemon.name))
        .await?;
    certificates = serde_json::from_value::<homing::crypto::identity::SignedDeviceList>(
        document["signed_device_list"].clone(),
    )
    .map(|l| l.device_list.devices)
    .unwrap_or(certificates);
    let authed = HomeServer::new(&daemon.url).with_token(&first_token);
    for (i, device) in keys.iter().enumerate().skip(1) {
        let signed = account.certify(device, 0)?;
        certificates.push(signed.certificate.clone());
        let list = account.device_list(i as u64 + 1, certificates.clone())?;
        let _: serde_json::Value = authed
            .post(
                "/api/v1/devices",
                &serde_json::json!({ "device_certificate": signed, "device_list": list }),
            )
            .await?;
    }
    let mut tokens = vec![first_token];
    for device in keys.iter_mut().skip(1) {
        tokens.push(
            server
                .sign_in(&daemon.name, &account.public(), device)
                .await?
                .0,
        );
    }
    Ok(User {
        address: format!("{alias}@{}", daemon.name),
        device_ids: keys.iter().map(|k| k.device_id.to_string()).collect(),
        tokens,
    })
}

/// Resident memory of a process, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user and system) a process has used, in milliseconds, from
/// /proc (Linux; clock ticks of 10 ms). `pid` 0 means this process.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let path = if pid == 0 {
        "/proc/self/stat".to_string()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// A connection pool of its own on the daemon's database, for filling it
/// behind the daemon's back.
pub fn open_store(
    daemon: &Daemon,
    postgres: Option<&str>,
) -> anyhow::Result<homing::storage::Database> {
    let url = match (postgres, &daemon.postgres) {
        (Some(_), Some((base, name))) => {
            homing::config::DatabaseUrl::Postgres(replace_database(base, name))
        }
        _ => homing::config::DatabaseUrl::Sqlite(daemon._dir.path().join("homing.db")),
    };
    Ok(homing::storage::Database::connect(
        &homing::config::DatabaseSettings {
            url,
            pool_size: 1,
            connect_timeout: Duration::from_secs(10),
            sqlite_synchronous: homing::config::SqliteSynchronous::Normal,
            writers: 1,
        },
    )?)
}

/// Writes `count` pending deliveries for `owner`'s device straight into the
/// daemon's database (setting up a backlog through the API would take hours).
pub async fn fill_backlog(
    daemon: &Daemon,
    postgres: Option<&str>,
    owner: &User,
    count: u64,
) -> anyhow::Result<()> {
    use diesel::prelude::*;
    use homing::storage::schema::{accounts, deliveries, devices, messages};
    if count == 0 {
        return Ok(());
    }
    let db = open_store(daemon, postgres)?;
    let alias = owner
        .address
        .split('@')
        .next()
        .unwrap_or_default()
        .to_string();
    db.run(move |conn| {
        homing::storage::write_transaction(conn, |conn| {
            let account: String = homing::with_backend!(conn, c => accounts::table
                .filter(accounts::alias.eq(&alias))
                .select(accounts::account_key)
                .first(c))?;
            let device: i64 = homing::with_backend!(conn, c => devices::table
                .filter(devices::account_key.eq(&account))
                .select(devices::id)
                .first(c))?;
            let now = homing::time::now_ms();
            let mut left = count;
            while left > 0 {
                let chunk = left.min(500);
                let rows: Vec<_> = (0..chunk)
                    .map(|_| {
                        (
                            messages::origin.eq("backlog.example"),
                            messages::message_id.eq(homing::crypto::b64(&rand::random::<[u8; 18]>())),
                            messages::request_digest.eq(vec![0u8; 32]),
                            messages::body.eq(vec![1u8; 64]),
                            messages::delivery_mode.eq("all"),
                            messages::created_at.eq(now),
                            messages::expires_at.eq(now + 86_400_000),
                        )
                    })
                    .collect();
                let ids: Vec<i64> = homing::with_backend!(conn, c => diesel::insert_into(messages::table)
                    .values(&rows)
                    .returning(messages::id)
                    .get_results(c))?;
                let deliveries_rows: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        (
                            deliveries::message_row.eq(*id),
                            deliveries::device_row.eq(device),
                            deliveries::recipient_account.eq(&account),
                            deliveries::key_wrap.eq(vec![2u8; 80]),
                            deliveries::body_bytes.eq(64i64),
                            deliveries::created_at.eq(now),
                            deliveries::expires_at.eq(now + 86_400_000),
                        )
                    })
                    .collect();
                homing::with_backend!(conn, c => diesel::insert_into(deliveries::table)
                    .values(&deliveries_rows)
                    .execute(c))?;
                left -= chunk;
            }
            Ok::<_, homing::storage::StorageError>(())
        })
    })
    .await?;
    Ok(())
}
