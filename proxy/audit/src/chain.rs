//! The hash chain: one append-only sequence of entries per gateway instance.
//!
//! `hash = SHA-256(prev_hash || canonical bytes)`, where the canonical bytes
//! are the JSON object `{"instance","seq","time_us","kind","session_id",
//! "payload"}` in that order, `payload` being the record's canonical JSON as
//! a string. Changing any stored column, or the order, breaks the link to
//! the next entry; the signed checkpoints pin the head so a rewritten chain
//! shows too.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::Record;
use hoop_common::time::Timestamp;

/// A SHA-256 value; hex in text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// What the first entry of a chain links to.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<ChainHash> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ChainHash(out))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<ChainHash> {
        <[u8; 32]>::try_from(bytes).ok().map(ChainHash)
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ChainHash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("not a SHA-256 hex value"))
    }
}

/// One stored entry of a chain, exactly as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub instance: String,
    pub seq: u64,
    pub time: Timestamp,
    pub kind: String,
    pub session_id: Option<String>,
    /// The record's canonical JSON (masked).
    pub payload: String,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
}

/// The fields an entry's hash covers, in their fixed order.
#[derive(Serialize)]
struct CanonicalEntry<'a> {
    instance: &'a str,
    seq: u64,
    time_us: i64,
    kind: &'a str,
    session_id: Option<&'a str>,
    payload: &'a str,
}

impl Entry {
    /// Builds the entry that follows `prev_hash` at `seq`.
    pub(crate) fn seal(
        instance: &str,
        seq: u64,
        time: Timestamp,
        kind: &str,
        session_id: Option<&str>,
        payload: String,
        prev_hash: ChainHash,
    ) -> Entry {
        let mut entry = Entry {
            instance: instance.to_owned(),
            seq,
            time,
            kind: kind.to_owned(),
            session_id: session_id.map(str::to_owned),
            payload,
            prev_hash,
            hash: ChainHash::GENESIS,
        };
        entry.hash = entry.compute_hash();
        entry
    }

    fn canonical(&self) -> CanonicalEntry<'_> {
        CanonicalEntry {
            instance: &self.instance,
            seq: self.seq,
            time_us: self.time.unix_micros(),
            kind: &self.kind,
            session_id: self.session_id.as_deref(),
            payload: &self.payload,
        }
    }

    /// The canonical bytes the hash covers (after `prev_hash`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec(&self.canonical()).unwrap_or_default()
    }

    /// `SHA-256(prev_hash || canonical bytes)` from the stored columns.
    pub fn compute_hash(&self) -> ChainHash {
        let mut hasher = HashWriter(Sha256::new());
        hasher.0.update(self.prev_hash.0);
        // Streamed into the hash (every entry is sealed, and every one
        // verified): no copy of the canonical bytes. Writing to a hasher
        // cannot fail.
        let _ = serde_json::to_writer(&mut hasher, &self.canonical());
        ChainHash(hasher.0.finalize().into())
    }

    /// The decoded record, if the payload is well formed.
    pub fn record(&self) -> serde_json::Result<Record> {
        Record::decode(&self.kind, &self.payload)
    }
}

/// Feeds serialised bytes straight into a hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a chain currently ends: the next entry gets `last_seq + 1` and
/// links to `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainHead {
    pub last_seq: u64,
    pub head: ChainHash,
    pub last_time: Timestamp,
}

impl ChainHead {
    pub fn empty() -> ChainHead {
        ChainHead {
            last_seq: 0,
            head: ChainHash::GENESIS,
            last_time: Timestamp::from_unix_micros(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_column() {
        let entry = Entry::seal(
            "gw-1",
            1,
            Timestamp::from_unix_micros(1),
            "statement",
            Some("s1"),
            "{}".into(),
            ChainHash::GENESIS,
        );
        assert_eq!(entry.compute_hash(), entry.hash);
        let mut whole = Sha256::new();
        whole.update(entry.prev_hash.0);
        whole.update(entry.canonical_bytes());
        assert_eq!(
            ChainHash(whole.finalize().into()),
            entry.hash,
            "the streamed hash covers the canonical bytes"
        );
        let mut changed = entry.clone();
        changed.seq = 2;
        assert_ne!(changed.compute_hash(), entry.hash);
        let mut changed = entry.clone();
        changed.session_id = Some("s2".into());
        assert_ne!(changed.compute_hash(), entry.hash);
        let mut changed = entry.clone();
        changed.time = Timestamp::from_unix_micros(2);
        assert_ne!(changed.compute_hash(), entry.hash);
        assert_eq!(ChainHash::from_hex(&entry.hash.to_hex()), Some(entry.hash));
    }
}
