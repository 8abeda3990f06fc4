//! Checks against `federation-spec/test-vectors/envelope.json`, made with
//! libsodium (PyNaCl 1.5.0) by `generate.py` there.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

fn vectors() -> Value {
    serde_json::from_str(include_str!(
        "../../../../../federation-spec/test-vectors/envelope.json"
    ))
    .unwrap()
}

fn list<'a>(vectors: &'a Value, name: &str) -> &'a Vec<Value> {
    let list = vectors[name].as_array().unwrap();
    assert!(!list.is_empty(), "no {name} vectors");
    list
}

fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().unwrap();
    assert_eq!(text.len() % 2, 0);
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn array<const N: usize>(value: &Value) -> [u8; N] {
    hex(value).try_into().unwrap()
}

/// The generator's input for padding vectors: byte `i` is `i % 251`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn secretbox_matches_libsodium_byte_for_byte() {
    for vector in list(&vectors(), "secretbox") {
        let key = array::<32>(&vector["key"]);
        let nonce = array::<24>(&vector["nonce"]);
        let plaintext = hex(&vector["plaintext"]);
        let ciphertext = hex(&vector["ciphertext"]);
        assert_eq!(
            secretbox_seal(&key, &nonce, &plaintext).unwrap(),
            ciphertext
        );
        let opened = XSalsa20Poly1305::new((&key).into())
            .decrypt((&nonce).into(), ciphertext.as_slice())
            .unwrap();
        assert_eq!(opened, plaintext);
    }
}

#[test]
fn padding_matches_sodium_pad() {
    for vector in list(&vectors(), "padding") {
        let len = vector["unpadded_len"].as_u64().unwrap() as usize;
        let input = pattern(len);
        assert_eq!(
            padding::block_size(len) as u64,
            vector["block_size"].as_u64().unwrap()
        );
        let padded = padding::pad(&input);
        assert_eq!(
            padded.len() as u64,
            vector["padded_len"].as_u64().unwrap(),
            "length {len}"
        );
        let digest: [u8; 32] = Sha256::digest(padded.as_slice()).into();
        assert_eq!(
            digest,
            array::<32>(&vector["padded_sha256"]),
            "length {len}"
        );
        if !vector["padded"].is_null() {
            assert_eq!(padded.as_slice(), hex(&vector["padded"]).as_slice());
        }
        assert_eq!(padding::unpad(&padded).unwrap(), input.as_slice());
    }
    for vector in list(&vectors(), "bad_padding") {
        let padded = hex(&vector["padded"]);
        assert_eq!(padding::unpad(&padded), Err(EnvelopeError::Padding));
    }
}

#[test]
fn sealed_boxes_match_libsodium() {
    let vectors = vectors();
    // Deterministic boxes that libsodium's crypto_box_seal_open opened.
    for vector in list(&vectors, "sealed_box") {
        let recipient = BoxPublicKey(array::<32>(&vector["recipient_public"]));
        let secret = crypto_box::SecretKey::from_bytes(array::<32>(&vector["recipient_secret"]));
        assert_eq!(secret.public_key().as_bytes(), &recipient.0);
        let message = hex(&vector["message"]);
        let sealed = hex(&vector["sealed"]);
        let made = seal_box(
            &recipient,
            &message,
            &array::<32>(&vector["ephemeral_secret"]),
        );
        assert_eq!(made.unwrap(), sealed);
        assert_eq!(sealed[..32], hex(&vector["ephemeral_public"]));
        assert_eq!(secret.unseal(&sealed).unwrap(), message);
    }
    // Boxes made by crypto_box_seal itself, with a random ephemeral key.
    for vector in list(&vectors, "sealed_box_random") {
        let secret = crypto_box::SecretKey::from_bytes(array::<32>(&vector["recipient_secret"]));
        let opened = unwrap_key(&hex(&vector["sealed"]), &secret).unwrap();
        assert_eq!(opened.to_vec(), hex(&vector["message"]));
    }
    // Keys libsodium refuses to seal to are refused here too.
    let plaintext = Plaintext {
        from: "a@a.example".into(),
        from_device: DeviceId::parse("d").unwrap(),
        to: vec!["b@b.example".into()],
        sent_at: 0,
        thread: None,
        content_type: "text/plain".into(),
        content: vec![],
    };
    let signer = SigningKey::from_bytes(&[1; 32]);
    for key in list(&vectors, "small_order_box_keys") {
        let key = BoxPublicKey(array::<32>(key));
        assert_eq!(
            seal(&plaintext, &signer, &[key]),
            Err(EnvelopeError::RecipientKey)
        );
    }
}

