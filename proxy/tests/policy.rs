//! The gateway's statement policy and masking at the protocol level, where
//! libpq cannot express it: a refused Parse in a pipeline (discard until
//! Sync, ReadyForQuery with the right transaction status), a refused simple
//! Query queued behind earlier requests, rows masked in text and binary
//! format, and the fast-path FunctionCall refused.

mod support;

use support::*;

const PAN: &str = "4111111111111111";

fn ready_status(msgs: &[Msg]) -> u8 {
    let z = msgs.last().expect("messages");
    assert_eq!(z.tag, b'Z');
    z.body[0]
}

fn refusal_names(msgs: &[Msg], rule: &str) {
    let e = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .expect("an ErrorResponse");
    assert_eq!(e.error_code().as_deref(), Some("42501"));
    let message = e.field(b'M').unwrap_or_default();
    assert!(message.contains(rule), "{message}");
}

fn no_pan(msgs: &[Msg]) {
    for m in msgs {
        let bytes = String::from_utf8_lossy(&m.body);
        assert!(
            !bytes.contains(PAN),
            "raw PAN in {:?}: {bytes}",
            m.tag as char
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_parse_discards_until_sync_and_the_connection_stays_usable() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("", "ALTER SYSTEM SET work_mem = '1MB'");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    // A good statement in the same batch is skipped too, as the server would.
    batch.extend(parse("", "select 1"));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    batch.extend(parse("", "select 2"));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let first = raw.until(b'Z').await;
    assert_eq!(tags(&first), "EZ");
    refusal_names(&first, "block-alter-system");
    assert_eq!(ready_status(&first), b'I');
    let second = raw.until(b'Z').await;
    assert_eq!(tags(&second), "12DCZ");
    assert_eq!(second[2].body, b"\0\x01\0\0\0\x012");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_inside_a_transaction_aborts_it_like_any_error() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("begin; insert into scratch values (901, 'x')"))
        .await;
    assert_eq!(ready_status(&raw.until(b'Z').await), b'T');
    let mut batch = parse("bad", "SET ROLE postgres");
    batch.extend(bind("", "bad", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let refused = raw.until(b'Z').await;
    assert_eq!(tags(&refused), "EZ");
    refusal_names(&refused, "block-identity-change");
    assert_eq!(ready_status(&refused), b'E', "the transaction is aborted");
    // Simple protocol too, and COMMIT of an aborted transaction rolls back.
    raw.send(&query("commit")).await;
    assert_eq!(ready_status(&raw.until(b'Z').await), b'I');
    raw.send(&query("select count(*) from scratch where id = 901"))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x010");
    // The refused statement was never prepared upstream.
    raw.send(&query("select count(*) from pg_prepared_statements"))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x010");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_outside_a_transaction_is_answered_by_the_gateway_alone() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    // Answered by the gateway (the server is not asked to fail: its log
    // stays free of errors for refusals outside a transaction).
    raw.send(&query("SET ROLE postgres")).await;
    let refused = raw.until(b'Z').await;
    assert_eq!(tags(&refused), "EZ");
    refusal_names(&refused, "block-identity-change");
    assert_eq!(ready_status(&refused), b'I');
    // The session goes on.
    raw.send(&query("select 1")).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "TDCZ");
    assert_eq!(ready_status(&msgs), b'I');
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_query_is_answered_in_order_behind_earlier_requests() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("", "select pg_sleep(0.2), 7");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    batch.extend(query(
        "select 1; dRoP/* a /* nested */ b */DATABASE \"payments\"",
    ));
    batch.extend(query("select 3"));
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'Z').await), "12DCZ");
    let refused = raw.until(b'Z').await;
    assert_eq!(tags(&refused), "EZ", "nothing of the string ran");
    refusal_names(&refused, "block-drop-database");
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_masked_in_text_and_binary_and_for_portals_described_earlier() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(
        "select card_number, id from payments where amount < 100 order by id limit 2",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "TDDCZ");
    no_pan(&msgs);
    assert!(
        msgs[1].text().contains("************1111"),
        "{}",
        msgs[1].text()
    );

    // Described once, executed later with binary results and no Describe.
    let mut batch = parse(
        "s",
        "select card_number from payments where amount < 100 and id <= $1::int",
    );
    batch.extend(describe(b'S', "s"));
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'Z').await), "1tTZ");
    let mut b = cstr("");
    b.extend(cstr("s"));
    b.extend([0, 0, 0, 1, 0, 0, 0, 3]);
    b.extend(b"100");
    b.extend([0, 1, 0, 1]);
    let mut batch = msg(b'B', &b);
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert!(tags(&msgs).starts_with("2DDD"), "{}", tags(&msgs));
    no_pan(&msgs);

    // Neither described by the client: the gateway asks for the shape.
    let mut batch = parse(
        "",
        "select 'card ' || card_number from payments where id = 1 and amount < 100",
    );
    batch.extend(bind("", "", Some(1)));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12DCZ");
    no_pan(&msgs);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_rules_are_named_in_refusals() {
    let gw = start_gateway(GatewayOptions {
        mappings: GatewayOptions::default().mappings
            + r#"
[[rules]]
name = "no-scratch-for-agents"
action = "block"
message = "agents may not read scratch"
kinds = ["select"]
tables = ["public.scratch"]
groups = ["fraud-agents"]
"#,
        ..Default::default()
    })
    .await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("select * from scratch")).await;
    let msgs = raw.until(b'Z').await;
    refusal_names(&msgs, "no-scratch-for-agents");
    let e = msgs[0].field(b'M').unwrap();
    assert!(e.contains("agents may not read scratch"), "{e}");
    // EXECUTE is judged on what it runs.
    raw.send(&query("prepare p as select 1")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "CZ");
    raw.send(&query("execute p")).await;
    assert_eq!(tags(&raw.until(b'Z').await), "TDCZ");
    raw.send(&query("prepare q as select * from scratch")).await;
    refusal_names(&raw.until(b'Z').await, "no-scratch-for-agents");
    // q was never prepared: the server's own answer, without asking it.
    // …also where EXECUTE is wrapped.
    for sql in [
        "execute q",
        "explain analyze execute q",
        "create temp table t2 as execute q",
    ] {
        raw.send(&query(sql)).await;
        let msgs = raw.until(b'Z').await;
        assert_eq!(tags(&msgs), "EZ", "{sql}");
        assert_eq!(msgs[0].error_code().as_deref(), Some("26000"), "{sql}");
        assert_eq!(
            msgs[0].field(b'M').as_deref(),
            Some("prepared statement \"q\" does not exist"),
            "{sql}"
        );
    }
    raw.send(&query("explain analyze execute p")).await;
    assert!(!tags(&raw.until(b'Z').await).contains('E'));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_notices_and_notifications_are_masked() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("listen pans; notify pans, 'card 4111111111111111'"))
        .await;
    let mut msgs = raw.until(b'Z').await;
    raw.send(&query(
        "select card_number::int from payments where id = 1 and amount < 100",
    ))
    .await;
    msgs.extend(raw.until(b'Z').await);
    assert!(msgs.iter().any(|m| m.tag == b'A'));
    assert!(msgs
        .iter()
        .any(|m| m.error_code().as_deref() == Some("22003")));
    no_pan(&msgs);
    gw.stop().await;
}

