//! The device's own state, in one directory: who it is, its keys (readable
//! only by the user), its session, the pinned account keys of contacts and
//! the messages it received. Messages removed from the server live here,
//! and so do those it could not accept yet (held) or ever (quarantined):
//! nothing is acknowledged to the server before it is written here. Sent
//! messages whose remote recipients' servers have not answered yet are
//! kept too (`Outgoing`), so they can be encrypted again.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::SyncItem;

/// Why the local state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no identity in {0}: run `homing init ALIAS@SERVER` first")]
    NotInitialised(PathBuf),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

fn io(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// Who this device is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub address: String,
    pub server_url: String,
    pub account_key: String,
    pub device_id: String,
}

/// The bearer token of the current session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub token: String,
    pub expires_at: i64,
}

/// A pinned contact: the account key first seen for an address, and the
/// highest device list version seen under that key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contact {
    pub account_key: String,
    pub pinned_at: i64,
    /// A server that serves a lower version is rolling the list back (to
    /// bring a revoked device back); stores written before this field
    /// existed read as 0.
    #[serde(default)]
    pub device_list_version: u64,
    /// The account key whose safety number the user compared with the
    /// contact (`homing verify --confirm`), and when. It counts only while
    /// it is still the pinned key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verification>,
}

impl Contact {
    /// Whether the user compared the safety number of the pinned key.
    pub fn is_verified(&self) -> bool {
        self.verified
            .as_ref()
            .is_some_and(|v| v.account_key == self.account_key)
    }
}

/// A safety number compared in person or on a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub account_key: String,
    pub verified_at: i64,
}

/// A delivery kept on the device, still encrypted, because it could not be
/// accepted: held until it can be checked again (the sender's key changed,
/// or its device is not in the list yet), or quarantined for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptMessage {
    /// The delivery exactly as the server handed it over.
    pub item: SyncItem,
    /// The sender the message claims, when it could be decrypted.
    pub claimed_from: Option<String>,
    /// Why it was not accepted, for the person reading the list.
    pub reason: String,
    /// When it was kept here.
    pub kept_at: i64,
}

/// A message received, opened and verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message_id: String,
    pub from: String,
    pub from_device: String,
    pub to: Vec<String>,
    pub sent_at: i64,
    pub received_at: i64,
    pub content_type: String,
    /// The text, for `text/plain`; other content is base64url.
    pub content: String,
}

