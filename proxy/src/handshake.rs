//! The client's startup, as its own state machine: SSLRequest / direct SSL
//! (PG17, ALPN `postgresql`) / GSSENCRequest / CancelRequest /
//! StartupMessage, then a cleartext password that must be a valid JWT, then
//! the group → role decision. Bytes a client pipelines before the TLS
//! handshake are refused: the gateway never reads ahead of a handshake.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::auth::Identity;
use crate::config::{PlaintextPolicy, RoleMapping};
use crate::metrics::LoginOutcome;
use crate::protocol::{
    self, parse_startup, put_error, split_frame, take_cstr, Severity, StartupPacket,
    MAX_STARTUP_PACKET_BYTES,
};
use crate::server::Context;
use crate::tls::{PgStream, ALPN_POSTGRESQL};

/// A client that proved who it is and may use a role.
pub struct Login {
    pub stream: PgStream,
    pub admitted: Admitted,
}

/// What the handshake learnt about an admitted client.
pub struct Admitted {
    /// Bytes the client sent after its password (normally none).
    pub pending: BytesMut,
    pub user: String,
    pub database: String,
    pub params: Vec<(String, String)>,
    pub identity: Identity,
    pub mapping: RoleMapping,
}

/// How a handshake ended when it did not produce a login.
#[derive(Debug)]
pub enum Ended {
    /// A CancelRequest was handled, or the client left (psql does this to ask for a password).
    Quietly,
    /// The client was refused; it has been told why.
    Refused(LoginOutcome, String),
}

/// Failed logins per source address, in a sliding window.
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `ip` may try again, if it is currently blocked.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = map.get(&ip)?;
        let elapsed = start.elapsed();
        if *count >= self.max && elapsed < self.window {
            Some((self.window - elapsed).as_secs().max(1))
        } else {
            None
        }
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (start, _)| start.elapsed() < window);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    pub fn record_success(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}

async fn refuse(
    stream: &mut PgStream,
    code: &str,
    message: &str,
    outcome: LoginOutcome,
) -> Result<Ended, HandshakeError> {
    let mut out = BytesMut::new();
    put_error(&mut out, Severity::Fatal, code, message);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(Ended::Refused(outcome, message.to_owned()))
}

/// Puts a refused login in the audit trail: who tried, from where, and why
/// (never the token). Other refusals are recorded by the server.
async fn record_login_failed(
    ctx: &Context,
    peer: SocketAddr,
    user: &str,
    database: &str,
    application_name: Option<String>,
    subject: Option<String>,
    reason: &str,
) {
    let event = hoop_audit::Event::LoginFailed {
        client_addr: peer.to_string(),
        user_name: Some(user.to_owned()),
        database: Some(database.to_owned()),
        application_name,
        subject,
        reason: reason.to_owned(),
    };
    crate::audit::login_failed(&ctx.audit, event).await;
}

/// Reads one untyped startup-phase packet (length + body).
async fn read_startup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<Result<StartupPacket, String>>, std::io::Error> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP_PACKET_BYTES).contains(&len) {
        return Ok(Some(Err(format!("invalid startup packet length {len}"))));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    Ok(Some(parse_startup(&body).map_err(|e| e.to_string())))
}

/// True when the client has already sent more bytes than the packet we just read.
async fn has_unread_bytes(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut rb = ReadBuf::new(&mut byte);
    let polled = poll_fn(|cx| Poll::Ready(tcp.poll_peek(cx, &mut rb))).await;
    matches!(polled, Poll::Ready(Ok(n)) if n > 0)
}

fn plaintext_allowed(policy: PlaintextPolicy, peer: SocketAddr) -> bool {
    match policy {
        PlaintextPolicy::Never => false,
        PlaintextPolicy::Loopback => peer.ip().is_loopback(),
        PlaintextPolicy::Always => true,
    }
}

