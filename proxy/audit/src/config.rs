//! `[audit]` configuration: which store, where, how long records live, and
//! the key that signs checkpoints.
//!
//! ```toml
//! [audit]
//! store = "postgres"
//! url = "host=audit.internal user=hoop_audit dbname=hoop_audit"
//! password = { file = "/etc/hoop/audit-db-password" }   # or { env = "VAR" }
//! instance_id = "gw-eu-1"
//! checkpoint_interval = "1m"
//! retention = "400d"
//! record_rows = 20
//! ```
//!
//! Passwords never sit inline: a URL that carries one is refused.
//! [`AuditSection`] is the table as written; [`AuditSection::settings`]
//! checks it into the [`AuditSettings`] the gateway runs with.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use hoop_common::config::{
    refuse_password_env, refuse_password_file, HumanDuration, KeyError, Renamed, SecretRef,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{CheckpointKeys, CheckpointSigner};
use crate::error::{AuditError, Result};

/// Where the audit store lives when `[audit]` does not say: next to the
/// configuration file.
pub const DEFAULT_AUDIT_FILE: &str = "audit.db";

/// This gateway's chain when `[audit] instance_id` is not set.
pub const DEFAULT_INSTANCE_ID: &str = "gw-1";

/// Domain separation for the checkpoint key derived from the session key:
/// one secret on disk, two keys that can never sign for each other.
const DERIVED_KEY_LABEL: &[u8] = b"hoop audit checkpoint key v1\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStoreKind {
    /// Embedded SQLite file (WAL): nothing to set up.
    #[default]
    Sqlite,
    /// A separate PostgreSQL database, shareable by several gateway instances.
    Postgres,
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

/// `[audit]` as written in the configuration file; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(default)]
    pub store: AuditStoreKind,
    /// SQLite database file (default `audit.db` next to the configuration).
    pub path: Option<PathBuf>,
    /// libpq-style connection string or `postgres://` URL without a password
    /// (`store = "postgres"`).
    pub url: Option<String>,
    /// The Postgres password: `{ file = "…" }` or `{ env = "VAR" }`.
    pub password: Option<SecretRef>,
    /// Refuses the old spelling, naming the new one.
    #[serde(
        default,
        rename = "password_file",
        deserialize_with = "refuse_password_file"
    )]
    _password_file: Renamed,
    /// Refuses the old spelling, naming the new one.
    #[serde(
        default,
        rename = "password_env",
        deserialize_with = "refuse_password_env"
    )]
    _password_env: Renamed,
    /// Names this gateway's hash chain; unique per running gateway.
    pub instance_id: Option<String>,
    pub checkpoint_interval: Option<HumanDuration>,
    pub retention: Option<HumanDuration>,
    #[serde(default)]
    pub record_rows: usize,
    #[serde(default)]
    pub sqlite_synchronous: SqliteSync,
    /// Signs checkpoints: a base64 Ed25519 seed, `{ file }` or `{ env }`.
    /// Without it the key is derived from the session signing key.
    pub checkpoint_key: Option<SecretRef>,
    pub checkpoint_key_id: Option<String>,
    /// Off, statements are not recorded one by one (default on).
    pub record_statements: Option<bool>,
}

/// The store's configuration, checked: what [`crate::AuditStore::open`]
/// and [`crate::AuditReader::open`] take.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub store: AuditStoreKind,
    /// SQLite database file (`store = "sqlite"`).
    pub path: Option<PathBuf>,
    /// libpq-style connection string or `postgres://` URL without a password
    /// (`store = "postgres"`).
    pub url: Option<String>,
    /// Where the Postgres password is read from (a `file` is absolute or
    /// relative to the working directory by now).
    pub password: Option<SecretRef>,
    /// Names this gateway's hash chain; unique per running gateway.
    pub instance_id: String,
    /// How often a signed checkpoint is written while records arrive.
    pub checkpoint_interval: Duration,
    /// How long records are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// How many result rows per statement are recorded (0: none).
    pub record_rows: usize,
    /// SQLite only: when a commit counts as durable. See [`SqliteSync`].
    pub sqlite_synchronous: SqliteSync,
    /// SQLite with `synchronous = FULL` only: whether commits that follow
    /// one another closely go to a commit log beside the file (one write
    /// and one fsync each) and reach the tables shortly after. On for the
    /// gateway; off for the `hoop audit` tools' chain, whose one record
    /// per command gains nothing from it.
    pub commit_log: bool,
}

const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

impl AuditConfig {
    /// A SQLite store at `path` with defaults for everything else.
    pub fn sqlite(path: impl Into<PathBuf>, instance_id: &str) -> AuditConfig {
        AuditConfig {
            store: AuditStoreKind::Sqlite,
            path: Some(path.into()),
            url: None,
            password: None,
            instance_id: instance_id.to_owned(),
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            retention: None,
            record_rows: 0,
            sqlite_synchronous: SqliteSync::Full,
            commit_log: true,
        }
    }

