//! The two stores behind one interface. The writer and the reader run these
//! on a thread of their own (with a current-thread runtime), so blocking
//! SQLite calls never stall the relay's runtime.

use std::fs::File;
use std::sync::Arc;

use crate::chain::{ChainHash, ChainHead, Entry};
use crate::checkpoint::{Checkpoint, CheckpointKind};
use crate::config::{AuditConfig, AuditStoreKind};
use crate::error::{AuditError, Result};
use hoop_common::time::Timestamp;

pub(crate) mod log;
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// What the reader loads.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryQuery {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub session_id: Option<String>,
}

pub(crate) trait Backend: Sized {
    /// Where `instance`'s chain ends: its last entry, else its latest purge
    /// anchor, else empty.
    async fn head(&mut self, instance: &str) -> Result<ChainHead>;

    /// Writes entries and checkpoints in one durable transaction.
    async fn append(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()>;

    /// Writes one group commit's entries where a commit costs least while
    /// commits follow one another (the SQLite store's commit log); durable
    /// once [`Backend::unsynced_file`] is fsynced, in the tables after
    /// [`Backend::settle`]. Elsewhere the same as `append`.
    /// The entries are the backend's from here: kept, not copied, until
    /// they are settled.
    async fn append_logged(&mut self, entries: Vec<Entry>) -> Result<()> {
        self.append(&entries, &[]).await
    }

    /// When logged entries are due to go into the tables (`None`: none
    /// wait).
    fn settle_at(&self) -> Option<std::time::Instant> {
        None
    }

    /// Moves logged entries into the tables.
    async fn settle(&mut self) -> Result<()> {
        Ok(())
    }

    /// How many logged entries wait to be settled.
    fn unsettled(&self) -> usize {
        0
    }

    /// Makes the tables hold every logged entry durably, then empties the
    /// log: at shutdown, so that a closed store's tables are its whole
    /// chain (and rows deleted from them show as missing, not as entries
    /// still to be settled).
    async fn empty_log(&mut self) -> Result<()> {
        Ok(())
    }

    /// Last entry of `instance` older than `before`.
    async fn last_before(
        &mut self,
        instance: &str,
        before: Timestamp,
    ) -> Result<Option<(u64, ChainHash)>>;

    /// Deletes `instance`'s entries and checkpoints up to `through_seq` and
    /// stores the purge anchor, in one transaction. Returns entries deleted.
    async fn purge(&mut self, instance: &str, through_seq: u64, anchor: &Checkpoint)
        -> Result<u64>;

    /// Forgets the connection after a failure; the next call reconnects.
    fn reset(&mut self);

    /// A file to fsync before the last `append` or `purge` counts as
    /// durable; `None` when their commit already was.
    fn unsynced_file(&self) -> Option<Arc<File>> {
        None
    }

    async fn load_entries(&mut self, query: &EntryQuery) -> Result<Vec<Entry>>;

    async fn load_checkpoints(&mut self) -> Result<Vec<Checkpoint>>;
}

/// Opens the configured store (writing side creates the schema).
pub(crate) async fn open_writer(config: &AuditConfig) -> Result<AnyBackend> {
    Ok(match config.store {
        AuditStoreKind::Sqlite => {
            AnyBackend::Sqlite(Box::new(sqlite::SqliteBackend::open_writer(config)?))
        }
        AuditStoreKind::Postgres => AnyBackend::Postgres(Box::new(
            postgres::PostgresBackend::open_writer(config).await?,
        )),
    })
}

/// Opens the configured store for reading only.
pub(crate) async fn open_reader(config: &AuditConfig) -> Result<AnyBackend> {
    Ok(match config.store {
        AuditStoreKind::Sqlite => {
            AnyBackend::Sqlite(Box::new(sqlite::SqliteBackend::open_reader(config)?))
        }
        AuditStoreKind::Postgres => AnyBackend::Postgres(Box::new(
            postgres::PostgresBackend::open_reader(config).await?,
        )),
    })
}

pub(crate) enum AnyBackend {
    Sqlite(Box<sqlite::SqliteBackend>),
    Postgres(Box<postgres::PostgresBackend>),
}

impl Backend for AnyBackend {
    async fn head(&mut self, instance: &str) -> Result<ChainHead> {
        match self {
            AnyBackend::Sqlite(b) => b.head(instance).await,
            AnyBackend::Postgres(b) => b.head(instance).await,
        }
    }