/// A sent message whose recipients on other servers have not been
/// answered for yet: their server checks the key wraps against their
/// devices only when it arrives. Kept, with what was written, so that a
/// `stale_devices` answer can be met by encrypting it again for the
/// recipient's current devices (federation-spec/mailbox.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    /// The id it was last sent under to the recipients in `waiting`.
    pub message_id: String,
    /// The id it was first sent under, which `homing send` printed.
    pub first_id: String,
    /// How many times it was sent again.
    pub resends: u32,
    /// Remote recipients still waiting for their server's answer, each
    /// with the device ids its key wraps were for.
    pub waiting: BTreeMap<String, Vec<String>>,
    /// Every addressee, as written in the message.
    pub to: Vec<String>,
    /// When it was written (Unix ms), as written in the message.
    pub sent_at: i64,
    pub thread: Option<String>,
    pub content_type: String,
    /// The content, base64url.
    pub content: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// `--home`, else `HOMING_HOME`, else `$XDG_DATA_HOME/homing`, else
    /// `~/.local/share/homing`.
    pub fn locate(explicit: Option<PathBuf>) -> Self {
        let dir = explicit
            .or_else(|| std::env::var_os("HOMING_HOME").map(PathBuf::from))
            .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("homing")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/homing"))
            })
            .unwrap_or_else(|| PathBuf::from(".homing"));
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self) -> bool {
        self.path("identity.json").exists()
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Writes atomically (temp file, then rename) with mode 0600, so a crash
    /// never leaves half a key file and nobody else can read it.
    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        restrict_dir(&self.dir)?;
        let path = self.path(name);
        let temp = self.path(&format!(".{name}.tmp"));
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| io(&path, e))?;
        let mut file = open_private(&temp)?;
        file.write_all(&bytes).map_err(|e| io(&temp, e))?;
        file.sync_all().map_err(|e| io(&temp, e))?;
        fs::rename(&temp, &path).map_err(|e| io(&path, e))
    }

    pub fn identity(&self) -> Result<Identity, StoreError> {
        self.read("identity.json")?
            .ok_or_else(|| StoreError::NotInitialised(self.dir.clone()))
    }

    pub fn save_identity(&self, identity: &Identity) -> Result<(), StoreError> {
        self.write("identity.json", identity)
    }

    /// A secret file (device keys, account key), as stored.
    pub fn secret(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.read(name)
    }

    pub fn save_secret(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.write(name, value)
    }

    pub fn session(&self) -> Result<Option<Session>, StoreError> {
        self.read("session.json")
    }

    pub fn save_session(&self, session: &Session) -> Result<(), StoreError> {
        self.write("session.json", session)
    }

    pub fn contacts(&self) -> Result<BTreeMap<String, Contact>, StoreError> {
        Ok(self.read("contacts.json")?.unwrap_or_default())
    }

    pub fn save_contacts(&self, contacts: &BTreeMap<String, Contact>) -> Result<(), StoreError> {
        self.write("contacts.json", contacts)
    }

    /// The sync cursor up to which messages were processed.
    pub fn cursor(&self) -> Result<i64, StoreError> {
        Ok(self.read::<i64>("cursor.json")?.unwrap_or(0))
    }

    pub fn save_cursor(&self, cursor: i64) -> Result<(), StoreError> {
        self.write("cursor.json", &cursor)
    }

    /// Where `reader` (`status`, `inbox`) stopped reading the delivery
    /// feed; each reads it on its own.
    pub fn feed_cursor(&self, reader: &str) -> Result<Option<String>, StoreError> {
        self.read::<String>(&format!("feed-cursor-{reader}.json"))
    }

    pub fn save_feed_cursor(&self, reader: &str, cursor: &str) -> Result<(), StoreError> {
        self.write(&format!("feed-cursor-{reader}.json"), &cursor)
    }

    /// Appends received messages (one JSON object per line) that are not
    /// stored yet, flushed to disk before the caller acknowledges them to
    /// the server. A server may hand a message over again (an earlier
    /// acknowledgement was lost), so ids already stored are skipped.
    pub fn append_messages(&self, messages: &[StoredMessage]) -> Result<(), StoreError> {
        let known: HashSet<String> = self.messages()?.into_iter().map(|m| m.message_id).collect();
        let fresh: Vec<&StoredMessage> = messages
            .iter()
            .filter(|m| !known.contains(&m.message_id))
            .collect();
        self.append_lines("messages.jsonl", &fresh)
    }

    /// Every message received so far.
    pub fn messages(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.read_lines("messages.jsonl")
    }

    /// Appends refused deliveries to the quarantine (skipping ids already
    /// there), flushed before they are acknowledged.
    pub fn quarantine(&self, kept: &[KeptMessage]) -> Result<(), StoreError> {
        let known: HashSet<String> = self
            .quarantined()?
            .into_iter()
            .map(|k| k.item.message_id)
            .collect();
        let fresh: Vec<&KeptMessage> = kept
            .iter()
            .filter(|k| !known.contains(&k.item.message_id))
            .collect();
        self.append_lines("quarantine.jsonl", &fresh)
    }

    /// Deliveries refused for good, with the reason.
    pub fn quarantined(&self) -> Result<Vec<KeptMessage>, StoreError> {
        self.read_lines("quarantine.jsonl")
    }

    /// Deliveries waiting on the device until they can be checked again.
    pub fn held(&self) -> Result<Vec<KeptMessage>, StoreError> {
        Ok(self.read("held.json")?.unwrap_or_default())
    }

    /// Replaces the held deliveries (written atomically).
    pub fn save_held(&self, held: &[KeptMessage]) -> Result<(), StoreError> {
        self.write("held.json", &held)
    }

    /// Sent messages awaiting remote answers.
    pub fn outgoing(&self) -> Result<Vec<Outgoing>, StoreError> {
        Ok(self.read("outgoing.json")?.unwrap_or_default())
    }

    /// Replaces the sent messages awaiting remote answers (written
    /// atomically, readable only by the user: they hold plaintext).
    pub fn save_outgoing(&self, outgoing: &[Outgoing]) -> Result<(), StoreError> {
        self.write("outgoing.json", &outgoing)
    }

    fn append_lines<T: Serialize>(&self, name: &str, values: &[T]) -> Result<(), StoreError> {
        if values.is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.path(name);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        restrict_file(&path)?;
        let mut lines = Vec::new();
        for value in values {
            serde_json::to_writer(&mut lines, value).map_err(|e| io(&path, e))?;
            lines.push(b'\n');
        }
        file.write_all(&lines).map_err(|e| io(&path, e))?;
        file.sync_all().map_err(|e| io(&path, e))
    }

    /// The lines of an append-only file; a line cut short by a crash is
    /// skipped, not fatal.
    fn read_lines<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>, StoreError> {
        let path = self.path(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path, e)),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> Result<fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> Result<fs::File, StoreError> {
    fs::File::create(path).map_err(|e| io(path, e))
}

#[cfg(unix)]
fn restrict_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| io(path, e))
}

#[cfg(not(unix))]
fn restrict_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(unix)]
fn restrict_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|e| io(path, e))
}

#[cfg(not(unix))]
fn restrict_dir(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Contact;

    #[test]
    fn safety_number_verification_counts_only_for_the_pinned_key() {
        // A contact stored before verification existed reads as unverified.
        let old = r#"{"account_key":"k1","pinned_at":1,"device_list_version":2}"#;
        let mut contact: Contact = serde_json::from_str(old).unwrap();
        assert!(!contact.is_verified());
        contact.verified = Some(super::Verification {
            account_key: "k1".into(),
            verified_at: 3,
        });
        assert!(contact.is_verified());
        contact.account_key = "k2".into();
        assert!(!contact.is_verified());
    }
}
