//! `GET /` and `/about`: the page a person reads when picking a home server,
//! built from the same description as server-info, and its stylesheet and
//! script. Everything is compiled into the binary (`src/api/web/`) and the
//! page loads nothing from elsewhere, which the Content-Security-Policy
//! below enforces. All words are in the template; this file only turns
//! numbers into the counts and units the template words.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};
use askama::Template;

use super::server_info::{describe, ServerInfo};
use crate::api::error::ApiError;
use crate::api::AppState;

/// The page may load its own stylesheet, script and look-ups and nothing
/// else: no inline script or style (so admin text that escaped escaping
/// still could not run), no frames, no forms to elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     script-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const STYLESHEET: &str = include_str!("web/home.css");
const SCRIPT: &str = include_str!("web/home.js");

/// The home page's data, as the template reads it.
#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    info: ServerInfo,
    contact_href: Option<String>,
    max_message: Size,
    mailbox_bytes: Size,
    mailbox_messages: String,
    /// The share of a mailbox one sender may fill, in percent.
    sender_share_percent: u32,
    pending_age: Span,
    max_keep: Span,
    device_inactivity: Span,
}

/// A duration in its largest whole unit.
struct Span {
    count: u64,
    unit: Unit,
}

enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl Span {
    fn of_secs(secs: u64) -> Self {
        let (count, unit) = match secs {
            0 => (0, Unit::Seconds),
            s if s.is_multiple_of(86_400) => (s / 86_400, Unit::Days),
            s if s.is_multiple_of(3_600) => (s / 3_600, Unit::Hours),
            s if s.is_multiple_of(60) => (s / 60, Unit::Minutes),
            s => (s, Unit::Seconds),
        };
        Self { count, unit }
    }
}

/// A byte count in its largest binary unit, rounded to one decimal.
struct Size {
    amount: String,
    unit: &'static str,
}

impl Size {
    fn of_bytes(bytes: u64) -> Self {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if bytes < 1024 {
            return Self {
                amount: bytes.to_string(),
                unit: "B",
            };
        }
        let mut value = bytes as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        let amount = format!("{value:.1}");
        Self {
            amount: amount.strip_suffix(".0").unwrap_or(&amount).to_string(),
            unit: UNITS[unit],
        }
    }
}

/// `10000` as `10,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `GET /` and `GET /about`.
pub async fn home(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let info = describe(&state).await?;
    let about = &state.settings.about;
    let page = HomePage {
        contact_href: about.contact.as_ref().map(|c| c.href()),
        max_message: Size::of_bytes(info.limits.max_message_bytes as u64),
        mailbox_bytes: Size::of_bytes(info.limits.max_pending_bytes_per_device),
        mailbox_messages: thousands(info.limits.max_pending_messages_per_device.into()),
        sender_share_percent: (info.limits.max_pending_share_per_origin * 100.0).round() as u32,
        pending_age: Span::of_secs(info.retention.max_pending_age_secs),
        max_keep: Span::of_secs(info.retention.max_keep_secs),
        device_inactivity: Span::of_secs(info.retention.device_inactivity_secs),
        info,
    };
    let html = page.render().map_err(ApiError::internal)?;
    Ok(with_page_headers(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(html))
}

/// `GET /static/home.css`.
pub async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLESHEET)
}

/// `GET /static/home.js`.
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    with_page_headers(HttpResponse::Ok())
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

fn with_page_headers(
    mut response: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    response
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_spans_and_counts_read_well() {
        let size = Size::of_bytes(262_144);
        assert_eq!((size.amount.as_str(), size.unit), ("256", "KiB"));
        let size = Size::of_bytes(268_435_456);
        assert_eq!((size.amount.as_str(), size.unit), ("256", "MiB"));
        let size = Size::of_bytes(1_500_000);
        assert_eq!((size.amount.as_str(), size.unit), ("1.4", "MiB"));
        assert_eq!(Size::of_bytes(100).unit, "B");
        let span = Span::of_secs(30 * 86_400);
        assert!(span.count == 30 && matches!(span.unit, Unit::Days));
        let span = Span::of_secs(90);
        assert!(span.count == 90 && matches!(span.unit, Unit::Seconds));
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
