//! DNS: the hickory resolver built from the settings, and `_homing._tcp`
//! SRV lookups in RFC 2782 order.

use std::time::Duration;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, TokioResolver};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::address::{Host, ServerName};

/// How long an SRV answer is trusted: its TTL within these bounds, or the
/// default when the answer carries none.
const SRV_MIN_TTL: Duration = Duration::from_secs(5 * 60);
const SRV_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
const SRV_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) use homing_proto::dns::build_resolver;

/// Where SRV records send a host: one port and the targets to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRoute {
    pub port: u16,
    pub targets: Vec<String>,
    pub ttl: Duration,
}

/// Why SRV records gave no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SrvError {
    /// The only target is `.`: the domain says it offers no Homing service.
    NoService,
    /// Records exist but none is usable.
    Invalid(String),
    /// The lookup itself failed (time-out, SERVFAIL, no reachable server).
    Transient(String),
}

/// One SRV record, with its target as a validated host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// `None` for the `.` target.
    pub target: Option<String>,
}

/// Looks up `_homing._tcp.<host>`: `Ok(None)` when the name or the record
/// does not exist.
pub(crate) async fn lookup_srv(
    dns: &TokioResolver,
    host: &str,
) -> Result<Option<SrvRoute>, SrvError> {
    // The trailing dot makes the name absolute, so no search domain is tried.
    let name = Name::from_ascii(format!("_homing._tcp.{host}."))
        .map_err(|e| SrvError::Invalid(format!("cannot form the SRV name: {e}")))?;
    let lookup = match dns.srv_lookup(name).await {
        Ok(lookup) => lookup,
        Err(error) if is_absent(&error) => return Ok(None),
        Err(error) => return Err(SrvError::Transient(error.to_string())),
    };
    let ttl = lookup
        .as_lookup()
        .records()
        .iter()
        .filter(|record| record.record_type() == RecordType::SRV)
        .map(|record| record.ttl())
        .min();
    let records = lookup
        .iter()
        .map(|srv| SrvRecord {
            priority: srv.priority(),
            weight: srv.weight(),
            port: srv.port(),
            target: (!srv.target().is_root()).then(|| srv.target().to_ascii()),
        })
        .collect();
    choose(records, ttl, &mut rand::thread_rng())
}

/// True for "no such name" and "no such record", the answers that mean
/// there is no SRV record (as opposed to a failed lookup).
fn is_absent(error: &hickory_resolver::ResolveError) -> bool {
    matches!(
        error.proto().map(|proto| proto.kind()),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        })
    )
}

/// Turns the records of an answer into a route: RFC 2782 order, the first
/// record's port, and every target with that port as a fallback.
pub(crate) fn choose(
    records: Vec<SrvRecord>,
    ttl_secs: Option<u32>,
    rng: &mut impl Rng,
) -> Result<Option<SrvRoute>, SrvError> {
    if records.is_empty() {
        return Ok(None);
    }
    if records.iter().all(|record| record.target.is_none()) {
        return Err(SrvError::NoService);
    }
    let usable: Vec<SrvRecord> = records
        .into_iter()
        .filter(|record| record.port != 0)
        .filter_map(|record| {
            let host = valid_target(record.target.as_deref()?)?;
            Some(SrvRecord {
                target: Some(host),
                ..record
            })
        })
        .collect();
    let ordered = order(usable, rng);
    let Some(port) = ordered.first().map(|record| record.port) else {
        return Err(SrvError::Invalid(
            "no SRV record names a valid host and port".into(),
        ));
    };
    let mut targets: Vec<String> = Vec::new();
    for record in ordered.into_iter().filter(|record| record.port == port) {
        if let Some(target) = record.target {
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
    }
    let ttl = ttl_secs
        .map(|secs| Duration::from_secs(u64::from(secs)))
        .unwrap_or(SRV_DEFAULT_TTL)
        .clamp(SRV_MIN_TTL, SRV_MAX_TTL);
    Ok(Some(SrvRoute { port, targets, ttl }))
}

/// The target as a plain lower-case domain, or `None` if it is not one.
fn valid_target(target: &str) -> Option<String> {
    let name = ServerName::parse(target.trim_end_matches('.')).ok()?;
    match (name.host(), name.port()) {
        (Host::Domain(domain), None) => Some(domain.clone()),
        _ => None,
    }
}

/// RFC 2782 order: ascending priority; within a priority, repeatedly pick a
/// record at random with probability proportional to its weight, zero
/// weights first so they are chosen only rarely.
pub(crate) fn order(mut records: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<SrvRecord> {
    records.sort_by_key(|record| record.priority);
    let mut ordered = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| a.priority == b.priority) {
        let mut group = group.to_vec();
        group.shuffle(rng);
        group.sort_by_key(|record| record.weight != 0);
        while !group.is_empty() {
            let total: u64 = group.iter().map(|record| u64::from(record.weight)).sum();
            let pick = rng.gen_range(0..=total);
            let mut running = 0u64;
            let index = group
                .iter()
                .position(|record| {
                    running += u64::from(record.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn record(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: (target != ".").then(|| target.to_string()),
        }
    }

    #[test]
    fn lower_priority_always_comes_first() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let ordered = order(
                vec![
                    record(20, 100, 1, "c.example"),
                    record(10, 0, 1, "a.example"),
                    record(10, 5, 1, "b.example"),
                ],
                &mut rng,
            );
            assert_eq!(ordered[2].target.as_deref(), Some("c.example"));
        }
    }

    #[test]
    fn weights_bias_the_choice() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut heavy_first = 0;
        for _ in 0..1_000 {
            let ordered = order(
                vec![
                    record(0, 1, 1, "light.example"),
                    record(0, 99, 1, "heavy.example"),
                ],
                &mut rng,
            );
            if ordered[0].target.as_deref() == Some("heavy.example") {
                heavy_first += 1;
            }
        }
        assert!((940..=1_000).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn a_route_keeps_targets_on_the_chosen_port() {
        let mut rng = StdRng::seed_from_u64(3);
        let route = choose(
            vec![
                record(10, 0, 8448, "Two.Example."),
                record(0, 0, 8448, "one.example."),
                record(5, 0, 9000, "other-port.example."),
                record(20, 0, 8448, "one.example."),
            ],
            Some(30),
            &mut rng,
        )
        .unwrap()
        .unwrap();
        assert_eq!(route.port, 8448);
        assert_eq!(route.targets, vec!["one.example", "two.example"]);
        assert_eq!(route.ttl, SRV_MIN_TTL, "short TTLs are raised");
    }

    #[test]
    fn unusable_answers_are_errors() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(choose(vec![], None, &mut rng), Ok(None));
        assert_eq!(
            choose(vec![record(0, 0, 0, ".")], None, &mut rng),
            Err(SrvError::NoService)
        );
        assert!(matches!(
            choose(
                vec![
                    record(0, 0, 0, "a.example."),
                    record(0, 0, 443, "bad_name.")
                ],
                None,
                &mut rng
            ),
            Err(SrvError::Invalid(_))
        ));
        let route = choose(
            vec![record(0, 0, 443, "a.example.")],
            Some(u32::MAX),
            &mut rng,
        );
        assert_eq!(route.unwrap().unwrap().ttl, SRV_MAX_TTL);
    }
}
