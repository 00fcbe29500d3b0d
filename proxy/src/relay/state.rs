//! Per-connection protocol state, kept from the frames the relay sees: the
//! prepared statements and portals the server holds, with their row
//! descriptions and the row shapes the masker makes of them (an Execute
//! does not resend RowDescription, so whoever inspects DataRows later needs
//! them), the transaction status, and the queue of requests still awaiting
//! their responses (so pipelining, errors-until-Sync and idleness are known).
//!
//! Statements and portals are kept in the server's order: a statement from
//! its ParseComplete, a portal from its BindComplete, each description from
//! the answer to its Describe. What the client has sent (and the relay may
//! still hold back) is the policy inspector's: its record of each statement
//! and portal knows the text, the verdict and which Parse a portal was bound
//! to.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{take_cstr, take_i16, take_i32, Frame};
use hoop_policy::RowShape;

/// A prepared statement the server holds.
#[derive(Debug, Clone, Default)]
pub struct PreparedStatement {
    /// Which ParseComplete made it: a portal bound to it remembers this,
    /// and a later statement of the same name (the unnamed statement is
    /// replaced by every Parse) does not describe that portal's rows.
    parse: u64,
    /// The answer to a Describe of it: a RowDescription body, or `None`
    /// for NoData.
    pub description: Option<Option<Bytes>>,
}

/// A portal the server holds.
#[derive(Debug, Clone, Default)]
pub struct Portal {
    pub statement: Vec<u8>,
    /// The [`PreparedStatement::parse`] of the statement it was bound to.
    statement_parse: u64,
    pub result_formats: Vec<i16>,
    /// The answer to a Describe of the portal itself (its result formats
    /// applied): a RowDescription body, or `None` for NoData.
    pub description: Option<Option<Bytes>>,
    /// The shape of its rows, once the masker made it (see
    /// [`ConnectionState::portal_description`]); `None` inside: no rows.
    pub shape: Option<Option<RowShape>>,
}

/// Where a portal's row description comes from.
pub enum PortalDescription<'a> {
    /// A Describe of the portal: its result formats are applied.
    Own(Option<&'a Bytes>),
    /// A Describe of the very statement it was bound to: every column in
    /// text format; the portal's result formats still apply.
    Statement(Option<&'a Bytes>),
}

/// A request sent to the server whose response has not fully arrived. The
/// front of the queue is what the next server message answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Query(Instant),
    Parse {
        name: Vec<u8>,
    },
    Bind {
        portal: Vec<u8>,
        statement: Vec<u8>,
        result_formats: Vec<i16>,
    },
    Describe {
        kind: u8,
        name: Vec<u8>,
        origin: DescribeOrigin,
    },
    Execute {
        portal: Vec<u8>,
    },
    Close {
        kind: u8,
        name: Vec<u8>,
    },
    Sync(Instant),
    /// `binary`: the call asked for its result in binary format.
    FunctionCall {
        started: Instant,
        binary: bool,
    },
}

/// Who sent a Describe, and so who its answer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescribeOrigin {
    Client,
    /// Sent by the gateway before an Execute whose row description it did
    /// not know; the answer is for the inspector only.
    Gateway,
    /// Sent instead of a refused request: a Describe of a statement that
    /// does not exist, so the server fails (and aborts a transaction, skips
    /// to Sync) exactly as if the refused statement had failed there, without
    /// anything of it reaching the server. Its answer is replaced by this
    /// ErrorResponse frame.
    Refusal(Bytes),
    /// Sent to fail the server's transaction the way a refusal answered by
    /// the gateway alone failed it for the client (see
    /// [`ConnectionState::failed_here`]): its answer is for nobody.
    FailTransaction,
}

