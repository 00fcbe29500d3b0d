//! `[reviews]` configuration.
//!
//! ```toml
//! [reviews]
//! reviewer_group = "reviewers"        # or a list; `approver_groups` is accepted too
//! expiry = "5m"                       # a held statement waits at most this long
//! public_url = "https://hoop-admin.internal:8432"   # for decision links
//! grants_allowed = true               # reviewers may "approve for 30m"
//! max_grant = "8h"
//! store = "postgres"                  # "memory" (one gateway) | "postgres" (shared)
//! url = "host=audit.internal user=hoop_reviews dbname=hoop_audit"
//! password_env = "HOOP_REVIEWS_DB_PASSWORD"
//!
//! [reviews.webhook]
//! url_env = "HOOP_SLACK_WEBHOOK"      # or url = "…", url_file = "…"
//! format = "slack"                    # "json" | "slack"
//!
//! [reviews.min_approvals]
//! payments-dml = 2
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::{format_duration, parse_duration};

/// A duration written as text (`"5m"`, `"30s"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Where reviews live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process only: one gateway.
    #[default]
    Memory,
    /// Table `hoop_reviews` in a PostgreSQL database shared by several
    /// gateways, with LISTEN/NOTIFY so any of them can decide.
    Postgres,
}

/// Body format of the webhook POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"event": "review.created", "review": {…}, "decision_url": "…"}`.
    #[default]
    Json,
    /// Slack incoming-webhook message: `{"text": …, "blocks": […]}`.
    Slack,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint. Slack webhook URLs are secrets: prefer `url_env` or `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Per attempt.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: HumanDuration,
    /// Attempts after the first one fails (network error, 429 or 5xx).
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
}

impl WebhookConfig {
    /// The endpoint, read from wherever the configuration says.
    pub fn resolve_url(&self) -> Result<String, String> {
        let url = match (&self.url, &self.url_env, &self.url_file) {
            (Some(url), None, None) => url.clone(),
            (None, Some(var), None) => std::env::var(var).map_err(|_| {
                format!("`reviews.webhook.url_env`: environment variable {var} is not set")
            })?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "`reviews.webhook.url_file`: cannot read {}: {e}",
                        path.display()
                    )
                })?
                .trim()
                .to_owned(),
            _ => {
                return Err(
                    "`reviews.webhook` needs exactly one of `url`, `url_env`, `url_file`".into(),
                )
            }
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("`reviews.webhook` URL must start with https:// or http://".into());
        }
        Ok(url)
    }
}

fn default_webhook_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_webhook_retries() -> u32 {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewsConfig {
    /// Groups whose members may see and decide reviews.
    #[serde(
        rename = "reviewer_group",
        alias = "reviewer_groups",
        alias = "approver_groups",
        default = "default_reviewer_groups",
        deserialize_with = "one_or_many"
    )]
    pub reviewer_groups: Vec<String>,
    /// How long a held statement waits for a decision.
    #[serde(default = "default_expiry")]
    pub expiry: HumanDuration,
    /// Base URL of the admin server as reviewers reach it; decision links
    /// are `{public_url}/reviews#{id}`.
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Distinct approvers needed, per rule name (default 1).
    #[serde(default)]
    pub min_approvals: BTreeMap<String, u32>,
    /// Whether a decision may carry `grant_for`.
    #[serde(default = "default_true")]
    pub grants_allowed: bool,
    /// The longest `grant_for` accepted.
    #[serde(default = "default_max_grant")]
    pub max_grant: HumanDuration,
    #[serde(default)]
    pub store: StoreKind,
    /// libpq-style connection string or `postgres://` URL, without a
    /// password (`store = "postgres"`).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

fn default_reviewer_groups() -> Vec<String> {
    vec!["reviewers".to_owned()]
}

fn default_expiry() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_max_grant() -> HumanDuration {
    HumanDuration(Duration::from_secs(8 * 3600))
}

fn default_true() -> bool {
    true
}