/// A string PostgreSQL's grammar rejects is answered by the server's own
/// grammar (42601, its message, position, DETAIL and HINT), which the
/// gateway asks to parse it and nothing more: nothing of it runs, and the
/// connection and the transaction state stay as the server would leave them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_are_answered_by_the_servers_grammar_and_nothing_runs() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(
        "insert into scratch values (911, 'x'); FROBNICATE payments",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    // Nothing of the string ran: the server parses it whole first.
    assert_eq!(tags(&msgs), "EZ");
    let e = &msgs[0];
    assert_eq!(e.error_code().as_deref(), Some("42601"));
    assert_eq!(
        e.field(b'M').as_deref(),
        Some("syntax error at or near \"FROBNICATE\"")
    );
    assert_eq!(e.field(b'P').as_deref(), Some("40"));
    // The server's own answer: its routine, and a HINT the gateway's copy
    // of the grammar does not give.
    assert_eq!(e.field(b'R').as_deref(), Some("scanner_yyerror"));
    assert_eq!(ready_status(&msgs), b'I');
    let msgs = simple(&mut raw, "create policy p on scratch as ugly using (true)").await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(
        msgs[0].field(b'H').as_deref(),
        Some("Only PERMISSIVE or RESTRICTIVE policies are supported currently.")
    );
    // Card numbers quoted in the server's message are masked like any.
    let msgs = simple(&mut raw, "select 1 4111111111111111").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("42601"));
    no_pan(&msgs);
    // In a transaction block: the block fails on the server, as it would.
    simple(&mut raw, "begin; insert into scratch values (912, 'x')").await;
    let msgs = simple(&mut raw, "selec 1").await;
    assert_eq!((tags(&msgs), ready_status(&msgs)), ("EZ".to_owned(), b'E'));
    let msgs = simple(&mut raw, "select 1").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("25P02"));
    let msgs = simple(&mut raw, "commit").await;
    assert_eq!(command_tag(&msgs), "ROLLBACK");
    let msgs = simple(
        &mut raw,
        "select count(*) from scratch where id in (911, 912)",
    )
    .await;
    assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x010");
    // A named Parse behind a good one: the good one stays, the bad name
    // is not made, the rest is skipped up to Sync.
    let mut batch = parse("good", "select 1");
    batch.extend(parse("bad", "selec 1"));
    batch.extend(bind("", "good", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "1EZ");
    assert_eq!(msgs[1].field(b'R').as_deref(), Some("scanner_yyerror"));
    let msgs = run_portal(&mut raw, "good").await;
    assert_eq!(tags(&msgs), "2DCZ");
    let msgs = run_portal(&mut raw, "bad").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("26000"));
    // Nested deeper than the gateway's copy of the grammar hands over (its
    // tree cannot be serialized), though the server's grammar accepts it:
    // the server parses it and runs nothing, and the gateway's refusal
    // answers (its own: no routine).
    let deep = format!(
        "insert into scratch select 913, 'x' where 1{} > 0",
        "+1".repeat(800)
    );
    // Also behind another statement, which a Parse does not take (the
    // server's error then is the Parse message's, not its grammar's).
    for sql in [deep.clone(), format!("select 1; {deep}")] {
        let msgs = simple(&mut raw, &sql).await;
        assert_eq!(tags(&msgs), "EZ");
        assert_eq!(msgs[0].error_code().as_deref(), Some("54001"));
        assert_eq!(msgs[0].field(b'R'), None);
        assert_eq!(ready_status(&msgs), b'I');
    }
    let msgs = simple(&mut raw, "select count(*) from scratch where id = 913").await;
    assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x010");
    // Extended protocol: the Parse is refused, the rest skipped up to Sync.
    let mut batch = parse("", "DR/**/OP TABLE payments");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].error_code().as_deref(), Some("42601"));
    assert_eq!(msgs[0].field(b'P').as_deref(), Some("1"));
    // Statements PostgreSQL's grammar has and the old classifier did not.
    for sql in [
        "TABLE scratch",
        "select * from only scratch",
        "select row(1, 2)",
    ] {
        raw.send(&query(sql)).await;
        let msgs = raw.until(b'Z').await;
        assert!(!tags(&msgs).contains('E'), "{sql}: {msgs:?}");
    }
    gw.stop().await;
}