impl Pending {
    /// Requests answered by ReadyForQuery.
    fn ends_with_ready(&self) -> Option<Instant> {
        match self {
            Pending::Query(t) | Pending::Sync(t) | Pending::FunctionCall { started: t, .. } => {
                Some(*t)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct ConnectionState {
    pub statements: HashMap<Vec<u8>, PreparedStatement>,
    pub portals: HashMap<Vec<u8>, Portal>,
    /// From the last ReadyForQuery: b'I' idle, b'T' in a transaction, b'E' failed.
    pub transaction_status: u8,
    /// RowDescription of the simple-query result currently streaming.
    pub simple_row_description: Option<Bytes>,
    /// Its shape, once the masker made it.
    pub simple_shape: Option<RowShape>,
    /// Counts ParseCompletes (see [`PreparedStatement::parse`]).
    parses: u64,
    /// After a refused extended-protocol message: client messages are
    /// dropped until the next Sync (as the server would skip them after an
    /// error), so nothing of the refused statement reaches the server.
    pub discarding_until_sync: bool,
    /// The Sync that ends the discarding is answered by the gateway with a
    /// ReadyForQuery of this status instead of being forwarded: the refusal
    /// was answered without the server (see [`ConnectionState::at_sync_point`]).
    pub sync_answered_here: Option<u8>,
    /// No extended-protocol message has been sent since the last Sync (or
    /// Query, FunctionCall): with nothing pending either, the server has no
    /// work of the client's open, so a refusal there can be answered by the
    /// gateway alone without changing what the statements around it do.
    pub at_sync_point: bool,
    /// A refusal answered by the gateway alone failed the client's
    /// transaction block: the client was told its transaction failed
    /// (ReadyForQuery `E`) while the server's is still healthy. Until the
    /// client ends the block, the gateway answers as PostgreSQL answers in a
    /// failed transaction (the relay's `in_failed_transaction`).
    pub failed_here: bool,
    pending: VecDeque<Entry>,
    /// Id of the next request queued (ids only grow).
    next_id: u64,
}

/// A queued request: its id (the relay ties audit records to it) and
/// whether the gateway sent it on its own (its Parse/Bind/CloseComplete
/// answer is for the gateway, not the client).
#[derive(Debug)]
struct Entry {
    id: u64,
    pending: Pending,
    silent: bool,
}

/// What a client frame started, for metrics and tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Statement,
    Nothing,
}

impl ConnectionState {
    pub fn new() -> ConnectionState {
        ConnectionState {
            transaction_status: b'I',
            at_sync_point: true,
            ..Default::default()
        }
    }

    /// No request is waiting for a response.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The request the next server message answers.
    pub fn front(&self) -> Option<&Pending> {
        self.pending.front().map(|e| &e.pending)
    }

    /// Id of the request the next server message answers.
    pub fn front_id(&self) -> Option<u64> {
        self.pending.front().map(|e| e.id)
    }

    /// Id the last queued request got.
    pub fn last_id(&self) -> Option<u64> {
        self.pending.back().map(|e| e.id)
    }

    /// Whether the request the next server message answers was sent by the
    /// gateway on its own (see [`ConnectionState::mark_last_silent`]).
    pub fn front_is_silent(&self) -> bool {
        self.pending.front().is_some_and(|e| e.silent)
    }

    /// Marks the request just queued as the gateway's own: its completion
    /// message is not for the client.
    pub fn mark_last_silent(&mut self) {
        if let Some(e) = self.pending.back_mut() {
            e.silent = true;
        }
    }

    /// Id of the first queued request answered by ReadyForQuery: after an
    /// error, the server skips every extended-protocol request before it.
    pub fn next_ready_id(&self) -> Option<u64> {
        self.pending
            .iter()
            .find(|e| e.pending.ends_with_ready().is_some())
            .map(|e| e.id)
    }

    fn push(&mut self, pending: Pending) {
        self.pending.push_back(Entry {
            id: self.next_id,
            pending,
            silent: false,
        });
        self.next_id += 1;
    }

    /// Records a Describe the gateway sent itself (see [`DescribeOrigin`]).
    pub fn on_gateway_describe(&mut self, kind: u8, name: Vec<u8>, origin: DescribeOrigin) {
        self.push(Pending::Describe { kind, name, origin });
    }

    pub fn on_client_frame(&mut self, frame: &Frame, now: Instant) -> Started {
        let body = frame.body();
        match frame.tag() {
            b'Q' | b'S' | b'F' => self.at_sync_point = true,
            b'P' | b'B' | b'D' | b'E' | b'C' => self.at_sync_point = false,
            _ => {}
        }
        match frame.tag() {
            b'Q' => {
                self.statements.remove(&b""[..]);
                self.portals.remove(&b""[..]);
                self.simple_row_description = None;
                self.simple_shape = None;
                self.push(Pending::Query(now));
                return Started::Statement;
            }
            b'P' => {
                let name = take_cstr(body).map(|(n, _)| n.to_vec()).unwrap_or_default();
                self.push(Pending::Parse { name });
            }
            b'B' => {
                let pending = match parse_bind(body) {
                    Some(portal) => Pending::Bind {
                        portal: portal.portal,
                        statement: portal.statement,
                        result_formats: portal.result_formats,
                    },
                    None => Pending::Bind {
                        portal: Vec::new(),
                        statement: Vec::new(),
                        result_formats: Vec::new(),
                    },
                };
                self.push(pending);
            }
            b'D' => {
                if let Some((&kind, rest)) = body.split_first() {
                    let name = take_cstr(rest).map(|(n, _)| n.to_vec()).unwrap_or_default();
                    self.push(Pending::Describe {
                        kind,
                        name,
                        origin: DescribeOrigin::Client,
                    });
                }
            }
            b'E' => {
                let portal = take_cstr(body).map(|(n, _)| n.to_vec()).unwrap_or_default();
                self.push(Pending::Execute { portal });
                return Started::Statement;
            }
            b'C' => {
                let (kind, name) = body
                    .split_first()
                    .and_then(|(&kind, rest)| Some((kind, take_cstr(rest)?.0.to_vec())))
                    .unwrap_or_default();
                self.push(Pending::Close { kind, name });
            }
            b'S' => self.push(Pending::Sync(now)),
            b'F' => {
                self.push(Pending::FunctionCall {
                    started: now,
                    // Unreadable: the server refuses it; treated as binary,
                    // the stricter reading of whatever comes back.
                    binary: function_result_format(body).is_none_or(|format| format != 0),
                });
                return Started::Statement;
            }
            _ => {}
        }
        Started::Nothing
    }

    /// Updates the state from a server frame; returns the duration of a
    /// request that just completed (ReadyForQuery).
    pub fn on_server_frame(&mut self, frame: &Frame, now: Instant) -> Option<Duration> {
        match frame.tag() {
            b'Z' => {
                self.transaction_status = frame.body().first().copied().unwrap_or(b'I');
                if self.transaction_status == b'I' {
                    self.portals.clear();
                }
                self.simple_row_description = None;
                self.simple_shape = None;
                while let Some(e) = self.pending.pop_front() {
                    if let Some(started) = e.pending.ends_with_ready() {
                        return Some(now.saturating_duration_since(started));
                    }
                }
            }
            b'1' | b'2' | b'3' => match self.pending.pop_front().map(|e| e.pending) {
                Some(Pending::Parse { name }) => {
                    self.parses += 1;
                    self.statements.insert(
                        name,
                        PreparedStatement {
                            parse: self.parses,
                            description: None,
                        },
                    );
                }
                Some(Pending::Bind {
                    portal,
                    statement,
                    result_formats,
                }) => {
                    let statement_parse = self.statements.get(&statement).map_or(0, |s| s.parse);
                    self.portals.insert(
                        portal,
                        Portal {
                            statement,
                            statement_parse,
                            result_formats,
                            description: None,
                            shape: None,
                        },
                    );
                }
                Some(Pending::Close { kind: b'S', name }) => {
                    self.statements.remove(&name);
                }
                Some(Pending::Close { kind: b'P', name }) => {
                    self.portals.remove(&name);
                }
                _ => {}
            },
            b'T' | b'n' => {
                let description =
                    (frame.tag() == b'T').then(|| Bytes::copy_from_slice(frame.body()));
                match self.pending.front().map(|e| &e.pending) {
                    Some(Pending::Describe { kind, name, .. }) => {
                        match kind {
                            b'S' => {
                                if let Some(s) = self.statements.get_mut(name) {
                                    s.description = Some(description);
                                }
                            }
                            _ => {
                                // A cursor declared in SQL is a portal no
                                // Bind made: its description is all there is.
                                let p = self.portals.entry(name.clone()).or_default();
                                p.description = Some(description);
                                p.shape = None;
                            }
                        }
                        self.pending.pop_front();
                    }
                    // A Query's result set (and whatever else streams rows
                    // with a description of their own).
                    _ => {
                        self.simple_row_description = description;
                        self.simple_shape = None;
                    }
                }
            }
            b'C' | b's' | b'I' if matches!(self.front(), Some(Pending::Execute { .. })) => {
                self.pending.pop_front();
            }
            b'E' => {
                // Extended protocol: the server skips everything up to Sync.
                while let Some(front) = self.pending.front() {
                    if front.pending.ends_with_ready().is_some() {
                        break;
                    }
                    self.pending.pop_front();
                }
            }
            _ => {}
        }
        None
    }

    /// Where the description of `portal`'s rows comes from (`None`: not
    /// known — neither the portal nor the statement it was bound to was
    /// described).
    pub fn portal_description(&self, portal: &[u8]) -> Option<PortalDescription<'_>> {
        described(self.portals.get(portal)?, &self.statements)
    }

    /// The shape of the rows the request at the front (an Execute) is
    /// returning: made once with `make` from the portal's description (see
    /// [`ConnectionState::portal_description`]) and its result formats,
    /// then kept with the portal. `None`: not an Execute, or its rows'
    /// description is not known. Called for every DataRow: one lookup once
    /// the shape is made.
    pub fn execute_shape<E>(
        &mut self,
        make: impl FnOnce(PortalDescription<'_>, &[i16]) -> Result<Option<RowShape>, E>,
    ) -> Result<Option<&RowShape>, E> {
        let Some(Entry {
            pending: Pending::Execute { portal },
            ..
        }) = self.pending.front()
        else {
            return Ok(None);
        };
        let Some(p) = self.portals.get_mut(portal) else {
            return Ok(None);
        };
        if p.shape.is_none() {
            let Some(description) = described(p, &self.statements) else {
                return Ok(None);
            };
            let shape = make(description, &p.result_formats)?;
            p.shape = Some(shape);
        }
        Ok(p.shape.as_ref().and_then(Option::as_ref))
    }

    /// The row description that applies to DataRows of `portal` (its
    /// column names; the formats may be the statement's).
    pub fn portal_row_description(&self, portal: &[u8]) -> Option<&Bytes> {
        match self.portal_description(portal)? {
            PortalDescription::Own(description) | PortalDescription::Statement(description) => {
                description
            }
        }
    }
}

/// Where `portal`'s row description comes from: its own Describe, else
/// that of the very statement it was bound to.
fn described<'a>(
    portal: &'a Portal,
    statements: &'a HashMap<Vec<u8>, PreparedStatement>,
) -> Option<PortalDescription<'a>> {
    if let Some(own) = &portal.description {
        return Some(PortalDescription::Own(own.as_ref()));
    }
    let statement = statements
        .get(&portal.statement)
        .filter(|s| s.parse == portal.statement_parse)?;
    Some(PortalDescription::Statement(
        statement.description.as_ref()?.as_ref(),
    ))
}

struct BindParts {
    portal: Vec<u8>,
    statement: Vec<u8>,
    result_formats: Vec<i16>,
}

/// Skips a count and that many format codes (Bind, FunctionCall).
fn skip_formats(body: &[u8]) -> Option<&[u8]> {
    let (count, rest) = take_i16(body)?;
    rest.get(2 * usize::try_from(count).unwrap_or(0)..)
}

/// Skips a count and that many length-prefixed values, -1 for NULL (Bind
/// parameters, FunctionCall arguments).
fn skip_values(body: &[u8]) -> Option<&[u8]> {
    let (count, mut rest) = take_i16(body)?;
    for _ in 0..count.max(0) {
        let (len, tail) = take_i32(rest)?;
        rest = tail.get(usize::try_from(len).unwrap_or(0)..)?;
    }
    Some(rest)
}

/// The result format a FunctionCall asks for: after the function's OID, its
/// argument formats and its arguments.
fn function_result_format(body: &[u8]) -> Option<i16> {
    let (_, rest) = take_i32(body)?;
    let rest = skip_values(skip_formats(rest)?)?;
    let (format, rest) = take_i16(rest)?;
    rest.is_empty().then_some(format)
}

fn parse_bind(body: &[u8]) -> Option<BindParts> {
    let (portal, rest) = take_cstr(body)?;
    let (statement, rest) = take_cstr(rest)?;
    // Parameter formats and parameters, then the result formats.
    let rest = skip_values(skip_formats(rest)?)?;
    let (n_results, mut rest) = take_i16(rest)?;
    let mut result_formats = Vec::with_capacity(n_results.max(0) as usize);
    for _ in 0..n_results.max(0) {
        let (format, tail) = take_i16(rest)?;
        result_formats.push(format);
        rest = tail;
    }
    Some(BindParts {
        portal: portal.to_vec(),
        statement: statement.to_vec(),
        result_formats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        crate::protocol::split_frame(&mut b, 1 << 20)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn describe_results_attach_to_statements_and_portals() {
        let mut s = ConnectionState::new();
        let now = Instant::now();
        s.on_client_frame(&frame(b'P', b"s1\0select 1\0\0\0"), now);
        s.on_client_frame(&frame(b'D', b"Ss1\0"), now);
        s.on_client_frame(&frame(b'B', b"p1\0s1\0\0\0\0\0\0\x01\0\x01"), now);
        s.on_client_frame(&frame(b'E', b"p1\0\0\0\0\0"), now);
        s.on_client_frame(&frame(b'S', b""), now);
        assert!(!s.is_idle());
        s.on_server_frame(&frame(b'1', b""), now);
        s.on_server_frame(&frame(b't', b"\0\0"), now);
        s.on_server_frame(&frame(b'T', b"rowdesc"), now);
        assert_eq!(
            s.statements[&b"s1"[..]]
                .description
                .as_ref()
                .and_then(|d| d.as_deref()),
            Some(&b"rowdesc"[..])
        );
        s.on_server_frame(&frame(b'2', b""), now);
        assert_eq!(
            s.portals[&b"p1"[..]].statement,
            b"s1".to_vec(),
            "the portal knows its statement"
        );
        assert_eq!(
            s.portal_row_description(b"p1").map(|b| &b[..]),
            Some(&b"rowdesc"[..])
        );
        s.on_server_frame(&frame(b'C', b"SELECT 1\0"), now);
        assert!(s.on_server_frame(&frame(b'Z', b"I"), now).is_some());
        assert!(s.is_idle());
    }

    #[test]
    fn a_portal_keeps_the_statement_it_was_bound_to() {
        let mut s = ConnectionState::new();
        let now = Instant::now();
        // Described, bound, then replaced by another Parse of the unnamed
        // statement, described too.
        for (t, b) in [
            (b'P', &b"\0select card\0\0\0"[..]),
            (b'D', b"S\0"),
            (b'B', b"p\0\0\0\0\0\0\0\0"),
            (b'P', b"\0select 1\0\0\0"),
            (b'D', b"S\0"),
            (b'S', b""),
        ] {
            s.on_client_frame(&frame(t, b), now);
        }
        for (t, b) in [
            (b'1', &b""[..]),
            (b't', b"\0\0"),
            (b'T', b"card"),
            (b'2', b""),
            (b'1', b""),
            (b't', b"\0\0"),
            (b'T', b"one"),
            (b'Z', b"T"),
        ] {
            s.on_server_frame(&frame(t, b), now);
        }
        assert!(
            s.portal_description(b"p").is_none(),
            "p's statement is gone: only a Describe of p itself describes its rows"
        );
        assert_eq!(
            s.statements[&b""[..]]
                .description
                .as_ref()
                .and_then(|d| d.as_deref()),
            Some(&b"one"[..])
        );
        // Bound after the Describe it was bound with: that one applies.
        s.on_client_frame(&frame(b'B', b"q\0\0\0\0\0\0\0\0"), now);
        s.on_server_frame(&frame(b'2', b""), now);
        assert!(matches!(
            s.portal_description(b"q"),
            Some(PortalDescription::Statement(Some(d))) if &d[..] == b"one"
        ));
    }

    #[test]
    fn an_error_skips_to_the_next_sync() {
        let mut s = ConnectionState::new();
        let now = Instant::now();
        for (t, b) in [
            (b'P', &b"\0bad\0\0\0"[..]),
            (b'B', b"\0\0\0\0\0\0\0\0"),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
            (b'Q', b"select 1\0"),
        ] {
            s.on_client_frame(&frame(t, b), now);
        }
        s.on_server_frame(&frame(b'E', b"SERROR\0\0"), now);
        s.on_server_frame(&frame(b'Z', b"I"), now);
        assert!(!s.is_idle(), "the simple query is still pending");
        s.on_server_frame(&frame(b'Z', b"I"), now);
        assert!(s.is_idle());
    }
}
