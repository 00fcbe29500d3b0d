//! Login with JWTs from the development issuer: forged, tampered, expired,
//! wrong-audience, `alg: none`, HMAC-with-the-public-key and unknown-`kid`
//! tokens are refused with 28P01; unmapped groups with 28000; repeated
//! failures are rate-limited per source address.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn claims(aud: &str, exp_in: i64) -> serde_json::Value {
    let now = now_unix();
    json!({"iss": "hoop-dev", "aud": aud, "sub": "agent-9", "iat": now, "nbf": now - 1, "exp": now + exp_in, "groups": ["fraud-agents"]})
}

async fn refused_with(gw: &TestGateway, token: &str, code: &str, needle: &str) {
    let m = Raw::login_error(gw.addr, token).await;
    assert_eq!(m.tag, b'E', "{m:?}");
    assert_eq!(m.error_code().as_deref(), Some(code), "{:?}", m.field(b'M'));
    let text = m.field(b'M').unwrap();
    assert!(text.contains(needle), "{text:?} should mention {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_broken_tokens_are_refused() {
    let gw = start_gateway(GatewayOptions {
        extra_listen: "max_failed_logins = 100\n".into(),
        ..Default::default()
    })
    .await;
    // The baseline: a correctly signed token logs in.
    let good = sign_dev(&claims("hoop", 600), Some("hoop-dev-1"));
    let (mut raw, _) = Raw::login(gw.addr, "agent-9", &good).await;
    raw.send(&query("select 1")).await;
    raw.until(b'Z').await;

    // Tampered payload (groups changed after signing).
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let tampered_claims = json!({"iss": "hoop-dev", "aud": "hoop", "sub": "agent-9", "exp": now_unix() + 600, "groups": ["payments-admins"]});
    use base64::Engine;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tampered_claims.to_string());
    refused_with(&gw, &parts.join("."), "28P01", "signature").await;

    refused_with(
        &gw,
        &sign_dev(&claims("hoop", -120), Some("hoop-dev-1")),
        "28P01",
        "expired",
    )
    .await;
    refused_with(
        &gw,
        &sign_dev(&claims("someone-else", 600), Some("hoop-dev-1")),
        "28P01",
        "audience",
    )
    .await;
    let mut wrong_iss = claims("hoop", 600);
    wrong_iss["iss"] = json!("https://evil.example");
    refused_with(
        &gw,
        &sign_dev(&wrong_iss, Some("hoop-dev-1")),
        "28P01",
        "issuer",
    )
    .await;
    let mut future = claims("hoop", 600);
    future["nbf"] = json!(now_unix() + 300);
    refused_with(
        &gw,
        &sign_dev(&future, Some("hoop-dev-1")),
        "28P01",
        "not valid yet",
    )
    .await;
    refused_with(
        &gw,
        &sign_dev(&claims("hoop", 600), Some("rotated-away")),
        "28P01",
        "rotated-away",
    )
    .await;
    refused_with(
        &gw,
        &unsigned_jwt(
            &json!({"alg": "none", "typ": "JWT"}),
            &claims("hoop", 600),
            b"",
        ),
        "28P01",
        "not accepted",
    )
    .await;
    // HS256 keyed with the issuer's public key: the key is Ed25519, so HMAC is never allowed.
    let public = {
        use base64::Engine;
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(DEV_SEED_B64)
            .unwrap()
            .try_into()
            .unwrap();
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes()
    };
    refused_with(
        &gw,
        &hs256(
            &json!({"alg": "HS256", "typ": "JWT", "kid": "hoop-dev-1"}),
            &claims("hoop", 600),
            &public,
        ),
        "28P01",
        "not accepted",
    )
    .await;
    refused_with(&gw, "not-a-jwt", "28P01", "not a JWT").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_groups_are_named_in_the_refusal() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let token = gw.mint("intern", &["interns", "readers"], Duration::from_secs(600));
    refused_with(&gw, &token, "28000", "[interns, readers]").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address() {
    let gw = start_gateway(GatewayOptions {
        extra_listen: "max_failed_logins = 3\nfailed_login_window = \"1m\"\n".into(),
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        refused_with(&gw, "garbage", "28P01", "not a JWT").await;
    }
    // Even a valid token is refused now, before it is looked at.
    let m = Raw::login_error(gw.addr, &gw.agent_token()).await;
    assert_eq!(m.error_code().as_deref(), Some("28P01"));
    assert!(
        m.field(b'M').unwrap().contains("too many failed logins"),
        "{m:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_startup_parameters_are_refused() {
    let gw = start_gateway(GatewayOptions::default()).await;
    for (name, value) in [
        ("options", "-c role=postgres"),
        ("replication", "database"),
        // A setting as a parameter of its own is judged as in options.
        ("role", "postgres"),
        ("session_authorization", "postgres"),
    ] {
        let mut raw = Raw::connect(gw.addr).await;
        raw.send(&startup_packet(&[
            ("user", "a"),
            ("database", "payments"),
            (name, value),
        ]))
        .await;
        let m = raw.recv().await.unwrap();
        assert_eq!(m.error_code().as_deref(), Some("42501"), "{name}");
        assert!(raw.recv().await.is_none());
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_over_tls_and_plaintext_is_refused() {
    // psql with sslmode=require through TLS (libpq does the negotiation).
    let gw = start_gateway(GatewayOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=payments user=agent sslmode=require",
            gw.addr.port()
        ))
        .args(["-X", "-A", "-t", "-c", "select current_user"])
        .env("PGPASSWORD", gw.agent_token())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // This gateway refuses plaintext, so a successful login was over TLS.
    assert_eq!(text.trim(), "fraud_agent");
    let plain = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=payments user=agent sslmode=disable",
            gw.addr.port()
        ))
        .args(["-X", "-c", "select 1"])
        .env("PGPASSWORD", gw.agent_token())
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("requires TLS"));
    // PostgreSQL 17 direct SSL (no SSLRequest, ALPN "postgresql"). The
    // psql builds here lack OpenSSL, so this speaks it with rustls.
    let (user, _) = direct_tls_login(&gw, Some(b"postgresql"))
        .await
        .expect("direct SSL with ALPN");
    assert_eq!(user, "fraud_agent");
    assert!(
        direct_tls_login(&gw, None).await.is_none(),
        "direct SSL without ALPN is refused"
    );
    gw.stop().await;
}

async fn direct_tls_login(gw: &TestGateway, alpn: Option<&[u8]>) -> Option<(String, ())> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(gw.dir.join("server.crt")).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    if let Some(p) = alpn {
        config.alpn_protocols = vec![p.to_vec()];
    }
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("direct TLS: {e}");
            return None;
        }
    };
    tls.write_all(&startup_packet(&[
        ("user", "agent"),
        ("database", "payments"),
    ]))
    .await
    .ok()?;
    let mut buf = vec![0u8; 9];
    tls.read_exact(&mut buf).await.ok()?;
    if buf[0] != b'R' {
        return None;
    }
    tls.write_all(&msg(b'p', &cstr(&gw.agent_token())))
        .await
        .unwrap();
    tls.write_all(&query("select current_user")).await.unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("no hang")
            .ok()?;
        if n == 0 {
            return None;
        }
        all.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&all).contains("SELECT 1\0") && all.ends_with(b"Z\0\0\0\x05I") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&all);
    text.contains("fraud_agent")
        .then(|| ("fraud_agent".to_owned(), ()))
}

