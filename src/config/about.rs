//! What the admin tells visitors: `server.description`, `server.contact` and
//! `server.rules_url`, shown on the home page and in server-info. They reach
//! every visitor's browser, so they are bounded and a contact or link must
//! be something a person can follow: no `javascript:` link, no credentials
//! in a URL, no control characters that would garble the page.

use reqwest::Url;

use super::{invalid, ConfigError};

/// The longest description, in characters: a few sentences, not a page.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The longest contact: an email address's limit (RFC 5321), which also
/// fits any reasonable contact URL.
pub const MAX_CONTACT_CHARS: usize = 254;
/// The longest rules URL.
pub const MAX_URL_CHARS: usize = 2000;

/// The admin's words about this server; each `None` when left empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    pub description: Option<String>,
    pub contact: Option<Contact>,
    pub rules_url: Option<String>,
}

/// How to reach the server's admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    Email(String),
    Url(String),
}

impl Contact {
    /// As published in server-info: the address or the URL.
    pub fn as_str(&self) -> &str {
        match self {
            Contact::Email(address) | Contact::Url(address) => address,
        }
    }

    /// The link a page makes of it.
    pub fn href(&self) -> String {
        match self {
            Contact::Email(address) => format!("mailto:{address}"),
            Contact::Url(url) => url.clone(),
        }
    }
}

impl About {
    /// Checks the three settings as written.
    pub fn parse(description: &str, contact: &str, rules_url: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            description: parse_description(description)?,
            contact: parse_contact(contact)?,
            rules_url: match rules_url.trim() {
                "" => None,
                text => Some(
                    web_url(text, MAX_URL_CHARS)
                        .map_err(|reason| invalid("server.rules_url", text, reason))?,
                ),
            },
        })
    }
}

fn parse_description(text: &str) -> Result<Option<String>, ConfigError> {
    let text = text.trim().replace("\r\n", "\n");
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(
            "server.description",
            text,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(
            "server.description",
            text,
            "must not hold control characters other than line breaks",
        ));
    }
    Ok(Some(text))
}

fn parse_contact(text: &str) -> Result<Option<Contact>, ConfigError> {
    const EXPECTED: &str = "expected an email address (admin@example.org) or an https:// URL";
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_CONTACT_CHARS {
        return Err(invalid(
            "server.contact",
            text,
            format!("must be at most {MAX_CONTACT_CHARS} characters"),
        ));
    }
    if text.contains("://") {
        return web_url(text, MAX_CONTACT_CHARS)
            .map(|url| Some(Contact::Url(url)))
            .map_err(|reason| invalid("server.contact", text, reason));
    }
    let address = text.strip_prefix("mailto:").unwrap_or(text);
    if is_email(address) {
        Ok(Some(Contact::Email(address.to_string())))
    } else {
        Err(invalid("server.contact", text, EXPECTED))
    }
}

/// A plain `local@domain.tld`: the forms people write on a web page, not
/// every form RFC 5322 allows (no quoted local parts, comments or IP
/// literals), so the page's `mailto:` link needs no escaping beyond HTML's.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// An `https://` URL, or `http://` to this machine (a server tried out
/// locally), without credentials; in its normalised form, which is
/// percent-encoded and so safe in an HTML attribute.
fn web_url(text: &str, max_chars: usize) -> Result<String, String> {
    if text.chars().count() > max_chars {
        return Err(format!("must be at most {max_chars} characters"));
    }
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    let host = url.host_str().unwrap_or("");
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    match url.scheme() {
        "https" if !host.is_empty() => {}
        "http" if local => {}
        "http" => return Err("must be https:// (http:// only for localhost)".into()),
        _ => return Err("must be an https:// URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password".into());
    }
    Ok(url.to_string())
}
