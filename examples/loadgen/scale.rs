//! `scale`: a server holding a big community's state (a million accounts,
//! three million devices, ten million pending deliveries by default)
//! against the same server nearly empty. Sends and syncs are measured on
//! the empty server, the database is then filled with bulk statements
//! (not the API: the API would take hours), and the same measurements run
//! again.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{open_store, start, user, Daemon, User};
use crate::scenarios::{blast, percentile, post_send, write_timings, Outgoing};
use homing_client::api::HomeServer;

/// What `scale` fills the database with.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub accounts: u64,
    pub devices_per_account: u64,
    pub pending: u64,
}

/// Deliveries per filler message: a message to ten devices.
const DELIVERIES_PER_MESSAGE: u64 = 10;
/// Bytes of each filler message's body.
const BODY_BYTES: u64 = 256;

pub async fn scale(
    postgres: Option<&str>,
    duration: Duration,
    concurrency: usize,
    sizes: Sizes,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        sizes.accounts * sizes.devices_per_account >= DELIVERIES_PER_MESSAGE,
        "scale needs at least {DELIVERIES_PER_MESSAGE} devices"
    );
    let daemon = start(postgres, &[]).await?;
    let alice = user(&daemon, "alice", 1).await?;
    let carol = user(&daemon, "carol", 1).await?;
    // Carol has ten messages; her syncs read them past everyone else's.
    let http = reqwest::Client::new();
    let send_url = format!("{}/api/v1/dms/send", daemon.url);
    let to_carol = Outgoing::to(&carol);
    for _ in 0..10 {
        let (_, request) = to_carol.message();
        let sent = post_send(&http, &send_url, &alice.tokens[0], request)
            .send()
            .await?;
        anyhow::ensure!(
            sent.status() == 202,
            "a send to carol failed: {}",
            sent.status()
        );
    }
    let empty = measure(&daemon, &alice, &carol, "bob", duration, concurrency).await?;
    let started = Instant::now();
    let rows = fill(&daemon, postgres, sizes).await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    let filled = measure(&daemon, &alice, &carol, "dave", duration, concurrency).await?;
    let ratio = |key: &str| {
        let (before, after) = (empty[key].as_f64(), filled[key].as_f64());
        match (before, after) {
            (Some(before), Some(after)) if before > 0.0 => {
                json!((after / before * 100.0).round() / 100.0)
            }
            _ => Value::Null,
        }
    };
    Ok(json!({
        "sizes": {
            "accounts": sizes.accounts,
            "devices": sizes.accounts * sizes.devices_per_account,
            "pending_deliveries": sizes.pending,
        },
        "fill_seconds": (fill_seconds * 10.0).round() / 10.0,
        "rows": rows,
        "empty": empty,
        "filled": filled,
        "filled_to_empty": {
            "send_per_s": ratio("send_per_s"),
            "send_p99_ms": ratio("send_p99_ms"),
            "sync_p50_ms": ratio("sync_p50_ms"),
            "sync_p99_ms": ratio("sync_p99_ms"),
        },
    }))
}

