//! `homingd admin federation check SERVER`: walks every step mail to
//! SERVER takes — this server's policy, resolution, the connection, TLS,
//! the peer's key document and a signed `hello` — and says whether mail
//! will flow, and if not, what to fix.

mod advice;
mod keys;

use serde::Serialize;

use crate::address::ServerName;
use crate::config::Settings;
use crate::federation::client::{key_id_for, send_signed, RequestError, Signer};
use crate::federation::resolver::{Destination, FederationClient, ResolveError};
use crate::federation::{policy, wire::Hello};
use crate::storage::{Database, StorageError};
use crate::time::{format_rfc3339, now_ms};

/// Why the check itself could not run (as opposed to finding a problem).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Setup(#[from] ResolveError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Everything the check found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// This server, which signs the `hello`.
    pub origin: String,
    /// The server checked.
    pub server: String,
    pub steps: Vec<Step>,
    pub verdict: Verdict,
}

/// One step and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `policy`, `name`, `well_known`, `srv`, `target`, `resolve`, `cache`,
    /// `connect`, `tls`, `keys`, `hello` or `queue`.
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Whether mail will flow and, if not, why.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub mail_flows: bool,
    /// What failed first, as a code: `denied_here`, `unresolvable`,
    /// `unreachable`, `tls`, `peer_keys`, `no_server_key` or `refused`.
    pub problem: Option<&'static str>,
    /// One sentence for the admin.
    pub summary: String,
}

/// The steps so far, the first problem met, and what a verdict that mail
/// flows should add (mail waiting for a retry, say).
#[derive(Default)]
struct Checker {
    steps: Vec<Step>,
    problem: Option<(&'static str, String)>,
    notes: Vec<String>,
}

impl Checker {
    fn ok(&mut self, step: &'static str, detail: String) {
        self.steps.push(Step {
            step,
            ok: true,
            detail,
        });
    }

