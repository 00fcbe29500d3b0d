//! The writing side the relay calls: [`AuditStore`].
//!
//! Every call that records something returns only once the record is
//! durable in the store, and returns an error when it could not be written:
//! the relay then refuses the statement (no access without a record). The
//! one exception is [`AuditStore::complete_statement_nowait`], for an
//! outcome nobody has to wait for.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hoop_common::mask::Masker;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::answers;
use crate::backend;
use crate::checkpoint::{Checkpoint, CheckpointKind, CheckpointSigner};
use crate::config::AuditConfig;
use crate::error::{AuditError, Result};
use crate::payload::{
    canonical_payload, mask_field, mask_string, statement_begin_payload, statement_end_payload,
    store_masker,
};
use crate::record::{
    Event, Record, SessionEnd, SessionStart, StatementBegin, StatementOutcome, KIND_STATEMENT,
    KIND_STATEMENT_END,
};
use crate::writer::{Pending, PurgeReport, Reply, Request, Writer};
use hoop_common::time::Timestamp;

/// Appends waiting for the writer; past this, callers wait (backpressure).
/// Only `complete_statement_nowait` may go past it: it cannot wait, and
/// each of its records belongs to a statement already begun.
const QUEUE_DEPTH: usize = 65_536;

/// How long a caller waits for its record to be durable. The writer bounds
/// its own waits on the store, but not a call into the OS that never
/// returns (an fsync or a write on a hung disk); past this the statement
/// is refused, not held. Its record may still land later: a statement
/// begun and never completed, as after a crash.
const DURABLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// A handle on the audit store; cheap to clone and share between sessions.
#[derive(Clone)]
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unbounded so that a record that cannot wait keeps its place in line;
    /// `slots` bounds the appends that can.
    requests: mpsc::UnboundedSender<Request>,
    slots: Arc<Semaphore>,
    masker: Masker,
    instance: String,
    record_rows: usize,
    retention: Option<std::time::Duration>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Returned by [`AuditStore::begin_statement`]; pass it to
/// [`AuditStore::complete_statement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementHandle {
    pub session_id: String,
    pub sequence: u64,
    /// Chain position of the begin entry.
    pub begin_seq: u64,
    /// `session_id` as the store writes it (masked once, at the begin).
    masked_session_id: String,
}

/// A session's id and its masked form (see [`AuditStore::session_ids`]).
#[derive(Debug, Clone)]
pub struct SessionIds {
    raw: String,
    masked: String,
}

