//! The gateway's audit trail and review API as an operator meets them:
//! sessions and failed logins made through a running gateway are recorded,
//! `hoop audit verify|sessions|replay|export` read them (and are recorded
//! doing so), a row edited in the SQLite file is named by `verify`, and the
//! review API on the admin address only answers reviewers.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use support::*;

fn hoop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(args)
        .env_remove("HOOP_TOKEN")
        .output()
        .expect("run hoop")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config_path(gw: &TestGateway) -> String {
    gw.dir.join("hoop.toml").display().to_string()
}

fn file_contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_audit_trail_verifies_replays_exports_and_names_tampering() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let config = config_path(&gw);
    let dir = gw.dir.clone();

    // One session through the gateway, with an application name.
    let token = gw.agent_token();
    let client = pg_connect(&format!(
        "{} application_name=audit-wiring-test",
        gw.url("agent-7", &token)
    ))
    .await;
    client.simple_query("select 1").await.expect("query");
    drop(client);

    // A refused login: the reason is recorded, the token never is.
    let now = now_unix();
    let expired = sign_dev(
        &json!({"iss": "hoop-dev", "aud": "hoop", "sub": "agent-9", "iat": now - 700,
                "exp": now - 600, "groups": ["fraud-agents"]}),
        Some("hoop-dev-1"),
    );
    let refused = Raw::login_error(gw.addr, &expired).await;
    assert_eq!(refused.error_code().as_deref(), Some("28P01"));

    // Let the session end be recorded, then stop (final checkpoint).
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop().await;
    let db = gw_dir_file(&config, "audit.db");
    assert!(db.is_file(), "default store next to the config: {db:?}");
    let token_signature = expired.rsplit('.').next().unwrap();
    let log = gw_dir_file(&config, "audit.db-log-gw-1");
    assert!(log.is_file(), "the commit log beside the store: {log:?}");
    for file in ["audit.db", "audit.db-wal", "audit.db-log-gw-1"] {
        let path = gw_dir_file(&config, file);
        assert!(
            !file_contains(&path, token_signature),
            "{file} holds the refused token"
        );
    }

    let verify = hoop(&["audit", "verify", "-c", &config]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("OK: every chain verifies"),
        "{}",
        text(&verify)
    );

    let sessions = hoop(&["audit", "sessions", "-c", &config, "--sub", "agent-7"]);
    assert!(sessions.status.success(), "{}", text(&sessions));
    let listing = String::from_utf8_lossy(&sessions.stdout).into_owned();
    let line = listing
        .lines()
        .find(|l| l.contains("agent-7"))
        .unwrap_or_else(|| panic!("no agent-7 session:\n{listing}"));
    assert!(line.contains("fraud_agent"), "{line}");
    assert!(line.contains("audit-wiring-test"), "{line}");
    assert!(line.contains("client_quit"), "{line}");
    let session_id = line.split_whitespace().next().unwrap().to_owned();

    let replay = hoop(&["audit", "replay", "-c", &config, &session_id]);
    assert!(replay.status.success(), "{}", text(&replay));
    let timeline = String::from_utf8_lossy(&replay.stdout);
    assert!(timeline.contains(&session_id), "{timeline}");
    assert!(timeline.contains("agent-7"), "{timeline}");
    assert!(timeline.contains("fraud_agent"), "{timeline}");

    // Export, then verify the export offline.
    let out = dir.join("evidence");
    let export = hoop(&[
        "audit",
        "export",
        "-c",
        &config,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", text(&export));
    let offline = hoop(&["audit", "verify", out.to_str().unwrap()]);
    assert!(offline.status.success(), "{}", text(&offline));
    let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    let failed: Vec<&str> = records
        .lines()
        .filter(|l| l.contains("login_failed"))
        .collect();
    assert!(
        failed.iter().any(|l| l.contains("expired")),
        "failed login with its reason: {failed:?}"
    );
    assert!(!records.contains(token_signature), "export holds the token");
    for kind in [
        "gateway_started",
        "gateway_stopped",
        "config_reloaded",
        "session_start",
        "session_end",
        "audit_read",
    ] {
        assert!(records.contains(kind), "{kind} missing from the export");
    }

    // Edit one recorded field in the SQLite file: verify names that record.
    let seq: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let seq = conn
            .query_row(
                "SELECT seq FROM audit_entries WHERE instance = 'gw-1' AND kind = 'session_start' \
                 ORDER BY seq LIMIT 1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        conn.execute(
            "UPDATE audit_entries SET payload = replace(payload, 'agent-7', 'agent-8') \
             WHERE instance = 'gw-1' AND seq = ?1",
            [seq],
        )
        .unwrap();
        seq
    };
    let tampered = hoop(&["audit", "verify", "-c", &config]);
    assert!(!tampered.status.success(), "{}", text(&tampered));
    let report = text(&tampered);
    assert!(
        report.contains(&format!("gw-1 #{seq}")) && report.contains("altered"),
        "{report}"
    );
}