    async fn append(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()> {
        match self {
            AnyBackend::Sqlite(b) => b.append(entries, checkpoints).await,
            AnyBackend::Postgres(b) => b.append(entries, checkpoints).await,
        }
    }

    async fn append_logged(&mut self, entries: Vec<Entry>) -> Result<()> {
        match self {
            AnyBackend::Sqlite(b) => b.append_logged(entries).await,
            AnyBackend::Postgres(b) => b.append(&entries, &[]).await,
        }
    }

    fn settle_at(&self) -> Option<std::time::Instant> {
        match self {
            AnyBackend::Sqlite(b) => b.settle_at(),
            AnyBackend::Postgres(_) => None,
        }
    }

    async fn settle(&mut self) -> Result<()> {
        match self {
            AnyBackend::Sqlite(b) => b.settle().await,
            AnyBackend::Postgres(_) => Ok(()),
        }
    }

    fn unsettled(&self) -> usize {
        match self {
            AnyBackend::Sqlite(b) => b.unsettled(),
            AnyBackend::Postgres(_) => 0,
        }
    }

    async fn empty_log(&mut self) -> Result<()> {
        match self {
            AnyBackend::Sqlite(b) => b.empty_log().await,
            AnyBackend::Postgres(_) => Ok(()),
        }
    }

    async fn last_before(
        &mut self,
        instance: &str,
        before: Timestamp,
    ) -> Result<Option<(u64, ChainHash)>> {
        match self {
            AnyBackend::Sqlite(b) => b.last_before(instance, before).await,
            AnyBackend::Postgres(b) => b.last_before(instance, before).await,
        }
    }

    async fn purge(
        &mut self,
        instance: &str,
        through_seq: u64,
        anchor: &Checkpoint,
    ) -> Result<u64> {
        match self {
            AnyBackend::Sqlite(b) => b.purge(instance, through_seq, anchor).await,
            AnyBackend::Postgres(b) => b.purge(instance, through_seq, anchor).await,
        }
    }

    fn reset(&mut self) {
        match self {
            AnyBackend::Sqlite(b) => b.reset(),
            AnyBackend::Postgres(b) => b.reset(),
        }
    }

    fn unsynced_file(&self) -> Option<Arc<File>> {
        match self {
            AnyBackend::Sqlite(b) => b.unsynced_file(),
            AnyBackend::Postgres(_) => None,
        }
    }

    async fn load_entries(&mut self, query: &EntryQuery) -> Result<Vec<Entry>> {
        match self {
            AnyBackend::Sqlite(b) => b.load_entries(query).await,
            AnyBackend::Postgres(b) => b.load_entries(query).await,
        }
    }

    async fn load_checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
        match self {
            AnyBackend::Sqlite(b) => b.load_checkpoints().await,
            AnyBackend::Postgres(b) => b.load_checkpoints().await,
        }
    }
}

/// Seq numbers are `u64` in Rust and signed 64-bit in both databases.
pub(crate) fn to_db_seq(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| AuditError::Malformed(format!("sequence {seq} out of range")))
}

pub(crate) fn from_db_seq(seq: i64) -> Result<u64> {
    u64::try_from(seq)
        .map_err(|_| AuditError::Malformed(format!("stored sequence {seq} is negative")))
}

pub(crate) fn hash_from_db(bytes: &[u8], what: &str) -> Result<ChainHash> {
    ChainHash::from_slice(bytes)
        .ok_or_else(|| AuditError::Malformed(format!("stored {what} is not 32 bytes")))
}

pub(crate) fn checkpoint_kind_from_db(text: &str) -> Result<CheckpointKind> {
    CheckpointKind::parse(text)
        .ok_or_else(|| AuditError::Malformed(format!("unknown checkpoint kind {text:?}")))
}
