//! The client's startup, as its own state machine: SSLRequest / direct SSL
//! (PG17, ALPN `postgresql`) / GSSENCRequest / CancelRequest, up to the
//! StartupMessage. Bytes a client pipelines before the TLS handshake are
//! refused: the gateway never reads ahead of a handshake.
//!
//! What happens after the StartupMessage (who the client is and whether it
//! may log in) is [`crate::login`]; forwarding a CancelRequest is
//! [`crate::cancel`]. This module knows only the wire and the TLS acceptor.

use std::future::poll_fn;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::LoginOutcome;
use crate::protocol::backend::{put_error, Severity};
use crate::protocol::{parse_startup, StartupPacket, MAX_STARTUP_PACKET_BYTES};
use crate::tls::{
    PgStream, ALPN_POSTGRESQL, ENCRYPTION_REFUSED, SSL_ACCEPTED, TLS_HANDSHAKE_RECORD,
};

/// What the client asked for once encryption was settled.
pub enum Negotiated {
    /// A StartupMessage: the login can begin.
    Startup { stream: PgStream, startup: Startup },
    /// A CancelRequest for the session with this (gateway) key.
    Cancel { pid: i32, secret: Bytes },
}

/// The StartupMessage's protocol version and parameters.
pub struct Startup {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

/// Every way a connection ends without a login. `server::handle` logs
/// each its own way, and counts and records a refusal.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    /// A CancelRequest was handled, or the client left (psql does this to ask for a password).
    #[error("the client left")]
    Quietly,
    /// The client was refused; it has been told why where PostgreSQL tells
    /// it (not for a startup packet of an impossible length, nor a direct
    /// SSL connection without ALPN).
    #[error("refused: {1}")]
    Refused(LoginOutcome, String),
    /// The handshake and login took longer than the gateway waits.
    #[error("handshake timed out")]
    TimedOut,
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}

/// Tells the client why it is refused (a FATAL ErrorResponse) and closes.
/// [`Ended::Refused`] once the client has been told; [`Ended::Io`] when
/// it could not be.
pub async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: &str,
    message: &str,
    outcome: LoginOutcome,
) -> Ended {
    let mut out = BytesMut::new();
    put_error(&mut out, Severity::Fatal, code, message);
    if let Err(e) = stream.write_all(&out).await {
        return Ended::Io(e);
    }
    if let Err(e) = stream.flush().await {
        return Ended::Io(e);
    }
    let _ = stream.shutdown().await;
    Ended::Refused(outcome, message.to_owned())
}

/// Reads one untyped startup-phase packet (length + body). A client that
/// leaves before one ends quietly; a packet PostgreSQL would not read is
/// refused.
async fn read_startup_packet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<StartupPacket, Ended> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Ended::Quietly),
        Err(e) => return Err(Ended::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP_PACKET_BYTES).contains(&len) {
        // PostgreSQL logs this (COMMERROR) and closes without a word: what
        // arrived is no startup packet, so the client may not read one
        // either (node-postgres ending before it started sends Terminate).
        let _ = stream.shutdown().await;
        return Err(Ended::Refused(
            LoginOutcome::refused,
            format!("invalid startup packet length {len}"),
        ));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    match parse_startup(&body) {
        Ok(packet) => Ok(packet),
        Err(e) => Err(refuse(stream, "08P01", &e.to_string(), LoginOutcome::refused).await),
    }
}

/// True when the client has already sent more bytes than the packet we just read.
async fn has_unread_bytes(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let mut rb = ReadBuf::new(&mut byte);
    let polled = poll_fn(|cx| Poll::Ready(tcp.poll_peek(cx, &mut rb))).await;
    matches!(polled, Poll::Ready(Ok(n)) if n > 0)
}