fn gw_dir_file(config: &str, name: &str) -> std::path::PathBuf {
    Path::new(config).parent().unwrap().join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_api_and_cli_answer_reviewers_only() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let base = format!("http://{}", gw.admin);
    let http = reqwest::Client::new();
    let status = |token: Option<String>| {
        let mut request = http.get(format!("{base}/api/reviews"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("admin API").status().as_u16() }
    };
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some("not-a-token".into())).await, 401);
    let agent = gw.agent_token();
    assert_eq!(status(Some(agent.clone())).await, 403);
    let reviewer = gw.mint("alice", &["reviewers"], Duration::from_secs(600));
    let answer = http
        .get(format!("{base}/api/reviews"))
        .bearer_auth(&reviewer)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(body["reviews"].is_array(), "{body}");
    let page = http.get(format!("{base}/reviews")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    // The metrics are still there next to the review API.
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);

    let config = config_path(&gw);
    let list = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoop"));
        cmd.args(["reviews", "list", "-c", &config, "--admin-url", &base])
            .env_remove("HOOP_TOKEN");
        if let Some(token) = token {
            cmd.env("HOOP_TOKEN", token);
        }
        cmd.output().expect("run hoop")
    };
    let ok = list(Some(&reviewer));
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("no reviews"),
        "{}",
        text(&ok)
    );
    assert_eq!(list(Some(&agent)).status.code(), Some(4), "not a reviewer");
    assert_eq!(list(None).status.code(), Some(2), "no token");
    let missing = hoop(&[
        "reviews",
        "show",
        "-c",
        &config,
        "--admin-url",
        &base,
        "--token",
        &reviewer,
        "r-0000000000000000",
    ]);
    assert_eq!(missing.status.code(), Some(5), "{}", text(&missing));
    gw.stop().await;
}

/// Gateway options with a Postgres audit store in a fresh database owned by
/// a fresh role, both named `name` (the tests take the role's login away to
/// make the store fail).
fn postgres_audit_store(name: &str) -> GatewayOptions {
    let cluster = cluster();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("DROP ROLE IF EXISTS {name}"),
        format!("CREATE ROLE {name} LOGIN PASSWORD 'audit-pw'"),
        format!("CREATE DATABASE {name} OWNER {name}"),
    ] {
        cluster.psql("postgres", &sql);
    }
    let password = unique_dir("audit-pw").join(name);
    std::fs::write(&password, "audit-pw").unwrap();
    let mut opts = GatewayOptions::default();
    opts.mappings.push_str(&format!(
        r#"
[audit]
store = "postgres"
url = "host=127.0.0.1 port={} user={name} dbname={name}"
password = {{ file = "{}" }}
"#,
        cluster.port,
        password.display()
    ));
    opts
}

/// The Postgres audit store of [`postgres_audit_store`]`(name)` refuses
/// the gateway: its sessions are killed and its role cannot log in.
fn store_goes_away(cluster: &Cluster, name: &str) {
    cluster.psql(
        "postgres",
        &format!(
            "ALTER ROLE {name} NOLOGIN;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}';"
        ),
    );
}

