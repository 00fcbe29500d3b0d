//! The session token: how the gateway tells the extension who is on an
//! upstream connection and what that session may see.
//!
//! Wire format: `hoop1.<base64url(claims JSON)>.<base64url(signature)>`, no
//! padding, the Ed25519 signature covering the bytes `hoop1.<base64url(claims
//! JSON)>`. The gateway holds the private key; the database holds only public
//! keys (`hoop.trusted_keys`, several at once so keys can rotate), so a
//! compromised database cannot mint sessions. The token names the backend pid
//! it was issued for, so a token copied to another connection is worthless.
//!
//! Verification is strict and ordered so that as little as possible is
//! believed before the signature is checked: size, structure and base64
//! first, then only the key id is read from the claims, then the signature,
//! and only then the claims themselves (unknown or missing fields rejected),
//! their version, their validity period and the pid.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::names;

pub const TOKEN_VERSION: u32 = 1;

/// Longest token accepted. Real tokens are a few hundred bytes; the limit
/// keeps a hostile `SET hoop.session` from making the backend decode
/// megabytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How far in the future `iat` may be, for clocks that disagree a little.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// Longest key id. Key ids appear in error messages and logs, so they are
/// kept short and printable.
const MAX_KEY_ID_LEN: usize = 64;

const TOKEN_PREFIX: &str = "hoop1.";

/// Claims of a gateway session, signed by the gateway, verified by the
/// extension. Unknown fields are rejected: a claim this version does not
/// understand may be one it should have enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionClaims {
    /// [`TOKEN_VERSION`].
    pub v: u32,
    /// Key id of the signing key.
    pub kid: String,
    /// Session id chosen by the gateway (e.g. 32 hex characters).
    pub sid: String,
    /// OIDC subject.
    pub sub: String,
    pub groups: Vec<String>,
    /// Mapped database role.
    pub role: String,
    /// Database name.
    pub db: String,
    /// Upstream backend pid, from BackendKeyData.
    pub pid: i32,
    /// Columns the session may see unmasked, as `schema.table.column`.
    pub unmask: Vec<String>,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
}

impl SessionClaims {
    /// Whether `schema.table.column` is listed in `unmask`. Exact,
    /// case-sensitive comparison of the catalog names: no wildcards, so an
    /// unmask grant never reaches further than it reads.
    pub fn may_unmask(&self, schema: &str, table: &str, column: &str) -> bool {
        self.unmask.iter().any(|entry| {
            let Some(rest) = entry
                .strip_prefix(schema)
                .and_then(|rest| rest.strip_prefix('.'))
            else {
                return false;
            };
            rest.strip_prefix(table)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(column)
        })
    }
}

/// Signs session tokens; lives in the gateway only.
pub struct SessionSigner {
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for SessionSigner {
    /// Key id and public key only: the private key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionSigner")
            .field("kid", &self.kid)
            .field(
                "public_key",
                &STANDARD.encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl SessionSigner {
    /// A signer for an Ed25519 seed (the 32-byte private key). The key id
    /// should be what [`TrustedKeys::parse`] accepts (letters, digits, `.`,
    /// `_`, `-`, at most 64); [`SessionSigner::from_seed_base64`] checks it.
    pub fn from_seed(kid: &str, seed: &[u8; 32]) -> SessionSigner {
        SessionSigner {
            kid: kid.to_owned(),
            key: SigningKey::from_bytes(seed),
        }
    }

    /// Parses a key file's text: standard base64 of the 32-byte seed,
    /// surrounding whitespace ignored.
    pub fn from_seed_base64(kid: &str, text: &str) -> Result<SessionSigner, KeyError> {
        check_key_id(kid)?;
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| {
            KeyError::Malformed(format!(
                "the private key for key id {kid:?} is not standard base64"
            ))
        })?);
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(decoded.as_slice().try_into().map_err(|_| {
                KeyError::Malformed(format!(
                    "the private key for key id {kid:?} is {} bytes, expected 32",
                    decoded.len()
                ))
            })?);
        Ok(SessionSigner::from_seed(kid, &seed))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `kid:base64(public key)`, exactly one entry of `hoop.trusted_keys`.
    pub fn trusted_key_entry(&self) -> String {
        format!(
            "{}:{}",
            self.kid,
            STANDARD.encode(self.key.verifying_key().as_bytes())
        )
    }

    /// The token for `claims`, with `kid` set to this signer's key id (so a
    /// token can never name a key other than the one that signed it). Set
    /// `v` to [`TOKEN_VERSION`]; other versions are refused by verifiers.
    pub fn sign(&self, claims: &SessionClaims) -> String {
        let mut claims = claims.clone();
        claims.kid.clone_from(&self.kid);
        // Strings, integers and lists of strings always serialize.
        let json = serde_json::to_vec(&claims).expect("session claims serialize to JSON");
        let mut token = String::with_capacity(TOKEN_PREFIX.len() + json.len() * 4 / 3 + 90);
        token.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        token
    }
}

/// Parsed `hoop.trusted_keys`: the public keys whose sessions are accepted.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.key_ids()).finish()
    }
}

