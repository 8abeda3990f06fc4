//! The canonical bytes of signed documents: RFC 8785 (JCS) JSON.
//!
//! Homing's signed documents hold only objects, arrays, strings, booleans
//! and integers of magnitude below 2^53, for which JCS is simply: object
//! members sorted by key (UTF-16 code units, which equals byte order for the
//! ASCII keys used here), no insignificant whitespace, and JSON's shortest
//! string escapes. Floats are refused so every implementation agrees on the
//! bytes. Every document carries a `type` member naming its purpose, so a
//! signature over one kind of document can never be replayed as another.

use serde::Serialize;
use serde_json::Value;

use super::CryptoError;

/// The largest integer JCS (and JavaScript) represent exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Serialises `value` to its canonical JSON bytes.
pub fn to_canonical_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, CryptoError> {
    let tree = serde_json::to_value(value).map_err(|e| CryptoError::NotCanonical(e.to_string()))?;
    let mut out = Vec::with_capacity(256);
    write_value(&tree, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CryptoError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            let magnitude = match (number.as_u64(), number.as_i64()) {
                (Some(n), _) => n,
                (None, Some(n)) => n.unsigned_abs(),
                _ => return Err(CryptoError::NotCanonical("floats are not allowed".into())),
            };
            if magnitude > MAX_SAFE_INTEGER {
                return Err(CryptoError::NotCanonical("integer beyond 2^53".into()));
            }
            out.extend_from_slice(number.to_string().as_bytes());
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|a, b| utf16_order(a.0, b.0));
            out.push(b'{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(member, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Writes `text` as a JCS string. Runs of bytes that need no escape (all
/// but `"`, `\` and controls; UTF-8 sequences are copied as they are) go
/// out in one copy: most strings here are long base64 with nothing to
/// escape.
pub fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut unicode = *b"\\u00XX";
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                unicode[4] = HEX[usize::from(byte >> 4)];
                unicode[5] = HEX[usize::from(byte & 0x0f)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..at]);
        out.extend_from_slice(escaped);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(value: Value) -> String {
        String::from_utf8(to_canonical_bytes(&value).unwrap()).unwrap()
    }

    #[test]
    fn members_are_sorted_and_whitespace_dropped() {
        let text = canonical(json!({"b": [1, {"z": true, "a": null}], "a": "x"}));
        assert_eq!(text, r#"{"a":"x","b":[1,{"a":null,"z":true}]}"#);
    }

    #[test]
    fn strings_use_the_shortest_escapes() {
        let text = canonical(json!({"s": "q\"b\\n\n\u{1}é€"}));
        assert_eq!(text, "{\"s\":\"q\\\"b\\\\n\\n\\u0001é€\"}");
    }

    #[test]
    fn floats_and_huge_integers_are_refused() {
        assert!(to_canonical_bytes(&json!({"f": 1.5})).is_err());
        assert!(to_canonical_bytes(&json!({"n": 1u64 << 60})).is_err());
        assert!(to_canonical_bytes(&json!({"n": -(1i64 << 54)})).is_err());
        assert!(to_canonical_bytes(&json!({"n": MAX_SAFE_INTEGER})).is_ok());
    }

    #[test]
    fn rfc8785_sort_order_is_by_utf16_code_units() {
        // RFC 8785 §3.2.3: U+1F600 (a surrogate pair, 0xD83D…) sorts before
        // U+FB33 in UTF-16, although its UTF-8 bytes sort after.
        let text =
            canonical(json!({"\u{fb33}": 1, "\r": 2, "\u{1f600}": 3, "1": 4, "\u{20ac}": 5}));
        assert_eq!(
            text,
            "{\"\\r\":2,\"1\":4,\"\u{20ac}\":5,\"\u{1f600}\":3,\"\u{fb33}\":1}"
        );
    }
}
