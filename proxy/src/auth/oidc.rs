//! OpenID discovery and a JWKS cache. An unknown `kid` triggers a refresh
//! (that is how key rotation at the provider is picked up), but refreshes are
//! rate-limited so forged `kid`s cannot turn the gateway into a load
//! generator against the identity provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::jwt::{KeySet, TokenError, VerificationKey};

pub(crate) struct OidcKeys {
    issuer: String,
    http: reqwest::Client,
    min_refresh_interval: Duration,
    max_age: Duration,
    cache: RwLock<Cache>,
    /// Time of the last refresh attempt; held while refreshing so concurrent
    /// logins wait for one fetch instead of each starting their own.
    last_attempt: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Cache {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
}

impl OidcKeys {
    pub fn new(
        issuer: String,
        min_refresh_interval: Duration,
        max_age: Duration,
    ) -> Result<OidcKeys, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OidcKeys {
            issuer,
            http,
            min_refresh_interval,
            max_age,
            cache: RwLock::new(Cache::default()),
            last_attempt: Mutex::new(None),
        })
    }

    pub async fn key_for(&self, kid: Option<&str>) -> Result<VerificationKey, TokenError> {
        {
            let cache = self.cache.read().await;
            if let (Some(keys), Some(at)) = (&cache.keys, cache.fetched_at) {
                if at.elapsed() < self.max_age {
                    if let Ok(key) = keys.select(kid) {
                        return Ok(key);
                    }
                }
            }
        }
        self.refresh_rate_limited().await?;
        let cache = self.cache.read().await;
        match &cache.keys {
            Some(keys) => keys.select(kid),
            None => Err(TokenError::Provider("no keys fetched yet".into())),
        }
    }

    async fn refresh_rate_limited(&self) -> Result<(), TokenError> {
        let mut last = self.last_attempt.lock().await;
        if let Some(at) = *last {
            if at.elapsed() < self.min_refresh_interval {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let mut cache = self.cache.write().await;
                cache.keys = Some(Arc::new(keys));
                cache.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "JWKS refresh failed");
                // Keep serving with the keys we have; without any, fail closed.
                if self.cache.read().await.keys.is_some() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Fetches discovery and the JWKS now (used at start-up).
    pub async fn refresh(&self) -> Result<usize, TokenError> {
        *self.last_attempt.lock().await = Some(Instant::now());
        let keys = self.fetch().await?;
        let n = keys.len();
        let mut cache = self.cache.write().await;
        cache.keys = Some(Arc::new(keys));
        cache.fetched_at = Some(Instant::now());
        Ok(n)
    }

    async fn get_json(&self, url: &str) -> Result<Value, TokenError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| TokenError::Provider(format!("GET {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(TokenError::Provider(format!(
                "GET {url}: HTTP {}",
                response.status()
            )));
        }
        response
            .json::<Value>()
            .await
            .map_err(|e| TokenError::Provider(format!("GET {url}: {e}")))
    }

    async fn fetch(&self) -> Result<KeySet, TokenError> {
        let discovery_url = format!("{}/.well-known/openid-configuration", self.issuer);
        let discovery = self.get_json(&discovery_url).await?;
        let advertised = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('/');
        if advertised != self.issuer {
            return Err(TokenError::Provider(format!(
                "discovery document names issuer {advertised:?}, expected {:?}",
                self.issuer
            )));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Provider("discovery document has no jwks_uri".into()))?
            .to_owned();
        let jwks = self.get_json(&jwks_uri).await?;
        KeySet::from_json(&jwks.to_string())
            .map_err(|e| TokenError::Provider(format!("{jwks_uri}: {e}")))
    }
}