/// Logs in with an `options` startup parameter; returns the messages after
/// the password (through ReadyForQuery, or the refusal).
async fn login_with_options(gw: &TestGateway, token: &str, options: &str) -> (Raw, Vec<Msg>) {
    login_with(gw, token, &[("options", options)]).await
}

/// Logs in with these startup parameters besides the user and database;
/// returns the messages after the password (through ReadyForQuery, or the
/// refusal), or the refusal before it.
async fn login_with(gw: &TestGateway, token: &str, params: &[(&str, &str)]) -> (Raw, Vec<Msg>) {
    let mut raw = Raw::connect(gw.addr).await;
    let mut all = vec![("user", "agent"), ("database", "payments")];
    all.extend_from_slice(params);
    raw.send(&startup_packet(&all)).await;
    let first = raw.recv().await.expect("a reply");
    if first.tag == b'E' {
        return (raw, vec![first]);
    }
    assert_eq!((first.tag, &first.body[..]), (b'R', &[0, 0, 0, 3][..]));
    raw.send(&msg(b'p', &cstr(token))).await;
    let mut msgs = Vec::new();
    while let Some(m) = raw.recv().await {
        let tag = m.tag;
        msgs.push(m);
        if tag == b'Z' || tag == b'E' {
            break;
        }
    }
    (raw, msgs)
}

