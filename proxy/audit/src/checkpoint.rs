//! Signed checkpoints: an Ed25519 signature over (instance, chain length,
//! head hash, time, kind). They pin the chain, so rewriting history or
//! cutting off its tail is detected by anyone holding only the public key.
//!
//! A `purge_anchor` checkpoint is written when old entries are purged: it
//! records the hash the remaining chain starts from, so what remains is
//! still verifiable from a signed starting point.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::chain::ChainHash;
use crate::error::{AuditError, Result};
use hoop_common::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Written every `checkpoint_interval` while records arrive.
    Periodic,
    /// Written on request ([`crate::AuditStore::checkpoint`]).
    Manual,
    /// Written when the store closes.
    Shutdown,
    /// Written when entries up to `length` were purged; the remaining chain
    /// links to `head_hash`.
    PurgeAnchor,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Periodic => "periodic",
            CheckpointKind::Manual => "manual",
            CheckpointKind::Shutdown => "shutdown",
            CheckpointKind::PurgeAnchor => "purge_anchor",
        }
    }

    pub fn parse(text: &str) -> Option<CheckpointKind> {
        [
            CheckpointKind::Periodic,
            CheckpointKind::Manual,
            CheckpointKind::Shutdown,
            CheckpointKind::PurgeAnchor,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub instance: String,
    pub kind: CheckpointKind,
    /// Sequence number of the last entry covered (0: empty chain).
    pub length: u64,
    /// Hash of entry `length` (genesis for an empty chain).
    pub head_hash: ChainHash,
    pub time: Timestamp,
    pub key_id: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

/// The bytes a checkpoint signature covers.
#[derive(Serialize)]
struct SignedFields<'a> {
    domain: &'static str,
    instance: &'a str,
    kind: &'static str,
    length: u64,
    head_hash: String,
    time_us: i64,
    key_id: &'a str,
}

impl Checkpoint {
    fn signed_bytes(&self) -> Vec<u8> {
        let fields = SignedFields {
            domain: "hoop-audit checkpoint v1",
            instance: &self.instance,
            kind: self.kind.as_str(),
            length: self.length,
            head_hash: self.head_hash.to_hex(),
            time_us: self.time.unix_micros(),
            key_id: &self.key_id,
        };
        serde_json::to_vec(&fields).unwrap_or_default()
    }

    /// Checks the signature against the trusted keys.
    pub fn verify_signature(&self, keys: &CheckpointKeys) -> Result<(), SignatureProblem> {
        let key = keys
            .keys
            .get(&self.key_id)
            .ok_or(SignatureProblem::UnknownKeyId)?;
        let bytes = BASE64
            .decode(self.signature.as_bytes())
            .map_err(|_| SignatureProblem::BadSignature)?;
        let signature =
            Signature::from_slice(&bytes).map_err(|_| SignatureProblem::BadSignature)?;
        key.verify(&self.signed_bytes(), &signature)
            .map_err(|_| SignatureProblem::BadSignature)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureProblem {
    UnknownKeyId,
    BadSignature,
}

/// The private key that signs checkpoints; only the writing gateway has it.
#[derive(Clone)]
pub struct CheckpointSigner {
    key_id: String,
    key: SigningKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    pub fn from_seed(key_id: &str, seed: &[u8; 32]) -> CheckpointSigner {
        CheckpointSigner {
            key_id: key_id.to_owned(),
            key: SigningKey::from_bytes(seed),
        }
    }

    /// A key file's text: base64 of the 32-byte seed, whitespace ignored.
    pub fn from_seed_base64(key_id: &str, text: &str) -> Result<CheckpointSigner> {
        let bytes = BASE64
            .decode(text.trim().as_bytes())
            .map_err(|_| AuditError::Key("checkpoint key is not base64".into()))?;
        let seed = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| AuditError::Key("checkpoint key must be a 32-byte seed".into()))?;
        Ok(CheckpointSigner::from_seed(key_id, &seed))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `key_id:base64(public key)`, one line of a public key file.
    pub fn public_key_entry(&self) -> String {
        format!(
            "{}:{}",
            self.key_id,
            BASE64.encode(self.key.verifying_key().as_bytes())
        )
    }

    /// The public half, for readers and exports.
    pub fn public_keys(&self) -> CheckpointKeys {
        let mut keys = CheckpointKeys::default();
        keys.keys
            .insert(self.key_id.clone(), self.key.verifying_key());
        keys
    }

    pub(crate) fn sign(
        &self,
        instance: &str,
        kind: CheckpointKind,
        length: u64,
        head_hash: ChainHash,
        time: Timestamp,
    ) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            instance: instance.to_owned(),
            kind,
            length,
            head_hash,
            time,
            key_id: self.key_id.clone(),
            signature: String::new(),
        };
        let signature = self.key.sign(&checkpoint.signed_bytes());
        checkpoint.signature = BASE64.encode(signature.to_bytes());
        checkpoint
    }
}

/// Public keys trusted to sign checkpoints, by key id.
#[derive(Debug, Clone, Default)]
pub struct CheckpointKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl CheckpointKeys {
    /// Parses `key_id:base64` entries separated by whitespace or commas
    /// (the format of [`CheckpointSigner::public_key_entry`]); `#` starts a
    /// comment line.
    pub fn parse(text: &str) -> Result<CheckpointKeys> {
        let mut keys = CheckpointKeys::default();
        let entries = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|entry| !entry.is_empty());
        for entry in entries {
            let (key_id, encoded) = entry
                .split_once(':')
                .ok_or_else(|| AuditError::Key(format!("{entry:?} is not key_id:base64")))?;
            let bytes = BASE64
                .decode(encoded.as_bytes())
                .map_err(|_| AuditError::Key(format!("key {key_id:?} is not base64")))?;
            let bytes = <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| AuditError::Key(format!("key {key_id:?} is not 32 bytes")))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| AuditError::Key(format!("key {key_id:?} is not an Ed25519 key")))?;
            if keys.keys.insert(key_id.to_owned(), key).is_some() {
                return Err(AuditError::Key(format!("key id {key_id:?} appears twice")));
            }
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// One `key_id:base64` line per key.
    pub fn to_text(&self) -> String {
        self.keys
            .iter()
            .map(|(id, key)| format!("{id}:{}\n", BASE64.encode(key.as_bytes())))
            .collect()
    }

    /// Adds the keys of `other` (rotation: old and new keys together).
    pub fn extend(&mut self, other: &CheckpointKeys) {
        self.keys
            .extend(other.keys.iter().map(|(id, key)| (id.clone(), *key)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_key_and_fields() {
        let signer = CheckpointSigner::from_seed("k1", &[7; 32]);
        let keys = CheckpointKeys::parse(&signer.public_key_entry()).expect("keys parse");
        let checkpoint = signer.sign(
            "gw-1",
            CheckpointKind::Periodic,
            5,
            ChainHash([1; 32]),
            Timestamp::from_unix_micros(10),
        );
        assert_eq!(checkpoint.verify_signature(&keys), Ok(()));

        let mut forged = checkpoint.clone();
        forged.length = 4;
        assert_eq!(
            forged.verify_signature(&keys),
            Err(SignatureProblem::BadSignature)
        );
        let other = CheckpointSigner::from_seed("k2", &[8; 32]);
        assert_eq!(
            checkpoint.verify_signature(&other.public_keys()),
            Err(SignatureProblem::UnknownKeyId)
        );
        assert_eq!(
            CheckpointKeys::parse(&keys.to_text())
                .expect("round trip")
                .to_text(),
            keys.to_text()
        );
    }
}