fn store_comes_back(cluster: &Cluster, name: &str) {
    cluster.psql("postgres", &format!("ALTER ROLE {name} LOGIN"));
}

/// No access without a record: while the (Postgres) audit store refuses
/// writes, statements are refused with 58000 and do not run; once it is
/// back, statements run again and the trail verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_refused_while_the_audit_store_cannot_record_them() {
    let cluster = cluster();
    let gw = start_gateway(postgres_audit_store("hoop_audit_fc")).await;
    let client = pg_connect(&gw.url("agent-7", &gw.agent_token())).await;
    // Logged in (and so recorded) while the store still works.
    let reader = pg_connect(&gw.url("agent-7", &gw.agent_token())).await;
    client
        .simple_query("INSERT INTO scratch VALUES (9100, 'recorded')")
        .await
        .expect("recorded insert");

    // The store goes away: its sessions are killed and it refuses logins.
    store_goes_away(cluster, "hoop_audit_fc");
    let refused = client
        .simple_query("INSERT INTO scratch VALUES (9101, 'unrecorded')")
        .await
        .expect_err("no record, no statement");
    let db_error = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_error.code().code(), "58000", "{db_error}");
    assert!(db_error.message().contains("audit trail"), "{db_error}");
    assert_eq!(
        cluster
            .psql("payments", "SELECT count(*) FROM scratch WHERE id = 9101")
            .trim(),
        "0",
        "the refused statement must not have run"
    );

    // A plain read runs while its record is written, but nothing of its
    // answer reaches the client when the record cannot be written: the
    // session ends with 58000 instead.
    let withheld = reader
        .simple_query("SELECT * FROM scratch WHERE id = 9100")
        .await
        .expect_err("no record, no rows");
    let db_error = withheld.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_error.code().code(), "58000", "{db_error}");
    assert!(db_error.message().contains("not sent"), "{db_error}");
    assert!(reader.is_closed() || reader.simple_query("SELECT 1").await.is_err());

    // The store returns: statements run again.
    store_comes_back(cluster, "hoop_audit_fc");
    let mut recovered = false;
    for _ in 0..50 {
        if client
            .simple_query("INSERT INTO scratch VALUES (9102, 'recorded again')")
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "statements must run again once the store is back"
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = config_path(&gw);
    gw.stop().await;
    let verify = hoop(&["audit", "verify", "-c", &config]);
    assert!(verify.status.success(), "{}", text(&verify));
    cluster.psql(
        "payments",
        "DELETE FROM scratch WHERE id BETWEEN 9100 AND 9102",
    );
}

/// Inside a transaction block a plain write runs while its record is
/// written (its changes wait for a COMMIT, which is recorded before it is
/// sent). When the record cannot be written, nothing of its answer reaches
/// the client, the session ends and the server rolls the block back: no
/// change without a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_block_whose_record_fails_is_rolled_back() {
    let cluster = cluster();
    let gw = start_gateway(postgres_audit_store("hoop_audit_tx")).await;
    cluster.psql(
        "payments",
        "DELETE FROM scratch WHERE id = 9300; INSERT INTO scratch VALUES (9300, 'before')",
    );
    let client = pg_connect(&gw.url("agent-7", &gw.agent_token())).await;
    client.simple_query("BEGIN").await.expect("begin");
    client
        .simple_query("UPDATE scratch SET t = 'recorded' WHERE id = 9300")
        .await
        .expect("a recorded write in the block");
    // Prepared, as pgbench's TPC-B sends it.
    let update = client
        .prepare("UPDATE scratch SET t = $1 WHERE id = 9300")
        .await
        .expect("prepare");
    client
        .execute(&update, &[&"recorded too"])
        .await
        .expect("a recorded prepared write in the block");

    store_goes_away(cluster, "hoop_audit_tx");
    let failed = client
        .execute(&update, &[&"unrecorded"])
        .await
        .expect_err("no record, no change");
    let db_error = failed.as_db_error().expect("an ErrorResponse");
    assert_eq!(db_error.code().code(), "58000", "{db_error}");
    // It ran (early), and its answer was withheld.
    assert!(db_error.message().contains("not sent"), "{db_error}");
    assert!(client.is_closed() || client.simple_query("COMMIT").await.is_err());
    assert_eq!(
        cluster
            .psql("payments", "SELECT t FROM scratch WHERE id = 9300")
            .trim(),
        "before",
        "the block whose last write was not recorded must be rolled back"
    );

    store_comes_back(cluster, "hoop_audit_tx");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop().await;
    cluster.psql("payments", "DELETE FROM scratch WHERE id = 9300");
    cluster.psql("postgres", "DROP DATABASE IF EXISTS hoop_audit_tx");
}

