//! The database side: connect as the gateway role (SCRAM-SHA-256, optional
//! TLS), then turn the connection into the client's session with
//! `SET ROLE <mapped>` and `SET hoop.session = <signed token>`. Nothing the
//! client later sees reveals the gateway's credential.

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Upstream as UpstreamConfig;
use crate::protocol::backend::{error_summary, put_parameter_status, Backend, IDLE};
use crate::protocol::{self, split_frame, take_cstr, take_i32, Frame};
use crate::tls::PgStream;
use crate::transport::{open_transport, TransportError};

/// Startup parameters a client may pass through to the database as they
/// are. `options` arrives here only as the handshake rewrote it: `-c
/// name=value` settings each judged as `SET name = value` would be (see
/// `login::startup_options`), never the client's own string, with every
/// other setting the client sent as a parameter of its own.
pub const FORWARDED_PARAMETERS: &[&str] = &[
    "options",
    "application_name",
    "client_encoding",
    "DateStyle",
    "datestyle",
    "TimeZone",
    "timezone",
    "IntervalStyle",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "lc_messages",
];

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the database refused the gateway login: {code} {message}")]
    Login { code: String, message: String },
    #[error("the database reported {code}: {message}")]
    Server { code: String, message: String },
    #[error("protocol error from the database: {0}")]
    Protocol(String),
    #[error("connection to the database lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot mask this database's columns: {0}")]
    Masking(String),
}

impl UpstreamError {
    /// SQLSTATE and message for the client: never the gateway's role name or
    /// login details, which the operator finds in the gateway log instead.
    pub fn for_client(&self) -> (String, String) {
        match self {
            UpstreamError::Server { code, message } => (code.clone(), message.clone()),
            UpstreamError::Login { .. } => (
                "08004".into(),
                "the gateway could not log in to the database; the operator has the details in the gateway log".into(),
            ),
            UpstreamError::Transport(_) | UpstreamError::Io(_) => (
                "08006".into(),
                "the gateway could not reach the database; try again shortly".into(),
            ),
            UpstreamError::Protocol(_) => (
                "08P01".into(),
                "the database sent something the gateway did not expect".into(),
            ),
            UpstreamError::Masking(_) => (
                "XX000".into(),
                "the gateway cannot mask this database's card-number columns, so it refuses \
                 the session; the operator has the details in the gateway log"
                    .into(),
            ),
        }
    }
}

/// An authenticated upstream connection, before the session is set up.
pub struct Upstream {
    pub stream: PgStream,
    pub read_buf: BytesMut,
    pub pid: i32,
    pub secret: bytes::Bytes,
    /// ParameterStatus frames as the server sent them.
    pub parameter_status: Vec<Frame>,
    /// NoticeResponses of the login (a login event trigger's, say): the
    /// client gets them, masked, before its first ReadyForQuery.
    pub notices: Vec<Frame>,
}

async fn read_frame(stream: &mut PgStream, buf: &mut BytesMut) -> Result<Frame, UpstreamError> {
    loop {
        if let Some(frame) = split_frame(buf, protocol::DEFAULT_MAX_MESSAGE_BYTES)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            return Ok(frame);
        }
        protocol::reserve_for_read(buf);
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// A server message read from its frame; one the gateway cannot read is a
/// protocol error (the session is not set up on a guess).
fn read_message(frame: &Frame) -> Result<Backend<'_>, UpstreamError> {
    Backend::read(frame).map_err(|malformed| UpstreamError::Protocol(malformed.to_string()))
}

/// The frame's type byte, for the error that says it was not expected.
fn unexpected(frame: &Frame, during: &str) -> UpstreamError {
    UpstreamError::Protocol(format!(
        "unexpected message {:?} {during}",
        frame.tag() as char
    ))
}

fn server_error(body: &[u8]) -> UpstreamError {
    let (code, message) = error_summary(body);
    UpstreamError::Server { code, message }
}

