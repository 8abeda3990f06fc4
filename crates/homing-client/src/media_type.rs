//! Media types as senders write them in `content_type` (RFC 9110 §8.3.1):
//! `type/subtype` compared case-insensitively, then `; name=value`
//! parameters, values as tokens or quoted strings.

/// A parsed media type; type, subtype and parameter names are lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// The top-level type, such as `text`.
    pub kind: String,
    /// The subtype, such as `plain`.
    pub subtype: String,
    /// The parameters in the order written, names lower-cased.
    pub parameters: Vec<(String, String)>,
}

/// RFC 9110 `tchar`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Splits a leading token off `text`; `None` when there is none.
fn token(text: &str) -> Option<(&str, &str)> {
    let end = text.find(|c| !is_token_char(c)).unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

/// Splits a leading quoted string off `text` (which starts with `"`),
/// undoing its backslash escapes.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[index + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

impl MediaType {
    /// Parses `text`; `None` when it is not a media type.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, rest) = token(text.trim_start_matches([' ', '\t']))?;
        let rest = rest.strip_prefix('/')?;
        let (subtype, mut rest) = token(rest)?;
        let mut parameters = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix(';')?.trim_start_matches([' ', '\t']);
            // `text/plain;` and `a/b; ; c=d` are allowed: empty parameters.
            if rest.is_empty() || rest.starts_with(';') {
                continue;
            }
            let (name, after) = token(rest)?;
            let after = after.strip_prefix('=')?;
            let (value, after) = if after.starts_with('"') {
                quoted(after)?
            } else {
                let (value, after) = token(after)?;
                (value.to_string(), after)
            };
            parameters.push((name.to_ascii_lowercase(), value));
            rest = after;
        }
        Some(Self {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            parameters,
        })
    }

    /// The first value of parameter `name` (case-insensitive).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Text this client can show as is: `text/*` in UTF-8, which is the
    /// default when no charset is given (RFC 6657) and includes US-ASCII.
    pub fn is_utf8_text(&self) -> bool {
        self.kind == "text"
            && self.parameter("charset").is_none_or(|charset| {
                charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("us-ascii")
            })
    }
}

/// Whether `content_type` names text that is shown as is rather than as
/// base64url.
pub fn is_utf8_text(content_type: &str) -> bool {
    MediaType::parse(content_type).is_some_and(|media| media.is_utf8_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_case_are_understood() {
        for text in [
            "text/plain",
            "text/plain; charset=utf-8",
            "Text/Plain; Charset=UTF-8",
            "text/plain;charset=\"utf-8\"",
            "text/markdown; charset=utf-8; variant=GFM",
            "text/plain; charset=us-ascii",
            "text/plain;",
        ] {
            assert!(is_utf8_text(text), "{text}");
        }
        for text in [
            "application/octet-stream",
            "text/plain; charset=iso-8859-1",
            "image/png",
            "text",
            "text/",
            "/plain",
            "text/plain; charset",
            "text/plain; charset=\"utf-8",
            "text/plain garbage",
            "",
        ] {
            assert!(!is_utf8_text(text), "{text}");
        }
    }

    #[test]
    fn quoted_values_lose_their_escapes() {
        let media = MediaType::parse(r#"a/b; name="x \"y\" z"; other=1"#).unwrap();
        assert_eq!(media.parameter("NAME"), Some(r#"x "y" z"#));
        assert_eq!(media.parameter("other"), Some("1"));
        assert_eq!(media.kind, "a");
        assert_eq!(media.subtype, "b");
    }
}
