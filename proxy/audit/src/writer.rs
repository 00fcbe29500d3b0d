//! The single writer: one thread per store that owns the chain head and the
//! connection. Concurrent appends queue up while a transaction is in
//! flight and are written together by the next one (group commit): one
//! fsync for the whole batch, and every caller is answered only once its
//! record is durable.
//!
//! The head advances only after a commit succeeded, so a failed batch
//! leaves no gap: its callers get an error (and refuse their statements),
//! and the next batch reloads the head from the store and starts again.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use crate::backend::Backend;
use crate::chain::{ChainHead, Entry};
use crate::checkpoint::{Checkpoint, CheckpointKind, CheckpointSigner};
use crate::error::{AuditError, Result};
use crate::time::Timestamp;

/// Most records written in one transaction.
const MAX_BATCH: usize = 4096;

/// A write that takes longer than this is treated as failed (a hung
/// server must not hold statements forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// An entry ready to be sealed: masked canonical payload.
pub(crate) struct Pending {
    pub kind: &'static str,
    pub session_id: Option<String>,
    pub payload: String,
}

/// What was purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Entries deleted from this instance's chain.
    pub deleted: u64,
    /// The signed anchor the remaining chain starts from (`None`: nothing
    /// was old enough).
    pub anchor: Option<Checkpoint>,
}

pub(crate) enum Request {
    Append {
        pending: Pending,
        reply: oneshot::Sender<Result<u64>>,
    },
    Checkpoint {
        kind: CheckpointKind,
        reply: oneshot::Sender<Result<Checkpoint>>,
    },
    Purge {
        before: Timestamp,
        reply: oneshot::Sender<Result<PurgeReport>>,
    },
    Close {
        reply: oneshot::Sender<Result<Checkpoint>>,
    },
}

pub(crate) struct Writer<B> {
    backend: B,
    instance: String,
    signer: CheckpointSigner,
    /// `None` after a failure: reload from the store before writing.
    head: Option<ChainHead>,
    last_checkpoint: u64,
    interval: Duration,
}

impl<B: Backend> Writer<B> {
    pub(crate) fn new(
        backend: B,
        instance: String,
        signer: CheckpointSigner,
        interval: Duration,
    ) -> Self {
        Writer {
            backend,
            instance,
            signer,
            head: None,
            last_checkpoint: 0,
            interval,
        }
    }

    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut next_checkpoint = Instant::now() + self.interval;
        loop {
            let first = tokio::select! {
                request = requests.recv() => request,
                () = sleep_until(next_checkpoint) => {
                    next_checkpoint = Instant::now() + self.interval;
                    if let Err(error) = self.periodic_checkpoint().await {
                        tracing::error!(instance = %self.instance, %error, "audit checkpoint failed");
                    }
                    continue;
                }
            };
            let Some(first) = first else {
                // Every handle dropped without close(): seal what we have.
                if let Err(error) = self.checkpoint(CheckpointKind::Shutdown).await {
                    tracing::error!(instance = %self.instance, %error, "final audit checkpoint failed");
                }
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if self.process(batch).await {
                requests.close();
                while let Some(request) = requests.recv().await {
                    refuse(request, || AuditError::Closed);
                }
                return;
            }
        }
    }

    /// Writes the appends of a batch in one transaction, then runs its
    /// control requests in order. Returns true once the store is closed.
    async fn process(&mut self, batch: Vec<Request>) -> bool {
        let mut appends = Vec::new();
        let mut controls = Vec::new();
        for request in batch {
            match request {
                Request::Append { pending, reply } => appends.push((pending, reply)),
                control => controls.push(control),
            }
        }
        if !appends.is_empty() {
            self.append_batch(appends).await;
        }
        let mut closed = false;
        for control in controls {
            match control {
                Request::Append { .. } => {}
                Request::Checkpoint { kind, reply } => {
                    let _ = reply.send(self.checkpoint(kind).await);
                }
                Request::Purge { before, reply } => {
                    let _ = reply.send(self.purge(before).await);
                }
                Request::Close { reply } if !closed => {
                    closed = true;
                    let _ = reply.send(self.checkpoint(CheckpointKind::Shutdown).await);
                }
                Request::Close { reply } => {
                    let _ = reply.send(Err(AuditError::Closed));
                }
            }
        }
        closed
    }

