//! The single writer: one thread per store that owns the chain head and the
//! connection. Concurrent appends queue up while a transaction is in
//! flight and are written together by the next one (group commit): one
//! fsync for the whole batch, and every caller is answered only once its
//! record is durable.
//!
//! Where the commit itself is not yet durable (SQLite with
//! `synchronous = FULL`: see `backend::sqlite`), the writer fsyncs. While
//! fsyncs are fast (the last one took less than [`INLINE_FSYNC_UNDER`]),
//! none is in flight and several callers wait (see
//! [`INLINE_FSYNC_CALLERS`]), it does so on its own thread and answers the
//! batch's callers itself; the records arriving meanwhile make the next
//! batch larger. A slow fsync (a loaded or remote disk) goes to fsync threads
//! instead, which answer a batch's callers once an fsync started after its
//! commit has returned; meanwhile the writer already seals and commits the
//! next batch on top of it, and its fsync can start before the previous one
//! is done. At most [`MAX_UNSYNCED`] commits wait for their fsync; beyond
//! that the writer waits too.
//!
//! Why both: overlapping fsyncs is what keeps throughput up when an fsync
//! takes milliseconds, but when it takes a fraction of one, handing each
//! commit to another thread (a wake-up there, another back) costs more
//! than the overlap gains. `pgbench -S -c 8 -M prepared`, 3 runs each, on a
//! 2-core VM whose fsync takes ~0.2 ms: every fsync on the fsync threads
//! (up to 3 in flight), 72.1–79.6 µs of gateway CPU per statement at
//! 11,350–13,100 TPS; on the writer's thread while fast and several wait,
//! 63.4–66.3 µs at 12,100–13,050 TPS (58.4–61.4 µs when every commit's
//! fsync ran there, but see [`INLINE_FSYNC_CALLERS`]). The price is the
//! store's own ceiling, which overlap raises: writers doing nothing but
//! waiting for records (`examples/throughput`, SQLite FULL, 8 / 64 / 256
//! writers) reach 21–22k / 92–93k / 153–159k records/s this way against
//! 26–27k / 97k / 175–179k with every fsync on the fsync threads. Going
//! inline only when no request for the next batch is queued keeps that
//! ceiling (24–26k / 98–99k / 169–176k) but gives back most of the
//! gateway's saving (66–73 µs), since its sessions usually have the next
//! batch queued; a gateway runs out of CPU long before the store's
//! ceiling, so the writer takes the saving.
//!
//! A SQLite store's commits go to its commit log (`backend::log`): one
//! small write each. While the store is busy (several callers wait for a
//! commit), its fsync runs on the writer's thread whenever fsyncs are fast
//! and none is in flight. `pgbench -c 8` on the same VM, CPU µs per
//! transaction, the log with every single-caller commit's fsync on the
//! fsync threads against this: simple 60.5/62.3 → 52.4/52.5, prepared
//! 52.7/54.8 → 44.7/50.4, TPC-B 448.5/437.0 → 370.9/377.6. Commits
//! needing different files fsynced are answered in commit order.
//!
//! A lone caller's commit (an idle store, a single client) goes to the log
//! too, its fsync to an fsync thread, and the writer moves the log's
//! entries into the tables a few commits at a time (see [`LONE_CALLERS`]).
//!
//! Records nobody waits for (`complete_statement_nowait`) do not start a
//! commit of their own: they wait, at most [`DETACHED_LINGER`], for one
//! that someone waits for (typically the session's next statement). When
//! their commit fails they are kept and written again with the next batch
//! (the statements they complete are begun and durable), and every
//! [`RETRY_DELAY`] while nothing else comes, for [`RETRY_FOR`] after their
//! first failure, before an alert gives up on them.
//!
//! The head advances only after a commit succeeded, so a failed batch
//! leaves no gap: its callers get an error (and refuse their statements),
//! and the next batch reloads the head from the store and starts again.
//! A failed fsync (here or on an fsync thread) fails every batch committed
//! to that file and not yet answered, and makes the writer reopen the
//! store; the entries it covered stay in the chain (as after a crash:
//! begun, never acknowledged) or are lost from its tail, never from its
//! middle.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use crate::answers;
use crate::backend::Backend;
use crate::chain::{ChainHead, Entry};
use crate::checkpoint::{Checkpoint, CheckpointKind, CheckpointSigner};
use crate::error::{AuditError, Result};
use hoop_common::time::Timestamp;

/// Most records written in one transaction.
const MAX_BATCH: usize = 4096;

/// A write that takes longer than this is treated as failed (a hung
/// server must not hold statements forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits that may wait for their fsync while the writer goes on.
const MAX_UNSYNCED: usize = 3;

/// fsyncs that may be in flight at once.
const SYNC_THREADS: usize = MAX_UNSYNCED;

/// An fsync the writer does on its own thread (none other in flight) when
/// the last one took less than this; see the module docs.
const INLINE_FSYNC_UNDER: Duration = Duration::from_millis(1);

/// ... and at least this many callers wait for the commit (fewer: see
/// [`LONE_CALLERS`]). When lone callers' commits went into the tables,
/// the fsync threads answered them sooner: measured with one `pgbench -S`
/// client, p50 284–319 µs through the fsync threads, 368–389 µs inline,
/// with the fsync itself taking as long (p50 ~190 µs) either way.
const INLINE_FSYNC_CALLERS: usize = 2;

