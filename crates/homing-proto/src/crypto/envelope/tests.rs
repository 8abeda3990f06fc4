use super::*;

struct Device {
    signing: SigningKey,
    box_secret: crypto_box::SecretKey,
}

impl Device {
    fn new() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
            box_secret: crypto_box::SecretKey::generate(&mut OsRng),
        }
    }

    fn box_key(&self) -> BoxPublicKey {
        BoxPublicKey(*self.box_secret.public_key().as_bytes())
    }

    fn sign_key(&self) -> PublicKey {
        PublicKey::from(self.signing.verifying_key())
    }
}

fn plaintext(content: &[u8]) -> Plaintext {
    Plaintext {
        from: "alice@a.example".into(),
        from_device: DeviceId::parse("laptop").unwrap(),
        to: vec!["bob@b.example".into()],
        sent_at: 1_795_000_000_000,
        thread: Some("t-1".into()),
        content_type: "text/plain; charset=utf-8".into(),
        content: content.to_vec(),
    }
}

/// Encrypts arbitrary inner bytes the way `seal` does, to test what `open`
/// makes of bodies an honest sender would never produce.
fn body_of(inner: &[u8], key: &[u8; 32]) -> Vec<u8> {
    let nonce = [3u8; NONCE_LEN];
    let mut body = nonce.to_vec();
    body.extend(secretbox_seal(key, &nonce, &padding::pad(inner)).unwrap());
    body
}

fn inner_json(payload: serde_json::Value, signer: &SigningKey) -> Vec<u8> {
    let signature = SignatureBytes(signer.sign(&to_canonical_bytes(&payload).unwrap()));
    to_canonical_bytes(&serde_json::json!({"payload": payload, "signature": signature})).unwrap()
}

#[test]
fn sealed_messages_open_for_every_recipient_and_verify() {
    let alice = Device::new();
    let (bob, bob2) = (Device::new(), Device::new());
    let message = plaintext("hello, Bob".as_bytes());
    let sealed = seal(&message, &alice.signing, &[bob.box_key(), bob2.box_key()]).unwrap();
    // Even a short message fills the 512-byte bucket: the signature and the
    // addresses alone take more than 256.
    assert_eq!(sealed.body.len(), NONCE_LEN + TAG_LEN + 512);
    assert_eq!(sealed.wraps.len(), 2);
    for ((key, wrap), device) in sealed.wraps.iter().zip([&bob, &bob2]) {
        assert_eq!(*key, device.box_key());
        assert_eq!(wrap.len(), KEY_WRAP_LEN);
        let content_key = unwrap_key(wrap, &device.box_secret).unwrap();
        let signed = open(&sealed.body, &content_key).unwrap();
        assert_eq!(signed.claimed_sender().0, "alice@a.example");
        assert_eq!(signed.claimed_sender().1.as_str(), "laptop");
        let verified = signed.verify(&alice.sign_key()).unwrap();
        assert_eq!(verified, message);
        assert!(verified.is_for("bob@b.example") && verified.is_for("alice@a.example"));
        assert!(!verified.is_for("carol@c.example"));
    }
    // Another bob device cannot unwrap, and another sender key does not verify.
    assert_eq!(
        unwrap_key(&sealed.wraps[0].1, &bob2.box_secret),
        Err(EnvelopeError::KeyWrap)
    );
    let content_key = unwrap_key(&sealed.wraps[0].1, &bob.box_secret).unwrap();
    let signed = open(&sealed.body, &content_key).unwrap();
    assert_eq!(
        signed.verify(&bob.sign_key()),
        Err(EnvelopeError::BadSignature)
    );
}

#[test]
fn every_seal_uses_fresh_keys_and_hides_the_length_within_a_bucket() {
    let alice = Device::new();
    let bob = Device::new();
    let short = seal(&plaintext(b"a"), &alice.signing, &[bob.box_key()]).unwrap();
    let again = seal(&plaintext(b"a"), &alice.signing, &[bob.box_key()]).unwrap();
    let longer = seal(&plaintext(&[b'a'; 60]), &alice.signing, &[bob.box_key()]).unwrap();
    assert_ne!(short.body, again.body);
    assert_ne!(short.wraps[0].1, again.wraps[0].1);
    assert_eq!(short.body.len(), longer.body.len());
    let big = seal(&plaintext(&[0u8; 70_000]), &alice.signing, &[bob.box_key()]).unwrap();
    // 70000 bytes of content are 93334 of base64: the second 64 KiB step.
    assert_eq!(big.body.len(), NONCE_LEN + TAG_LEN + 2 * 65536);
    let key = unwrap_key(&big.wraps[0].1, &bob.box_secret).unwrap();
    let opened = open(&big.body, &key).unwrap();
    assert_eq!(
        opened.verify(&alice.sign_key()).unwrap().content.len(),
        70_000
    );
}

