//! Statements held for review, at the protocol level: what the client
//! receives while its statement waits, and after a reviewer approves,
//! denies or modifies it, after the review expires, and after a cancel —
//! in the simple and the extended protocol, pipelined and inside a
//! transaction — plus the audit records each leaves and the fail-closed
//! refusal when the audit trail cannot take a record.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// `SELECT`s of `payments` and every write to `scratch` go to review
/// (hoop does not ship a rule about the demo's `payments`; this one is ours);
/// DROPs are blocked; reviews expire after `expiry`.
fn options(expiry: &str) -> GatewayOptions {
    let mut opts = GatewayOptions::default();
    opts.mappings.push_str(&format!(
        r#"
[[rules]]
name = "review-large-payments"
action = "review"
message = "large payments need a second pair of eyes"
kinds = ["select"]
tables = ["payments"]

[[rules]]
name = "review-scratch-writes"
action = "review"
kinds = ["dml"]
tables = ["scratch"]

[[rules]]
name = "block-drops"
action = "block"
kinds = ["ddl_drop"]

[reviews]
expiry = "{expiry}"
public_url = "http://reviews.example"

[audit]
record_rows = 3
"#
    ));
    opts
}

struct Api {
    base: String,
    http: reqwest::Client,
    reviewer: String,
}

impl Api {
    fn new(gw: &TestGateway) -> Api {
        Api {
            base: format!("http://{}", gw.admin),
            // A hang is a failure, not a stuck test run.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            reviewer: gw.mint("alice", &["reviewers"], Duration::from_secs(600)),
        }
    }

    async fn post(&self, id: &str, action: &str, body: Value) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}/api/reviews/{id}/{action}", self.base))
            .bearer_auth(&self.reviewer)
            .json(&body)
            .send()
            .await
            .expect("admin API");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/reviews/{id}", self.base))
            .bearer_auth(&self.reviewer)
            .send()
            .await
            .expect("admin API")
            .json()
            .await
            .expect("review JSON")
    }
}

/// The review id a hold notice names.
fn review_id(notice: &Msg) -> String {
    assert_eq!(notice.tag, b'N', "expected the hold notice, got {notice:?}");
    let text = notice.field(b'M').unwrap_or_default();
    let start = text
        .find("r-")
        .unwrap_or_else(|| panic!("no review id in {text:?}"));
    text[start..start + 18].to_owned()
}

/// Nothing arrives for a moment: the statement is held, not run.
async fn quiet(raw: &mut Raw) {
    let mut probe = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), raw.stream.peek(&mut probe)).await;
    assert!(
        read.is_err(),
        "the client got something while its statement was held"
    );
}

async fn login(gw: &TestGateway) -> (Raw, Vec<Msg>) {
    Raw::login(gw.addr, "agent-7", &gw.agent_token()).await
}

