//! What a client sends once logged in, read once from its frame.
//!
//! [`Frontend::read`] checks a message's layout the way PostgreSQL's
//! `PostgresMain` does (`pq_getmsg*` then `pq_getmsgend`): a message whose
//! fields run past its end, or leave bytes over, is [`Malformed`], which
//! the server answers with ERROR 08P01 without acting on it, and so does
//! the gateway (`relay::Relay::malformed`), which never sends it on: it is
//! not judged on a reading the server would not share. The
//! fields borrow the frame, which is what the gateway forwards, byte for
//! byte. The messages the gateway writes to the server have constructors
//! here ([`describe`], [`sync`], …).

use bytes::{BufMut, BytesMut};

use super::{split_frame, take_cstr, take_i16, take_i32, Frame, Malformed};

/// What a Describe or Close is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Statement,
    Portal,
}

impl Target {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// A client message after startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frontend<'a> {
    /// Simple protocol: one string, any number of statements.
    Query {
        sql: &'a [u8],
    },
    Parse(Parse<'a>),
    Bind(Bind<'a>),
    /// `target` is `None` for a subtype PostgreSQL refuses with an ERROR
    /// (not a FATAL): the server is left to say so.
    Describe {
        target: Option<Target>,
        name: &'a [u8],
    },
    Execute {
        portal: &'a [u8],
        max_rows: i32,
    },
    Close {
        target: Option<Target>,
        name: &'a [u8],
    },
    Sync,
    Flush,
    /// Fast path: a function called by OID.
    FunctionCall {
        binary_result: bool,
    },
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail,
    Terminate,
    /// A type PostgreSQL does not expect here (it answers FATAL 08P01).
    Unexpected(u8),
}

/// A Parse: a statement prepared under a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parse<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
}

/// A Bind: a portal made from a prepared statement and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// The parameter format codes (count-prefixed, 2 bytes each).
    param_formats: &'a [u8],
    /// The parameter values (count-prefixed, each length-prefixed).
    params: &'a [u8],
    /// The result format codes (count-prefixed, 2 bytes each).
    result_formats: &'a [u8],
}

/// A Bind parameter: its format code (0 text, 1 binary) and its value
/// (`None`: NULL).
pub(crate) type Parameter<'a> = (i16, Option<&'a [u8]>);

impl<'a> Frontend<'a> {
    /// The SQL text of a Query or Parse.
    pub(crate) fn sql(&self) -> Option<&'a [u8]> {
        match *self {
            Frontend::Query { sql } => Some(sql),
            Frontend::Parse(parse) => Some(parse.sql),
            _ => None,
        }
    }

    /// Reads `frame` as a client message.
    pub(crate) fn read(frame: &'a Frame) -> Result<Frontend<'a>, Malformed> {
        let body = frame.body();
        let bad = |message| Malformed { message };
        Ok(match frame.tag() {
            b'Q' => Frontend::Query {
                sql: last_cstr(body).ok_or(bad("Query"))?,
            },
            b'P' => Frontend::Parse(Parse::read(body).ok_or(bad("Parse"))?),
            b'B' => Frontend::Bind(Bind::from_body(body).ok_or(bad("Bind"))?),
            b'D' | b'C' => {
                let (&kind, rest) = body.split_first().ok_or(bad(kind_name(frame.tag())))?;
                let name = last_cstr(rest).ok_or(bad(kind_name(frame.tag())))?;
                let target = match kind {
                    b'S' => Some(Target::Statement),
                    b'P' => Some(Target::Portal),
                    _ => None,
                };
                if frame.tag() == b'D' {
                    Frontend::Describe { target, name }
                } else {
                    Frontend::Close { target, name }
                }
            }
            b'E' => {
                let (portal, rest) = take_cstr(body).ok_or(bad("Execute"))?;
                let (max_rows, rest) = take_i32(rest).ok_or(bad("Execute"))?;
                if !rest.is_empty() {
                    return Err(bad("Execute"));
                }
                Frontend::Execute { portal, max_rows }
            }
            b'S' => empty(body, Frontend::Sync).ok_or(bad("Sync"))?,
            b'H' => empty(body, Frontend::Flush).ok_or(bad("Flush"))?,
            b'X' => empty(body, Frontend::Terminate).ok_or(bad("Terminate"))?,
            b'c' => empty(body, Frontend::CopyDone).ok_or(bad("CopyDone"))?,
            b'd' => Frontend::CopyData(body),
            b'f' => {
                last_cstr(body).ok_or(bad("CopyFail"))?;
                Frontend::CopyFail
            }
            b'F' => Frontend::FunctionCall {
                binary_result: function_result_format(body).ok_or(bad("FunctionCall"))? != 0,
            },
            other => Frontend::Unexpected(other),
        })
    }
}

