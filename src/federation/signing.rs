//! HTTP message signatures (RFC 9421, `alg="ed25519"`) and `Content-Digest`
//! (RFC 9530, sha-256) for requests between Homing servers.
//!
//! Everything here is a pure function over strings and bytes, so the HTTP
//! client that signs and the extractor that verifies share one
//! implementation. A receiver is expected to:
//! 1. read `Signature-Input` and `Signature` with [`parse_signatures`],
//! 2. run [`check_profile`] on the chosen signature,
//! 3. check the body against `Content-Digest` with [`verify_content_digest`],
//! 4. only then look up the key its keyid names (which may mean a fetch), and
//! 5. [`verify`] it against the request as received.
//!
//! A field sent as several lines must be joined with `", "` first.

mod params;
mod profile;
mod request;
mod structured;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

pub use params::SignatureParams;
pub use profile::{check_profile, MAX_CLOCK_SKEW_SECS, MAX_VALIDITY_SECS};
pub use request::RequestParts;
use structured::{BareItem, Item, Member, SyntaxError};

/// Longest header value accepted, so parsing work is bounded.
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Most components one signature may cover.
pub const MAX_COMPONENTS: usize = 32;
/// Most signatures (labels) one request may carry.
pub const MAX_SIGNATURES: usize = 8;
/// The only algorithm accepted.
const ALG: &str = "ed25519";

/// Why a signature or digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header value is longer than {MAX_HEADER_LEN} bytes")]
    HeaderTooLong,
    #[error("malformed structured field: {0}")]
    Malformed(&'static str),
    #[error("signature label `{0}` is not a valid dictionary key")]
    InvalidLabel(String),
    #[error("more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("no signature present")]
    NoSignature,
    #[error("label `{0}` is in only one of Signature-Input and Signature")]
    UnpairedLabel(String),
    #[error("signature parameter `{0}` is unknown or has the wrong type")]
    InvalidParameter(String),
    #[error("more than {MAX_COMPONENTS} covered components")]
    TooManyComponents,
    #[error("component `{0}` is covered more than once")]
    DuplicateComponent(String),
    #[error("component `{0}` is not supported")]
    UnsupportedComponent(String),
    #[error("component `{0}` is not in the message")]
    MissingComponent(String),
    #[error("component `{0}` has a value that cannot be signed")]
    InvalidComponentValue(String),
    #[error("method is not an HTTP token")]
    InvalidMethod,
    #[error("target URI is not an absolute http or https URI")]
    InvalidTargetUri,
    #[error("signature is not 64 bytes")]
    InvalidSignatureLength,
    #[error("signature does not verify")]
    BadSignature,
    #[error("Content-Digest has no sha-256 member")]
    MissingSha256Digest,
    #[error("Content-Digest does not match the body")]
    DigestMismatch,
    #[error("signature has no `alg`")]
    MissingAlg,
    #[error("algorithm `{0}` is not ed25519")]
    UnsupportedAlgorithm(String),
    #[error("signature does not cover `{0}`")]
    RequiredComponentNotCovered(&'static str),
    #[error("signature has no `created` time")]
    MissingCreated,
    #[error("signature has no `expires` time")]
    MissingExpires,
    #[error("signature expires before it was created")]
    ExpiresNotAfterCreated,
    #[error("signature is valid for more than {MAX_VALIDITY_SECS} seconds")]
    ValidityTooLong,
    #[error("signature was created in the future")]
    CreatedInFuture,
    #[error("signature has expired")]
    Expired,
    #[error("signature has no nonce")]
    MissingNonce,
    #[error("nonce is not 16 to 128 characters")]
    InvalidNonceLength,
    #[error("signature has no keyid")]
    MissingKeyId,
}

impl From<SyntaxError> for SignatureError {
    fn from(e: SyntaxError) -> Self {
        SignatureError::Malformed(e.0)
    }
}

/// `Content-Digest` value for a body: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Checks that a `Content-Digest` header has a sha-256 member matching `body`.
pub fn verify_content_digest(header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let dict = parse_bounded(header)?;
    let claimed = match dict.iter().find(|(k, _)| k == "sha-256") {
        Some((
            _,
            Member::Item(Item {
                bare: BareItem::Bytes(b),
                ..
            }),
        )) => b,
        Some(_) => return Err(SignatureError::Malformed("sha-256 is not a byte sequence")),
        None => return Err(SignatureError::MissingSha256Digest),
    };
    let actual = Sha256::digest(body);
    // The digest is public, but comparing in constant time costs nothing.
    let same = claimed.len() == actual.len()
        && claimed
            .iter()
            .zip(actual.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(SignatureError::DigestMismatch)
    }
}

/// The signature base of RFC 9421 §2.5: the exact bytes that are signed.
pub fn signature_base(
    request: &RequestParts,
    params: &SignatureParams,
) -> Result<String, SignatureError> {
    let components = params.components();
    if components.len() > MAX_COMPONENTS {
        return Err(SignatureError::TooManyComponents);
    }
    let mut base = String::new();
    for (i, component) in components.iter().enumerate() {
        if components[..i].contains(component) {
            return Err(SignatureError::DuplicateComponent(component.clone()));
        }
        let value = request.component_value(component)?;
        structured::write_bare_item(&mut base, &BareItem::String(component.clone()))?;
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&params.serialize()?);
    Ok(base)
}

/// Header values to add to a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// Value of the `Signature-Input` field.
    pub signature_input: String,
    /// Value of the `Signature` field.
    pub signature: String,
}