/// Runs the startup handshake up to (not including) AuthenticationOk.
pub async fn accept(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Result<Login, Ended>, HandshakeError> {
    let mut tcp = tcp;
    // PG17 direct SSL: the first byte is a TLS handshake record, not a length.
    let mut first = [0u8; 1];
    let direct_tls = tcp.peek(&mut first).await? == 1 && first[0] == 0x16;
    let mut stream = if direct_tls {
        let Some(acceptor) = &ctx.tls else {
            return Ok(Err(Ended::Quietly));
        };
        let tls = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
        // Direct SSL must be negotiated as postgresql, so a TLS connection
        // meant for another protocol can never be replayed here.
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Ok(Err(Ended::Refused(
                LoginOutcome::refused,
                "direct SSL without ALPN postgresql".into(),
            )));
        }
        PgStream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)))
    } else {
        // Negotiation packets before TLS are read from the raw socket.
        loop {
            let packet = match read_startup_packet(&mut tcp).await? {
                None => return Ok(Err(Ended::Quietly)),
                Some(Err(problem)) => {
                    let mut s = PgStream::Plain(tcp);
                    return refuse(&mut s, "08P01", &problem, LoginOutcome::refused)
                        .await
                        .map(Err);
                }
                Some(Ok(p)) => p,
            };
            match packet {
                StartupPacket::SslRequest => {
                    let Some(acceptor) = &ctx.tls else {
                        tcp.write_all(b"N").await?;
                        continue;
                    };
                    if has_unread_bytes(&tcp).await {
                        let mut s = PgStream::Plain(tcp);
                        return refuse(
                            &mut s,
                            "08P01",
                            "received unencrypted data after SSL request",
                            LoginOutcome::refused,
                        )
                        .await
                        .map(Err);
                    }
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
                    break PgStream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
                }
                StartupPacket::GssEncRequest => {
                    tcp.write_all(b"N").await?;
                }
                StartupPacket::Cancel { pid, secret } => {
                    forward_cancel(ctx, pid, &secret).await;
                    return Ok(Err(Ended::Quietly));
                }
                StartupPacket::Startup {
                    major,
                    minor,
                    params,
                } => {
                    let mut s = PgStream::Plain(tcp);
                    return startup(ctx, &mut s, peer, major, minor, params)
                        .await
                        .map(|r| {
                            r.map(|admitted| Login {
                                stream: s,
                                admitted,
                            })
                        });
                }
            }
        }
    };
    // After TLS: a StartupMessage or a CancelRequest.
    let packet = match read_startup_packet(&mut stream).await? {
        None => return Ok(Err(Ended::Quietly)),
        Some(Err(problem)) => {
            return refuse(&mut stream, "08P01", &problem, LoginOutcome::refused)
                .await
                .map(Err)
        }
        Some(Ok(p)) => p,
    };
    match packet {
        StartupPacket::Startup {
            major,
            minor,
            params,
        } => startup(ctx, &mut stream, peer, major, minor, params)
            .await
            .map(|r| r.map(|admitted| Login { stream, admitted })),
        StartupPacket::Cancel { pid, secret } => {
            forward_cancel(ctx, pid, &secret).await;
            Ok(Err(Ended::Quietly))
        }
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => refuse(
            &mut stream,
            "08P01",
            "encryption requested twice",
            LoginOutcome::refused,
        )
        .await
        .map(Err),
    }
}

async fn forward_cancel(ctx: &Context, pid: i32, secret: &[u8]) {
    match ctx.cancel.lookup(pid, secret) {
        Some(target) => {
            target.cancels.send_modify(|n| *n += 1);
            if let Err(e) =
                crate::cancel::send_cancel(&ctx.config.upstream, ctx.upstream_tls.as_ref(), &target)
                    .await
            {
                tracing::warn!(error = %e, "forwarding a cancel request failed");
            }
        }
        None => tracing::debug!("cancel request with an unknown key ignored"),
    }
}

