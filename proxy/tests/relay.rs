//! Raw-protocol tests of the relay against a real Postgres 15: what libpq
//! cannot produce (Flush without Sync, pipelined Syncs, PortalSuspended,
//! FunctionCall (refused), pre-TLS bytes, malformed and oversized messages) and the
//! session the gateway sets up (role, signed token bound to the backend pid).

mod support;

use std::time::Duration;

use hoop_common::token::{SessionSigner, TrustedKeys};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_role_and_a_session_token_bound_to_the_backend() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, startup) = Raw::login(gw.addr, "agent-7", &gw.agent_token()).await;
    assert_eq!(startup[0].tag, b'R');
    assert_eq!(startup[0].body, vec![0, 0, 0, 0]);
    // ParameterStatus never names the gateway role.
    for m in startup.iter().filter(|m| m.tag == b'S') {
        assert!(!m.text().contains("hoop_gateway"), "{}", m.text());
    }
    let auth = startup
        .iter()
        .find(|m| m.tag == b'S' && m.text().starts_with("session_authorization"));
    assert!(auth.is_none_or(|m| m.text().contains("fraud_agent")));
    let key = startup
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let gateway_pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());

    raw.send(&query(
        "select current_user, pg_backend_pid(), current_setting('hoop.session')",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    let text = row.text();
    assert!(text.contains("fraud_agent"), "{text}");
    // Columns: user, pid, token.
    let fields = decode_row(&row.body);
    let backend_pid: i32 = fields[1].parse().unwrap();
    assert_eq!(
        backend_pid, gateway_pid,
        "the client's key names its backend, as pg_backend_pid() and notifications do \
         (its secret is the gateway's)"
    );
    let token = &fields[2];
    let signer = SessionSigner::from_seed_base64("test-1", SEED_B64).unwrap();
    let trusted = TrustedKeys::parse(&signer.trusted_key_entry()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = trusted
        .verify(token, backend_pid, now)
        .expect("token verifies for this backend");
    assert_eq!(claims.role, "fraud_agent");
    assert_eq!(claims.sub, "agent-7");
    assert_eq!(claims.db, "payments");
    assert_eq!(claims.groups, vec!["fraud-agents"]);
    assert!(
        trusted.verify(token, backend_pid + 1, now).is_err(),
        "bound to the pid"
    );
    gw.stop().await;
}

fn decode_row(body: &[u8]) -> Vec<String> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push(String::new());
        } else {
            out.push(String::from_utf8_lossy(&body[at..at + len as usize]).into_owned());
            at += len as usize;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmask_columns_come_from_the_mapping() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let token = gw.mint(
        "admin-1",
        &["payments-admins", "fraud-agents"],
        Duration::from_secs(600),
    );
    let (mut raw, _) = Raw::login(gw.addr, "admin-1", &token).await;
    raw.send(&query(
        "select current_user, current_setting('hoop.session')",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    let fields = decode_row(&msgs.iter().find(|m| m.tag == b'D').unwrap().body);
    assert_eq!(
        fields[0], "payments_admin",
        "first matching mapping in file order wins"
    );
    let payload = fields[1].split('.').nth(1).unwrap();
    use base64::Engine;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        claims["unmask"],
        serde_json::json!(["public.payments.card_number"])
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_pipelined_syncs_and_portal_suspended() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    // Three pipelined Parse/Bind/Execute/Sync groups in one write; the middle one fails.
    let mut batch = Vec::new();
    batch.extend(parse("", "select 1"));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    batch.extend(parse("", "select 1/0"));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    batch.extend(parse("s3", "select generate_series(1, 5)"));
    batch.extend(describe(b'S', "s3"));
    batch.extend(bind("p3", "s3", Some(1)));
    batch.extend(execute("p3", 2));
    batch.extend(execute("p3", 2));
    batch.extend(execute("p3", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let first = raw.until(b'Z').await;
    assert_eq!(tags(&first), "12DCZ");
    let second = raw.until(b'Z').await;
    assert_eq!(tags(&second), "1EZ");
    assert_eq!(second[1].error_code().as_deref(), Some("22012"));
    let third = raw.until(b'Z').await;
    assert_eq!(tags(&third), "1tT2DDsDDsDCZ");
    // Binary result format: int4 5 in network order.
    assert_eq!(third[10].body, vec![0, 1, 0, 0, 0, 4, 0, 0, 0, 5]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_delivers_responses() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("f", "select $1::int + 1");
    batch.extend(describe(b'S', "f"));
    batch.extend(flush());
    raw.send(&batch).await;
    let msgs = vec![
        raw.recv().await.unwrap(),
        raw.recv().await.unwrap(),
        raw.recv().await.unwrap(),
    ];
    assert_eq!(tags(&msgs), "1tT");
    raw.send(&sync()).await;
    assert_eq!(tags(&raw.until(b'Z').await), "Z");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_and_multi_statement_queries() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(
        "create temp table c(a int, b text); copy c from stdin",
    ))
    .await;
    let msgs = raw.until(b'G').await;
    assert_eq!(tags(&msgs), "CG");
    let mut data = msg(b'd', b"1\tone\n2\ttwo\n");
    data.extend(msg(b'd', b"3\t\\N\n"));
    data.extend(msg(b'c', b""));
    raw.send(&data).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(msgs[0].text(), "COPY 3\0");
    raw.send(&query("copy c to stdout; select count(*) from c"))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "HdddcCTDCZ");
    assert_eq!(msgs[1].body, b"1\tone\n");
    // COPY in extended protocol, and CopyFail.
    let mut batch = parse("", "copy c from stdin");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'G').await), "12G");
    // The Sync sent during copy-in was ignored by the server; CopyFail needs its own.
    let mut fail = msg(b'f', &cstr("client changed its mind"));
    fail.extend(sync());
    raw.send(&fail).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].error_code().as_deref(), Some("57014"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_while_the_client_is_idle() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut listener, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    listener.send(&query("listen hoop_test")).await;
    listener.until(b'Z').await;
    let (mut sender, _) = Raw::login(gw.addr, "b", &gw.agent_token()).await;
    sender.send(&query("notify hoop_test, 'payload-42'")).await;
    sender.until(b'Z').await;
    // The listener sends nothing; the NotificationResponse must still arrive.
    let m = listener.recv().await.unwrap();
    assert_eq!(m.tag, b'A');
    assert!(m.text().contains("payload-42"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_is_refused() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    // int4pl(40, 2) by oid 177, binary arguments and result.
    let mut body = 177u32.to_be_bytes().to_vec();
    body.extend([0, 1, 0, 1]); // one format code: binary
    body.extend([0, 2]);
    for v in [40i32, 2] {
        body.extend(4i32.to_be_bytes());
        body.extend(v.to_be_bytes());
    }
    body.extend([0, 1]); // result binary
    raw.send(&msg(b'F', &body)).await;
    // A function named by OID escapes every function rule: refused.
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].error_code().as_deref(), Some("42501"));
    raw.send(&query("select 1")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    gw.stop().await;

    // Switching the rule off is not enough while a rule about functions
    // applies: a FunctionCall may call any of them.
    let gw = start_gateway(GatewayOptions {
        mappings: GatewayOptions::default().mappings
            + "[policy.default_rules]\ndisable = [\"function-call-protocol\"]\n",
        ..Default::default()
    })
    .await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&msg(b'F', &body)).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    assert!(
        msgs[0].text().contains("block-file-access-functions"),
        "{}",
        msgs[0].text()
    );
    gw.stop().await;

    // With no rule that refuses it, the call runs and is answered.
    let gw = start_gateway(GatewayOptions {
        mappings: GatewayOptions::default().mappings + "[policy.default_rules]\nenabled = false\n",
        ..Default::default()
    })
    .await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&msg(b'F', &body)).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "VZ");
    assert_eq!(msgs[0].body, [0, 0, 0, 4, 0, 0, 0, 42]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_end_cleanly() {
    let gw = start_gateway(GatewayOptions {
        extra_listen: "max_message_bytes = 65536\n".into(),
        ..Default::default()
    })
    .await;
    // A length below 4.
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&[b'Q', 0, 0, 0, 2]).await;
    let m = raw.recv().await.unwrap();
    assert_eq!(m.error_code().as_deref(), Some("08P01"));
    assert_eq!(m.field(b'S').as_deref(), Some("FATAL"));
    assert!(raw.recv().await.is_none());
    // A declared length over the limit: refused before the body arrives.
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&[b'Q', 0, 0x10, 0, 0]).await;
    let m = raw.recv().await.unwrap();
    assert_eq!(m.error_code().as_deref(), Some("08P01"));
    assert!(m.field(b'M').unwrap().contains("over the limit"));
    assert!(raw.recv().await.is_none());
    // Garbage instead of a startup packet: closed without a word, as
    // PostgreSQL closes it (it only logs it).
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(&[0, 0, 0, 3, 1, 2, 3]).await;
    assert!(raw.recv().await.is_none());
    // An unknown message type is the server's business: it answers, we relay.
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&msg(b'!', b"")).await;
    let m = raw.recv().await.unwrap();
    assert_eq!(m.error_code().as_deref(), Some("08P01"));
    gw.stop().await;
}