/// The server log's ERROR lines of one backend (the kit's clusters log
/// with PostgreSQL's default prefix, `%m [%p] `).
fn server_errors_of(pid: &str) -> Vec<String> {
    let log = std::fs::read_to_string(cluster().dir.join("log")).unwrap_or_default();
    let mark = format!("[{pid}] ERROR");
    log.lines()
        .filter(|line| line.contains(&mark))
        .map(str::to_owned)
        .collect()
}

async fn simple(raw: &mut Raw, sql: &str) -> Vec<Msg> {
    raw.send(&query(sql)).await;
    raw.until(b'Z').await
}

/// Binds portal `p` to `statement`, executes it and syncs: the answers.
async fn run_portal(raw: &mut Raw, statement: &str) -> Vec<Msg> {
    let mut batch = bind("p", statement, None);
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    raw.until(b'Z').await
}

fn command_tag(msgs: &[Msg]) -> String {
    let c = msgs
        .iter()
        .find(|m| m.tag == b'C')
        .expect("CommandComplete");
    c.text().trim_end_matches('\0').to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_in_a_transaction_fail_it_without_the_server() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let pid = simple(&mut raw, "select pg_backend_pid()").await[1].text();
    let pid = pid[6..].to_owned(); // DataRow: 1 column, its length, the text

    // A refusal fails the block; PostgreSQL's answers follow until it ends.
    let msgs = simple(&mut raw, "begin; insert into scratch values (902, 'x')").await;
    assert_eq!(ready_status(&msgs), b'T');
    let refused = simple(&mut raw, "SET ROLE postgres").await;
    assert_eq!(tags(&refused), "EZ");
    refusal_names(&refused, "block-identity-change");
    assert_eq!(ready_status(&refused), b'E', "the block failed");
    let msgs = simple(&mut raw, "select 1; select 2").await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].error_code().as_deref(), Some("25P02"));
    assert_eq!(
        msgs[0].field(b'M').as_deref(),
        Some("current transaction is aborted, commands ignored until end of transaction block")
    );
    assert_eq!(ready_status(&msgs), b'E');
    // Syntax errors come first, as from the server.
    let msgs = simple(&mut raw, "selec 1").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("42601"));
    assert_eq!(ready_status(&msgs), b'E');
    // An empty query string (as psql sends for a lone `;`), and an empty
    // statement prepared and described (psql's `\gdesc`): no error.
    let msgs = simple(&mut raw, ";").await;
    assert_eq!((tags(&msgs), ready_status(&msgs)), ("IZ".to_owned(), b'E'));
    let mut batch = parse("", "");
    batch.extend(describe(b'S', ""));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(
        (tags(&msgs), ready_status(&msgs)),
        ("1tnZ".to_owned(), b'E')
    );
    // A Parse that does not parse: the syntax error, then Sync.
    let mut batch = parse("", "selec 1");
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("42601"));
    assert_eq!((tags(&msgs), ready_status(&msgs)), ("EZ".to_owned(), b'E'));
    // A Sync alone.
    raw.send(&sync()).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!((tags(&msgs), ready_status(&msgs)), ("Z".to_owned(), b'E'));
    // COMMIT of a failed block rolls it back, command tag included.
    let msgs = simple(&mut raw, "commit").await;
    assert_eq!((tags(&msgs), ready_status(&msgs)), ("CZ".to_owned(), b'I'));
    assert_eq!(command_tag(&msgs), "ROLLBACK");
    let msgs = simple(&mut raw, "select count(*) from scratch where id = 902").await;
    assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x010");

    // ROLLBACK TO SAVEPOINT recovers the block; what came before it stays.
    simple(
        &mut raw,
        "begin; insert into scratch values (903, 'x'); savepoint s; insert into scratch values (904, 'x')",
    )
    .await;
    let refused = simple(&mut raw, "SET ROLE postgres").await;
    assert_eq!(ready_status(&refused), b'E');
    let msgs = simple(&mut raw, "rollback to savepoint s").await;
    assert_eq!(
        (command_tag(&msgs), ready_status(&msgs)),
        ("ROLLBACK".to_owned(), b'T')
    );
    let msgs = simple(&mut raw, "commit").await;
    assert_eq!(
        (command_tag(&msgs), ready_status(&msgs)),
        ("COMMIT".to_owned(), b'I')
    );
    let msgs = simple(
        &mut raw,
        "select string_agg(id::text, ',' order by id) from scratch where id in (903, 904)",
    )
    .await;
    assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x03903");

    // A refused Parse at a sync point; the block ended in the extended
    // protocol, as drivers do (COMMIT: rolled back).
    for (end, tag) in [("ROLLBACK", "ROLLBACK"), ("COMMIT", "ROLLBACK")] {
        simple(&mut raw, "begin; insert into scratch values (905, 'x')").await;
        let mut batch = parse("bad", "SET ROLE postgres");
        batch.extend(bind("", "bad", None));
        batch.extend(execute("", 0));
        batch.extend(sync());
        raw.send(&batch).await;
        let refused = raw.until(b'Z').await;
        assert_eq!(tags(&refused), "EZ");
        assert_eq!(ready_status(&refused), b'E');
        let mut batch = parse("", end);
        batch.extend(bind("", "", None));
        batch.extend(execute("", 0));
        batch.extend(sync());
        raw.send(&batch).await;
        let msgs = raw.until(b'Z').await;
        assert_eq!(
            (tags(&msgs), ready_status(&msgs)),
            ("12CZ".to_owned(), b'I'),
            "{end}"
        );
        assert_eq!(command_tag(&msgs), tag);
        let msgs = simple(&mut raw, "select count(*) from scratch where id = 905").await;
        assert_eq!(msgs[1].body, b"\0\x01\0\0\0\x010", "{end}");
    }
    // No refusal reached the server: its log has only its own two syntax
    // errors (the gateway has the server parse what its grammar rejects).
    let errors = server_errors_of(&pid);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("syntax error at or near \"selec\"")),
        "{errors:?}"
    );

    // Anything else in the failed block (here: a statement in the extended
    // protocol) fails the server's block first; the server answers it.
    simple(&mut raw, "begin").await;
    simple(&mut raw, "SET ROLE postgres").await;
    let mut batch = parse("", "select 1");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].error_code().as_deref(), Some("25P02"));
    assert_eq!(ready_status(&msgs), b'E');
    let msgs = simple(&mut raw, "rollback").await;
    assert_eq!(ready_status(&msgs), b'I');
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_read_as_the_server_reads_string_literals() {
    // With standard_conforming_strings off the server reads
    // `'a\' , ' ; alter system …; -- '` as an ALTER SYSTEM where standard
    // strings make two
    // literals. The gateway reads each text as the server reports it reads
    // string literals, however it was turned off: by statement, by a
    // function, with texts pipelined behind it.
    cluster().psql(
        "payments",
        "CREATE OR REPLACE FUNCTION public.hoop_test_strings(v text) RETURNS int \
           LANGUAGE plpgsql AS $$ BEGIN \
             PERFORM set_config('standard_conforming_strings', v, false); RETURN 1; END $$; \
         GRANT EXECUTE ON FUNCTION public.hoop_test_strings(text) TO fraud_agent",
    );
    let smuggled = "select 'a\\' , ' ; alter system reset all; -- '";
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    // Standard strings: two literals, selected.
    let msgs = simple(&mut raw, smuggled).await;
    assert_eq!(tags(&msgs), "TDCZ", "{msgs:?}");
    // By statement; the next text waits for the report and is read so.
    let mut batch = query("set standard_conforming_strings = off");
    batch.extend(query(smuggled));
    raw.send(&batch).await;
    let mut msgs = raw.until(b'Z').await;
    msgs.extend(raw.until(b'Z').await);
    assert_eq!(tags(&msgs), "CSZEZ", "{msgs:?}");
    refusal_names(&msgs[3..], "block-alter-system");
    // (The server warns of the escape, as it does directly.)
    let msgs = simple(&mut raw, "select 'it\\'s'").await;
    assert_eq!(tags(&msgs), "NTDCZ", "{msgs:?}");
    assert!(msgs[2].body.ends_with(b"it's"), "{msgs:?}");
    // Back on, by a function, in a pipeline: waits for the report too.
    let mut batch = query("select public.hoop_test_strings('on')");
    batch.extend(query(smuggled));
    raw.send(&batch).await;
    let mut msgs = raw.until(b'Z').await;
    msgs.extend(raw.until(b'Z').await);
    assert_eq!(tags(&msgs), "TDCSZTDCZ", "{msgs:?}");
    // Within a batch the report comes only at the Sync: a text that reads
    // differently either way is refused after an Execute, one that reads
    // alike runs.
    let mut batch = parse("", "select public.hoop_test_strings('off')");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(parse("", "select E'\\\\', 'no escapes here'"));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(parse("", smuggled));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    // (The refusal fails the batch: the function's change is undone.)
    assert_eq!(tags(&msgs), "12DC12DCEZ", "{msgs:?}");
    assert!(
        msgs[8].field(b'M').unwrap_or_default().contains("Sync"),
        "{msgs:?}"
    );
    // Where nothing changed it, the same text runs after an Execute.
    let mut batch = parse("", "select 1");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(parse("", smuggled));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12DC12DCZ", "{msgs:?}");
    // Prepared while off, run after it is back on: as it was read.
    let mut batch = query("set standard_conforming_strings = off");
    batch.extend(parse("q", "select 'x\\'y'"));
    batch.extend(sync());
    batch.extend(query("set standard_conforming_strings = on"));
    raw.send(&batch).await;
    for _ in 0..3 {
        raw.until(b'Z').await;
    }
    let msgs = run_portal(&mut raw, "q").await;
    assert!(msgs[1].body.ends_with(b"x'y"), "{msgs:?}");
    gw.stop().await;
}

