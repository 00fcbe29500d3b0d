//! The gateway's side of the audit trail: opening the store and applying
//! retention, recording refused logins, the sink that puts review events in
//! the chain, and `hoop audit verify|sessions|replay|export`.
//!
//! The store itself (hash chain, checkpoints, group commit) and the
//! `[audit]` section (store, checkpoint key) are `hoop-audit`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use hoop_audit::{
    AuditError, AuditReader, AuditSettings, AuditStore, CheckpointKeys, EndReason, Event,
    ExportFilter, ReviewOutcome, SessionFilter, Timestamp,
};
use hoop_reviews::{AuditSinkError, ReviewAuditSink, ReviewEvent};

use crate::config::Config;

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
