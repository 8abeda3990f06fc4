//! The part of RFC 8941 structured fields that message signatures and
//! `Content-Digest` need: dictionaries whose members are items or inner
//! lists, with integers, strings, tokens, byte sequences and booleans.
//!
//! Decimals (and the RFC 9651 additions) are refused rather than parsed:
//! none of the fields read here carries them, and less code parses less
//! attacker input.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// RFC 8941 §4.2.7 asks parsers to accept byte sequences without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Caps on repetition, so that duplicate checks stay cheap on hostile input.
const MAX_MEMBERS: usize = 64;
const MAX_INNER_ITEMS: usize = 64;
const MAX_PARAMS: usize = 16;

/// Why a field failed to parse or serialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SyntaxError(pub &'static str);

/// A bare item: the value of an item or parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BareItem {
    Integer(i64),
    String(String),
    Token(String),
    Bytes(Vec<u8>),
    Boolean(bool),
}

/// Parameters in the order they were written, which signatures depend on.
pub(super) type Parameters = Vec<(String, BareItem)>;

/// A bare item with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub bare: BareItem,
    pub params: Parameters,
}

/// The value of one dictionary member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Member {
    Item(Item),
    InnerList(Vec<Item>, Parameters),
}

/// Parses a dictionary (RFC 8941 §4.2.2). Repeated keys are an error rather
/// than last-one-wins, so that two parties cannot read different values.
pub(super) fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>, SyntaxError> {
    let mut p = Parser {
        input: input.as_bytes(),
        pos: 0,
    };
    p.skip_sp();
    let mut members: Vec<(String, Member)> = Vec::new();
    while !p.at_end() {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            p.item_or_inner_list()?
        } else {
            Member::Item(Item {
                bare: BareItem::Boolean(true),
                params: p.parameters()?,
            })
        };
        if members.iter().any(|(k, _)| *k == key) {
            return Err(SyntaxError("repeated dictionary key"));
        }
        if members.len() == MAX_MEMBERS {
            return Err(SyntaxError("too many dictionary members"));
        }
        members.push((key, member));
        p.skip_ows();
        if p.at_end() {
            break;
        }
        if !p.eat(b',') {
            return Err(SyntaxError("expected ',' between members"));
        }
        p.skip_ows();
        if p.at_end() {
            return Err(SyntaxError("trailing ','"));
        }
    }
    Ok(members)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek();
        if byte.is_some() {
            self.pos += 1;
        }
        byte
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    fn skip_ows(&mut self) {
        while self.eat(b' ') || self.eat(b'\t') {}
    }

    /// Consumes bytes while `pred` holds and returns them as a string; only
    /// ever called with ASCII predicates, so the slice is valid UTF-8.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.input[start..self.pos]
            .iter()
            .map(|&b| char::from(b))
            .collect()
    }

    fn key(&mut self) -> Result<String, SyntaxError> {
        match self.peek() {
            Some(b) if b.is_ascii_lowercase() || b == b'*' => Ok(self.take_while(is_key_char)),
            _ => Err(SyntaxError("expected a key")),
        }
    }

    fn item_or_inner_list(&mut self) -> Result<Member, SyntaxError> {
        if !self.eat(b'(') {
            return Ok(Member::Item(self.item()?));
        }
        let mut items = Vec::new();
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return Ok(Member::InnerList(items, self.parameters()?));
            }
            if items.len() == MAX_INNER_ITEMS {
                return Err(SyntaxError("too many items in inner list"));
            }
            items.push(self.item()?);
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return Err(SyntaxError("expected ' ' or ')' in inner list"));
            }
        }
    }

    fn item(&mut self) -> Result<Item, SyntaxError> {
        let bare = self.bare_item()?;
        let params = self.parameters()?;
        Ok(Item { bare, params })
    }

    fn parameters(&mut self) -> Result<Parameters, SyntaxError> {
        let mut params: Parameters = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare_item()?
            } else {
                BareItem::Boolean(true)
            };
            if params.iter().any(|(k, _)| *k == key) {
                return Err(SyntaxError("repeated parameter"));
            }
            if params.len() == MAX_PARAMS {
                return Err(SyntaxError("too many parameters"));
            }
            params.push((key, value));
        }
        Ok(params)
    }

    fn bare_item(&mut self) -> Result<BareItem, SyntaxError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => self.boolean(),
            Some(b) if b.is_ascii_alphabetic() || b == b'*' => {
                Ok(BareItem::Token(self.take_while(is_token_char)))
            }
            _ => Err(SyntaxError("expected an item")),
        }
    }

    fn integer(&mut self) -> Result<BareItem, SyntaxError> {
        let negative = self.eat(b'-');
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() || digits.len() > 15 {
            return Err(SyntaxError("integer must have 1 to 15 digits"));
        }
        if self.peek() == Some(b'.') {
            return Err(SyntaxError("decimals are not supported"));
        }
        let magnitude: i64 = digits
            .parse()
            .map_err(|_| SyntaxError("integer out of range"))?;
        Ok(BareItem::Integer(if negative {
            -magnitude
        } else {
            magnitude
        }))
    }

    fn string(&mut self) -> Result<BareItem, SyntaxError> {
        self.pos += 1; // the opening quote, checked by the caller
        let mut out = String::new();
        loop {
            match self.next() {
                Some(b'\\') => match self.next() {
                    Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                    _ => return Err(SyntaxError("bad escape in string")),
                },
                Some(b'"') => return Ok(BareItem::String(out)),
                Some(c @ 0x20..=0x7e) => out.push(char::from(c)),
                Some(_) => return Err(SyntaxError("string has a non-printable character")),
                None => return Err(SyntaxError("unterminated string")),
            }
        }
    }

    fn bytes(&mut self) -> Result<BareItem, SyntaxError> {
        self.pos += 1; // the opening colon, checked by the caller
        let encoded = self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if !self.eat(b':') {
            return Err(SyntaxError("bad byte sequence"));
        }
        LENIENT_BASE64
            .decode(encoded)
            .map(BareItem::Bytes)
            .map_err(|_| SyntaxError("bad base64 in byte sequence"))
    }

    fn boolean(&mut self) -> Result<BareItem, SyntaxError> {
        self.pos += 1; // the question mark, checked by the caller
        match self.next() {
            Some(b'0') => Ok(BareItem::Boolean(false)),
            Some(b'1') => Ok(BareItem::Boolean(true)),
            _ => Err(SyntaxError("bad boolean")),
        }
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)
}