/// In Shift JIS a character's second byte can be `\\`: as UTF-8 the
/// gateway reads this as one SELECT of a literal, while a server reading
/// it as SJIS sees the literal end at the second quote and runs the
/// INSERT.
const SJIS_SMUGGLE: &[u8] =
    b"SELECT E'\xe3\x81\x81\\'; INSERT INTO scratch VALUES (913, NULL); SELECT ' AS x; --'";

fn hidden_insert_ran() -> bool {
    cluster()
        .psql("payments", "select count(*) from scratch where id = 913")
        .trim()
        != "0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_reads_text_in_an_encoding_the_gateway_does_not() {
    cluster().psql(
        "payments",
        "CREATE OR REPLACE FUNCTION public.hoop_test_encoding(e text) RETURNS int \
           LANGUAGE plpgsql AS $$ BEGIN \
             PERFORM set_config('client_encoding', e, false); RETURN 1; END $$; \
         GRANT EXECUTE ON FUNCTION public.hoop_test_encoding(text) TO fraud_agent; \
         DELETE FROM scratch WHERE id = 913",
    );
    let gw = start_gateway(GatewayOptions::default()).await;
    // Asked for at login: refused before the token is read.
    let mut raw = Raw::connect(gw.addr).await;
    raw.send(&startup_packet(&[
        ("user", "a"),
        ("database", "payments"),
        ("client_encoding", "Shift_JIS"),
    ]))
    .await;
    let refused = raw.recv().await.expect("a refusal");
    assert_eq!(
        refused.error_code().as_deref(),
        Some("0A000"),
        "{refused:?}"
    );
    assert!(refused
        .field(b'M')
        .unwrap_or_default()
        .contains("Shift_JIS"));

    // Set by a function, with the smuggling text pipelined behind it: the
    // text waits for the server's report of the encoding, which ends the
    // session before the text is read, let alone sent.
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = query("select public.hoop_test_encoding('SJIS')");
    let mut smuggle = SJIS_SMUGGLE.to_vec();
    smuggle.push(0);
    batch.extend(msg(b'Q', &smuggle));
    raw.send(&batch).await;
    let mut seen = Vec::new();
    while let Some(m) = raw.recv().await {
        seen.push(m);
    }
    let fatal = seen.last().expect("a FATAL");
    assert_eq!(fatal.error_code().as_deref(), Some("0A000"), "{seen:?}");
    assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"));
    assert!(fatal
        .field(b'M')
        .unwrap_or_default()
        .contains("client_encoding"));
    assert!(!hidden_insert_ran(), "the server ran the smuggled INSERT");

    // Within one batch the report comes only at the Sync: non-ASCII text
    // after an Execute cannot wait for it. The gateway checks, ahead of
    // the text, that the server still reads text as reported: it does
    // after `select 1`, and the text runs (the check's answers are the
    // gateway's) ...
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let in_batch_after = |statement: &str| {
        let mut batch = parse("", statement);
        batch.extend(bind("", "", None));
        batch.extend(execute("", 0));
        batch.extend(parse("", "select 'd\u{e9}j\u{e0} vu'"));
        batch.extend(bind("", "", None));
        batch.extend(execute("", 0));
        batch.extend(sync());
        batch
    };
    raw.send(&in_batch_after("select 1")).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12DC12DCZ", "{msgs:?}");
    assert!(msgs[6].body.ends_with("d\u{e9}j\u{e0} vu".as_bytes()));
    // ... not after a function set LATIN1: the text does not run, nor
    // anything after it in the batch (whose failure undoes the change).
    raw.send(&in_batch_after(
        "select public.hoop_test_encoding('LATIN1')",
    ))
    .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12DCEZ", "{msgs:?}");
    assert_eq!(msgs[4].error_code().as_deref(), Some("0A000"));
    let refusal = msgs[4].field(b'M').unwrap_or_default();
    assert!(refusal.contains("Sync"), "{refusal}");
    // After a Sync it waits for the report, and runs.
    let mut batch = parse("", "select 1");
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    batch.extend(parse("", "select 'd\u{e9}j\u{e0} vu'"));
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let mut msgs = raw.until(b'Z').await;
    msgs.extend(raw.until(b'Z').await);
    assert_eq!(tags(&msgs), "12DCZ12DCZ", "{msgs:?}");
    assert!(msgs[7].body.ends_with("d\u{e9}j\u{e0} vu".as_bytes()));
    // So does a Query behind another.
    // (A statement that is not a plain read is sent only once recorded:
    // the one behind it is then read while it runs.)
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = query("set application_name = 'x'");
    batch.extend(query("select 'd\u{e9}j\u{e0} vu'"));
    raw.send(&batch).await;
    let mut msgs = raw.until(b'Z').await;
    msgs.extend(raw.until(b'Z').await);
    assert_eq!(tags(&msgs), "CSZTDCZ", "{msgs:?}");
    // Read in the encoding the SET left: LATIN9's euro sign.
    let mut batch = query("set client_encoding = 'LATIN9'");
    batch.extend(msg(b'Q', b"select '\xa4' as euro\0"));
    raw.send(&batch).await;
    let mut msgs = raw.until(b'Z').await;
    msgs.extend(raw.until(b'Z').await);
    assert_eq!(tags(&msgs), "CSZTDCZ", "{msgs:?}");
    assert!(msgs[4].body.ends_with(b"\xa4"), "{msgs:?}");
    // A multibyte encoding other than UTF-8: ASCII is read, other text not.
    let mut batch = query("set client_encoding = 'EUC_JP'");
    batch.extend(query("select 1"));
    batch.extend(msg(b'Q', b"select '\xa4\xa2'\0"));
    raw.send(&batch).await;
    let mut msgs = raw.until(b'Z').await;
    msgs.extend(raw.until(b'Z').await);
    msgs.extend(raw.until(b'Z').await);
    assert_eq!(tags(&msgs), "CSZTDCZEZ", "{msgs:?}");
    let refusal = msgs[7].field(b'M').unwrap_or_default();
    assert!(refusal.contains("EUC_JP"), "{refusal}");
    // The record keeps the text as the server read it.
    let dir = gw.dir.clone();
    gw.stop().await;
    let recorded = recorded_statements(&dir);
    assert!(
        recorded
            .iter()
            .any(|sql| sql == "select '\u{20ac}' as euro"),
        "{recorded:?}"
    );
}

