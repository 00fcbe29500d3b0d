//! The gateway's side of the audit trail: the `[audit]` configuration,
//! the checkpoint key, what the gateway records about itself and its
//! sessions, the sink that puts review events in the chain, and
//! `hoop audit verify|sessions|replay|export`.
//!
//! The store itself (hash chain, checkpoints, group commit) is `hoop-audit`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hoop_audit::{
    AuditConfig, AuditError, AuditReader, AuditStore, CheckpointKeys, CheckpointSigner, EndReason,
    Event, ExportFilter, ReviewOutcome, SessionFilter, Timestamp,
};
use hoop_reviews::{AuditSinkError, ReviewAuditSink, ReviewEvent};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError, SecretRef};
use crate::relay::RelayEnd;

/// Where the audit store lives when `[audit]` does not say: next to the
/// configuration file.
pub const DEFAULT_AUDIT_FILE: &str = "audit.db";

/// This gateway's chain when `[audit] instance_id` is not set.
pub const DEFAULT_INSTANCE_ID: &str = "gw-1";

/// Domain separation for the checkpoint key derived from the session key:
/// one secret on disk, two keys that can never sign for each other.
const DERIVED_KEY_LABEL: &[u8] = b"hoop audit checkpoint key v1\0";

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
        store
    }
}

fn audit_error(problem: impl std::fmt::Display) -> ConfigError {
    ConfigError::Section(format!("configuration key `audit`: {problem}"))
}

/// Reads the `[audit]` table (absent: every default). The keys are those of
/// [`AuditConfig`] plus `checkpoint_key` (a secret, `{ file = … }` or
/// `{ env = … }`, holding a base64 Ed25519 seed) and `checkpoint_key_id`.
/// Without `checkpoint_key` the checkpoint key is derived from the session
/// signing key. Relative paths are taken from the configuration's directory.
pub(crate) fn settings_from_toml(
    table: Option<toml::Table>,
    base: &Path,
    session_seed: &str,
    session_key_id: &str,
) -> Result<AuditSettings, ConfigError> {
    let mut table = table.unwrap_or_default();
    let checkpoint_key = table
        .remove("checkpoint_key")
        .map(SecretRef::deserialize)
        .transpose()
        .map_err(|e| ConfigError::Invalid {
            key: "audit.checkpoint_key",
            problem: format!("{e}; give `{{ file = \"...\" }}` or `{{ env = \"VAR\" }}`"),
        })?;
    let checkpoint_key_id = match table.remove("checkpoint_key_id") {
        None => None,
        Some(toml::Value::String(id)) => Some(id),
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "audit.checkpoint_key_id",
                problem: format!("must be a string, not {}", other.type_str()),
            })
        }
    };
    let record_statements = match table.remove("record_statements") {
        None => true,
        Some(toml::Value::Boolean(on)) => on,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "audit.record_statements",
                problem: format!("must be true or false, not {}", other.type_str()),
            })
        }
    };
    table
        .entry("instance_id")
        .or_insert_with(|| DEFAULT_INSTANCE_ID.into());
    let sqlite = table
        .get("store")
        .and_then(toml::Value::as_str)
        .is_none_or(|s| s == "sqlite");
    if sqlite {
        table
            .entry("path")
            .or_insert_with(|| DEFAULT_AUDIT_FILE.into());
    }
    let mut store = AuditConfig::deserialize(toml::Value::Table(table)).map_err(audit_error)?;
    store.path = store.path.map(|p| base.join(p));
    store.password_file = store.password_file.map(|p| base.join(p));
    store.validate().map_err(|e| match e {
        AuditError::Config(problem) => audit_error(problem),
        other => audit_error(other),
    })?;

    let signer = match checkpoint_key {
        Some(secret) => {
            let seed = secret.resolve("audit.checkpoint_key", base)?;
            let key_id = checkpoint_key_id.unwrap_or_else(|| "audit-1".to_owned());
            CheckpointSigner::from_seed_base64(&key_id, &seed).map_err(|e| {
                ConfigError::Invalid {
                    key: "audit.checkpoint_key",
                    problem: e.to_string(),
                }
            })?
        }
        None => {
            let seed = base64::engine::general_purpose::STANDARD
                .decode(session_seed.trim())
                .map_err(|_| ConfigError::Invalid {
                    key: "session.signing_key",
                    problem: "is not base64".into(),
                })?;
            let derived: [u8; 32] = Sha256::new()
                .chain_update(DERIVED_KEY_LABEL)
                .chain_update(&seed)
                .finalize()
                .into();
            let key_id = checkpoint_key_id.unwrap_or_else(|| format!("{session_key_id}-audit"));
            CheckpointSigner::from_seed(&key_id, &derived)
        }
    };
    if signer.key_id().is_empty() || signer.key_id().contains([':', ',', ' ', '\n']) {
        return Err(ConfigError::Invalid {
            key: "audit.checkpoint_key_id",
            problem: "must be non-empty without ':', ',' or spaces".into(),
        });
    }
    Ok(AuditSettings {
        store,
        signer,
        record_statements,
    })
}

