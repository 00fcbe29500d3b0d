//! Login policy, after the [`crate::handshake`] produced a StartupMessage:
//! which startup parameters are acceptable, the cleartext password that
//! must be a valid JWT, the group → role decision, and the `options`
//! settings judged as `SET` would be. Every refusal is an ErrorResponse
//! with its SQLSTATE; refusals that concern an identity are recorded in the
//! audit trail (never the token).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hoop_audit::AuditStore;
use hoop_common::identity::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::Authenticator;
use crate::config::{AllowPlaintext, Config, RoleMapping};
use crate::handshake::{refuse, Ended, Startup};
use crate::metrics::LoginOutcome;
use crate::protocol::backend::{put_cleartext_password_request, put_negotiate_protocol_version};
use crate::protocol::{frontend, split_frame};
use crate::tls::PgStream;

/// What a login is checked against; shared by all connections.
pub struct LoginChecks<'a> {
    pub config: &'a Config,
    pub auth: &'a Authenticator,
    pub limiter: &'a LoginLimiter,
    pub audit: &'a AuditStore,
}

/// What the login learnt about an admitted client.
pub struct Admitted {
    /// Bytes the client sent after its password (normally none).
    pub pending: BytesMut,
    pub database: String,
    /// Startup parameters for the database (`options` rewritten by the gateway).
    pub params: Vec<(String, String)>,
    pub identity: Identity,
    /// Unix seconds: the token's expiry, when the session ends.
    pub expires_at: i64,
    pub mapping: RoleMapping,
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

/// A login the gateway will not let in: what the client is told.
struct Refusal {
    code: &'static str,
    message: String,
    outcome: LoginOutcome,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>, outcome: LoginOutcome) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            outcome,
        }
    }
}

impl From<OptionsProblem> for Refusal {
    fn from(problem: OptionsProblem) -> Refusal {
        Refusal::new(problem.code, problem.message, LoginOutcome::refused)
    }
}

/// The StartupMessage, checked before any token is asked for.
struct Request {
    user: String,
    database: String,
    minor: u16,
    params: Vec<(String, String)>,
    /// The `options` parameter's settings, read as PostgreSQL reads them.
    settings: Vec<(String, String)>,
}

impl Request {
    fn param(&self, name: &str) -> Option<String> {
        param(&self.params, name)
    }
}

fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn plaintext_allowed(setting: AllowPlaintext, peer: SocketAddr) -> bool {
    match setting {
        AllowPlaintext::Never => false,
        AllowPlaintext::Loopback => peer.ip().is_loopback(),
        AllowPlaintext::Always => true,
    }
}

/// Runs the login from the StartupMessage up to (not including)
/// AuthenticationOk: check the request, ask for the password, verify it
/// as a token, map a role, judge the `options` settings for that identity.
pub async fn admit(
    checks: &LoginChecks<'_>,
    stream: &mut PgStream,
    peer: SocketAddr,
    startup: Startup,
) -> Result<Admitted, Ended> {
    let request = match check_request(checks.config, stream.is_tls(), peer, startup) {
        Ok(request) => request,
        Err(refusal) => return Err(refused(stream, refusal).await),
    };
    let ip = peer.ip();
    if let Some(secs) = checks.limiter.blocked_for(ip) {
        let refusal = Refusal::new(
            "28P01",
            format!("too many failed logins from {ip}; try again in {secs} s"),
            LoginOutcome::rate_limited,
        );
        return Err(refused(stream, refusal).await);
    }
    let (token, pending) = ask_for_password(stream, &request).await?;
    let attempt = Attempt {
        checks,
        peer,
        request: &request,
    };
    let (identity, expires_at, mapping) = match attempt.identify(&token).await {
        Ok(admitted) => admitted,
        Err(refusal) => return Err(refused(stream, refusal).await),
    };
    checks.limiter.record_success(ip);
    let params = rewritten_params(request.params, &request.settings);
    Ok(Admitted {
        pending,
        database: request.database,
        params,
        identity,
        expires_at,
        mapping,
    })
}

/// Tells the client of `refusal` (see [`refuse`]).
async fn refused(stream: &mut PgStream, refusal: Refusal) -> Ended {
    refuse(stream, refusal.code, &refusal.message, refusal.outcome).await
}