/// Sends to a new recipient (two devices) at saturation for `duration`,
/// then times 300 syncs of `reader`'s ten messages.
async fn measure(
    daemon: &Daemon,
    sender: &User,
    reader: &User,
    recipient: &str,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let to = user(daemon, recipient, 2).await?;
    let started = Instant::now();
    let (accepted, mut latencies, errors) =
        blast(&daemon.url, &sender.tokens[0], &to, duration, concurrency).await;
    anyhow::ensure!(accepted > 0, "no send was accepted ({errors} failed)");
    let elapsed = started.elapsed().as_secs_f64();
    let writes = write_timings(&daemon.url).await;
    let server = HomeServer::new(&daemon.url).with_token(&reader.tokens[0]);
    let mut syncs = Vec::with_capacity(300);
    for _ in 0..300 {
        let started = Instant::now();
        let page = server.sync(0, 100).await?;
        anyhow::ensure!(
            page.items.len() == 10,
            "the reader should see her 10 messages"
        );
        syncs.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(json!({
        "send_per_s": (accepted as f64 / elapsed).round(),
        "send_p50_ms": percentile(&mut latencies, 0.50),
        "send_p99_ms": percentile(&mut latencies, 0.99),
        "errors": errors,
        "sync_p50_ms": percentile(&mut syncs, 0.50),
        "sync_p99_ms": percentile(&mut syncs, 0.99),
        "writes": writes,
    }))
}

/// The filler rows, each table in one statement that makes its own rows
/// (a recursive series on SQLite, `generate_series` on PostgreSQL).
/// Devices are seen now, so the purge leaves their mail; every device
/// counts its pending deliveries as the daemon would.
async fn fill(daemon: &Daemon, postgres: Option<&str>, sizes: Sizes) -> anyhow::Result<Value> {
    let db = open_store(daemon, postgres)?;
    let pg = postgres.is_some();
    let statements = move |first_device: i64, first_message: i64| {
        let now = homing::time::now_ms();
        let expires = now + 6 * 86_400_000;
        let devices = sizes.accounts * sizes.devices_per_account;
        let per = sizes.devices_per_account;
        let pending = sizes.pending;
        let messages = pending.div_ceil(DELIVERIES_PER_MESSAGE);
        let series = |n: u64| {
            if pg {
                format!("generate_series(0, {}) AS s(i)", n.saturating_sub(1))
            } else {
                format!(
                    "(WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < {}) SELECT i FROM r) AS s",
                    n.saturating_sub(1)
                )
            }
        };
        let bytes = |n: u64, random: bool| match (pg, random) {
            (true, _) => format!("decode(repeat(md5(i::text), {}), 'hex')", n / 16),
            (false, true) => format!("randomblob({n})"),
            (false, false) => format!("zeroblob({n})"),
        };
        let text = |prefix: &str, expr: &str| {
            if pg {
                format!("'{prefix}' || ({expr})::text")
            } else {
                format!("'{prefix}' || ({expr})")
            }
        };
        let count =
            format!("CASE WHEN i < {pending} THEN ({pending} - 1 - i) / {devices} + 1 ELSE 0 END");
        vec![
            format!(
                "INSERT INTO accounts (account_key, alias, created_at, device_list_version, \
                 device_list, device_list_signature) \
                 SELECT {}, {}, {now}, 1, {}, {} FROM {}",
                text("scale-key-", "i"),
                text("scale", "i"),
                bytes(16, false),
                bytes(16, false),
                series(sizes.accounts)
            ),
            format!(
                "INSERT INTO devices (id, account_key, device_id, sign_key, box_key, certificate, \
                 certificate_signature, created_at, last_seen_at, pending_messages, pending_bytes) \
                 SELECT {first_device} + i, {}, {}, {}, {}, {}, {}, {now}, {now}, {count}, ({count}) * {BODY_BYTES} FROM {}",
                text("scale-key-", &format!("i / {per}")),
                text("d", &format!("i % {per}")),
                if pg { "convert_to('scale-sign-' || i::text, 'UTF8')".to_string() } else { "CAST('scale-sign-' || i AS BLOB)".to_string() },
                bytes(32, false),
                bytes(16, false),
                bytes(16, false),
                series(devices)
            ),
            format!(
                "INSERT INTO messages (id, origin, message_id, request_digest, body, delivery_mode, \
                 created_at, expires_at) \
                 SELECT {first_message} + i, 'scale.example', {}, {}, {}, 'all', {now}, {expires} FROM {}",
                text("scale-message-", "i"),
                bytes(32, false),
                bytes(BODY_BYTES, true),
                series(messages)
            ),
            format!(
                "INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, \
                 body_bytes, created_at, expires_at) \
                 SELECT {first_message} + i / {DELIVERIES_PER_MESSAGE}, {first_device} + i % {devices}, {}, {}, \
                 {BODY_BYTES}, {now}, {expires} FROM {}",
                text("scale-key-", &format!("i % {devices} / {per}")),
                bytes(80, true),
                series(pending)
            ),
        ]
    };
    let seconds = db
        .run(move |conn| {
            use diesel::connection::SimpleConnection;
            use diesel::prelude::*;
            use homing::storage::schema::{devices, messages};
            // Ids past every existing row, so filler rows never meet the
            // daemon's own and each delivery names its device's row.
            let first_device: i64 = homing::with_backend!(conn, c => devices::table
                .select(diesel::dsl::max(devices::id))
                .first::<Option<i64>>(c))?
            .unwrap_or(0)
                + 1_000_000;
            let first_message: i64 = homing::with_backend!(conn, c => messages::table
                .select(diesel::dsl::max(messages::id))
                .first::<Option<i64>>(c))?
            .unwrap_or(0)
                + 1_000_000;
            let mut seconds = Vec::new();
            for statement in statements(first_device, first_message) {
                let started = Instant::now();
                homing::with_backend!(conn, c => c.batch_execute(&statement))?;
                seconds.push((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
            }
            if let homing::storage::DbConnection::Postgres(c) = conn {
                // Sequences past the filler ids, and statistics as
                // autovacuum would have them on a server that grew.
                c.batch_execute(
                    "SELECT setval(pg_get_serial_sequence('devices', 'id'), (SELECT max(id) FROM devices)); \
                     SELECT setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages)); \
                     ANALYZE",
                )?;
            }
            if let homing::storage::DbConnection::Sqlite(c) = conn {
                // The fill went through the WAL; a server that grew did
                // not keep gigabytes there. Fold it into the database now,
                // not in the middle of the measurement.
                if std::env::var_os("LOADGEN_SCALE_KEEP_WAL").is_none() {
                    c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")?;
                }
            }
            Ok::<_, homing::storage::StorageError>(seconds)
        })
        .await?;
    Ok(json!({
        "seconds_per_table": {
            "accounts": seconds[0],
            "devices": seconds[1],
            "messages": seconds[2],
            "deliveries": seconds[3],
        },
    }))
}
