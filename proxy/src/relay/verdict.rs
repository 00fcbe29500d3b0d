//! What the relay does with one frame, as the inspector decides: one type
//! per direction, since only a client's message can be a statement, be
//! held back, or be refused.

use bytes::BytesMut;

use super::gate::StatementInfo;
use crate::protocol::Frame;

/// A client frame's fate. The relay forwards unless told otherwise.
#[derive(Debug)]
pub(crate) enum ClientVerdict {
    Forward,
    /// Hold this message back with the statement it prepares (a Parse or
    /// Bind of a statement that goes to review). The relay keeps it, and
    /// every message after it, until the Execute is admitted, or sends them
    /// on at a Sync or Flush without one.
    Defer,
    /// Query, Execute (and refused Parse or FunctionCall): a statement. It
    /// goes through the [`super::gate::Gate`] (audit record, review hold)
    /// and runs only if admitted. Every refusal takes this way, so none
    /// goes unrecorded. A refused request never reaches the server: the
    /// client gets the error in order with the answers to its earlier
    /// requests, then ReadyForQuery with the real transaction status (a
    /// refusal inside a transaction aborts it, as any error would); after
    /// an extended-protocol message the relay discards the client's
    /// messages until Sync.
    Statement(Box<StatementInfo>),
}

/// A server frame's fate: a server message is never refused, only passed
/// on, rewritten (masked) or dropped.
#[derive(Debug)]
pub(crate) enum ServerVerdict {
    Forward,
    /// Send these bytes (one or more complete frames) instead.
    Replace(BytesMut),
    Drop,
}

impl ServerVerdict {
    /// What the client receives for `frame`, if anything.
    pub(crate) fn sent<'a>(&'a self, frame: &'a Frame) -> Option<&'a [u8]> {
        match self {
            ServerVerdict::Forward => Some(frame.as_bytes()),
            ServerVerdict::Replace(bytes) => Some(bytes),
            ServerVerdict::Drop => None,
        }
    }

    /// Appends what the client receives for `frame` to `out`; a frame
    /// passed on as it is, without copying it (see [`Frame::forward`]).
    pub(crate) fn send(self, frame: Frame, out: &mut BytesMut) {
        match self {
            ServerVerdict::Forward => frame.forward(out),
            ServerVerdict::Replace(bytes) => out.unsplit(bytes),
            ServerVerdict::Drop => {}
        }
    }
}