/// Signs `request` under `label`, covering what `params` lists.
pub fn sign(
    key: &SigningKey,
    label: &str,
    params: &SignatureParams,
    request: &RequestParts,
) -> Result<SignatureHeaders, SignatureError> {
    if !structured::is_key(label) {
        return Err(SignatureError::InvalidLabel(label.to_owned()));
    }
    let base = signature_base(request, params)?;
    let signature = key.sign(base.as_bytes()).to_bytes();
    Ok(SignatureHeaders {
        signature_input: format!("{label}={}", params.serialize()?),
        signature: format!("{label}=:{}:", STANDARD.encode(signature)),
    })
}

/// One signature read from a request's `Signature-Input` and `Signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSignature {
    /// The dictionary key both headers use for it.
    pub label: String,
    /// What it covers and its parameters.
    pub params: SignatureParams,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// Reads and pairs up every signature in the two headers, by label.
pub fn parse_signatures(
    signature_input: &str,
    signature: &str,
) -> Result<Vec<ReceivedSignature>, SignatureError> {
    let inputs = parse_bounded(signature_input)?;
    let mut signatures = parse_bounded(signature)?;
    if inputs.len() > MAX_SIGNATURES || signatures.len() > MAX_SIGNATURES {
        return Err(SignatureError::TooManySignatures);
    }
    let mut out = Vec::with_capacity(inputs.len());
    for (label, member) in inputs {
        let position = signatures
            .iter()
            .position(|(l, _)| *l == label)
            .ok_or_else(|| SignatureError::UnpairedLabel(label.clone()))?;
        let bytes = match signatures.swap_remove(position).1 {
            Member::Item(Item {
                bare: BareItem::Bytes(b),
                params,
            }) if params.is_empty() => b,
            _ => {
                return Err(SignatureError::Malformed(
                    "signature is not a byte sequence",
                ))
            }
        };
        out.push(ReceivedSignature {
            params: SignatureParams::from_member(member)?,
            label,
            signature: bytes,
        });
    }
    if let Some((label, _)) = signatures.into_iter().next() {
        return Err(SignatureError::UnpairedLabel(label));
    }
    if out.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(out)
}

/// Checks a received signature over `request` with `key`, strictly.
pub fn verify(
    key: &VerifyingKey,
    received: &ReceivedSignature,
    request: &RequestParts,
) -> Result<(), SignatureError> {
    if let Some(alg) = received.params.alg() {
        if alg != ALG {
            return Err(SignatureError::UnsupportedAlgorithm(alg.to_owned()));
        }
    }
    let bytes: [u8; 64] = received
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| SignatureError::InvalidSignatureLength)?;
    let base = signature_base(request, &received.params)?;
    key.verify_strict(base.as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| SignatureError::BadSignature)
}