/// A gateway whose rule keeps the agents' `work_mem` (blocks setting it).
async fn gateway_keeping_work_mem() -> TestGateway {
    start_gateway(GatewayOptions {
        mappings: GatewayOptions::default().mappings
            + r#"
[[rules]]
name = "agents-keep-work-mem"
action = "block"
set_parameters = ["work_mem"]
groups = ["fraud-agents"]
"#,
        ..Default::default()
    })
    .await
}

/// A setting sent as a startup parameter of its own (node-postgres sends
/// `statement_timeout` so) reaches the server, after `options`'s, as
/// PostgreSQL applies them; a rule that blocks it refuses the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_sent_as_startup_parameters_apply_after_options() {
    let gw = gateway_keeping_work_mem().await;
    let token = gw.agent_token();
    let (mut raw, msgs) = login_with(
        &gw,
        &token,
        &[
            ("options", "-c statement_timeout=9s -c lock_timeout=1s"),
            ("statement_timeout", "3s"),
            ("app.tenant", "t 7"),
        ],
    )
    .await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    raw.send(&query(
        "select current_setting('statement_timeout') || ',' || current_setting('lock_timeout') || ',' || current_setting('app.tenant')",
    ))
    .await;
    let rows = raw.until(b'Z').await;
    let row = rows.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(row.text().contains("3s,1s,t 7"), "{}", row.text());

    // Names are case-insensitive to the server: so to the gateway.
    for name in ["work_mem", "WORK_MEM"] {
        let (_, msgs) = login_with(&gw, &token, &[(name, "1GB")]).await;
        let e = msgs.last().expect("a refusal");
        assert_eq!(e.error_code().as_deref(), Some("42501"), "{msgs:?}");
        let message = e.field(b'M').unwrap_or_default();
        assert!(
            message.contains("\"work_mem\"") && message.contains("agents-keep-work-mem"),
            "{message}"
        );
    }
    for (name, value) in [
        ("ROLE", "postgres"),
        ("Session_Authorization", "postgres"),
        ("HOOP.session", "x"),
        ("Local_Preload_Libraries", "x"),
    ] {
        // Refused by the gateway before anything reaches the server.
        let (_, msgs) = login_with(&gw, &token, &[(name, value)]).await;
        let e = msgs.last().expect("a refusal");
        assert_eq!(e.error_code().as_deref(), Some("42501"), "{name}: {msgs:?}");
        let message = e.field(b'M').unwrap_or_default();
        assert!(
            message.contains("not allowed through hoop"),
            "{name}: {message}"
        );
    }
    gw.stop().await;
}