    fn fail(&mut self, step: &'static str, detail: String, problem: &'static str, advice: String) {
        self.steps.push(Step {
            step,
            ok: false,
            detail,
        });
        self.problem.get_or_insert((problem, advice));
    }
}

/// Runs every step against `server`. Resolution bypasses the caches, so
/// the answer reflects DNS and the peer as they are now.
pub async fn check(
    settings: &Settings,
    db: &Database,
    server: &ServerName,
) -> Result<Report, CheckError> {
    let client = FederationClient::new(&settings.federation, db.clone())?;
    let mut checker = Checker::default();
    check_policy(&mut checker, settings, db, server).await?;
    let explained = client.explain(server).await;
    for step in explained.steps {
        checker.steps.push(Step {
            step: step.step,
            ok: step.ok,
            detail: step.detail,
        });
    }
    check_cache(&mut checker, &client, server, &explained.result).await?;
    match explained.result {
        Ok(destination) => {
            if keys::check_keys(&mut checker, &client, settings, server, &destination).await {
                check_hello(&mut checker, &client, settings, db, &destination).await;
            }
        }
        Err(error) => {
            let advice = advice::unresolvable(server, &error);
            checker.fail("resolve", error.to_string(), "unresolvable", advice);
        }
    }
    check_queue(&mut checker, db, server).await?;
    let verdict = match checker.problem {
        Some((problem, advice)) => Verdict {
            mail_flows: false,
            problem: Some(problem),
            summary: format!("mail will not flow: {advice}"),
        },
        None => Verdict {
            mail_flows: true,
            problem: None,
            summary: format!(
                "mail will flow: {server} resolves, its keys verify and it accepted a \
                 request signed by {}{}",
                settings.server_name,
                checker.notes.concat()
            ),
        },
    };
    Ok(Report {
        origin: settings.server_name.to_string(),
        server: server.to_string(),
        steps: checker.steps,
        verdict,
    })
}

/// This server's own allow/deny rules come first: they refuse mail before
/// anything is sent.
async fn check_policy(
    checker: &mut Checker,
    settings: &Settings,
    db: &Database,
    server: &ServerName,
) -> Result<(), StorageError> {
    let (federation, name) = (settings.federation.clone(), server.clone());
    let allowed = db
        .run(move |conn| policy::is_allowed(conn, &federation, &name))
        .await?;
    if allowed {
        checker.ok(
            "policy",
            format!("this server's federation policy allows {server}"),
        );
    } else {
        checker.fail(
            "policy",
            format!("this server's federation policy refuses {server}"),
            "denied_here",
            advice::denied_here(server),
        );
    }
    Ok(())
}

/// Sends a signed `POST /federation/v1/hello`: the peer fetches this
/// server's key and checks the signature as it would for a transaction.
async fn check_hello(
    checker: &mut Checker,
    client: &FederationClient,
    settings: &Settings,
    db: &Database,
    destination: &Destination,
) {
    let key = match crate::server_key::load_current(db).await {
        Ok(key) => key,
        Err(error) => {
            let advice = "this server has no signing key yet: start homingd once and it makes one"
                .to_string();
            checker.fail("hello", error.to_string(), "no_server_key", advice);
            return;
        }
    };
    let origin = settings.server_name.to_string();
    let signer = Signer {
        client,
        key: &key,
        origin: &origin,
        timeout: settings.federation.request_timeout,
    };
    let url = format!("{}/federation/v1/hello", destination.base_url);
    let key_id = key_id_for(&origin, &key);
    let body = serde_json::to_vec(&Hello::default()).unwrap_or_else(|_| b"{}".to_vec());
    match send_signed(
        &signer,
        destination,
        reqwest::Method::POST,
        "/federation/v1/hello",
        body,
    )
    .await
    {
        Ok(answer) => {
            let answer: String = String::from_utf8_lossy(&answer).chars().take(200).collect();
            checker.ok(
                "hello",
                format!("POST {url} signed with {key_id}: the peer answered 200 {answer}"),
            );
        }
        Err(error) => {
            let (problem, advice) = match &error {
                RequestError::Connect(reason) | RequestError::Timeout(reason) => {
                    ("unreachable", advice::unreachable(&url, reason))
                }
                RequestError::Status { status, code, .. } => {
                    let ours = own_keys_url(client, settings).await;
                    (
                        "refused",
                        advice::refused(destination, &origin, *status, code.as_deref(), &ours),
                    )
                }
                other => ("refused", format!("the hello to {url} failed: {other}")),
            };
            checker.fail(
                "hello",
                format!("POST {url} signed with {key_id}: {error}"),
                problem,
                advice,
            );
        }
    }
}

/// Where peers fetch this server's keys, as this server resolves its own
/// name; the peer may see it differently, which is what the advice asks to check.
async fn own_keys_url(client: &FederationClient, settings: &Settings) -> String {
    let base = match client.explain(&settings.server_name).await.result {
        Ok(destination) => destination.base_url,
        Err(_) => {
            let scheme = if settings.federation.allow_insecure_http {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{}", settings.server_name)
        }
    };
    let url = format!("{base}{}", keys::KEYS_PATH);
    // As an admin would type it: without the default port.
    reqwest::Url::parse(&url).map_or(url, |parsed| parsed.to_string())
}

/// What the daemon remembers of `server`'s resolution: it resolves the
/// name again only once that expires, so a fix to DNS or to a delegation
/// takes effect then.
async fn check_cache(
    checker: &mut Checker,
    client: &FederationClient,
    server: &ServerName,
    fresh: &Result<Destination, ResolveError>,
) -> Result<(), StorageError> {
    let Some(cached) = client.cached_resolution(server).await? else {
        return Ok(());
    };
    let until = format_rfc3339(cached.expires_at);
    let fresh_url = fresh.as_ref().ok().map(|d| d.base_url.as_str());
    match &cached.outcome {
        Ok(url) if Some(url.as_str()) == fresh_url => {
            checker.ok(
                "cache",
                format!("the daemon's cached resolution agrees until {until}"),
            );
        }
        Ok(url) => {
            checker.ok(
                "cache",
                format!("the daemon uses its cached {url} until {until}"),
            );
            checker.notes.push(format!(
                "; the daemon sends to {url}, as cached, until {until}"
            ));
        }
        Err(reason) => {
            checker.ok(
                "cache",
                format!("the daemon remembers a failure until {until}: {reason}"),
            );
            checker.notes.push(format!(
                "; the daemon remembers an earlier failure to resolve {server} and sends \
                 nothing there before {until}"
            ));
        }
    }
    Ok(())
}

/// Mail already queued for `server` and its back-off, shown as a step and,
/// when it waits for a retry, as a note for the verdict.
async fn check_queue(
    checker: &mut Checker,
    db: &Database,
    server: &ServerName,
) -> Result<(), StorageError> {
    let name = server.to_string();
    let found = db
        .run(move |conn| {
            let all = super::federation::destinations(conn)?;
            Ok::<_, StorageError>(all.into_iter().find(|d| d.server_name == name))
        })
        .await?;
    let Some(info) = found.filter(|info| info.queued > 0) else {
        checker.ok("queue", format!("no mail is queued for {server}"));
        return Ok(());
    };
    let mut detail = format!(
        "{} messages queued for {server}, {} failed attempts in a row",
        info.queued, info.failures
    );
    if let (Some(error), Some(at)) = (&info.last_error, info.last_failure_at) {
        detail.push_str(&format!(
            "; last failure at {}: {error}",
            format_rfc3339(at)
        ));
    }
    checker.ok("queue", detail);
    if info.next_attempt_at > now_ms() {
        checker.notes.push(format!(
            "; the {} queued messages wait for the next retry at {} \
             (`homingd admin destinations retry {server}` sends them now)",
            info.queued,
            format_rfc3339(info.next_attempt_at)
        ));
    }
    Ok(())
}
