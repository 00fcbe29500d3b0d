//! The embedded store: one SQLite file in WAL mode.
//!
//! `sqlite_synchronous = "full"` by default: no record is acknowledged
//! before the WAL holding it has been fsynced, so an acknowledged record
//! survives power loss, not only a process crash. Group commit makes that
//! affordable: one fsync covers every record of a batch.
//!
//! The fsync is not done inside SQLite's commit. The connection runs with
//! `PRAGMA synchronous = NORMAL` and the writer fsyncs the WAL file itself
//! (`unsynced_file`) on threads of its own, before it answers anyone,
//! while the next batch is already being written. In WAL
//! mode `FULL` differs from `NORMAL` only by that fsync of the WAL at each
//! commit (both sync the WAL header when the log restarts and the WAL and
//! the database around every checkpoint), so the durability is the same;
//! what changes is that the fsync no longer stalls the writer (and that a
//! reader may see a record a moment before it is durable, before anyone
//! was told it is). A WAL is a
//! log: after a crash SQLite recovers a prefix of the commits (frames carry
//! cumulative checksums), so records are lost, if ever, from the tail and
//! never from the middle of a chain.
//!
//! A commit is made durable in the store's commit log instead
//! (`backend::log`: one write and one fsync). While commits follow one
//! another closely (a batch that several callers wait for), its entries go
//! into the tables later, many commits' at once ([`Backend::settle`],
//! starting at most [`SETTLE_AFTER`] later, [`SETTLE_CHUNK`] at a time, and
//! before anything reads or checkpoints the chain); after a commit only
//! one caller waits for (an idle gateway, a single client), sooner (see
//! `writer::LONE_CALLERS`). Where the log cannot take a commit (the last
//! settle failed), it goes into the tables, taking the logged entries with
//! it. Opening the store moves whatever the log holds into the tables
//! first, and a clean shutdown empties the log. Readers (`hoop audit`)
//! see the tables and, read from the logs without their locks, the logged
//! entries that continue the tables' chains (`log::read_logs`): every
//! acknowledged record, also after a crash before the gateway starts
//! again.
//!
//! `NORMAL` is available for slow disks (see [`SqliteSync`]).

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::log::{self, log_path, CommitLog};
use super::{checkpoint_kind_from_db, from_db_seq, hash_from_db, to_db_seq, Backend, EntryQuery};
use crate::chain::{ChainHash, ChainHead, Entry};
use crate::checkpoint::Checkpoint;
use crate::config::{AuditConfig, SqliteSync};
use crate::error::{AuditError, Result};
use hoop_common::time::Timestamp;

const SCHEMA: &str = include_str!("../../sql/sqlite.sql");

/// How long a write waits for a lock held by another process (a reader's
/// WAL checkpoint, a second gateway) before the statement is refused.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Page cache of the writer's connection, in KiB (SQLite's default is
/// 2 MiB): keeps the b-tree pages an append touches in memory once the
/// file is large.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Logged entries start going into the tables at most this long after the
/// first of them was logged ...
const SETTLE_AFTER: Duration = Duration::from_millis(20);

/// ... or once no commit was logged for this long ...
const SETTLE_IDLE: Duration = Duration::from_millis(2);

/// ... this many per transaction. A settle holds the writer (every commit
/// waits for it): 1,500 entries at once held it about 13 ms, and 8
/// clients' 99.9th percentile went from 3 to 13 ms. With 8 clients
/// (`pgbench -S -M prepared -l`, two runs each, alternated), 64 against
/// 256: p99 1.20–1.34 against 1.51–1.72 ms, p99.9 3.9–4.4 against 5.5–6.7
/// ms, p50 and CPU per statement the same.
const SETTLE_CHUNK: usize = 64;

pub(crate) struct SqliteBackend {
    path: PathBuf,
    writer: bool,
    synchronous: SqliteSync,
    connection: Option<Connection>,
    /// The writer's own handle on the WAL file of `connection`, which it
    /// fsyncs after each commit (`synchronous = FULL` only).
    wal: Option<Arc<File>>,
    /// The chain this writer appends to (its commit log's owner).
    instance: String,
    /// Whether commits may go to a commit log (`synchronous = FULL`, WAL
    /// mode, the gateway's own writer).
    logging: bool,
    log: Option<CommitLog>,
    /// Entries durable in the log and not yet in the tables, in order.
    pending: VecDeque<Entry>,
    /// When the first of `pending` and the last commit were logged.
    first_logged: Option<Instant>,
    last_logged: Option<Instant>,
    /// The last settle failed: commits go to the tables (and fail there)
    /// until one succeeds, so a store whose tables cannot be written
    /// refuses statements instead of filling its log.
    settle_failed: bool,
    /// Which file the last commit needs fsynced.
    last_commit: Commit,
}

