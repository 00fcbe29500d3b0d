//! The steady-state relay: ONE `select!` loop over "bytes from the client"
//! and "bytes from the server" (plus the two writes, token expiry and
//! shutdown), so server-initiated messages (NoticeResponse,
//! NotificationResponse, ParameterStatus) flow while the client is idle.
//! Frames are forwarded byte for byte; each passes the [`Inspector`] seam
//! where policy and masking plug in. Reads stop while the opposite write
//! buffer is full, so memory per connection is bounded by one message plus
//! the high-water mark, however large a result is.

pub mod policy;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::cancel::CancelTarget;
use crate::metrics::{Direction, Metrics};
use crate::protocol::{put_error, reserve_for_read, split_frame, Frame, Severity};
use crate::tls::PgStream;
pub use state::ConnectionState;
use state::DescribeOrigin;

/// What to do with one frame. The relay forwards unless told otherwise.
#[derive(Debug)]
pub enum Verdict {
    Forward,
    /// Send these bytes (one or more complete frames) instead.
    Replace(BytesMut),
    Drop,
    /// Client frames only: refuse the request. Nothing of it reaches the
    /// server; the client gets this ErrorResponse frame in order with the
    /// answers to its earlier requests, then ReadyForQuery with the real
    /// transaction status (a refusal inside a transaction aborts it, as any
    /// error would). After an extended-protocol message the relay discards
    /// the client's messages until Sync.
    Refuse(BytesMut),
    /// Client Execute only: first ask the server to describe this portal
    /// (the answer goes to the inspector, not the client), then forward.
    DescribeFirst(Vec<u8>),
}

/// The name the refusal Describe asks for. A statement of this name never
/// exists unless a client creates it on purpose, and then the relay still
/// replaces the answer with the refusal.
const REFUSED_STATEMENT: &[u8] = b"hoop: refused statement";

/// The seam for "inspect this frame": statement policy and result masking
/// implement this. Client frames are inspected before [`ConnectionState`]
/// records them (only what is sent on is recorded); server frames before
/// the state moves on, so [`ConnectionState::front`] is the request the
/// frame answers.
pub trait Inspector: Send {
    fn client_frame(&mut self, _state: &ConnectionState, _frame: &Frame) -> Verdict {
        Verdict::Forward
    }
    fn server_frame(&mut self, _state: &ConnectionState, _frame: &Frame) -> Verdict {
        Verdict::Forward
    }
}

/// Forwards everything unchanged.
pub struct PassThrough;
impl Inspector for PassThrough {}

/// Stops reading one side while this much is queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// How long the final messages to a leaving client may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RelaySession {
    pub mapped_role: String,
    /// Unix seconds at which the login token expires.
    pub expires_at: i64,
    pub upstream: CancelTarget,
    pub max_message_bytes: usize,
}

/// Why the relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    ClientTerminated,
    ClientGone { mid_statement: bool },
    ServerClosed,
    TokenExpired,
    ShutDown,
    ProtocolViolation(String),
}

pub struct Relay<'a> {
    pub session: RelaySession,
    /// Statements seen on this connection (numbers the per-statement spans).
    pub statements: u64,
    pub metrics: Arc<Metrics>,
    pub inspector: Box<dyn Inspector + 'a>,
    pub shutdown: watch::Receiver<bool>,
}

fn append(out: &mut BytesMut, frame: &Frame, verdict: Verdict) {
    match verdict {
        Verdict::Forward => out.extend_from_slice(frame.as_bytes()),
        Verdict::Replace(bytes) => out.extend_from_slice(&bytes),
        // Client-side verdicts: a server frame is never refused, so drop it.
        Verdict::Drop | Verdict::Refuse(_) | Verdict::DescribeFirst(_) => {}
    }
}

/// A Describe message (`kind` b'S' or b'P').
fn describe_frame(kind: u8, name: &[u8]) -> Frame {
    let mut b = BytesMut::with_capacity(name.len() + 7);
    b.extend_from_slice(b"D");
    b.extend_from_slice(&((name.len() + 6) as u32).to_be_bytes());
    b.extend_from_slice(&[kind]);
    b.extend_from_slice(name);
    b.extend_from_slice(&[0]);
    frame_of(b)
}

