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
//! password = { env = "HOOP_REVIEWS_DB_PASSWORD" }   # or { file = "…" }
//!
//! [reviews.webhook]
//! url = { env = "HOOP_SLACK_WEBHOOK" } # or url = "https://…", { file = "…" }
//! format = "slack"                    # "json" | "slack"
//!
//! [reviews.min_approvals]
//! payments-dml = 2
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use hoop_common::config::HumanDuration;
use hoop_common::config::{
    refuse_password_env, refuse_password_file, refuse_url_env, refuse_url_file, KeyError, Renamed,
    SecretRef,
};
use serde::{Deserialize, Deserializer, Serialize};

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

/// The webhook endpoint: inline, or a secret read from a file or an
/// environment variable (Slack webhook URLs are secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a URL, or `{ file = \"...\" }` / `{ env = \"VAR\" }` holding one"
)]
pub enum WebhookUrl {
    Inline(String),
    Secret(SecretRef),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint. Slack webhook URLs are secrets: prefer `{ env }` or `{ file }`.
    pub url: WebhookUrl,
    /// Refuses the old spelling, naming the new one (public only so the
    /// section can be written as `..Default::default()`).
    #[doc(hidden)]
    #[serde(
        default,
        rename = "url_env",
        deserialize_with = "refuse_url_env",
        skip_serializing
    )]
    pub _url_env: Renamed,
    /// Refuses the old spelling, naming the new one (public only so the
    /// section can be written as `..Default::default()`).
    #[doc(hidden)]
    #[serde(
        default,
        rename = "url_file",
        deserialize_with = "refuse_url_file",
        skip_serializing
    )]
    pub _url_file: Renamed,
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
    /// A webhook posting to `url` in `format`, with the default timeout and retries.
    pub fn new(url: WebhookUrl, format: WebhookFormat) -> WebhookConfig {
        WebhookConfig {
            url,
            _url_env: Renamed,
            _url_file: Renamed,
            format,
            timeout: default_webhook_timeout(),
            retries: default_webhook_retries(),
        }
    }

    /// The endpoint, read from wherever the configuration says.
    pub fn resolve_url(&self) -> Result<String, KeyError> {
        const KEY: &str = "reviews.webhook.url";
        let url = match &self.url {
            WebhookUrl::Inline(url) => url.clone(),
            WebhookUrl::Secret(secret) => secret.resolve(KEY)?.trim().to_owned(),
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(KeyError::new(KEY, "must start with https:// or http://"));
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
    /// The Postgres password: `{ file = "…" }` or `{ env = "VAR" }`.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Refuses the old spelling, naming the new one (public only so the
    /// section can be written as `..Default::default()`).
    #[doc(hidden)]
    #[serde(
        default,
        rename = "password_file",
        deserialize_with = "refuse_password_file",
        skip_serializing
    )]
    pub _password_file: Renamed,
    /// Refuses the old spelling, naming the new one (public only so the
    /// section can be written as `..Default::default()`).
    #[doc(hidden)]
    #[serde(
        default,
        rename = "password_env",
        deserialize_with = "refuse_password_env",
        skip_serializing
    )]
    pub _password_env: Renamed,
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
            password: None,
            _password_file: Renamed,
            _password_env: Renamed,
        }
    }
}

impl ReviewsConfig {
    /// The section as written, with relative secret files taken from
    /// `base` (the configuration file's directory), checked.
    pub fn relative_to(mut self, base: &Path) -> Result<ReviewsConfig, KeyError> {
        self.password = self.password.map(|p| p.relative_to(base));
        if let Some(webhook) = &mut self.webhook {
            if let WebhookUrl::Secret(secret) = &webhook.url {
                webhook.url = WebhookUrl::Secret(secret.relative_to(base));
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), KeyError> {
        let fail =
            |key: String, problem: &str| Err(KeyError::new(format!("reviews.{key}"), problem));
        if self.reviewer_groups.is_empty() || self.reviewer_groups.iter().any(|g| g.is_empty()) {
            return fail("reviewer_group".into(), "name at least one non-empty group");
        }
        if self.expiry.0 < Duration::from_millis(100) {
            return fail("expiry".into(), "must be at least 100ms");
        }
        if let Some((rule, _)) = self.min_approvals.iter().find(|(_, n)| **n == 0) {
            return fail(format!("min_approvals.{rule}"), "must be at least 1");
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return fail("public_url".into(), "must start with https:// or http://");
            }
        }
        if let Some(webhook) = &self.webhook {
            webhook.resolve_url()?;
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

    /// The Postgres connection settings, password read from `password`
    /// (never inline).
    pub fn postgres_config(&self) -> Result<tokio_postgres::Config, KeyError> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| KeyError::new("reviews.url", "store = \"postgres\" needs `url`"))?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| KeyError::new("reviews.url", format!("{e}")))?;
        if config.get_password().is_some() {
            return Err(KeyError::new(
                "reviews.url",
                "must not hold a password; use `password = { file = \"...\" }` \
                 or `password = { env = \"VAR\" }`",
            ));
        }
        if let Some(password) = &self.password {
            config.password(password.resolve("reviews.password")?);
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

    #[test]
    fn secrets_use_the_one_spelling_and_the_old_one_is_refused() {
        let config: ReviewsConfig = toml::from_str(
            "store = \"postgres\"\nurl = \"host=h dbname=d\"\npassword = { env = \"HOOP_TEST_UNSET_RV\" }\n\
             [webhook]\nurl = { file = \"hook-url\" }",
        )
        .expect("parses");
        assert_eq!(config.password, Some(SecretRef::env("HOOP_TEST_UNSET_RV")));
        assert_eq!(
            config.webhook.map(|w| w.url),
            Some(WebhookUrl::Secret(SecretRef::file("hook-url")))
        );
        for (old, new) in [
            ("password_file = \"pw\"", "password = { file = "),
            ("password_env = \"PW\"", "password = { env = "),
            ("[webhook]\nurl_env = \"HOOK\"", "url = { env = "),
            ("[webhook]\nurl_file = \"hook\"", "url = { file = "),
        ] {
            let err = toml::from_str::<ReviewsConfig>(old)
                .unwrap_err()
                .to_string();
            assert!(err.contains(new), "{old}: {err}");
        }
    }
}