#[test]
fn invalid_plaintexts_are_not_sealed() {
    let alice = Device::new();
    let bob = [Device::new().box_key()];
    let refused = |change: fn(&mut Plaintext)| {
        let mut message = plaintext(b"x");
        change(&mut message);
        seal(&message, &alice.signing, &bob).unwrap_err()
    };
    let field = EnvelopeError::InvalidField;
    assert_eq!(
        refused(|m| m.from = "Alice@a.example".into()),
        field("from")
    );
    assert_eq!(refused(|m| m.from = "alice".into()), field("from"));
    assert_eq!(refused(|m| m.to.clear()), field("to"));
    assert_eq!(refused(|m| m.to.push("bob@b.example".into())), field("to"));
    assert_eq!(refused(|m| m.to = vec!["x@".into()]), field("to"));
    assert_eq!(refused(|m| m.sent_at = -1), field("sent_at"));
    assert_eq!(refused(|m| m.sent_at = 1 << 53), field("sent_at"));
    assert_eq!(refused(|m| m.thread = Some(String::new())), field("thread"));
    assert_eq!(refused(|m| m.thread = Some("a\nb".into())), field("thread"));
    assert_eq!(
        refused(|m| m.thread = Some("t".repeat(129))),
        field("thread")
    );
    assert_eq!(
        refused(|m| m.content_type = String::new()),
        field("content_type")
    );
    assert_eq!(
        refused(|m| m.content_type = "tëxt".into()),
        field("content_type")
    );
    assert_eq!(
        refused(|m| m.content = vec![0; MAX_PADDED_LEN]),
        EnvelopeError::TooLarge
    );
    assert_eq!(
        seal(&plaintext(b"x"), &alice.signing, &[]),
        Err(EnvelopeError::Recipients)
    );
    // Small-order keys would make the wrap readable by anyone.
    assert_eq!(
        seal(&plaintext(b"x"), &alice.signing, &[BoxPublicKey([0; 32])]),
        Err(EnvelopeError::RecipientKey)
    );
    let mut message = plaintext(b"x");
    message.thread = None;
    message.to = vec!["bob@b.example".into(), "alice@a.example".into()];
    seal(&message, &alice.signing, &bob).unwrap();
}

#[test]
fn malformed_bodies_get_distinct_errors() {
    let alice = Device::new();
    let key = [5u8; 32];
    let payload = serde_json::to_value(Payload::new(&plaintext(b"hi"))).unwrap();
    let good = body_of(&inner_json(payload.clone(), &alice.signing), &key);
    open(&good, &key)
        .unwrap()
        .verify(&alice.sign_key())
        .unwrap();

    assert_eq!(open(&good[..100], &key), Err(EnvelopeError::Body));
    assert_eq!(open(&[], &key), Err(EnvelopeError::Body));
    assert_eq!(open(&good, &[6u8; 32]), Err(EnvelopeError::Decrypt));
    let mut flipped = good.clone();
    flipped[NONCE_LEN + TAG_LEN + 3] ^= 1;
    assert_eq!(open(&flipped, &key), Err(EnvelopeError::Decrypt));
    // Authentic, but not padded to a bucket, or without the marker.
    let mut body = good[..NONCE_LEN].to_vec();
    body.extend(secretbox_seal(&key, &[3u8; 24], &[b'{'; 300]).unwrap());
    assert_eq!(open(&body, &key), Err(EnvelopeError::Padding));
    let mut body = good[..NONCE_LEN].to_vec();
    body.extend(secretbox_seal(&key, &[3u8; 24], &[0u8; 256]).unwrap());
    assert_eq!(open(&body, &key), Err(EnvelopeError::Padding));

    let json_error = |inner: &[u8]| match open(&body_of(inner, &key), &key) {
        Err(EnvelopeError::Json(_)) => {}
        other => panic!("expected a JSON error, got {other:?}"),
    };
    json_error(b"not json");
    json_error(&[0xff, 0xfe]);
    json_error(br#"{"payload": {}, "signature": "AA"}"#);
    let mut extra = payload.clone();
    extra["extra"] = 1.into();
    json_error(&inner_json(extra, &alice.signing));
    let mut missing = payload.clone();
    missing.as_object_mut().unwrap().remove("thread");
    json_error(&inner_json(missing, &alice.signing));
    let mut float = payload.clone();
    float["sent_at"] = serde_json::json!(1.5);
    json_error(
        &serde_json::to_vec(&serde_json::json!({"payload": float, "signature": "A".repeat(86)}))
            .unwrap(),
    );

    let mut wrong = payload.clone();
    wrong["type"] = "homing.device_list.v1".into();
    assert_eq!(
        open(&body_of(&inner_json(wrong, &alice.signing), &key), &key),
        Err(EnvelopeError::WrongType)
    );
    let mut padded_content = payload.clone();
    padded_content["content"] = "aGk=".into();
    assert_eq!(
        open(
            &body_of(&inner_json(padded_content, &alice.signing), &key),
            &key
        ),
        Err(EnvelopeError::InvalidField("content"))
    );
    // A valid signature over different members does not carry over.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&inner_json(payload, &alice.signing)).unwrap();
    forged["payload"]["to"] = serde_json::json!(["carol@c.example"]);
    let forged = open(&body_of(&serde_json::to_vec(&forged).unwrap(), &key), &key).unwrap();
    assert_eq!(
        forged.verify(&alice.sign_key()),
        Err(EnvelopeError::BadSignature)
    );
}

#[test]
fn key_wraps_of_the_wrong_size_are_refused() {
    let bob = Device::new();
    assert_eq!(
        unwrap_key(&[0u8; KEY_WRAP_LEN - 1], &bob.box_secret),
        Err(EnvelopeError::KeyWrap)
    );
    assert_eq!(
        unwrap_key(&[0u8; KEY_WRAP_LEN], &bob.box_secret),
        Err(EnvelopeError::KeyWrap)
    );
    // A sealed box of 31 bytes opens but is not a content key.
    let wrap = seal_box(&bob.box_key(), &[1u8; 31], &[2u8; 32]).unwrap();
    assert_eq!(
        unwrap_key(&wrap, &bob.box_secret),
        Err(EnvelopeError::KeyWrap)
    );
}

#[test]
fn random_bodies_never_panic() {
    let key = [1u8; 32];
    for len in [0, 1, 39, 40, 295, 296, 297, 1000] {
        let mut body = vec![0u8; len];
        OsRng.fill_bytes(&mut body);
        assert!(open(&body, &key).is_err());
    }
}