/// Everything decided from the StartupMessage alone: protocol version,
/// TLS, user, database, replication, and `options` settings no rule may
/// ever allow.
fn check_request(
    config: &Config,
    tls: bool,
    peer: SocketAddr,
    startup: Startup,
) -> Result<Request, Refusal> {
    let Startup {
        major,
        minor,
        params,
    } = startup;
    if major != 3 {
        return Err(Refusal::new(
            "0A000",
            format!("unsupported frontend protocol {major}.{minor}: hoop speaks 3.0"),
            LoginOutcome::refused,
        ));
    }
    if !tls && !plaintext_allowed(config.allow_plaintext, peer) {
        return Err(Refusal::new(
            "28000",
            "hoop requires TLS: connect with sslmode=require (or verify-full)",
            LoginOutcome::refused,
        ));
    }
    let Some(user) = param(&params, "user").filter(|u| !u.is_empty()) else {
        return Err(Refusal::new(
            "28000",
            "no user name given",
            LoginOutcome::refused,
        ));
    };
    let database = param(&params, "database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    if param(&params, "replication")
        .is_some_and(|r| !matches!(r.as_str(), "false" | "off" | "0" | "no"))
    {
        return Err(Refusal::new(
            "42501",
            "replication connections are not allowed through hoop",
            LoginOutcome::refused,
        ));
    }
    // `options` (PGOPTIONS): each setting is judged as `SET name = value`
    // would be. Settings no rule may ever allow are refused before the
    // token is looked at; the rules, which depend on the identity, after.
    let mut settings = param(&params, "options")
        .map(|o| startup_options(&o))
        .transpose()?
        .unwrap_or_default();
    // Every other parameter PostgreSQL does not read itself is a setting
    // too (node-postgres sends `statement_timeout` so, any client may send
    // `lock_timeout` or an `app.*` setting), applied after `options`'s as
    // PostgreSQL applies them: judged the same way and written into the
    // `options` the database gets (before, they were dropped, and a
    // client's statement_timeout silently did not apply).
    // Their names are case-insensitive to PostgreSQL, as in `options`:
    // judged (and passed on) as the lowercase name it applies.
    settings.extend(
        params
            .iter()
            .filter(|(name, _)| is_setting_parameter(name))
            .map(|(name, value)| (name.to_lowercase(), value.clone())),
    );
    // `client_encoding` is passed on as it is, but not every one is.
    let encoding = param(&params, "client_encoding").map(|v| ("client_encoding".to_owned(), v));
    if let Some(problem) = settings
        .iter()
        .chain(encoding.iter())
        .find_map(|(name, value)| never_in_options(name, value))
    {
        return Err(problem.into());
    }
    let dbs = &config.upstream.databases;
    if !dbs.is_empty() && !dbs.contains(&database) {
        return Err(Refusal::new(
            "3D000",
            format!("database \"{database}\" is not served by this gateway"),
            LoginOutcome::refused,
        ));
    }
    Ok(Request {
        user,
        database,
        minor,
        params,
        settings,
    })
}

/// A startup parameter that is a setting: not one PostgreSQL reads itself
/// (`user`, `database`, `options`, `replication`, `_pq_.` protocol
/// options), nor one passed to the database as it is
/// ([`crate::upstream::FORWARDED_PARAMETERS`]).
fn is_setting_parameter(name: &str) -> bool {
    !matches!(name, "user" | "database" | "options" | "replication")
        && !name.starts_with("_pq_.")
        && !crate::upstream::FORWARDED_PARAMETERS.contains(&name)
}

/// Answers for protocol 3.0 when the client asked for more, asks for a
/// cleartext password (the token), and reads it, with the bytes the client
/// sent after it. [`Ended::Quietly`]: the client left to prompt for a
/// password (psql does), or to give up.
async fn ask_for_password(
    stream: &mut PgStream,
    request: &Request,
) -> Result<(String, BytesMut), Ended> {
    let mut out = BytesMut::new();
    // Newer minor versions and `_pq_.` extensions: answer for 3.0, as Postgres does.
    let unsupported: Vec<String> = request
        .params
        .iter()
        .filter(|(n, _)| n.starts_with("_pq_."))
        .map(|(n, _)| n.clone())
        .collect();
    if request.minor > 0 || !unsupported.is_empty() {
        put_negotiate_protocol_version(&mut out, &unsupported);
    }
    // The password is the token.
    put_cleartext_password_request(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;

    let mut buf = BytesMut::with_capacity(8192);
    let frame = loop {
        match split_frame(&mut buf, 64 * 1024) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(e) => {
                return Err(refuse(stream, "08P01", &e.to_string(), LoginOutcome::refused).await)
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            // psql closes here to prompt for a password, then reconnects.
            return Err(Ended::Quietly);
        }
    };
    let Some(password) = frontend::password(&frame) else {
        let problem = format!("expected a password message, got {:?}", frame.tag() as char);
        return Err(refuse(stream, "08P01", &problem, LoginOutcome::refused).await);
    };
    let token = String::from_utf8_lossy(password).into_owned();
    Ok((token, buf))
}

/// One client's attempt to log in with a token.
struct Attempt<'a> {
    checks: &'a LoginChecks<'a>,
    peer: SocketAddr,
    request: &'a Request,
}

impl Attempt<'_> {
    /// The token's identity, its expiry and the role mapped to it, once
    /// the `options` settings passed the rules for that identity.
    async fn identify(&self, token: &str) -> Result<(Identity, i64, RoleMapping), Refusal> {
        let user = &self.request.user;
        let verified = match self.checks.auth.verify(token).await {
            Ok(verified) => verified,
            Err(reason) => {
                self.checks.limiter.record_failure(self.peer.ip());
                tracing::info!(peer = %self.peer, %user, %reason, "login refused");
                self.record_failure(None, &reason.to_string()).await;
                return Err(Refusal::new(
                    "28P01",
                    format!("password authentication failed for user \"{user}\": {reason}"),
                    LoginOutcome::bad_token,
                ));
            }
        };
        let identity = verified.identity;
        let Some(mapping) = self.checks.config.role_for(&identity.groups).cloned() else {
            self.checks.limiter.record_failure(self.peer.ip());
            let seen = if identity.groups.is_empty() {
                "none".to_owned()
            } else {
                identity.groups.join(", ")
            };
            tracing::info!(peer = %self.peer, subject = %identity.subject, groups = %seen, "no role mapped");
            self.record_failure(
                Some(&identity),
                &format!("no database role is mapped for groups [{seen}]"),
            )
            .await;
            return Err(Refusal::new(
                "28000",
                format!(
                    "no database role is mapped for subject \"{}\" with groups [{seen}]",
                    identity.subject
                ),
                LoginOutcome::no_role,
            ));
        };
        let rules = &self.checks.config.policy.rules;
        if let Some(problem) = self
            .request
            .settings
            .iter()
            .find_map(|(name, _)| refused_by_rules(rules, &identity, name))
        {
            self.record_failure(Some(&identity), &problem.message).await;
            return Err(problem.into());
        }
        Ok((identity, verified.expires_at, mapping))
    }

    /// Puts a refused login in the audit trail: who tried, from where, and
    /// why (never the token). Refusals before a token was read are recorded
    /// by the server.
    async fn record_failure(&self, identity: Option<&Identity>, reason: &str) {
        let event = hoop_audit::Event::LoginFailed {
            client_addr: self.peer.to_string(),
            user_name: Some(self.request.user.clone()),
            database: Some(self.request.database.clone()),
            application_name: self.request.param("application_name"),
            subject: identity.map(|i| i.subject.clone()),
            reason: reason.to_owned(),
        };
        crate::audit::login_failed(self.checks.audit, event).await;
    }
}

