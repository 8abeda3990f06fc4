//! What the Homing server and its clients share: addresses, keys and the
//! canonical encoding of everything signed, message envelopes, the client
//! API's wire types, and the DNS resolver. Nothing here knows about HTTP
//! servers or databases, so a client can link it without carrying either.
#![forbid(unsafe_code)]

pub mod address;
pub mod crypto;
pub mod dns;
pub mod documents;
pub mod federation;
pub mod push;
pub mod time;
pub mod wire;