impl TrustedKeys {
    /// Comma- or whitespace-separated `kid:base64(public key)` entries
    /// (standard base64 with padding, as [`SessionSigner::trusted_key_entry`]
    /// writes them). Empty text means no keys. Any bad entry rejects the whole
    /// setting rather than silently trusting fewer keys than intended.
    pub fn parse(text: &str) -> Result<TrustedKeys, KeyError> {
        let mut keys: Vec<(String, VerifyingKey)> = Vec::new();
        let entries = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let number = index + 1;
            // Messages name the entry by position and key id, never by its
            // key text, in case a private key was pasted by mistake.
            let (kid, encoded) = entry.split_once(':').ok_or_else(|| {
                KeyError::Malformed(format!(
                    "entry {number} of {} is not \"kid:base64-public-key\"",
                    names::GUC_TRUSTED_KEYS
                ))
            })?;
            check_key_id(kid)?;
            let bytes = STANDARD.decode(encoded).map_err(|_| {
                KeyError::Malformed(format!(
                    "the public key of key id {kid:?} is not standard base64"
                ))
            })?;
            let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                KeyError::Malformed(format!(
                    "the public key of key id {kid:?} is {} bytes, expected 32",
                    bytes.len()
                ))
            })?;
            let key = VerifyingKey::from_bytes(&bytes)
                .ok()
                .filter(|key| !key.is_weak())
                .ok_or_else(|| {
                    KeyError::Malformed(format!(
                        "the public key of key id {kid:?} is not a usable Ed25519 public key"
                    ))
                })?;
            if keys.iter().any(|(known, _)| known == kid) {
                return Err(KeyError::DuplicateKeyId(kid.to_owned()));
            }
            keys.push((kid.to_owned(), key));
        }
        Ok(TrustedKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The configured key ids, in configuration order (for messages and
    /// diagnostics).
    pub fn key_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    /// Checks format, version, key id, signature, expiry (`exp > now`,
    /// `iat <= now + 60`) and that the token was issued for `expected_pid`.
    /// Any malformed input is an error, never a panic.
    pub fn verify(
        &self,
        token: &str,
        expected_pid: i32,
        now_unix: i64,
    ) -> Result<SessionClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("the token is longer than 16 KiB"));
        }
        let Some(rest) = token.strip_prefix(TOKEN_PREFIX) else {
            return Err(match version_in_prefix(token) {
                Some(version) => TokenError::UnsupportedVersion(version),
                None => TokenError::Malformed("the token does not start with \"hoop1.\""),
            });
        };
        let (claims_b64, signature_b64) = rest
            .split_once('.')
            .ok_or(TokenError::Malformed("the token has no signature part"))?;
        if signature_b64.contains('.') {
            return Err(TokenError::Malformed("the token has more than three parts"));
        }
        let signed = token
            .get(..TOKEN_PREFIX.len() + claims_b64.len())
            .ok_or(TokenError::Malformed("the token has no claims part"))?;
        let signature = decode_signature(signature_b64)?;
        let claims_json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| TokenError::Malformed("the claims part is not base64url"))?;

        // The key id is the only thing read before the signature is checked.
        #[derive(Deserialize)]
        struct KeyIdOnly {
            kid: String,
        }
        let KeyIdOnly { kid } = serde_json::from_slice(&claims_json)
            .map_err(|_| TokenError::Malformed("the claims are not a JSON object with a key id"))?;
        if check_key_id(&kid).is_err() {
            return Err(TokenError::Malformed("the key id is not a valid key id"));
        }
        let key = self
            .keys
            .iter()
            .find_map(|(known, key)| (*known == kid).then_some(key))
            .ok_or(TokenError::UnknownKeyId(kid))?;
        key.verify_strict(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;

        let claims: SessionClaims = serde_json::from_slice(&claims_json).map_err(|_| {
            TokenError::Malformed("the claims do not have exactly the session claim fields")
        })?;
        if claims.v != TOKEN_VERSION {
            return Err(TokenError::UnsupportedVersion(claims.v));
        }
        if claims.exp <= now_unix {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now: now_unix,
            });
        }
        if claims.iat > now_unix.saturating_add(CLOCK_SKEW_SECS) {
            return Err(TokenError::NotYetValid {
                iat: claims.iat,
                now: now_unix,
            });
        }
        if claims.pid != expected_pid {
            return Err(TokenError::WrongBackend {
                token_pid: claims.pid,
                backend_pid: expected_pid,
            });
        }
        Ok(claims)
    }
}

