//! What the admin should do about each problem the check can find, in one
//! sentence that names the setting, the command or the URL involved.

use crate::address::ServerName;
use crate::federation::resolver::{Destination, ResolveError};

/// This server's own policy refuses the peer.
pub(super) fn denied_here(server: &ServerName) -> String {
    format!(
        "this server's own policy refuses {server} (federation.deny, federation.allow, or a \
         rule from `homingd admin federation deny|allow`); `homingd admin federation list` \
         shows the run-time rules, `homingd admin federation allow {server}` lets it pass"
    )
}

/// The name did not resolve.
pub(super) fn unresolvable(server: &ServerName, error: &ResolveError) -> String {
    let fix = match error {
        ResolveError::InvalidWellKnown { .. } => {
            "its /.well-known/homing/server document must be {\"homing.server\": \"host[:port]\"}"
        }
        ResolveError::Srv { .. } => "fix or remove its _homing._tcp SRV records",
        ResolveError::Dns { .. } => {
            "check that this server reaches its nameservers (federation.nameservers)"
        }
        ResolveError::PrivateAddress(_) => {
            "it points at a loopback or private address, which federation does not reach \
             unless federation.allow_private_addresses = true (closed networks and tests only)"
        }
        ResolveError::Setup(_) | ResolveError::Cached { .. } => "check the federation settings",
    };
    format!("{server} cannot be resolved ({error}) — {fix}")
}

/// The cause at the end of a reqwest error chain, without reqwest's
/// "error sending request for url (…): client error (Connect)" before it:
/// the step's detail keeps the whole chain.
fn cause(reason: &str) -> &str {
    reason.rsplit_once("): ").map_or(reason, |(_, cause)| cause)
}

/// Nothing answered.
pub(super) fn unreachable(url: &str, reason: &str) -> String {
    let reason = cause(reason);
    format!(
        "nothing answers at {url} ({reason}) — check that the peer's homingd (or the reverse \
         proxy in front of it) runs and that a firewall lets this server reach that address \
         and port"
    )
}

/// The TLS handshake or the certificate failed.
pub(super) fn tls(host: &str, reason: &str) -> String {
    let reason = cause(reason);
    format!(
        "TLS with {host} failed ({reason}) — the peer's certificate must be valid for {host} \
         and issued by a CA this server trusts (add a private CA with \
         federation.extra_ca_file)"
    )
}

/// The key document was not served.
pub(super) fn no_keys(url: &str, status: u16) -> String {
    format!(
        "{url} answered {status} — the peer must serve its keys there: a reverse proxy in \
         front of homingd has to pass /.well-known/homing/ and /federation/ to it"
    )
}

/// The key document was served but is unusable.
pub(super) fn bad_keys(server: &ServerName, url: &str, reason: &str) -> String {
    format!(
        "the key document at {url} is unusable ({reason}) — no server can verify requests \
         from {server} until it is fixed; its server.name must be {server}"
    )
}

/// The peer answered the signed `hello` with an error.
pub(super) fn refused(
    destination: &Destination,
    origin: &str,
    status: u16,
    code: Option<&str>,
    our_keys: &str,
) -> String {
    let answer = match code {
        Some(code) => format!("{status} {code}"),
        None => status.to_string(),
    };
    let peer = &destination.server_name;
    let authority = destination
        .base_url
        .split_once("://")
        .map_or(destination.base_url.as_str(), |(_, rest)| rest);
    match code {
        Some("federation_denied") => format!(
            "{peer} refuses to federate with {origin}: {answer} — ask its admin to allow \
             {origin} (`homingd admin federation allow {origin}` there)"
        ),
        Some("bad_signature") => format!(
            "the peer refused our signature: {answer} — check that both servers' clocks agree \
             and that the peer reaches our keys at {our_keys}"
        ),
        Some("unknown_key") => format!(
            "the peer could not get our signing key: {answer} — check that the peer reaches \
             our keys at {our_keys} (server.name {origin} must lead it to this server)"
        ),
        Some("unsigned" | "bad_digest") => format!(
            "the peer did not see our request as it was signed: {answer} — a reverse proxy in \
             front of it must pass the Signature, Signature-Input and Content-Digest headers \
             and the body unchanged"
        ),
        Some("misaddressed") => format!(
            "the peer does not answer for {authority}: {answer} — its server.name or \
             server.public_hosts must include {authority}"
        ),
        _ if status == 429 => format!(
            "the peer limits our requests: {answer} — wait a minute and check again; if it \
             persists, ask its admin about rate_limits.federation_per_origin"
        ),
        _ if status == 404 || status == 405 => format!(
            "{} has no Homing federation API: {answer} — a reverse proxy in front of the peer \
             must pass /federation/ to homingd",
            destination.base_url
        ),
        _ if status >= 500 => format!(
            "the peer failed: {answer} — its admin should look at its logs; this server keeps \
             the mail and retries"
        ),
        _ => format!("the peer refused our signed request: {answer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::cause;

    #[test]
    fn advice_names_the_cause_without_the_request_wrapper() {
        let chain = "error sending request for url (http://127.0.0.1:9/x): client error \
                     (Connect): tcp connect error: Connection refused (os error 111)";
        assert_eq!(
            cause(chain),
            "tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(cause("operation timed out"), "operation timed out");
    }
}