    async fn append_batch(&mut self, appends: Vec<(Pending, oneshot::Sender<Result<u64>>)>) {
        let (pending, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        let mut result = self.write_entries(&pending).await;
        if matches!(result, Err(AuditError::Conflict { .. })) {
            // Someone else appended to our chain (a second process with the
            // same instance id, or a commit we saw fail but that landed):
            // the head was reloaded; try once more on top of it.
            tracing::warn!(instance = %self.instance, "audit chain moved underneath the writer; retrying");
            result = self.write_entries(&pending).await;
        }
        match result {
            Ok(first_seq) => {
                for (offset, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(first_seq + offset as u64));
                }
            }
            Err(error) => {
                tracing::error!(
                    instance = %self.instance,
                    %error,
                    records = replies.len(),
                    "ALERT: audit store write failed; statements are refused until it recovers"
                );
                let message = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Unavailable(message.clone())));
                }
            }
        }
    }

    /// Seals and writes entries after the current head; returns the first seq.
    async fn write_entries(&mut self, pending: &[Pending]) -> Result<u64> {
        let head = self.current_head().await?;
        let time = Timestamp::now().max(head.last_time);
        let mut prev = head.head;
        let entries: Vec<Entry> = pending
            .iter()
            .zip(head.last_seq + 1..)
            .map(|(item, seq)| {
                let entry = Entry::seal(
                    &self.instance,
                    seq,
                    time,
                    item.kind,
                    item.session_id.as_deref(),
                    item.payload.clone(),
                    prev,
                );
                prev = entry.hash;
                entry
            })
            .collect();
        self.write(&entries, &[]).await?;
        let recovered = self.head.is_none();
        self.head = Some(ChainHead {
            last_seq: head.last_seq + entries.len() as u64,
            head: prev,
            last_time: time,
        });
        if recovered && head.last_seq > 0 {
            tracing::info!(instance = %self.instance, "audit store writable again");
        }
        Ok(head.last_seq + 1)
    }

    async fn current_head(&mut self) -> Result<ChainHead> {
        if let Some(head) = self.head {
            return Ok(head);
        }
        let head = match timeout(WRITE_TIMEOUT, self.backend.head(&self.instance)).await {
            Ok(Ok(head)) => head,
            Ok(Err(error)) => {
                self.backend.reset();
                return Err(error);
            }
            Err(_) => {
                self.backend.reset();
                return Err(AuditError::Unavailable(
                    "timed out reading the chain head".into(),
                ));
            }
        };
        // Not stored in `self.head` yet: only a successful write confirms it.
        Ok(head)
    }

    /// One transaction, bounded in time; any failure drops the connection
    /// and forgets the head so the next write starts from what is stored.
    async fn write(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()> {
        let outcome = timeout(WRITE_TIMEOUT, self.backend.append(entries, checkpoints)).await;
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => AuditError::Unavailable("audit write timed out".into()),
        };
        self.head = None;
        self.backend.reset();
        Err(error)
    }

    async fn periodic_checkpoint(&mut self) -> Result<()> {
        match self.head {
            Some(head) if head.last_seq > self.last_checkpoint => {
                self.checkpoint(CheckpointKind::Periodic).await.map(drop)
            }
            _ => Ok(()),
        }
    }

    async fn checkpoint(&mut self, kind: CheckpointKind) -> Result<Checkpoint> {
        let head = self.current_head().await?;
        let time = Timestamp::now().max(head.last_time);
        let checkpoint = self
            .signer
            .sign(&self.instance, kind, head.last_seq, head.head, time);
        self.write(&[], std::slice::from_ref(&checkpoint)).await?;
        self.head = Some(head);
        self.last_checkpoint = head.last_seq;
        Ok(checkpoint)
    }

    async fn purge(&mut self, before: Timestamp) -> Result<PurgeReport> {
        let head = self.current_head().await?;
        let Some((through_seq, hash)) = self.backend.last_before(&self.instance, before).await?
        else {
            return Ok(PurgeReport {
                deleted: 0,
                anchor: None,
            });
        };
        let anchor = self.signer.sign(
            &self.instance,
            CheckpointKind::PurgeAnchor,
            through_seq,
            hash,
            Timestamp::now().max(head.last_time),
        );
        let deleted = match self
            .backend
            .purge(&self.instance, through_seq, &anchor)
            .await
        {
            Ok(deleted) => deleted,
            Err(error) => {
                self.head = None;
                self.backend.reset();
                return Err(error);
            }
        };
        self.head = Some(head);
        Ok(PurgeReport {
            deleted,
            anchor: Some(anchor),
        })
    }
}

fn refuse(request: Request, error: impl Fn() -> AuditError) {
    match request {
        Request::Append { reply, .. } => drop(reply.send(Err(error()))),
        Request::Checkpoint { reply, .. } | Request::Close { reply } => {
            drop(reply.send(Err(error())))
        }
        Request::Purge { reply, .. } => drop(reply.send(Err(error()))),
    }
}
