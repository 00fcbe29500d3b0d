//! Outcomes of recorded statements, gathered from the server's answers as
//! the client receives them (after masking): command tag, rows, error, and
//! the first result rows when the audit keeps them.

use std::collections::VecDeque;
use std::time::Instant;

use hoop_audit::{StatementHandle, StatementOutcome};

use super::state::ConnectionState;
use super::verdict::ServerVerdict;
use crate::protocol::backend::{fields, Backend};
use crate::protocol::{take_cstr, take_i16, take_i32, Frame};

/// A forwarded statement whose record awaits its outcome.
pub struct OpenStatement {
    /// The [`ConnectionState`] request id of its Query or Execute.
    pub request: u64,
    /// `None` while its record is still being written (a read that runs
    /// meanwhile): its outcome waits for it.
    pub handle: Option<StatementHandle>,
    pub started: Instant,
    outcome: StatementOutcome,
    returned: u64,
}

impl OpenStatement {
    pub fn new(request: u64, handle: Option<StatementHandle>, started: Instant) -> OpenStatement {
        OpenStatement {
            request,
            handle,
            started,
            outcome: StatementOutcome::default(),
            returned: 0,
        }
    }

    /// Closes the outcome: duration, and rows from the tag when it has them.
    /// `None` when the statement has no record to complete.
    pub fn finish(mut self, now: Instant) -> Option<(StatementHandle, StatementOutcome)> {
        self.outcome.duration_us = now.saturating_duration_since(self.started).as_micros() as u64;
        let from_tag = self
            .outcome
            .command_tag
            .as_deref()
            .and_then(|tag| tag.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        self.outcome.rows = match (from_tag, self.outcome.sqlstate.is_some()) {
            (Some(n), _) => Some(n),
            (None, false) => Some(self.returned),
            (None, true) => None,
        };
        Some((self.handle?, self.outcome))
    }

    /// The statement failed without being answered itself (an earlier
    /// message of its request failed, so the server skipped it).
    pub fn skipped(&mut self, code: String, message: String) {
        if self.outcome.sqlstate.is_none() && self.outcome.command_tag.is_none() {
            self.outcome.sqlstate = Some(code);
            self.outcome.message = Some(format!("not run: {message}"));
        }
    }
}

/// The statements whose outcomes are being gathered, in request order.
pub struct Recorder {
    open: VecDeque<OpenStatement>,
    /// Result rows kept per statement (0: none are decoded).
    record_rows: usize,
}

impl Recorder {
    pub fn new(record_rows: usize) -> Recorder {
        Recorder {
            open: VecDeque::new(),
            record_rows,
        }
    }

    /// Gathers the outcome of a statement just sent; one sent into a batch
    /// the server already failed is skipped without an answer.
    pub fn open(&mut self, mut statement: OpenStatement, state: &ConnectionState) {
        if let Some((code, message)) = state.skipped_by_server() {
            statement.skipped(code.to_owned(), message.to_owned());
        }
        self.open.push_back(statement);
    }