impl AuditStore {
    /// Opens (creating if needed) the configured store, starts its writer
    /// and records `recording_started`. Fails if the store cannot be
    /// written: a gateway without a working audit store must not serve.
    pub async fn open(config: &AuditConfig, signer: CheckpointSigner) -> Result<AuditStore> {
        config.validate()?;
        let masker = store_masker()?;
        if mask_field(&masker, &config.instance_id) != config.instance_id {
            return Err(AuditError::Config(
                "instance_id must not look like a card number".into(),
            ));
        }
        let (requests, receiver) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hoop-audit-{}", config.instance_id))
            .spawn(move || run_writer(thread_config, signer, receiver, ready_tx))
            .map_err(|e| AuditError::Unavailable(format!("cannot start the audit writer: {e}")))?;
        let opened = ready_rx.await.unwrap_or(Err(AuditError::Closed));
        if let Err(error) = opened {
            let _ = thread.join();
            return Err(error);
        }
        let store = AuditStore {
            inner: Arc::new(Inner {
                requests,
                slots: Arc::new(Semaphore::new(QUEUE_DEPTH)),
                masker,
                instance: config.instance_id.clone(),
                record_rows: config.record_rows,
                retention: config.retention,
                thread: Mutex::new(Some(thread)),
            }),
        };
        store
            .record_event(&Event::RecordingStarted {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .await?;
        Ok(store)
    }

    pub fn instance_id(&self) -> &str {
        &self.inner.instance
    }

    pub async fn record_event(&self, event: &Event) -> Result<()> {
        self.append(&Record::Event(event.clone())).await.map(drop)
    }

    pub async fn begin_session(&self, session: &SessionStart) -> Result<()> {
        self.append(&Record::SessionStart(session.clone()))
            .await
            .map(drop)
    }

    pub async fn end_session(&self, end: &SessionEnd) -> Result<()> {
        self.append(&Record::SessionEnd(end.clone()))
            .await
            .map(drop)
    }

    /// Records a statement before it is forwarded. When this fails the
    /// statement must be refused.
    pub async fn begin_statement(&self, statement: &StatementBegin) -> Result<StatementHandle> {
        let session = self.session_ids(&statement.session_id);
        self.begin_statement_of(&session, statement).await
    }

    /// A session's id with its masked form, for
    /// [`AuditStore::begin_statement_of`]: a session that records many
    /// statements masks its id once.
    pub fn session_ids(&self, session_id: &str) -> SessionIds {
        SessionIds {
            raw: session_id.to_owned(),
            masked: mask_string(&self.inner.masker, session_id).into_owned(),
        }
    }

    /// [`AuditStore::begin_statement`] with the session's ids already
    /// masked; they must be `statement`'s session's.
    pub async fn begin_statement_of(
        &self,
        session: &SessionIds,
        statement: &StatementBegin,
    ) -> Result<StatementHandle> {
        if session.raw != statement.session_id {
            return Err(AuditError::Malformed(
                "a statement's record was given another session's id".into(),
            ));
        }
        let masked_session_id = session.masked.clone();
        let pending = Pending {
            kind: KIND_STATEMENT,
            payload: statement_begin_payload(&self.inner.masker, statement, &masked_session_id)?,
            session_id: Some(masked_session_id.clone()),
        };
        let begin_seq = self.append_pending(pending).await?;
        Ok(StatementHandle {
            session_id: statement.session_id.clone(),
            sequence: statement.sequence,
            begin_seq,
            masked_session_id,
        })
    }

    /// Records how the statement ended, as its own entry referencing the
    /// begin entry. Result rows beyond `record_rows` are dropped.
    pub async fn complete_statement(
        &self,
        handle: &StatementHandle,
        outcome: &StatementOutcome,
    ) -> Result<()> {
        self.append_pending(self.statement_end(handle, outcome)?)
            .await
            .map(drop)
    }

    /// [`AuditStore::complete_statement`] for a caller that does not wait
    /// for durability: the record is queued at once, in order with
    /// everything this task records after it, and written by the next
    /// group commit. It is never dropped silently: when it cannot be
    /// encoded or written, or the store is closed, an `ALERT` is logged
    /// (with the session and statement number, never the record).
    ///
    /// For the relay, whose client already has its answer: the outcome
    /// was not needed to let the statement through (its begin entry was),
    /// so waiting for its fsync would only delay the next statement. A
    /// crash before the commit leaves the statement visible as incomplete
    /// to `verify`, as any crash does.
    pub fn complete_statement_nowait(&self, handle: &StatementHandle, outcome: &StatementOutcome) {
        let reply = Reply::Detached {
            session_id: handle.masked_session_id.clone(),
            sequence: handle.sequence,
        };
        let pending = match self.statement_end(handle, outcome) {
            Ok(pending) => pending,
            Err(error) => return reply.send_error(error),
        };
        // Not waiting means not waiting for a place either: past the
        // bound, the record is queued anyway (it stays in order, which a
        // task awaiting the send could not promise).
        let slot = self.inner.slots.clone().try_acquire_owned().ok();
        let request = Request::Append {
            pending,
            reply,
            _slot: slot,
        };
        if let Err(mpsc::error::SendError(Request::Append { reply, .. })) =
            self.inner.requests.send(request)
        {
            reply.send_error(AuditError::Closed);
        }
    }

    /// The outcome's entry; result rows beyond `record_rows` are dropped.
    fn statement_end(
        &self,
        handle: &StatementHandle,
        outcome: &StatementOutcome,
    ) -> Result<Pending> {
        Ok(Pending {
            kind: KIND_STATEMENT_END,
            session_id: Some(handle.masked_session_id.clone()),
            payload: statement_end_payload(
                &self.inner.masker,
                &handle.masked_session_id,
                handle.sequence,
                handle.begin_seq,
                outcome,
                self.inner.record_rows,
            )?,
        })
    }

    /// Writes a signed checkpoint of the chain as it is now.
    pub async fn checkpoint(&self) -> Result<Checkpoint> {
        self.control(|reply| Request::Checkpoint {
            kind: CheckpointKind::Manual,
            reply,
        })
        .await
    }

    /// Deletes this instance's entries older than `before`, leaving a signed
    /// purge anchor so what remains still verifies; records `purged`.
    pub async fn purge_before(&self, before: Timestamp) -> Result<PurgeReport> {
        let report = self
            .control(|reply| Request::Purge { before, reply })
            .await?;
        if let Some(anchor) = &report.anchor {
            self.record_event(&Event::Purged {
                before,
                through_seq: anchor.length,
            })
            .await?;
        }
        Ok(report)
    }

    /// Purges what the configured `retention` no longer requires (nothing
    /// when no retention is set). Call it periodically, e.g. daily.
    pub async fn apply_retention(&self) -> Result<PurgeReport> {
        match self.inner.retention {
            Some(retention) => {
                self.purge_before(Timestamp::now().saturating_sub(retention))
                    .await
            }
            None => Ok(PurgeReport {
                deleted: 0,
                anchor: None,
            }),
        }
    }

    /// Records `recording_stopped`, writes the final checkpoint and stops
    /// the writer. Other clones of this handle get [`AuditError::Closed`].
    pub async fn close(self, reason: &str) -> Result<Checkpoint> {
        self.record_event(&Event::RecordingStopped {
            reason: reason.to_owned(),
        })
        .await?;
        let checkpoint = self.control(|reply| Request::Close { reply }).await;
        let thread = self
            .inner
            .thread
            .lock()
            .map(|mut slot| slot.take())
            .unwrap_or(None);
        if let Some(thread) = thread {
            // The writer exits right after answering Close.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        checkpoint
    }

    async fn append(&self, record: &Record) -> Result<u64> {
        self.append_pending(self.pending(record)?).await
    }

    async fn append_pending(&self, pending: Pending) -> Result<u64> {
        let slot = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuditError::Closed)?;
        let appended = self.control(|reply| Request::Append {
            pending,
            reply: Reply::Waiting {
                reply,
                home: answers::here(),
            },
            _slot: Some(slot),
        });
        tokio::time::timeout(DURABLE_WITHIN, appended)
            .await
            .unwrap_or_else(|_| {
                Err(AuditError::Unavailable(
                    "the audit store did not confirm a record in time".into(),
                ))
            })
    }

    /// Masks and encodes a record (on the caller's thread, so the writer
    /// only seals and writes).
    fn pending(&self, record: &Record) -> Result<Pending> {
        Ok(Pending {
            kind: record.kind(),
            session_id: record
                .session_id()
                .map(|id| mask_field(&self.inner.masker, id)),
            payload: canonical_payload(&self.inner.masker, record)?,
        })
    }

    async fn control<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(request(reply))
            .map_err(|_| AuditError::Closed)?;
        answer.await.unwrap_or(Err(AuditError::Closed))
    }
}

/// The writer thread: its own current-thread runtime, so the store works
/// the same under any caller runtime and blocking SQLite calls stall
/// nothing else.
fn run_writer(
    config: AuditConfig,
    signer: CheckpointSigner,
    receiver: mpsc::UnboundedReceiver<Request>,
    ready: oneshot::Sender<Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(AuditError::Unavailable(format!(
                "cannot start the audit writer runtime: {error}"
            ))));
            return;
        }
    };
    runtime.block_on(async move {
        crate::keeper::start();
        let backend = match backend::open_writer(&config).await {
            Ok(backend) => backend,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        Writer::new(
            backend,
            config.instance_id.clone(),
            signer,
            config.checkpoint_interval,
        )
        .run(receiver)
        .await;
    });
}
