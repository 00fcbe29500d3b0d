//! The same behaviour, checked against both stores: SQLite (always) and
//! PostgreSQL (a throwaway cluster from tests/kit).

mod support;

use hoop_audit::{AuditReader, ExportFilter, Problem, VerifyReport};
use support::{signer, workload, Harness};

const GW: &str = "gw-1";

async fn verify(harness: &Harness) -> VerifyReport {
    AuditReader::open(&harness.config(GW))
        .expect("reader")
        .verify(&signer().public_keys())
        .await
        .expect("verify runs")
}

/// Writes a closed store: 13 entries (#1 recording_started … #13
/// recording_stopped), shutdown checkpoint at #13.
async fn closed_store(harness: &Harness) {
    let store = harness.open(GW).await;
    workload(&store, "s1", 3).await;
    store.close("test").await.expect("close");
}

mod suite {
    use super::*;

    pub async fn clean_store_verifies(harness: Harness) {
        closed_store(&harness).await;
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        let chain = &report.chains[0];
        assert_eq!(
            (chain.instance.as_str(), chain.entries, chain.last_seq),
            (GW, 13, 13)
        );
        assert_eq!(chain.last_checkpoint, Some(13));
        assert_eq!(chain.unsealed_entries, 0);
        assert!(chain.incomplete_statements.is_empty());
    }

