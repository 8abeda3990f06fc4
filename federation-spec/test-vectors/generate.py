#!/usr/bin/env python3
"""Regenerates envelope.json, the Homing envelope and key-backup test vectors.

Every byte string here comes from libsodium (through PyNaCl 1.5.0, which
bundles it), from fixed inputs, so the output is reproducible: running the
script again must produce an identical file. The Rust tests read the file
and check that the Rust implementation produces and accepts the same bytes.

    pip install pynacl==1.5.0
    python3 generate.py > envelope.json
"""

import base64
import hashlib
import json

import nacl
import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing

assert nacl.__version__ == "1.5.0", "the vectors were made with PyNaCl 1.5.0"

MESSAGE_TYPE = "homing.message.v1"
KEY_BACKUP_TYPE = "homing.key_backup.v1"
SECRET_TYPE = "homing.secret.v1"
P = 2**255 - 19


def fixed(label, size=32):
    """Fixed 'random' bytes: SHA-256 of a label, truncated to size."""
    return hashlib.sha256(b"homing test vector: " + label.encode()).digest()[:size]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(value):
    """RFC 8785 for the values used here: ASCII keys, strings, integers, null."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def block_size(unpadded_len):
    """The sodium_pad block size that pads to Homing's bucket for this length."""
    needed = unpadded_len + 1  # sodium_pad always adds at least the 0x80 byte
    if needed > 65536:
        return 65536
    size = 256
    while size < needed:
        size *= 2
    return size


def pad(data):
    return sodium.sodium_pad(data, block_size(len(data)))


def pattern(length):
    return bytes(i % 251 for i in range(length))


def secretbox(key, nonce, plaintext):
    # PyNaCl's crypto_secretbox returns MAC || ciphertext, i.e. exactly what
    # crypto_secretbox_easy produces.
    return sodium.crypto_secretbox(plaintext, nonce, key)


def seal_deterministic(recipient_pk, ephemeral_sk, message):
    """crypto_box_seal with a chosen ephemeral key, built from libsodium's own
    primitives the way crypto_box_seal does it, then checked by libsodium's
    crypto_box_seal_open."""
    ephemeral_pk = sodium.crypto_scalarmult_base(ephemeral_sk)
    nonce = sodium.crypto_generichash_blake2b_salt_personal(ephemeral_pk + recipient_pk, digest_size=24)
    return ephemeral_pk + sodium.crypto_box(message, nonce, recipient_pk, ephemeral_sk), ephemeral_pk, nonce


def secretbox_vectors():
    out = []
    for label, plaintext in [("empty", b""), ("short", b"homing"), ("long", pattern(1000))]:
        key, nonce = fixed("secretbox key " + label), fixed("secretbox nonce " + label, 24)
        out.append({
            "key": key.hex(),
            "nonce": nonce.hex(),
            "plaintext": plaintext.hex(),
            "ciphertext": secretbox(key, nonce, plaintext).hex(),
        })
    return out


def padding_vectors():
    out = []
    for length in [0, 1, 200, 254, 255, 256, 300, 511, 512, 1000, 4095, 4096,
                   65534, 65535, 65536, 70000, 131071, 131072]:
        size = block_size(length)
        padded = sodium.sodium_pad(pattern(length), size)
        assert sodium.sodium_unpad(padded, size) == pattern(length)
        entry = {
            "unpadded_len": length,
            "block_size": size,
            "padded_len": len(padded),
            "padded_sha256": hashlib.sha256(padded).hexdigest(),
        }
        if len(padded) <= 512:
            entry["padded"] = padded.hex()
        out.append(entry)
    return out


def bad_padding_vectors():
    cases = [
        bytes(256),                              # no 0x80 marker at all
        pattern(255) + b"\x01",                  # last byte neither 0x00 nor 0x80
        pattern(200) + b"\x80" + bytes(54) + b"\x01",
        b"\x81" + bytes(255),                    # marker byte must be exactly 0x80
    ]
    out = []
    for padded in cases:
        try:
            sodium.sodium_unpad(padded, len(padded))
        except (ValueError, nacl.exceptions.CryptoError):
            out.append({"padded": padded.hex(), "block_size": len(padded)})
        else:
            raise AssertionError("libsodium accepted a padding meant to be bad")
    return out


def sealed_box_vectors():
    out = []
    for label, message in [("content key", fixed("sealed message")), ("short", b"hi")]:
        sk = fixed("sealed recipient " + label)
        pk = sodium.crypto_scalarmult_base(sk)
        esk = fixed("sealed ephemeral " + label)
        sealed, epk, nonce = seal_deterministic(pk, esk, message)
        assert sodium.crypto_box_seal_open(sealed, pk, sk) == message
        out.append({
            "recipient_secret": sk.hex(),
            "recipient_public": pk.hex(),
            "ephemeral_secret": esk.hex(),
            "ephemeral_public": epk.hex(),
            "nonce": nonce.hex(),
            "message": message.hex(),
            "sealed": sealed.hex(),
        })
    return out


def sealed_box_random_vectors():
    """Made by libsodium's crypto_box_seal itself (random ephemeral key), so
    they change on every run; the Rust side only has to open them."""
    sk = fixed("random sealed recipient")
    pk = sodium.crypto_scalarmult_base(sk)
    message = fixed("random sealed message")
    return [{
        "recipient_secret": sk.hex(),
        "message": message.hex(),
        "sealed": sodium.crypto_box_seal(message, pk).hex(),
    }]