    /// The record of `request`'s statement is durable: its outcome can be
    /// completed (`None`: it has no record after all).
    pub fn attach(&mut self, request: u64, handle: Option<StatementHandle>) {
        match handle {
            Some(handle) => {
                if let Some(open) = self.open.iter_mut().find(|o| o.request == request) {
                    open.handle = Some(handle);
                }
            }
            None => self.open.retain(|o| o.request != request),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Looks at a server frame before the state moves on; `verdict` is what
    /// the client gets instead of it, if anything.
    pub fn observe(
        &mut self,
        state: &ConnectionState,
        message: &Backend<'_>,
        frame: &Frame,
        verdict: &ServerVerdict,
    ) {
        if self.open.is_empty() {
            return;
        }
        let sent = verdict.sent(frame);
        if let Backend::ErrorResponse(_) = message {
            // The error of the front request; every statement queued before
            // the next Sync is skipped by the server.
            let (code, message) = sent
                .and_then(first_body)
                .map(|body| error_in(body, state.reading.encoding()))
                .unwrap_or_else(|| ("XX000".to_owned(), "error not passed on".to_owned()));
            let Some(front) = state.front_id() else {
                return;
            };
            // Up to this request (or all that is queued, no Sync yet).
            let stops = state.error_skips_to();
            for open in self.open.iter_mut() {
                if open.request == front {
                    if open.outcome.sqlstate.is_none() {
                        open.outcome.sqlstate = Some(code.clone());
                        open.outcome.message = Some(message.clone());
                    }
                } else if open.request > front && stops.is_none_or(|stop| open.request < stop) {
                    open.skipped(code.clone(), message.clone());
                }
            }
            return;
        }
        let record_rows = self.record_rows;
        let Some(open) = self.open.front_mut() else {
            return;
        };
        if state.front_id() != Some(open.request) {
            return;
        }
        let outcome = &mut open.outcome;
        match message {
            Backend::RowDescription(body) if record_rows > 0 => {
                outcome.columns = column_names(body, state.reading.encoding())
            }
            Backend::DataRow(_) => {
                open.returned += 1;
                if outcome.result_rows.len() < record_rows {
                    if outcome.columns.is_empty() {
                        if let Some(description) = state.execute_row_description() {
                            outcome.columns = column_names(description, state.reading.encoding());
                        }
                    }
                    if let Some(body) = sent.and_then(first_body) {
                        outcome
                            .result_rows
                            .push(row_values(body, state.reading.encoding()));
                    }
                }
            }
            Backend::CommandComplete { tag } => {
                outcome.command_tag = Some(String::from_utf8_lossy(tag).into_owned());
            }
            Backend::EmptyQueryResponse => outcome.command_tag = Some("EMPTY QUERY".to_owned()),
            Backend::PortalSuspended => outcome.command_tag = Some("PORTAL SUSPENDED".to_owned()),
            _ => {}
        }
    }

    /// Statements whose request the server has finished answering.
    pub fn finished(
        &mut self,
        state: &ConnectionState,
        now: Instant,
    ) -> Vec<(StatementHandle, StatementOutcome)> {
        let mut done = Vec::new();
        while let Some(open) = self.open.front() {
            if state.front_id().is_some_and(|front| front <= open.request) {
                break;
            }
            // Answered, but its record is not durable yet: completed once
            // it is (see `attach`), in order.
            if open.handle.is_none() {
                break;
            }
            if let Some(finished) = self.open.pop_front().and_then(|open| open.finish(now)) {
                done.push(finished);
            }
        }
        done
    }

    /// Everything still open, when the relay ends.
    pub fn abandon(&mut self, now: Instant, why: &str) -> Vec<(StatementHandle, StatementOutcome)> {
        self.open
            .drain(..)
            .filter_map(|mut open| {
                if open.outcome.sqlstate.is_none() && open.outcome.command_tag.is_none() {
                    open.outcome.sqlstate = Some("08006".to_owned());
                    open.outcome.message = Some(why.to_owned());
                }
                open.finish(now)
            })
            .collect()
    }
}

/// The body of the first frame in `bytes` (a verdict may carry several).
pub fn first_body(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    bytes.get(5..1 + len)
}

/// Column names of a RowDescription body.
fn column_names(body: &[u8], encoding: &str) -> Vec<String> {
    let Some((count, mut rest)) = take_i16(body) else {
        return Vec::new();
    };
    let mut names = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        let Some((name, tail)) = take_cstr(rest) else {
            break;
        };
        names.push(text_in(name, encoding));
        // table oid, attnum, type oid, typlen, typmod, format
        rest = tail.get(18..).unwrap_or_default();
    }
    names
}

/// A DataRow's values as text. Values that are not printable text (binary
/// results) are described, not decoded.
fn row_values(body: &[u8], encoding: &str) -> Vec<Option<String>> {
    let Some((count, mut rest)) = take_i16(body) else {
        return Vec::new();
    };
    let mut values = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        let Some((len, tail)) = take_i32(rest) else {
            break;
        };
        if len < 0 {
            values.push(None);
            rest = tail;
            continue;
        }
        let Some(value) = tail.get(..len as usize) else {
            break;
        };
        rest = &tail[len as usize..];
        let printable = value
            .iter()
            .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'));
        values.push(Some(match crate::encoding::decode(encoding, value) {
            Ok(text) if printable => text.into_owned(),
            _ => format!("<binary, {} bytes>", value.len()),
        }));
    }
    values
}

/// Text the server sent in the client `encoding` (a name, an error's
/// message), as UTF-8 for the record.
fn text_in(bytes: &[u8], encoding: &str) -> String {
    crate::encoding::decode(encoding, bytes).map_or_else(
        |_| String::from_utf8_lossy(bytes).into_owned(),
        |text| text.into_owned(),
    )
}

/// An ErrorResponse's SQLSTATE and message, as the record keeps them.
fn error_in(body: &[u8], encoding: &str) -> (String, String) {
    let mut summary = (String::new(), String::new());
    for (field, value) in fields(body) {
        match field {
            b'C' => summary.0 = text_in(value, encoding),
            b'M' => summary.1 = text_in(value, encoding),
            _ => {}
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_columns_decode() {
        // RowDescription with two columns.
        let mut t = Vec::new();
        t.extend_from_slice(&2i16.to_be_bytes());
        for name in ["id", "pan"] {
            t.extend_from_slice(name.as_bytes());
            t.push(0);
            t.extend_from_slice(&[0u8; 18]);
        }
        assert_eq!(column_names(&t, "UTF8"), vec!["id", "pan"]);
        let mut d = Vec::new();
        d.extend_from_slice(&3i16.to_be_bytes());
        d.extend_from_slice(&1i32.to_be_bytes());
        d.extend_from_slice(b"7");
        d.extend_from_slice(&(-1i32).to_be_bytes());
        d.extend_from_slice(&8i32.to_be_bytes());
        d.extend_from_slice(&[0, 0x0e, 0x99, 0, 0, 1, 2, 3]);
        assert_eq!(
            row_values(&d, "UTF8"),
            vec![
                Some("7".to_owned()),
                None,
                Some("<binary, 8 bytes>".to_owned())
            ]
        );
        // Text in the client encoding is recorded as such.
        let mut d = Vec::new();
        d.extend_from_slice(&1i16.to_be_bytes());
        d.extend_from_slice(&5i32.to_be_bytes());
        d.extend_from_slice(b"caf\xe9\xa4");
        assert_eq!(row_values(&d, "LATIN9"), vec![Some("café€".to_owned())]);
        assert_eq!(
            row_values(&d, "UTF8"),
            vec![Some("<binary, 5 bytes>".to_owned())]
        );
        let mut e = Vec::new();
        for (field, value) in [(b'C', &b"42P01"[..]), (b'M', b"caf\xe9")] {
            e.push(field);
            e.extend_from_slice(value);
            e.push(0);
        }
        e.push(0);
        assert_eq!(
            error_in(&e, "LATIN1"),
            ("42P01".to_owned(), "café".to_owned())
        );
    }
}