/// The StartupMessage onwards.
async fn startup(
    ctx: &Context,
    stream: &mut PgStream,
    peer: SocketAddr,
    major: u16,
    minor: u16,
    params: Vec<(String, String)>,
) -> Result<Result<Admitted, Ended>, HandshakeError> {
    if major != 3 {
        return refuse(
            stream,
            "0A000",
            &format!("unsupported frontend protocol {major}.{minor}: hoop speaks 3.0"),
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }
    if !stream.is_tls() && !plaintext_allowed(ctx.config.allow_plaintext, peer) {
        return refuse(
            stream,
            "28000",
            "hoop requires TLS: connect with sslmode=require (or verify-full)",
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = get("user").filter(|u| !u.is_empty()) else {
        return refuse(stream, "28000", "no user name given", LoginOutcome::refused)
            .await
            .map(Err);
    };
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    if get("replication").is_some_and(|r| !matches!(r.as_str(), "false" | "off" | "0" | "no")) {
        return refuse(
            stream,
            "42501",
            "replication connections are not allowed through hoop",
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }
    // `options` (PGOPTIONS): each setting is judged as `SET name = value`
    // would be. Settings no rule may ever allow are refused before the
    // token is looked at; the rules, which depend on the identity, after.
    let settings = match get("options").map(|o| startup_options(&o)).transpose() {
        Ok(settings) => settings.unwrap_or_default(),
        Err(problem) => {
            return refuse(
                stream,
                problem.code,
                &problem.message,
                LoginOutcome::refused,
            )
            .await
            .map(Err)
        }
    };
    if let Some(problem) = settings
        .iter()
        .find_map(|(name, value)| never_in_options(name, value))
    {
        return refuse(
            stream,
            problem.code,
            &problem.message,
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }
    let dbs = &ctx.config.upstream.databases;
    if !dbs.is_empty() && !dbs.contains(&database) {
        return refuse(
            stream,
            "3D000",
            &format!("database \"{database}\" is not served by this gateway"),
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }

    let mut out = BytesMut::new();
    // Newer minor versions and `_pq_.` extensions: answer for 3.0, as Postgres does.
    let unsupported: Vec<String> = params
        .iter()
        .filter(|(n, _)| n.starts_with("_pq_."))
        .map(|(n, _)| n.clone())
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        let msg = pgwire::messages::startup::NegotiateProtocolVersion::new(0, unsupported);
        protocol::put_message(&mut out, &msg)?;
    }

    let ip = peer.ip();
    if let Some(secs) = ctx.login_limiter.blocked_for(ip) {
        return refuse(
            stream,
            "28P01",
            &format!("too many failed logins from {ip}; try again in {secs} s"),
            LoginOutcome::rate_limited,
        )
        .await
        .map(Err);
    }

    // AuthenticationCleartextPassword: the password is the token.
    out.put_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
    stream.write_all(&out).await?;
    stream.flush().await?;

    let mut buf = BytesMut::with_capacity(8192);
    let frame = loop {
        match split_frame(&mut buf, 64 * 1024) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(e) => {
                return refuse(stream, "08P01", &e.to_string(), LoginOutcome::refused)
                    .await
                    .map(Err)
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            // psql closes here to prompt for a password, then reconnects.
            return Ok(Err(Ended::Quietly));
        }
    };
    if frame.tag() != b'p' {
        return refuse(
            stream,
            "08P01",
            &format!("expected a password message, got {:?}", frame.tag() as char),
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }
    let token = take_cstr(frame.body())
        .map(|(t, _)| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default();

    let identity = match ctx.auth.verify(&token).await {
        Ok(identity) => identity,
        Err(reason) => {
            ctx.login_limiter.record_failure(ip);
            tracing::info!(%peer, %user, %reason, "login refused");
            let why = reason.to_string();
            record_login_failed(
                ctx,
                peer,
                &user,
                &database,
                get("application_name"),
                None,
                &why,
            )
            .await;
            return refuse(
                stream,
                "28P01",
                &format!("password authentication failed for user \"{user}\": {reason}"),
                LoginOutcome::bad_token,
            )
            .await
            .map(Err);
        }
    };
    let Some(mapping) = ctx.config.role_for(&identity.groups).cloned() else {
        ctx.login_limiter.record_failure(ip);
        let seen = if identity.groups.is_empty() {
            "none".to_owned()
        } else {
            identity.groups.join(", ")
        };
        tracing::info!(%peer, subject = %identity.subject, groups = %seen, "no role mapped");
        record_login_failed(
            ctx,
            peer,
            &user,
            &database,
            get("application_name"),
            Some(identity.subject.clone()),
            &format!("no database role is mapped for groups [{seen}]"),
        )
        .await;
        return refuse(
            stream,
            "28000",
            &format!(
                "no database role is mapped for subject \"{}\" with groups [{seen}]",
                identity.subject
            ),
            LoginOutcome::no_role,
        )
        .await
        .map(Err);
    };
    if let Some(problem) = settings
        .iter()
        .find_map(|(name, _)| refused_by_rules(ctx, &identity, name))
    {
        record_login_failed(
            ctx,
            peer,
            &user,
            &database,
            get("application_name"),
            Some(identity.subject.clone()),
            &problem.message,
        )
        .await;
        return refuse(
            stream,
            problem.code,
            &problem.message,
            LoginOutcome::refused,
        )
        .await
        .map(Err);
    }
    ctx.login_limiter.record_success(ip);
    // Upstream gets the vetted settings, written again by the gateway, never
    // the client's own string: no second reading of it can differ.
    let mut params: Vec<(String, String)> =
        params.into_iter().filter(|(n, _)| n != "options").collect();
    if !settings.is_empty() {
        params.push(("options".to_owned(), options_string(&settings)));
    }
    Ok(Ok(Admitted {
        pending: buf,
        user,
        database,
        params,
        identity,
        mapping,
    }))
}

/// Why a login with `options` is refused: SQLSTATE and message.
#[derive(Debug, PartialEq, Eq)]
struct OptionsProblem {
    code: &'static str,
    message: String,
}

/// The settings of an `options` startup parameter, as PostgreSQL reads it
/// (`pg_split_opts`, then `-c name=value`, `-cname=value` or
/// `--name=value`, with `-` in names read as `_`). Other switches
/// (`-B`, `-S`, `-e` …) set server parameters by other names; they are
/// refused rather than translated.
fn startup_options(raw: &str) -> Result<Vec<(String, String)>, OptionsProblem> {
    // pg_split_opts: whitespace separates, a backslash takes the next
    // character literally.
    let mut words = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_ascii_whitespace() => break,
                '\\' => word.extend(chars.next()),
                c => word.push(c),
            }
        }
        words.push(word);
    }
    let invalid = |what: &str| OptionsProblem {
        code: "42601",
        message: format!(
            "invalid command-line argument in the options startup parameter: {what} \
             (hoop accepts -c name=value and --name=value)"
        ),
    };
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else if word == "-c" {
            words
                .next()
                .ok_or_else(|| invalid("-c without a setting"))?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else {
            return Err(invalid(&word));
        };
        let Some((name, value)) = assignment.split_once('=') else {
            return Err(OptionsProblem {
                code: "42601",
                message: format!("--{assignment} requires a value"),
            });
        };
        let name = name.replace('-', "_").to_lowercase();
        if name.is_empty() {
            return Err(invalid(&word));
        }
        settings.push((name, value.to_owned()));
    }
    Ok(settings)
}

/// Settings the `options` startup parameter may never carry, whatever the
/// rules: the session's identity, the signed session, and libraries loaded
/// at backend start (a `SET` of them after login loads nothing; at startup
/// it would).
fn never_in_options(name: &str, value: &str) -> Option<OptionsProblem> {
    let never = matches!(
        name,
        "role" | "session_authorization" | "local_preload_libraries" | "session_preload_libraries"
    ) || name.starts_with("hoop.")
        // The gateway reads SQL with standard string escapes only.
        || hoop_policy::weakens_escape_rules(name, Some(value));
    never.then(|| OptionsProblem {
        code: "42501",
        message: format!(
            "setting \"{name}\" in the options startup parameter is not allowed through hoop"
        ),
    })
}

/// A setting of `options` judged exactly as `SET name = …` would be, for
/// this identity. A review cannot wait during a login, so it refuses too.
fn refused_by_rules(ctx: &Context, identity: &Identity, name: &str) -> Option<OptionsProblem> {
    let facts = hoop_policy::setting_facts(name);
    let who = hoop_policy::Identity {
        subject: identity.subject.clone(),
        groups: identity.groups.clone(),
    };
    let decision = hoop_policy::decide(
        &facts,
        &who,
        &hoop_policy::PolicyContext::default(),
        &ctx.config.policy.rules,
    );
    let (_, message) = decision.client_error()?;
    Some(OptionsProblem {
        code: "42501",
        message: format!(
            "setting \"{name}\" in the options startup parameter is refused: {message}"
        ),
    })
}

/// Settings written as an `options` value PostgreSQL splits back into
/// exactly these (`-c name=value`, whitespace and backslashes escaped).
fn options_string(settings: &[(String, String)]) -> String {
    let escape = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c.is_ascii_whitespace() || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    settings
        .iter()
        .map(|(name, value)| format!("-c {}={}", escape(name), escape(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(raw: &str) -> Vec<(String, String)> {
        startup_options(raw).expect("valid options")
    }

    #[test]
    fn options_are_read_as_postgres_reads_them() {
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            settings("-c intervalstyle=postgres_verbose"),
            [pair("intervalstyle", "postgres_verbose")]
        );
        assert_eq!(
            settings("  -cstatement_timeout=5s   --search-path=a,b  "),
            [pair("statement_timeout", "5s"), pair("search_path", "a,b")]
        );
        assert_eq!(
            settings(r"-c application_name=with\ space -c DateStyle=ISO,\\x"),
            [
                pair("application_name", "with space"),
                pair("datestyle", "ISO,\\x")
            ]
        );
        assert_eq!(settings(""), []);
        for bad in ["-B 100", "-c", "-c work_mem", "--=x", "stray", "-e"] {
            let problem = startup_options(bad).expect_err(bad);
            assert_eq!(problem.code, "42601", "{bad}");
        }
    }

    #[test]
    fn rewritten_options_read_back_to_the_same_settings() {
        let original = vec![
            ("application_name".to_owned(), "a b\\c".to_owned()),
            ("search_path".to_owned(), "x, y".to_owned()),
        ];
        assert_eq!(settings(&options_string(&original)), original);
    }

    #[test]
    fn identity_settings_are_never_accepted_in_options() {
        for name in [
            "role",
            "session_authorization",
            "hoop.session",
            "hoop.anything",
        ] {
            let problem = never_in_options(name, "x").expect(name);
            assert_eq!(problem.code, "42501");
            assert!(problem.message.contains(name), "{}", problem.message);
        }
        assert_eq!(never_in_options("intervalstyle", "postgres_verbose"), None);
        // The gateway reads SQL with standard string escapes only.
        assert!(never_in_options("standard_conforming_strings", "off").is_some());
        assert_eq!(never_in_options("standard_conforming_strings", "on"), None);
    }
}
