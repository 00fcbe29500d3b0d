//! Test harness: a real Postgres cluster from the test kit (`tests/kit`:
//! the version `$HOOP_PG_VERSION` names, else 15; one per test binary, run
//! as the `postgres` OS user on a free port, SCRAM on 127.0.0.1, TLS when
//! the build has it) and an in-process gateway per test, plus a raw
//! protocol client for what libpq cannot send.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use hoop_proxy::auth::dev_issuer::DevIssuer;
use hoop_proxy::config::Config;
use hoop_testkit::Postgres;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const GATEWAY_PASSWORD: &str = "gw-test-password-3f1";
pub const SEED_B64: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
pub const DEV_SEED_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// The Postgres the tests run on (missing Postgres fails the test).
pub fn postgres() -> &'static Postgres {
    static POSTGRES: OnceLock<Postgres> = OnceLock::new();
    POSTGRES.get_or_init(|| Postgres::from_env().unwrap_or_else(|e| panic!("{e}")))
}

/// Its binaries.
pub fn pg_bin() -> PathBuf {
    postgres().bin().to_owned()
}

/// Whether this Postgres build supports TLS (the PG17 built by setup does not).
pub fn server_has_ssl() -> bool {
    postgres().has_ssl()
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Cluster {
    pub port: u16,
    /// The cluster's directory (its socket, `server.crt`).
    pub dir: PathBuf,
    kit: hoop_testkit::Cluster,
}

impl Cluster {
    /// Runs SQL as the superuser over the Unix socket.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.kit.psql(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn direct_url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=hoop_gateway password={GATEWAY_PASSWORD} dbname={db}",
            self.port
        )
    }
}

/// The cluster shared by the tests of one binary; the kit stops and
/// removes it once the test process is gone.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_name().unwrap().to_string_lossy().replace('-', "_");
        let builder = hoop_testkit::Cluster::scratch(&stem)
            .postgres(postgres().clone())
            .settings("max_connections = 100");
        let dir = builder.dir().to_owned();
        // TLS on the server too (when the build has it), so the gateway's
        // upstream TLS is tested.
        let ssl = if server_has_ssl() {
            format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            )
        } else {
            String::new()
        };
        let kit = builder
            .settings(&ssl)
            .create()
            .unwrap_or_else(|e| panic!("{e}"));
        kit.stop_when_gone(std::process::id())
            .unwrap_or_else(|e| panic!("{e}"));
        let (cert, key) = make_cert(&dir);
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&cert).arg(&key);
                c
            },
            "chown",
        );
        kit.start().unwrap_or_else(|e| panic!("{e}"));
        let cluster = Cluster {
            port: kit.port,
            dir,
            kit,
        };
        cluster.psql(
            "postgres",
            &format!(
                "CREATE ROLE hoop_gateway LOGIN NOINHERIT PASSWORD '{GATEWAY_PASSWORD}';
                 CREATE ROLE fraud_agent NOLOGIN; CREATE ROLE payments_admin NOLOGIN;
                 GRANT fraud_agent, payments_admin TO hoop_gateway;"
            ),
        );
        cluster.psql("postgres", "CREATE DATABASE payments");
        cluster.psql(
            "payments",
            "CREATE TABLE public.payments (id bigint primary key, card_number text, cardholder text, amount numeric(12,2), note text, created_at timestamptz);
             INSERT INTO public.payments SELECT g, '4111111111111111', 'holder ' || g, g * 10.5, NULL, timestamptz '2024-01-01' + g * interval '1 hour' FROM generate_series(1, 50) g;
             GRANT USAGE, CREATE ON SCHEMA public TO fraud_agent, payments_admin;
             GRANT SELECT ON public.payments TO fraud_agent, payments_admin;
             GRANT INSERT, UPDATE, DELETE ON public.payments TO payments_admin;
             CREATE TABLE public.scratch (id int, t text); GRANT ALL ON public.scratch TO fraud_agent, payments_admin;",
        );
        cluster
    })
}

