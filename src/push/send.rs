//! One Web Push request (RFC 8030): the wake-up encrypted for the device
//! with `aes128gcm` (RFC 8291, by `web-push-native`), signed with VAPID,
//! and what the push service's answer means for the queue.

use std::time::Duration;

use homing_proto::push::WakeUp;

use super::vapid::VapidKey;

/// Push services replace a stored message with a newer one of the same
/// topic (RFC 8030, section 5.4): a device that was off gets one wake-up,
/// not one per message.
const TOPIC: &str = "homing-mail";

/// What the push service's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 201 (or another 2xx): the push service has it.
    Accepted,
    /// 404 or 410: the subscription expired or was cancelled.
    Gone,
    /// 429: slow down, for `Retry-After` when it says.
    SlowDown(Option<Duration>),
    /// Another 4xx or a redirect: this request will not be taken.
    Refused(u16),
    /// A 5xx, a time-out or no connection: worth trying again.
    Failed(String),
    /// The stored keys cannot be encrypted to (checked when stored, so
    /// only a damaged row): never sent.
    Unencryptable,
}

/// What one request needs.
pub struct Request<'a> {
    pub client: &'a reqwest::Client,
    pub key: &'a VapidKey,
    /// The VAPID contact: a `mailto:` or `https:` URL.
    pub subject: &'a str,
    pub ttl: Duration,
    pub timeout: Duration,
}

/// Encrypts the wake-up for `cursor` to the device's keys and posts it.
pub async fn post(
    request: &Request<'_>,
    endpoint: &reqwest::Url,
    p256dh: &[u8],
    auth: &[u8],
    cursor: i64,
) -> Answer {
    let Some(body) = encrypt(p256dh, auth, cursor) else {
        return Answer::Unencryptable;
    };
    let audience = endpoint.origin().ascii_serialization();
    let now = crate::time::now_ms() / 1000;
    let sent = request
        .client
        .post(endpoint.clone())
        .header("TTL", request.ttl.as_secs().to_string())
        .header("Urgency", "high")
        .header("Topic", TOPIC)
        .header("Content-Encoding", "aes128gcm")
        .header("Content-Type", "application/octet-stream")
        .header(
            "Authorization",
            request.key.authorization(&audience, request.subject, now),
        )
        .body(body)
        .timeout(request.timeout)
        .send()
        .await;
    match sent {
        Ok(response) => answer(response.status().as_u16(), retry_after(&response)),
        // Without the URL: an endpoint is a capability, kept out of logs.
        Err(error) => Answer::Failed(crate::federation::resolver::error_chain(
            &error.without_url(),
        )),
    }
}

/// The wake-up's body for the device: `{"type":"dm_notify","cursor":N}`,
/// encrypted as one `aes128gcm` record.
fn encrypt(p256dh: &[u8], auth: &[u8], cursor: i64) -> Option<Vec<u8>> {
    let public = web_push_native::p256::PublicKey::from_sec1_bytes(p256dh).ok()?;
    let auth: [u8; 16] = auth.try_into().ok()?;
    let plain = serde_json::to_vec(&WakeUp::new(cursor)).ok()?;
    web_push_native::encrypt(plain, &public, &auth.into()).ok()
}

fn answer(status: u16, retry_after: Option<Duration>) -> Answer {
    match status {
        200..=299 => Answer::Accepted,
        404 | 410 => Answer::Gone,
        429 => Answer::SlowDown(retry_after),
        500..=599 => Answer::Failed(format!("the push service answered {status}")),
        other => Answer::Refused(other),
    }
}

/// `Retry-After` in seconds (the form push services use; an HTTP date is
/// ignored and the usual back-off applies).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get("Retry-After")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_rfc_8030_means_them() {
        assert_eq!(answer(201, None), Answer::Accepted);
        assert_eq!(answer(404, None), Answer::Gone);
        assert_eq!(answer(410, None), Answer::Gone);
        let wait = Some(Duration::from_secs(7));
        assert_eq!(answer(429, wait), Answer::SlowDown(wait));
        assert_eq!(answer(413, None), Answer::Refused(413));
        assert_eq!(answer(302, None), Answer::Refused(302));
        assert!(matches!(answer(503, None), Answer::Failed(_)));
    }

    #[test]
    fn the_wake_up_decrypts_to_the_cursor_and_nothing_else() {
        use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
        let device = web_push_native::p256::SecretKey::random(&mut rand::rngs::OsRng);
        let public = device.public_key().to_encoded_point(false);
        let auth = [7u8; 16];
        let body = encrypt(public.as_bytes(), &auth, 42).unwrap();
        let plain = web_push_native::decrypt(body, &device, &auth.into()).unwrap();
        assert_eq!(plain, br#"{"type":"dm_notify","cursor":42}"#);
    }
}