/// A commit fewer callers wait for is a lone caller's (the store is idle,
/// or one client runs statements one by one). It goes to the commit log
/// like any other, its fsync to an fsync thread; such commits used to go
/// into the tables directly (about five b-tree pages, each written into
/// SQLite's WAL with two `pwrite`s, then an fsync of all of it) before
/// anyone was answered, where the log takes one write.
///
/// Once [`SETTLE_LONE_AT`] entries wait in the log, the writer settles
/// them after such a commit, unless a request already waits, instead of
/// leaving them for the settle timers (`backend::sqlite`). Those fire
/// every 20 ms under one client and settle 64 entries at a time, a pause
/// the next statement waits for. One `pgbench -S -c 1` client (`-l`, 8 s
/// runs, each variant alternated twice with lone commits into the tables:
/// tables → variant, µs):
///
/// | variant | prepared p50 | p99.9 | simple p50 | p99.9 |
/// |---|---|---|---|---|
/// | settled by the timers | 317, 312 → 290, 299 | 2,028, 1,917 → 4,312, 4,578 | 360, 364 → 301, 304 | 2,856, 1,939 → 4,484, 4,953 |
/// | settled after each commit | 315, 286 → 332, 326 | 2,766, 1,823 → 1,849, 1,890 | 371, 370 → 356, 365 | 1,812, 1,848 → 1,961, 1,941 |
/// | 16 entries at a time | 316, 285 → 261, 290 | 1,609, 1,658 → 1,852, 2,182 | 371, 341 → 309, 287 | 2,567, 1,766 → 2,282, 2,145 |
///
/// p99 was within noise or lower in every variant. Settling after each
/// commit costs as much as the tables did: on two cores the settle does
/// not overlap the fsync for free.
const LONE_CALLERS: usize = 2;

/// See [`LONE_CALLERS`]: about eight statements' entries (a begin and an
/// outcome each).
const SETTLE_LONE_AT: usize = 16;

/// How long records nobody waits for (`complete_statement_nowait`) may
/// wait for company before they are committed on their own.
const DETACHED_LINGER: Duration = Duration::from_millis(10);

/// How long records kept after a failed commit wait before they are
/// tried again on their own.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// How long a record nobody waits for is tried again after its first
/// failed commit.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Records nobody waits for kept for another try; past this, the oldest
/// are given up (with an alert each).
const MAX_RETRY: usize = 65_536;

/// Answers the callers of a commit once it is durable (or failed to be).
type Acknowledge = Box<dyn FnOnce(Result<()>) + Send>;

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

/// Who learns how an append went.
pub(crate) enum Reply {
    /// A caller waiting for its record to be durable.
    Waiting {
        reply: oneshot::Sender<Result<u64>>,
        /// The caller's thread's answer home, if it has one.
        home: Option<Arc<answers::Home>>,
    },
    /// Nobody waits (`complete_statement_nowait`); a failure is logged.
    Detached { session_id: String, sequence: u64 },
}

impl Reply {
    pub(crate) fn send_error(self, error: AuditError) {
        self.send(Err(error));
    }

    fn send(self, result: Result<u64>) {
        match self {
            Reply::Waiting { reply, .. } => drop(reply.send(result)),
            Reply::Detached {
                session_id,
                sequence,
            } => {
                if let Err(error) = result {
                    tracing::error!(
                        session = %session_id,
                        statement = sequence,
                        %error,
                        "ALERT: a statement's completion record could not be written"
                    );
                }
            }
        }
    }
}