/// A well-framed message whose fields PostgreSQL cannot read gets
/// PostgreSQL's answer (each batch below sent to PostgreSQL 15 directly
/// gave the same messages and statuses: ERROR 08P01, and the session goes
/// on), and never reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_refused_as_postgres_refuses_them_and_the_session_goes_on() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let refused = |msgs: &[Msg], status: &[u8]| {
        assert_eq!(
            msgs[0].error_code().as_deref(),
            Some("08P01"),
            "{}",
            msgs[0].text()
        );
        assert_eq!(msgs[0].field(b'S').as_deref(), Some("ERROR"));
        assert_eq!(msgs.last().unwrap().body, status);
    };

    // A Query without its terminating NUL, and one with bytes after it:
    // refused, without effect.
    raw.send(&msg(
        b'Q',
        b"SELECT set_config('application_name', 'malformed', false)",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    refused(&msgs, b"I");
    raw.send(&msg(
        b'Q',
        b"SELECT set_config('application_name', 'malformed', false)\0;",
    ))
    .await;
    refused(&raw.until(b'Z').await, b"I");
    raw.send(&query("SHOW application_name")).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "TDCZ");
    assert!(!msgs[1].text().contains("malformed"), "{}", msgs[1].text());

    // In a transaction block: it fails the transaction, as any error does.
    raw.send(&query("BEGIN")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "CZ");
    raw.send(&msg(b'Q', b"SELECT 1")).await;
    refused(&raw.until(b'Z').await, b"E");
    raw.send(&query("SELECT 1")).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("25P02"));
    raw.send(&query("ROLLBACK")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "CZ");

    // Extended protocol: a Parse cut short; what follows it up to Sync is
    // skipped unread (a malformed Bind too).
    let mut batch = msg(b'P', b"\0SELECT 1\0\0\x05");
    batch.extend(msg(b'B', b"\0"));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    refused(&msgs, b"I");

    // Behind statements already sent: answered in order, after theirs.
    let mut batch = parse("", "SELECT 7");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(msg(b'E', b"\0\0\0\0\0extra"));
    batch.extend(parse("", "SELECT 8"));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12DCEZ");
    refused(&msgs[4..], b"I");

    // A Sync with a body: refused, and it still ends the batch.
    raw.send(&msg(b'S', b"x")).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    refused(&msgs, b"I");

    // A Sync with a body ending a skip: it ends the skip first, then is
    // refused itself.
    let mut batch = msg(b'P', b"\0SELECT 1\0\0\x05");
    batch.extend(msg(b'S', b"x"));
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EEZ");
    refused(&msgs[1..], b"I");

    // The same inside a transaction block: it fails there and stays failed.
    raw.send(&query("BEGIN")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "CZ");
    let mut batch = msg(b'P', b"\0SELECT 1\0\0\x05");
    batch.extend(msg(b'S', b"x"));
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EEZ");
    refused(&msgs[1..], b"E");
    raw.send(&query("ROLLBACK")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "CZ");

    // The session is whole.
    raw.send(&query("SELECT 9")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    // A Terminate with a body ends it without a word, as PostgreSQL ends it.
    raw.send(&msg(b'X', b"x")).await;
    assert!(raw.recv().await.is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_before_tls_are_refused() {
    let gw = start_gateway(GatewayOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let mut raw = Raw::connect(gw.addr).await;
    let mut payload = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]; // SSLRequest
    payload.extend(startup_packet(&[("user", "x")]));
    raw.send(&payload).await;
    let m = raw.recv().await.expect("an error, not a TLS handshake");
    assert_eq!(m.error_code().as_deref(), Some("08P01"));
    assert!(raw.recv().await.is_none());
    // Without TLS the gateway refuses plaintext logins by default.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(&startup_packet(&[("user", "x"), ("database", "payments")]))
        .await;
    let m = raw.recv().await.unwrap();
    assert_eq!(m.error_code().as_deref(), Some("28000"));
    assert!(m.field(b'M').unwrap().contains("TLS"));
    // GSSENCRequest is declined with 'N'.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    let mut b = [0u8; 1];
    use tokio::io::AsyncReadExt;
    raw.stream.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], b'N');
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_backend() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let client = pg_connect(&gw.url("agent", &gw.agent_token())).await;
    let cancel = client.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = sleeper.await.unwrap();
    let err = result.expect_err("cancelled");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_statement_cancels_upstream() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("select pg_sleep(60) /* hoop-abandoned */"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(raw);
    let cluster = cluster();
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = cluster.psql(
            "postgres",
            "select count(*) from pg_stat_activity where query like '%hoop-abandoned%' and pid <> pg_backend_pid()",
        );
        if n.trim() == "0" {
            gone = true;
            break;
        }
    }
    assert!(gone, "the abandoned statement still runs upstream");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stream() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let client = pg_connect(&gw.url("agent", &gw.agent_token())).await;
    let rows = client
        .query(
            "select g, repeat('x', 100) from generate_series(1, 200000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 200_000);
    let last: i32 = rows[199_999].get(0);
    assert_eq!(last, 200_000);
    // A single message near 8 MB each way.
    let big = "y".repeat(8 << 20);
    let row = client.query_one("select $1::text", &[&big]).await.unwrap();
    assert_eq!(row.get::<_, String>(0).len(), 8 << 20);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_setup_failure_is_an_error_not_a_half_session() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let token = gw.mint("ghost", &["ghosts"], Duration::from_secs(600));
    let m = Raw::login_error(gw.addr, &token).await;
    assert_eq!(m.tag, b'E');
    assert_eq!(m.error_code().as_deref(), Some("22023"), "{m:?}"); // role does not exist
    assert!(m
        .field(b'M')
        .unwrap()
        .contains("could not set up the database session"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_ends_the_session_with_fatal() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let token = gw.mint("short", &["fraud-agents"], Duration::from_secs(2));
    let (mut raw, _) = Raw::login(gw.addr, "short", &token).await;
    raw.send(&query("select 1")).await;
    raw.until(b'Z').await;
    let m = tokio::time::timeout(Duration::from_secs(10), raw.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(m.error_code().as_deref(), Some("28000"));
    assert!(m.field(b'M').unwrap().contains("expired"));
    assert!(raw.recv().await.is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_kept_busy_still_ends_when_its_token_expires() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let token = gw.mint("busy", &["fraud-agents"], Duration::from_secs(2));
    let (mut raw, _) = Raw::login(gw.addr, "busy", &token).await;
    // Batches of pipelined statements, the next sent as soon as the last
    // answer is in: the session always has something to read or write.
    let batch: Vec<u8> = (0..100).flat_map(|_| query("select 1")).collect();
    let started = std::time::Instant::now();
    let ended = 'session: loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the session outlived its token"
        );
        raw.send(&batch).await;
        let mut answered = 0;
        while answered < 100 {
            let Some(m) = raw.recv().await else {
                panic!("closed without a FATAL");
            };
            match m.tag {
                b'Z' => answered += 1,
                b'E' => break 'session m,
                _ => {}
            }
        }
    };
    assert_eq!(ended.field(b'S').as_deref(), Some("FATAL"), "{ended:?}");
    assert_eq!(ended.error_code().as_deref(), Some("28000"));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(raw.recv().await.is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_the_running_statement_finish() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("select pg_sleep(1), 'finished'")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = gw.addr;
    let stopping = tokio::spawn(gw.stop());
    let msgs = raw.until(b'Z').await;
    assert!(msgs.iter().any(|m| m.text().contains("finished")));
    let m = raw.recv().await.unwrap();
    assert_eq!(m.error_code().as_deref(), Some("57P01"));
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("select 1")).await;
    raw.until(b'Z').await;
    let health = http_get(gw.admin, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = http_get(gw.admin, "/metrics").await;
    for needle in [
        "hoop_logins_total{outcome=\"ok\"} 1",
        "hoop_client_connections_active 1",
        "hoop_statements_total 1",
        "hoop_request_duration_seconds_count 1",
        "hoop_relayed_bytes_total{direction=\"client_to_server\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    gw.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verify_full_and_require() {
    let ca = cluster().dir.join("server.crt");
    if !server_has_ssl() {
        // A server without TLS: the gateway must refuse, never fall back to plaintext.
        eprintln!(
            "{} has no TLS support: checking the refusal only",
            pg_bin().display()
        );
        let gw = start_gateway(GatewayOptions {
            extra_upstream: "tls = \"require\"\n".into(),
            ..Default::default()
        })
        .await;
        let m = Raw::login_error(gw.addr, &gw.agent_token()).await;
        assert_eq!(m.error_code().as_deref(), Some("08006"), "{m:?}");
        gw.stop().await;
        return;
    }
    for mode in [
        format!(
            "tls = \"verify-full\"\ntls_ca_file = \"{}\"\n",
            ca.display()
        ),
        "tls = \"require\"\n".to_owned(),
    ] {
        let gw = start_gateway(GatewayOptions {
            extra_upstream: mode.clone(),
            ..Default::default()
        })
        .await;
        let app = format!("tls-probe-{}", gw.addr.port());
        let client = pg_connect(&format!(
            "{} application_name={app}",
            gw.url("agent", &gw.agent_token())
        ))
        .await;
        client.simple_query("select 1").await.unwrap();
        // The session runs as the mapped role, which may not see the gateway
        // role's pg_stat_ssl row; the superuser checks.
        let ssl = cluster().psql(
            "postgres",
            &format!("select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = '{app}'"),
        );
        assert_eq!(ssl.trim(), "t", "upstream hop encrypted with {mode}");
        // Cancel also travels over TLS.
        let cancel = client.cancel_token();
        let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
        assert!(sleeper.await.unwrap().is_err());
        gw.stop().await;
    }
    // verify-full against the wrong CA: the client gets a clean error, not the details.
    let wrong_ca = unique_dir("wrong-ca");
    let (wrong, _) = make_cert(&wrong_ca);
    let gw = start_gateway(GatewayOptions {
        extra_upstream: format!(
            "tls = \"verify-full\"\ntls_ca_file = \"{}\"\n",
            wrong.display()
        ),
        ..Default::default()
    })
    .await;
    let m = Raw::login_error(gw.addr, &gw.agent_token()).await;
    assert_eq!(m.error_code().as_deref(), Some("08006"), "{m:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_results_match_direct() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let via = pg_connect(&gw.url("agent", &gw.agent_token())).await;
    let direct = pg_connect(&format!(
        "{} options='-c role=fraud_agent'",
        cluster().direct_url("payments")
    ))
    .await;
    let sql =
        "select id, card_number, cardholder, amount::text, created_at, $1::int4 + id::int4 as n, \
               $2::bytea as b, array[id, id * 2] as arr, jsonb_build_object('id', id) as j \
               from public.payments where id <= $3 and amount <= 10000 order by id";
    let bytes: Vec<u8> = (0u8..=255).collect();
    let mut results = Vec::new();
    for client in [&via, &direct] {
        let stmt = client.prepare(sql).await.unwrap();
        let rows = client.query(&stmt, &[&7i32, &bytes, &20i64]).await.unwrap();
        let rendered: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}|{}|{:?}|{}|{:?}|{:?}|{}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, std::time::SystemTime>(4),
                    r.get::<_, i32>(5),
                    r.get::<_, Vec<u8>>(6),
                    r.get::<_, Vec<i64>>(7),
                    r.get::<_, serde_json::Value>(8)
                )
            })
            .collect();
        let err = client.query_one("select 1/0", &[]).await.unwrap_err();
        let tx_count = {
            client
                .batch_execute("begin; insert into public.scratch values (1, 'x'); rollback")
                .await
                .unwrap();
            client
                .query_one("select count(*) from public.scratch", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        results.push((rendered, err.code().cloned(), tx_count));
    }
    // The gateway masks the card number (content detection: no extension here).
    results[1].0 = results[1]
        .0
        .iter()
        .map(|r| r.replace("4111111111111111", "************1111"))
        .collect();
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].0.len(), 20);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_versions_are_negotiated_down_to_3_0() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let mut raw = Raw::connect(gw.addr).await;
    // Protocol 3.2 with an unknown protocol extension.
    let mut packet = startup_packet(&[
        ("user", "a"),
        ("database", "payments"),
        ("_pq_.test_ext", "on"),
    ]);
    packet[4..8].copy_from_slice(&0x0003_0002u32.to_be_bytes());
    raw.send(&packet).await;
    let negotiate = raw.recv().await.unwrap();
    assert_eq!(negotiate.tag, b'v');
    assert_eq!(&negotiate.body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&negotiate.body[8..], b"_pq_.test_ext\0");
    let auth = raw.recv().await.unwrap();
    assert_eq!(auth.tag, b'R');
    raw.send(&msg(b'p', &cstr(&gw.agent_token()))).await;
    let startup = raw.until(b'Z').await;
    let key = startup.iter().find(|m| m.tag == b'K').unwrap();
    assert_eq!(key.body.len(), 8, "a 3.0 BackendKeyData");
    gw.stop().await;
}

/// A fast-path FunctionCall for the function with this OID: text arguments,
/// the result in `result_format`.
fn function_call(oid: u32, args: &[&str], result_format: i16) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend([0, 0]); // no format codes: all text
    body.extend((args.len() as i16).to_be_bytes());
    for arg in args {
        body.extend((arg.len() as i32).to_be_bytes());
        body.extend(arg.as_bytes());
    }
    body.extend(result_format.to_be_bytes());
    msg(b'F', &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_results_are_masked() {
    // Where no rule refuses FunctionCall, its result is masked like any
    // other value the gateway returns.
    let gw = start_gateway(GatewayOptions {
        mappings: GatewayOptions::default().mappings + "[policy.default_rules]\nenabled = false\n",
        ..Default::default()
    })
    .await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(
        "select 'textcat(text,text)'::regprocedure::oid, 'int8pl(int8,int8)'::regprocedure::oid",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    let row = &msgs[1].body;
    let field = |at: usize| -> (u32, usize) {
        let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&row[at + 4..at + 4 + len]).unwrap();
        (text.parse().unwrap(), at + 4 + len)
    };
    let (textcat, next) = field(2);
    let (int8pl, _) = field(next);
    const PAN: &str = "4111111111111111";
    for format in [0, 1] {
        // The number is put together by the server.
        raw.send(&function_call(textcat, &["41111111", "11111111"], format))
            .await;
        let msgs = raw.until(b'Z').await;
        assert_eq!(tags(&msgs), "VZ", "{msgs:?}");
        let value = String::from_utf8_lossy(&msgs[0].body[4..]).into_owned();
        assert!(!value.contains(PAN), "format {format}: {value}");
        assert!(value.ends_with("1111"), "format {format}: {value}");
    }
    // An int8 that is a card number: masked as text, refused in binary
    // (its type is not known, so a masked value could not be made).
    raw.send(&function_call(int8pl, &["4111111111111110", "1"], 0))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "VZ");
    assert!(!msgs[0].text().contains(PAN), "{}", msgs[0].text());
    raw.send(&function_call(int8pl, &["4111111111111110", "1"], 1))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(msgs[0].error_code().as_deref(), Some("XX000"));
    // The session goes on.
    raw.send(&query("select 1")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    gw.stop().await;
}