/// Opens the gateway's store (records `recording_started`). An error means
/// the gateway must not serve: no access without a record.
pub async fn open_store(settings: &AuditSettings) -> Result<AuditStore, AuditError> {
    AuditStore::open(&settings.store, settings.signer.clone()).await
}

/// Applies `retention` now and then every six hours until the store closes.
pub fn spawn_retention(store: AuditStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match store.apply_retention().await {
                Ok(report) if report.deleted > 0 => {
                    tracing::info!(
                        deleted = report.deleted,
                        "audit retention purged old records"
                    )
                }
                Ok(_) => {}
                Err(AuditError::Closed) => return,
                Err(error) => tracing::error!(%error, "audit retention failed"),
            }
            tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        }
    })
}

/// The audit identity of a verified login.
pub fn identity_of(config: &Config, identity: &crate::auth::Identity) -> hoop_audit::Identity {
    hoop_audit::Identity {
        issuer: config.identity.expected_issuer().to_owned(),
        subject: identity.subject.clone(),
        client_id: identity.client_id.clone(),
        groups: identity.groups.clone(),
    }
}

/// Why a session ended, as recorded.
pub fn end_reason(end: &RelayEnd) -> (EndReason, Option<String>) {
    match end {
        RelayEnd::ClientTerminated => (EndReason::ClientQuit, None),
        RelayEnd::ClientGone { mid_statement } => (
            EndReason::ClientQuit,
            mid_statement.then(|| "the client disconnected during a statement".to_owned()),
        ),
        RelayEnd::ServerClosed => (
            EndReason::Error,
            Some("the database closed the connection".into()),
        ),
        RelayEnd::TokenExpired => (EndReason::TokenExpired, None),
        RelayEnd::ShutDown => (EndReason::Shutdown, None),
        RelayEnd::ProtocolViolation(what) => (
            EndReason::Error,
            Some(format!("protocol violation: {what}")),
        ),
        RelayEnd::AuditUnavailable => (
            EndReason::Error,
            Some("a statement could not be recorded in the audit trail".into()),
        ),
    }
}

/// Records a refused login (never the token). A failure to record is
/// logged; the login is refused either way.
pub async fn login_failed(store: &AuditStore, event: Event) {
    if let Err(error) = store.record_event(&event).await {
        tracing::error!(%error, "cannot record a failed login in the audit store");
    }
}

/// Puts review events into the hash chain; the hub applies a change only
/// after this returned `Ok` (fail closed).
pub struct ReviewEventsToAudit(pub AuditStore);

#[async_trait]
impl ReviewAuditSink for ReviewEventsToAudit {
    async fn event(&self, event: ReviewEvent) -> Result<(), AuditSinkError> {
        self.0
            .record_event(&review_event(event))
            .await
            .map_err(|e| AuditSinkError(e.to_string()))
    }
}

fn join_comment(parts: &[Option<String>]) -> Option<String> {
    let text: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    (!text.is_empty()).then(|| text.join("; "))
}

fn review_event(event: ReviewEvent) -> Event {
    match event {
        ReviewEvent::Created {
            review_id,
            session_id,
            subject,
            rule,
            sql,
            tables,
            expires_at,
        } => Event::ReviewCreated {
            review_id,
            session_id,
            // The hub does not know the statement's sequence number; the
            // relay's statement record carries the review id.
            sequence: 0,
            rule,
            sql: format!(
                "{sql} -- requested by {subject}; tables [{}]; expires {expires_at}",
                tables.join(", ")
            ),
        },
        ReviewEvent::Approved {
            review_id,
            reviewer,
            reason,
            grant_for,
            approvals,
            required,
        } => Event::ReviewDecided {
            review_id,
            reviewer,
            outcome: ReviewOutcome::Approved,
            comment: join_comment(&[
                Some(format!("approval {approvals} of {required}")),
                reason.map(|r| format!("reason: {r}")),
                grant_for.map(|g| format!("grant for {g}")),
            ]),
        },
        ReviewEvent::Denied {
            review_id,
            reviewer,
            reason,
        } => Event::ReviewDecided {
            review_id,
            reviewer,
            outcome: ReviewOutcome::Denied,
            comment: reason.map(|r| format!("reason: {r}")),
        },
        ReviewEvent::Modified {
            review_id,
            reviewer,
            reason,
            original_sql,
            sql,
            approvals,
            required,
        } => Event::ReviewDecided {
            review_id,
            reviewer,
            outcome: ReviewOutcome::Modified,
            comment: join_comment(&[
                Some(format!("original: {original_sql}")),
                Some(format!("replacement: {sql}")),
                Some(format!("approval {approvals} of {required}")),
                reason.map(|r| format!("reason: {r}")),
            ]),
        },
        ReviewEvent::Expired { review_id } => Event::ReviewExpired { review_id },
        ReviewEvent::Withdrawn { review_id, reason } => {
            Event::ReviewWithdrawn { review_id, reason }
        }
        ReviewEvent::GrantUsed {
            review_id,
            session_id,
            subject,
            rule,
            sql,
        } => Event::GrantUsed {
            session_id,
            subject,
            grant: format!("review {review_id}"),
            detail: Some(format!("rule {rule}: {sql}")),
        },
    }
}