pub(crate) enum Request {
    Append {
        pending: Pending,
        reply: Reply,
        /// A place in the store's queue bound, freed once the writer takes
        /// the request (`None`: admitted past the bound).
        _slot: Option<OwnedSemaphorePermit>,
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

impl Request {
    fn is_detached(&self) -> bool {
        matches!(
            self,
            Request::Append {
                reply: Reply::Detached { .. },
                ..
            }
        )
    }
}

/// Adds what is queued now to `batch`, up to [`MAX_BATCH`].
fn collect(requests: &mut mpsc::UnboundedReceiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_BATCH {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

pub(crate) struct Writer<B> {
    /// Declared before `backend`: dropping the writer first lets the
    /// syncer finish every fsync, then closes the connection.
    syncer: Option<Syncer>,
    fsyncs: Arc<FsyncStats>,
    /// [`INLINE_FSYNC_CALLERS`] (tests take every path with 1).
    inline_callers: usize,
    backend: B,
    instance: String,
    signer: CheckpointSigner,
    /// `None` after a failure: reload from the store before writing.
    head: Option<ChainHead>,
    last_checkpoint: u64,
    interval: Duration,
    /// Records nobody waits for whose commit failed, with the time of
    /// their first failure: written first in the next batch.
    retry: Vec<(Pending, Reply, Instant)>,
    /// The last commit was a lone caller's: settle the log's entries if
    /// enough wait and no request does (see [`LONE_CALLERS`]).
    settle_soon: bool,
}

impl<B: Backend> Writer<B> {
    pub(crate) fn new(
        backend: B,
        instance: String,
        signer: CheckpointSigner,
        interval: Duration,
    ) -> Self {
        Writer {
            syncer: None,
            fsyncs: Arc::default(),
            inline_callers: INLINE_FSYNC_CALLERS,
            backend,
            instance,
            signer,
            head: None,
            last_checkpoint: 0,
            interval,
            retry: Vec::new(),
            settle_soon: false,
        }
    }

    pub(crate) async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut next_checkpoint = Instant::now() + self.interval;
        loop {
            let retry_due = !self.retry.is_empty();
            let settle_at = self.backend.settle_at().map(Instant::from_std);
            let settle_now =
                std::mem::take(&mut self.settle_soon) && self.backend.unsettled() >= SETTLE_LONE_AT;
            let first = tokio::select! {
                // A request waiting goes before a settle (see LONE_CALLERS).
                biased;
                request = requests.recv() => request,
                () = std::future::ready(()), if settle_now => {
                    self.settle().await;
                    continue;
                }
                () = sleep_until(settle_at.unwrap_or_else(Instant::now)), if settle_at.is_some() => {
                    self.settle().await;
                    continue;
                }
                () = tokio::time::sleep(RETRY_DELAY), if retry_due => {
                    if let Ok(permit) = self.sync_capacity().await {
                        self.recover_from_failed_sync();
                        self.append_batch(Vec::new(), permit).await;
                    }
                    continue;
                }
                () = sleep_until(next_checkpoint) => {
                    next_checkpoint = Instant::now() + self.interval;
                    self.periodic_checkpoint().await;
                    continue;
                }
            };
            let Some(first) = first else {
                // Every handle dropped without close(): try what waits for
                // another try once more, then seal what we have.
                if !self.retry.is_empty() {
                    if let Ok(permit) = self.sync_capacity().await {
                        self.append_batch(Vec::new(), permit).await;
                    }
                    for (_, reply, _) in std::mem::take(&mut self.retry) {
                        reply.send_error(AuditError::Closed);
                    }
                }
                let sealed = self.write_checkpoint(CheckpointKind::Shutdown).await;
                self.reply_when_durable(sealed, None, |sealed| {
                    if let Err(error) = sealed {
                        tracing::error!(%error, "final audit checkpoint failed");
                    }
                })
                .await;
                return;
            };
            // Wait until a commit may go to the syncer; what arrives
            // meanwhile joins this batch.
            let permit = match self.sync_capacity().await {
                Ok(permit) => permit,
                Err(_) => {
                    refuse(first, || {
                        AuditError::Unavailable("audit store fsync timed out".into())
                    });
                    continue;
                }
            };
            self.recover_from_failed_sync();
            let mut batch = vec![first];
            collect(&mut requests, &mut batch);
            if batch.iter().all(Request::is_detached) {
                // Nobody waits for these: let them ride with the next
                // record someone does wait for (the session's next
                // statement, usually) instead of paying a commit and an
                // fsync of their own, but not for longer than this.
                let deadline = Instant::now() + DETACHED_LINGER;
                while batch.len() < MAX_BATCH {
                    let Ok(Some(request)) = timeout_at(deadline, requests.recv()).await else {
                        break;
                    };
                    let awaited = batch.len();
                    batch.push(request);
                    collect(&mut requests, &mut batch);
                    if !batch[awaited..].iter().all(Request::is_detached) {
                        break;
                    }
                }
            }
            if self.process(batch, permit).await {
                requests.close();
                while let Some(request) = requests.recv().await {
                    refuse(request, || AuditError::Closed);
                }
                return;
            }
        }
    }

    /// Moves logged entries into the tables (some of them: see
    /// [`Backend::settle`]).
    async fn settle(&mut self) {
        if let Err(error) = self.backend.settle().await {
            tracing::error!(
                instance = %self.instance,
                %error,
                "ALERT: logged audit entries cannot be moved into the store's tables; commits go to the tables until they can"
            );
        }
    }

    /// Writes the appends of a batch in one transaction, then runs its
    /// control requests in order. Returns true once the store is closed.
    ///
    /// `permit` (see [`Writer::sync_capacity`]) goes to the first commit
    /// of the batch; later ones wait for their own.
    async fn process(
        &mut self,
        batch: Vec<Request>,
        mut permit: Option<OwnedSemaphorePermit>,
    ) -> bool {
        let mut appends = Vec::new();
        let mut controls = Vec::new();
        for request in batch {
            match request {
                Request::Append { pending, reply, .. } => appends.push((pending, reply)),
                control => controls.push(control),
            }
        }
        if !appends.is_empty() || !self.retry.is_empty() {
            self.append_batch(appends, permit.take()).await;
        }
        let mut closed = false;
        for control in controls {
            match control {
                Request::Append { .. } => {}
                Request::Checkpoint { kind, reply } => {
                    let written = self.write_checkpoint(kind).await;
                    self.reply_when_durable(written, permit.take(), |result| {
                        drop(reply.send(result))
                    })
                    .await;
                }
                Request::Purge { before, reply } => {
                    let purged = self.purge(before).await;
                    self.reply_when_durable(purged, permit.take(), |result| {
                        drop(reply.send(result))
                    })
                    .await;
                }
                Request::Close { reply } if !closed => {
                    closed = true;
                    let sealed = self.write_checkpoint(CheckpointKind::Shutdown).await;
                    self.reply_when_durable(sealed, permit.take(), |result| {
                        drop(reply.send(result))
                    })
                    .await;
                }
                Request::Close { reply } => {
                    let _ = reply.send(Err(AuditError::Closed));
                }
            }
        }
        closed
    }

    async fn append_batch(
        &mut self,
        appends: Vec<(Pending, Reply)>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        // Records kept from a failed commit go first, in their order.
        let retried = std::mem::take(&mut self.retry);
        let mut failed_first: Vec<Option<Instant>> =
            Vec::with_capacity(retried.len() + appends.len());
        let mut all = Vec::with_capacity(retried.len() + appends.len());
        for (pending, reply, since) in retried {
            all.push((pending, reply));
            failed_first.push(Some(since));
        }
        failed_first.resize(failed_first.len() + appends.len(), None);
        all.extend(appends);
        if all.is_empty() {
            return;
        }
        let (pending, replies): (Vec<_>, Vec<_>) = all.into_iter().unzip();
        let callers = replies
            .iter()
            .filter(|reply| matches!(reply, Reply::Waiting { .. }))
            .count();
        let lone = callers < LONE_CALLERS;
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
                let answer: Acknowledge = Box::new(move |durable| match durable {
                    // Waiting callers one hand-off per thread (see
                    // `answers`).
                    Ok(()) => answers::deliver(replies.into_iter().zip(first_seq..).filter_map(
                        |(reply, seq)| match reply {
                            Reply::Waiting { reply, home } => Some(answers::Answer {
                                reply,
                                home,
                                result: Ok(seq),
                            }),
                            detached => {
                                detached.send(Ok(seq));
                                None
                            }
                        },
                    )),
                    Err(error) => refuse_appends(replies, &error),
                });
                // A busy store's logged commit may be fsynced here whatever
                // the number of callers; a lone caller's goes to an fsync
                // thread while the writer settles (see LONE_CALLERS).
                let counted = if lone {
                    callers
                } else {
                    callers.max(self.inline_callers)
                };
                self.acknowledge(answer, counted, permit).await;
                self.settle_soon = lone;
            }
            Err(error) => {
                tracing::error!(
                    instance = %self.instance,
                    %error,
                    records = replies.len(),
                    "ALERT: audit store write failed; statements are refused until it recovers"
                );
                let mut refused = Vec::new();
                let now = Instant::now();
                for ((pending, reply), since) in pending.into_iter().zip(replies).zip(failed_first)
                {
                    let since = since.unwrap_or(now);
                    if matches!(reply, Reply::Detached { .. })
                        && now.duration_since(since) < RETRY_FOR
                        && self.retry.len() < MAX_RETRY
                    {
                        self.retry.push((pending, reply, since));
                    } else {
                        refused.push(reply);
                    }
                }
                refuse_appends(refused, &error);
            }
        }
    }

    /// Seals entries after the current head and writes them through
    /// [`Backend::append_logged`]; returns the first seq.
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
        let count = entries.len() as u64;
        self.write_logged(entries).await?;
        let recovered = self.head.is_none();
        self.head = Some(ChainHead {
            last_seq: head.last_seq + count,
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
        self.written(outcome)
    }

    /// [`Writer::write`] through [`Backend::append_logged`].
    async fn write_logged(&mut self, entries: Vec<Entry>) -> Result<()> {
        let outcome = timeout(WRITE_TIMEOUT, self.backend.append_logged(entries)).await;
        self.written(outcome)
    }

    fn written(
        &mut self,
        outcome: std::result::Result<Result<()>, tokio::time::error::Elapsed>,
    ) -> Result<()> {
        let error = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => AuditError::Unavailable("audit write timed out".into()),
        };
        self.head = None;
        self.backend.reset();
        Err(error)
    }

    async fn periodic_checkpoint(&mut self) {
        if !matches!(self.head, Some(head) if head.last_seq > self.last_checkpoint) {
            return;
        }
        let written = self.write_checkpoint(CheckpointKind::Periodic).await;
        let instance = self.instance.clone();
        self.reply_when_durable(written, None, move |result| {
            if let Err(error) = result {
                tracing::error!(%instance, %error, "audit checkpoint failed");
            }
        })
        .await;
    }

    /// Signs the chain as it is now and commits the checkpoint (durable
    /// once acknowledged, see [`Writer::reply_when_durable`]).
    async fn write_checkpoint(&mut self, kind: CheckpointKind) -> Result<Checkpoint> {
        let head = self.current_head().await?;
        let time = Timestamp::now().max(head.last_time);
        let checkpoint = self
            .signer
            .sign(&self.instance, kind, head.last_seq, head.head, time);
        self.write(&[], std::slice::from_ref(&checkpoint)).await?;
        self.head = Some(head);
        self.last_checkpoint = head.last_seq;
        if kind == CheckpointKind::Shutdown {
            if let Err(error) = self.backend.empty_log().await {
                // The log then still holds entries the tables hold too:
                // readers skip those, and the next start moves the rest.
                tracing::warn!(instance = %self.instance, %error, "the audit commit log could not be emptied at shutdown");
            }
        }
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

    /// Runs `reply` with `result` once the commit that produced it is
    /// durable; at once when it failed.
    async fn reply_when_durable<T: Send + 'static>(
        &mut self,
        result: Result<T>,
        permit: Option<OwnedSemaphorePermit>,
        reply: impl FnOnce(Result<T>) + Send + 'static,
    ) {
        match result {
            Err(error) => reply(Err(error)),
            Ok(value) => {
                let answer: Acknowledge = Box::new(move |durable| reply(durable.map(|()| value)));
                self.acknowledge(answer, 1, permit).await;
            }
        }
    }

    /// Answers a successful commit: at once when the backend's commit was
    /// durable, else after an fsync, here (fast, nothing in flight) or on
    /// the syncer. Without a `permit` it waits for one (the caller must not
    /// hold another: they are few).
    async fn acknowledge(
        &mut self,
        answer: Acknowledge,
        callers: usize,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let Some(file) = self.backend.unsynced_file() else {
            answer(Ok(()));
            return;
        };
        if self.syncer.is_none() {
            self.syncer = Syncer::start(&self.instance, self.fsyncs.clone());
        }
        let Some(syncer) = &self.syncer else {
            // No thread for the syncer: fsync here, as SQLite would have.
            answer(sync_file(&file));
            return;
        };
        if syncer.may_sync_inline(callers, self.inline_callers) {
            answer(syncer.sync_inline(&file, &self.instance));
            return;
        }
        let permit = match permit {
            Some(permit) => Some(permit),
            None => syncer.capacity.clone().acquire_owned().await.ok(),
        };
        syncer.submit(SyncJob {
            file,
            answer,
            _permit: permit,
        });
    }

    /// A slot for one more commit awaiting its fsync (`None` without a
    /// syncer). A syncer stuck longer than a write may take fails the
    /// batch rather than holding it forever.
    async fn sync_capacity(&self) -> Result<Option<OwnedSemaphorePermit>> {
        let Some(syncer) = &self.syncer else {
            return Ok(None);
        };
        match timeout(WRITE_TIMEOUT, syncer.capacity.clone().acquire_owned()).await {
            Ok(permit) => Ok(permit.ok()),
            Err(_) => {
                tracing::error!(instance = %self.instance, "ALERT: fsync of the audit store hangs; statements are refused until it returns");
                Err(AuditError::Unavailable("audit fsync timed out".into()))
            }
        }
    }

    /// After a failed fsync, nothing more is committed to that file: reopen
    /// the store and reload the head from what it holds.
    fn recover_from_failed_sync(&mut self) {
        if self.syncer.as_ref().is_some_and(Syncer::take_failure) {
            self.head = None;
            self.backend.reset();
        }
    }
}

/// The fsync threads (see the module docs). Several, so that an fsync can
/// start as soon as a commit is written, even while earlier ones are still
/// in flight (with a slow disk the wait is the device's flush, which
/// overlaps); each answers every job its fsync covers.
struct Syncer {
    shared: Arc<SyncShared>,
    threads: Vec<JoinHandle<()>>,
    /// [`MAX_UNSYNCED`] permits; a job holds one until it is answered.
    capacity: Arc<Semaphore>,
}

struct SyncShared {
    state: std::sync::Mutex<SyncState>,
    work: std::sync::Condvar,
    /// Held while answering: taken before the state lock is let go, so
    /// jobs popped by two fsync threads are answered in commit order too.
    answering: std::sync::Mutex<()>,
    /// Set when an fsync failed; cleared by the writer.
    failed: AtomicBool,
    fsyncs: Arc<FsyncStats>,
}

/// Where fsyncs ran and how long the last one took.
#[derive(Default)]
pub(crate) struct FsyncStats {
    /// In microseconds.
    last_us: AtomicU64,
    /// Done on the writer's thread.
    inline: AtomicU64,
    /// Done on the fsync threads.
    threaded: AtomicU64,
}

#[derive(Default)]
struct SyncState {
    /// Unanswered jobs in commit order. Commits may need different files
    /// fsynced (the SQLite store's WAL or its commit log), but they are
    /// answered in commit order: a commit builds on the chain of the ones
    /// before it.
    jobs: std::collections::VecDeque<QueuedJob>,
    next_ticket: u64,
    /// A file whose fsync failed: never trusted again (the kernel may have
    /// dropped the pages that failed to write and report success next
    /// time), so its jobs fail without an fsync.
    poisoned: Option<Arc<File>>,
    closing: bool,
}

struct SyncJob {
    file: Arc<File>,
    answer: Acknowledge,
    _permit: Option<OwnedSemaphorePermit>,
}

struct QueuedJob {
    ticket: u64,
    job: SyncJob,
    /// An fsync of its file started after its commit.
    covered: bool,
    /// Set once known; answered when every job before it is.
    outcome: Option<std::result::Result<(), String>>,
}

impl Syncer {
    fn start(instance: &str, fsyncs: Arc<FsyncStats>) -> Option<Syncer> {
        let shared = Arc::new(SyncShared {
            state: std::sync::Mutex::new(SyncState::default()),
            work: std::sync::Condvar::new(),
            answering: std::sync::Mutex::new(()),
            failed: AtomicBool::new(false),
            fsyncs,
        });
        let mut threads = Vec::new();
        for index in 0..SYNC_THREADS {
            let thread_shared = shared.clone();
            let thread_instance = instance.to_owned();
            match std::thread::Builder::new()
                .name(format!("hoop-audit-sync-{index}"))
                .spawn(move || run_syncer(&thread_shared, &thread_instance))
            {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    tracing::warn!(%instance, %error, "cannot start an audit fsync thread");
                    break;
                }
            }
        }
        if threads.is_empty() {
            tracing::warn!(%instance, "no audit fsync thread; syncing inline");
            return None;
        }
        Some(Syncer {
            shared,
            threads,
            capacity: Arc::new(Semaphore::new(MAX_UNSYNCED)),
        })
    }