/// Knobs a test may turn on the gateway configuration.
#[derive(Clone)]
pub struct GatewayOptions {
    pub extra_listen: String,
    /// Extra lines for [upstream], e.g. TLS settings.
    pub extra_upstream: String,
    pub identity: Option<String>,
    pub tls: bool,
    pub mappings: String,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            extra_listen: String::new(),
            extra_upstream: String::new(),
            identity: None,
            tls: false,
            mappings: r#"
[[role_mapping]]
group = "payments-admins"
role = "payments_admin"
unmask = ["public.payments.card_number"]

[[role_mapping]]
group = "fraud-agents"
role = "fraud_agent"

[[role_mapping]]
group = "ghosts"
role = "no_such_role"
"#
            .into(),
        }
    }
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: PathBuf,
}

impl TestGateway {
    pub fn mint(&self, sub: &str, groups: &[&str], ttl: Duration) -> String {
        let dev = self
            .config
            .identity
            .dev_issuer
            .as_ref()
            .expect("dev issuer");
        let issuer = DevIssuer::from_config(dev, &self.config.identity).unwrap();
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        issuer.mint(sub, &groups, ttl, now).unwrap()
    }

    pub fn agent_token(&self) -> String {
        self.mint("agent-7", &["fraud-agents"], Duration::from_secs(600))
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=payments",
            self.addr.port()
        )
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

/// A new, empty directory. Its name holds this process's id, which an
/// earlier test process may have had (ids are reused): what such a process
/// left there (an audit store with its records) is removed first. The
/// first call also removes the directories of test processes that have
/// ended (tests read a gateway's directory after it stopped, so each
/// process leaves its own behind).
pub fn unique_dir(tag: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dirs_of_ended_processes);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("hoop-gw-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `hoop-gw-<tag>-<pid>-<n>` directories whose process is gone.
fn remove_dirs_of_ended_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("hoop-gw-")) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(_n), Some(pid), Some(_tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let ended = pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        });
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A self-signed certificate for localhost (openssl CLI).
pub fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    run(
        {
            let mut c = Command::new("openssl");
            c.args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert);
            c
        },
        "openssl req",
    );
    (cert, key)
}

pub async fn start_gateway(opts: GatewayOptions) -> TestGateway {
    let cluster = cluster();
    let dir = unique_dir("cfg");
    std::fs::write(dir.join("gw.password"), GATEWAY_PASSWORD).unwrap();
    std::fs::write(dir.join("session.key"), SEED_B64).unwrap();
    std::fs::write(dir.join("dev.key"), DEV_SEED_B64).unwrap();
    let tls = if opts.tls {
        let (c, k) = make_cert(&dir);
        format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            c.display(),
            k.display()
        )
    } else {
        "allow_plaintext = \"loopback\"\n".into()
    };
    let identity = opts.identity.clone().unwrap_or_else(|| {
        "[identity]\naudience = \"hoop\"\nleeway = \"0s\"\n[identity.dev_issuer]\nkey_file = \"dev.key\"\n".into()
    });
    let text = format!(
        r#"
[listen]
address = "127.0.0.1:0"
{tls}{extra}
[upstream]
host = "127.0.0.1"
port = {port}
user = "hoop_gateway"
password = {{ file = "gw.password" }}
{extra_upstream}
{identity}
{mappings}
[session]
signing_key = {{ file = "session.key" }}
key_id = "test-1"

[admin]
address = "127.0.0.1:0"
"#,
        extra = opts.extra_listen,
        extra_upstream = opts.extra_upstream,
        port = cluster.port,
        mappings = opts.mappings,
    );
    let path = dir.join("hoop.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let gateway = hoop_proxy::server::Gateway::bind(config.clone())
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let admin = gateway.admin_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gateway.run(async move {
        let _ = rx.await;
    }));
    TestGateway {
        addr,
        admin,
        config,
        stop: Some(tx),
        task: Some(task),
        dir,
    }
}

