//! The shared store: a separate PostgreSQL database. Several gateway
//! instances append to it at once, each to its own chain; a session-level
//! advisory lock per instance id keeps two processes from writing one chain.
//!
//! A batch is one prepared `INSERT … SELECT FROM unnest(…)`, its own
//! transaction: one round trip and one WAL flush per batch.

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::{checkpoint_kind_from_db, from_db_seq, hash_from_db, to_db_seq, Backend, EntryQuery};
use crate::chain::{ChainHash, ChainHead, Entry};
use crate::checkpoint::Checkpoint;
use crate::config::AuditConfig;
use crate::error::{AuditError, Result};
use hoop_common::time::Timestamp;

const SCHEMA: &str = include_str!("../../sql/postgres.sql");

/// Serialises schema creation between instances starting at once.
const SCHEMA_LOCK: i64 = 0x686f_6f70_0001;

const INSERT_ENTRIES: &str =
    "INSERT INTO audit_entries (instance, seq, time_us, kind, session_id, payload, prev_hash, hash) \
     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], \
                          $6::text[], $7::bytea[], $8::bytea[])";

const INSERT_CHECKPOINT: &str =
    "INSERT INTO audit_checkpoints (instance, kind, length, head_hash, time_us, key_id, signature) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The writer's statements, prepared once per connection.
struct Prepared {
    insert_entries: Statement,
    insert_checkpoint: Statement,
}

pub(crate) struct PostgresBackend {
    config: tokio_postgres::Config,
    /// Set for the writer: the chain it locks on every (re)connection.
    locked_instance: Option<String>,
    client: Option<Client>,
    /// Prepared on `client` by the first append.
    prepared: Option<Prepared>,
}

impl PostgresBackend {
    pub(crate) async fn open_writer(config: &AuditConfig) -> Result<PostgresBackend> {
        let mut backend = PostgresBackend {
            config: config.postgres_config()?,
            locked_instance: Some(config.instance_id.clone()),
            client: None,
            prepared: None,
        };
        backend.client().await?;
        Ok(backend)
    }

    pub(crate) async fn open_reader(config: &AuditConfig) -> Result<PostgresBackend> {
        let mut backend = PostgresBackend {
            config: config.postgres_config()?,
            locked_instance: None,
            client: None,
            prepared: None,
        };
        backend.client().await?;
        Ok(backend)
    }

    async fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            self.client = Some(self.connect().await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| AuditError::Unavailable("postgres connection lost".into()))
    }

    /// The connection with the writer's statements prepared on it.
    async fn prepared(&mut self) -> Result<(&mut Client, &Prepared)> {
        if self.client.is_none() {
            self.prepared = None;
        }
        self.client().await?;
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| AuditError::Unavailable("postgres connection lost".into()))?;
        if self.prepared.is_none() {
            self.prepared = Some(Prepared {
                insert_entries: client.prepare(INSERT_ENTRIES).await?,
                insert_checkpoint: client.prepare(INSERT_CHECKPOINT).await?,
            });
        }
        let prepared = self
            .prepared
            .as_ref()
            .ok_or_else(|| AuditError::Unavailable("postgres connection lost".into()))?;
        Ok((client, prepared))
    }

    async fn connect(&self) -> Result<Client> {
        let (mut client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "audit store connection ended");
            }
        });
        if let Some(instance) = &self.locked_instance {
            // Tables created by their owner beforehand leave the gateway's
            // role with INSERT and SELECT only: creating (or re-declaring
            // indexes) would need more, so it happens only when missing.
            let present: bool = client
                .query_one(
                    "SELECT to_regclass('audit_entries') IS NOT NULL \
                        AND to_regclass('audit_checkpoints') IS NOT NULL",
                    &[],
                )
                .await?
                .try_get(0)?;
            if !present {
                let transaction = client.transaction().await?;
                transaction
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await?;
                transaction.batch_execute(SCHEMA).await?;
                transaction.commit().await?;
            }
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('hoop-audit:' || $1, 0))",
                    &[instance],
                )
                .await?;
            if !row.try_get::<_, bool>(0)? {
                return Err(AuditError::Config(format!(
                    "another process is already writing audit instance {instance:?}; \
                     give each gateway its own instance_id"
                )));
            }
        }
        Ok(client)
    }
}