#[derive(Clone, Copy)]
enum Commit {
    Tables,
    Log,
}

impl SqliteBackend {
    pub(crate) fn open_writer(config: &AuditConfig) -> Result<SqliteBackend> {
        let mut backend = SqliteBackend::new(config, true)?;
        backend.logging = config.commit_log && config.sqlite_synchronous == SqliteSync::Full;
        backend.connection()?;
        Ok(backend)
    }

    pub(crate) fn open_reader(config: &AuditConfig) -> Result<SqliteBackend> {
        let mut backend = SqliteBackend::new(config, false)?;
        backend.connection()?;
        Ok(backend)
    }

    fn new(config: &AuditConfig, writer: bool) -> Result<SqliteBackend> {
        Ok(SqliteBackend {
            path: sqlite_path(config)?,
            writer,
            synchronous: config.sqlite_synchronous,
            connection: None,
            wal: None,
            instance: config.instance_id.clone(),
            logging: false,
            log: None,
            pending: VecDeque::new(),
            first_logged: None,
            last_logged: None,
            settle_failed: false,
            last_commit: Commit::Tables,
        })
    }

    fn connection(&mut self) -> Result<&mut Connection> {
        if self.connection.is_none() {
            let (connection, wal) = if self.writer {
                self.connect_writer()?
            } else {
                (self.connect_reader()?, None)
            };
            self.connection = Some(connection);
            self.wal = wal.map(Arc::new);
            if self.logging && self.wal.is_some() {
                if let Err(error) = self.open_log() {
                    self.reset();
                    return Err(error);
                }
            }
        }
        self.connection
            .as_mut()
            .ok_or_else(|| AuditError::Unavailable("sqlite connection lost".into()))
    }

    /// Opens the commit log, moves what it holds into the tables, makes
    /// them durable and starts the log again.
    fn open_log(&mut self) -> Result<()> {
        let path = log_path(&self.path, &self.instance);
        let (mut log, logged) = CommitLog::open(&path, &self.instance)?;
        if !logged.is_empty() {
            let recovered = self.recover(&logged)?;
            if recovered > 0 {
                tracing::info!(
                    instance = %self.instance,
                    entries = recovered,
                    "audit entries recovered from the commit log"
                );
            }
        }
        log.restart()?;
        self.log = Some(log);
        Ok(())
    }

    /// Inserts the logged entries that continue the stored chain, durably;
    /// returns how many. Entries already stored are skipped; the first
    /// that does not link to the chain's head ends it (a commit that
    /// follows one lost from the tables: never acknowledged, since
    /// commits are answered in order).
    fn recover(&mut self, logged: &[Entry]) -> Result<usize> {
        let head = stored_head(self.connection_ref()?, &self.instance)?;
        let (follow, gap) = continuing(head, logged);
        if let Some(seq) = gap {
            tracing::warn!(
                instance = %self.instance,
                seq,
                "the commit log holds entries after a gap in the chain; they were never acknowledged and are dropped"
            );
        }
        if follow.is_empty() {
            return Ok(0);
        }
        let instance = self.instance.clone();
        let connection = self
            .connection
            .as_mut()
            .ok_or_else(|| AuditError::Unavailable("sqlite connection lost".into()))?;
        let transaction = connection.transaction()?;
        insert_entries(&transaction, follow.iter().copied(), &instance)?;
        transaction.commit()?;
        self.sync_tables()?;
        Ok(follow.len())
    }

    fn connection_ref(&self) -> Result<&Connection> {
        self.connection
            .as_ref()
            .ok_or_else(|| AuditError::Unavailable("sqlite connection lost".into()))
    }

    /// Makes what the tables hold durable (fsync of the WAL).
    fn sync_tables(&self) -> Result<()> {
        if let Some(wal) = &self.wal {
            wal.sync_data().map_err(|e| {
                AuditError::Unavailable(format!("fsync of the audit store failed: {e}"))
            })?;
        }
        Ok(())
    }

    /// Writes the logged entries, then `entries` and `checkpoints`, into
    /// the tables in one transaction (not yet fsynced).
    fn commit_tables(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let committed = self.try_commit_tables(&pending, entries, checkpoints);
        match committed {
            Ok(()) => {
                self.first_logged = None;
                self.settle_failed = false;
                self.last_commit = Commit::Tables;
                Ok(())
            }
            Err(error) => {
                self.pending = pending;
                Err(error)
            }
        }
    }