    pub async fn edited_field_is_named(harness: Harness) {
        closed_store(&harness).await;
        // #5 is the begin entry of statement 2.
        harness
            .exec(&format!(
                "UPDATE audit_entries SET payload = replace(payload, 'id = 2', 'id = 9') WHERE instance = '{GW}' AND seq = 5"
            ))
            .await;
        let report = verify(&harness).await;
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Altered {
                instance: GW.into(),
                seq: 5
            }),
            "{report}"
        );
        assert!(
            report.to_string().contains("gw-1 #5: record altered"),
            "{report}"
        );
    }

    pub async fn deleted_record_is_named(harness: Harness) {
        closed_store(&harness).await;
        harness
            .exec(&format!(
                "DELETE FROM audit_entries WHERE instance = '{GW}' AND seq = 7"
            ))
            .await;
        let report = verify(&harness).await;
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Missing {
                instance: GW.into(),
                after_seq: 6,
                next_seq: 8
            }),
            "{report}"
        );
    }

    pub async fn swapped_records_are_named(harness: Harness) {
        closed_store(&harness).await;
        harness
            .exec(&format!(
                "UPDATE audit_entries SET seq = -1 WHERE instance = '{GW}' AND seq = 5; \
                 UPDATE audit_entries SET seq = 5 WHERE instance = '{GW}' AND seq = 6; \
                 UPDATE audit_entries SET seq = 6 WHERE instance = '{GW}' AND seq = -1;"
            ))
            .await;
        let report = verify(&harness).await;
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Reordered {
                instance: GW.into(),
                seq: 5,
                links_to_seq: 6
            }),
            "{report}"
        );
    }

    pub async fn truncated_tail_is_named(harness: Harness) {
        closed_store(&harness).await;
        harness
            .exec(&format!(
                "DELETE FROM audit_entries WHERE instance = '{GW}' AND seq >= 11"
            ))
            .await;
        let report = verify(&harness).await;
        assert_eq!(
            report.first_problem(),
            Some(&Problem::TruncatedTail {
                instance: GW.into(),
                checkpoint_length: 13,
                chain_length: 10
            }),
            "{report}"
        );
    }

    pub async fn forged_checkpoint_is_named(harness: Harness) {
        closed_store(&harness).await;
        // Claim the chain was shorter, keeping the old signature.
        harness
            .exec(&format!(
                "UPDATE audit_checkpoints SET length = 12 WHERE instance = '{GW}' AND length = 13"
            ))
            .await;
        let report = verify(&harness).await;
        assert!(
            matches!(
                report.first_problem(),
                Some(Problem::ForgedCheckpoint { length: 12, .. })
            ),
            "{report}"
        );
    }

    pub async fn no_card_number_reaches_the_store(harness: Harness) {
        let store = harness.open(GW).await;
        let mut start = support::session("s-pan", "agent-4111111111111111");
        start.application_name = Some("app 5555 5555 5555 4444".into());
        store.begin_session(&start).await.expect("session");
        let mut begin = support::statement(
            "s-pan",
            1,
            "SELECT * FROM payments WHERE card_number IN ('4111111111111111', '5555-5555-5555-4444', '3782 822463 10005')",
        );
        begin.params = vec![
            Some("4111 1111 1111 1111".into()),
            Some("5555555555554444".into()),
            Some("3782-822463-10005".into()),
            Some("378282246310005".into()),
        ];
        let handle = store.begin_statement(&begin).await.expect("begin");
        let mut result = support::outcome(2);
        result.result_rows = vec![
            vec![Some("1".into()), Some("4111-1111-1111-1111".into())],
            vec![
                Some("2".into()),
                Some("note: card 5555 5555 5555 4444".into()),
            ],
        ];
        result.sqlstate = Some("23505".into());
        result.message =
            Some("duplicate key (card_number)=(378282246310005) already exists".into());
        store
            .complete_statement(&handle, &result)
            .await
            .expect("complete");
        store
            .record_event(&hoop_audit::Event::LoginFailed {
                client_addr: "10.1.2.3:4000".into(),
                user_name: Some("4111111111111111".into()),
                database: None,
                application_name: Some("3782 8224 6310 005".into()),
                subject: None,
                reason: "token for 5555 5555 5555 4444 expired".into(),
            })
            .await
            .expect("event");
        store.checkpoint().await.expect("checkpoint");

        // While open (SQLite: the records live in the WAL), and after close.
        assert_no_pan(&harness.stored_bytes().await, "store while open");
        store.close("test").await.expect("close");
        assert_no_pan(&harness.stored_bytes().await, "store after close");

        let reader = AuditReader::open(&harness.config(GW)).expect("reader");
        let replay = reader.replay("s-pan").await.expect("replay");
        assert_no_pan(replay.as_bytes(), "replay");
        assert!(replay.contains("************1111"), "{replay}");
        let dir = tempfile::tempdir().expect("dir");
        reader
            .export(
                dir.path(),
                &ExportFilter::default(),
                &signer().public_keys(),
            )
            .await
            .expect("export");
        for file in std::fs::read_dir(dir.path()).expect("export dir") {
            let path = file.expect("file").path();
            assert_no_pan(
                &std::fs::read(&path).expect("read"),
                &path.display().to_string(),
            );
        }
    }

    pub async fn unwritable_store_fails_closed_and_recovers(harness: Harness) {
        assert!(harness.is_sqlite());
        let store = harness.open(GW).await;
        workload(&store, "s1", 2).await;
        let Harness::Sqlite { path, .. } = &harness else {
            unreachable!()
        };
        // Another process holds the write lock (as a stuck writer or a
        // read-only / locked file would): nothing can be appended.
        let blocker = rusqlite::Connection::open(path).expect("blocker");
        blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let (landed, message) = refused_once_the_tables_fail(&store).await;
        assert!(message.contains("audit store unavailable"), "{message}");
        drop(blocker);

        let handle = store
            .begin_statement(&support::statement("s1", 11, "SELECT 2"))
            .await
            .expect("writes resume");
        store
            .complete_statement(&handle, &support::outcome(1))
            .await
            .expect("complete");
        store.close("test").await.expect("close");
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        // 1 + (2*2 + 5) + 2 + 1, and the attempts acknowledged from the
        // log: nothing lost and no gap.
        assert_eq!(report.chains[0].last_seq, 13 + landed, "{report}");
        assert_markers(&harness, landed).await;
    }

    /// Statements begun, 20 ms apart, while the store's tables cannot be
    /// written. Records may still be acknowledged from the commit log
    /// (another file: durable, and moved into the tables once they take
    /// them), until the writer next tries to move them there (the settle
    /// timers: 2 ms idle); once that has failed, every statement is
    /// refused. Returns how many were acknowledged (they come first) and
    /// the last refusal.
    async fn refused_once_the_tables_fail(store: &hoop_audit::AuditStore) -> (u64, String) {
        let mut landed = 0;
        let mut refusal = None;
        for attempt in 0..ATTEMPTS {
            let sql = format!("SELECT 'marker-{attempt}'");
            match store
                .begin_statement(&support::statement("s1", 30 + attempt, &sql))
                .await
            {
                Ok(_) => {
                    assert!(
                        refusal.is_none(),
                        "attempt {attempt} acknowledged after a refusal"
                    );
                    landed += 1;
                }
                Err(error) => refusal = Some(error.to_string()),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            landed < ATTEMPTS - 1,
            "{landed} statements acknowledged while the tables refuse writes"
        );
        let refusal =
            refusal.expect("statements must be refused while the store cannot be written");
        (landed, refusal)
    }

    const ATTEMPTS: u64 = 4;

    /// Every acknowledged attempt's record is in the chain, no refused one's.
    async fn assert_markers(harness: &Harness, landed: u64) {
        for attempt in 0..ATTEMPTS {
            let count = harness
                .query_i64(&format!(
                    "SELECT count(*) FROM audit_entries WHERE payload LIKE '%marker-{attempt}%'"
                ))
                .await;
            assert_eq!(count, i64::from(attempt < landed), "marker-{attempt}");
        }
    }

    /// The SQLite file (and its WAL) made read-only, even for root.
    pub async fn read_only_file_fails_closed_and_recovers(harness: Harness) {
        let store = harness.open(GW).await;
        workload(&store, "s1", 1).await;
        let Harness::Sqlite { path, .. } = &harness else {
            unreachable!()
        };
        let Some(guard) = support::Immutable::set(path) else {
            eprintln!("skipped: chattr +i is not permitted here");
            return;
        };
        let (landed, _) = refused_once_the_tables_fail(&store).await;
        drop(guard);
        let handle = store
            .begin_statement(&support::statement("s1", 20, "SELECT 2"))
            .await
            .expect("writes resume once the file is writable");
        store
            .complete_statement(&handle, &support::outcome(1))
            .await
            .expect("complete");
        store.close("test").await.expect("close");
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        // #1 started, 7 workload entries, 2 for the statement, stopped, and
        // the attempts acknowledged from the log.
        assert_eq!(report.chains[0].last_seq, 11 + landed, "{report}");
        assert_markers(&harness, landed).await;
    }

    /// The Postgres server stopped and started again under a live store.
    pub async fn postgres_down_fails_closed_and_recovers() {
        let cluster = support::PgCluster::start();
        let database = cluster.create_database().await;
        let mut config = hoop_audit::AuditConfig::postgres(&cluster.url(&database), GW);
        config.password = Some(hoop_common::config::SecretRef::file(
            cluster.password_file(),
        ));
        let store = hoop_audit::AuditStore::open(&config, signer())
            .await
            .expect("open");
        workload(&store, "s1", 2).await;

        cluster.stop_server();
        for attempt in 0..2 {
            let refused = store
                .begin_statement(&support::statement(
                    "s1",
                    10 + attempt,
                    "SELECT 'refused-marker'",
                ))
                .await;
            assert!(
                refused.is_err(),
                "attempt {attempt}: statements must be refused while Postgres is down"
            );
        }
        cluster.start_server();

        let handle = store
            .begin_statement(&support::statement("s1", 20, "SELECT 2"))
            .await
            .expect("writes resume when Postgres is back");
        store
            .complete_statement(&handle, &support::outcome(1))
            .await
            .expect("complete");
        store.close("test").await.expect("close");
        let report = AuditReader::open(&config)
            .expect("reader")
            .verify(&signer().public_keys())
            .await
            .expect("verify");
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.chains[0].last_seq, 13, "{report}");
        let client = cluster.connect(&database).await;
        let refused: i64 = client
            .query_one(
                "SELECT count(*) FROM audit_entries WHERE payload LIKE '%refused-marker%'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(refused, 0);
    }

    pub async fn two_instances_both_verify(harness: Harness) {
        let (one, two) = (harness.open("gw-a").await, harness.open("gw-b").await);
        let (a, b) = tokio::join!(workload(&one, "sa", 20), workload(&two, "sb", 20));
        let ((), ()) = (a, b);
        one.close("test").await.expect("close a");
        two.close("test").await.expect("close b");
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        let instances: Vec<(&str, u64)> = report
            .chains
            .iter()
            .map(|c| (c.instance.as_str(), c.last_seq))
            .collect();
        assert_eq!(instances, vec![("gw-a", 47), ("gw-b", 47)]);
    }

    pub async fn concurrent_writers_share_commits(harness: Harness) {
        let store = harness.open(GW).await;
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                let session_id = format!("c{writer}");
                for sequence in 1..=50 {
                    let handle = store
                        .begin_statement(&support::statement(&session_id, sequence, "SELECT 1"))
                        .await
                        .expect("begin");
                    store
                        .complete_statement(&handle, &support::outcome(1))
                        .await
                        .expect("complete");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        store.close("test").await.expect("close");
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.chains[0].last_seq, 1 + 8 * 50 * 2 + 1);
    }

    /// `complete_statement_nowait` returns at once, yet every outcome is
    /// written, after its begin and before the session's next statement.
    pub async fn completions_without_waiting_are_written_in_order(harness: Harness) {
        let store = harness.open(GW).await;
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..8 {
            let store = store.clone();
            tasks.spawn(async move {
                let session_id = format!("n{writer}");
                for sequence in 1..=25 {
                    let handle = store
                        .begin_statement(&support::statement(&session_id, sequence, "SELECT 1"))
                        .await
                        .expect("begin");
                    store.complete_statement_nowait(&handle, &support::outcome(1));
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        // Queued behind every completion, so they are all durable now.
        store.close("test").await.expect("close");
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.chains[0].last_seq, 1 + 8 * 25 * 2 + 1, "{report}");
        assert!(
            report.chains[0].incomplete_statements.is_empty(),
            "{report}"
        );
        let sequence = if harness.is_sqlite() {
            "json_extract(payload, '$.sequence')"
        } else {
            "(payload::json->>'sequence')::bigint"
        };
        let out_of_order = harness
            .query_i64(&format!(
                "SELECT count(*) FROM audit_entries e JOIN audit_entries b \
                   ON b.session_id = e.session_id AND b.kind = 'statement' \
                  AND {b} = {e} + 1 \
                 WHERE e.kind = 'statement_end' AND b.seq < e.seq",
                b = sequence.replace("payload", "b.payload"),
                e = sequence.replace("payload", "e.payload"),
            ))
            .await;
        assert_eq!(
            out_of_order, 0,
            "an outcome was written after the next statement began"
        );
    }

    pub async fn crash_leaves_incomplete_statement_visible(harness: Harness) {
        let store = harness.open(GW).await;
        store.checkpoint().await.expect("checkpoint");
        let _handle = store
            .begin_statement(&support::statement(
                "s1",
                1,
                "UPDATE payments SET note = 'x'",
            ))
            .await
            .expect("begin");
        // No completion, no close: as after a crash. (Dropping every handle
        // lets the writer seal what it has, as a shutdown would.)
        drop(store);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        let incomplete = &report.chains[0].incomplete_statements;
        assert_eq!(incomplete.len(), 1, "{report}");
        assert_eq!(
            (incomplete[0].session_id.as_str(), incomplete[0].sequence),
            ("s1", 1)
        );
    }

    pub async fn sessions_and_replay_for_auditors(harness: Harness) {
        let store = harness.open(GW).await;
        workload(&store, "s1", 2).await;
        let mut other = support::session("s2", "agent-9");
        other.started_at = hoop_audit::Timestamp::now();
        store.begin_session(&other).await.expect("s2");
        store.close("test").await.expect("close");

        let reader = AuditReader::open(&harness.config(GW)).expect("reader");
        let all = reader
            .sessions(&Default::default())
            .await
            .expect("sessions");
        assert_eq!(all.len(), 2);
        let s1 = &all[0];
        assert_eq!(
            (s1.session_id.as_str(), s1.statements, s1.blocked, s1.failed),
            ("s1", 3, 1, 1)
        );
        assert_eq!(s1.end_reason, Some(hoop_audit::EndReason::ClientQuit));
        let by_subject = reader
            .sessions(&hoop_audit::SessionFilter {
                subject: Some("agent-9".into()),
                ..Default::default()
            })
            .await
            .expect("by subject");
        assert_eq!(by_subject.len(), 1);
        let by_table = reader
            .sessions(&hoop_audit::SessionFilter {
                table: Some("payments".into()),
                ..Default::default()
            })
            .await
            .expect("by table");
        assert_eq!(
            by_table
                .iter()
                .map(|s| s.session_id.as_str())
                .collect::<Vec<_>>(),
            vec!["s1"]
        );
        let later = reader
            .sessions(&hoop_audit::SessionFilter {
                since: Some(hoop_audit::Timestamp::now()),
                ..Default::default()
            })
            .await
            .expect("since");
        assert!(later.is_empty());

        let replay = reader.replay("s1").await.expect("replay");
        for expected in [
            "subject    agent-7",
            "SELECT id, card_number FROM payments WHERE id = 2",
            "decision  BLOCK (rule no-ddl): DDL is not allowed for agents",
            "ERROR 42501: blocked by hoop rule no-ddl",
            "************1111",
            "grant used: unmask public.payments.card_number",
            "(client_quit)",
        ] {
            assert!(
                replay.contains(expected),
                "missing {expected:?} in:\n{replay}"
            );
        }
        assert!(reader.replay("nope").await.is_err());
    }

    pub async fn export_verifies_offline_and_catches_edits(harness: Harness) {
        closed_store(&harness).await;
        let reader = AuditReader::open(&harness.config(GW)).expect("reader");
        let dir = tempfile::tempdir().expect("dir");
        let summary = reader
            .export(
                dir.path(),
                &ExportFilter::default(),
                &signer().public_keys(),
            )
            .await
            .expect("export");
        assert_eq!(summary.records, 13);
        let report = hoop_audit::verify_export(dir.path()).expect("verify export");
        assert!(report.is_ok(), "{report}");
        let records = std::fs::read_to_string(dir.path().join("records.jsonl")).expect("records");
        assert!(records.contains(r#""sql":"SELECT id, card_number FROM payments WHERE id = 2""#));
        assert!(records.contains(r#""user":"agent-7""#));
        let readme = std::fs::read_to_string(dir.path().join("README.md")).expect("readme");
        assert!(readme.contains("10.2.2"));

        // The convenience field alone…
        std::fs::write(
            dir.path().join("records.jsonl"),
            records.replace("WHERE id = 2\"", "WHERE id = 7\""),
        )
        .expect("edit");
        let report = hoop_audit::verify_export(dir.path()).expect("verify export");
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Altered {
                instance: GW.into(),
                seq: 5
            }),
            "{report}"
        );
        // …and the payload too.
        std::fs::write(
            dir.path().join("records.jsonl"),
            records.replace("id = 2", "id = 7"),
        )
        .expect("edit");
        let report = hoop_audit::verify_export(dir.path()).expect("verify export");
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Altered {
                instance: GW.into(),
                seq: 5
            }),
            "{report}"
        );
        // An export window that starts mid-chain still verifies.
        let all = reader
            .sessions(&Default::default())
            .await
            .expect("sessions");
        assert_eq!(all.len(), 1);
    }

    pub async fn purge_keeps_the_rest_verifiable(harness: Harness) {
        let store = harness.open(GW).await;
        workload(&store, "old", 2).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let cutoff = hoop_audit::Timestamp::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        workload(&store, "new", 2).await;
        let purged = store.purge_before(cutoff).await.expect("purge");
        assert_eq!(purged.deleted, 10);
        assert_eq!(purged.anchor.as_ref().map(|a| a.length), Some(10));
        workload(&store, "newer", 1).await;
        store.close("test").await.expect("close");
        let report = verify(&harness).await;
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.chains[0].purge_anchor, Some(10));
        assert_eq!(report.chains[0].first_seq, Some(11));
        let reader = AuditReader::open(&harness.config(GW)).expect("reader");
        let sessions: Vec<String> = reader
            .sessions(&Default::default())
            .await
            .expect("sessions")
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        assert_eq!(sessions, vec!["new", "newer"]);

        // Deleting the first remaining record is still caught.
        harness
            .exec(&format!(
                "DELETE FROM audit_entries WHERE instance = '{GW}' AND seq = 11"
            ))
            .await;
        let report = verify(&harness).await;
        assert_eq!(
            report.first_problem(),
            Some(&Problem::Missing {
                instance: GW.into(),
                after_seq: 10,
                next_seq: 12
            }),
            "{report}"
        );
    }
}

/// Every printed form of the three test PANs: digits, spaced, dashed.
fn assert_no_pan(bytes: &[u8], what: &str) {
    const FORMS: [&str; 9] = [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "5555 5555 5555 4444",
        "5555-5555-5555-4444",
        "378282246310005",
        "3782 822463 10005",
        "3782-822463-10005",
    ];
    for form in FORMS {
        assert!(
            !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
            "{what} holds the card number {form:?}"
        );
    }
    assert!(
        !hoop_common::pan::contains_pan(bytes),
        "{what} holds a card number"
    );
}

macro_rules! suite {
    ($harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crate::suite::$name($harness).await;
            }
        )*
    };
}