/// `options` (PGOPTIONS, what pg_regress sends) is accepted: each setting
/// goes through the rules `SET name = value` does, and reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_settings_are_judged_like_set_and_passed_upstream() {
    let gw = gateway_keeping_work_mem().await;
    let token = gw.agent_token();
    let (mut raw, msgs) = login_with_options(
        &gw,
        &token,
        r"-c intervalstyle=postgres_verbose --statement-timeout=7s -c application_name=pg\ regress",
    )
    .await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    raw.send(&query(
        "select current_setting('intervalstyle'), current_setting('statement_timeout'), \
         current_setting('application_name'), current_user",
    ))
    .await;
    let rows = raw.until(b'Z').await;
    let row = rows.iter().find(|m| m.tag == b'D').expect("a row");
    let text = String::from_utf8_lossy(&row.body).into_owned();
    assert!(text.contains("postgres_verbose"), "{text}");
    assert!(text.contains("7s"), "{text}");
    assert!(text.contains("pg regress"), "{text}");
    assert!(text.contains("fraud_agent"), "{text}");

    // The identity and the signed session: refused before the token is read.
    for options in [
        "-c role=postgres",
        "--session-authorization=postgres",
        "-c hoop.session=forged",
        "-c intervalstyle=iso_8601 -c ROLE=postgres",
    ] {
        let (mut raw, msgs) = login_with_options(&gw, &token, options).await;
        let e = &msgs[0];
        assert_eq!(e.tag, b'E', "{options}: {msgs:?}");
        assert_eq!(e.field(b'S').as_deref(), Some("FATAL"), "{options}");
        assert_eq!(e.error_code().as_deref(), Some("42501"), "{options}");
        let message = e.field(b'M').unwrap_or_default();
        let name = if options.contains("hoop") {
            "hoop.session"
        } else if options.contains("session") {
            "session_authorization"
        } else {
            "role"
        };
        assert!(message.contains(&format!("\"{name}\"")), "{message}");
        assert!(raw.recv().await.is_none(), "closed after the refusal");
    }
    // A setting a rule blocks for this identity: refused after login,
    // naming the setting and the rule.
    let (_, msgs) = login_with_options(&gw, &token, "-c work_mem=1GB").await;
    let e = msgs.last().expect("a refusal");
    assert_eq!(e.error_code().as_deref(), Some("42501"), "{msgs:?}");
    let message = e.field(b'M').unwrap_or_default();
    assert!(
        message.contains("\"work_mem\"") && message.contains("agents-keep-work-mem"),
        "{message}"
    );
    // The same setting is fine for a group the rule does not cover.
    let admin = gw.mint("ci", &["payments-admins"], Duration::from_secs(600));
    let (_, msgs) = login_with_options(&gw, &admin, "-c work_mem=8MB").await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    // Other switches are not settings hoop can judge.
    let (_, msgs) = login_with_options(&gw, &token, "-B 100").await;
    assert_eq!(msgs[0].error_code().as_deref(), Some("42601"), "{msgs:?}");
    // libpq's PGOPTIONS, as pg_regress sets it.
    let psql = |options: &str| {
        std::process::Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} dbname=payments user=agent sslmode=disable",
                gw.addr.port()
            ))
            .args(["-X", "-A", "-t", "-c", "show intervalstyle"])
            .env("PGPASSWORD", &token)
            .env("PGOPTIONS", options)
            .output()
            .expect("psql runs")
    };
    let out = psql("-c intervalstyle=postgres_verbose");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "postgres_verbose",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psql("-c role=postgres");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("\"role\""),
        "{stderr}"
    );
    gw.stop().await;
}

/// A first packet of an impossible length (node-postgres sends Terminate
/// when it ends before its startup message went out) is closed without a
/// word, as PostgreSQL closes it: the client reads no ErrorResponse it did
/// not ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_packet_of_an_impossible_length_is_closed_as_postgres_closes_it() {
    let gw = start_gateway(GatewayOptions::default()).await;
    let server: std::net::SocketAddr = format!("127.0.0.1:{}", cluster().port).parse().unwrap();
    for addr in [server, gw.addr] {
        let mut raw = Raw::connect(addr).await;
        raw.send(&msg(b'X', b"")).await;
        assert!(
            raw.recv().await.is_none(),
            "{addr}: closed without a message"
        );
    }
    gw.stop().await;
}
