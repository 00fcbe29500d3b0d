//! The local development issuer behind `hoop token mint`: an Ed25519 key in a
//! file next to the configuration signs short-lived JWTs the gateway accepts.
//! Only enabled when the configuration has `[identity.dev_issuer]`.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Map, Value};

use super::jwt::{KeySet, VerificationKey};
use crate::config::{DevIssuer as DevIssuerConfig, IdentityProvider};

pub const DEV_KEY_ID: &str = "hoop-dev-1";

pub struct DevIssuer {
    issuer: String,
    audience: String,
    groups_claim: Vec<String>,
    signing: SigningKey,
    pub default_ttl: Duration,
}

impl DevIssuer {
    pub fn from_config(
        dev: &DevIssuerConfig,
        identity: &IdentityProvider,
    ) -> Result<DevIssuer, String> {
        let seed = STANDARD
            .decode(dev.seed_base64.trim())
            .map_err(|e| format!("key file is not base64: {e}"))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| "key file must hold a 32-byte Ed25519 seed".to_owned())?;
        Ok(DevIssuer {
            issuer: dev.issuer.clone(),
            audience: identity.audience.clone(),
            groups_claim: identity.groups_claim.clone(),
            signing: SigningKey::from_bytes(&seed),
            default_ttl: dev.default_ttl,
        })
    }

    /// The public half, as the gateway's verification key set.
    pub(crate) fn key_set(&self) -> KeySet {
        let x = URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes());
        let mut set = KeySet::default();
        if let Ok(key) = DecodingKey::from_ed_components(&x) {
            set.insert(VerificationKey {
                kid: Some(DEV_KEY_ID.into()),
                key: Arc::new(key),
                algorithms: vec![Algorithm::EdDSA],
            });
        }
        set
    }

    /// Signs a token for `subject` with `groups`, valid for `ttl` from `now_unix`.
    pub fn mint(
        &self,
        subject: &str,
        groups: &[String],
        ttl: Duration,
        now_unix: i64,
    ) -> Result<String, String> {
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now_unix,
            "nbf": now_unix,
            "exp": now_unix + ttl.as_secs() as i64,
        });
        // Place groups at the configured claim path, e.g. realm_access.roles.
        let mut node = claims.as_object_mut().ok_or("claims")?;
        let (last, parents) = self.groups_claim.split_last().ok_or("groups claim path")?;
        for part in parents {
            node = node
                .entry(part.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or("groups claim path collides with a standard claim")?;
        }
        node.insert(last.clone(), json!(groups));

        let der = self
            .signing
            .to_pkcs8_der()
            .map_err(|e| format!("encoding the key: {e}"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(DEV_KEY_ID.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))
            .map_err(|e| format!("signing: {e}"))
    }
}