// ---------------------------------------------------------------------------
// `hoop audit …`

/// A time on the command line: RFC 3339, or a duration meaning "that long ago".
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Some(time) = Timestamp::parse_rfc3339(text) {
        return Ok(time);
    }
    humantime::parse_duration(text)
        .map(|ago| Timestamp::now().saturating_sub(ago))
        .map_err(|_| {
            format!(
                "{text:?} is neither an RFC 3339 time (2025-06-01T00:00:00Z) nor a duration (24h)"
            )
        })
}

/// Who is reading the audit trail, as far as this machine can tell.
fn reader_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `read` after recording who reads what (PCI DSS 10.2.1.3) in the
/// tools' own chain; refuses to read when that cannot be recorded.
async fn recorded_read<T, F>(
    settings: &AuditSettings,
    action: &str,
    detail: Option<String>,
    read: F,
) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let store = AuditStore::open(&settings.for_cli(), settings.signer.clone())
        .await
        .map_err(|e| {
            format!("cannot record this read of the audit trail, so it is refused: {e}")
        })?;
    let recorded = store
        .record_event(&Event::AuditRead {
            reader: reader_name(),
            action: action.to_owned(),
            detail,
        })
        .await;
    if let Err(e) = recorded {
        let _ = store.close("audit read not recorded").await;
        return Err(format!(
            "cannot record this read of the audit trail, so it is refused: {e}"
        ));
    }
    let result = read.await;
    if let Err(e) = store.close("audit read done").await {
        tracing::warn!(error = %e, "closing the audit tools' chain failed");
    }
    result
}

fn load_settings(config: &Path) -> Result<AuditSettings, String> {
    Config::load(config)
        .map(|c| c.audit)
        .map_err(|e| e.to_string())
}

/// `hoop audit verify -c FILE | DIR`: `Ok(false)` when a problem was found
/// (the report, naming the first one, is already printed).
pub async fn cli_verify(
    config: Option<&Path>,
    export: Option<&Path>,
    keys: Option<&Path>,
) -> Result<bool, String> {
    let extra_keys = match keys {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--keys {}: {e}", path.display()))
                .and_then(|text| {
                    CheckpointKeys::parse(&text)
                        .map_err(|e| format!("--keys {}: {e}", path.display()))
                })?,
        ),
        None => None,
    };
    let report = match (config, export) {
        (Some(config), None) => {
            let settings = load_settings(config)?;
            let mut trusted = settings.public_keys();
            if let Some(extra) = &extra_keys {
                trusted.extend(extra);
            }
            println!("checkpoint key: {}", settings.signer.public_key_entry());
            let reader = AuditReader::open(&settings.store).map_err(|e| e.to_string())?;
            recorded_read(&settings, "verify", None, async {
                reader.verify(&trusted).await.map_err(|e| e.to_string())
            })
            .await?
        }
        (None, Some(dir)) => match &extra_keys {
            Some(keys) => hoop_audit::verify_export_with_keys(dir, keys),
            None => hoop_audit::verify_export(dir),
        }
        .map_err(|e| format!("{}: {e}", dir.display()))?,
        _ => return Err("give either -c FILE (the live store) or an export directory".into()),
    };
    print!("{report}");
    match report.first_problem() {
        None => Ok(true),
        Some(problem) => {
            eprintln!("hoop: audit verification failed: {problem}");
            Ok(false)
        }
    }
}

