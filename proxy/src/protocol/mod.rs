//! PostgreSQL v3 framing: a type byte and a big-endian length, kept byte for
//! byte. Frames the gateway does not change are forwarded as they arrived.
//! Each frame is read once, as a [`frontend::Frontend`] or a
//! [`backend::Backend`] message whose fields borrow it; every message the
//! gateway writes has a named constructor there.

pub(crate) mod backend;
pub(crate) mod frontend;

use bytes::{Bytes, BytesMut};

/// A message whose layout PostgreSQL would refuse (or, from the server,
/// one whose fields the gateway cannot read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {message} message format")]
pub(crate) struct Malformed {
    /// The message's name, as PostgreSQL's errors spell it.
    pub message: &'static str,
}

/// Postgres refuses messages over 1 GB; so do we unless configured lower.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 0x3fff_ffff;
/// Postgres' own limit for startup packets (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_BYTES: usize = 10_000;

pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// One complete message: type byte, length and body, exactly as received.
/// It owns its part of the read buffer, split off without copying, so a
/// frame passed on unchanged goes back next to the frames read with it
/// (see [`Frame::forward`]).
#[derive(Debug)]
pub struct Frame {
    bytes: BytesMut,
}

impl Frame {
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends this frame to `out` as it is. When `out` is empty or ends
    /// where this frame begins in the read buffer (the frames before it
    /// were passed on too), nothing is copied: `out` takes the bytes over.
    pub fn forward(self, out: &mut BytesMut) {
        out.unsplit(self.bytes);
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Frame {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message of type {tag:?} declares length {len}, below the minimum of 4")]
    BadLength { tag: char, len: usize },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {max} bytes")]
    TooLarge { tag: char, len: usize, max: usize },
}

/// Splits one complete frame off the front of `buf`, or returns `None` when
/// more bytes are needed. Never allocates more than the read buffer already
/// holds plus a bounded read-ahead, so a forged length cannot make us reserve a
/// gigabyte up front.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: tag as char,
            len,
        });
    }
    if len > max_len {
        return Err(FrameError::TooLarge {
            tag: tag as char,
            len,
            max: max_len,
        });
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    Ok(Some(Frame {
        bytes: buf.split_to(len + 1),
    }))
}

/// Makes room for the next socket read: large frames grow the buffer in
/// steps rather than all at once.
pub fn reserve_for_read(buf: &mut BytesMut) {
    const STEP: usize = 64 * 1024;
    if buf.capacity() - buf.len() < STEP / 8 {
        buf.reserve(STEP);
    }
}

/// Reads a NUL-terminated string from the front of `input`, returning it and the rest.
pub fn take_cstr(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = input.iter().position(|&b| b == 0)?;
    Some((&input[..nul], &input[nul + 1..]))
}

pub fn take_i16(input: &[u8]) -> Option<(i16, &[u8])> {
    if input.len() < 2 {
        return None;
    }
    Some((i16::from_be_bytes([input[0], input[1]]), &input[2..]))
}

pub fn take_i32(input: &[u8]) -> Option<(i32, &[u8])> {
    if input.len() < 4 {
        return None;
    }
    Some((
        i32::from_be_bytes([input[0], input[1], input[2], input[3]]),
        &input[4..],
    ))
}

/// What a client sent as its first packet (before any typed message).
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: Bytes,
    },
    Startup {
        major: u16,
        minor: u16,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("malformed startup packet: {0}")]
    Malformed(&'static str),
}

/// Parses a startup-phase packet body (everything after the 4-byte length).
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, StartupError> {
    let (code, rest) = take_i32(body).ok_or(StartupError::Malformed("missing code"))?;
    let code = code as u32;
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let (pid, secret) =
                take_i32(rest).ok_or(StartupError::Malformed("cancel request without pid"))?;
            if secret.len() < 4 || secret.len() > 256 {
                return Err(StartupError::Malformed("cancel request secret length"));
            }
            Ok(StartupPacket::Cancel {
                pid,
                secret: Bytes::copy_from_slice(secret),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            let mut params = Vec::new();
            let mut rest = rest;
            loop {
                let (name, tail) =
                    take_cstr(rest).ok_or(StartupError::Malformed("unterminated parameter"))?;
                if name.is_empty() {
                    break;
                }
                let (value, tail) =
                    take_cstr(tail).ok_or(StartupError::Malformed("parameter without value"))?;
                let name = std::str::from_utf8(name)
                    .map_err(|_| StartupError::Malformed("parameter name is not UTF-8"))?;
                let value = std::str::from_utf8(value)
                    .map_err(|_| StartupError::Malformed("parameter value is not UTF-8"))?;
                params.push((name.to_owned(), value.to_owned()));
                rest = tail;
            }
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_exactly_and_wait_for_more_bytes() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dselect 1\0Z\0\0"[..]);
        let frame = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag(), b'Q');
        assert_eq!(frame.body(), b"select 1\0");
        assert_eq!(split_frame(&mut buf, 1024).unwrap(), None);
        assert_eq!(&buf[..], b"Z\0\0");
    }

    #[test]
    fn bad_and_oversized_lengths_are_errors() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::BadLength { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\x10\0\0\0"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn startup_packets_parse() {
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0agent\0database\0payments\0\0");
        assert_eq!(
            parse_startup(&body).unwrap(),
            StartupPacket::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "agent".into()),
                    ("database".into(), "payments".into())
                ]
            }
        );
        assert_eq!(
            parse_startup(&SSL_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
    }
}
