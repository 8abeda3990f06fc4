//! The `homingd` binary as an admin runs it: start, restart, refuse bad
//! settings with one line.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::TestDatabase;

pub struct Daemon {
    pub child: Child,
    pub address: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn homingd(env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_homingd"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

pub async fn start(env: &[(&str, String)], port: u16) -> Daemon {
    let child = homingd(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("homingd starts");
    let daemon = Daemon {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&daemon).await;
    daemon
}

pub async fn wait_ready(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(response) = client
            .get(format!("{}/readyz", daemon.address))
            .send()
            .await
        {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("homingd did not become ready within 30 s");
}

async fn current_key(daemon: &Daemon) -> String {
    let doc: Value = reqwest::get(format!("{}/.well-known/homing/keys", daemon.address))
        .await
        .expect("keys request")
        .json()
        .await
        .expect("keys json");
    doc["current_key_id"].as_str().expect("key id").to_string()
}

fn terminate(daemon: &mut Daemon) -> std::process::ExitStatus {
    let pid = daemon.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    daemon.child.wait().expect("homingd exits")
}

#[tokio::test]
async fn daemon_keeps_its_server_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(dir.path()).await;
    let port = free_port();
    let env = [
        ("HOMING__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("HOMING__SERVER__NAME", format!("127.0.0.1:{port}")),
        ("HOMING__SERVER__DATA_DIR", dir.path().display().to_string()),
        ("HOMING__DATABASE__URL", database.url.clone()),
    ];
    let mut first = start(&env, port).await;
    let key = current_key(&first).await;
    let status = terminate(&mut first);
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let second = start(&env, port).await;
    assert_eq!(current_key(&second).await, key);
}

#[tokio::test]
async fn default_database_is_created_under_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("HOMING__SERVER__BIND", format!("127.0.0.1:{port}")),
        (
            "HOMING__SERVER__DATA_DIR",
            dir.path().join("state").display().to_string(),
        ),
    ];
    let _daemon = start(&env, port).await;
    assert!(dir.path().join("state/homing.db").exists());
}

fn run_to_exit(env: &[(&str, String)]) -> Output {
    homingd(env).output().expect("homingd runs")
}

fn assert_one_line_failure(output: &Output, needle: &str) {
    assert!(!output.status.success(), "must exit non-zero");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("homingd: error:"), "{stderr}");
    assert!(lines[0].contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_config_value_names_the_key_and_exits_non_zero() {
    let output = run_to_exit(&[("HOMING__REGISTRATION__POLICY", "sometimes".into())]);
    assert_one_line_failure(&output, "registration.policy");
    let output = run_to_exit(&[("HOMING__SERVER__NAME", "bad name!".into())]);
    assert_one_line_failure(&output, "server.name");
    let output = run_to_exit(&[("HOMING__DATABASE__URL", "mysql://x".into())]);
    assert_one_line_failure(&output, "database.url");
    // Writers hold connections while they commit: requests need one more.
    let output = run_to_exit(&[
        ("HOMING__DATABASE__WRITERS", "4".into()),
        ("HOMING__DATABASE__POOL_SIZE", "4".into()),
    ]);
    assert_one_line_failure(&output, "database.writers");
    let output = run_to_exit(&[("HOMING__SERVER__METRICS_TOKEN", "short".into())]);
    assert_one_line_failure(&output, "server.metrics_token");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("short"));
}

#[test]
fn unreachable_database_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_to_exit(&[
        (
            "HOMING__DATABASE__URL",
            format!("postgres://nobody:secret@127.0.0.1:{}/x", free_port()),
        ),
        ("HOMING__SERVER__BIND", format!("127.0.0.1:{}", free_port())),
        ("HOMING__SERVER__DATA_DIR", dir.path().display().to_string()),
    ]);
    assert_one_line_failure(&output, "cannot connect to PostgreSQL");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("secret"),
        "the password must not be printed: {stderr}"
    );
}

#[test]
fn config_file_is_read_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("homingd.toml");
    std::fs::write(
        &file,
        "[server]\nname = \"from-file.example\"\n[registration]\npolicy = \"closed\"\n",
    )
    .unwrap();
    let output = homingd(&[("HOMING__SERVER__NAME", "from-env.example".into())])
        .args(["--config", &file.display().to_string(), "check-config"])
        .output()
        .expect("homingd runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("from-env.example"), "{stdout}");
    assert!(stdout.contains("registration Closed"), "{stdout}");
}