/// Connects and authenticates as the gateway role: the StartupMessage,
/// the SCRAM exchange, then the server's parameters and key until
/// ReadyForQuery.
pub async fn connect(
    config: &UpstreamConfig,
    connector: Option<&tokio_rustls::TlsConnector>,
    database: &str,
    client_params: &[(String, String)],
) -> Result<Upstream, UpstreamError> {
    let mut stream = open_transport(config, connector).await?;
    send_startup(&mut stream, &config.user, database, client_params).await?;
    let mut buf = BytesMut::with_capacity(8192);
    let mut login = ScramLogin {
        password: &config.password,
        scram: None,
    };
    let mut pid = 0;
    let mut secret = bytes::Bytes::new();
    let mut parameter_status = Vec::new();
    let mut notices = Vec::new();
    loop {
        let frame = read_frame(&mut stream, &mut buf).await?;
        match read_message(&frame)? {
            Backend::Authentication(body) => {
                let reply = login.answer(body)?;
                if !reply.is_empty() {
                    stream.write_all(&reply).await?;
                    stream.flush().await?;
                }
            }
            Backend::ParameterStatus { .. } => parameter_status.push(frame),
            Backend::CancelKey(body) => {
                let (p, rest) = take_i32(body)
                    .ok_or_else(|| UpstreamError::Protocol("short BackendKeyData".into()))?;
                pid = p;
                secret = bytes::Bytes::copy_from_slice(rest);
            }
            Backend::NoticeResponse(_) => notices.push(frame),
            Backend::NegotiateProtocolVersion => {}
            Backend::ReadyForQuery { .. } => break,
            Backend::ErrorResponse(body) => {
                let (code, message) = error_summary(body);
                return Err(if code.starts_with("28") {
                    UpstreamError::Login { code, message }
                } else {
                    UpstreamError::Server { code, message }
                });
            }
            _ => return Err(unexpected(&frame, "during startup")),
        }
    }
    if login.scram.is_none() {
        tracing::warn!("the database let the gateway role in without a password; use scram-sha-256 in pg_hba.conf");
    }
    Ok(Upstream {
        stream,
        read_buf: buf,
        pid,
        secret,
        parameter_status,
        notices,
    })
}

/// The StartupMessage: the gateway role, the database, and the client's
/// parameters the database may see ([`FORWARDED_PARAMETERS`]).
async fn send_startup(
    stream: &mut PgStream,
    user: &str,
    database: &str,
    client_params: &[(String, String)],
) -> Result<(), UpstreamError> {
    let mut params: Vec<(&str, &str)> = vec![("user", user), ("database", database)];
    for (name, value) in client_params {
        if FORWARDED_PARAMETERS.contains(&name.as_str()) {
            params.push((name, value));
        }
    }
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out)?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// What an Authentication message asks for or reports: its first field.
const AUTHENTICATION_OK: i32 = 0;
const AUTHENTICATION_SASL: i32 = 10;
const AUTHENTICATION_SASL_CONTINUE: i32 = 11;
const AUTHENTICATION_SASL_FINAL: i32 = 12;

/// The gateway's side of SCRAM-SHA-256 (the only method it accepts).
struct ScramLogin<'a> {
    password: &'a str,
    scram: Option<ScramSha256>,
}

impl ScramLogin<'_> {
    /// Answers one Authentication message; an empty reply means nothing to send.
    fn answer(&mut self, body: &[u8]) -> Result<BytesMut, UpstreamError> {
        let (code, data) = take_i32(body)
            .ok_or_else(|| UpstreamError::Protocol("short authentication message".into()))?;
        let mut out = BytesMut::new();
        match code {
            AUTHENTICATION_OK => {}
            AUTHENTICATION_SASL => {
                let mechanisms = sasl_mechanisms(data);
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(UpstreamError::Login {
                        code: "28000".into(),
                        message: format!("server offers SASL {mechanisms:?}, not SCRAM-SHA-256"),
                    });
                }
                let s = ScramSha256::new(self.password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                self.scram = Some(s);
            }
            AUTHENTICATION_SASL_CONTINUE => {
                let s = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL continue before start".into()))?;
                s.update(data).map_err(|e| UpstreamError::Login {
                    code: "28000".into(),
                    message: format!("SCRAM: {e}"),
                })?;
                frontend::sasl_response(s.message(), &mut out)?;
            }
            AUTHENTICATION_SASL_FINAL => {
                let s = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL final before start".into()))?;
                s.finish(data).map_err(|e| UpstreamError::Login {
                    code: "28000".into(),
                    message: format!("SCRAM server signature: {e}"),
                })?;
            }
            other => {
                return Err(UpstreamError::Login {
                    code: "28000".into(),
                    message: format!(
                        "server asked for authentication method {other}; configure scram-sha-256 for the gateway role in pg_hba.conf"
                    ),
                })
            }
        }
        Ok(out)
    }
}