/// The gateway's own messages reach the client in its encoding, as the
/// server's do: a character the encoding lacks becomes `?`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_messages_are_in_the_client_encoding() {
    let gw = start_gateway(GatewayOptions {
        mappings: GatewayOptions::default().mappings
            + r#"
[[rules]]
name = "pas-de-scratch"
action = "block"
message = "accès refusé — demandez"
kinds = ["select"]
tables = ["public.scratch"]
"#,
        ..Default::default()
    })
    .await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let message_of = |msgs: &[Msg]| {
        let e = msgs.iter().find(|m| m.tag == b'E').expect("a refusal");
        let start = e.body.windows(2).position(|w| w == b"\0M").expect("M") + 2;
        let len = e.body[start..].iter().position(|&b| b == 0).expect("end");
        e.body[start..start + len].to_vec()
    };
    for (encoding, expected) in [
        ("UTF8", "accès refusé — demandez".as_bytes().to_vec()),
        ("LATIN9", b"acc\xe8s refus\xe9 ? demandez".to_vec()),
        ("WIN1252", b"acc\xe8s refus\xe9 \x97 demandez".to_vec()),
        ("EUC_JP", b"acc?s refus? ? demandez".to_vec()),
    ] {
        simple(&mut raw, &format!("set client_encoding = '{encoding}'")).await;
        let message = message_of(&simple(&mut raw, "select * from scratch").await);
        assert!(
            message
                .windows(expected.len())
                .any(|w| w == expected.as_slice()),
            "{encoding}: {}",
            String::from_utf8_lossy(&message)
        );
    }
    gw.stop().await;
}