fn sync_frame() -> Frame {
    frame_of(BytesMut::from(&[b'S', 0, 0, 0, 4][..]))
}

fn frame_of(mut bytes: BytesMut) -> Frame {
    match split_frame(&mut bytes, usize::MAX) {
        Ok(Some(frame)) => frame,
        // The callers build complete frames.
        _ => unreachable!("a frame built by the relay is complete"),
    }
}

/// Writes what the socket takes right now without waiting, so the common
/// case (a writable socket) needs no extra turn of the select loop; whatever
/// is left is written by the loop's write branch.
async fn write_now<W: AsyncWrite + Unpin>(w: &mut W, buf: &mut BytesMut) -> std::io::Result<()> {
    let done = {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if buf.is_empty() {
                break true;
            }
            match Pin::new(&mut *w).poll_write(&mut cx, buf) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => buf.advance(n),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break false,
            }
        }
    };
    if !done {
        return Ok(());
    }
    // TLS keeps records buffered until flushed; plain TCP flush is a no-op.
    w.flush().await
}

fn fatal(out: &mut BytesMut, code: &str, message: &str) {
    put_error(out, Severity::Fatal, code, message);
}

impl Relay<'_> {
    /// Relays until either side ends. `cancel_upstream` is called when the
    /// client vanishes while a statement is running.
    pub async fn run(
        self,
        client: PgStream,
        from_client: BytesMut,
        server: PgStream,
        from_server: BytesMut,
        cancel_upstream: impl std::future::Future<Output = ()>,
    ) -> (RelayEnd, ConnectionState) {
        match (client, server) {
            // Plain TCP on both sides (the common case behind a TLS
            // terminator, and the benchmark): borrowed halves, no locking.
            (PgStream::Plain(mut client), PgStream::Plain(mut server)) => {
                let (client_rd, client_wr) = client.split();
                let (server_rd, server_wr) = server.split();
                self.relay(
                    (client_rd, client_wr),
                    from_client,
                    (server_rd, server_wr),
                    from_server,
                    cancel_upstream,
                )
                .await
            }
            (client, server) => {
                let client = tokio::io::split(client);
                let server = tokio::io::split(server);
                self.relay(client, from_client, server, from_server, cancel_upstream)
                    .await
            }
        }
    }

    async fn relay<CR, CW, SR, SW>(
        mut self,
        (mut client_rd, mut client_wr): (CR, CW),
        mut from_client: BytesMut,
        (mut server_rd, mut server_wr): (SR, SW),
        mut from_server: BytesMut,
        cancel_upstream: impl std::future::Future<Output = ()>,
    ) -> (RelayEnd, ConnectionState)
    where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
        SR: AsyncRead + Unpin,
        SW: AsyncWrite + Unpin,
    {
        let mut to_client = BytesMut::with_capacity(16 * 1024);
        let mut to_server = BytesMut::with_capacity(16 * 1024);
        let mut state = ConnectionState::new();
        let max = self.session.max_message_bytes;
        let up_bytes = self.metrics.bytes_counter(Direction::client_to_server);
        let down_bytes = self.metrics.bytes_counter(Direction::server_to_client);

        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let remaining =
            Duration::from_secs(self.session.expires_at.saturating_sub(now_unix).max(0) as u64);
        let expiry = tokio::time::sleep(remaining);
        tokio::pin!(expiry);

        let mut draining = *self.shutdown.borrow();
        // One long-lived future rather than a new `changed()` per loop turn.
        let mut shutdown_rx = self.shutdown.clone();
        let stop_requested = async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop_requested);
        // Set once the client has sent Terminate.
        let mut client_done = false;
        // Bytes already received during the handshake are processed first.
        let mut end: Option<RelayEnd> = None;
        if let Err(e) = self.pump_client(
            &mut from_client,
            &mut to_server,
            &mut state,
            max,
            &mut client_done,
        ) {
            fatal(&mut to_client, "08P01", &e);
            end = Some(RelayEnd::ProtocolViolation(e));
        }
        if let Err(e) = self.pump_server(&mut from_server, &mut to_client, &mut state, max) {
            fatal(&mut to_client, "08P01", &e);
            end = Some(RelayEnd::ProtocolViolation(e));
        }

        while end.is_none() {
            if draining && state.is_idle() && to_client.is_empty() && to_server.is_empty() {
                fatal(
                    &mut to_client,
                    "57P01",
                    "terminating connection: hoop is shutting down; reconnect to continue",
                );
                end = Some(RelayEnd::ShutDown);
                break;
            }
            reserve_for_read(&mut from_client);
            reserve_for_read(&mut from_server);
            tokio::select! {
                read = client_rd.read_buf(&mut from_client), if !client_done && to_server.len() < HIGH_WATER => {
                    match read {
                        Ok(0) | Err(_) => {
                            end = Some(RelayEnd::ClientGone { mid_statement: !state.is_idle() });
                        }
                        Ok(n) => {
                            up_bytes.inc_by(n as u64);
                            if let Err(e) = self.pump_client(&mut from_client, &mut to_server, &mut state, max, &mut client_done) {
                                fatal(&mut to_client, "08P01", &e);
                                end = Some(RelayEnd::ProtocolViolation(e));
                            } else if write_now(&mut server_wr, &mut to_server).await.is_err() {
                                end = Some(RelayEnd::ServerClosed);
                            }
                        }
                    }
                }
                read = server_rd.read_buf(&mut from_server), if to_client.len() < HIGH_WATER => {
                    match read {
                        Ok(0) | Err(_) => {
                            end = Some(if client_done { RelayEnd::ClientTerminated } else { RelayEnd::ServerClosed });
                        }
                        Ok(n) => {
                            down_bytes.inc_by(n as u64);
                            if let Err(e) = self.pump_server(&mut from_server, &mut to_client, &mut state, max) {
                                fatal(&mut to_client, "08P01", &e);
                                end = Some(RelayEnd::ProtocolViolation(e));
                            } else if write_now(&mut client_wr, &mut to_client).await.is_err() {
                                end = Some(RelayEnd::ClientGone { mid_statement: !state.is_idle() });
                            }
                        }
                    }
                }
                written = server_wr.write(&to_server), if !to_server.is_empty() => {
                    match written {
                        Ok(n) if n > 0 => {
                            to_server.advance(n);
                            if to_server.is_empty() && server_wr.flush().await.is_err() {
                                end = Some(RelayEnd::ServerClosed);
                            }
                        }
                        _ => end = Some(RelayEnd::ServerClosed),
                    }
                }
                written = client_wr.write(&to_client), if !to_client.is_empty() => {
                    match written {
                        Ok(n) if n > 0 => {
                            to_client.advance(n);
                            if to_client.is_empty() && client_wr.flush().await.is_err() {
                                end = Some(RelayEnd::ClientGone { mid_statement: !state.is_idle() });
                            }
                        }
                        _ => end = Some(RelayEnd::ClientGone { mid_statement: !state.is_idle() }),
                    }
                }
                _ = &mut expiry => {
                    fatal(&mut to_client, "28000", "terminating connection: the login token has expired; log in again with a fresh token");
                    end = Some(RelayEnd::TokenExpired);
                }
                _ = &mut stop_requested, if !draining => {
                    draining = true;
                }
            }
        }
        let end = end.unwrap_or(RelayEnd::ServerClosed);

        if let RelayEnd::ClientGone {
            mid_statement: true,
        } = end
        {
            cancel_upstream.await;
        }
        // Tell the server we are leaving (unless it is the one who left).
        if end != RelayEnd::ServerClosed {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                if !client_done {
                    to_server.clear();
                    to_server.extend_from_slice(&[b'X', 0, 0, 0, 4]);
                }
                let _ = server_wr.write_all(&to_server).await;
                let _ = server_wr.shutdown().await;
            })
            .await;
        }
        // Give the client what it is owed (a final error, the last results).
        if !matches!(end, RelayEnd::ClientGone { .. }) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = client_wr.write_all(&to_client).await;
                let _ = client_wr.shutdown().await;
            })
            .await;
        }
        (end, state)
    }

    fn pump_client(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        max: usize,
        terminated: &mut bool,
    ) -> Result<(), String> {
        let now = Instant::now();
        while !*terminated {
            let frame = match split_frame(input, max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(format!("invalid message from client: {e}")),
            };
            if frame.tag() == b'X' {
                *terminated = true;
            }
            if state.discarding_until_sync {
                match frame.tag() {
                    b'S' => state.discarding_until_sync = false,
                    // Flush and Terminate carry nothing of the refused statement.
                    b'H' | b'X' => {}
                    _ => continue,
                }
                self.send_client_frame(&frame, out, state, now);
                continue;
            }
            match self.inspector.client_frame(state, &frame) {
                Verdict::Forward => self.send_client_frame(&frame, out, state, now),
                Verdict::Replace(mut bytes) => {
                    while let Ok(Some(replacement)) = split_frame(&mut bytes, usize::MAX) {
                        self.send_client_frame(&replacement, out, state, now);
                    }
                }
                Verdict::Drop => {}
                Verdict::Refuse(error) => {
                    self.metrics.statements.inc();
                    self.statements += 1;
                    let span = tracing::info_span!("statement", seq = self.statements, kind = %(frame.tag() as char));
                    span.in_scope(|| tracing::info!("statement refused by the gateway"));
                    let describe = describe_frame(b'S', REFUSED_STATEMENT);
                    state.on_gateway_describe(
                        b'S',
                        REFUSED_STATEMENT.to_vec(),
                        DescribeOrigin::Refusal(error.freeze()),
                    );
                    out.extend_from_slice(describe.as_bytes());
                    if matches!(frame.tag(), b'Q' | b'F') {
                        self.send_client_frame(&sync_frame(), out, state, now);
                    } else {
                        state.discarding_until_sync = true;
                    }
                }
                Verdict::DescribeFirst(portal) => {
                    let describe = describe_frame(b'P', &portal);
                    state.on_gateway_describe(b'P', portal, DescribeOrigin::Gateway);
                    out.extend_from_slice(describe.as_bytes());
                    self.send_client_frame(&frame, out, state, now);
                }
            }
        }
        Ok(())
    }

    /// Records a frame in the state and queues it for the server.
    fn send_client_frame(
        &mut self,
        frame: &Frame,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        if state.on_client_frame(frame, now) == state::Started::Statement {
            self.metrics.statements.inc();
            self.statements += 1;
            // Never the SQL text or parameters: they may hold card numbers.
            let span = tracing::debug_span!("statement", seq = self.statements, kind = %(frame.tag() as char));
            span.in_scope(|| tracing::debug!(bytes = frame.len(), "statement sent upstream"));
        }
        out.extend_from_slice(frame.as_bytes());
    }

    fn pump_server(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        max: usize,
    ) -> Result<(), String> {
        let now = Instant::now();
        loop {
            let frame =
                match split_frame(input, max.max(crate::protocol::DEFAULT_MAX_MESSAGE_BYTES)) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Err(format!("invalid message from the database: {e}")),
                };
            let verdict = match state.front() {
                Some(state::Pending::Describe {
                    origin: DescribeOrigin::Refusal(error),
                    ..
                }) => match frame.tag() {
                    // The server's answer to the stand-in Describe becomes
                    // the refusal (ParameterDescription: the name existed).
                    b'E' | b't' => Verdict::Replace(BytesMut::from(&error[..])),
                    b'T' | b'n' => Verdict::Drop,
                    _ => self.inspector.server_frame(state, &frame),
                },
                Some(state::Pending::Describe {
                    origin: DescribeOrigin::Gateway,
                    ..
                }) if matches!(frame.tag(), b'T' | b'n') => {
                    // For the inspector only.
                    let _ = self.inspector.server_frame(state, &frame);
                    Verdict::Drop
                }
                _ if frame.tag() == b'S' => Verdict::Forward,
                _ => self.inspector.server_frame(state, &frame),
            };
            if let Some(took) = state.on_server_frame(&frame, now) {
                self.metrics.request_duration.observe(took.as_secs_f64());
                tracing::debug!(
                    micros = took.as_micros() as u64,
                    status = %(state.transaction_status as char),
                    "request complete"
                );
            }
            if frame.tag() == b'S' {
                if let Some(bytes) =
                    crate::upstream::filter_parameter_status(&frame, &self.session.mapped_role)
                {
                    out.extend_from_slice(&bytes);
                }
                continue;
            }
            append(out, &frame, verdict);
        }
        Ok(())
    }
}