fn decode_signature(encoded: &str) -> Result<Signature, TokenError> {
    // 64 bytes are 86 base64url characters; refuse anything else before
    // decoding.
    if encoded.len() != 86 {
        return Err(TokenError::Malformed("the signature is not 64 bytes"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
    let bytes: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| TokenError::Malformed("the signature is not 64 bytes"))?;
    Ok(Signature::from_bytes(&bytes))
}

/// The version of a token of another format, `hoopN.`, so that a gateway
/// newer than the extension gets a precise error.
fn version_in_prefix(token: &str) -> Option<u32> {
    let (head, _) = token.split_once('.')?;
    let digits = head.strip_prefix("hoop")?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Key ids go into `kid:key` lists and error messages: non-empty, at most 64
/// of `A-Z a-z 0-9 . _ -`.
fn check_key_id(kid: &str) -> Result<(), KeyError> {
    let valid = !kid.is_empty()
        && kid.len() <= MAX_KEY_ID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(KeyError::Malformed(format!(
            "key id {:?} must be 1 to {MAX_KEY_ID_LEN} letters, digits, '.', '_' or '-'",
            kid.chars().take(MAX_KEY_ID_LEN).collect::<String>()
        )))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Malformed(String),
    DuplicateKeyId(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Malformed(why) => write!(f, "invalid hoop key: {why}"),
            KeyError::DuplicateKeyId(kid) => write!(
                f,
                "key id {kid:?} appears more than once in {}; give every key its own id",
                names::GUC_TRUSTED_KEYS
            ),
        }
    }
}

impl std::error::Error for KeyError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    UnsupportedVersion(u32),
    UnknownKeyId(String),
    BadSignature,
    Expired { exp: i64, now: i64 },
    NotYetValid { iat: i64, now: i64 },
    WrongBackend { token_pid: i32, backend_pid: i32 },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let session = names::GUC_SESSION;
        let trusted = names::GUC_TRUSTED_KEYS;
        match self {
            TokenError::Malformed(why) => write!(
                f,
                "{session} does not hold a valid hoop session token ({why}); connect through the hoop gateway"
            ),
            TokenError::UnsupportedVersion(version) => write!(
                f,
                "the hoop session token has format version {version}, but this extension understands version {TOKEN_VERSION}; run matching versions of the gateway and the extension"
            ),
            TokenError::UnknownKeyId(kid) => write!(
                f,
                "the hoop session token is signed with key id {kid:?}, which is not in {trusted}; add the gateway's public key entry (kid:key) to {trusted} and reload the configuration"
            ),
            TokenError::BadSignature => write!(
                f,
                "the hoop session token's signature does not match the key named in it; the token was altered or the key in {trusted} is not the gateway's"
            ),
            TokenError::Expired { exp, now } => write!(
                f,
                "the hoop session token expired at {exp} (unix time, now {now}); reconnect through the gateway for a new session"
            ),
            TokenError::NotYetValid { iat, now } => write!(
                f,
                "the hoop session token is issued at {iat}, more than {CLOCK_SKEW_SECS} s after now ({now}); check that the gateway and database clocks agree"
            ),
            TokenError::WrongBackend { token_pid, backend_pid } => write!(
                f,
                "the hoop session token was issued for backend pid {token_pid}, not this one ({backend_pid}); a token cannot be reused on another connection"
            ),
        }
    }
}

impl std::error::Error for TokenError {}