/// Every single-byte client encoding: each byte above 0x7F decodes to the
/// character PostgreSQL's own conversion gives it, so the gateway reads a
/// name or a literal as the server does. A byte the server has no
/// character for makes it refuse the text, whatever the gateway reads.
#[test]
fn every_byte_decodes_as_postgresql_converts_it() {
    assert_eq!(
        cluster().psql("payments", "show server_encoding").trim(),
        "UTF8"
    );
    cluster().psql(
        "payments",
        "CREATE OR REPLACE FUNCTION public.hoop_test_convert(enc text) \
           RETURNS TABLE (b int, utf8 text) LANGUAGE plpgsql AS $$ BEGIN \
             FOR i IN 128..255 LOOP BEGIN \
               b := i; \
               utf8 := encode(convert(decode(lpad(to_hex(i), 2, '0'), 'hex'), enc, 'UTF8'), 'hex'); \
               RETURN NEXT; \
             EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END $$",
    );
    let single_byte = hoop_proxy::encoding::SINGLE_BYTE;
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for encoding in single_byte {
        let converted = cluster().psql(
            "payments",
            &format!("select b, utf8 from public.hoop_test_convert('{encoding}')"),
        );
        let mut mapped = 0;
        for line in converted.lines() {
            let (byte, utf8) = line.split_once('|').expect("b|utf8");
            let byte: u8 = byte.parse().expect("a byte");
            let text = [b'x', byte, b'y'];
            let ours = hoop_proxy::encoding::decode(encoding, &text)
                .unwrap_or_else(|e| panic!("{encoding} {byte:#x}: {e:?}"));
            assert_eq!(
                hex(&ours),
                format!("78{utf8}79"),
                "{encoding} byte {byte:#x}"
            );
            mapped += 1;
        }
        assert!(mapped >= 60, "{encoding}: only {mapped} bytes converted");
    }
    // The multibyte ones other than UTF-8 are not read (ASCII is).
    assert!(!hoop_proxy::encoding::reads_text_in("EUC_JP"));
    assert!(hoop_proxy::encoding::decode("EUC_JP", b"select 1").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_runs_the_statement_it_was_bound_to_and_is_judged_on_it() {
    // The unnamed statement is replaced by a later Parse; a portal bound
    // before keeps running the earlier one (PostgreSQL copies the plan
    // into the portal), so that is the statement the gateway must judge
    // and record. Here: a DO block (held for review by the shipped rules)
    // bound to portal "p", then a harmless SELECT parsed over it.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse(
        "",
        "DO $$BEGIN INSERT INTO scratch VALUES (907, 'ran without review'); END$$",
    );
    batch.extend(bind("p", "", None));
    batch.extend(parse("", "select 1"));
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    // Held: the gateway tells the client (a notice naming the review), and
    // nothing has run.
    let first = raw.recv().await.expect("a message");
    assert_eq!(
        first.tag,
        b'N',
        "held for review, not run: {first:?} {}",
        first.text()
    );
    let count = cluster().psql("payments", "select count(*) from scratch where id = 907");
    assert_eq!(count.trim(), "0");
    // Leaving withdraws the review.
    drop(raw);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_is_masked_with_the_shape_of_the_statement_it_was_bound_to() {
    // The unnamed statement is replaced (and described) after portal "p"
    // was bound to the earlier one: p's rows have the earlier statement's
    // shape, whatever the later one's description says.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("", "select card_number from payments where id = 1");
    batch.extend(bind("p", "", None));
    batch.extend(parse("", "select 1"));
    batch.extend(describe(b'S', ""));
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    no_pan(&msgs);
    let row = msgs.iter().find(|m| m.tag == b'D').expect("p's row");
    assert!(row.text().contains("************1111"), "{}", row.text());
    gw.stop().await;
}

/// The SQL of every statement record of the gateway's audit store, in order.
fn recorded_statements(dir: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
    let mut query = conn
        .prepare("SELECT payload FROM audit_entries WHERE kind = 'statement' ORDER BY seq")
        .unwrap();
    let payloads = query
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    payloads
        .iter()
        .map(|payload| {
            let record: serde_json::Value = serde_json::from_str(payload).unwrap();
            record["sql"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_prepared_in_sql_is_judged_and_recorded_as_what_it_runs() {
    // Prepared statements of SQL and of the protocol share one namespace:
    // after DEALLOCATE and PREPARE of the same name in SQL, a portal bound
    // to the name runs the SQL one, and is recorded as that.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("s", "select 'protocol'");
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'Z').await), "1Z");
    let msgs = simple(
        &mut raw,
        "DEALLOCATE s; PREPARE s AS SELECT card_number FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(ready_status(&msgs), b'I', "{msgs:?}");
    let mut batch = bind("p", "s", None);
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    no_pan(&msgs);
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .expect("the SQL statement's row");
    assert!(row.text().contains("************1111"), "{}", row.text());
    drop(raw);
    let dir = gw.dir.clone();
    gw.stop().await;
    let recorded = recorded_statements(&dir);
    let last = recorded.last().expect("records");
    assert!(
        last.contains("\"s\" (prepared in SQL)"),
        "the Execute is recorded as the SQL statement it ran: {recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_declared_over_a_described_portals_name_is_masked_as_itself() {
    // Portals of SQL and of the protocol share one namespace: a protocol
    // portal described (and executed), then closed in SQL and declared
    // again as a cursor over card numbers, executed by the protocol.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    simple(&mut raw, "begin").await;
    let mut batch = parse("", "select 1");
    batch.extend(bind("p", "", None));
    batch.extend(describe(b'P', "p"));
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'Z').await), "12TDCZ");
    let msgs = simple(
        &mut raw,
        "close p; declare p cursor for select card_number from payments where id = 1",
    )
    .await;
    assert_eq!(ready_status(&msgs), b'T', "{msgs:?}");
    let mut batch = execute("p", 0);
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    no_pan(&msgs);
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .expect("the cursor's row");
    assert!(row.text().contains("************1111"), "{}", row.text());
    drop(raw);
    let dir = gw.dir.clone();
    gw.stop().await;
    // Recorded as the cursor it ran, not the portal that had the name.
    let recorded = recorded_statements(&dir);
    assert_eq!(
        recorded.last().map(String::as_str),
        Some("-- Execute of portal \"p\""),
        "{recorded:?}"
    );
}

/// Every statement record of the gateway's audit store, in order.
fn statement_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
    let mut query = conn
        .prepare("SELECT payload FROM audit_entries WHERE kind = 'statement' ORDER BY seq")
        .unwrap();
    let payloads = query
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    payloads
        .iter()
        .map(|payload| serde_json::from_str(payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_planted_under_a_name_is_judged_whatever_is_parsed_over_it() {
    // A DO block (held for review when executed) is prepared as "s" and
    // sent on at Sync without an Execute. A harmless Parse of the same
    // name is refused by the server (42P05: "s" exists) and leaves the
    // DO block there; a portal bound to "s" in the next batch, sent before
    // that answer came, runs the DO block. The gateway must judge that,
    // not the text it was last sent under the name.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse(
        "s",
        "DO $$BEGIN INSERT INTO scratch VALUES (908, 'ran without review'); END$$",
    );
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'Z').await), "1Z");
    let mut batch = parse("s", "select 1");
    batch.extend(sync());
    batch.extend(bind("p", "s", None));
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let refused = raw.until(b'Z').await;
    assert_eq!(
        refused[0].error_code().as_deref(),
        Some("42P05"),
        "{refused:?}"
    );
    let held = raw.recv().await.expect("a message");
    assert_eq!(
        held.tag,
        b'N',
        "held for review, not run: {held:?} {}",
        held.text()
    );
    let count = cluster().psql("payments", "select count(*) from scratch where id = 908");
    assert_eq!(count.trim(), "0");
    drop(raw);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_of_a_statement_the_gateway_never_saw_is_refused() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = bind("p", "nosuch", None);
    batch.extend(execute("p", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(msgs[0].error_code().as_deref(), Some("26000"));
    assert!(
        msgs[0].text().contains("\"nosuch\" does not exist"),
        "{}",
        msgs[0].text()
    );
    // The session goes on.
    let msgs = simple(&mut raw, "select 1").await;
    assert_eq!(command_tag(&msgs), "SELECT 1");
    drop(raw);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_the_server_refuses_leaves_the_statement_that_was_there() {
    // `PREPARE q` of a name that exists fails on the server (42P05): "q"
    // is still the first statement, and a portal bound to it is judged
    // and recorded as that one.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let msgs = simple(
        &mut raw,
        "PREPARE q AS SELECT card_number FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(ready_status(&msgs), b'I', "{msgs:?}");
    let msgs = simple(&mut raw, "PREPARE q AS SELECT 1").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("42P05"), "{msgs:?}");
    let msgs = run_portal(&mut raw, "q").await;
    no_pan(&msgs);
    assert!(msgs.iter().any(|m| m.tag == b'D'), "{msgs:?}");
    drop(raw);
    let dir = gw.dir.clone();
    gw.stop().await;
    let records = statement_records(&dir);
    let last = records.last().expect("records");
    assert_eq!(
        last["tables"],
        serde_json::json!(["public.payments"]),
        "judged as the statement the server ran: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deallocate_the_server_never_runs_leaves_the_statement_there() {
    // The string fails at its first statement, so the server skips its
    // `DEALLOCATE`: "q" still exists there, and a portal bound to it runs
    // (judged and recorded as "q") rather than being refused as unknown.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let msgs = simple(
        &mut raw,
        "PREPARE q AS SELECT card_number FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(ready_status(&msgs), b'I', "{msgs:?}");
    let msgs = simple(&mut raw, "SELECT 1/0; DEALLOCATE q").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("22012"), "{msgs:?}");
    let msgs = run_portal(&mut raw, "q").await;
    no_pan(&msgs);
    assert!(
        msgs.iter().all(|m| m.tag != b'E') && msgs.iter().any(|m| m.tag == b'D'),
        "{msgs:?}"
    );
    // Once it runs, the name is gone: the gateway refuses a Bind of it,
    // as the server would (26000).
    let msgs = simple(&mut raw, "DEALLOCATE q").await;
    assert_eq!(command_tag(&msgs), "DEALLOCATE", "{msgs:?}");
    let msgs = run_portal(&mut raw, "q").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("26000"), "{msgs:?}");
    drop(raw);
    let dir = gw.dir.clone();
    gw.stop().await;
    let records = statement_records(&dir);
    let failed = records
        .iter()
        .position(|r| r["sql"] == serde_json::json!("SELECT 1/0; DEALLOCATE q"))
        .expect("the failed string's record");
    assert_eq!(
        records[failed + 1]["tables"],
        serde_json::json!(["public.payments"]),
        "the portal's run is judged and recorded as q's statement: {records:?}"
    );
}

/// Parses `sql` as the unnamed statement, binds, executes and syncs (a
/// driver that sends every statement with the extended protocol, as pgJDBC
/// does): the answers.
async fn extended(raw: &mut Raw, sql: &str) -> Vec<Msg> {
    let mut batch = parse("", sql);
    batch.extend(bind("", "", None));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    raw.until(b'Z').await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_that_changes_names_sent_with_parse_changes_them_when_it_runs() {
    // `PREPARE` and `DEALLOCATE` sent with Parse/Bind/Execute change the
    // session's names when their portal runs, as in a simple Query: an
    // `EXECUTE` of a name prepared that way runs (before, the gateway did
    // not know the name and refused it with 26000), and is judged on what
    // the name means after a `DEALLOCATE` and `PREPARE` sent that way
    // (before, on what it meant first).
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let msgs = extended(&mut raw, "PREPARE q AS SELECT 1").await;
    assert_eq!(command_tag(&msgs), "PREPARE", "{msgs:?}");
    let msgs = simple(&mut raw, "EXECUTE q").await;
    assert_eq!(command_tag(&msgs), "SELECT 1", "{msgs:?}");

    let msgs = extended(&mut raw, "DEALLOCATE q").await;
    assert_eq!(command_tag(&msgs), "DEALLOCATE", "{msgs:?}");
    // Refused by the server (no such statement): the name stays gone.
    let msgs = extended(&mut raw, "DEALLOCATE q").await;
    assert_eq!(msgs[2].error_code().as_deref(), Some("26000"), "{msgs:?}");
    let msgs = extended(
        &mut raw,
        "PREPARE q AS SELECT card_number FROM payments WHERE id = 1",
    )
    .await;
    assert_eq!(command_tag(&msgs), "PREPARE", "{msgs:?}");
    // Refused by the server (the name exists): `q` stays the card read.
    let msgs = extended(&mut raw, "PREPARE q AS SELECT 2").await;
    assert_eq!(msgs[2].error_code().as_deref(), Some("42P05"), "{msgs:?}");
    let msgs = simple(&mut raw, "EXECUTE q").await;
    no_pan(&msgs);
    let row = msgs.iter().find(|m| m.tag == b'D').expect("the card row");
    assert!(row.text().contains("************1111"), "{}", row.text());
    drop(raw);
    let dir = gw.dir.clone();
    gw.stop().await;
    let records = statement_records(&dir);
    let last = records.last().expect("records");
    assert_eq!(last["sql"], serde_json::json!("EXECUTE q"), "{last}");
    assert_eq!(
        last["tables"],
        serde_json::json!(["public.payments"]),
        "judged as what q means when it runs: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_named_by_a_bind_parameter_is_judged_on_the_portals_values() {
    // `select set_config($1, $2, false)` (psycopg's tests set settings so)
    // is judged when a portal of it runs, on the name and value bound:
    // before, the Parse was refused whatever they were.
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let mut batch = parse("s", "select set_config($1, $2, false)");
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(tags(&raw.until(b'Z').await), "1Z");
    let run = |params: &[Option<&str>]| {
        let mut batch = bind_text("", "s", params);
        batch.extend(execute("", 0));
        batch.extend(sync());
        batch
    };
    raw.send(&run(&[
        Some("default_transaction_isolation"),
        Some("serializable"),
    ]))
    .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(command_tag(&msgs), "SELECT 1", "{msgs:?}");
    let msgs = simple(&mut raw, "show default_transaction_isolation").await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(row.text().contains("serializable"), "{}", row.text());
    // A client encoding the gateway cannot read, or a setting the shipped
    // rules keep (role), or one that cannot be read (NULL): refused.
    for (params, rule) in [
        (
            [Some("client_encoding"), Some("BIG5")],
            "readable-client-encoding",
        ),
        (
            [Some("Role"), Some("payments_admin")],
            "block-protected-parameters",
        ),
        ([None, Some("off")], "block-protected-parameters"),
    ] {
        raw.send(&run(&params)).await;
        let msgs = raw.until(b'Z').await;
        assert_eq!(tags(&msgs), "2EZ", "{msgs:?}");
        refusal_names(&msgs, rule);
    }
    let msgs = simple(
        &mut raw,
        "select current_setting('standard_conforming_strings'), current_user",
    )
    .await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(
        row.text().contains("on") && row.text().contains("fraud_agent"),
        "{}",
        row.text()
    );
    gw.stop().await;
}