    fn try_commit_tables(
        &mut self,
        pending: &VecDeque<Entry>,
        entries: &[Entry],
        checkpoints: &[Checkpoint],
    ) -> Result<()> {
        let instance = self.instance.clone();
        let connection = self.connection()?;
        let transaction = connection.transaction()?;
        insert_entries(&transaction, pending.iter().chain(entries), &instance)?;
        for checkpoint in checkpoints {
            insert_checkpoint(&transaction, checkpoint)?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Makes sure the tables hold every logged entry (before anything
    /// reads the chain from them).
    fn settle_all(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.commit_tables(&[], &[])
    }

    /// The writer's connection and, for `synchronous = FULL`, the WAL it
    /// fsyncs itself.
    fn connect_writer(&self) -> Result<(Connection, Option<File>)> {
        let connection = Connection::open(&self.path)?;
        let mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        let in_wal = mode.eq_ignore_ascii_case("wal");
        if !in_wal {
            tracing::warn!(path = %self.path.display(), %mode, "the audit file cannot use WAL mode; commits will be slower");
        }
        let synchronous = match self.synchronous {
            // See the module docs: the writer fsyncs the WAL after commit.
            SqliteSync::Full if in_wal => "NORMAL",
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        connection.pragma_update(None, "synchronous", synchronous)?;
        connection.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.execute_batch(SCHEMA)?;
        let wal = if in_wal && self.synchronous == SqliteSync::Full {
            Some(self.open_wal()?)
        } else {
            None
        };
        Ok((connection, wal))
    }

    fn connect_reader(&self) -> Result<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            AuditError::Unavailable(format!("cannot open {}: {e}", self.path.display()))
        })?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        Ok(connection)
    }

    /// The WAL of a connection that has read the database in WAL mode
    /// exists (SQLite creates it on first use and keeps it while any
    /// connection is open). Read-only is enough to fsync it; SQLite holds
    /// no locks on the WAL itself, so this handle cannot disturb its own.
    fn open_wal(&self) -> Result<File> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        File::open(&wal).map_err(|e| {
            AuditError::Unavailable(format!(
                "cannot open {} to fsync it: {e}",
                PathBuf::from(wal).display()
            ))
        })
    }
}

fn sqlite_path(config: &AuditConfig) -> Result<PathBuf> {
    config
        .path
        .clone()
        .ok_or_else(|| AuditError::Config("store = \"sqlite\" needs `path`".into()))
}

/// A unique-key violation means another writer took our sequence numbers.
fn append_error(error: rusqlite::Error, instance: &str) -> AuditError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.code == ErrorCode::ConstraintViolation =>
        {
            AuditError::Conflict {
                instance: instance.to_owned(),
            }
        }
        _ => AuditError::from(error),
    }
}

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok(RawEntry {
        instance: row.get(0)?,
        seq: row.get(1)?,
        time_us: row.get(2)?,
        kind: row.get(3)?,
        session_id: row.get(4)?,
        payload: row.get(5)?,
        prev_hash: row.get(6)?,
        hash: row.get(7)?,
    })
}

/// A row as stored, before its values are checked.
struct RawEntry {
    instance: String,
    seq: i64,
    time_us: i64,
    kind: String,
    session_id: Option<String>,
    payload: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl RawEntry {
    fn into_entry(self) -> Result<Entry> {
        Ok(Entry {
            instance: self.instance,
            seq: from_db_seq(self.seq)?,
            time: Timestamp::from_unix_micros(self.time_us),
            kind: self.kind,
            session_id: self.session_id,
            payload: self.payload,
            prev_hash: hash_from_db(&self.prev_hash, "prev_hash")?,
            hash: hash_from_db(&self.hash, "hash")?,
        })
    }
}

impl Backend for SqliteBackend {
    async fn head(&mut self, instance: &str) -> Result<ChainHead> {
        self.settle_all()?;
        Ok(stored_head(self.connection()?, instance)?.unwrap_or_else(ChainHead::empty))
    }