/// Parses a dictionary header after refusing oversized input.
fn parse_bounded(header: &str) -> Result<Vec<(String, Member)>, SignatureError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::HeaderTooLong);
    }
    Ok(structured::parse_dictionary(header)?)
}

#[cfg(test)]
mod tests {
    use super::SignatureError::*;
    use super::*;

    /// RFC 9421 Appendix B.1.4 `test-key-ed25519`, PKCS#8 and SPKI bodies;
    /// the raw key is the last 32 bytes of each.
    const TEST_KEY_PRIVATE: &str =
        "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF";
    const TEST_KEY_PUBLIC: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";
    /// The body of the RFC 9421 B.2 `test-request`, also RFC 9530's example.
    const BODY: &[u8] = br#"{"hello": "world"}"#;
    const SHA256_OF_BODY: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
    /// The `Content-Digest` of the RFC 9421 B.2 `test-request`.
    const SHA512_OF_BODY: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
    const NOW: i64 = 1_700_000_000;
    const INBOX: &str = "https://example.net/federation/v1/inbox";

    fn last_32(b64: &str) -> [u8; 32] {
        let der = STANDARD.decode(b64).unwrap();
        der[der.len() - 32..].try_into().unwrap()
    }

    fn rfc_key() -> SigningKey {
        let key = SigningKey::from_bytes(&last_32(TEST_KEY_PRIVATE));
        assert_eq!(key.verifying_key().to_bytes(), last_32(TEST_KEY_PUBLIC));
        key
    }

    /// The `test-request` of RFC 9421 Appendix B.2.
    fn rfc_request() -> RequestParts {
        RequestParts::new("POST", "https://example.com/foo?param=Value&Pet=dog")
            .unwrap()
            .with_header("Host", "example.com")
            .with_header("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
            .with_header("Content-Type", "application/json")
            .with_header("Content-Digest", SHA512_OF_BODY)
            .with_header("Content-Length", "18")
    }

    fn homing_params() -> SignatureParams {
        SignatureParams::new(["@method", "@target-uri", "@authority", "content-digest"])
            .with_created(NOW)
            .with_expires(NOW + MAX_VALIDITY_SECS)
            .with_nonce("0123456789abcdef")
            .with_keyid("example.org ed25519:abcd")
            .with_alg("ed25519")
    }

    fn request(method: &str, uri: &str, body: &[u8]) -> RequestParts {
        RequestParts::new(method, uri)
            .unwrap()
            .with_header("Content-Digest", &content_digest(body))
    }

    #[test]
    fn rfc9421_b_2_6_signing_a_request_using_ed25519() {
        let params = SignatureParams::new([
            "date",
            "@method",
            "@path",
            "@authority",
            "content-type",
            "content-length",
        ])
        .with_created(1618884473)
        .with_keyid("test-key-ed25519");
        let expected_base = concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-length\": 18\n",
            r#""@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
        );
        assert_eq!(
            signature_base(&rfc_request(), &params).unwrap(),
            expected_base
        );

        let input = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        let signature = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
        let headers = sign(&rfc_key(), "sig-b26", &params, &rfc_request()).unwrap();
        assert_eq!(headers.signature_input, input);
        assert_eq!(headers.signature, signature);

        let received = parse_signatures(input, signature).unwrap();
        assert_eq!(received[0].params, params);
        verify(&rfc_key().verifying_key(), &received[0], &rfc_request()).unwrap();
    }

