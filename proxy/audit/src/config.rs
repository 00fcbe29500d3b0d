//! `[audit]` configuration: which store, where, and how long records live.
//!
//! ```toml
//! [audit]
//! store = "postgres"
//! url = "host=audit.internal user=hoop_audit dbname=hoop_audit"
//! password_file = "/etc/hoop/audit-db-password"
//! instance_id = "gw-eu-1"
//! checkpoint_interval = "1m"
//! retention = "400d"
//! record_rows = 20
//! ```
//!
//! Passwords never sit inline: a URL that carries one is refused.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{AuditError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite file (WAL): nothing to set up.
    #[default]
    Sqlite,
    /// A separate PostgreSQL database, shareable by several gateway instances.
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub store: StoreKind,
    /// SQLite database file (`store = "sqlite"`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// libpq-style connection string or `postgres://` URL without a password
    /// (`store = "postgres"`).
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the Postgres password (surrounding whitespace ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the Postgres password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Names this gateway's hash chain; unique per running gateway.
    pub instance_id: String,
    /// How often a signed checkpoint is written while records arrive.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
    /// How long records are kept; `None` keeps them forever.
    #[serde(default)]
    pub retention: Option<HumanDuration>,
    /// How many result rows per statement are recorded (0: none).
    #[serde(default)]
    pub record_rows: usize,
    /// SQLite only: when a commit counts as durable. See [`SqliteSync`].
    #[serde(default)]
    pub sqlite_synchronous: SqliteSync,
}

/// SQLite's `synchronous` setting for the audit file (WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Every group commit fsyncs the WAL before any caller is answered: an
    /// acknowledged record survives a power loss or OS crash. The fsync
    /// runs beside the writer, which meanwhile commits the next batch, so
    /// throughput is about (records in flight) / (fsync latency) until the
    /// CPU, not the disk, is the limit.
    #[default]
    Full,
    /// Commits reach the OS page cache, fsync happens at WAL checkpoints:
    /// records survive a gateway crash but the last ones (with the
    /// checkpoints that would reveal them) can vanish in a power loss or OS
    /// crash. Only for disks whose fsync is too slow for the statement rate.
    Normal,
}

fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl AuditConfig {
    /// A SQLite store at `path` with defaults for everything else.
    pub fn sqlite(path: impl Into<PathBuf>, instance_id: &str) -> AuditConfig {
        AuditConfig {
            store: StoreKind::Sqlite,
            path: Some(path.into()),
            url: None,
            password_file: None,
            password_env: None,
            instance_id: instance_id.to_owned(),
            checkpoint_interval: default_checkpoint_interval(),
            retention: None,
            record_rows: 0,
            sqlite_synchronous: SqliteSync::Full,
        }
    }

    /// A Postgres store at `url` (no password in it) with defaults.
    pub fn postgres(url: &str, instance_id: &str) -> AuditConfig {
        AuditConfig {
            store: StoreKind::Postgres,
            url: Some(url.to_owned()),
            path: None,
            ..AuditConfig::sqlite(PathBuf::new(), instance_id)
        }
    }

    /// Checks what can be checked without touching the store.
    pub fn validate(&self) -> Result<()> {
        if self.instance_id.is_empty()
            || !self
                .instance_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
        {
            return Err(AuditError::Config(format!(
                "instance_id {:?} must be non-empty and use only letters, digits and - _ . : @",
                self.instance_id
            )));
        }
        if self.checkpoint_interval.0.is_zero() {
            return Err(AuditError::Config(
                "checkpoint_interval must be longer than zero".into(),
            ));
        }
        match self.store {
            StoreKind::Sqlite if self.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) => {
                Err(AuditError::Config(
                    "store = \"sqlite\" needs `path` (the database file)".into(),
                ))
            }
            StoreKind::Postgres => self.postgres_config().map(drop),
            StoreKind::Sqlite => Ok(()),
        }
    }

    /// The Postgres connection settings with the password resolved from
    /// `password_file` or `password_env`.
    pub(crate) fn postgres_config(&self) -> Result<tokio_postgres::Config> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| AuditError::Config("store = \"postgres\" needs `url`".into()))?;
        let mut config = tokio_postgres::Config::from_str(url).map_err(|_| {
            AuditError::Config("audit `url` is not a valid connection string".into())
        })?;
        if config.get_password().is_some() {
            return Err(AuditError::Config(
                "audit `url` must not contain a password; use password_file or password_env".into(),
            ));
        }
        if let Some(password) = self.password()? {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("hoop-audit");
        Ok(config)
    }

    fn password(&self) -> Result<Option<String>> {
        if self.password_file.is_some() && self.password_env.is_some() {
            // Like every other secret in hoop: one source, never a silent pick.
            return Err(AuditError::Config(
                "set either audit `password_file` or `password_env`, not both".into(),
            ));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
            return Ok(Some(text.trim().to_owned()));
        }
        if let Some(name) = &self.password_env {
            let value = std::env::var(name).map_err(|_| {
                AuditError::Config(format!("password_env names {name:?}, which is not set"))
            })?;
            return Ok(Some(value));
        }
        Ok(None)
    }
}

/// A duration written for people: `"90s"`, `"5m"`, `"400d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_password_sources_are_refused() {
        let mut config = AuditConfig::postgres("host=127.0.0.1 user=audit dbname=audit", "gw-1");
        config.password_file = Some("/nonexistent/pw".into());
        config.password_env = Some("HOOP_TEST_AUDIT_PW_UNSET".into());
        let err = config
            .postgres_config()
            .expect_err("both sources must be refused");
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn reads_a_toml_style_section() {
        let config: AuditConfig = serde_json::from_value(serde_json::json!({
            "store": "postgres",
            "url": "host=127.0.0.1 user=audit dbname=audit",
            "password_env": "HOOP_TEST_AUDIT_PW_UNSET",
            "instance_id": "gw-1",
            "retention": "400d",
            "record_rows": 5
        }))
        .expect("config parses");
        assert_eq!(config.store, StoreKind::Postgres);
        assert_eq!(
            config.retention,
            Some(HumanDuration(Duration::from_secs(400 * 86_400)))
        );
        assert_eq!(config.checkpoint_interval.0, Duration::from_secs(60));
        // The variable is not set: fail closed rather than connect without it.
        assert!(matches!(config.validate(), Err(AuditError::Config(_))));
    }

    #[test]
    fn refuses_inline_passwords() {
        let config = AuditConfig::postgres("postgres://audit:secret@127.0.0.1/audit", "gw-1");
        let error = config.validate().expect_err("inline password refused");
        assert!(error.to_string().contains("must not contain a password"));
        assert!(!error.to_string().contains("secret"));
    }

    #[test]
    fn refuses_unusable_instance_ids() {
        let config = AuditConfig::sqlite("/tmp/x.db", "gw 1; drop");
        assert!(matches!(config.validate(), Err(AuditError::Config(_))));
    }
}