    async fn append(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()> {
        self.commit_tables(entries, checkpoints)
    }

    /// Into the commit log while it is open and the tables take what it
    /// holds; else into the tables.
    async fn append_logged(&mut self, entries: Vec<Entry>) -> Result<()> {
        self.connection()?;
        if self.settle_failed {
            return self.commit_tables(&entries, &[]);
        }
        let Some(log) = self.log.as_mut() else {
            return self.commit_tables(&entries, &[]);
        };
        if !log.append(&entries)? {
            // The log is full: its entries go into the tables, durably,
            // and it starts again.
            self.settle_all()?;
            self.sync_tables()?;
            let log = self
                .log
                .as_mut()
                .ok_or_else(|| AuditError::Unavailable("audit commit log lost".into()))?;
            log.restart()?;
            if !log.append(&entries)? {
                return Err(AuditError::Unavailable(
                    "an audit commit does not fit its log".into(),
                ));
            }
        }
        let now = Instant::now();
        self.first_logged.get_or_insert(now);
        self.last_logged = Some(now);
        self.pending.extend(entries);
        self.last_commit = Commit::Log;
        Ok(())
    }

    fn settle_at(&self) -> Option<Instant> {
        let first = self.first_logged?;
        let idle = self.last_logged.unwrap_or(first) + SETTLE_IDLE;
        Some(idle.min(first + SETTLE_AFTER))
    }

    /// At most [`SETTLE_CHUNK`] entries at a time: the writer commits
    /// what waits in between.
    async fn settle(&mut self) -> Result<()> {
        let take = self.pending.len().min(SETTLE_CHUNK);
        let chunk: VecDeque<Entry> = self.pending.drain(..take).collect();
        match self.try_commit_tables(&chunk, &[], &[]) {
            Ok(()) => {
                if let Some(wal) = &self.wal {
                    start_writeback(wal);
                }
                if self.pending.is_empty() {
                    self.first_logged = None;
                }
                self.settle_failed = false;
                Ok(())
            }
            Err(error) => {
                let rest = std::mem::replace(&mut self.pending, chunk);
                self.pending.extend(rest);
                self.settle_failed = true;
                // Tried again at the next commit (which goes to the
                // tables), not in a loop.
                self.first_logged = None;
                Err(error)
            }
        }
    }

    fn unsettled(&self) -> usize {
        self.pending.len()
    }

    async fn empty_log(&mut self) -> Result<()> {
        if self.log.is_none() {
            return Ok(());
        }
        self.settle_all()?;
        self.sync_tables()?;
        match self.log.as_mut() {
            Some(log) => log.restart(),
            None => Ok(()),
        }
    }

    async fn last_before(
        &mut self,
        instance: &str,
        before: Timestamp,
    ) -> Result<Option<(u64, ChainHash)>> {
        self.settle_all()?;
        let connection = self.connection()?;
        let last: Option<(i64, Vec<u8>)> = connection
            .query_row(
                "SELECT seq, hash FROM audit_entries WHERE instance = ?1 AND time_us < ?2 \
                 ORDER BY seq DESC LIMIT 1",
                params![instance, before.unix_micros()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        last.map(|(seq, hash)| Ok((from_db_seq(seq)?, hash_from_db(&hash, "hash")?)))
            .transpose()
    }

    async fn purge(
        &mut self,
        instance: &str,
        through_seq: u64,
        anchor: &Checkpoint,
    ) -> Result<u64> {
        let through = to_db_seq(through_seq)?;
        self.settle_all()?;
        let connection = self.connection()?;
        let transaction = connection.transaction()?;
        let deleted = transaction.execute(
            "DELETE FROM audit_entries WHERE instance = ?1 AND seq <= ?2",
            params![instance, through],
        )?;
        transaction.execute(
            "DELETE FROM audit_checkpoints WHERE instance = ?1 AND length <= ?2",
            params![instance, through],
        )?;
        insert_checkpoint(&transaction, anchor)?;
        transaction.commit()?;
        self.last_commit = Commit::Tables;
        Ok(deleted as u64)
    }

    /// Logged entries not yet in the tables stay in the log, which the
    /// reopened store moves into them.
    fn reset(&mut self) {
        self.log = None;
        self.pending.clear();
        self.first_logged = None;
        self.last_logged = None;
        self.settle_failed = false;
        self.last_commit = Commit::Tables;
        self.connection = None;
        self.wal = None;
    }

    /// The log after a logged commit; else the WAL for
    /// `synchronous = FULL` (see the module docs); nothing for `NORMAL`.
    fn unsynced_file(&self) -> Option<Arc<File>> {
        match (self.last_commit, &self.log) {
            (Commit::Log, Some(log)) => Some(log.file()),
            _ => self.wal.clone(),
        }
    }

    async fn load_entries(&mut self, query: &EntryQuery) -> Result<Vec<Entry>> {
        // Only the filters given, so SQLite can use the time index for a
        // window (`?1 IS NULL OR …` would force a full scan).
        let mut sql = String::from(
            "SELECT instance, seq, time_us, kind, session_id, payload, prev_hash, hash \
             FROM audit_entries WHERE 1 = 1",
        );
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(since) = query.since {
            values.push(since.unix_micros().into());
            sql.push_str(&format!(" AND time_us >= ?{}", values.len()));
        }
        if let Some(until) = query.until {
            values.push(until.unix_micros().into());
            sql.push_str(&format!(" AND time_us < ?{}", values.len()));
        }
        if let Some(session_id) = &query.session_id {
            values.push(session_id.clone().into());
            sql.push_str(&format!(" AND session_id = ?{}", values.len()));
        }
        sql.push_str(" ORDER BY instance, seq");
        self.settle_all()?;
        let reader = !self.writer;
        let path = self.path.clone();
        let connection = self.connection()?;
        // One snapshot of the tables for the rows and the heads the
        // logged entries must follow.
        let snapshot = connection.transaction()?;
        let mut entries = Vec::new();
        {
            let mut statement = snapshot.prepare(&sql)?;
            let rows =
                statement.query_map(rusqlite::params_from_iter(values.iter()), entry_from_row)?;
            for row in rows {
                entries.push(row?.into_entry()?);
            }
        }
        if reader {
            // What a gateway has made durable in its commit log and not
            // yet moved into the tables (within milliseconds while it
            // runs; at its next start after a crash) is part of the
            // chain: a reader shows it too.
            let mut added = false;
            for (instance, logged) in log::read_logs(&path) {
                let head = stored_head(&snapshot, &instance)?;
                let (follow, _) = continuing(head, &logged);
                for entry in follow {
                    if query.since.is_none_or(|since| entry.time >= since)
                        && query.until.is_none_or(|until| entry.time < until)
                        && (query.session_id.is_none() || entry.session_id == query.session_id)
                    {
                        entries.push(entry.clone());
                        added = true;
                    }
                }
            }
            if added {
                entries.sort_by(|a, b| (&a.instance, a.seq).cmp(&(&b.instance, b.seq)));
            }
        }
        snapshot.finish()?;
        Ok(entries)
    }

    async fn load_checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
        self.settle_all()?;
        let connection = self.connection()?;
        let mut statement = connection.prepare(
            "SELECT instance, kind, length, head_hash, time_us, key_id, signature \
             FROM audit_checkpoints ORDER BY instance, length, time_us",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, String>(6)?,
            ))
        })?;
        let mut checkpoints = Vec::new();
        for row in rows {
            let (instance, kind, length, head_hash, time_us, key_id, signature) = row?;
            checkpoints.push(Checkpoint {
                instance,
                kind: checkpoint_kind_from_db(&kind)?,
                length: from_db_seq(length)?,
                head_hash: hash_from_db(&head_hash, "checkpoint head")?,
                time: Timestamp::from_unix_micros(time_us),
                key_id,
                signature,
            });
        }
        Ok(checkpoints)
    }
}