/// Settles encryption and reads the client's first real request: a
/// StartupMessage or a CancelRequest.
pub async fn negotiate(
    tcp: TcpStream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Negotiated, Ended> {
    let mut first = [0u8; 1];
    // PG17 direct SSL: the first byte is a TLS handshake record, not a length.
    let direct_tls = tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE_RECORD;
    let mut stream = if direct_tls {
        direct_ssl(tcp, acceptor).await?
    } else {
        match before_tls(tcp, acceptor).await? {
            BeforeTls::Encrypted(stream) => stream,
            BeforeTls::Plaintext(negotiated) => return Ok(negotiated),
        }
    };
    Ok(match after_tls(&mut stream).await? {
        AfterTls::Startup(startup) => Negotiated::Startup { stream, startup },
        AfterTls::Cancel { pid, secret } => Negotiated::Cancel { pid, secret },
    })
}

/// PG17 direct SSL: TLS first, negotiated as `postgresql` (ALPN), so a TLS
/// connection meant for another protocol can never be replayed here.
async fn direct_ssl(
    tcp: TcpStream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<PgStream, Ended> {
    let Some(acceptor) = acceptor else {
        return Err(Ended::Quietly);
    };
    let tls = acceptor.accept(tcp).await.map_err(Ended::Tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(Ended::Refused(
            LoginOutcome::refused,
            "direct SSL without ALPN postgresql".into(),
        ));
    }
    Ok(PgStream::Tls(Box::new(tokio_rustls::TlsStream::Server(
        tls,
    ))))
}

enum BeforeTls {
    /// The client asked for TLS and got it.
    Encrypted(PgStream),
    /// The client went on without encryption: a StartupMessage or a
    /// CancelRequest in plaintext.
    Plaintext(Negotiated),
}

/// Negotiation packets read from the raw socket: SSLRequest (answered
/// [`SSL_ACCEPTED`] with an acceptor, else [`ENCRYPTION_REFUSED`]),
/// GSSENCRequest (always refused), or the request itself in plaintext.
async fn before_tls(
    mut tcp: TcpStream,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<BeforeTls, Ended> {
    loop {
        match read_startup_packet(&mut tcp).await? {
            StartupPacket::SslRequest => {
                let Some(acceptor) = acceptor else {
                    tcp.write_all(&[ENCRYPTION_REFUSED]).await?;
                    continue;
                };
                if has_unread_bytes(&tcp).await {
                    return Err(refuse(
                        &mut tcp,
                        "08P01",
                        "received unencrypted data after SSL request",
                        LoginOutcome::refused,
                    )
                    .await);
                }
                tcp.write_all(&[SSL_ACCEPTED]).await?;
                let tls = acceptor.accept(tcp).await.map_err(Ended::Tls)?;
                return Ok(BeforeTls::Encrypted(PgStream::Tls(Box::new(
                    tokio_rustls::TlsStream::Server(tls),
                ))));
            }
            StartupPacket::GssEncRequest => {
                tcp.write_all(&[ENCRYPTION_REFUSED]).await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok(BeforeTls::Plaintext(Negotiated::Cancel { pid, secret }))
            }
            StartupPacket::Startup {
                major,
                minor,
                params,
            } => {
                return Ok(BeforeTls::Plaintext(Negotiated::Startup {
                    stream: PgStream::Plain(tcp),
                    startup: Startup {
                        major,
                        minor,
                        params,
                    },
                }))
            }
        }
    }
}

enum AfterTls {
    Startup(Startup),
    Cancel { pid: i32, secret: Bytes },
}

/// After TLS: a StartupMessage or a CancelRequest, nothing else.
async fn after_tls(stream: &mut PgStream) -> Result<AfterTls, Ended> {
    match read_startup_packet(stream).await? {
        StartupPacket::Startup {
            major,
            minor,
            params,
        } => Ok(AfterTls::Startup(Startup {
            major,
            minor,
            params,
        })),
        StartupPacket::Cancel { pid, secret } => Ok(AfterTls::Cancel { pid, secret }),
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => Err(refuse(
            stream,
            "08P01",
            "encryption requested twice",
            LoginOutcome::refused,
        )
        .await),
    }
}