mod sqlite {
    use super::support::Harness;

    suite!(Harness::sqlite();
        clean_store_verifies,
        edited_field_is_named,
        deleted_record_is_named,
        swapped_records_are_named,
        truncated_tail_is_named,
        forged_checkpoint_is_named,
        no_card_number_reaches_the_store,
        unwritable_store_fails_closed_and_recovers,
        read_only_file_fails_closed_and_recovers,
        two_instances_both_verify,
        concurrent_writers_share_commits,
        completions_without_waiting_are_written_in_order,
        crash_leaves_incomplete_statement_visible,
        sessions_and_replay_for_auditors,
        export_verifies_offline_and_catches_edits,
        purge_keeps_the_rest_verifiable,
    );
}

mod postgres {
    use super::support::Harness;

    suite!(Harness::postgres().await;
        clean_store_verifies,
        edited_field_is_named,
        deleted_record_is_named,
        swapped_records_are_named,
        truncated_tail_is_named,
        forged_checkpoint_is_named,
        no_card_number_reaches_the_store,
        two_instances_both_verify,
        concurrent_writers_share_commits,
        completions_without_waiting_are_written_in_order,
        crash_leaves_incomplete_statement_visible,
        sessions_and_replay_for_auditors,
        export_verifies_offline_and_catches_edits,
        purge_keeps_the_rest_verifiable,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_down_fails_closed_and_recovers() {
        crate::suite::postgres_down_fails_closed_and_recovers().await;
    }
}
