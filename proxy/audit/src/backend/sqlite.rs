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
//! `NORMAL` is available for slow disks (see [`SqliteSync`]).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

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

pub(crate) struct SqliteBackend {
    path: PathBuf,
    writer: bool,
    synchronous: SqliteSync,
    connection: Option<Connection>,
    /// The writer's own handle on the WAL file of `connection`, which it
    /// fsyncs after each commit (`synchronous = FULL` only).
    wal: Option<Arc<File>>,
}

impl SqliteBackend {
    pub(crate) fn open_writer(config: &AuditConfig) -> Result<SqliteBackend> {
        let mut backend = SqliteBackend {
            path: sqlite_path(config)?,
            writer: true,
            synchronous: config.sqlite_synchronous,
            connection: None,
            wal: None,
        };
        backend.connection()?;
        Ok(backend)
    }

    pub(crate) fn open_reader(config: &AuditConfig) -> Result<SqliteBackend> {
        let mut backend = SqliteBackend {
            path: sqlite_path(config)?,
            writer: false,
            synchronous: config.sqlite_synchronous,
            connection: None,
            wal: None,
        };
        backend.connection()?;
        Ok(backend)
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
        }
        self.connection
            .as_mut()
            .ok_or_else(|| AuditError::Unavailable("sqlite connection lost".into()))
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
        let connection = self.connection()?;
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
        match last {
            None => Ok(ChainHead::empty()),
            Some((seq, hash, time_us)) => Ok(ChainHead {
                last_seq: from_db_seq(seq)?,
                head: hash_from_db(&hash, "hash")?,
                last_time: Timestamp::from_unix_micros(time_us),
            }),
        }
    }

    async fn append(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()> {
        let instance = entries
            .first()
            .map(|e| e.instance.clone())
            .unwrap_or_default();
        let connection = self.connection()?;
        let transaction = connection.transaction()?;
        {
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
                    .map_err(|e| append_error(e, &instance))?;
            }
            for checkpoint in checkpoints {
                insert_checkpoint(&transaction, checkpoint)?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    async fn last_before(
        &mut self,
        instance: &str,
        before: Timestamp,
    ) -> Result<Option<(u64, ChainHash)>> {
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
        Ok(deleted as u64)
    }

    fn reset(&mut self) {
        self.connection = None;
        self.wal = None;
    }

    /// The WAL for `synchronous = FULL` (see the module docs); nothing
    /// for `NORMAL`.
    fn unsynced_file(&self) -> Option<Arc<File>> {
        self.wal.clone()
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
        let connection = self.connection()?;
        let mut statement = connection.prepare(&sql)?;
        let rows =
            statement.query_map(rusqlite::params_from_iter(values.iter()), entry_from_row)?;
        let mut entries = Vec::new();
        for row in rows {
            entries.push(row?.into_entry()?);
        }
        Ok(entries)
    }

    async fn load_checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
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