/// The mechanisms of an AuthenticationSASL message.
fn sasl_mechanisms(mut data: &[u8]) -> Vec<String> {
    let mut mechanisms = Vec::new();
    while let Some((m, tail)) = take_cstr(data) {
        if m.is_empty() {
            break;
        }
        mechanisms.push(String::from_utf8_lossy(m).into_owned());
        data = tail;
    }
    mechanisms
}

/// Double-quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Switches the connection to the mapped role and installs the session
/// token. Returns ParameterStatus frames the server sent meanwhile.
pub async fn start_session(
    up: &mut Upstream,
    role: &str,
    session_token: &str,
) -> Result<Vec<Frame>, UpstreamError> {
    // The token alphabet is base64url plus '.', so it needs no escaping;
    // refuse anything else rather than build SQL from it.
    if !session_token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(UpstreamError::Protocol(
            "session token has unexpected characters".into(),
        ));
    }
    let sql = format!(
        "SET ROLE {}; SET {} = '{}'",
        quote_ident(role),
        hoop_common::names::GUC_SESSION,
        session_token
    );
    let mut out = BytesMut::new();
    frontend::query(&sql, &mut out)?;
    up.stream.write_all(&out).await?;
    up.stream.flush().await?;
    let mut failure = None;
    let mut statuses = Vec::new();
    loop {
        let frame = read_frame(&mut up.stream, &mut up.read_buf).await?;
        match read_message(&frame)? {
            Backend::CommandComplete { .. } | Backend::NoticeResponse(_) => {}
            Backend::ParameterStatus { .. } => statuses.push(frame),
            Backend::ErrorResponse(body) => failure = Some(server_error(body)),
            Backend::ReadyForQuery { status } => {
                if status != IDLE && failure.is_none() {
                    failure = Some(UpstreamError::Protocol(
                        "session setup left a transaction open".into(),
                    ));
                }
                break;
            }
            _ => return Err(unexpected(&frame, "during session setup")),
        }
    }
    match failure {
        Some(UpstreamError::Server { code, message }) => Err(UpstreamError::Server {
            code,
            message: format!("could not set up the database session: {message}"),
        }),
        Some(e) => Err(e),
        None => Ok(statuses),
    }
}

/// Whether a ParameterStatus reports a client encoding the gateway cannot
/// read (see [`hoop_policy::unreadable_client_encoding`]): the gateway
/// never relays such a session. Setting one by statement is refused (rule
/// `readable-client-encoding`); this catches every other way (`ALTER
/// ROLE … SET`, `ALTER DATABASE … SET`, a function that calls
/// `set_config`). Every other change of how the server reads text
/// (`client_encoding`, `standard_conforming_strings`) the gateway follows.
pub fn reports_unreadable_encoding(frame: &Frame) -> bool {
    let Some((name, rest)) = take_cstr(frame.body()) else {
        return false;
    };
    let value = take_cstr(rest).map(|(value, _)| String::from_utf8_lossy(value));
    hoop_policy::weakens_reading(&String::from_utf8_lossy(name), value.as_deref())
}

/// feature_not_supported: what a session gets when the server reports a
/// client encoding the gateway cannot read.
pub const SQLSTATE_FEATURE_NOT_SUPPORTED: &str = "0A000";

/// The FATAL a session gets then (see [`reports_unreadable_encoding`]).
pub const UNREADABLE_ENCODING: &str =
    "the database set a client_encoding whose characters can contain ASCII bytes (SJIS, BIG5, \
     GBK, UHC, GB18030, JOHAB or SHIFT_JIS_2004) for this session; hoop cannot read SQL in it \
     exactly as PostgreSQL does, so the session is ended (check ALTER ROLE/DATABASE ... SET \
     client_encoding, and functions that change it)";