    fn submit(&self, job: SyncJob) {
        let mut state = lock(&self.shared.state);
        state.next_ticket += 1;
        let ticket = state.next_ticket;
        state.jobs.push_back(QueuedJob {
            ticket,
            job,
            covered: false,
            outcome: None,
        });
        drop(state);
        self.shared.work.notify_one();
    }

    /// Whether the fsync of a commit `callers` wait for is better done on
    /// the writer's thread: at least `min_callers` wait, none other is in
    /// flight and the last one was fast (see the module docs).
    fn may_sync_inline(&self, callers: usize, min_callers: usize) -> bool {
        let fast = self.shared.fsyncs.last_us.load(Ordering::Relaxed)
            < INLINE_FSYNC_UNDER.as_micros() as u64;
        callers >= min_callers && fast && lock(&self.shared.state).jobs.is_empty()
    }

    /// An fsync on the caller's thread, failing as one on the fsync threads
    /// does: the file is never trusted again and the writer reopens the
    /// store before its next commit.
    fn sync_inline(&self, file: &Arc<File>, instance: &str) -> Result<()> {
        let poisoned = lock(&self.shared.state)
            .poisoned
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, file));
        if poisoned {
            return Err(AuditError::Unavailable(
                "an earlier fsync of the audit store failed".into(),
            ));
        }
        let outcome = self.shared.timed_sync(file);
        self.shared.fsyncs.inline.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = &outcome {
            tracing::error!(
                %instance,
                %error,
                "ALERT: audit store fsync failed; statements are refused until it recovers"
            );
            lock(&self.shared.state).poisoned = Some(file.clone());
            self.shared.failed.store(true, Ordering::SeqCst);
        }
        outcome
    }

    /// Takes the failure flag (see [`Writer::recover_from_failed_sync`]).
    fn take_failure(&self) -> bool {
        self.shared.failed.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Syncer {
    /// Lets every submitted fsync finish and be answered.
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn lock(state: &std::sync::Mutex<SyncState>) -> std::sync::MutexGuard<'_, SyncState> {
    // The state stays consistent across a panic in an answer (each field is
    // updated in one step), so a poisoned lock is still usable.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One fsync thread: takes every job not yet covered by a started fsync
/// of the first such job's file (group commit again, at the fsync), fsyncs
/// once for them and records the outcome for every job of that file its
/// fsync covers, including ones another thread's fsync, started earlier,
/// has not finished yet. Jobs are answered in commit order, once every
/// job before them is; a failed fsync fails every job still unanswered.
fn run_syncer(shared: &SyncShared, instance: &str) {
    let mut state = lock(&shared.state);
    loop {
        let Some(file) = state
            .jobs
            .iter()
            .find(|queued| !queued.covered)
            .map(|queued| queued.job.file.clone())
        else {
            if state.closing {
                return;
            }
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        };
        let mut upto = 0;
        for queued in state.jobs.iter_mut() {
            if Arc::ptr_eq(&queued.job.file, &file) {
                queued.covered = true;
                upto = queued.ticket;
            }
        }
        let already_failed = state
            .poisoned
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &file));
        drop(state);

        let outcome = if already_failed {
            Err(AuditError::Unavailable(
                "an earlier fsync of the audit store failed".into(),
            ))
        } else {
            shared.fsyncs.threaded.fetch_add(1, Ordering::Relaxed);
            shared.timed_sync(&file)
        };

        state = lock(&shared.state);
        match &outcome {
            Ok(()) => {
                for queued in state.jobs.iter_mut() {
                    if Arc::ptr_eq(&queued.job.file, &file) && queued.ticket <= upto {
                        queued.outcome.get_or_insert(Ok(()));
                    }
                }
            }
            Err(error) => {
                let message = match error {
                    AuditError::Unavailable(message) => message.clone(),
                    other => other.to_string(),
                };
                if !already_failed {
                    tracing::error!(
                        %instance,
                        error = %message,
                        "ALERT: audit store fsync failed; statements are refused until it recovers"
                    );
                    state.poisoned = Some(file.clone());
                    shared.failed.store(true, Ordering::SeqCst);
                }
                // After a failure every job fails, even those a later
                // fsync (started or not) would seem to cover: later commits
                // build on this one.
                for queued in state.jobs.iter_mut() {
                    queued.outcome = Some(Err(message.clone()));
                }
            }
        }
        let mut done = Vec::new();
        while state
            .jobs
            .front()
            .is_some_and(|queued| queued.outcome.is_some())
        {
            done.extend(state.jobs.pop_front());
        }
        if done.is_empty() {
            continue;
        }
        // Taken before the state is let go: a thread popping later jobs
        // answers them after these.
        let turn = shared
            .answering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(state);
        for queued in done {
            (queued.job.answer)(match queued.outcome {
                Some(Ok(())) => Ok(()),
                Some(Err(message)) => Err(AuditError::Unavailable(message)),
                None => Err(AuditError::Unavailable("unanswered fsync".into())),
            });
        }
        drop(turn);
        state = lock(&shared.state);
    }
}

