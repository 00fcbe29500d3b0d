//! What the server sends, read once from its frame, and every message the
//! gateway writes to a client itself (`put_*`).
//!
//! [`Backend::read`] checks only the fields the gateway reads; a server
//! message whose fields it cannot read is [`Malformed`], and the relay ends
//! the session rather than pass on what it could not inspect. Row and
//! COPY bodies are left to the masker, which reads them column by column.

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{ErrorResponse, NoticeResponse};
use pgwire::messages::Message;

use super::{take_cstr, Frame, Malformed};

/// The transaction status a ReadyForQuery reports.
pub(crate) const IDLE: u8 = b'I';
pub(crate) const IN_TRANSACTION: u8 = b'T';
pub(crate) const FAILED_TRANSACTION: u8 = b'E';

/// A server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend<'a> {
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    EmptyQueryResponse,
    ParameterDescription,
    /// The body, read by the masker's `RowShape`.
    RowDescription(&'a [u8]),
    /// The body, read by the masker.
    DataRow(&'a [u8]),
    CommandComplete {
        tag: &'a [u8],
    },
    /// `status`: [`IDLE`], [`IN_TRANSACTION`] or [`FAILED_TRANSACTION`].
    ReadyForQuery {
        status: u8,
    },
    /// The fields (see [`fields`]).
    ErrorResponse(&'a [u8]),
    NoticeResponse(&'a [u8]),
    ParameterStatus {
        name: &'a [u8],
        value: &'a [u8],
    },
    NotificationResponse(&'a [u8]),
    FunctionCallResponse(&'a [u8]),
    CopyInResponse {
        binary: bool,
    },
    CopyOutResponse {
        binary: bool,
    },
    CopyBothResponse {
        binary: bool,
    },
    CopyData(&'a [u8]),
    CopyDone,
    /// Login: the request or outcome, as its body.
    Authentication(&'a [u8]),
    /// BackendKeyData: the process id and secret a client cancels with.
    CancelKey(&'a [u8]),
    NegotiateProtocolVersion,
    /// A type this gateway does not know (it is passed on as it came).
    Other(u8),
}

impl<'a> Backend<'a> {
    pub(crate) fn read(frame: &'a Frame) -> Result<Backend<'a>, Malformed> {
        let body = frame.body();
        let bad = |message| Malformed { message };
        Ok(match frame.tag() {
            b'1' => Backend::ParseComplete,
            b'2' => Backend::BindComplete,
            b'3' => Backend::CloseComplete,
            b'n' => Backend::NoData,
            b's' => Backend::PortalSuspended,
            b'I' => Backend::EmptyQueryResponse,
            b't' => Backend::ParameterDescription,
            b'T' => Backend::RowDescription(body),
            b'D' => Backend::DataRow(body),
            b'C' => Backend::CommandComplete {
                tag: take_cstr(body).ok_or(bad("CommandComplete"))?.0,
            },
            b'Z' => match body {
                [status @ (IDLE | IN_TRANSACTION | FAILED_TRANSACTION)] => {
                    Backend::ReadyForQuery { status: *status }
                }
                _ => return Err(bad("ReadyForQuery")),
            },
            b'E' => Backend::ErrorResponse(body),
            b'N' => Backend::NoticeResponse(body),
            b'S' => {
                let (name, rest) = take_cstr(body).ok_or(bad("ParameterStatus"))?;
                let (value, _) = take_cstr(rest).ok_or(bad("ParameterStatus"))?;
                Backend::ParameterStatus { name, value }
            }
            b'A' => Backend::NotificationResponse(body),
            b'V' => Backend::FunctionCallResponse(body),
            b'G' | b'H' | b'W' => {
                let binary = match body.first() {
                    Some(0) => false,
                    Some(1) => true,
                    _ => return Err(bad("CopyResponse")),
                };
                match frame.tag() {
                    b'G' => Backend::CopyInResponse { binary },
                    b'H' => Backend::CopyOutResponse { binary },
                    _ => Backend::CopyBothResponse { binary },
                }
            }
            b'd' => Backend::CopyData(body),
            b'c' => Backend::CopyDone,
            b'R' => Backend::Authentication(body),
            b'K' => Backend::CancelKey(body),
            b'v' => Backend::NegotiateProtocolVersion,
            other => Backend::Other(other),
        })
    }

    /// The messages that end an Execute's answer (before ReadyForQuery).
    pub(crate) fn ends_execute(&self) -> bool {
        matches!(
            self,
            Backend::CommandComplete { .. }
                | Backend::PortalSuspended
                | Backend::EmptyQueryResponse
        )
    }
}

/// The fields of an ErrorResponse/NoticeResponse body, as raw bytes per code.
pub(crate) fn fields(body: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        match take_cstr(tail) {
            Some((value, tail)) => {
                out.push((code, value));
                rest = tail;
            }
            None => break,
        }
    }
    out
}

/// SQLSTATE and message of an ErrorResponse body, lossily decoded for logs
/// and records.
pub(crate) fn error_summary(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for (field, value) in fields(body) {
        match field {
            b'C' => code = String::from_utf8_lossy(value).into_owned(),
            b'M' => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// Severity of a message the gateway itself sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An ErrorResponse or NoticeResponse the gateway writes: severity (both
/// the localized and the fixed field), SQLSTATE, message, and a cursor
/// position when the error is about a place in the statement.
pub(crate) fn put_report(
    out: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    position: Option<usize>,
) {
    let mut fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    if let Some(position) = position {
        fields.push((b'P', position.to_string()));
    }
    // Encoding into a BytesMut only fails for over-long messages, which
    // ours are not; the fallback is still a well-formed message.
    let encoded = if severity == "NOTICE" {
        NoticeResponse::new(fields).encode(out)
    } else {
        ErrorResponse::new(fields).encode(out)
    };
    if encoded.is_err() {
        let tag = if severity == "NOTICE" { b'N' } else { b'E' };
        out.put_slice(&[tag, 0, 0, 0, 5, 0]);
    }
}

/// Appends an ErrorResponse the client will show as `SEVERITY: message`.
pub(crate) fn put_error(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    put_report(out, severity.as_str(), code, message, None);
}

/// [`put_report`] of a message in the client `encoding` (as the server
/// reports it), where it is not UTF-8: written field by field, since
/// pgwire's fields are UTF-8 strings.
pub(crate) fn put_report_in(
    out: &mut BytesMut,
    encoding: &str,
    severity: &str,
    code: &str,
    message: &str,
    position: Option<usize>,
) {
    let encoded = crate::encoding::encode(encoding, message);
    if encoded.as_ref() == message.as_bytes() {
        return put_report(out, severity, code, message, position);
    }
    let position = position.map(|p| p.to_string());
    let mut body = Vec::with_capacity(encoded.len() + 32);
    let fields: [(u8, Option<&[u8]>); 5] = [
        (b'S', Some(severity.as_bytes())),
        (b'V', Some(severity.as_bytes())),
        (b'C', Some(code.as_bytes())),
        (b'M', Some(&encoded)),
        (b'P', position.as_deref().map(str::as_bytes)),
    ];
    for (field, value) in fields {
        if let Some(value) = value {
            body.push(field);
            // A field is a C string.
            body.extend(value.iter().map(|&b| if b == 0 { b'?' } else { b }));
            body.push(0);
        }
    }
    body.push(0);
    put_message(out, if severity == "NOTICE" { b'N' } else { b'E' }, &body);
}

/// Appends a message of type `tag` around `body`.
pub(crate) fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(body.len() + 5);
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(body);
}

/// ReadyForQuery with this transaction status.
pub(crate) fn put_ready_for_query(out: &mut BytesMut, status: u8) {
    put_message(out, b'Z', &[status]);
}

pub(crate) fn put_empty_query_response(out: &mut BytesMut) {
    put_message(out, b'I', &[]);
}

/// A DataRow with this body (a masked one, in place of the server's).
pub(crate) fn put_data_row(out: &mut BytesMut, body: &[u8]) {
    put_message(out, b'D', body);
}

pub(crate) fn put_copy_data(out: &mut BytesMut, data: &[u8]) {
    put_message(out, b'd', data);
}

/// A FunctionCallResponse with this body (a masked one).
pub(crate) fn put_function_call_response(out: &mut BytesMut, body: &[u8]) {
    put_message(out, b'V', body);
}

/// An ErrorResponse with these fields (the server's, masked).
pub(crate) fn put_error_response(out: &mut BytesMut, fields: &[u8]) {
    put_message(out, b'E', fields);
}

/// A NoticeResponse with these fields (the server's, masked).
pub(crate) fn put_notice_response(out: &mut BytesMut, fields: &[u8]) {
    put_message(out, b'N', fields);
}

/// A NotificationResponse with this body (the server's, masked).
pub(crate) fn put_notification_response(out: &mut BytesMut, body: &[u8]) {
    put_message(out, b'A', body);
}

/// A ParameterStatus report.
pub(crate) fn put_parameter_status(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 7);
    out.put_u8(b'S');
    out.put_u32((name.len() + value.len() + 6) as u32);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(value);
    out.put_u8(0);
}

/// AuthenticationOk.
pub(crate) fn put_authentication_ok(out: &mut BytesMut) {
    put_message(out, b'R', &0i32.to_be_bytes());
}

/// AuthenticationCleartextPassword: the gateway asks for the token.
pub(crate) fn put_cleartext_password_request(out: &mut BytesMut) {
    put_message(out, b'R', &3i32.to_be_bytes());
}

/// BackendKeyData: the process id and secret a client cancels with.
pub(crate) fn put_backend_key_data(out: &mut BytesMut, pid: i32, secret: &[u8]) {
    out.reserve(secret.len() + 9);
    out.put_u8(b'K');
    out.put_u32(secret.len() as u32 + 8);
    out.put_i32(pid);
    out.put_slice(secret);
}

/// NegotiateProtocolVersion: the gateway speaks 3.0 and none of the
/// `_pq_.` options it was offered.
pub(crate) fn put_negotiate_protocol_version(out: &mut BytesMut, unsupported: &[String]) {
    let mut body = BytesMut::new();
    body.put_i32(0);
    body.put_i32(unsupported.len() as i32);
    for option in unsupported {
        body.put_slice(option.as_bytes());
        body.put_u8(0);
    }
    put_message(out, b'v', &body);
}

#[cfg(test)]
mod tests {
    use super::super::split_frame;
    use super::*;

    fn frames(mut bytes: BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = split_frame(&mut bytes, usize::MAX).unwrap() {
            out.push(frame);
        }
        assert!(bytes.is_empty(), "whole frames only");
        out
    }

    #[test]
    fn what_the_gateway_writes_reads_back() {
        let mut out = BytesMut::new();
        put_ready_for_query(&mut out, IN_TRANSACTION);
        put_message(&mut out, b'C', b"ROLLBACK\0");
        put_parameter_status(&mut out, b"application_name", b"psql");
        put_empty_query_response(&mut out);
        put_error(&mut out, Severity::Error, "42501", "no");
        put_report(&mut out, "ERROR", "42601", "syntax", Some(8));
        put_authentication_ok(&mut out);
        let frames = frames(out);
        let read: Vec<Backend<'_>> = frames.iter().map(|f| Backend::read(f).unwrap()).collect();
        assert_eq!(
            read[..4],
            [
                Backend::ReadyForQuery {
                    status: IN_TRANSACTION
                },
                Backend::CommandComplete { tag: b"ROLLBACK" },
                Backend::ParameterStatus {
                    name: b"application_name",
                    value: b"psql"
                },
                Backend::EmptyQueryResponse,
            ]
        );
        let Backend::ErrorResponse(body) = read[4] else {
            panic!("not an error: {:?}", read[4])
        };
        assert_eq!(error_summary(body), ("42501".into(), "no".into()));
        let Backend::ErrorResponse(body) = read[5] else {
            panic!("not an error")
        };
        assert!(fields(body).contains(&(b'P', &b"8"[..])));
        assert_eq!(read[6], Backend::Authentication(&[0, 0, 0, 0]));
    }

    #[test]
    fn unreadable_server_messages_are_malformed() {
        let mut out = BytesMut::new();
        put_message(&mut out, b'Z', b"X");
        put_message(&mut out, b'Z', b"");
        put_message(&mut out, b'C', b"SELECT 1");
        put_message(&mut out, b'H', b"");
        for frame in frames(out) {
            assert!(Backend::read(&frame).is_err(), "{frame:?}");
        }
    }
}