fn kind_name(tag: u8) -> &'static str {
    if tag == b'D' {
        "Describe"
    } else {
        "Close"
    }
}

/// A body that is one NUL-terminated string and nothing after it.
fn last_cstr(body: &[u8]) -> Option<&[u8]> {
    let (text, rest) = take_cstr(body)?;
    rest.is_empty().then_some(text)
}

fn empty<'a>(body: &[u8], message: Frontend<'a>) -> Option<Frontend<'a>> {
    body.is_empty().then_some(message)
}

/// A 2-byte count, unsigned as PostgreSQL reads it (`pq_getmsgint(…, 2)`).
fn take_count(input: &[u8]) -> Option<(usize, &[u8])> {
    let (count, rest) = take_i16(input)?;
    Some((usize::from(count as u16), rest))
}

/// Skips a count and that many 2-byte format codes (Bind, FunctionCall);
/// returns the codes (count included) and what follows.
fn split_formats(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (count, rest) = take_count(body)?;
    rest.get(2 * count..)?;
    Some(body.split_at(2 + 2 * count))
}

/// Skips a count and that many length-prefixed values, -1 for NULL (Bind
/// parameters, FunctionCall arguments); returns them (count included) and
/// what follows.
fn split_values(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (count, mut rest) = take_count(body)?;
    for _ in 0..count {
        let (len, tail) = take_i32(rest)?;
        rest = match len {
            -1 => tail,
            len => tail.get(usize::try_from(len).ok()?..)?,
        };
    }
    Some(body.split_at(body.len() - rest.len()))
}

/// The result format a FunctionCall asks for: after the function's OID, its
/// argument formats and its arguments.
fn function_result_format(body: &[u8]) -> Option<i16> {
    let (_, rest) = take_i32(body)?;
    let (_, rest) = split_formats(rest)?;
    let (_, rest) = split_values(rest)?;
    let (format, rest) = take_i16(rest)?;
    rest.is_empty().then_some(format)
}

impl<'a> Parse<'a> {
    fn read(body: &'a [u8]) -> Option<Parse<'a>> {
        let (name, rest) = take_cstr(body)?;
        let (sql, rest) = take_cstr(rest)?;
        let (count, rest) = take_count(rest)?;
        // Parameter type OIDs, 4 bytes each.
        (rest.len() == 4 * count).then_some(Parse { name, sql })
    }
}

impl<'a> Bind<'a> {
    /// A Bind read from its body (as kept with a portal).
    pub(crate) fn from_body(body: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = take_cstr(body)?;
        let (statement, rest) = take_cstr(rest)?;
        let (param_formats, rest) = split_formats(rest)?;
        let (params, rest) = split_values(rest)?;
        let (result_formats, rest) = split_formats(rest)?;
        rest.is_empty().then_some(Bind {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
        })
    }

    /// The result format codes: none (all text), one (for every column) or
    /// one per column.
    pub(crate) fn result_formats(&self) -> impl ExactSizeIterator<Item = i16> + '_ {
        codes(self.result_formats)
    }

    /// Each parameter with its format code (0 text, 1 binary); `None`: NULL.
    /// `None` for the whole when the formats are neither none, one, nor one
    /// per parameter (PostgreSQL refuses such a Bind).
    pub(crate) fn parameters(&self) -> Option<Vec<Parameter<'a>>> {
        let formats: Vec<i16> = codes(self.param_formats).collect();
        let (count, mut rest) = take_count(self.params)?;
        if formats.len() > 1 && formats.len() != count {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for index in 0..count {
            let (len, tail) = take_i32(rest)?;
            let format = formats.get(index).or(formats.first()).copied().unwrap_or(0);
            let value = match len {
                -1 => {
                    rest = tail;
                    None
                }
                len => {
                    let (value, tail) = tail.split_at(usize::try_from(len).ok()?);
                    rest = tail;
                    Some(value)
                }
            };
            out.push((format, value));
        }
        Some(out)
    }

