//! A refusal: the one way the gateway says no to a request.

use bytes::BytesMut;
use hoop_audit::StatementOutcome;

use crate::protocol::backend::put_report_in;

/// A request the gateway answers with an error in place of the server: a
/// rule's block, a denied, cancelled or expired review, an audit trail
/// that cannot take the record, a reviewer's replacement the rules refuse.
/// The gateway's counterpart to the extension's `HoopError`: the client
/// gets it as an ErrorResponse, the audit record as the statement's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub sqlstate: String,
    pub message: String,
    /// Where in the statement the error is (1-based characters), as the
    /// server reports a syntax error.
    pub position: Option<u32>,
    /// A syntax error of the gateway's copy of PostgreSQL's grammar: the
    /// server is asked to parse the text too, and its own error (which
    /// carries the DETAIL and HINT the copy does not give, and its own
    /// version's grammar) answers the client; this refusal answers only
    /// where the server's grammar accepts the text.
    pub syntax: bool,
}

impl Refusal {
    pub(crate) fn new(sqlstate: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            sqlstate: sqlstate.to_owned(),
            message: message.into(),
            position: None,
            syntax: false,
        }
    }

    pub(crate) fn at(self, position: Option<u32>) -> Refusal {
        Refusal { position, ..self }
    }

    /// See [`Refusal::syntax`].
    pub(crate) fn syntax_error(self) -> Refusal {
        Refusal {
            syntax: true,
            ..self
        }
    }

    /// Appends the ErrorResponse the client gets, in its `encoding` (as
    /// the server reports it).
    pub(crate) fn put(&self, out: &mut BytesMut, encoding: &str) {
        put_report_in(
            out,
            encoding,
            "ERROR",
            &self.sqlstate,
            &self.message,
            self.position.map(|p| p as usize),
        );
    }

    /// The ErrorResponse the client gets, on its own.
    pub(crate) fn frame(&self, encoding: &str) -> BytesMut {
        let mut out = BytesMut::new();
        self.put(&mut out, encoding);
        out
    }

    /// What the statement's record says of how it ended.
    pub(crate) fn outcome(&self) -> StatementOutcome {
        StatementOutcome {
            sqlstate: Some(self.sqlstate.clone()),
            message: Some(self.message.clone()),
            ..StatementOutcome::default()
        }
    }
}
