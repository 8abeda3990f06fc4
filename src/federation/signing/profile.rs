//! Homing's profile of RFC 9421: what a federation request signature must
//! carry on top of being valid, so that it is fresh, bound to one request and
//! body, and cannot be replayed unnoticed.

use std::ops::RangeInclusive;

use super::{SignatureError, SignatureParams, ALG};

/// Longest signature lifetime, `expires - created`, the profile allows.
pub const MAX_VALIDITY_SECS: i64 = 300;
/// How far in the future `created` may lie, for clocks that disagree.
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// Allowed nonce lengths: long enough to be unguessable, short enough to store.
const NONCE_LEN: RangeInclusive<usize> = 16..=128;
/// What a Homing signature must cover to bind it to one request and body.
const REQUIRED_COMPONENTS: [&str; 4] = ["@method", "@target-uri", "@authority", "content-digest"];

/// Enforces Homing's signature profile at `now` (Unix seconds); returns the keyid.
pub fn check_profile(params: &SignatureParams, now: i64) -> Result<&str, SignatureError> {
    // Required, not merely checked when present: RFC 9421 lets a verifier
    // infer the algorithm from the key, but Homing's profile names it, so a
    // signature without it is not a Homing signature.
    let alg = params.alg().ok_or(SignatureError::MissingAlg)?;
    if alg != ALG {
        return Err(SignatureError::UnsupportedAlgorithm(alg.to_owned()));
    }
    for required in REQUIRED_COMPONENTS {
        if !params.components().iter().any(|c| c == required) {
            return Err(SignatureError::RequiredComponentNotCovered(required));
        }
    }
    let created = params.created().ok_or(SignatureError::MissingCreated)?;
    let expires = params.expires().ok_or(SignatureError::MissingExpires)?;
    if expires <= created {
        return Err(SignatureError::ExpiresNotAfterCreated);
    }
    if expires.saturating_sub(created) > MAX_VALIDITY_SECS {
        return Err(SignatureError::ValidityTooLong);
    }
    if created > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(SignatureError::CreatedInFuture);
    }
    if now > expires {
        return Err(SignatureError::Expired);
    }
    let nonce = params.nonce().ok_or(SignatureError::MissingNonce)?;
    if !NONCE_LEN.contains(&nonce.chars().count()) {
        return Err(SignatureError::InvalidNonceLength);
    }
    params.keyid().ok_or(SignatureError::MissingKeyId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SignatureError::*;

    const NOW: i64 = 1_700_000_000;

    fn without(mut params: SignatureParams, name: &str) -> SignatureParams {
        params.params.retain(|(k, _)| k != name);
        params.components.retain(|c| c != name);
        params
    }

    #[test]
    fn profile_rules() {
        let ok = SignatureParams::new(REQUIRED_COMPONENTS)
            .with_created(NOW)
            .with_expires(NOW + MAX_VALIDITY_SECS)
            .with_nonce("0123456789abcdef")
            .with_keyid("example.org ed25519:abcd")
            .with_alg("ed25519");
        assert_eq!(check_profile(&ok, NOW), Ok("example.org ed25519:abcd"));
        assert!(check_profile(&ok, NOW - MAX_CLOCK_SKEW_SECS).is_ok());
        assert!(check_profile(&ok, NOW + MAX_VALIDITY_SECS).is_ok());
        for required in REQUIRED_COMPONENTS {
            let params = without(ok.clone(), required);
            assert_eq!(
                check_profile(&params, NOW),
                Err(RequiredComponentNotCovered(required))
            );
        }
        let cases = [
            (without(ok.clone(), "alg"), NOW, MissingAlg),
            (
                ok.clone().with_alg("hmac-sha256"),
                NOW,
                UnsupportedAlgorithm("hmac-sha256".into()),
            ),
            (without(ok.clone(), "created"), NOW, MissingCreated),
            (without(ok.clone(), "expires"), NOW, MissingExpires),
            (ok.clone().with_expires(NOW), NOW, ExpiresNotAfterCreated),
            (
                ok.clone().with_expires(NOW - 1),
                NOW,
                ExpiresNotAfterCreated,
            ),
            (
                ok.clone().with_expires(NOW + MAX_VALIDITY_SECS + 1),
                NOW,
                ValidityTooLong,
            ),
            (ok.clone().with_created(i64::MIN), NOW, ValidityTooLong),
            (ok.clone(), NOW - MAX_CLOCK_SKEW_SECS - 1, CreatedInFuture),
            (ok.clone(), NOW + MAX_VALIDITY_SECS + 1, Expired),
            (without(ok.clone(), "nonce"), NOW, MissingNonce),
            (
                ok.clone().with_nonce(&"n".repeat(15)),
                NOW,
                InvalidNonceLength,
            ),
            (
                ok.clone().with_nonce(&"n".repeat(129)),
                NOW,
                InvalidNonceLength,
            ),
            (without(ok.clone(), "keyid"), NOW, MissingKeyId),
        ];
        for (params, now, expected) in cases {
            assert_eq!(check_profile(&params, now), Err(expected));
        }
        assert!(check_profile(&ok.clone().with_nonce(&"n".repeat(128)), NOW).is_ok());
    }
}
