//! Who is behind a session: what the gateway learnt from a verified token.
//! The policy decides on it, the audit trail records it.

use serde::{Deserialize, Serialize};

/// A verified agent (or person): issuer and subject of its token, the OAuth
/// client it was issued to, and its groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// `azp`/`client_id` of the token, when present.
    pub client_id: Option<String>,
    pub groups: Vec<String>,
}

impl Identity {
    /// An identity known only by subject and groups (tests, examples, and
    /// the review hub's check of a replacement statement).
    pub fn named(subject: impl Into<String>, groups: &[&str]) -> Identity {
        Identity {
            subject: subject.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Identity::default()
        }
    }
}
