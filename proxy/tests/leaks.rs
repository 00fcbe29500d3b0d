//! Card numbers through the real relay and a real Postgres, in every result
//! format and every message that carries data (issue 16 items 1, 2 and 5;
//! issue 13 item 6): what reaches the client holds no card number in any
//! encoding, and every masked value still decodes as its type.

mod support;

use support::*;

const PAN: &str = "4012888888881881";
const PAN_INT: i64 = 4_012_888_888_881_881;

/// Every encoding of [`PAN`] a client could decode: ASCII, full-width,
/// int8 (and money's cents, float8) bytes, numeric's base-10000 digits.
fn encodings() -> Vec<(&'static str, Vec<u8>)> {
    let mut numeric_digits = Vec::new();
    for group in [4012i16, 8888, 8888, 1881] {
        numeric_digits.extend_from_slice(&group.to_be_bytes());
    }
    vec![
        ("ascii", PAN.as_bytes().to_vec()),
        ("int8", PAN_INT.to_be_bytes().to_vec()),
        ("money cents", (PAN_INT * 100).to_be_bytes().to_vec()),
        ("float8", (PAN_INT as f64).to_be_bytes().to_vec()),
        ("numeric digits", numeric_digits),
    ]
}

fn assert_no_pan(msgs: &[Msg], what: &str) {
    for m in msgs {
        for (encoding, bytes) in encodings() {
            assert!(
                !m.body.windows(bytes.len()).any(|w| w == bytes.as_slice()),
                "{what}: {encoding} PAN in {} message {:?}",
                m.tag as char,
                String::from_utf8_lossy(&m.body)
            );
        }
        assert!(
            !hoop_common::pan::contains_pan(&m.body),
            "{what}: {}",
            String::from_utf8_lossy(&m.body)
        );
    }
}

fn fields(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(body[at..at + len as usize].to_vec()));
            at += len as usize;
        }
    }
    out
}

const TYPED: &str = "SELECT 4012888888881881::int8, 4012888888881881.00::numeric(20,2), \
     ARRAY[4012888888881881::int8, 7], ROW(7, 4012888888881881::int8), \
     4012888888881881::float8, 4012888888881881::money, \
     jsonb_build_object('n', 4012888888881881, 's', '4012888888881881'), \
     int8range(4012888888881881, NULL)";

/// Issue 16 item 1: the same values in binary reach the client masked, and
/// each still decodes as its type (issue 13 item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_results_are_masked_in_their_type() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query("SET lc_monetary = 'C'")).await;
    raw.until(b'Z').await;
    let mut batch = parse("", TYPED);
    batch.extend(bind("", "", Some(1)));
    batch.extend(describe(b'P', ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
    assert_no_pan(&msgs, "binary");
    let row = fields(&msgs[3].body);
    let int8 = row[0].as_deref().unwrap();
    assert_eq!(int8, 1881i64.to_be_bytes());
    let float = row[4].as_deref().unwrap();
    assert_eq!(float, 1881f64.to_be_bytes());
    let money = row[5].as_deref().unwrap();
    assert_eq!(money, 188_100i64.to_be_bytes());
    gw.stop().await;
}

/// Issue 13 item 6: in text format an int8 stays an int8 (`1881`, not
/// `************1881`), and so on for every type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_results_stay_valid_for_their_type() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(&format!("SET lc_monetary = 'C'; {TYPED}")))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_no_pan(&msgs, "text");
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    let texts: Vec<String> = fields(&row.body)
        .into_iter()
        .map(|f| String::from_utf8(f.unwrap()).unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "1881",
            "1881.00",
            "{1881,7}",
            "(7,1881)",
            "1881",
            "$1881.00",
            r#"{"n": 1881, "s": "************1881"}"#,
            "[1881,)",
        ]
    );
    gw.stop().await;
}

/// Issue 16 item 1: `COPY … (FORMAT binary)` and text COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_binary_and_text_is_masked() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    for format in ["binary", "text", "csv"] {
        raw.send(&query(&format!(
            "COPY (SELECT 4012888888881881::int8, 4012888888881881.00::numeric(20,2), \
             ARRAY[4012888888881881::int8], '4012_8888_8888_1881'::text, \
             now()::timestamptz, 2.5::float8 \
             FROM generate_series(1, 3)) TO STDOUT (FORMAT {format})"
        )))
        .await;
        let msgs = raw.until(b'Z').await;
        assert!(tags(&msgs).starts_with("Hddd"), "{format}: {}", tags(&msgs));
        assert_no_pan(&msgs, format);
    }
    gw.stop().await;
}