    /// A Postgres store at `url` (no password in it) with defaults.
    pub fn postgres(url: &str, instance_id: &str) -> AuditConfig {
        AuditConfig {
            store: AuditStoreKind::Postgres,
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
        if self.checkpoint_interval.is_zero() {
            return Err(AuditError::Config(
                "checkpoint_interval must be longer than zero".into(),
            ));
        }
        match self.store {
            AuditStoreKind::Sqlite
                if self.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) =>
            {
                Err(AuditError::Config(
                    "store = \"sqlite\" needs `path` (the database file)".into(),
                ))
            }
            AuditStoreKind::Postgres => self.postgres_config().map(drop),
            AuditStoreKind::Sqlite => Ok(()),
        }
    }

    /// The Postgres connection settings with the password read from
    /// `password`.
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
                "audit `url` must not contain a password; use `password = { file = \"...\" }` \
                 or `password = { env = \"VAR\" }`"
                    .into(),
            ));
        }
        if let Some(password) = &self.password {
            let password = password
                .resolve("audit.password")
                .map_err(|e| AuditError::Config(format!("`password`: {}", e.problem)))?;
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("hoop-audit");
        Ok(config)
    }
}

/// `[audit]` as the gateway uses it: the store's configuration and the key
/// that signs its checkpoints.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub store: AuditConfig,
    pub signer: CheckpointSigner,
    /// `record_statements` (default true). Off, statements are not recorded
    /// one by one (sessions, logins, reviews and gateway events still are):
    /// for measuring what recording costs, never for a PCI environment.
    pub record_statements: bool,
}

impl AuditSettings {
    /// The public checkpoint keys readers verify with.
    pub fn public_keys(&self) -> CheckpointKeys {
        self.signer.public_keys()
    }

    /// The store configuration of the `hoop audit` tools: the same store,
    /// their own chain (`<instance_id>-cli`), so reading the trail is
    /// recorded without touching the gateway's chain.
    pub fn for_cli(&self) -> AuditConfig {
        let mut store = self.store.clone();
        store.instance_id = format!("{}-cli", store.instance_id);
        store.commit_log = false;
        store
    }
}

/// The key the checkpoints are signed with, and where it came from.
enum CheckpointKeySource<'a> {
    /// `checkpoint_key`: its own seed.
    Own(&'a SecretRef),
    /// Derived from the session signing key (base64 seed) and its key id.
    Session { seed: &'a str, key_id: &'a str },
}

impl AuditSection {
    /// Checks the section; relative paths are taken from `base` (the
    /// configuration file's directory). Without `checkpoint_key` the
    /// checkpoint key is derived from the session signing key (`session_seed`,
    /// base64, with id `session_key_id`).
    pub fn settings(
        self,
        base: &Path,
        session_seed: &str,
        session_key_id: &str,
    ) -> std::result::Result<AuditSettings, KeyError> {
        let store = self.store_config(base)?;
        let source = match &self.checkpoint_key {
            Some(secret) => CheckpointKeySource::Own(secret),
            None => CheckpointKeySource::Session {
                seed: session_seed,
                key_id: session_key_id,
            },
        };
        let signer = checkpoint_signer(source, self.checkpoint_key_id.clone(), base)?;
        Ok(AuditSettings {
            store,
            signer,
            record_statements: self.record_statements.unwrap_or(true),
        })
    }

    fn store_config(&self, base: &Path) -> std::result::Result<AuditConfig, KeyError> {
        let path = match (self.store, &self.path) {
            (_, Some(path)) => Some(base.join(path)),
            (AuditStoreKind::Sqlite, None) => Some(base.join(DEFAULT_AUDIT_FILE)),
            (AuditStoreKind::Postgres, None) => None,
        };
        let store = AuditConfig {
            store: self.store,
            path,
            url: self.url.clone(),
            password: self.password.as_ref().map(|p| p.relative_to(base)),
            instance_id: self
                .instance_id
                .clone()
                .unwrap_or_else(|| DEFAULT_INSTANCE_ID.to_owned()),
            checkpoint_interval: self
                .checkpoint_interval
                .map_or(DEFAULT_CHECKPOINT_INTERVAL, |d| d.0),
            retention: self.retention.map(|d| d.0),
            record_rows: self.record_rows,
            sqlite_synchronous: self.sqlite_synchronous,
            commit_log: true,
        };
        store.validate().map_err(|e| match e {
            AuditError::Config(problem) => KeyError::new("audit", problem),
            other => KeyError::new("audit", other.to_string()),
        })?;
        Ok(store)
    }
}

