//! Per-connection protocol state, kept from the frames the relay sees:
//! prepared statements and portals with their row descriptions (an Execute
//! does not resend RowDescription, so whoever inspects DataRows later needs
//! them), the transaction status, and the queue of requests still awaiting
//! their responses (so pipelining, errors-until-Sync and idleness are known).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{take_cstr, take_i16, take_i32, Frame};

#[derive(Debug, Clone, Default)]
pub struct PreparedStatement {
    /// RowDescription body, once a Describe of the statement returned one.
    pub row_description: Option<Bytes>,
}

#[derive(Debug, Clone, Default)]
pub struct Portal {
    pub statement: Vec<u8>,
    pub row_description: Option<Bytes>,
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
    Close,
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
                self.push(Pending::Query(now));
                return Started::Statement;
            }
            b'P' => {
                let mut parsed = Vec::new();
                if let Some((name, _)) = take_cstr(body) {
                    self.statements
                        .insert(name.to_vec(), PreparedStatement::default());
                    parsed = name.to_vec();
                }
                self.push(Pending::Parse { name: parsed });
            }
            b'B' => {
                let pending = match parse_bind(body) {
                    Some(portal) => {
                        let row_description = self
                            .statements
                            .get(&portal.statement)
                            .and_then(|s| s.row_description.clone());
                        let pending = Pending::Bind {
                            portal: portal.portal.clone(),
                            statement: portal.statement.clone(),
                            result_formats: portal.result_formats.clone(),
                        };
                        let (name, mut portal) = portal.into_parts();
                        portal.row_description = row_description;
                        self.portals.insert(name, portal);
                        pending
                    }
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
                if let Some((&kind, rest)) = body.split_first() {
                    if let Some((name, _)) = take_cstr(rest) {
                        match kind {
                            b'S' => {
                                self.statements.remove(name);
                            }
                            b'P' => {
                                self.portals.remove(name);
                            }
                            _ => {}
                        }
                    }
                }
                self.push(Pending::Close);
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
                while let Some(e) = self.pending.pop_front() {
                    if let Some(started) = e.pending.ends_with_ready() {
                        return Some(now.saturating_duration_since(started));
                    }
                }
            }
            b'1' | b'2' | b'3' => {
                self.pending.pop_front();
            }
            b'T' | b'n' => {
                let description =
                    (frame.tag() == b'T').then(|| Bytes::copy_from_slice(frame.body()));
                match self.pending.front().map(|e| &e.pending) {
                    Some(Pending::Describe { kind, name, .. }) => {
                        match kind {
                            b'S' => {
                                if let Some(s) = self.statements.get_mut(name) {
                                    s.row_description = description;
                                }
                            }
                            _ => {
                                if let Some(p) = self.portals.get_mut(name) {
                                    p.row_description = description;
                                }
                            }
                        }
                        self.pending.pop_front();
                    }
                    Some(Pending::Query(_)) => self.simple_row_description = description,
                    _ => {}
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

    /// The row description that applies to DataRows of `portal`.
    pub fn portal_row_description(&self, portal: &[u8]) -> Option<&Bytes> {
        let p = self.portals.get(portal)?;
        p.row_description.as_ref().or_else(|| {
            self.statements
                .get(&p.statement)
                .and_then(|s| s.row_description.as_ref())
        })
    }
}

struct BindParts {
    portal: Vec<u8>,
    statement: Vec<u8>,
    result_formats: Vec<i16>,
}

impl BindParts {
    fn into_parts(self) -> (Vec<u8>, Portal) {
        (
            self.portal,
            Portal {
                statement: self.statement,
                row_description: None,
            },
        )
    }
}

/// The result format a FunctionCall asks for: after the function's OID, its
/// argument formats and its arguments.
fn function_result_format(body: &[u8]) -> Option<i16> {
    let (_, rest) = take_i32(body)?;
    let (n_formats, mut rest) = take_i16(rest)?;
    for _ in 0..n_formats.max(0) {
        rest = take_i16(rest)?.1;
    }
    let (n_args, mut rest) = take_i16(rest)?;
    for _ in 0..n_args.max(0) {
        let (len, tail) = take_i32(rest)?;
        rest = if len > 0 {
            tail.get(len as usize..)?
        } else {
            tail
        };
    }
    let (format, rest) = take_i16(rest)?;
    rest.is_empty().then_some(format)
}

fn parse_bind(body: &[u8]) -> Option<BindParts> {
    let (portal, rest) = take_cstr(body)?;
    let (statement, rest) = take_cstr(rest)?;
    let (n_formats, mut rest) = take_i16(rest)?;
    for _ in 0..n_formats.max(0) {
        rest = take_i16(rest)?.1;
    }
    let (n_params, mut rest2) = take_i16(rest)?;
    for _ in 0..n_params.max(0) {
        let (len, tail) = take_i32(rest2)?;
        rest2 = if len > 0 {
            tail.get(len as usize..)?
        } else {
            tail
        };
    }
    let (n_results, mut rest3) = take_i16(rest2)?;
    let mut result_formats = Vec::with_capacity(n_results.max(0) as usize);
    for _ in 0..n_results.max(0) {
        let (f, tail) = take_i16(rest3)?;
        result_formats.push(f);
        rest3 = tail;
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
            s.statements[&b"s1"[..]].row_description.as_deref(),
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