// ---------------------------------------------------------------------------
// A raw protocol client.

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u32(196608);
    for (k, v) in params {
        body.put_slice(&cstr(k));
        body.put_slice(&cstr(v));
    }
    body.put_u8(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend([0, 0]);
    msg(b'P', &b)
}
pub fn bind(portal: &str, stmt: &str, result_format: Option<i16>) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend([0, 0, 0, 0]);
    match result_format {
        Some(f) => {
            b.extend([0, 1]);
            b.extend(f.to_be_bytes());
        }
        None => b.extend([0, 0]),
    }
    msg(b'B', &b)
}
/// A Bind of text-format parameters (`None`: NULL), results in text.
pub fn bind_text(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend([0, 0]);
    b.extend((params.len() as i16).to_be_bytes());
    for param in params {
        match param {
            Some(value) => {
                b.extend((value.len() as i32).to_be_bytes());
                b.extend(value.as_bytes());
            }
            None => b.extend((-1i32).to_be_bytes()),
        }
    }
    b.extend([0, 0]);
    msg(b'B', &b)
}
pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend(cstr(name));
    msg(b'D', &b)
}
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(max_rows.to_be_bytes());
    msg(b'E', &b)
}
pub fn sync() -> Vec<u8> {
    msg(b'S', b"")
}
pub fn flush() -> Vec<u8> {
    msg(b'H', b"")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    pub fn error_code(&self) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        self.field(b'C')
    }
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next message, or None at EOF. Panics after 20 s (a hang is a failure).
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let frame = self.buf.split_to(len + 1);
                    return Some(Msg {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    });
                }
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("timed out waiting for the gateway")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// Messages up to and including the first with `tag`.
    pub async fn until(&mut self, tag: u8) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("EOF before {:?}; got {out:?}", tag as char));
            let done = m.tag == tag;
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Logs in through the gateway; returns the startup messages.
    pub async fn login(addr: SocketAddr, user: &str, token: &str) -> (Raw, Vec<Msg>) {
        let mut raw = Raw::connect(addr).await;
        raw.send(&startup_packet(&[("user", user), ("database", "payments")]))
            .await;
        let auth = raw.recv().await.expect("auth request");
        assert_eq!(
            (auth.tag, &auth.body[..]),
            (b'R', &[0, 0, 0, 3][..]),
            "{auth:?}"
        );
        raw.send(&msg(b'p', &cstr(token))).await;
        let msgs = raw.until(b'Z').await;
        (raw, msgs)
    }

    /// Sends a login and returns the first message after the password.
    pub async fn login_error(addr: SocketAddr, token: &str) -> Msg {
        let mut raw = Raw::connect(addr).await;
        raw.send(&startup_packet(&[
            ("user", "agent"),
            ("database", "payments"),
        ]))
        .await;
        let auth = raw.recv().await.expect("auth request");
        if auth.tag == b'E' {
            return auth;
        }
        raw.send(&msg(b'p', &cstr(token))).await;
        let m = raw.recv().await.expect("a reply");
        assert!(
            raw.recv().await.is_none(),
            "connection must close after a refused login"
        );
        m
    }
}

pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e} ({:?})", e.as_db_error()));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Signs arbitrary claims with the dev issuer's key (for forged tokens).
pub fn sign_dev(claims: &serde_json::Value, kid: Option<&str>) -> String {
    use base64::Engine;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(DEV_SEED_B64)
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = key.to_pkcs8_der().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap()
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT with the given header and claims and a fake signature.
pub fn unsigned_jwt(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    signature: &[u8],
) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(header.to_string()),
        e.encode(claims.to_string()),
        e.encode(signature)
    )
}

pub fn hs256(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        e.encode(header.to_string()),
        e.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", e.encode(tag.as_ref()))
}