    /// The body of a Bind of `statement` as `portal` without parameters,
    /// every column in text.
    pub(crate) fn empty(portal: &[u8], statement: &[u8]) -> BytesMut {
        let mut body = BytesMut::with_capacity(portal.len() + statement.len() + 8);
        put_cstr(&mut body, portal);
        put_cstr(&mut body, statement);
        body.put_i16(0);
        body.put_i16(0);
        body.put_i16(0);
        body
    }

    /// This Bind's parameters and result formats for `portal` and
    /// `statement`: the body of a Bind the gateway sends instead (a
    /// reviewer's replacement runs as another statement and portal).
    pub(crate) fn renamed(&self, portal: &[u8], statement: &[u8]) -> BytesMut {
        let mut body = BytesMut::with_capacity(
            portal.len()
                + statement.len()
                + 2
                + self.param_formats.len()
                + self.params.len()
                + self.result_formats.len(),
        );
        put_cstr(&mut body, portal);
        put_cstr(&mut body, statement);
        body.put_slice(self.param_formats);
        body.put_slice(self.params);
        body.put_slice(self.result_formats);
        body
    }
}

/// Big-endian 2-byte codes after their count.
fn codes(counted: &[u8]) -> impl ExactSizeIterator<Item = i16> + '_ {
    counted
        .get(2..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| i16::from_be_bytes([c[0], c[1]]))
}

fn put_cstr(out: &mut BytesMut, text: &[u8]) {
    out.put_slice(text);
    out.put_u8(0);
}

/// A complete frame of type `tag` around `body`.
pub(crate) fn message(tag: u8, body: &[u8]) -> Frame {
    let mut bytes = BytesMut::with_capacity(body.len() + 5);
    bytes.put_u8(tag);
    bytes.put_u32(body.len() as u32 + 4);
    bytes.put_slice(body);
    match split_frame(&mut bytes, usize::MAX) {
        Ok(Some(frame)) => frame,
        _ => unreachable!("a frame built whole is complete"),
    }
}

/// Describe of a statement or portal.
pub(crate) fn describe(target: Target, name: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(name.len() + 2);
    body.put_u8(target.byte());
    put_cstr(&mut body, name);
    message(b'D', &body)
}

/// Close of a statement or portal.
pub(crate) fn close(target: Target, name: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(name.len() + 2);
    body.put_u8(target.byte());
    put_cstr(&mut body, name);
    message(b'C', &body)
}

pub(crate) fn sync() -> Frame {
    message(b'S', &[])
}

pub(crate) fn terminate() -> Frame {
    message(b'X', &[])
}

/// A simple Query of `sql`.
pub(crate) fn query(sql: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(sql.len() + 1);
    put_cstr(&mut body, sql);
    message(b'Q', &body)
}

/// A Parse of `sql` under `name`, with no parameter types given.
pub(crate) fn parse(name: &[u8], sql: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(name.len() + sql.len() + 4);
    put_cstr(&mut body, name);
    put_cstr(&mut body, sql);
    body.put_i16(0);
    message(b'P', &body)
}

/// A Bind with this body (see [`Bind::renamed`], [`Bind::empty`]).
pub(crate) fn bind(body: &[u8]) -> Frame {
    message(b'B', body)
}

/// An Execute of `portal`, at most `max_rows` rows (0: all).
pub(crate) fn execute(portal: &[u8], max_rows: i32) -> Frame {
    let mut body = BytesMut::with_capacity(portal.len() + 5);
    put_cstr(&mut body, portal);
    body.put_i32(max_rows);
    message(b'E', &body)
}

/// The password of a PasswordMessage, the one message a client sends
/// during the login (before [`Frontend`] applies): up to its NUL, or empty
/// when it has none (the token check then refuses it). `None`: a message
/// of another type.
pub(crate) fn password(frame: &Frame) -> Option<&[u8]> {
    (frame.tag() == b'p').then(|| take_cstr(frame.body()).map_or(&[][..], |(password, _)| password))
}