/// What the client may see of a ParameterStatus: the gateway role's name
/// (`session_authorization`) is replaced by the mapped role, and the
/// extension's own settings are never reported.
pub fn filter_parameter_status(frame: &Frame, mapped_role: &str) -> Option<BytesMut> {
    let (name, _) = take_cstr(frame.body())?;
    if name.starts_with(b"hoop.") {
        return None;
    }
    if name == b"session_authorization" {
        let mut out = BytesMut::new();
        put_parameter_status(&mut out, name, mapped_role.as_bytes());
        return Some(out);
    }
    Some(BytesMut::from(frame.as_bytes()))
}

/// Columns the extension masks (`hoop.masked_columns`), read over the
/// session's own connection after [`start_session`]. `Ok(None)`: the
/// database has no hoop extension (no such view), so only content detection
/// applies. Any other failure is an error: the session must not start
/// without knowing what to mask. The view's existence is asked first, so a
/// database without the extension logs no error for each login.
pub async fn load_masked_columns(
    up: &mut Upstream,
) -> Result<Option<Vec<hoop_policy::MaskedColumn>>, UpstreamError> {
    const EXISTS: &str = "SELECT pg_catalog.to_regclass('hoop.masked_columns') IS NOT NULL";
    const SQL: &str = "SELECT relid::int8, attnum, schema_name::text, table_name::text, \
                       column_name::text, strategy::text FROM hoop.masked_columns";
    let exists = simple_query(up, EXISTS).await?;
    if exists.first().map(|row| row_values(row)) != Some(Some(vec!["t".to_owned()])) {
        return Ok(None);
    }
    let rows = simple_query(up, SQL).await.map_err(|error| match error {
        UpstreamError::Server { code, message } => UpstreamError::Server {
            code,
            message: format!("could not read hoop.masked_columns: {message}"),
        },
        other => other,
    })?;
    rows.iter()
        .map(|row| masked_column_from_row(row))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whether the session's database holds code that statements can run
/// without naming it (see [`crate::relay::hidden`]), read on the session's
/// own connection after [`start_session`]. A server error (a catalog the
/// role may not read) is `Ok(None)`: the relay then assumes there is.
pub async fn hidden_code(
    up: &mut Upstream,
) -> Result<Option<crate::relay::hidden::Catalog>, UpstreamError> {
    match simple_query(up, crate::relay::hidden::QUERY).await {
        Ok(rows) => rows
            .first()
            .and_then(|row| catalog_from_row(row))
            .map(Some)
            .ok_or_else(|| {
                UpstreamError::Protocol("malformed answer to the gateway's catalog query".into())
            }),
        Err(UpstreamError::Server { code, message }) => {
            tracing::warn!(
                %code,
                %message,
                "cannot read the catalog for code statements run unnamed; \
                 this session runs no statement while its record is written"
            );
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

/// The row of `hidden_code.sql`: `t` or `f`, then two JSON arrays of
/// names (or NULL, for none), lowercased here as the policy lowercases the
/// names a statement calls (so a name matches however the policy will see
/// a call of it). The names come in the client's encoding; a list that is
/// not UTF-8 JSON is not known (the calls it would have cleared are
/// weighed as any), not an error: the boolean is what matters.
fn catalog_from_row(body: &[u8]) -> Option<crate::relay::hidden::Catalog> {
    let [found, creating_code, volatile, builtin] = row_fields(body)?[..] else {
        return None;
    };
    let names = |field: Option<&[u8]>| -> Option<std::collections::HashSet<String>> {
        field.map_or(Some(Default::default()), |json| {
            let names: Vec<String> = serde_json::from_slice(json).ok()?;
            Some(names.iter().map(|name| name.to_lowercase()).collect())
        })
    };
    let found = match found? {
        b"t" => true,
        b"f" => false,
        _ => return None,
    };
    Some(crate::relay::hidden::Catalog {
        found,
        creating_code: names(creating_code),
        volatile: names(volatile),
        builtin: names(builtin),
    })
}

/// Runs one simple Query on a connection nobody else uses yet and returns
/// the bodies of its DataRows; the server's error is
/// [`UpstreamError::Server`].
async fn simple_query(up: &mut Upstream, sql: &str) -> Result<Vec<Bytes>, UpstreamError> {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out)?;
    up.stream.write_all(&out).await?;
    up.stream.flush().await?;
    let mut rows = Vec::new();
    let mut failure: Option<(String, String)> = None;
    loop {
        let frame = read_frame(&mut up.stream, &mut up.read_buf).await?;
        match read_message(&frame)? {
            Backend::RowDescription(_)
            | Backend::CommandComplete { .. }
            | Backend::NoticeResponse(_)
            | Backend::ParameterStatus { .. } => {}
            Backend::DataRow(body) => rows.push(Bytes::copy_from_slice(body)),
            Backend::ErrorResponse(body) => failure = Some(error_summary(body)),
            Backend::ReadyForQuery { .. } => break,
            _ => return Err(unexpected(&frame, "in answer to the gateway's own query")),
        }
    }
    match failure {
        None => Ok(rows),
        Some((code, message)) => Err(UpstreamError::Server { code, message }),
    }
}

/// A DataRow's values as text (`None`: malformed, or a NULL).
fn row_values(body: &[u8]) -> Option<Vec<String>> {
    row_fields(body)?
        .into_iter()
        .map(|field| Some(std::str::from_utf8(field?).ok()?.to_owned()))
        .collect()
}

/// A DataRow's fields as bytes (`None` within: a NULL; `None`: malformed).
fn row_fields(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = protocol::take_i16(body)?;
    let mut fields = Vec::with_capacity(usize::try_from(count).ok()?);
    for _ in 0..count {
        let (len, tail) = take_i32(rest)?;
        if len == -1 {
            fields.push(None);
            rest = tail;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        fields.push(Some(tail.get(..len)?));
        rest = &tail[len..];
    }
    Some(fields)
}

fn masked_column_from_row(body: &[u8]) -> Result<hoop_policy::MaskedColumn, UpstreamError> {
    let bad = || UpstreamError::Protocol("malformed row from hoop.masked_columns".into());
    let fields = row_values(body).ok_or_else(bad)?;
    if fields.len() != 6 {
        return Err(bad());
    }
    Ok(hoop_policy::MaskedColumn {
        relid: fields[0].parse().map_err(|_| bad())?,
        attnum: fields[1].parse().map_err(|_| bad())?,
        schema_name: fields[2].clone(),
        table_name: fields[3].clone(),
        column_name: fields[4].clone(),
        strategy: fields[5].clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DataRow body of these fields (`None`: NULL).
    fn row(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (fields.len() as i16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(value) => {
                    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                    body.extend_from_slice(value);
                }
            }
        }
        body
    }

    #[test]
    fn the_catalog_reading_is_read_as_far_as_it_can_be() {
        let read = catalog_from_row(&row(&[
            Some(b"f"),
            None,
            Some("[\"nextval\",\"random\",\"Odd\",\"\u{212A}elvin\"]".as_bytes()),
            Some(b"[\"count\",\"nextval\",\"count\"]"),
        ]))
        .expect("a well-formed row");
        assert!(!read.found);
        assert_eq!(read.creating_code, Some(Default::default()), "NULL: none");
        // Lowercased as the policy lowercases calls: the Kelvin sign's
        // lowercase is an ASCII k.
        let volatile = read.volatile.expect("read");
        for name in ["random", "odd", "kelvin"] {
            assert!(volatile.contains(name), "{name}");
        }
        let builtin = read.builtin.expect("read");
        assert!(builtin.contains("count") && builtin.contains("nextval"));
        // Names in a client encoding other than UTF-8 are not known; the
        // boolean still is.
        let latin1 = catalog_from_row(&row(&[
            Some(b"t"),
            Some(b"[\"caf\xe9\"]"),
            Some(b"[]"),
            Some(b"[]"),
        ]))
        .expect("the boolean reads");
        assert!(latin1.found && latin1.creating_code.is_none());
        for malformed in [
            row(&[Some(b"yes"), None, None, None]),
            row(&[None, None, None, None]),
            row(&[Some(b"t"), None, None]),
            row(&[Some(b"t")]),
        ] {
            assert!(catalog_from_row(&malformed).is_none());
        }
    }
}
