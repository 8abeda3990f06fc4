//! Safety numbers: 60 digits two people compare (in person or on a call) to
//! check that each holds the other's real account key. Both sides compute
//! the same number, so reading it aloud is enough. The construction follows
//! Signal's numeric fingerprints; it is specified in
//! `federation-spec/identity.md` ("Safety numbers").

use sha2::{Digest, Sha512};

use super::PublicKey;

/// The version of the construction, hashed first: a later construction
/// gives unrelated numbers instead of ones that almost match.
pub const VERSION: u8 = 1;
/// SHA-512 rounds per half: makes searching for a key whose half matches a
/// given one (to pass a comparison) cost 5,200 hashes per try.
pub const ITERATIONS: usize = 5200;

/// One party's half: 30 digits from its account key and address.
pub fn fingerprint(account_key: &PublicKey, address: &str) -> String {
    let key = account_key.as_bytes();
    let mut hash = Sha512::new()
        .chain_update([VERSION])
        .chain_update(key)
        .chain_update(address.as_bytes())
        .finalize();
    for _ in 0..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key)
            .finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|chunk| {
            let value = chunk
                .iter()
                .fold(0u64, |n, byte| (n << 8) | u64::from(*byte));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

/// The safety number of two parties, each an account key and its canonical
/// address: the two halves, lower first, so both sides get the same 60
/// digits.
pub fn safety_number(ours: (&PublicKey, &str), theirs: (&PublicKey, &str)) -> String {
    let mut halves = [fingerprint(ours.0, ours.1), fingerprint(theirs.0, theirs.1)];
    halves.sort();
    halves.concat()
}

/// The digits in groups of five, `per_line` groups to a line.
pub fn grouped(number: &str, per_line: usize) -> String {
    let groups: Vec<&str> = number
        .as_bytes()
        .chunks(5)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    groups
        .chunks(per_line.max(1))
        .map(|line| line.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> PublicKey {
        PublicKey::from(SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    /// The vector in federation-spec/identity.md (also computed there
    /// independently of this code).
    const SPEC_NUMBER: &str = "335731006744207339072896075570723447601956866508221954781139";

    /// The vector in federation-spec/identity.md.
    #[test]
    fn safety_number_matches_the_spec_vector() {
        let alice = key(1);
        let bob = key(2);
        assert_eq!(
            alice.to_string(),
            "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
        );
        assert_eq!(
            bob.to_string(),
            "gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q"
        );
        let number = safety_number((&alice, "alice@example.org"), (&bob, "bob@example.net"));
        assert_eq!(number, SPEC_NUMBER);
    }

    #[test]
    fn safety_number_is_the_same_from_both_sides() {
        let (alice, bob) = (key(1), key(2));
        assert_eq!(
            safety_number((&alice, "alice@example.org"), (&bob, "bob@example.net")),
            safety_number((&bob, "bob@example.net"), (&alice, "alice@example.org")),
        );
    }

    #[test]
    fn safety_number_changes_with_a_key_or_an_address() {
        let (alice, bob, mallory) = (key(1), key(2), key(3));
        let real = safety_number((&alice, "alice@example.org"), (&bob, "bob@example.net"));
        let other_key = safety_number((&alice, "alice@example.org"), (&mallory, "bob@example.net"));
        let other_address = safety_number((&alice, "alice@example.org"), (&bob, "bob@example.com"));
        assert_ne!(real, other_key);
        assert_ne!(real, other_address);
        assert_eq!(real.len(), 60);
        assert!(real.bytes().all(|b| b.is_ascii_digit()), "{real}");
    }

    #[test]
    fn safety_number_groups_read_in_fives() {
        let number: String = (0..60).map(|i| char::from(b'0' + (i % 10) as u8)).collect();
        let shown = grouped(&number, 4);
        assert_eq!(shown.lines().count(), 3);
        assert_eq!(shown.lines().next(), Some("01234 56789 01234 56789"));
    }
}