/// A CancelRequest (a startup-phase packet: a length, no type byte) for
/// backend `pid` with its `secret` (4 bytes before protocol 3.2, up to 256
/// since).
pub(crate) fn put_cancel_request(out: &mut BytesMut, pid: i32, secret: &[u8]) {
    out.reserve(12 + secret.len());
    out.put_u32(12 + secret.len() as u32);
    out.put_u32(super::CANCEL_REQUEST_CODE);
    out.put_i32(pid);
    out.put_slice(secret);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(tag: u8, body: &[u8]) -> Result<Frontend<'static>, Malformed> {
        let frame = Box::leak(Box::new(message(tag, body)));
        Frontend::read(frame)
    }

    #[test]
    fn constructed_messages_read_back() {
        let frame = describe(Target::Portal, b"p1");
        assert_eq!(
            Frontend::read(&frame),
            Ok(Frontend::Describe {
                target: Some(Target::Portal),
                name: b"p1"
            })
        );
        let frame = parse(b"s", b"SELECT 1");
        assert_eq!(
            Frontend::read(&frame),
            Ok(Frontend::Parse(Parse {
                name: b"s",
                sql: b"SELECT 1"
            }))
        );
        let frame = execute(b"", 10);
        assert_eq!(
            Frontend::read(&frame),
            Ok(Frontend::Execute {
                portal: b"",
                max_rows: 10
            })
        );
        assert_eq!(Frontend::read(&sync()), Ok(Frontend::Sync));
        assert_eq!(
            Frontend::read(&query(b"SELECT 1")),
            Ok(Frontend::Query { sql: b"SELECT 1" })
        );
        assert_eq!(
            Frontend::read(&close(Target::Statement, b"s")),
            Ok(Frontend::Close {
                target: Some(Target::Statement),
                name: b"s"
            })
        );
        assert_eq!(Frontend::read(&terminate()), Ok(Frontend::Terminate));
    }

    #[test]
    fn bind_fields_and_parameters() {
        let mut body = BytesMut::new();
        body.put_slice(b"portal\0stmt\0");
        body.put_i16(2); // parameter formats
        body.put_i16(0);
        body.put_i16(1);
        body.put_i16(2); // parameters
        body.put_i32(3);
        body.put_slice(b"abc");
        body.put_i32(-1);
        body.put_i16(1); // result formats
        body.put_i16(1);
        let Frontend::Bind(bind) = read(b'B', &body).unwrap() else {
            panic!("not a Bind")
        };
        assert_eq!(bind.portal, b"portal");
        assert_eq!(bind.statement, b"stmt");
        assert_eq!(bind.result_formats().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            bind.parameters(),
            Some(vec![(0, Some(&b"abc"[..])), (1, None)])
        );
        // Renamed, it is the same Bind under other names.
        let renamed = bind.renamed(b"p2", b"s2");
        let frame = message(b'B', &renamed);
        let Ok(Frontend::Bind(again)) = Frontend::read(&frame) else {
            panic!("not a Bind")
        };
        assert_eq!((again.portal, again.statement), (&b"p2"[..], &b"s2"[..]));
        assert_eq!(again.parameters(), bind.parameters());
    }

    #[test]
    fn layouts_postgres_refuses_are_malformed() {
        // Bytes left over, fields running past the end, missing NULs.
        assert!(read(b'Q', b"SELECT 1\0x").is_err());
        assert!(read(b'Q', b"SELECT 1").is_err());
        assert!(read(b'P', b"s\0SELECT 1\0\0\x01").is_err());
        assert!(read(b'P', b"s\0SELECT 1\0\0\x01\0\0\0\x17").is_ok());
        assert!(read(b'E', b"p\0\0\0").is_err());
        assert!(read(b'S', b"x").is_err());
        assert!(read(b'B', b"p\0s\0\0\0\0\x01\0\0\0\x09ab\0\0").is_err());
        assert!(read(b'D', b"").is_err());
        // A Describe of another subtype is the server's ERROR to give.
        assert_eq!(
            read(b'D', b"X\0"),
            Ok(Frontend::Describe {
                target: None,
                name: b""
            })
        );
        assert_eq!(read(b'p', b"secret\0"), Ok(Frontend::Unexpected(b'p')));
    }

    #[test]
    fn function_calls_say_how_they_want_their_result() {
        let mut body = BytesMut::new();
        body.put_i32(1234); // function OID
        body.put_i16(1); // argument formats
        body.put_i16(0);
        body.put_i16(1); // arguments
        body.put_i32(2);
        body.put_slice(b"42");
        body.put_i16(0); // result format
        assert_eq!(
            read(b'F', &body),
            Ok(Frontend::FunctionCall {
                binary_result: false
            })
        );
        body.truncate(body.len() - 1);
        assert!(read(b'F', &body).is_err());
    }
}