fn checkpoint_signer(
    source: CheckpointKeySource<'_>,
    key_id: Option<String>,
    base: &Path,
) -> std::result::Result<CheckpointSigner, KeyError> {
    let signer = match source {
        CheckpointKeySource::Own(secret) => {
            let seed = secret.relative_to(base).resolve("audit.checkpoint_key")?;
            let key_id = key_id.unwrap_or_else(|| "audit-1".to_owned());
            CheckpointSigner::from_seed_base64(&key_id, &seed)
                .map_err(|e| KeyError::new("audit.checkpoint_key", e.to_string()))?
        }
        CheckpointKeySource::Session { seed, key_id: kid } => {
            let seed = base64::engine::general_purpose::STANDARD
                .decode(seed.trim())
                .map_err(|_| KeyError::new("session.signing_key", "is not base64"))?;
            let derived: [u8; 32] = Sha256::new()
                .chain_update(DERIVED_KEY_LABEL)
                .chain_update(&seed)
                .finalize()
                .into();
            let key_id = key_id.unwrap_or_else(|| format!("{kid}-audit"));
            CheckpointSigner::from_seed(&key_id, &derived)
        }
    };
    if signer.key_id().is_empty() || signer.key_id().contains([':', ',', ' ', '\n']) {
        return Err(KeyError::new(
            "audit.checkpoint_key_id",
            "must be non-empty without ':', ',' or spaces",
        ));
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    fn section(json: serde_json::Value) -> std::result::Result<AuditSection, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    fn settings(json: serde_json::Value) -> std::result::Result<AuditSettings, String> {
        section(json)?
            .settings(Path::new("/etc/hoop"), SEED, "k1")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_put_sqlite_next_to_the_config_with_a_derived_key() {
        let s = AuditSection::default()
            .settings(Path::new("/etc/hoop"), SEED, "k1")
            .expect("defaults");
        assert_eq!(
            s.store.path.as_deref(),
            Some(Path::new("/etc/hoop/audit.db"))
        );
        assert_eq!(s.store.instance_id, DEFAULT_INSTANCE_ID);
        assert_eq!(s.store.checkpoint_interval, Duration::from_secs(60));
        assert!(s.record_statements);
        assert_eq!(s.signer.key_id(), "k1-audit");
        assert_eq!(s.for_cli().instance_id, "gw-1-cli");
        // Derived, not the session key itself.
        let session = CheckpointSigner::from_seed_base64("k1-audit", SEED).unwrap();
        assert_ne!(s.signer.public_key_entry(), session.public_key_entry());
    }

    #[test]
    fn reads_a_full_section() {
        let s = settings(serde_json::json!({
            "store": "postgres",
            "url": "host=127.0.0.1 user=audit dbname=audit",
            "instance_id": "gw-eu-1",
            "retention": "400d",
            "record_rows": 5,
            "record_statements": false
        }))
        .expect("valid");
        assert_eq!(s.store.store, AuditStoreKind::Postgres);
        assert_eq!(s.store.path, None);
        assert_eq!(s.store.retention, Some(Duration::from_secs(400 * 86_400)));
        assert_eq!(s.store.record_rows, 5);
        assert!(!s.record_statements);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = |json| settings(json).unwrap_err();
        assert!(err(serde_json::json!({"retension": "1d"})).contains("retension"));
        assert!(err(serde_json::json!({"checkpoint_interval": "soon"}))
            .contains("\"soon\" is not a duration"));
        assert!(err(serde_json::json!({"instance_id": "a b"})).contains("instance_id"));
        assert!(err(serde_json::json!({"checkpoint_key": "inline"})).contains("SecretRef"));
        assert!(err(serde_json::json!({
            "checkpoint_key": {"env": "HOOP_TEST_UNSET_CHECKPOINT_KEY"}
        }))
        .contains("audit.checkpoint_key"));
        assert!(err(serde_json::json!({"checkpoint_key_id": "a b"}))
            .contains("audit.checkpoint_key_id"));
        assert!(err(serde_json::json!({"store": "postgres"})).contains("url"));
        // The password is read when the section is checked: fail closed
        // rather than connect without it.
        assert!(err(serde_json::json!({
            "store": "postgres",
            "url": "host=127.0.0.1 user=audit dbname=audit",
            "password": {"env": "HOOP_TEST_AUDIT_PW_UNSET"}
        }))
        .contains("configuration key `audit`: `password`: environment variable"));
    }

    #[test]
    fn the_old_password_spelling_is_refused_naming_the_new_one() {
        let err = section(serde_json::json!({"password_file": "pw"})).unwrap_err();
        assert!(err.contains("password = { file = "), "{err}");
        let err = section(serde_json::json!({"password_env": "PW"})).unwrap_err();
        assert!(err.contains("password = { env = "), "{err}");
    }

    #[test]
    fn two_password_sources_are_refused() {
        let mut config = AuditConfig::postgres("host=127.0.0.1 user=audit dbname=audit", "gw-1");
        config.password = Some(SecretRef {
            file: Some("/nonexistent/pw".into()),
            env: Some("HOOP_TEST_AUDIT_PW_UNSET".into()),
        });
        let err = config
            .postgres_config()
            .expect_err("both sources must be refused");
        assert!(err.to_string().contains("not both"), "{err}");
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
