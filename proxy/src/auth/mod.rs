//! Who is connecting: the client's password is a JWT, verified against the
//! configured key source (OpenID discovery + JWKS, a static JWKS file, or the
//! local development issuer). The result is a `Verified` identity with groups.

pub mod dev_issuer;
pub(crate) mod jwt;
pub(crate) mod oidc;

use std::sync::Arc;

use crate::config::{IdentityProvider, KeySource};

pub(crate) use jwt::{TokenError, Verified};

/// Where verification keys come from.
pub(crate) enum Keys {
    Static(Arc<jwt::KeySet>),
    Oidc(oidc::OidcKeys),
}

/// Verifies login tokens; shared by all connections.
pub(crate) struct Authenticator {
    config: IdentityProvider,
    keys: Keys,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("identity.jwks_file {path}: {problem}")]
    JwksFile { path: String, problem: String },
    #[error("identity.dev_issuer: {0}")]
    DevIssuer(String),
    #[error("identity.issuer: {0}")]
    Http(String),
}

impl Authenticator {
    pub fn new(config: IdentityProvider) -> Result<Authenticator, AuthSetupError> {
        let keys = match &config.source {
            KeySource::JwksFile { path, .. } => {
                let text = std::fs::read_to_string(path).map_err(|e| AuthSetupError::JwksFile {
                    path: path.display().to_string(),
                    problem: e.to_string(),
                })?;
                let set =
                    jwt::KeySet::from_json(&text).map_err(|problem| AuthSetupError::JwksFile {
                        path: path.display().to_string(),
                        problem,
                    })?;
                Keys::Static(Arc::new(set))
            }
            KeySource::DevIssuer => {
                let dev = config
                    .dev_issuer
                    .as_ref()
                    .ok_or_else(|| AuthSetupError::DevIssuer("missing".into()))?;
                let issuer = dev_issuer::DevIssuer::from_config(dev, &config)
                    .map_err(AuthSetupError::DevIssuer)?;
                Keys::Static(Arc::new(issuer.key_set()))
            }
            KeySource::Oidc { issuer } => Keys::Oidc(
                oidc::OidcKeys::new(
                    issuer.clone(),
                    config.jwks_min_refresh_interval,
                    config.jwks_max_age,
                )
                .map_err(AuthSetupError::Http)?,
            ),
        };
        Ok(Authenticator { config, keys })
    }

    /// Fetches the OIDC keys once so a misconfigured issuer shows at start.
    pub async fn warm_up(&self) -> Result<(), TokenError> {
        match &self.keys {
            Keys::Static(_) => Ok(()),
            Keys::Oidc(oidc) => oidc.refresh().await.map(|_| ()),
        }
    }

    /// Verifies `token` and returns who it names.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jwt::header_of(token)?;
        let key = match &self.keys {
            Keys::Static(set) => set.select(header.kid.as_deref())?,
            Keys::Oidc(oidc) => oidc.key_for(header.kid.as_deref()).await?,
        };
        jwt::verify_with(token, &header, &key, &self.config)
    }
}