#[test]
fn envelopes_match_libsodium_and_open() {
    for vector in list(&vectors(), "envelopes") {
        let fields = &vector["plaintext"];
        let plaintext = Plaintext {
            from: fields["from"].as_str().unwrap().into(),
            from_device: DeviceId::parse(fields["from_device"].as_str().unwrap()).unwrap(),
            to: serde_json::from_value(fields["to"].clone()).unwrap(),
            sent_at: fields["sent_at"].as_i64().unwrap(),
            thread: fields["thread"].as_str().map(String::from),
            content_type: fields["content_type"].as_str().unwrap().into(),
            content: hex(&fields["content"]),
        };
        let sender = SigningKey::from_bytes(&array::<32>(&vector["sender_seed"]));
        let sender_key = PublicKey::from_bytes(&array::<32>(&vector["sender_sign_key"])).unwrap();
        assert_eq!(PublicKey::from(sender.verifying_key()), sender_key);
        let content_key = array::<32>(&vector["content_key"]);
        let recipients = vector["recipients"].as_array().unwrap();
        let boxes: Vec<BoxPublicKey> = recipients
            .iter()
            .map(|r| BoxPublicKey(array::<32>(&r["box_public"])))
            .collect();
        let ephemerals: Vec<[u8; 32]> = recipients
            .iter()
            .map(|r| array::<32>(&r["ephemeral_secret"]))
            .collect();

        // The signed bytes, the inner document and its padding.
        let payload = Payload::new(&plaintext);
        let canonical = to_canonical_bytes(&payload).unwrap();
        assert_eq!(
            canonical,
            vector["payload_canonical"].as_str().unwrap().as_bytes()
        );
        let signature = hex(&vector["signature"]);
        assert_eq!(sender.sign(&canonical).to_bytes().to_vec(), signature);
        let inner = vector["inner"].as_str().unwrap().as_bytes();
        assert_eq!(
            padding::pad(inner).as_slice(),
            hex(&vector["padded"]).as_slice()
        );

        // Sealing with the same randomness gives libsodium's exact bytes.
        let nonce = array::<24>(&vector["nonce"]);
        let sealed = seal_with(
            &plaintext,
            &sender,
            &boxes,
            &content_key,
            &nonce,
            &ephemerals,
        )
        .unwrap();
        let body = hex(&vector["body"]);
        assert_eq!(sealed.body, body);
        assert_eq!(b64(&body), vector["body_b64url"].as_str().unwrap());

        // Every recipient unwraps the content key; the body opens and verifies.
        for ((recipient, (key, wrap)), ephemeral) in
            recipients.iter().zip(&sealed.wraps).zip(&ephemerals)
        {
            assert_eq!(wrap, &hex(&recipient["key_wrap"]));
            assert_eq!(b64(wrap), recipient["key_wrap_b64url"].as_str().unwrap());
            let secret = crypto_box::SecretKey::from_bytes(array::<32>(&recipient["box_secret"]));
            assert_eq!(secret.public_key().as_bytes(), &key.0);
            assert_ne!(&secret.to_bytes(), ephemeral);
            assert_eq!(unwrap_key(wrap, &secret).unwrap(), content_key);
        }
        let signed = open(&body, &content_key).unwrap();
        assert_eq!(signed.claimed_sender().0, plaintext.from);
        assert_eq!(signed.verify(&sender_key).unwrap(), plaintext);
        let stranger = PublicKey::from(SigningKey::from_bytes(&[2; 32]).verifying_key());
        assert_eq!(signed.verify(&stranger), Err(EnvelopeError::BadSignature));
    }
}