def small_order_keys():
    # The u-coordinates of curve25519's points of order 1, 2, 4 and 8, plus
    # non-canonical encodings of some of them; libsodium refuses all of them.
    values = [0, 1, P - 1, P, P + 1,
              325606250916557431795983626356110631294008115727848805560023387167927233504,
              39382357235489614581723060781553021112529911719440698176882885853963445705823]
    keys = [v.to_bytes(32, "little") for v in values]
    keys.append(bytes(31) + b"\x80")  # 0 with the ignored top bit set
    for key in keys:
        try:
            sodium.crypto_box_seal(b"x" * 32, key)
        except nacl.exceptions.CryptoError:
            continue
        raise AssertionError("libsodium sealed to a small-order key " + key.hex())
    return [key.hex() for key in keys]


def envelope_vector(label, fields, content, recipients):
    seed = fixed("sender device " + label)
    signing = nacl.signing.SigningKey(seed)
    payload = dict(fields, type=MESSAGE_TYPE, content=b64url(content))
    payload_bytes = canonical(payload)
    signature = signing.sign(payload_bytes).signature
    inner = canonical({"payload": payload, "signature": b64url(signature)})
    padded = pad(inner)
    content_key = fixed("content key " + label)
    nonce = fixed("body nonce " + label, 24)
    body = nonce + secretbox(content_key, nonce, padded)
    assert sodium.sodium_unpad(sodium.crypto_secretbox_open(body[24:], nonce, content_key), block_size(len(inner))) == inner
    wraps = []
    for name in recipients:
        sk = fixed("recipient " + name)
        pk = sodium.crypto_scalarmult_base(sk)
        esk = fixed("ephemeral " + label + " " + name)
        wrap, _, _ = seal_deterministic(pk, esk, content_key)
        assert sodium.crypto_box_seal_open(wrap, pk, sk) == content_key
        wraps.append({
            "device": name,
            "box_secret": sk.hex(),
            "box_public": pk.hex(),
            "ephemeral_secret": esk.hex(),
            "key_wrap": wrap.hex(),
            "key_wrap_b64url": b64url(wrap),
        })
    return {
        "sender_seed": seed.hex(),
        "sender_sign_key": bytes(signing.verify_key).hex(),
        "plaintext": dict(fields, content=content.hex()),
        "payload_canonical": payload_bytes.decode(),
        "signature": signature.hex(),
        "inner": inner.decode(),
        "padded": padded.hex(),
        "content_key": content_key.hex(),
        "nonce": nonce.hex(),
        "body": body.hex(),
        "body_b64url": b64url(body),
        "recipients": wraps,
    }


def envelope_vectors():
    return [
        envelope_vector("text", {
            "from": "alice@a.example",
            "from_device": "laptop",
            "to": ["bob@b.example", "carol@c.example"],
            "sent_at": 1795000000000,
            "thread": "t-42",
            "content_type": "text/plain; charset=utf-8",
        }, "Hello Bob and Carol! Grüße ✓".encode(), ["bob-phone", "carol-laptop"]),
        envelope_vector("binary", {
            "from": "alice@a.example",
            "from_device": "phone_2",
            "to": ["alice@a.example"],
            "sent_at": 0,
            "thread": None,
            "content_type": "application/octet-stream",
        }, bytes(range(256)), ["alice-laptop"]),
    ]


def passphrase_document(kind, secret, passphrase, label, m_cost_kib, t_cost):
    salt = fixed("backup salt " + label, 16)
    nonce = fixed("backup nonce " + label, 24)
    key = sodium.crypto_pwhash_alg(32, passphrase.encode(), salt, t_cost, m_cost_kib * 1024,
                                   sodium.crypto_pwhash_ALG_ARGON2ID13)
    document = {
        "type": kind,
        "kdf": {"name": "argon2id", "m_cost_kib": m_cost_kib, "t_cost": t_cost, "p_cost": 1,
                "salt": b64url(salt)},
        "nonce": b64url(nonce),
        "ciphertext": b64url(secretbox(key, nonce, secret)),
    }
    return {
        "passphrase": passphrase,
        "secret": secret.hex(),
        "derived_key": key.hex(),
        "document": json.dumps(document, sort_keys=True),
    }


def backup_vectors():
    # Small KDF costs keep the tests fast; real exports use the strong defaults.
    return [
        passphrase_document(KEY_BACKUP_TYPE, fixed("account seed"), "correct horse battery staple",
                            "key", 8192, 2),
        passphrase_document(SECRET_TYPE, b"device key file contents", "pässwörd", "secret", 1024, 1),
    ]


def main():
    vectors = {
        "generator": "generate.py with PyNaCl 1.5.0 (bundled libsodium)",
        "secretbox": secretbox_vectors(),
        "padding": padding_vectors(),
        "bad_padding": bad_padding_vectors(),
        "sealed_box": sealed_box_vectors(),
        "sealed_box_random": sealed_box_random_vectors(),
        "small_order_box_keys": small_order_keys(),
        "envelopes": envelope_vectors(),
        "passphrase_documents": backup_vectors(),
    }
    print(json.dumps(vectors, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
