//! The reading side: [`AuditReader`], for `hoop audit sessions|replay|
//! export|verify`. Needs no signing key, only the public checkpoint keys,
//! and reads either the live store or an export directory.
//!
//! Reading the audit trail is itself an event (PCI DSS 10.2.1.3): the CLI
//! records [`crate::Event::AuditRead`] through an [`crate::AuditStore`]
//! opened with its own instance id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use crate::backend::{self, Backend, EntryQuery};
use crate::chain::Entry;
use crate::checkpoint::{Checkpoint, CheckpointKeys};
use crate::config::AuditConfig;
use crate::error::{AuditError, Result};
use crate::export::{self, ExportFilter, ExportSummary};
use crate::replay;
use crate::sessions::{self, SessionFilter, SessionSummary};
use crate::verify::{verify_chains, VerifyReport};

#[derive(Debug, Clone)]
pub struct AuditReader {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Store(Box<AuditConfig>),
    Export(PathBuf),
}

impl AuditReader {
    /// Reads the configured store (it must exist; nothing is created).
    pub fn open(config: &AuditConfig) -> Result<AuditReader> {
        config.validate()?;
        Ok(AuditReader {
            source: Source::Store(Box::new(config.clone())),
        })
    }

    /// Reads an export directory written by [`AuditReader::export`].
    pub fn open_export(dir: &Path) -> AuditReader {
        AuditReader {
            source: Source::Export(dir.to_owned()),
        }
    }

    pub async fn sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>> {
        let query = EntryQuery {
            since: filter.since,
            ..EntryQuery::default()
        };
        let (entries, _) = self.load(query, false).await?;
        Ok(sessions::summarize(&entries, filter))
    }

    /// The session as a readable timeline.
    pub async fn replay(&self, session_id: &str) -> Result<String> {
        let query = EntryQuery {
            session_id: Some(session_id.to_owned()),
            ..EntryQuery::default()
        };
        let (entries, _) = self.load(query, false).await?;
        if entries.is_empty() {
            return Err(AuditError::NotFound(format!(
                "no records for session {session_id:?}"
            )));
        }
        Ok(replay::render(session_id, &entries))
    }

    /// Recomputes every chain and checkpoint.
    pub async fn verify(&self, keys: &CheckpointKeys) -> Result<VerifyReport> {
        if let Source::Export(dir) = &self.source {
            return export::verify_export_with_keys(dir, keys);
        }
        let (entries, checkpoints) = self.load(EntryQuery::default(), true).await?;
        Ok(verify_chains(
            &entries,
            &checkpoints,
            keys,
            &BTreeMap::new(),
        ))
    }

    /// Writes an evidence export of the records in `filter`'s window.
    pub async fn export(
        &self,
        dir: &Path,
        filter: &ExportFilter,
        keys: &CheckpointKeys,
    ) -> Result<ExportSummary> {
        let query = EntryQuery {
            since: filter.since,
            until: filter.until,
            session_id: None,
        };
        let (entries, checkpoints) = self.load(query, true).await?;
        export::write_export(dir, &entries, &checkpoints, keys, filter)
    }

    async fn load(
        &self,
        query: EntryQuery,
        with_checkpoints: bool,
    ) -> Result<(Vec<Entry>, Vec<Checkpoint>)> {
        match &self.source {
            Source::Export(dir) => {
                let loaded = export::read_export(dir)?;
                let entries = loaded
                    .entries
                    .into_iter()
                    .filter(|e| query.since.is_none_or(|since| e.time >= since))
                    .filter(|e| query.until.is_none_or(|until| e.time < until))
                    .filter(|e| query.session_id.is_none() || e.session_id == query.session_id)
                    .collect();
                Ok((entries, loaded.checkpoints))
            }
            Source::Store(config) => {
                let config = config.as_ref().clone();
                on_own_thread(move || async move {
                    let mut backend = backend::open_reader(&config).await?;
                    let entries = backend.load_entries(&query).await?;
                    let checkpoints = if with_checkpoints {
                        backend.load_checkpoints().await?
                    } else {
                        Vec::new()
                    };
                    Ok((entries, checkpoints))
                })
                .await
            }
        }
    }
}

/// Runs `work` on a thread with its own runtime, so store access never
/// blocks (or depends on the flavour of) the caller's runtime.
async fn on_own_thread<T, F, Fut>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let (reply, answer) = oneshot::channel();
    std::thread::Builder::new()
        .name("hoop-audit-reader".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AuditError::Unavailable(format!("reader runtime: {e}")))
                .and_then(|runtime| runtime.block_on(work()));
            let _ = reply.send(result);
        })
        .map_err(|e| AuditError::Unavailable(format!("cannot start the audit reader: {e}")))?;
    answer.await.unwrap_or(Err(AuditError::Closed))
}
