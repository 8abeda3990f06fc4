//! The pieces of a deployment as people run it, for the `deployed` test:
//! `homingd` processes, Caddy with `deploy/Caddyfile` in front of them, and
//! the `homing` CLI of a person on that network.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Set by CI: a missing prerequisite fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "HOMING_REQUIRE_DEPLOYED";

/// Skips the test with `reason`, or fails it when CI requires it to run.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os(REQUIRE_ENV).is_none(),
        "{REQUIRE_ENV} is set but the deployed test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
}

/// A free port on 127.0.0.1 (free when asked; good enough for a test).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("address").port()
}

/// Caddy running `deploy/Caddyfile` on 127.0.0.1:443 and :80.
pub struct Proxy {
    child: Child,
    /// The internal CA's root certificate, which clients and servers trust.
    pub root_ca: PathBuf,
}

impl Proxy {
    /// Starts Caddy with the placeholders set for `upstreams` (a, b) and
    /// waits until it serves a.homing.test over TLS.
    pub async fn start(dir: &Path, upstreams: (u16, u16)) -> Self {
        let caddyfile = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile");
        let log = std::fs::File::create(dir.join("caddy.log")).expect("caddy log");
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config", caddyfile])
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("HOMING_PROXY_BIND", "127.0.0.1")
            .env("HOMING_PROXY_ADMIN", "off")
            .env("HOMING_A_UPSTREAM", format!("127.0.0.1:{}", upstreams.0))
            .env("HOMING_B_UPSTREAM", format!("127.0.0.1:{}", upstreams.1))
            // b publishes no delegation: peers find it through SRV.
            .env("HOMING_B_DELEGATION_STATUS", "404")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("caddy starts");
        let root_ca = dir.join("data/caddy/pki/authorities/local/root.crt");
        let proxy = Self { child, root_ca };
        proxy.wait_until_serving(dir).await;
        proxy
    }

    async fn wait_until_serving(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(pem) = std::fs::read(&self.root_ca) {
                let root = reqwest::Certificate::from_pem(&pem).expect("Caddy's root");
                let client = reqwest::Client::builder()
                    .add_root_certificate(root)
                    .resolve("a.homing.test", "127.0.0.1:443".parse().unwrap())
                    .build()
                    .unwrap();
                let url = "https://a.homing.test/.well-known/homing/server";
                if let Ok(response) = client.get(url).send().await {
                    assert_eq!(response.status(), 200, "Caddy's delegation document");
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Caddy did not serve TLS within a minute: {}",
                std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops Caddy.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One `homingd` process and the settings it runs with.
pub struct Daemon {
    child: Option<Child>,
    env: Vec<(String, String)>,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `homingd` with `env` (HOMING__… settings) and waits until it
    /// is ready on 127.0.0.1:`port`.
    pub async fn start(env: Vec<(String, String)>, port: u16, log: PathBuf) -> Self {
        let mut daemon = Self {
            child: None,
            env,
            port,
            log,
        };
        daemon.restart().await;
        daemon
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_homingd"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("HOMING")) {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts the daemon (again), its log appended to `log`.
    pub async fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let child = self
            .command()
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("homingd starts");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(&url).await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "homingd was not ready within 30 s: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the daemon as systemd would (SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let stopped = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        assert!(stopped.is_ok(), "homingd ignored SIGTERM");
    }

    /// Runs `homingd ARGS` with this daemon's settings (`admin …`).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .await
            .expect("homingd runs")
    }

    /// Everything the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of a gauge or counter in the daemon's `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let text = reqwest::get(&url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }
}

/// One person's `homing` CLI: their own state directory, Caddy's root CA
/// and the test's nameserver, and no insecure flag.
pub struct Person {
    pub home: PathBuf,
    pub address: String,
    network: Vec<String>,
}

impl Person {
    pub fn new(dir: &Path, address: &str, root_ca: &Path, nameserver: &str) -> Self {
        let alias = address.split('@').next().unwrap_or(address);
        Self {
            home: dir.join(alias),
            address: address.to_string(),
            network: vec![
                "--ca-file".into(),
                root_ca.display().to_string(),
                "--nameserver".into(),
                nameserver.to_string(),
            ],
        }
    }

    /// `homing ARGS` as this person, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::helpers::homing_binary());
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("HOMING")) {
            command.env_remove(name);
        }
        command
            .arg("--home")
            .arg(&self.home)
            .args(&self.network)
            .args(args);
        command
    }

    /// Runs `homing ARGS` and returns its standard output; fails the test
    /// when it fails.
    pub async fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().await.expect("homing runs");
        assert!(
            output.status.success(),
            "homing {args:?} failed for {}: {}",
            self.address,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