impl Default for ReviewsConfig {
    fn default() -> Self {
        ReviewsConfig {
            reviewer_groups: default_reviewer_groups(),
            expiry: default_expiry(),
            public_url: None,
            webhook: None,
            min_approvals: BTreeMap::new(),
            grants_allowed: true,
            max_grant: default_max_grant(),
            store: StoreKind::Memory,
            url: None,
            password_file: None,
            password_env: None,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration key `reviews.{}`", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ReviewsConfig {
    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |text: String| Err(ConfigError(text));
        if self.reviewer_groups.is_empty() || self.reviewer_groups.iter().any(|g| g.is_empty()) {
            return fail("reviewer_group`: name at least one non-empty group".into());
        }
        if self.expiry.0 < Duration::from_millis(100) {
            return fail("expiry`: must be at least 100ms".into());
        }
        if let Some((rule, _)) = self.min_approvals.iter().find(|(_, n)| **n == 0) {
            return fail(format!("min_approvals.{rule}`: must be at least 1"));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return fail("public_url`: must start with https:// or http://".into());
            }
        }
        if let Some(webhook) = &self.webhook {
            webhook
                .resolve_url()
                .map_err(|e| ConfigError(format!("webhook`: {e}")))?;
        }
        if self.store == StoreKind::Postgres {
            self.postgres_config()?;
        }
        Ok(())
    }

    /// Approvals a review under `rule` needs.
    pub fn min_approvals_for(&self, rule: &str) -> u32 {
        self.min_approvals.get(rule).copied().unwrap_or(1).max(1)
    }

    /// The Postgres connection settings, password resolved from
    /// `password_file` or `password_env` (never inline).
    pub fn postgres_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| ConfigError("url`: store = \"postgres\" needs `url`".into()))?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| ConfigError(format!("url`: {e}")))?;
        if config.get_password().is_some() {
            return Err(ConfigError(
                "url`: must not hold a password; use `password_file` or `password_env`".into(),
            ));
        }
        match (&self.password_file, &self.password_env) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!(
                        "password_file`: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                config.password(text.trim());
            }
            (None, Some(var)) => {
                let text = std::env::var(var).map_err(|_| {
                    ConfigError(format!(
                        "password_env`: environment variable {var} is not set"
                    ))
                })?;
                config.password(text);
            }
            (None, None) => {}
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "password_file`: set either `password_file` or `password_env`, not both".into(),
                ))
            }
        }
        if config.get_application_name().is_none() {
            config.application_name("hoop-reviews");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let config: ReviewsConfig = toml::from_str("").expect("empty table is valid");
        assert_eq!(config.reviewer_groups, vec!["reviewers"]);
        assert_eq!(config.expiry.0, Duration::from_secs(300));
        assert!(config.grants_allowed);
        assert_eq!(config.store, StoreKind::Memory);
        assert_eq!(config.min_approvals_for("anything"), 1);
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn reads_a_full_table() {
        let text = r#"
            reviewer_group = ["reviewers", "dba"]
            expiry = "2m"
            public_url = "https://admin.example"
            grants_allowed = false
            [webhook]
            url = "https://hooks.example/abc"
            format = "slack"
            [min_approvals]
            payments-dml = 2
        "#;
        let config: ReviewsConfig = toml::from_str(text).expect("parses");
        assert_eq!(config.reviewer_groups, vec!["reviewers", "dba"]);
        assert_eq!(config.expiry.0, Duration::from_secs(120));
        assert_eq!(config.min_approvals_for("payments-dml"), 2);
        assert_eq!(
            config.webhook.as_ref().map(|w| w.format),
            Some(WebhookFormat::Slack)
        );
        config.validate().expect("valid");
    }

    #[test]
    fn accepts_the_gateway_spelling_and_a_single_group() {
        let config: ReviewsConfig = toml::from_str(r#"approver_groups = ["ops"]"#).expect("parses");
        assert_eq!(config.reviewer_groups, vec!["ops"]);
        let config: ReviewsConfig = toml::from_str(r#"reviewer_group = "sec""#).expect("parses");
        assert_eq!(config.reviewer_groups, vec!["sec"]);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let bad = |text: &str| {
            let config: ReviewsConfig = toml::from_str(text).expect("parses");
            config
                .validate()
                .expect_err("should be refused")
                .to_string()
        };
        assert!(bad("[min_approvals]\nx = 0").contains("min_approvals.x"));
        assert!(bad("store = \"postgres\"").contains("needs `url`"));
        assert!(
            bad("store = \"postgres\"\nurl = \"postgres://u:secret@h/db\"").contains("password")
        );
        assert!(bad("[webhook]\nurl = \"ftp://x\"").contains("webhook"));
        assert!(toml::from_str::<ReviewsConfig>("expiry = \"soon\"").is_err());
        assert!(toml::from_str::<ReviewsConfig>("unknown = 1").is_err());
    }
}