fn rows(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let len = i32::from_be_bytes(m.body[2..6].try_into().unwrap());
            String::from_utf8_lossy(&m.body[6..6 + len as usize]).into_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_holds_until_approved_denied_or_modified() {
    let gw = start_gateway(options("30s")).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;

    // Approve: the rows arrive only after the decision.
    raw.send(&query(
        "SELECT id FROM payments WHERE amount > 10000 OR id = 1 ORDER BY id",
    ))
    .await;
    let notice = raw.recv().await.expect("notice");
    let id = review_id(&notice);
    let text = notice.field(b'M').unwrap();
    assert!(text.contains("rule \"review-large-payment"), "{text}");
    assert!(text.contains("http://reviews.example/reviews#r-"), "{text}");
    quiet(&mut raw).await;
    let pending = api.get(&id).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["subject"], "agent-7");
    let (status, _) = api.post(&id, "approve", json!({"reason": "ok"})).await;
    assert_eq!(status, 200);
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "TDCZ", "{answer:?}");
    assert_eq!(rows(&answer), vec!["1"]);

    // Deny: 42501 naming the reviewer and the reason; the session goes on.
    raw.send(&query("SELECT count(*) FROM payments")).await;
    let id = review_id(&raw.recv().await.unwrap());
    let (status, _) = api.post(&id, "deny", json!({"reason": "not today"})).await;
    assert_eq!(status, 200);
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "EZ", "{answer:?}");
    assert_eq!(answer[0].error_code().as_deref(), Some("42501"));
    let message = answer[0].field(b'M').unwrap();
    assert!(
        message.contains("alice") && message.contains("not today"),
        "{message}"
    );
    assert_eq!(answer[1].body, b"I");

    // Modify: the reviewer's statement runs instead.
    raw.send(&query("SELECT id FROM payments ORDER BY id"))
        .await;
    let id = review_id(&raw.recv().await.unwrap());
    // A replacement the rules block is refused and the review stays pending.
    let (status, body) = api
        .post(&id, "modify", json!({"sql": "DROP TABLE payments"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(api.get(&id).await["status"], "pending");
    let (status, _) = api
        .post(
            &id,
            "modify",
            json!({"sql": "SELECT id FROM payments ORDER BY id LIMIT 2"}),
        )
        .await;
    assert_eq!(status, 200);
    let answer = raw.until(b'Z').await;
    assert_eq!(rows(&answer), vec!["1", "2"], "{answer:?}");

    // Pipelined: an allowed query before and after a held one.
    let mut batch = query("SELECT 1");
    batch.extend(query("SELECT id FROM payments WHERE id = 3"));
    batch.extend(query("SELECT 2"));
    raw.send(&batch).await;
    let first = raw.until(b'Z').await;
    assert_eq!(rows(&first), vec!["1"]);
    let id = review_id(&raw.recv().await.unwrap());
    quiet(&mut raw).await;
    api.post(&id, "approve", json!({})).await;
    assert_eq!(rows(&raw.until(b'Z').await), vec!["3"]);
    assert_eq!(rows(&raw.until(b'Z').await), vec!["2"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_holds_at_execute_in_and_out_of_transactions() {
    let gw = start_gateway(options("30s")).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;

    // The Parse, Bind and Describe wait with the Execute (PostgreSQL would
    // answer them only at the Sync anyway), so the notice comes first.
    let mut batch = parse("s1", "SELECT id FROM payments WHERE id = $1");
    let mut b = cstr("");
    b.extend(cstr("s1"));
    b.extend([0, 0, 0, 1, 0, 0, 0, 1, b'4', 0, 0]);
    batch.extend(msg(b'B', &b));
    batch.extend(describe(b'P', ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let id = review_id(&raw.recv().await.unwrap());
    quiet(&mut raw).await;
    // Held back whole: no transaction, no lock on payments upstream.
    let locks = cluster().psql(
        "payments",
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'payments' AND l.pid <> pg_backend_pid()",
    );
    assert_eq!(
        locks.trim(),
        "0",
        "a held statement must not reach the server"
    );
    api.post(&id, "approve", json!({})).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "12TDCZ", "{answer:?}");
    assert_eq!(rows(&answer), vec!["4"]);

    // Modified in the extended protocol: same parameters, same formats.
    let mut b = cstr("");
    b.extend(cstr("s1"));
    b.extend([0, 0, 0, 1, 0, 0, 0, 1, b'5', 0, 0]);
    let mut batch = msg(b'B', &b);
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let id = review_id(&raw.recv().await.unwrap());
    api.post(
        &id,
        "modify",
        json!({"sql": "SELECT id + 100 FROM payments WHERE id = $1"}),
    )
    .await;
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "2DCZ", "{answer:?}");
    assert_eq!(rows(&answer), vec!["105"]);

    // Inside a transaction: a denial aborts it like any error.
    raw.send(&query("BEGIN")).await;
    raw.until(b'Z').await;
    let mut b = cstr("");
    b.extend(cstr("s1"));
    b.extend([0, 0, 0, 1, 0, 0, 0, 1, b'6', 0, 0]);
    let mut batch = msg(b'B', &b);
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let id = review_id(&raw.recv().await.unwrap());
    api.post(&id, "deny", json!({"reason": "no"})).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(answer.last().unwrap().body, b"E", "{answer:?}");
    assert_eq!(
        answer[answer.len() - 2].error_code().as_deref(),
        Some("42501")
    );
    raw.send(&query("ROLLBACK")).await;
    assert_eq!(raw.until(b'Z').await.last().unwrap().body, b"I");

    // Approved inside a transaction: the statement runs in it.
    raw.send(&query("BEGIN")).await;
    raw.until(b'Z').await;
    raw.send(&query("INSERT INTO scratch VALUES (1, 'held')"))
        .await;
    let id = review_id(&raw.recv().await.unwrap());
    api.post(&id, "approve", json!({})).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(answer.last().unwrap().body, b"T", "{answer:?}");
    raw.send(&query("ROLLBACK")).await;
    raw.until(b'Z').await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_cancel_and_disconnect_end_the_hold() {
    let gw = start_gateway(options("2s")).await;
    let api = Api::new(&gw);

    // Expiry: 57014 "review expired".
    let (mut raw, startup) = login(&gw).await;
    raw.send(&query("SELECT count(*) FROM payments")).await;
    let id = review_id(&raw.recv().await.unwrap());
    let answer = raw.until(b'Z').await;
    assert_eq!(
        answer[0].error_code().as_deref(),
        Some("57014"),
        "{answer:?}"
    );
    assert!(answer[0].field(b'M').unwrap().contains("review expired"));
    assert_eq!(api.get(&id).await["status"], "expired");

    // Cancel: the review is withdrawn and the client gets 57014.
    let key = startup
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    raw.send(&query("SELECT count(*) FROM payments")).await;
    let id = review_id(&raw.recv().await.unwrap());
    let mut cancel = Vec::new();
    cancel.extend(16u32.to_be_bytes());
    cancel.extend(80877102u32.to_be_bytes());
    cancel.extend(&key.body[..8]);
    let mut other = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut other, &cancel)
        .await
        .unwrap();
    let answer = raw.until(b'Z').await;
    assert_eq!(
        answer[0].error_code().as_deref(),
        Some("57014"),
        "{answer:?}"
    );
    assert!(answer[0]
        .field(b'M')
        .unwrap()
        .contains("canceling statement"));
    assert_eq!(api.get(&id).await["status"], "withdrawn");

    // Disconnect: withdrawn too.
    raw.send(&query("SELECT count(*) FROM payments")).await;
    let id = review_id(&raw.recv().await.unwrap());
    drop(raw);
    let mut status = Value::Null;
    for _ in 0..50 {
        status = api.get(&id).await["status"].clone();
        if status == "withdrawn" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "withdrawn");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_is_recorded_with_its_decision_and_outcome() {
    let gw = start_gateway(options("30s")).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;
    raw.send(&query(
        "SELECT id, card_number FROM payments ORDER BY id LIMIT 5",
    ))
    .await;
    let notice = raw.recv().await.unwrap();
    let id = review_id(&notice);
    api.post(&id, "approve", json!({})).await;
    raw.until(b'Z').await;
    raw.send(&query("SELECT '4111111111111111'::int")).await;
    raw.until(b'Z').await;
    raw.send(&query("DROP TABLE payments")).await;
    raw.until(b'Z').await;
    raw.send(&msg(b'X', b"")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = gw.dir.clone();
    gw.stop().await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["audit", "export", "-c"])
        .arg(dir.join("hoop.toml"))
        .arg("--out")
        .arg(dir.join("export"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = std::fs::read_to_string(dir.join("export/records.jsonl")).unwrap();
    assert!(
        !records.contains("4111111111111111"),
        "a PAN in the audit trail"
    );
    let records: Vec<Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&Value> {
        records.iter().filter(|r| r["event_type"] == kind).collect()
    };
    let (statements, ends) = (of("statement"), of("statement_end"));
    assert_eq!(statements.len(), 3, "{records:#?}");
    assert_eq!(ends.len(), 3, "{records:#?}");
    let payload =
        |r: &Value| -> Value { serde_json::from_str(r["payload"].as_str().unwrap()).unwrap() };

    let held = payload(statements[0]);
    assert_eq!(held["sequence"], 1);
    assert_eq!(held["decision"]["action"], "review");
    assert_eq!(held["decision"]["review_id"], id.as_str());
    assert_eq!(held["decision"]["reviewer"], "alice");
    let held_end = payload(ends[0]);
    assert_eq!(held_end["outcome"]["command_tag"], "SELECT 5");
    assert_eq!(held_end["outcome"]["rows"], 5);
    let recorded = held_end["outcome"]["result_rows"].as_array().unwrap();
    assert_eq!(recorded.len(), 3, "record_rows = 3");
    assert_eq!(
        recorded[0][1], "************1111",
        "rows as the client got them"
    );

    let failed = payload(statements[1]);
    assert!(failed["sql"].as_str().unwrap().contains("1111"));
    let failed_end = payload(ends[1]);
    assert_eq!(
        failed_end["outcome"]["sqlstate"], "22003",
        "out of range for int"
    );

    let blocked = payload(statements[2]);
    assert_eq!(blocked["decision"]["action"], "block");
    assert_eq!(payload(ends[2])["outcome"]["sqlstate"], "42501");
}

/// A grant ("approve for 10 minutes") covers exactly the statement that was
/// reviewed, as PostgreSQL's grammar reads it: layout and comments do not
/// matter, moving a newline so that a `--` comment ends elsewhere does
/// (issue 16 item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_covers_the_reviewed_statement_and_nothing_else() {
    let gw = start_gateway(options("30s")).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;
    let reviewed = "UPDATE scratch SET t = 'x' WHERE id = -1 -- OR id > 0\n";
    raw.send(&query(reviewed)).await;
    let id = review_id(&raw.recv().await.expect("hold notice"));
    let (status, body) = api
        .post(
            &id,
            "approve",
            json!({"reason": "no rows", "grant_for": "10m"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tags(&raw.until(b'Z').await), "CZ");

    // The same statement, laid out differently: the grant covers it.
    raw.send(&query(
        "update scratch\n  set t = 'x'  /* again */ where id = -1",
    ))
    .await;
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "CZ", "{answer:?}");

    // The comment now ends before `OR id > 0`: another statement, held.
    raw.send(&query(
        "UPDATE scratch SET t = 'x' WHERE id = -1 --\n OR id > 0",
    ))
    .await;
    let id = review_id(&raw.recv().await.expect("a new hold"));
    let (status, _) = api.post(&id, "deny", json!({"reason": "no"})).await;
    assert_eq!(status, 200);
    let answer = raw.until(b'Z').await;
    assert_eq!(
        answer[0].error_code().as_deref(),
        Some("42501"),
        "{answer:?}"
    );
    // Another literal: another statement.
    raw.send(&query("UPDATE scratch SET t = 'y' WHERE id = -1"))
        .await;
    let id = review_id(&raw.recv().await.expect("a new hold"));
    let (status, _) = api.post(&id, "deny", json!({"reason": "no"})).await;
    assert_eq!(status, 200);
    raw.until(b'Z').await;
    gw.stop().await;
}

/// A fast-path FunctionCall a rule sends to review: approval runs it, but
/// no statement can stand in for it (its client waits for a
/// FunctionCallResponse), so a reviewer's replacement is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_function_call_runs_when_approved_and_is_never_replaced() {
    let mut opts = options("30s");
    opts.mappings.push_str(
        "[policy.default_rules]\ndisable = [\"function-call-protocol\", \"block-file-access-functions\"]\n",
    );
    let gw = start_gateway(opts).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;
    // int4pl(40, 2) by oid 177, binary arguments and result: held by
    // `review-dynamic-sql-functions`, whose functions a FunctionCall may be.
    let mut body = 177u32.to_be_bytes().to_vec();
    body.extend([0, 1, 0, 1, 0, 2]);
    for v in [40i32, 2] {
        body.extend(4i32.to_be_bytes());
        body.extend(v.to_be_bytes());
    }
    body.extend([0, 1]);

    raw.send(&msg(b'F', &body)).await;
    let id = review_id(&raw.recv().await.expect("notice"));
    quiet(&mut raw).await;
    let (status, _) = api.post(&id, "approve", json!({"reason": "ok"})).await;
    assert_eq!(status, 200);
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "VZ", "{answer:?}");
    assert_eq!(answer[0].body, [0, 0, 0, 4, 0, 0, 0, 42]);

    raw.send(&msg(b'F', &body)).await;
    let id = review_id(&raw.recv().await.expect("notice"));
    let (status, body) = api.post(&id, "modify", json!({"sql": "SELECT 42"})).await;
    assert_eq!(status, 200, "{body}");
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "EZ", "{answer:?}");
    let message = answer[0].field(b'M').unwrap();
    assert!(message.contains("cannot be replaced"), "{message}");
    raw.send(&query("select 1")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_name_portal_is_judged_on_what_the_name_means_when_it_runs() {
    // `s` is parsed as `EXECUTE q` while `q` is harmless. `q` is then
    // prepared again as a read of payments, which goes to review (at its
    // PREPARE, and again each time it runs). A portal of `s` runs the new
    // `q`, so it waits for review too.
    let gw = start_gateway(options("30s")).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;
    raw.send(&query("PREPARE q AS SELECT 1")).await;
    raw.until(b'Z').await;
    let mut batch = parse("s", "EXECUTE q");
    batch.extend(sync());
    raw.send(&batch).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "1Z", "{answer:?}");
    raw.send(&query("DEALLOCATE q")).await;
    raw.until(b'Z').await;
    raw.send(&query("PREPARE q AS SELECT id FROM payments WHERE id = 4"))
        .await;
    let id = review_id(&raw.recv().await.unwrap());
    api.post(&id, "approve", json!({})).await;
    raw.until(b'Z').await;

    let mut batch = msg(b'B', &{
        let mut b = cstr("");
        b.extend(cstr("s"));
        b.extend([0, 0, 0, 0, 0, 0]);
        b
    });
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    // The Bind went on (its statement needs no review); the Execute waits.
    let mut first = raw.recv().await.unwrap();
    if first.tag == b'2' {
        first = raw.recv().await.unwrap();
    }
    let id = review_id(&first);
    quiet(&mut raw).await;
    // A replacement may not change what names mean: the gateway would not
    // know what it prepared.
    let (status, body) = api
        .post(&id, "modify", json!({"sql": "PREPARE z AS SELECT 1"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(api.get(&id).await["status"], "pending");
    api.post(&id, "approve", json!({})).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(rows(&answer), vec!["4"], "{answer:?}");
    drop(raw);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_prepared_with_parse_in_sql_goes_to_review_each_time_it_runs() {
    // `q` is prepared harmless in a Query, then deallocated and prepared
    // again as a read of payments with Parse/Bind/Execute (as pgJDBC sends
    // every statement). That `PREPARE` goes to review; so must every
    // `EXECUTE q` after it (before, the gateway kept `q` as the harmless
    // statement and ran `EXECUTE q` without review).
    let gw = start_gateway(options("30s")).await;
    let api = Api::new(&gw);
    let (mut raw, _) = login(&gw).await;
    raw.send(&query("PREPARE q AS SELECT 1")).await;
    raw.until(b'Z').await;
    let extended = |sql: &str| {
        let mut batch = parse("", sql);
        batch.extend(msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
        batch.extend(execute("", 0));
        batch.extend(sync());
        batch
    };
    raw.send(&extended("DEALLOCATE q")).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(tags(&answer), "12CZ", "{answer:?}");
    raw.send(&extended(
        "PREPARE q AS SELECT id FROM payments WHERE id = 4",
    ))
    .await;
    let mut first = raw.recv().await.unwrap();
    while first.tag != b'N' {
        first = raw.recv().await.unwrap();
    }
    let id = review_id(&first);
    api.post(&id, "approve", json!({})).await;
    let answer = raw.until(b'Z').await;
    assert!(tags(&answer).ends_with("CZ"), "{answer:?}");

    raw.send(&query("EXECUTE q")).await;
    let id = review_id(&raw.recv().await.unwrap());
    quiet(&mut raw).await;
    api.post(&id, "approve", json!({})).await;
    let answer = raw.until(b'Z').await;
    assert_eq!(rows(&answer), vec!["4"], "{answer:?}");
    drop(raw);
    gw.stop().await;
}

/// Messages held back with a statement that goes to review (its Parse and
/// Bind) go on when a malformed message ends the batch, as at a Sync
/// without an Execute: the client gets their answers, then the error, in
/// order, as PostgreSQL would answer the same batch; nothing is run and
/// nothing waits for a reviewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_after_a_held_back_parse_is_answered_in_order() {
    let gw = start_gateway(options("60s")).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("", "SELECT id FROM payments LIMIT 1");
    batch.extend(bind("", "", None));
    batch.extend(msg(b'E', b"\0\0\0\0\0extra"));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12EZ");
    assert_eq!(msgs[2].error_code().as_deref(), Some("08P01"));
    assert_eq!(msgs[3].body, b"I");
    raw.send(&query("SELECT 1")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    gw.stop().await;
}