/// No result without its record, under load: eight clients read (plain
/// reads, which run while their record is written) and write while the
/// (Postgres) audit store goes away and comes back. Every answer a client
/// received, rows or command tag, must have its `statement` record in the
/// store afterwards; what could not be recorded must have failed (58000)
/// and never shown its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_receives_a_result_whose_record_is_missing() {
    let cluster = cluster();
    let gw = start_gateway(postgres_audit_store("hoop_audit_kill")).await;
    cluster.psql(
        "payments",
        "DELETE FROM scratch WHERE id BETWEEN 9200 AND 9299; \
         INSERT INTO scratch VALUES (9200, 'seen')",
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_no in 0..8 {
        let url = gw.url("agent-7", &gw.agent_token());
        let stop = stop.clone();
        // Logged in before the store goes away, however slow the machine.
        let mut client = pg_connect(&url).await;
        clients.push(tokio::spawn(async move {
            // Tags of the statements whose answers this client received.
            let mut received = Vec::new();
            let mut refused = 0usize;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let tag = format!("c{client_no}q{n}");
                let sql = if n % 4 == 0 {
                    format!("UPDATE scratch SET t = 'seen' WHERE id = 9200 AND t <> '{tag}'")
                } else {
                    format!("SELECT t, '{tag}' AS tag FROM scratch WHERE id = 9200")
                };
                match client.simple_query(&sql).await {
                    Ok(messages) => {
                        if n % 4 != 0 {
                            let rows = messages
                                .iter()
                                .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                                .count();
                            assert_eq!(rows, 1, "{sql}");
                        }
                        received.push(tag);
                    }
                    Err(error) => {
                        let code = error.as_db_error().map(|e| e.code().code().to_owned());
                        assert_eq!(code.as_deref(), Some("58000"), "{sql}: {error}");
                        refused += 1;
                        // A read whose record failed ends the session.
                        if client.is_closed() || n % 4 != 0 {
                            loop {
                                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                                    return (received, refused);
                                }
                                match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                                    Ok((c, conn)) => {
                                        tokio::spawn(conn);
                                        client = c;
                                        break;
                                    }
                                    // Logins are refused too while the store is away.
                                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                                }
                            }
                        }
                    }
                }
            }
            (received, refused)
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    // The store goes away mid-run ...
    store_goes_away(cluster, "hoop_audit_kill");
    tokio::time::sleep(Duration::from_millis(700)).await;
    // ... and comes back.
    store_comes_back(cluster, "hoop_audit_kill");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut received = Vec::new();
    let mut refused = 0;
    for client in clients {
        let (tags, failures) = client.await.expect("client task");
        received.extend(tags);
        refused += failures;
    }
    assert!(refused > 0, "the store's absence was never noticed");
    assert!(received.len() > refused, "the run did almost nothing");

    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop().await;
    let recorded = cluster.psql(
        "hoop_audit_kill",
        "SELECT string_agg(payload, E'\\n') FROM audit_entries WHERE kind = 'statement'",
    );
    let missing: Vec<&String> = received
        .iter()
        .filter(|tag| !recorded.contains(&format!("'{tag}'")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answers have no record: {:?}",
        missing.len(),
        received.len(),
        &missing[..missing.len().min(10)]
    );
    cluster.psql("postgres", "DROP DATABASE IF EXISTS hoop_audit_kill");
}