/// Whether `key` may be a dictionary key or parameter name.
pub(super) fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
        && bytes.all(is_key_char)
}

/// Serialises a bare item (RFC 8941 §4.1.3), refusing values it cannot carry.
pub(super) fn write_bare_item(out: &mut String, item: &BareItem) -> Result<(), SyntaxError> {
    match item {
        BareItem::Integer(n) => {
            if n.unsigned_abs() > 999_999_999_999_999 {
                return Err(SyntaxError("integer out of range"));
            }
            out.push_str(&n.to_string());
        }
        BareItem::String(s) => {
            if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                return Err(SyntaxError("string has a non-printable character"));
            }
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        BareItem::Token(t) => {
            let mut bytes = t.bytes();
            let first_ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*');
            if !first_ok || !bytes.all(is_token_char) {
                return Err(SyntaxError("invalid token"));
            }
            out.push_str(t);
        }
        BareItem::Bytes(b) => {
            out.push(':');
            out.push_str(&STANDARD.encode(b));
            out.push(':');
        }
        BareItem::Boolean(b) => out.push_str(if *b { "?1" } else { "?0" }),
    }
    Ok(())
}

/// Serialises parameters (RFC 8941 §4.1.1.2) in their stored order.
pub(super) fn write_parameters(out: &mut String, params: &Parameters) -> Result<(), SyntaxError> {
    for (key, value) in params {
        if !is_key(key) {
            return Err(SyntaxError("invalid parameter name"));
        }
        out.push(';');
        out.push_str(key);
        if *value != BareItem::Boolean(true) {
            out.push('=');
            write_bare_item(out, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_item_type() {
        let dict =
            parse_dictionary(r#"a=1, b="x\"y\\", c=tok/en:1, d=:aGk=:, e=?0, f, g=(1 "s";p=2);q"#)
                .unwrap();
        let keys: Vec<&str> = dict.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e", "f", "g"]);
        let item = |bare| {
            Member::Item(Item {
                bare,
                params: vec![],
            })
        };
        assert_eq!(dict[1].1, item(BareItem::String(r#"x"y\"#.into())));
        assert_eq!(dict[2].1, item(BareItem::Token("tok/en:1".into())));
        assert_eq!(dict[3].1, item(BareItem::Bytes(b"hi".to_vec())));
        assert_eq!(dict[4].1, item(BareItem::Boolean(false)));
        assert_eq!(dict[5].1, item(BareItem::Boolean(true)));
        let Member::InnerList(items, params) = &dict[6].1 else {
            panic!("not an inner list")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].params, vec![("p".into(), BareItem::Integer(2))]);
        assert_eq!(params, &vec![("q".into(), BareItem::Boolean(true))]);
    }

    #[test]
    fn serialising_round_trips() {
        let mut out = String::new();
        write_bare_item(&mut out, &BareItem::String(r#"a"b\c"#.into())).unwrap();
        write_parameters(&mut out, &vec![("k".into(), BareItem::Integer(-5))]).unwrap();
        assert_eq!(out, r#""a\"b\\c";k=-5"#);
        let mut bad = String::new();
        assert!(write_bare_item(&mut bad, &BareItem::String("é".into())).is_err());
        assert!(write_bare_item(&mut bad, &BareItem::Integer(i64::MIN)).is_err());
    }
}