fn append_error(error: tokio_postgres::Error, instance: &str) -> AuditError {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        AuditError::Conflict {
            instance: instance.to_owned(),
        }
    } else {
        AuditError::from(error)
    }
}

fn entry_from_row(row: &Row) -> Result<Entry> {
    Ok(Entry {
        instance: row.try_get(0)?,
        seq: from_db_seq(row.try_get(1)?)?,
        time: Timestamp::from_unix_micros(row.try_get(2)?),
        kind: row.try_get(3)?,
        session_id: row.try_get(4)?,
        payload: row.try_get(5)?,
        prev_hash: hash_from_db(row.try_get(6)?, "prev_hash")?,
        hash: hash_from_db(row.try_get(7)?, "hash")?,
    })
}

async fn insert_checkpoints(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &Statement,
    checkpoints: &[Checkpoint],
) -> Result<()> {
    for checkpoint in checkpoints {
        transaction
            .execute(statement, &checkpoint_params(checkpoint)?.as_params())
            .await?;
    }
    Ok(())
}

/// A checkpoint's column values, in `INSERT_CHECKPOINT` order.
struct CheckpointParams<'a> {
    instance: &'a str,
    kind: &'static str,
    length: i64,
    head_hash: &'a [u8],
    time_us: i64,
    key_id: &'a str,
    signature: &'a str,
}

fn checkpoint_params(checkpoint: &Checkpoint) -> Result<CheckpointParams<'_>> {
    Ok(CheckpointParams {
        instance: &checkpoint.instance,
        kind: checkpoint.kind.as_str(),
        length: to_db_seq(checkpoint.length)?,
        head_hash: &checkpoint.head_hash.0[..],
        time_us: checkpoint.time.unix_micros(),
        key_id: &checkpoint.key_id,
        signature: &checkpoint.signature,
    })
}

impl CheckpointParams<'_> {
    fn as_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.instance,
            &self.kind,
            &self.length,
            &self.head_hash,
            &self.time_us,
            &self.key_id,
            &self.signature,
        ]
    }
}

