//! JWT verification: the algorithm must be on the allow-list AND belong to
//! the key's type (no `none`, no HMAC, no RSA/HMAC confusion), then
//! signature, `iss`, `aud`, `exp`, `nbf` with a bounded leeway; groups are
//! read from a configurable claim path.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;

use hoop_common::identity::Identity;

use crate::config::IdentityProvider;

/// A verified token: who it names and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    /// Unix seconds; the session ends here.
    pub expires_at: i64,
}

/// Why a token was refused. The text is shown to the client after
/// "password authentication failed", so it names the problem, not secrets.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the password is not a JWT ({0})")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted")]
    AlgorithmNotAllowed(String),
    #[error("token names key id {0:?}, which the identity provider does not publish")]
    UnknownKeyId(String),
    #[error("token has no key id and the identity provider publishes several keys")]
    MissingKeyId,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued for another audience")]
    WrongAudience,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    #[error("identity provider unreachable: {0}")]
    Provider(String),
}

/// One verification key and the algorithms its type allows.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    pub kid: Option<String>,
    pub key: Arc<DecodingKey>,
    pub algorithms: Vec<Algorithm>,
}

/// Keys indexed by `kid`.
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, VerificationKey>,
    all: Vec<VerificationKey>,
}

/// Algorithms a key of this type may sign with; empty for symmetric keys,
/// which are never accepted.
fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKeyPair(_) | AlgorithmParameters::OctetKey(_) => vec![],
    };
    match jwk
        .common
        .key_algorithm
        .map(|a| a.to_string().parse::<Algorithm>())
    {
        // A key that declares its algorithm may only be used with that one.
        Some(Ok(declared)) => by_type.into_iter().filter(|a| *a == declared).collect(),
        Some(Err(_)) => vec![],
        None => by_type,
    }
}

impl KeySet {
    /// Parses a JWKS document, skipping keys that cannot verify signatures
    /// (encryption keys, symmetric keys, unknown types).
    pub fn from_json(text: &str) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let mut set = KeySet::default();
        for raw in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let algorithms = algorithms_for(&jwk);
            if algorithms.is_empty() {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            set.insert(VerificationKey {
                kid: jwk.common.key_id.clone(),
                key: Arc::new(key),
                algorithms,
            });
        }
        if set.all.is_empty() {
            return Err("no usable signature verification key".into());
        }
        Ok(set)
    }

    pub fn insert(&mut self, key: VerificationKey) {
        if let Some(kid) = &key.kid {
            self.by_kid.insert(kid.clone(), key.clone());
        }
        self.all.push(key);
    }

    /// The key a token's header points at.
    pub fn select(&self, kid: Option<&str>) -> Result<VerificationKey, TokenError> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .cloned()
                .ok_or_else(|| TokenError::UnknownKeyId(kid.to_owned())),
            None if self.all.len() == 1 => Ok(self.all[0].clone()),
            None => Err(TokenError::MissingKeyId),
        }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }
}

/// Decodes the header; `alg: none` and unknown algorithms fail here.
pub(crate) fn header_of(token: &str) -> Result<Header, TokenError> {
    jsonwebtoken::decode_header(token.trim()).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::Json(_) => {
            TokenError::AlgorithmNotAllowed("(unsupported or none)".into())
        }
        _ => TokenError::Malformed(e.to_string()),
    })
}

pub(crate) fn verify_with(
    token: &str,
    header: &Header,
    key: &VerificationKey,
    config: &IdentityProvider,
) -> Result<Verified, TokenError> {
    let alg = header.alg;
    if !key.algorithms.contains(&alg) || !config.algorithms.contains(&alg) {
        return Err(TokenError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_audience(&[config.audience.as_str()]);
    validation.set_issuer(&[config.expected_issuer()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token.trim(), &key.key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => TokenError::BadSignature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidAudience => TokenError::WrongAudience,
            K::InvalidIssuer => TokenError::WrongIssuer,
            K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            K::InvalidAlgorithm => TokenError::AlgorithmNotAllowed(format!("{alg:?}")),
            _ => TokenError::Malformed(e.to_string()),
        }
    })?;
    let claims = data.claims;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TokenError::MissingClaim("sub".into()))?
        .to_owned();
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    Ok(Verified {
        identity: Identity {
            issuer: config.expected_issuer().to_owned(),
            subject,
            client_id: client_id_of(&claims),
            groups: groups_at(&claims, &config.groups_claim),
        },
        expires_at,
    })
}

/// The OAuth client a token was issued to: `azp` (OIDC), else `client_id`
/// (RFC 9068 access tokens).
pub fn client_id_of(claims: &Value) -> Option<String> {
    ["azp", "client_id"]
        .iter()
        .find_map(|claim| claims.get(*claim).and_then(Value::as_str))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Reads groups at a claim path: an array of strings, or one string of
/// space-separated names (like OAuth `scope`). Missing → no groups.
pub fn groups_at(claims: &Value, path: &[String]) -> Vec<String> {
    let mut node = claims;
    for part in path {
        match node.get(part) {
            Some(next) => node = next,
            None => return Vec::new(),
        }
    }
    match node {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_follow_nested_claim_paths() {
        let claims = json!({"realm_access": {"roles": ["a", "b"]}, "scope": "x y"});
        assert_eq!(
            groups_at(&claims, &["realm_access".into(), "roles".into()]),
            vec!["a", "b"]
        );
        assert_eq!(groups_at(&claims, &["scope".into()]), vec!["x", "y"]);
        assert!(groups_at(&claims, &["missing".into()]).is_empty());
    }

    #[test]
    fn the_client_comes_from_azp_or_client_id() {
        assert_eq!(
            client_id_of(&json!({"azp": "ci-runner", "client_id": "other"})).as_deref(),
            Some("ci-runner")
        );
        assert_eq!(
            client_id_of(&json!({"client_id": "agent-app"})).as_deref(),
            Some("agent-app")
        );
        assert_eq!(client_id_of(&json!({"sub": "x"})), None);
    }

    #[test]
    fn symmetric_keys_are_never_usable() {
        let set = KeySet::from_json(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#);
        assert!(set.is_err());
    }

    #[test]
    fn alg_none_is_refused_at_the_header() {
        // {"alg":"none","typ":"JWT"}.{"sub":"x"}.
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.";
        assert!(header_of(token).is_err());
    }
}