impl SyncShared {
    /// An fsync whose duration decides where the next one runs.
    fn timed_sync(&self, file: &File) -> Result<()> {
        let started = std::time::Instant::now();
        let outcome = sync_file(file);
        let took = started.elapsed().as_micros().min(u64::MAX as u128) as u64;
        self.fsyncs.last_us.store(took, Ordering::Relaxed);
        outcome
    }
}

fn sync_file(file: &File) -> Result<()> {
    file.sync_data()
        .map_err(|e| AuditError::Unavailable(format!("fsync of the audit store failed: {e}")))
}

fn refuse_appends(replies: Vec<Reply>, error: &AuditError) {
    let message = match error {
        AuditError::Unavailable(message) => message.clone(),
        other => other.to_string(),
    };
    for reply in replies {
        reply.send(Err(AuditError::Unavailable(message.clone())));
    }
}

fn refuse(request: Request, error: impl Fn() -> AuditError) {
    match request {
        Request::Append { reply, .. } => reply.send(Err(error())),
        Request::Checkpoint { reply, .. } | Request::Close { reply } => {
            drop(reply.send(Err(error())))
        }
        Request::Purge { reply, .. } => drop(reply.send(Err(error()))),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::sync::Mutex;

    use super::*;
    use crate::backend::EntryQuery;
    use crate::chain::ChainHash;

    /// An in-memory store whose commits need an fsync of `unsynced`.
    #[derive(Default)]
    struct Stored {
        entries: Vec<Entry>,
        /// Transactions that wrote entries.
        entry_commits: usize,
        resets: usize,
        unsynced: Option<Arc<File>>,
        /// Handed out after a reset (a reopened store).
        after_reset: Option<Arc<File>>,
        /// Appends of entries that fail before one succeeds again.
        failing_appends: usize,
    }

    struct MemoryBackend(Arc<Mutex<Stored>>);

    impl MemoryBackend {
        fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
            self.0.lock().expect("not poisoned")
        }
    }

    impl Backend for MemoryBackend {
        async fn head(&mut self, _instance: &str) -> Result<ChainHead> {
            Ok(match self.stored().entries.last() {
                Some(last) => ChainHead {
                    last_seq: last.seq,
                    head: last.hash,
                    last_time: last.time,
                },
                None => ChainHead::empty(),
            })
        }

        async fn append(&mut self, entries: &[Entry], _checkpoints: &[Checkpoint]) -> Result<()> {
            let mut stored = self.stored();
            if !entries.is_empty() && stored.failing_appends > 0 {
                stored.failing_appends -= 1;
                return Err(AuditError::Unavailable("store down".into()));
            }
            if !entries.is_empty() {
                stored.entry_commits += 1;
            }
            stored.entries.extend_from_slice(entries);
            Ok(())
        }

        async fn last_before(
            &mut self,
            _instance: &str,
            _before: Timestamp,
        ) -> Result<Option<(u64, ChainHash)>> {
            Ok(None)
        }

        async fn purge(&mut self, _: &str, _: u64, _: &Checkpoint) -> Result<u64> {
            Ok(0)
        }

        fn reset(&mut self) {
            let mut stored = self.stored();
            stored.resets += 1;
            stored.unsynced = stored.after_reset.clone();
        }

        async fn load_entries(&mut self, _query: &EntryQuery) -> Result<Vec<Entry>> {
            Ok(self.stored().entries.clone())
        }

        async fn load_checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
            Ok(Vec::new())
        }

        fn unsynced_file(&self) -> Option<Arc<File>> {
            self.stored().unsynced.clone()
        }
    }

    fn syncable_file(dir: &tempfile::TempDir, name: &str) -> Arc<File> {
        Arc::new(File::create(dir.path().join(name)).expect("file"))
    }

    /// A store whose commits need an fsync of a file in `dir`.
    fn needing_fsyncs(dir: &tempfile::TempDir) -> Arc<Mutex<Stored>> {
        Arc::new(Mutex::new(Stored {
            unsynced: Some(syncable_file(dir, "wal")),
            ..Stored::default()
        }))
    }

    /// fsync of a socket fails (EINVAL), as a failing disk would.
    fn failing_file() -> Arc<File> {
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        Arc::new(File::from(OwnedFd::from(socket)))
    }

    fn start(stored: Arc<Mutex<Stored>>) -> (mpsc::UnboundedSender<Request>, JoinHandle<()>) {
        let (requests, thread, _) = start_with_stats(stored, INLINE_FSYNC_CALLERS);
        (requests, thread)
    }

    /// [`start`], and where the writer's fsyncs run; a commit with
    /// `inline_callers` callers may be fsynced on the writer's thread.
    fn start_with_stats(
        stored: Arc<Mutex<Stored>>,
        inline_callers: usize,
    ) -> (
        mpsc::UnboundedSender<Request>,
        JoinHandle<()>,
        Arc<FsyncStats>,
    ) {
        let (requests, receiver) = mpsc::unbounded_channel();
        let mut writer = Writer::new(
            MemoryBackend(stored),
            "gw-test".into(),
            CheckpointSigner::from_seed("test", &[7; 32]),
            Duration::from_secs(3600),
        );
        writer.inline_callers = inline_callers;
        let fsyncs = writer.fsyncs.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(writer.run(receiver));
        });
        (requests, thread, fsyncs)
    }

    /// Makes the last fsync seem slow (longer than [`INLINE_FSYNC_UNDER`]:
    /// the next goes to the fsync threads) or fast (it runs on the writer's
    /// thread), whatever this disk's fsyncs take.
    fn seem(fsyncs: &FsyncStats, slow: bool) {
        let last = if slow {
            INLINE_FSYNC_UNDER.as_micros() as u64 * 5
        } else {
            0
        };
        fsyncs.last_us.store(last, Ordering::Relaxed);
    }

    fn fsync_counts(fsyncs: &FsyncStats) -> (u64, u64) {
        (
            fsyncs.inline.load(Ordering::Relaxed),
            fsyncs.threaded.load(Ordering::Relaxed),
        )
    }

    #[tokio::test]
    async fn fast_fsyncs_run_on_the_writers_thread_and_slow_ones_on_the_fsync_threads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stored = needing_fsyncs(&dir);
        let (requests, thread, fsyncs) = start_with_stats(stored, 1);
        let expected = [
            (false, (1, 0)),
            (false, (2, 0)),
            (true, (2, 1)),
            (false, (3, 1)),
        ];
        for (seq, (slow, counts)) in (1..).zip(expected) {
            seem(&fsyncs, slow);
            let text = format!("record {seq}");
            assert_eq!(append(&requests, &text).await.expect("durable"), seq);
            assert_eq!(fsync_counts(&fsyncs), counts, "after record {seq}");
        }
        drop(requests);
        thread.join().expect("writer thread");
    }

    async fn append(requests: &mpsc::UnboundedSender<Request>, text: &str) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            kind: "test",
            session_id: None,
            payload: format!("{{\"text\":\"{text}\"}}"),
        };
        requests
            .send(Request::Append {
                pending,
                reply: Reply::Waiting { reply, home: None },
                _slot: None,
            })
            .expect("writer running");
        answer.await.expect("answered")
    }

    #[tokio::test]
    async fn a_commit_only_one_caller_waits_for_is_fsynced_on_the_fsync_threads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stored = needing_fsyncs(&dir);
        let (requests, thread, fsyncs) = start_with_stats(stored, INLINE_FSYNC_CALLERS);
        seem(&fsyncs, false);
        assert_eq!(append(&requests, "alone").await.expect("durable"), 1);
        assert_eq!(fsync_counts(&fsyncs), (0, 1));
        drop(requests);
        thread.join().expect("writer thread");
    }

    /// Commits needing different files fsynced (the SQLite store's WAL and
    /// its commit log) are answered in commit order, and one whose fsync
    /// failed fails the ones after it, whose chain builds on it.
    #[test]
    fn commits_of_two_files_are_answered_in_order_and_a_failure_fails_those_after_it() {
        let syncer = Syncer::start("gw-test", Arc::default()).expect("fsync threads");
        let dir = tempfile::tempdir().expect("temp dir");
        let (answers, answered) = std::sync::mpsc::channel();
        // Two commits queued at once, before any fsync thread looks.
        let submit_two = |jobs: [(&'static str, Arc<File>); 2]| {
            let mut state = lock(&syncer.shared.state);
            for (name, file) in jobs {
                let answers = answers.clone();
                state.next_ticket += 1;
                let ticket = state.next_ticket;
                state.jobs.push_back(QueuedJob {
                    ticket,
                    job: SyncJob {
                        file,
                        answer: Box::new(move |result| {
                            let _ = answers.send((name, result.is_ok()));
                        }),
                        _permit: None,
                    },
                    covered: false,
                    outcome: None,
                });
            }
            drop(state);
            syncer.shared.work.notify_all();
        };
        let next = || {
            answered
                .recv_timeout(Duration::from_secs(10))
                .expect("answered")
        };
        submit_two([
            ("wal", syncable_file(&dir, "wal")),
            ("log", syncable_file(&dir, "log")),
        ]);
        assert_eq!([next(), next()], [("wal", true), ("log", true)]);
        submit_two([
            ("failing", failing_file()),
            ("after", syncable_file(&dir, "log-2")),
        ]);
        assert_eq!([next(), next()], [("failing", false), ("after", false)]);
    }

    #[test]
    fn an_fsync_runs_on_the_writers_thread_only_when_fast_alone_and_several_wait() {
        let fsyncs = Arc::new(FsyncStats::default());
        let syncer = Syncer::start("gw-test", fsyncs.clone()).expect("fsync threads");
        let min = INLINE_FSYNC_CALLERS;
        seem(&fsyncs, false);
        assert!(syncer.may_sync_inline(min, min));
        assert!(syncer.may_sync_inline(min + 5, min));
        assert!(!syncer.may_sync_inline(min - 1, min));
        seem(&fsyncs, true);
        assert!(!syncer.may_sync_inline(min, min));
        seem(&fsyncs, false);
        // A commit still waiting for its fsync on the fsync threads (taken
        // by one already: no fsync thread takes it again).
        let dir = tempfile::tempdir().expect("temp dir");
        let job = SyncJob {
            file: syncable_file(&dir, "wal"),
            answer: Box::new(|_| {}),
            _permit: None,
        };
        lock(&syncer.shared.state).jobs.push_back(QueuedJob {
            ticket: 0,
            job,
            covered: true,
            outcome: None,
        });
        assert!(!syncer.may_sync_inline(min, min));
        lock(&syncer.shared.state).jobs.clear();
        assert!(syncer.may_sync_inline(min, min));
    }

    /// A failed fsync, on the writer's thread or on the fsync threads.
    async fn failed_fsync_refuses_its_batch_and_the_writer_recovers_without_a_gap(slow: bool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let stored = Arc::new(Mutex::new(Stored {
            unsynced: Some(syncable_file(&dir, "wal-1")),
            after_reset: Some(syncable_file(&dir, "wal-2")),
            ..Stored::default()
        }));
        let (requests, thread, fsyncs) = start_with_stats(stored.clone(), 1);
        seem(&fsyncs, slow);
        assert_eq!(append(&requests, "one").await.expect("durable"), 1);

        stored.lock().expect("lock").unsynced = Some(failing_file());
        seem(&fsyncs, slow);
        let refused = append(&requests, "two").await;
        assert!(
            matches!(&refused, Err(AuditError::Unavailable(message)) if message.contains("fsync")),
            "{refused:?}"
        );

        // The writer reopened the store and goes on from what it holds.
        assert_eq!(append(&requests, "three").await.expect("durable"), 3);
        let (reply, answer) = oneshot::channel();
        requests.send(Request::Close { reply }).expect("running");
        let sealed = answer.await.expect("answered").expect("closed");
        assert_eq!(sealed.length, 3);
        thread.join().expect("writer thread");

        let stored = stored.lock().expect("lock");
        assert_eq!(stored.resets, 1);
        let entries = &stored.entries;
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "no gap in the chain");
        }
        assert_eq!(sealed.head_hash, entries[2].hash);
        // "one" and the failed "two" went where they were meant to.
        let (inline, threaded) = fsync_counts(&fsyncs);
        let meant = if slow { threaded } else { inline };
        assert!(meant >= 2, "{inline} inline, {threaded} threaded");
    }

    #[tokio::test]
    async fn failed_inline_fsync_refuses_its_batch_and_the_writer_recovers_without_a_gap() {
        failed_fsync_refuses_its_batch_and_the_writer_recovers_without_a_gap(false).await;
    }

    #[tokio::test]
    async fn failed_threaded_fsync_refuses_its_batch_and_the_writer_recovers_without_a_gap() {
        failed_fsync_refuses_its_batch_and_the_writer_recovers_without_a_gap(true).await;
    }

    fn detached(text: &str) -> Request {
        Request::Append {
            pending: Pending {
                kind: "test",
                session_id: None,
                payload: format!("{{\"text\":\"{text}\"}}"),
            },
            reply: Reply::Detached {
                session_id: "s1".into(),
                sequence: 1,
            },
            _slot: None,
        }
    }

    #[tokio::test]
    async fn detached_records_outlive_a_failed_commit() {
        let stored = Arc::new(Mutex::new(Stored {
            failing_appends: 2,
            ..Stored::default()
        }));
        let (requests, thread) = start(stored.clone());

        // Its commit fails; so does the next one, which a waiting caller
        // is told about. The detached record is kept and written once the
        // store takes writes again, before what comes after it.
        requests.send(detached("outcome")).expect("running");
        tokio::time::sleep(DETACHED_LINGER * 3).await;
        assert!(stored.lock().expect("lock").entries.is_empty());
        let refused = append(&requests, "refused").await;
        assert!(
            matches!(refused, Err(AuditError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(append(&requests, "next").await.expect("durable"), 2);

        let (reply, answer) = oneshot::channel();
        requests.send(Request::Close { reply }).expect("running");
        answer.await.expect("answered").expect("closed");
        thread.join().expect("writer thread");
        let payloads: Vec<String> = stored
            .lock()
            .expect("lock")
            .entries
            .iter()
            .map(|e| e.payload.clone())
            .collect();
        assert_eq!(
            payloads,
            vec![
                "{\"text\":\"outcome\"}".to_owned(),
                "{\"text\":\"next\"}".to_owned()
            ]
        );
    }

    #[tokio::test]
    async fn detached_records_wait_for_company_but_not_forever() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stored = needing_fsyncs(&dir);
        let (requests, thread) = start(stored.clone());

        // Alone, it is written once the linger is over.
        requests.send(detached("alone")).expect("running");
        tokio::time::sleep(DETACHED_LINGER * 5).await;
        assert_eq!(stored.lock().expect("lock").entries.len(), 1);

        // Followed by a record someone waits for, it goes in before it,
        // in the same commit.
        requests.send(detached("first")).expect("running");
        assert_eq!(append(&requests, "second").await.expect("durable"), 3);
        assert_eq!(stored.lock().expect("lock").entry_commits, 2);
        let payloads: Vec<String> = stored
            .lock()
            .expect("lock")
            .entries
            .iter()
            .map(|e| e.payload.clone())
            .collect();
        assert_eq!(
            payloads,
            vec![
                "{\"text\":\"alone\"}",
                "{\"text\":\"first\"}",
                "{\"text\":\"second\"}"
            ]
        );
        drop(requests);
        thread.join().expect("writer thread");
    }

    #[tokio::test]
    async fn controls_alone_in_a_batch_are_answered_with_a_syncer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stored = needing_fsyncs(&dir);
        let (requests, thread) = start(stored);
        append(&requests, "one").await.expect("durable");
        // Each control, with nothing else queued, holds the batch's slot
        // for a commit awaiting its fsync; none may wait on itself.
        for _ in 0..=MAX_UNSYNCED {
            let (reply, answer) = oneshot::channel();
            requests
                .send(Request::Checkpoint {
                    kind: CheckpointKind::Manual,
                    reply,
                })
                .expect("running");
            answer.await.expect("answered").expect("checkpoint");
        }
        let (reply, answer) = oneshot::channel();
        requests.send(Request::Close { reply }).expect("running");
        answer.await.expect("answered").expect("closed");
        thread.join().expect("writer thread");
    }
}