fn insert_checkpoint(
    transaction: &rusqlite::Transaction<'_>,
    checkpoint: &Checkpoint,
) -> Result<()> {
    transaction
        .prepare_cached(
            "INSERT INTO audit_checkpoints (instance, kind, length, head_hash, time_us, key_id, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            checkpoint.instance,
            checkpoint.kind.as_str(),
            to_db_seq(checkpoint.length)?,
            &checkpoint.head_hash.0[..],
            checkpoint.time.unix_micros(),
            checkpoint.key_id,
            checkpoint.signature,
        ])?;
    Ok(())
}

/// Starts writing `file`'s dirty pages to the disk without waiting for
/// them. After each settle: the pages settles write into the WAL are
/// fsynced only when the log starts again (or SQLite checkpoints), and an
/// fsync of all of them at once held the writer, and every commit queued
/// behind it, for several ms. Written out as they come, what that fsync
/// still has to write is little. Measured with 8 clients (`pgbench -S -M
/// prepared -l`, two runs each, alternated): p99.9 7.4–8.2 → 5.7–6.3 ms,
/// p50 and CPU per statement the same. Only a hint: a failure changes
/// nothing (the fsync that counts reports it).
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor `file` keeps open for
        // the call; it reads and writes no memory of ours.
        let _ =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Inserts entries in order; a unique-key violation is a [`AuditError::Conflict`].
fn insert_entries<'a>(
    transaction: &rusqlite::Transaction<'_>,
    entries: impl IntoIterator<Item = &'a Entry>,
    instance: &str,
) -> Result<()> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO audit_entries (instance, seq, time_us, kind, session_id, payload, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for entry in entries {
        insert
            .execute(params![
                entry.instance,
                to_db_seq(entry.seq)?,
                entry.time.unix_micros(),
                entry.kind,
                entry.session_id,
                entry.payload,
                &entry.prev_hash.0[..],
                &entry.hash.0[..],
            ])
            .map_err(|e| append_error(e, instance))?;
    }
    Ok(())
}