/// Issue 16 item 2: ParameterStatus carries what `set_config` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_is_masked() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(&format!(
        "SELECT set_config('application_name', '{PAN}', false) IS NOT NULL"
    )))
    .await;
    let msgs = raw.until(b'Z').await;
    assert_no_pan(&msgs, "ParameterStatus");
    let status = msgs
        .iter()
        .find(|m| m.tag == b'S' && m.text().starts_with("application_name"))
        .expect("the server reports application_name");
    assert_eq!(status.text(), "application_name\0************1881\0");
    gw.stop().await;
}

/// Issue 16 item 5: the forms the detector used to miss, in rows and in an
/// error's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_written_forms_are_masked() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(&format!(
        "SELECT replace('4012 8888 8888 1881', ' ', '_'), '4012.8888.8888.1881', \
         '4012 - 8888 - 8888 - 1881', E'4012\\t8888\\t8888\\t1881', \
         '4012' || chr(160) || '8888' || chr(160) || '8888 1881', \
         '40128888' || chr(8203) || '88881881', translate('{PAN}', '0123456789', '０１２３４５６７８９'), \
         '+{PAN}', to_char({PAN}, 'FM9,999,999,999,999,999')"
    )))
    .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "TDCZ");
    assert_no_pan(&msgs, "forms");
    let row = fields(&msgs[1].body);
    for field in &row {
        let text = String::from_utf8_lossy(field.as_deref().unwrap()).into_owned();
        let digits: String = text.chars().filter(|c| c.is_numeric()).collect();
        assert!(
            digits == "1881" || digits == "１８８１",
            "masked, last four kept: {text:?}"
        );
        assert!(text.contains('*') || text.contains('＊'), "{text:?}");
    }
    raw.send(&query(&format!("SELECT '{PAN}.00'::int4"))).await;
    let msgs = raw.until(b'Z').await;
    // `value "4012888888881881.00" is out of range for type integer`
    assert_eq!(msgs[0].error_code().as_deref(), Some("22003"));
    assert!(
        msgs[0].text().contains("************1881.00"),
        "{}",
        msgs[0].text()
    );
    assert_no_pan(&msgs, "error");
    gw.stop().await;
}

/// Geometric types hold float8 coordinates, xid8 and pg_snapshot 8-byte
/// integers: cast from a card number, they are masked in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geometric_and_xid_types_are_masked() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    let sql = format!(
        "SELECT point({PAN}::float8, 2.5), polygon(box(point({PAN}::float8, 0), point(1, 1))), \
         '{PAN}'::xid8, '{PAN}:{PAN}:'::pg_snapshot, ARRAY[point({PAN}::float8, 0)]"
    );
    raw.send(&query(&sql)).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "TDCZ", "{msgs:?}");
    assert_no_pan(&msgs, "geometric text");
    let mut batch = parse("", &sql);
    batch.extend(bind("", "", Some(1)));
    batch.extend(describe(b'P', ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
    assert_no_pan(&msgs, "geometric binary");
    gw.stop().await;
}

/// Issue 16 item 5: a unique violation's DETAIL echoes the key as the
/// column prints it, here a `numeric(20,2)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_detail_with_a_decimal_key_is_masked() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let (mut raw, _) = Raw::login(gw.addr, "a", &gw.agent_token()).await;
    raw.send(&query(&format!(
        "CREATE TEMP TABLE u(x numeric(20,2) PRIMARY KEY); INSERT INTO u VALUES ({PAN})"
    )))
    .await;
    raw.until(b'Z').await;
    raw.send(&query(&format!("INSERT INTO u VALUES ({PAN})")))
        .await;
    let msgs = raw.until(b'Z').await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("23505"));
    assert_no_pan(&msgs, "unique violation");
    let detail = msgs[0].field(b'D').expect("DETAIL");
    assert_eq!(detail, "Key (x)=(************1881.00) already exists.");
    gw.stop().await;
}