impl Backend for PostgresBackend {
    async fn head(&mut self, instance: &str) -> Result<ChainHead> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seq, hash, time_us FROM audit_entries WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
                &[&instance],
            )
            .await?;
        let row = match row {
            Some(row) => Some(row),
            None => {
                client
                    .query_opt(
                        "SELECT length, head_hash, time_us FROM audit_checkpoints \
                         WHERE instance = $1 AND kind = 'purge_anchor' ORDER BY length DESC LIMIT 1",
                        &[&instance],
                    )
                    .await?
            }
        };
        match row {
            None => Ok(ChainHead::empty()),
            Some(row) => Ok(ChainHead {
                last_seq: from_db_seq(row.try_get(0)?)?,
                head: hash_from_db(row.try_get(1)?, "hash")?,
                last_time: Timestamp::from_unix_micros(row.try_get(2)?),
            }),
        }
    }

    async fn append(&mut self, entries: &[Entry], checkpoints: &[Checkpoint]) -> Result<()> {
        let instance = entries
            .first()
            .map(|e| e.instance.clone())
            .unwrap_or_default();
        let mut instances = Vec::with_capacity(entries.len());
        let mut seqs = Vec::with_capacity(entries.len());
        let mut times = Vec::with_capacity(entries.len());
        let mut kinds = Vec::with_capacity(entries.len());
        let mut sessions = Vec::with_capacity(entries.len());
        let mut payloads = Vec::with_capacity(entries.len());
        let mut prev_hashes = Vec::with_capacity(entries.len());
        let mut hashes = Vec::with_capacity(entries.len());
        for entry in entries {
            instances.push(entry.instance.as_str());
            seqs.push(to_db_seq(entry.seq)?);
            times.push(entry.time.unix_micros());
            kinds.push(entry.kind.as_str());
            sessions.push(entry.session_id.as_deref());
            payloads.push(entry.payload.as_str());
            prev_hashes.push(&entry.prev_hash.0[..]);
            hashes.push(&entry.hash.0[..]);
        }
        let entry_params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &instances,
            &seqs,
            &times,
            &kinds,
            &sessions,
            &payloads,
            &prev_hashes,
            &hashes,
        ];
        let (client, prepared) = self.prepared().await?;
        match (entries.is_empty(), checkpoints) {
            (true, []) => {}
            // One statement is its own transaction: no BEGIN/COMMIT round
            // trips, and the commit is durable when it returns.
            (false, []) => {
                client
                    .execute(&prepared.insert_entries, &entry_params)
                    .await
                    .map_err(|e| append_error(e, &instance))?;
            }
            (true, [checkpoint]) => {
                client
                    .execute(
                        &prepared.insert_checkpoint,
                        &checkpoint_params(checkpoint)?.as_params(),
                    )
                    .await?;
            }
            _ => {
                let transaction = client.transaction().await?;
                if !entries.is_empty() {
                    transaction
                        .execute(&prepared.insert_entries, &entry_params)
                        .await
                        .map_err(|e| append_error(e, &instance))?;
                }
                insert_checkpoints(&transaction, &prepared.insert_checkpoint, checkpoints).await?;
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    async fn last_before(
        &mut self,
        instance: &str,
        before: Timestamp,
    ) -> Result<Option<(u64, ChainHash)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seq, hash FROM audit_entries WHERE instance = $1 AND time_us < $2 \
                 ORDER BY seq DESC LIMIT 1",
                &[&instance, &before.unix_micros()],
            )
            .await?;
        row.map(|row| {
            Ok((
                from_db_seq(row.try_get(0)?)?,
                hash_from_db(row.try_get(1)?, "hash")?,
            ))
        })
        .transpose()
    }

    async fn purge(
        &mut self,
        instance: &str,
        through_seq: u64,
        anchor: &Checkpoint,
    ) -> Result<u64> {
        let through = to_db_seq(through_seq)?;
        let client = self.client().await?;
        let transaction = client.transaction().await?;
        let deleted = transaction
            .execute(
                "DELETE FROM audit_entries WHERE instance = $1 AND seq <= $2",
                &[&instance, &through],
            )
            .await?;
        transaction
            .execute(
                "DELETE FROM audit_checkpoints WHERE instance = $1 AND length <= $2",
                &[&instance, &through],
            )
            .await?;
        let statement = transaction.prepare(INSERT_CHECKPOINT).await?;
        insert_checkpoints(&transaction, &statement, std::slice::from_ref(anchor)).await?;
        transaction.commit().await?;
        Ok(deleted)
    }

    fn reset(&mut self) {
        self.client = None;
        self.prepared = None;
    }

    async fn load_entries(&mut self, query: &EntryQuery) -> Result<Vec<Entry>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT instance, seq, time_us, kind, session_id, payload, prev_hash, hash FROM audit_entries \
                 WHERE ($1::int8 IS NULL OR time_us >= $1) AND ($2::int8 IS NULL OR time_us < $2) \
                   AND ($3::text IS NULL OR session_id = $3) \
                 ORDER BY instance, seq",
                &[
                    &query.since.map(Timestamp::unix_micros),
                    &query.until.map(Timestamp::unix_micros),
                    &query.session_id,
                ],
            )
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn load_checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT instance, kind, length, head_hash, time_us, key_id, signature \
                 FROM audit_checkpoints ORDER BY instance, length, time_us",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Checkpoint {
                    instance: row.try_get(0)?,
                    kind: checkpoint_kind_from_db(row.try_get(1)?)?,
                    length: from_db_seq(row.try_get(2)?)?,
                    head_hash: hash_from_db(row.try_get(3)?, "checkpoint head")?,
                    time: Timestamp::from_unix_micros(row.try_get(4)?),
                    key_id: row.try_get(5)?,
                    signature: row.try_get(6)?,
                })
            })
            .collect()
    }
}