pub async fn cli_sessions(config: &Path, filter: SessionFilter) -> Result<(), String> {
    let settings = load_settings(config)?;
    let reader = AuditReader::open(&settings.store).map_err(|e| e.to_string())?;
    let detail = format!(
        "since={:?} until={:?} sub={:?} table={:?}",
        filter.since.map(|t| t.to_string()),
        filter.until.map(|t| t.to_string()),
        filter.subject,
        filter.table
    );
    let sessions = recorded_read(&settings, "sessions", Some(detail), async {
        reader.sessions(&filter).await.map_err(|e| e.to_string())
    })
    .await?;
    if sessions.is_empty() {
        println!("no sessions");
        return Ok(());
    }
    println!("SESSION  STARTED  ENDED  SUBJECT  ROLE  DATABASE  CLIENT  APPLICATION  STATEMENTS  BLOCKED  REVIEWED  FAILED  TABLES");
    for s in sessions {
        let ended = match (s.ended_at, s.end_reason) {
            (Some(at), Some(reason)) => format!("{at} ({})", end_reason_name(reason)),
            (Some(at), None) => at.to_string(),
            _ => "-".into(),
        };
        println!(
            "{}  {}  {}  {}  {}  {}  {}  {}  {}  {}  {}  {}  {}",
            s.session_id,
            s.started_at,
            ended,
            printable(&s.subject),
            s.role,
            s.database,
            s.client_addr,
            printable(s.application_name.as_deref().unwrap_or("-")),
            s.statements,
            s.blocked,
            s.reviewed,
            s.failed,
            s.tables.into_iter().collect::<Vec<_>>().join(",")
        );
    }
    Ok(())
}

fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::ClientQuit => "client_quit",
        EndReason::TokenExpired => "token_expired",
        EndReason::Error => "error",
        EndReason::Shutdown => "shutdown",
    }
}

/// Recorded text is attacker-controlled: no terminal escapes.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

pub async fn cli_replay(config: &Path, session_id: &str) -> Result<(), String> {
    let settings = load_settings(config)?;
    let reader = AuditReader::open(&settings.store).map_err(|e| e.to_string())?;
    let timeline = recorded_read(
        &settings,
        "replay",
        Some(format!("session {session_id}")),
        async { reader.replay(session_id).await.map_err(|e| e.to_string()) },
    )
    .await?;
    let safe: String = timeline
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    print!("{safe}");
    Ok(())
}

pub async fn cli_export(config: &Path, filter: ExportFilter, out: &Path) -> Result<(), String> {
    let settings = load_settings(config)?;
    let reader = AuditReader::open(&settings.store).map_err(|e| e.to_string())?;
    let keys = settings.public_keys();
    let detail = format!(
        "to {} since={:?} until={:?}",
        out.display(),
        filter.since.map(|t| t.to_string()),
        filter.until.map(|t| t.to_string())
    );
    let summary = recorded_read(&settings, "export", Some(detail), async {
        reader
            .export(out, &filter, &keys)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    println!(
        "wrote {} records and {} checkpoints of {} chain(s) to {}",
        summary.records,
        summary.checkpoints,
        summary.chains.len(),
        out.display()
    );
    println!("verify offline with: hoop audit verify {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    fn settings(text: &str) -> Result<AuditSettings, String> {
        let table: toml::Table = toml::from_str(text).expect("toml");
        settings_from_toml(Some(table), Path::new("/etc/hoop"), SEED, "k1")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_put_sqlite_next_to_the_config_with_a_derived_key() {
        let s = settings_from_toml(None, Path::new("/etc/hoop"), SEED, "k1").expect("defaults");
        assert_eq!(
            s.store.path.as_deref(),
            Some(Path::new("/etc/hoop/audit.db"))
        );
        assert_eq!(s.store.instance_id, DEFAULT_INSTANCE_ID);
        assert_eq!(s.signer.key_id(), "k1-audit");
        assert_eq!(s.for_cli().instance_id, "gw-1-cli");
        // Derived, not the session key itself.
        let session = CheckpointSigner::from_seed_base64("k1-audit", SEED).unwrap();
        assert_ne!(s.signer.public_key_entry(), session.public_key_entry());
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(settings("retension = \"1d\"")
            .unwrap_err()
            .contains("retension"));
        assert!(settings("checkpoint_interval = \"soon\"")
            .unwrap_err()
            .contains("checkpoint_interval"));
        assert!(settings("instance_id = \"a b\"")
            .unwrap_err()
            .contains("instance_id"));
        assert!(settings("checkpoint_key = \"inline\"")
            .unwrap_err()
            .contains("audit.checkpoint_key"));
        assert!(
            settings("checkpoint_key = { env = \"HOOP_TEST_UNSET_CHECKPOINT_KEY\" }")
                .unwrap_err()
                .contains("audit.checkpoint_key")
        );
        assert!(settings("checkpoint_key_id = 3")
            .unwrap_err()
            .contains("audit.checkpoint_key_id"));
        assert!(settings("store = \"postgres\"")
            .unwrap_err()
            .contains("url"));
    }
}
