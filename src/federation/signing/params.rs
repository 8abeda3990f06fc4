//! The covered components and parameters of one signature: the value of a
//! `Signature-Input` member and of the `@signature-params` line.

use super::structured::{self, BareItem, Item, Member, Parameters};
use super::{SignatureError, MAX_COMPONENTS};

/// Covered components and parameters of one signature (`@signature-params`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    pub(super) components: Vec<String>,
    // Kept in order: the signature base repeats them exactly as written.
    pub(super) params: Parameters,
}

impl SignatureParams {
    /// Covers `components`, in that order, with no parameters set yet.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(components: I) -> Self {
        Self {
            components: components.into_iter().map(Into::into).collect(),
            params: Vec::new(),
        }
    }

    /// Sets the `created` time (Unix seconds).
    pub fn with_created(self, unix_secs: i64) -> Self {
        self.with("created", BareItem::Integer(unix_secs))
    }

    /// Sets the `expires` time (Unix seconds).
    pub fn with_expires(self, unix_secs: i64) -> Self {
        self.with("expires", BareItem::Integer(unix_secs))
    }

    /// Sets the `keyid`.
    pub fn with_keyid(self, keyid: &str) -> Self {
        self.with("keyid", BareItem::String(keyid.to_owned()))
    }

    /// Sets the `nonce`.
    pub fn with_nonce(self, nonce: &str) -> Self {
        self.with("nonce", BareItem::String(nonce.to_owned()))
    }

    /// Sets the `alg`.
    pub fn with_alg(self, alg: &str) -> Self {
        self.with("alg", BareItem::String(alg.to_owned()))
    }

    /// Sets the application `tag`.
    pub fn with_tag(self, tag: &str) -> Self {
        self.with("tag", BareItem::String(tag.to_owned()))
    }

    /// Replaces a parameter in place, or appends it.
    fn with(mut self, name: &str, value: BareItem) -> Self {
        match self.params.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.params.push((name.to_owned(), value)),
        }
        self
    }

    /// The covered component identifiers, in order.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The `created` parameter.
    pub fn created(&self) -> Option<i64> {
        self.integer("created")
    }

    /// The `expires` parameter.
    pub fn expires(&self) -> Option<i64> {
        self.integer("expires")
    }

    /// The `keyid` parameter.
    pub fn keyid(&self) -> Option<&str> {
        self.string("keyid")
    }

    /// The `nonce` parameter.
    pub fn nonce(&self) -> Option<&str> {
        self.string("nonce")
    }

    /// The `alg` parameter.
    pub fn alg(&self) -> Option<&str> {
        self.string("alg")
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.string("tag")
    }

    fn integer(&self, name: &str) -> Option<i64> {
        self.params.iter().find_map(|(k, v)| match v {
            BareItem::Integer(n) if k == name => Some(*n),
            _ => None,
        })
    }

    fn string(&self, name: &str) -> Option<&str> {
        self.params.iter().find_map(|(k, v)| match v {
            BareItem::String(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// The RFC 8941 inner list, as in `Signature-Input` and `@signature-params`.
    pub fn serialize(&self) -> Result<String, SignatureError> {
        let mut out = String::from("(");
        for (i, component) in self.components.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            structured::write_bare_item(&mut out, &BareItem::String(component.clone()))?;
        }
        out.push(')');
        structured::write_parameters(&mut out, &self.params)?;
        Ok(out)
    }

    /// Reads one `Signature-Input` member, accepting only registered parameters.
    pub(super) fn from_member(member: Member) -> Result<Self, SignatureError> {
        let Member::InnerList(items, params) = member else {
            return Err(SignatureError::Malformed(
                "signature input is not an inner list",
            ));
        };
        if items.len() > MAX_COMPONENTS {
            return Err(SignatureError::TooManyComponents);
        }
        let mut components = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item {
                    bare: BareItem::String(name),
                    params,
                } if params.is_empty() => {
                    if components.contains(&name) {
                        return Err(SignatureError::DuplicateComponent(name));
                    }
                    components.push(name);
                }
                // Component parameters (`;sf`, `;key=`, `;req`) are not supported.
                Item {
                    bare: BareItem::String(name),
                    ..
                } => return Err(SignatureError::UnsupportedComponent(name)),
                _ => return Err(SignatureError::Malformed("component is not a string")),
            }
        }
        for (name, value) in &params {
            let ok = match name.as_str() {
                "created" | "expires" => matches!(value, BareItem::Integer(_)),
                "keyid" | "nonce" | "alg" | "tag" => matches!(value, BareItem::String(_)),
                _ => false,
            };
            if !ok {
                return Err(SignatureError::InvalidParameter(name.clone()));
            }
        }
        Ok(Self { components, params })
    }
}
