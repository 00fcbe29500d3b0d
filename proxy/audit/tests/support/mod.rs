//! What every store test needs: a store to point at (SQLite file or a
//! database in a throwaway Postgres cluster), raw SQL access to tamper with
//! it, and a realistic workload.

pub mod pg;

use std::path::PathBuf;

use hoop_audit::{
    Action, AuditConfig, AuditStore, CheckpointSigner, EndReason, Event, Identity,
    RecordedDecision, SessionEnd, SessionStart, StatementBegin, StatementOutcome, Timestamp,
};

pub use pg::PgCluster;

pub fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed("audit-test-1", &[42; 32])
}

pub enum Harness {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        cluster: &'static PgCluster,
        database: String,
    },
}

impl Harness {
    pub fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.db");
        Harness::Sqlite { _dir: dir, path }
    }

    /// A fresh database in the shared cluster (missing Postgres fails).
    pub async fn postgres() -> Harness {
        let cluster = PgCluster::shared();
        let database = cluster.create_database().await;
        Harness::Postgres { cluster, database }
    }

    pub fn config(&self, instance: &str) -> AuditConfig {
        let mut config = match self {
            Harness::Sqlite { path, .. } => AuditConfig::sqlite(path, instance),
            Harness::Postgres { cluster, database } => {
                let mut config = AuditConfig::postgres(&cluster.url(database), instance);
                config.password = Some(hoop_common::config::SecretRef::file(
                    cluster.password_file(),
                ));
                config
            }
        };
        config.record_rows = 3;
        config
    }

    pub async fn open(&self, instance: &str) -> AuditStore {
        AuditStore::open(&self.config(instance), signer())
            .await
            .expect("store opens")
    }

    /// Runs raw SQL against the store, as an attacker with database access.
    pub async fn exec(&self, sql: &str) {
        match self {
            Harness::Sqlite { path, .. } => {
                let connection = rusqlite::Connection::open(path).expect("sqlite");
                connection.execute_batch(sql).expect("tamper sql");
            }
            Harness::Postgres { cluster, database } => {
                cluster
                    .connect(database)
                    .await
                    .batch_execute(sql)
                    .await
                    .expect("tamper sql");
            }
        }
    }

    /// Reads one integer.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match self {
            Harness::Sqlite { path, .. } => {
                let connection = rusqlite::Connection::open(path).expect("sqlite");
                connection
                    .query_row(sql, [], |row| row.get(0))
                    .expect("query")
            }
            Harness::Postgres { cluster, database } => cluster
                .connect(database)
                .await
                .query_one(sql, &[])
                .await
                .expect("query")
                .get(0),
        }
    }

    /// Every byte the store holds: the SQLite file, its WAL and the
    /// commit log of the chain `gw-1`, or the text of every row of the
    /// Postgres audit tables.
    pub async fn stored_bytes(&self) -> Vec<u8> {
        match self {
            Harness::Sqlite { path, .. } => {
                let mut bytes = std::fs::read(path).expect("db file");
                let log = path.with_file_name("audit.db-log-gw-1");
                bytes.extend(std::fs::read(&log).expect("commit log"));
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.clone().into_os_string();
                    side.push(suffix);
                    if let Ok(more) = std::fs::read(PathBuf::from(side)) {
                        bytes.extend(more);
                    }
                }
                bytes
            }
            Harness::Postgres { cluster, database } => {
                let client = cluster.connect(database).await;
                let row = client
                    .query_one(
                        "SELECT coalesce((SELECT string_agg(t::text, E'\\n') FROM audit_entries t), '') \
                         || coalesce((SELECT string_agg(t::text, E'\\n') FROM audit_checkpoints t), '')",
                        &[],
                    )
                    .await
                    .expect("dump");
                row.get::<_, String>(0).into_bytes()
            }
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Harness::Sqlite { .. })
    }
}

pub fn session(id: &str, subject: &str) -> SessionStart {
    SessionStart {
        session_id: id.into(),
        identity: Identity {
            issuer: "https://idp.example".into(),
            subject: subject.into(),
            client_id: Some("ci-bot".into()),
            groups: vec!["fraud-agents".into()],
        },
        client_addr: "203.0.113.7:51234".into(),
        application_name: Some("psql".into()),
        role: "fraud_agent".into(),
        database: "payments".into(),
        started_at: Timestamp::now(),
    }
}

pub fn statement(session_id: &str, sequence: u64, sql: &str) -> StatementBegin {
    StatementBegin {
        session_id: session_id.into(),
        sequence,
        received_at: Timestamp::now(),
        sql: sql.into(),
        params: vec![Some("42".into()), None],
        kind: "select".into(),
        tables: vec!["public.payments".into()],
        decision: RecordedDecision::allow(),
        executed_sql: None,
    }
}

pub fn outcome(rows: u64) -> StatementOutcome {
    StatementOutcome {
        command_tag: Some(format!("SELECT {rows}")),
        rows: Some(rows),
        duration_us: 1200,
        columns: vec!["id".into(), "card_number".into()],
        result_rows: vec![vec![Some("1".into()), Some("************1111".into())]],
        ..StatementOutcome::default()
    }
}

/// A session of `statements` completed statements, one blocked, and some
/// events: 2 * statements + 5 entries (+1 recording_started at open).
pub async fn workload(store: &AuditStore, session_id: &str, statements: u64) {
    store
        .begin_session(&session(session_id, "agent-7"))
        .await
        .expect("session start");
    for sequence in 1..=statements {
        let handle = store
            .begin_statement(&statement(
                session_id,
                sequence,
                &format!("SELECT id, card_number FROM payments WHERE id = {sequence}"),
            ))
            .await
            .expect("begin");
        store
            .complete_statement(&handle, &outcome(1))
            .await
            .expect("complete");
    }
    let mut blocked = statement(session_id, statements + 1, "DROP TABLE payments");
    blocked.kind = "drop".into();
    blocked.decision = RecordedDecision {
        action: Action::Block,
        rule: Some("no-ddl".into()),
        reason: Some("DDL is not allowed for agents".into()),
        review_id: None,
        reviewer: None,
    };
    let handle = store
        .begin_statement(&blocked)
        .await
        .expect("begin blocked");
    store
        .complete_statement(
            &handle,
            &StatementOutcome {
                sqlstate: Some("42501".into()),
                message: Some("blocked by hoop rule no-ddl".into()),
                ..StatementOutcome::default()
            },
        )
        .await
        .expect("complete blocked");
    store
        .record_event(&Event::GrantUsed {
            session_id: session_id.into(),
            subject: "agent-7".into(),
            grant: "unmask public.payments.card_number".into(),
            detail: None,
        })
        .await
        .expect("event");
    store
        .end_session(&SessionEnd {
            session_id: session_id.into(),
            ended_at: Timestamp::now(),
            reason: EndReason::ClientQuit,
            detail: None,
        })
        .await
        .expect("session end");
}

/// `chattr +i` on a SQLite database file and its WAL (not the -shm, which
/// SQLite maps into memory); undone on drop, also when the test fails.
pub struct Immutable {
    files: Vec<PathBuf>,
}

impl Immutable {
    pub fn set(db: &std::path::Path) -> Option<Immutable> {
        let mut wal = db.to_path_buf().into_os_string();
        wal.push("-wal");
        let files = vec![db.to_path_buf(), PathBuf::from(wal)];
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .args(&files)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        let guard = Immutable { files };
        status.success().then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .args(&self.files)
            .status();
    }
}