/// The client's parameters for the database: its `options` replaced by
/// the vetted settings, written again by the gateway, never the client's
/// own string, so no second reading of it can differ.
fn rewritten_params(
    params: Vec<(String, String)>,
    settings: &[(String, String)],
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> =
        params.into_iter().filter(|(n, _)| n != "options").collect();
    if !settings.is_empty() {
        params.push(("options".to_owned(), options_string(settings)));
    }
    params
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

/// Settings the startup parameters (`options` included) may never carry, whatever the
/// rules: the session's identity, the signed session, and libraries loaded
/// at backend start (a `SET` of them after login loads nothing; at startup
/// it would).
fn never_in_options(name: &str, value: &str) -> Option<OptionsProblem> {
    if name == "client_encoding" && hoop_policy::unreadable_client_encoding(value) {
        return Some(OptionsProblem {
            code: "0A000",
            message: format!(
                "client_encoding \"{value}\" is not supported through hoop: its characters can \
                 contain ASCII bytes, so the gateway cannot read SQL in it exactly as PostgreSQL \
                 does; use UTF8"
            ),
        });
    }
    let never = matches!(
        name,
        "role" | "session_authorization" | "local_preload_libraries" | "session_preload_libraries"
    ) || name.starts_with("hoop.");
    never.then(|| OptionsProblem {
        code: "42501",
        message: format!(
            "setting \"{name}\" in the startup parameters (or options) is not allowed through hoop"
        ),
    })
}

/// A setting of `options` judged exactly as `SET name = …` would be, for
/// this identity. A review cannot wait during a login, so it refuses too.
fn refused_by_rules(
    rules: &hoop_policy::RuleSet,
    identity: &Identity,
    name: &str,
) -> Option<OptionsProblem> {
    let facts = hoop_policy::setting_facts(name);
    let decision = hoop_policy::decide(
        &facts,
        identity,
        &hoop_policy::PolicyContext::default(),
        rules,
    );
    let (_, message) = decision.client_error()?;
    Some(OptionsProblem {
        code: "42501",
        message: format!(
            "setting \"{name}\" in the startup parameters (or options) is refused: {message}"
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
        // The gateway reads SQL as the server reports it reads it, in any
        // client encoding but those whose characters can hold ASCII bytes.
        assert_eq!(never_in_options("standard_conforming_strings", "off"), None);
        assert_eq!(never_in_options("client_encoding", "LATIN9"), None);
        let problem = never_in_options("client_encoding", "win-932").expect("SJIS");
        assert_eq!(problem.code, "0A000");
    }
}
