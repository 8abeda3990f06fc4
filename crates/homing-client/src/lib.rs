//! The client library: what a device does with its keys and how it talks to
//! its home server; and `cli`, the `homing` command built on it. The
//! server's tests and `examples/` use it too. It shares the wire types with
//! the server through `homing-proto` and links no server code.
#![forbid(unsafe_code)]

pub use homing_proto::{address, crypto, push, time, wire};

pub mod api;
pub mod cli;
pub mod keys;
pub mod media_type;
pub mod network;
pub mod store;

/// A fresh message id: the time in milliseconds as 12 hex digits, then 15
/// random bytes in base64url (32 characters in all).
///
/// Ids that grow with time land next to each other in the server's indexes
/// (the message, its receipts and its idempotency record are all keyed by
/// it), so a burst of sends touches a few index pages instead of one random
/// page per index and message. Servers accept any id the protocol allows;
/// this is what Homing's own clients send. It starts with a digit, so it
/// never reads as a command-line option.
pub fn new_message_id() -> String {
    let millis = crate::time::now_ms().clamp(0, 0xffff_ffff_ffff);
    format!(
        "{millis:012x}{}",
        crate::crypto::b64(&rand::random::<[u8; 15]>())
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_valid_and_sort_by_time() {
        let first = super::new_message_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = super::new_message_id();
        assert!(crate::wire::valid_message_id(&first), "{first}");
        assert_eq!(first.len(), 32);
        assert!(first < second, "{first} then {second}");
        assert_ne!(first[12..], second[12..]);
    }
}