    #[test]
    fn rfc9530_sha256_content_digest() {
        assert_eq!(content_digest(BODY), SHA256_OF_BODY);
        verify_content_digest(SHA256_OF_BODY, BODY).unwrap();
        let both = format!("{SHA512_OF_BODY}, {SHA256_OF_BODY}");
        verify_content_digest(&both, BODY).unwrap();
        // RFC 8941 asks parsers to accept a byte sequence without padding.
        verify_content_digest(
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE:",
            BODY,
        )
        .unwrap();
        assert_eq!(verify_content_digest(&both, b"{}"), Err(DigestMismatch));
        assert_eq!(
            verify_content_digest("sha-256=:AAAA:", BODY),
            Err(DigestMismatch)
        );
        assert_eq!(
            verify_content_digest(SHA512_OF_BODY, BODY),
            Err(MissingSha256Digest)
        );
        assert_eq!(verify_content_digest("", BODY), Err(MissingSha256Digest));
        for bad in [
            "sha-256=X48E",
            "SHA-256=:AAAA:",
            "sha-256=\"AAAA\"",
            "sha-256=:AA:, sha-256=:AA:",
        ] {
            assert!(
                matches!(verify_content_digest(bad, BODY), Err(Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn signature_base_refuses_duplicate_and_excess_components() {
        let r = request("GET", INBOX, b"");
        let dup = SignatureParams::new(["@method", "@path", "@method"]);
        assert_eq!(
            signature_base(&r, &dup),
            Err(DuplicateComponent("@method".into()))
        );
        let many = SignatureParams::new((0..=MAX_COMPONENTS).map(|i| format!("h{i}")));
        assert_eq!(signature_base(&r, &many), Err(TooManyComponents));
        assert_eq!(
            sign(&rfc_key(), "Bad", &homing_params(), &r),
            Err(InvalidLabel("Bad".into()))
        );
    }

    #[test]
    fn round_trip_and_tampering() {
        let key = rfc_key();
        let vk = key.verifying_key();
        let sent = request("PUT", INBOX, BODY);
        let headers = sign(&key, "sig1", &homing_params(), &sent).unwrap();
        // As it may arrive: beside another signature, with spaces after commas.
        let input = format!("other=(\"@method\");created=1, {}", headers.signature_input);
        let signature = format!("{},   other=:AAAA:", headers.signature);
        let received = parse_signatures(&input, &signature).unwrap();
        let ours = received.iter().find(|s| s.label == "sig1").unwrap();
        assert_eq!(
            check_profile(&ours.params, NOW),
            Ok("example.org ed25519:abcd")
        );
        verify(&vk, ours, &sent).unwrap();
        verify_content_digest(&sent.component_value("content-digest").unwrap(), BODY).unwrap();

        let tampered = [
            request("POST", INBOX, BODY),
            request("PUT", "https://example.net:8443/federation/v1/inbox", BODY),
            request("PUT", "https://example.net/federation/v1/outbox", BODY),
            request("PUT", INBOX, b"{}"),
        ];
        for forged in &tampered {
            assert_eq!(verify(&vk, ours, forged), Err(BadSignature));
        }
        // Each component alone is enough to catch its own change.
        let isolated = ["@method", "@authority", "@target-uri", "content-digest"];
        for (component, forged) in isolated.iter().zip(&tampered) {
            let params = SignatureParams::new([*component]).with_created(NOW);
            let h = sign(&key, "sig1", &params, &sent).unwrap();
            let one = &parse_signatures(&h.signature_input, &h.signature).unwrap()[0];
            verify(&vk, one, &sent).unwrap();
            assert_eq!(verify(&vk, one, forged), Err(BadSignature), "{component}");
        }
        // Authority comparison ignores host case and the default port.
        let params = SignatureParams::new(["@authority"]);
        let h = sign(&key, "a", &params, &sent).unwrap();
        let one = &parse_signatures(&h.signature_input, &h.signature).unwrap()[0];
        verify(&vk, one, &request("GET", "https://EXAMPLE.net:443/", b"")).unwrap();

        let other_key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(verify(&other_key, ours, &sent), Err(BadSignature));
        let mut short = ours.clone();
        short.signature.pop();
        assert_eq!(verify(&vk, &short, &sent), Err(InvalidSignatureLength));
        let mut rsa = ours.clone();
        rsa.params = rsa.params.with_alg("rsa-pss-sha512");
        assert_eq!(
            verify(&vk, &rsa, &sent),
            Err(UnsupportedAlgorithm("rsa-pss-sha512".into()))
        );
    }

    #[test]
    fn parses_every_registered_parameter_in_order() {
        let input = r#"sig1=("@method" "@target-uri");keyid="k";created=1618884473;expires=1618884773;nonce="b3k2pp5k7z-50gnwp.yemd";alg="ed25519";tag="homing""#;
        let received = parse_signatures(input, "sig1=:AAAA:").unwrap();
        let p = &received[0].params;
        assert_eq!(p.components(), ["@method", "@target-uri"]);
        assert_eq!(
            (p.created(), p.expires()),
            (Some(1618884473), Some(1618884773))
        );
        assert_eq!(
            (p.keyid(), p.nonce()),
            (Some("k"), Some("b3k2pp5k7z-50gnwp.yemd"))
        );
        assert_eq!((p.alg(), p.tag()), (Some("ed25519"), Some("homing")));
        assert_eq!(format!("sig1={}", p.serialize().unwrap()), input);
        assert_eq!(received[0].signature, [0, 0, 0]);
    }

    #[test]
    fn parser_refuses_garbage() {
        let signature = "sig1=:AAAA:";
        // One hostile Signature-Input per line, plus a few that lines cannot hold.
        let nasty = r#"sig1
sig1=
,
sig1=(
sig1=("@method"
sig1=("@method)
sig1=("@method""@path")
Sig1=()
1sig=()
sig1=();created=
sig1=();created=-
sig1=();created=1.5
sig1=();created=9999999999999999
sig1=();created="1"
sig1=();created=@1
sig1=();created=%"x"
sig1=();keyid=k
sig1=();unknown=1
sig1=();created=1;created=2
sig1=(), sig1=()
sig1=(),
sig1=() sig1=()
sig1=("é")
sig1=("a\q")
sig1=(("a"))
sig1=(:AAAA:)
sig1=(@method)
sig1=("@method";sf)
sig1=("@method" "@method")
sig1=:AAAA:"#;
        let nasty = nasty.lines().chain([
            "",
            " ",
            "sig1=(\"@method\" ",
            "sig1=()\0",
            "\u{feff}sig1=()",
            "sig1=()\r\n, a=()",
            "sig1=();nonce=\"\t\"",
        ]);
        for input in nasty {
            assert!(
                parse_signatures(input, signature).is_err(),
                "accepted {input:?}"
            );
        }
        for bad in [
            "sig1=:A:",
            "sig1=:AA=A:",
            "sig1=:!!:",
            "sig1=\"AAAA\"",
            "sig1=:AAAA:;p",
            "sig1=:AAAA",
            "sig1=?1",
            "sig1=:AAAA:x",
        ] {
            assert!(
                parse_signatures("sig1=()", bad).is_err(),
                "accepted {bad:?}"
            );
        }
        assert_eq!(
            parse_signatures("sig1=()", "sig2=:AAAA:"),
            Err(UnpairedLabel("sig1".into()))
        );
        assert_eq!(
            parse_signatures("sig1=()", "sig1=:AAAA:, sig2=:AAAA:"),
            Err(UnpairedLabel("sig2".into()))
        );
        assert_eq!(parse_signatures("", ""), Err(NoSignature));

        let long = format!("sig1=(\"{}\")", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(parse_signatures(&long, signature), Err(HeaderTooLong));
        assert_eq!(verify_content_digest(&long, BODY), Err(HeaderTooLong));
        let many: Vec<String> = (0..=MAX_COMPONENTS).map(|i| format!("\"h{i}\"")).collect();
        let input = format!("sig1=({})", many.join(" "));
        assert_eq!(parse_signatures(&input, signature), Err(TooManyComponents));
        let labels: Vec<String> = (0..=MAX_SIGNATURES).map(|i| format!("s{i}=()")).collect();
        assert_eq!(
            parse_signatures(&labels.join(", "), signature),
            Err(TooManySignatures)
        );
    }
}