/// The logged entries that continue a chain stored up to `head`, in order:
/// those already stored are skipped, and the first that does not link
/// ends them (its seq is returned: a commit that follows one lost from
/// the tables, never acknowledged since commits are answered in order).
fn continuing(head: Option<ChainHead>, logged: &[Entry]) -> (Vec<&Entry>, Option<u64>) {
    let (mut last_seq, mut last_hash) = head.map_or((0, None), |h| (h.last_seq, Some(h.head)));
    let stored = last_seq;
    let mut follow = Vec::new();
    for entry in logged.iter().filter(|e| e.seq > stored) {
        let links =
            entry.seq == last_seq + 1 && last_hash.is_none_or(|hash| hash == entry.prev_hash);
        if !links {
            return (follow, Some(entry.seq));
        }
        last_seq = entry.seq;
        last_hash = Some(entry.hash);
        follow.push(entry);
    }
    (follow, None)
}

/// Where `instance`'s stored chain ends: its last entry, else its latest
/// purge anchor (`None`: empty).
fn stored_head(connection: &Connection, instance: &str) -> Result<Option<ChainHead>> {
    let last: Option<(i64, Vec<u8>, i64)> = connection
        .query_row(
            "SELECT seq, hash, time_us FROM audit_entries WHERE instance = ?1 ORDER BY seq DESC LIMIT 1",
            params![instance],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let last = match last {
        Some(last) => Some(last),
        None => connection
            .query_row(
                "SELECT length, head_hash, time_us FROM audit_checkpoints \
                 WHERE instance = ?1 AND kind = 'purge_anchor' ORDER BY length DESC LIMIT 1",
                params![instance],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?,
    };
    last.map(|(seq, hash, time_us)| {
        Ok(ChainHead {
            last_seq: from_db_seq(seq)?,
            head: hash_from_db(&hash, "hash")?,
            last_time: Timestamp::from_unix_micros(time_us),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::log::tests::sealed_run;
    use crate::backend::log::LOG_SIZE;

    fn config(dir: &tempfile::TempDir) -> AuditConfig {
        AuditConfig::sqlite(dir.path().join("audit.db"), "gw-1")
    }

    fn writer(dir: &tempfile::TempDir) -> SqliteBackend {
        SqliteBackend::open_writer(&config(dir)).expect("writer")
    }

    /// Entries `from..from + count` following `prev`, with payloads of
    /// `size` bytes.
    fn entries(from: u64, count: u64, prev: ChainHash, size: usize) -> Vec<Entry> {
        sealed_run(from, count, prev, |seq| {
            format!("{{\"n\":{seq},\"pad\":\"{}\"}}", "x".repeat(size))
        })
    }

    fn stored_seqs(dir: &tempfile::TempDir) -> Vec<u64> {
        let connection = Connection::open(dir.path().join("audit.db")).expect("open");
        let mut statement = connection
            .prepare("SELECT seq FROM audit_entries ORDER BY seq")
            .expect("prepare");
        let seqs = statement
            .query_map([], |row| row.get::<_, i64>(0))
            .expect("query")
            .map(|seq| seq.expect("seq") as u64)
            .collect();
        seqs
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn logged_commits_reach_the_tables_when_settled_or_when_the_store_reopens() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = writer(&dir);
        let first = entries(1, 3, ChainHash::GENESIS, 10);
        block_on(store.append_logged(first.clone())).expect("logged");
        assert!(matches!(store.last_commit, Commit::Log));
        assert!(store.settle_at().is_some());
        assert_eq!(
            stored_seqs(&dir),
            Vec::<u64>::new(),
            "not in the tables yet"
        );
        block_on(store.settle()).expect("settle");
        assert_eq!(stored_seqs(&dir), [1, 2, 3]);
        assert!(store.settle_at().is_none());

        // Logged, then the process dies before they are settled: the next
        // writer moves them into the tables, once.
        let second = entries(4, 2, first[2].hash, 10);
        block_on(store.append_logged(second.clone())).expect("logged");
        drop(store);
        assert_eq!(stored_seqs(&dir), [1, 2, 3]);
        let mut store = writer(&dir);
        assert_eq!(stored_seqs(&dir), [1, 2, 3, 4, 5]);
        let head = block_on(store.head("gw-1")).expect("head");
        assert_eq!((head.last_seq, head.head), (5, second[1].hash));
        drop(store);
        let _store = writer(&dir);
        assert_eq!(stored_seqs(&dir), [1, 2, 3, 4, 5], "recovered once");
    }

    #[test]
    fn a_commit_into_the_tables_takes_the_logged_ones_and_a_gap_ends_recovery() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = writer(&dir);
        let a = entries(1, 3, ChainHash::GENESIS, 10);
        let b = entries(4, 2, a[2].hash, 10);
        let c = entries(6, 2, b[1].hash, 10);
        block_on(store.append_logged(a.clone())).expect("a");
        block_on(store.append(&b, &[])).expect("b");
        assert!(matches!(store.last_commit, Commit::Tables));
        assert_eq!(stored_seqs(&dir), [1, 2, 3, 4, 5], "a went in with b");
        block_on(store.append_logged(c.clone())).expect("c");
        drop(store);
        // As if b's transaction (not yet fsynced) were lost in a crash: the
        // log still holds a and c, and c does not follow a. c was never
        // acknowledged (commits are answered in order, b's first).
        Connection::open(dir.path().join("audit.db"))
            .expect("open")
            .execute("DELETE FROM audit_entries", [])
            .expect("delete");
        let _store = writer(&dir);
        assert_eq!(stored_seqs(&dir), [1, 2, 3]);
    }

    #[test]
    fn a_reader_shows_logged_entries_the_tables_lack_as_a_chain_that_follows_them() {
        let dir = tempfile::tempdir().expect("dir");
        let seqs = |entries: Vec<Entry>| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
        let read = |query: &EntryQuery| {
            let mut reader = SqliteBackend::open_reader(&config(&dir)).expect("reader");
            block_on(reader.load_entries(query)).expect("load")
        };
        let all = EntryQuery::default();
        let mut store = writer(&dir);
        let a = entries(1, 3, ChainHash::GENESIS, 10);
        let b = entries(4, 2, a[2].hash, 10);
        block_on(store.append(&a, &[])).expect("a");
        block_on(store.append_logged(b.clone())).expect("b");
        assert_eq!(stored_seqs(&dir), [1, 2, 3], "b only logged");
        let found = read(&all);
        assert_eq!(seqs(found.clone()), [1, 2, 3, 4, 5]);
        assert_eq!(found[3..], b[..], "as logged");
        // Filters apply to logged entries as to stored ones (even seqs
        // carry session s-1, times are the seqs).
        let session = EntryQuery {
            session_id: Some("s-1".into()),
            ..EntryQuery::default()
        };
        assert_eq!(seqs(read(&session)), [2, 4]);
        let window = EntryQuery {
            since: Some(Timestamp::from_unix_micros(3)),
            until: Some(Timestamp::from_unix_micros(5)),
            ..EntryQuery::default()
        };
        assert_eq!(seqs(read(&window)), [3, 4]);

        // The gateway dies before settling, then a commit lost from the
        // tables' unsynced tail is simulated by a log that skips ahead:
        // what does not follow the stored chain is not shown.
        drop(store);
        assert_eq!(
            seqs(read(&all)),
            [1, 2, 3, 4, 5],
            "after the crash, before a restart"
        );
        let (mut log, _) =
            CommitLog::open(&log_path(&dir.path().join("audit.db"), "gw-1"), "gw-1").expect("log");
        log.restart().expect("restart");
        let ahead = entries(7, 2, ChainHash([7; 32]), 10);
        assert!(log.append(&ahead).expect("append"));
        drop(log);
        assert_eq!(
            seqs(read(&all)),
            [1, 2, 3],
            "b's generation is over; 7 does not follow 3"
        );

        // Once settled, nothing is shown twice.
        let mut store = writer(&dir);
        let c = entries(4, 2, a[2].hash, 10);
        block_on(store.append_logged(c.clone())).expect("c");
        block_on(store.settle()).expect("settle");
        let d = entries(6, 1, c[1].hash, 10);
        block_on(store.append_logged(d)).expect("d");
        assert_eq!(seqs(read(&all)), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn tables_that_cannot_be_written_refuse_commits_instead_of_filling_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = writer(&dir);
        let a = entries(1, 2, ChainHash::GENESIS, 10);
        block_on(store.append_logged(a.clone())).expect("logged");
        let blocker = Connection::open(dir.path().join("audit.db")).expect("blocker");
        blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        assert!(block_on(store.settle()).is_err());
        // The next commit goes to the tables, and fails there.
        let b = entries(3, 1, a[1].hash, 10);
        assert!(block_on(store.append_logged(b.clone())).is_err());
        drop(blocker);
        block_on(store.append_logged(b.clone())).expect("writable again");
        assert!(matches!(store.last_commit, Commit::Tables));
        assert_eq!(stored_seqs(&dir), [1, 2, 3]);
        // And the log is used again.
        block_on(store.append_logged(entries(4, 1, b[0].hash, 10))).expect("logged");
        assert!(matches!(store.last_commit, Commit::Log));
    }

    /// A random run of commits into the log and into the tables, settles,
    /// and crashes, some with the last commit's frame torn (as if the
    /// crash came before its fsync returned, so nobody was told it was
    /// durable): after every reopen the tables hold every acknowledged
    /// entry, once, in one unbroken chain; a torn commit is gone whole, an
    /// untorn one may stay.
    #[test]
    fn random_commits_and_crashes_keep_every_acknowledged_entry_in_one_chain() {
        use std::os::unix::fs::FileExt;

        let dir = tempfile::tempdir().expect("dir");
        let log_file = log_path(&dir.path().join("audit.db"), "gw-1");
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut store = writer(&dir);
        // The chain's end as the writer knows it: (last seq, hash).
        let mut head = (0u64, ChainHash::GENESIS);
        let mut crashes = 0;
        for step in 0..400 {
            let count = 1 + random(6);
            let size = if random(20) == 0 { 300_000 } else { 200 };
            let batch = entries(head.0 + 1, count, head.1, size as usize);
            match random(10) {
                0..=5 => block_on(store.append_logged(batch.clone())).expect("logged"),
                6 => block_on(store.append(&batch, &[])).expect("tables"),
                7 => {
                    block_on(store.settle()).expect("settle");
                    continue;
                }
                _ => {
                    // A crash, after a last commit that may be torn.
                    block_on(store.append_logged(batch.clone())).expect("logged");
                    let torn_at = store.log.as_ref().expect("log").last_frame_at();
                    let torn = random(2) == 0;
                    if torn {
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&log_file)
                            .expect("log");
                        let at = torn_at + 16 + random(batch.len() as u64 * 100);
                        file.write_all_at(&[0xff; 7], at).expect("tear");
                    }
                    drop(store);
                    crashes += 1;
                    store = writer(&dir);
                    let seqs = stored_seqs(&dir);
                    let acknowledged: Vec<u64> = (1..=head.0).collect();
                    if torn {
                        assert_eq!(
                            seqs, acknowledged,
                            "step {step}: a torn commit is gone whole"
                        );
                    } else if seqs.len() > acknowledged.len() {
                        let whole: Vec<u64> = (1..=head.0 + count).collect();
                        assert_eq!(seqs, whole, "step {step}: an untorn commit stays whole");
                        head = (head.0 + count, batch[batch.len() - 1].hash);
                    } else {
                        assert_eq!(seqs, acknowledged, "step {step}");
                    }
                    let stored = block_on(store.head("gw-1")).expect("head");
                    assert_eq!((stored.last_seq, stored.head), head, "step {step}");
                    continue;
                }
            }
            head = (head.0 + count, batch[batch.len() - 1].hash);
        }
        assert!(crashes > 20, "{crashes}");
        drop(store);
        let store = writer(&dir);
        drop(store);
        // One unbroken chain, every entry's hash its own.
        let connection = Connection::open(dir.path().join("audit.db")).expect("open");
        let mut statement = connection
            .prepare(
                "SELECT instance, seq, time_us, kind, session_id, payload, prev_hash, hash \
                 FROM audit_entries ORDER BY seq",
            )
            .expect("prepare");
        let rows: Vec<Entry> = statement
            .query_map([], entry_from_row)
            .expect("query")
            .map(|row| row.expect("row").into_entry().expect("entry"))
            .collect();
        assert_eq!(rows.len() as u64, head.0);
        let mut prev = ChainHash::GENESIS;
        for entry in &rows {
            assert_eq!(entry.prev_hash, prev, "seq {}", entry.seq);
            assert_eq!(entry.compute_hash(), entry.hash, "seq {}", entry.seq);
            prev = entry.hash;
        }
    }

    #[test]
    fn a_full_log_moves_its_entries_into_the_tables_and_starts_again() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = writer(&dir);
        let size = 1024 * 1024;
        let commits = LOG_SIZE as usize / size + 2;
        let mut prev = ChainHash::GENESIS;
        for seq in 1..=commits as u64 {
            let entry = entries(seq, 1, prev, size);
            prev = entry[0].hash;
            block_on(store.append_logged(entry)).expect("logged");
        }
        // The log took at most LOG_SIZE; the rest went into the tables.
        let settled = stored_seqs(&dir).len();
        assert!(settled >= 2 && settled < commits, "{settled}");
        drop(store);
        let _store = writer(&dir);
        let expected: Vec<u64> = (1..=commits as u64).collect();
        assert_eq!(stored_seqs(&dir), expected);
    }
}
