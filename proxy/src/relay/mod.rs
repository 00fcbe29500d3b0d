//! The steady-state relay: ONE `select!` loop over "bytes from the client"
//! and "bytes from the server" (plus the two writes, token expiry and
//! shutdown), so server-initiated messages (NoticeResponse,
//! NotificationResponse, ParameterStatus) flow while the client is idle.
//! Frames are forwarded byte for byte; each passes the
//! [`Inspector`] (statement rules in, masking out), whose
//! [`verdict`]s say what to do with it. Client frames are inspected before
//! [`ConnectionState`] records them (only what is sent on is recorded);
//! server frames before the state moves on, so [`ConnectionState::front`]
//! is the request the frame answers. Reads stop while the opposite write
//! buffer is full, so memory per connection is bounded by one message plus
//! the high-water mark, however large a result is.

pub(crate) mod gate;
pub(crate) mod hidden;
pub(crate) mod inspect;
pub(crate) mod record;
pub(crate) mod refusal;
pub(crate) mod state;
pub(crate) mod verdict;

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::metrics::{Direction, Metrics};
use crate::protocol::backend::{
    put_empty_query_response, put_error, put_parameter_status, put_ready_for_query, put_report_in,
    Backend, Severity, FAILED_TRANSACTION, IDLE, IN_TRANSACTION,
};
use crate::protocol::frontend::{self, Frontend, Target};
use crate::protocol::{reserve_for_read, split_frame, Frame};
use crate::tls::PgStream;
use gate::{Admission, AdmissionFuture, Gate, RunsEarly, StatementInfo};
use inspect::Inspector;
use record::{OpenStatement, Recorder};
use refusal::Refusal;
pub(crate) use state::ConnectionState;
pub(crate) use state::Reading;
use state::{About, DescribeOrigin, Pending, Prepared, RecordId, Request};
use verdict::{ClientVerdict, ServerVerdict};

/// The name the refusal Describe asks for. A statement of this name never
/// exists unless a client creates it on purpose, and then the relay still
/// replaces the answer with the refusal.
const REFUSED_STATEMENT: &[u8] = b"hoop: refused statement";

/// The name under which the server parses a text the gateway's grammar
/// rejected (see [`Relay::refuse_syntax_error`]); closed in the same batch.
const SYNTAX_CHECK_STATEMENT: &[u8] = b"hoop: syntax check";

/// Name of the statement and portal of the gateway's reading check (see
/// [`Relay::check_reading`]).
const READING_CHECK: &[u8] = b"hoop: reading check";

/// Stops reading one side while this much is queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// How long the final messages to a leaving client may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often (in turns of a session's loop) the token's expiry and a
/// shutdown are checked besides their own wake-ups.
const TIMER_CHECK_TURNS: u32 = 64;

const TOKEN_EXPIRED: &str =
    "terminating connection: the login token has expired; log in again with a fresh token";

pub(crate) struct RelaySession {
    pub mapped_role: String,
    /// How the server reported it reads the client's text, at login.
    pub reading: Reading,
    /// Unix seconds at which the login token expires.
    pub expires_at: i64,
    pub max_message_bytes: usize,
    /// Whether the database may run code statements do not name (see
    /// [`hidden`]): then nothing runs while its record is written.
    pub hidden: hidden::HiddenCode,
}

/// Why the relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RelayEnd {
    ClientTerminated,
    ClientGone {
        mid_statement: bool,
    },
    ServerClosed,
    TokenExpired,
    ShutDown,
    ProtocolViolation(String),
    /// An early read's record could not be written (see [`Held::early`]).
    AuditUnavailable,
    /// The server reported a client encoding the gateway cannot read (see
    /// [`crate::upstream::reports_unreadable_encoding`]).
    UnreadableEncoding,
}

impl RelayEnd {
    /// Tells the client why the gateway ends its session, where it is the
    /// gateway's doing.
    fn tell(&self, to_client: &mut BytesMut) {
        match self {
            RelayEnd::ProtocolViolation(what) => fatal(to_client, "08P01", what),
            RelayEnd::UnreadableEncoding => fatal(
                to_client,
                crate::upstream::SQLSTATE_FEATURE_NOT_SUPPORTED,
                crate::upstream::UNREADABLE_ENCODING,
            ),
            _ => {}
        }
    }
}

pub(crate) struct Relay {
    pub session: RelaySession,
    /// Statements seen on this connection (numbers the per-statement spans).
    pub statements: u64,
    pub metrics: Arc<Metrics>,
    pub inspector: Inspector,
    pub shutdown: watch::Receiver<bool>,
    /// Audit records and review holds.
    pub gate: Gate,
}

/// A statement waiting for the gate, and what it needs once admitted.
struct Held {
    frame: Frame,
    request: Request,
    /// The records the client's order resolved it to.
    about: About,
    /// Describe this portal (name, record) first: the masker needs its
    /// row description.
    describe_portal: Option<(Vec<u8>, RecordId)>,
    bind: Option<Bytes>,
    future: AdmissionFuture,
    /// A plain read already sent to the server while its record is being
    /// written: everything the server answers meanwhile is withheld from
    /// the client until the record is durable (see [`Relay::admitted`]).
    early: bool,
    /// The early read's request id in the [`ConnectionState`].
    request_id: Option<u64>,
    /// Not sent yet, and may create code later statements run unnamed
    /// (see [`hidden`]): noted when it is sent.
    changes_code: bool,
}

impl Held {
    fn is_early(held: &Option<Held>) -> bool {
        held.as_ref().is_some_and(|held| held.early)
    }
}

/// Waits for the held statement's admission (never, when none is held).
async fn admission(held: &mut Option<Held>) -> Admission {
    match held {
        Some(held) => (&mut held.future).await,
        None => std::future::pending().await,
    }
}

/// Names of the statement and portal a reviewer's replacement runs as in
/// the extended protocol.
const MODIFIED_STATEMENT: &[u8] = b"hoop: modified statement";

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

/// After a write from the front of `buf`: drops what went out, and flushes
/// once all of it has. `false`: the peer is gone.
async fn wrote<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &mut BytesMut,
    written: std::io::Result<usize>,
) -> bool {
    match written {
        Ok(n) if n > 0 => {
            buf.advance(n);
            !(buf.is_empty() && w.flush().await.is_err())
        }
        _ => false,
    }
}

/// After the client's messages were read (`pumped`): a message the relay
/// cannot go on after (a frame that is not one, a malformed COPY message:
/// see [`Relay::malformed`]) ends the session with FATAL 08P01;
/// otherwise what is queued for the server goes out now.
async fn to_server<W: AsyncWrite + Unpin>(
    flow: &mut Flow,
    pumped: Result<(), String>,
    server_wr: &mut W,
) -> Option<RelayEnd> {
    if let Err(e) = pumped {
        fatal(&mut flow.to_client, "08P01", &e);
        return Some(RelayEnd::ProtocolViolation(e));
    }
    if write_now(server_wr, &mut flow.to_server).await.is_err() {
        return Some(RelayEnd::ServerClosed);
    }
    None
}

/// What is queued for the client goes out now.
async fn to_client<W: AsyncWrite + Unpin>(flow: &mut Flow, client_wr: &mut W) -> Option<RelayEnd> {
    if write_now(client_wr, &mut flow.to_client).await.is_err() {
        return Some(flow.client_gone());
    }
    None
}

fn fatal(out: &mut BytesMut, code: &str, message: &str) {
    put_error(out, Severity::Fatal, code, message);
}

impl Relay {
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
        from_client: BytesMut,
        (mut server_rd, mut server_wr): (SR, SW),
        from_server: BytesMut,
        cancel_upstream: impl std::future::Future<Output = ()>,
    ) -> (RelayEnd, ConnectionState)
    where
        CR: AsyncRead + Unpin,
        CW: AsyncWrite + Unpin,
        SR: AsyncRead + Unpin,
        SW: AsyncWrite + Unpin,
    {
        let mut flow = Flow::new(
            from_client,
            from_server,
            self.gate.record_rows(),
            self.session.max_message_bytes,
        );
        flow.state.reading = self.session.reading.clone();
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
        // Bytes already received during the handshake are processed first.
        let mut end = self.pump_client(&mut flow).err().map(|e| {
            fatal(&mut flow.to_client, "08P01", &e);
            RelayEnd::ProtocolViolation(e)
        });
        if let Err(stop) = self.pump_server(&mut flow, false) {
            stop.tell(&mut flow.to_client);
            end = Some(stop);
        }

        let mut turns: u32 = 0;
        while end.is_none() {
            // What the last turn owed the client has gone out (or waits for
            // the socket): the outcomes it completed go to the store.
            self.gate.send_finished();
            // The branches below are polled in order, the token's expiry and
            // shutdown last; so that a session always busy cannot outrun
            // them, they are also checked here now and then.
            turns = turns.wrapping_add(1);
            if turns.is_multiple_of(TIMER_CHECK_TURNS) {
                if Instant::now() >= expiry.deadline().into_std() {
                    fatal(&mut flow.to_client, "28000", TOKEN_EXPIRED);
                    end = Some(RelayEnd::TokenExpired);
                    break;
                }
                draining |= *self.shutdown.borrow();
            }
            if draining && flow.is_quiet() {
                fatal(
                    &mut flow.to_client,
                    "57P01",
                    "terminating connection: hoop is shutting down; reconnect to continue",
                );
                end = Some(RelayEnd::ShutDown);
                break;
            }
            reserve_for_read(&mut flow.from_client);
            reserve_for_read(&mut flow.from_server);
            let early = Held::is_early(&flow.held);
            let client_readable = flow.client_readable();
            let server_readable = flow.to_client.len() + flow.withheld.len() < HIGH_WATER;
            tokio::select! {
                // Fixed order (no random draw per turn): what is ready is
                // served every turn; a busy side is bounded by the high
                // water marks that turn its reads off.
                biased;
                read = server_rd.read_buf(&mut flow.from_server), if server_readable => {
                    end = match read {
                        Ok(0) | Err(_) if flow.client_done => Some(RelayEnd::ClientTerminated),
                        Ok(0) | Err(_) => Some(RelayEnd::ServerClosed),
                        Ok(n) => {
                            down_bytes.inc_by(n as u64);
                            self.on_server_bytes(&mut flow, early, &mut server_wr, &mut client_wr).await
                        }
                    };
                }
                read = client_rd.read_buf(&mut flow.from_client), if client_readable => {
                    end = match read {
                        Ok(0) | Err(_) => Some(flow.client_gone()),
                        Ok(n) => {
                            up_bytes.inc_by(n as u64);
                            self.on_client_bytes(&mut flow, &mut server_wr).await
                        }
                    };
                }
                admitted = admission(&mut flow.held) => {
                    end = self.on_admission(&mut flow, admitted, early, &mut server_wr, &mut client_wr).await;
                }
                written = server_wr.write(&flow.to_server), if !flow.to_server.is_empty() => {
                    if !wrote(&mut server_wr, &mut flow.to_server, written).await {
                        end = Some(RelayEnd::ServerClosed);
                    }
                }
                written = client_wr.write(&flow.to_client), if !flow.to_client.is_empty() => {
                    if !wrote(&mut client_wr, &mut flow.to_client, written).await {
                        end = Some(flow.client_gone());
                    }
                }
                _ = &mut expiry => {
                    fatal(&mut flow.to_client, "28000", TOKEN_EXPIRED);
                    end = Some(RelayEnd::TokenExpired);
                }
                _ = &mut stop_requested, if !draining => {
                    draining = true;
                }
            }
        }
        let end = end.unwrap_or(RelayEnd::ServerClosed);
        self.close(flow, end, (server_wr, client_wr), cancel_upstream)
            .await
    }

    /// The client sent bytes: judge and pass on what they complete.
    async fn on_client_bytes<SW: AsyncWrite + Unpin>(
        &mut self,
        flow: &mut Flow,
        server_wr: &mut SW,
    ) -> Option<RelayEnd> {
        let pumped = self.pump_client(flow);
        to_server(flow, pumped, server_wr).await
    }

    /// The gate settled the held statement (`early`: one already sent, see
    /// [`Held::early`]).
    async fn on_admission<SW, CW>(
        &mut self,
        flow: &mut Flow,
        admitted: Admission,
        early: bool,
        server_wr: &mut SW,
        client_wr: &mut CW,
    ) -> Option<RelayEnd>
    where
        SW: AsyncWrite + Unpin,
        CW: AsyncWrite + Unpin,
    {
        let pumped = if early {
            let Admission::Forward(handle) = admitted else {
                // The statement ran, but cannot be recorded: nothing of its
                // answer is passed on, and the session ends (the server
                // rolls back its transaction, and with it whatever the
                // statement changed), as the statements after it would be
                // refused too.
                flow.held = None;
                flow.withheld.clear();
                fatal(&mut flow.to_client, "58000", "the gateway cannot record this statement in its audit trail, so its results were not sent and the session is ended; try again later");
                return Some(RelayEnd::AuditUnavailable);
            };
            if let Some(request) = flow.held.take().and_then(|h| h.request_id) {
                flow.recorder.attach(request, handle);
            }
            flow.to_client.unsplit(flow.withheld.split());
            for (handle, outcome) in flow.recorder.finished(&flow.state, Instant::now()) {
                self.gate.complete(handle, outcome);
            }
            self.pump_client(flow)
        } else {
            self.admitted(flow, admitted)
        };
        if let Some(end) = to_server(flow, pumped, server_wr).await {
            return Some(end);
        }
        to_client(flow, client_wr).await
    }

    /// The server sent bytes: pass on (or withhold, while an `early`
    /// read's record is written) what they complete, then the client
    /// message that waited for them.
    async fn on_server_bytes<SW, CW>(
        &mut self,
        flow: &mut Flow,
        early: bool,
        server_wr: &mut SW,
        client_wr: &mut CW,
    ) -> Option<RelayEnd>
    where
        SW: AsyncWrite + Unpin,
        CW: AsyncWrite + Unpin,
    {
        if let Err(stop) = self.pump_server(flow, early) {
            stop.tell(&mut flow.to_client);
            return Some(stop);
        }
        if flow.waiting.is_some() {
            let pumped = self.pump_client(flow);
            if let Some(end) = to_server(flow, pumped, server_wr).await {
                return Some(end);
            }
        }
        to_client(flow, client_wr).await
    }

    /// Ends the session: completes what is open in the audit trail, cancels
    /// a statement the client left running, and says goodbye to both sides.
    async fn close<SW, CW>(
        mut self,
        mut flow: Flow,
        end: RelayEnd,
        (mut server_wr, mut client_wr): (SW, CW),
        cancel_upstream: impl std::future::Future<Output = ()>,
    ) -> (RelayEnd, ConnectionState)
    where
        SW: AsyncWrite + Unpin,
        CW: AsyncWrite + Unpin,
    {
        // An early read's record is on its way: let it land (briefly), so
        // the statement is completed as abandoned rather than left open.
        if let Some(Held {
            early: true,
            request_id: Some(request),
            future,
            ..
        }) = flow.held.take()
        {
            if let Ok(Admission::Forward(handle)) =
                tokio::time::timeout(CLOSE_TIMEOUT, future).await
            {
                flow.recorder.attach(request, handle);
            }
        }
        // A statement still held is abandoned: dropping its wait withdraws
        // its review (the ticket's drop).
        flow.held = None;
        let why = match &end {
            RelayEnd::ClientGone { .. } => "the client went away before the statement ended",
            RelayEnd::TokenExpired => "the session ended: the login token expired",
            RelayEnd::ShutDown => "the session ended: the gateway shut down",
            _ => "the connection ended before the statement did",
        };
        for (handle, outcome) in flow.recorder.abandon(Instant::now(), why) {
            self.gate.complete(handle, outcome);
        }
        self.gate.send_finished();

        if let RelayEnd::ClientGone {
            mid_statement: true,
        } = end
        {
            cancel_upstream.await;
        }
        // Tell the server we are leaving (unless it is the one who left).
        if end != RelayEnd::ServerClosed {
            let to_server = &mut flow.to_server;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                if !flow.client_done {
                    to_server.clear();
                    to_server.extend_from_slice(frontend::terminate().as_bytes());
                }
                let _ = server_wr.write_all(to_server).await;
                let _ = server_wr.shutdown().await;
            })
            .await;
        }
        // Give the client what it is owed (a final error, the last results).
        if !matches!(end, RelayEnd::ClientGone { .. }) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                let _ = client_wr.write_all(&flow.to_client).await;
                let _ = client_wr.shutdown().await;
            })
            .await;
        }
        (end, flow.state)
    }

    fn pump_client(&mut self, flow: &mut Flow) -> Result<(), String> {
        let now = Instant::now();
        while !flow.client_done {
            // While an early read's record is written, a Sync or Flush behind
            // it still goes on (the server answers once it has one), nothing
            // else: the next statement waits for the record.
            let early = Held::is_early(&flow.held);
            if flow.held.is_some() && !early {
                break;
            }
            let frame = match flow.waiting.take() {
                Some(frame) => frame,
                None => match split_frame(&mut flow.from_client, flow.max) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Err(format!("invalid message from client: {e}")),
                },
            };
            // Each message is read once, here; a layout PostgreSQL would
            // refuse is refused before anything judges it.
            let message = match Frontend::read(&frame) {
                Ok(message) => message,
                Err(e) => match self.malformed(flow, frame, e, early, now)? {
                    AfterMalformed::Done => continue,
                    AfterMalformed::Waits => break,
                },
            };
            if early && !matches!(message, Frontend::Sync | Frontend::Flush) {
                flow.waiting = Some(frame);
                break;
            }
            if let Frontend::Terminate = message {
                flow.client_done = true;
            }
            let (out, state) = (&mut flow.to_server, &mut flow.state);
            if state.discarding_until_sync {
                match message {
                    Frontend::Sync => {
                        state.discarding_until_sync = false;
                        if let Some(status) = state.sync_answered_here.take() {
                            put_ready_for_query(&mut flow.to_client, status);
                            continue;
                        }
                    }
                    // Flush and Terminate carry nothing of the refused statement.
                    Frontend::Flush | Frontend::Terminate => {}
                    _ => continue,
                }
                let request = Request::of(&message);
                self.send_client_frame(frame, request, About::Nothing, out, state, now);
                continue;
            }
            if state.must_wait(&message) || state.must_wait_for_reading(&message) {
                flow.waiting = Some(frame);
                break;
            }
            state.reading_checked =
                state.needs_reading_check(&message) && self.check_reading(out, state, now);
            // The client's transaction failed here, not on the server (see
            // `ConnectionState::failed_here`): answer as PostgreSQL would.
            let mut forward_instead = None;
            let mut refuse_as_failed = false;
            if state.failed_here {
                match self.in_failed_transaction(&message, out, state, now) {
                    FailedStep::Answered(answer) => {
                        if answer == FailedAnswer::EmptyQuery {
                            put_empty_query_response(&mut flow.to_client);
                        }
                        put_ready_for_query(&mut flow.to_client, FAILED_TRANSACTION);
                        continue;
                    }
                    FailedStep::Go => {}
                    FailedStep::Instead(substitute) => forward_instead = Some(substitute),
                    FailedStep::Refuse => refuse_as_failed = true,
                }
            }
            // The inspector (and so the record) sees what the client sent.
            let (mut verdict, about) = self.inspector.client_frame(&message, &frame, state);
            state.reading_checked = false;
            if refuse_as_failed {
                match &mut verdict {
                    ClientVerdict::Statement(info) => refuse_in_failed_transaction(info),
                    // Not refused after all (the gateway's reading and the
                    // server's agree, so this should not happen): the
                    // server's block fails first, and the server judges.
                    _ => self.fail_server_transaction(out, state, now),
                }
            }
            let request = Request::of(&message);
            let frame = forward_instead.unwrap_or(frame);
            let deferred = &mut flow.deferred;
            match verdict {
                ClientVerdict::Defer => deferred.push((frame, request, about)),
                // Messages after a held-back one wait with it, in order; a
                // Sync or Flush (the client waits for answers) sends them.
                ClientVerdict::Forward
                    if !deferred.is_empty()
                        && !matches!(
                            request,
                            Request::Sync | Request::Flush | Request::Terminate
                        ) =>
                {
                    deferred.push((frame, request, about))
                }
                ClientVerdict::Forward => {
                    self.send_deferred(deferred, out, state, now);
                    self.send_client_frame(frame, request, about, out, state, now)
                }
                ClientVerdict::Statement(info) => {
                    self.gate_statement(flow, *info, (frame, request, about), now)
                }
            }
        }
        Ok(())
    }

    /// A client message whose layout PostgreSQL refuses (a field that runs
    /// past the end of the message, bytes left over): PostgreSQL answers
    /// ERROR 08P01 and goes on, the message without effect (a transaction
    /// in progress fails; after an extended-protocol message it skips to
    /// Sync, and a Sync ends such a skip before it is found malformed), and
    /// so does the gateway, which never sends the message on. A Terminate
    /// with a body ends the session, as PostgreSQL ends it on any. COPY
    /// messages, which PostgreSQL reads without these checks, still end
    /// the session with FATAL 08P01 (`Err`).
    fn malformed(
        &mut self,
        flow: &mut Flow,
        frame: Frame,
        error: crate::protocol::Malformed,
        early: bool,
        now: Instant,
    ) -> Result<AfterMalformed, String> {
        let request = match frame.tag() {
            b'Q' => Request::Query,
            b'F' => Request::FunctionCall { binary: false },
            b'P' => Request::Parse,
            b'B' => Request::Bind,
            b'D' => Request::Describe(None),
            b'E' => Request::Execute,
            b'C' => Request::Close,
            b'H' => Request::Flush,
            b'S' => Request::Sync,
            b'X' => Request::Terminate,
            _ => return Err(error.to_string()),
        };
        // As any message behind an early read's record (see `pump_client`).
        if early {
            flow.waiting = Some(frame);
            return Ok(AfterMalformed::Waits);
        }
        if request == Request::Terminate {
            // PostgreSQL ends the session on any Terminate; the server gets
            // a well-formed one.
            flow.client_done = true;
            let (out, state) = (&mut flow.to_server, &mut flow.state);
            self.send_client_frame(
                frontend::terminate(),
                request,
                About::Nothing,
                out,
                state,
                now,
            );
            return Ok(AfterMalformed::Done);
        }
        let state = &mut flow.state;
        if state.discarding_until_sync {
            if request != Request::Sync {
                // PostgreSQL does not read what it skips.
                return Ok(AfterMalformed::Done);
            }
            // The skip ends here; the refusal below answers this Sync
            // (where the gateway answered the one that began the skip, the
            // session is still idle and its status the one that left).
            state.discarding_until_sync = false;
            state.sync_answered_here = None;
        }
        tracing::warn!(%error, "a malformed client message was refused");
        // Messages held back with a statement that goes to review go first,
        // as at a Sync that ends their batch without an Execute: PostgreSQL
        // answers them before it finds this one malformed.
        self.send_deferred(&mut flow.deferred, &mut flow.to_server, state, now);
        self.refuse(
            request,
            Refusal::new("08P01", error.to_string()),
            (&mut flow.to_server, &mut flow.to_client),
            state,
            now,
        );
        Ok(AfterMalformed::Done)
    }

    /// A statement the inspector judged goes to the gate: sent now when
    /// there is nothing to record or wait for, or when it may run while its
    /// record is written (see [`Held::early`]); otherwise held until the
    /// gate settles it (see [`Relay::admitted`]).
    fn gate_statement(
        &mut self,
        flow: &mut Flow,
        mut info: StatementInfo,
        (frame, request, about): (Frame, Request, About),
        now: Instant,
    ) {
        info.weigh_calls(&self.session.hidden);
        let (out, state) = (&mut flow.to_server, &mut flow.state);
        let mut describe_portal = info.describe_portal.clone();
        let bind = info.bind.clone();
        let changes_code = info.changes_code;
        // A statement nothing of which lasts unless its transaction commits
        // may run while its record is written (its answer waits for the
        // record); anything else waits for the record before it is sent.
        // Messages held back with an earlier one go first (see `admitted`).
        // Nothing runs early where the server may run code the statement
        // does not name (see `hidden`).
        let early = match info.runs_early {
            RunsEarly::Always => true,
            RunsEarly::InBlock => state.in_open_block(),
            RunsEarly::Never => false,
        } && info.decision == hoop_policy::Decision::Allow
            && self.gate.records()
            && flow.deferred.is_empty()
            && self.session.hidden.none();
        let admission = self.gate.admit(info, state.reading.encoding());
        if admission.is_none() || early {
            if changes_code {
                self.session.hidden.sending_change();
            }
            if admission.is_none() {
                self.send_deferred(&mut flow.deferred, out, state, now);
            }
            let describe = describe_portal.take();
            self.forward_statement(&frame, request, about, describe, out, state, now);
        }
        // Nothing to record or wait for: sent, done.
        let Some(future) = admission else {
            return;
        };
        let request_id = if early { state.last_id() } else { None };
        if let Some(id) = request_id {
            flow.recorder.open(OpenStatement::new(id, None, now), state);
        }
        flow.held = Some(Held {
            frame,
            request,
            about,
            describe_portal,
            bind,
            future,
            early,
            request_id,
            changes_code: changes_code && !early,
        });
    }

    /// The gate settled the held statement: run it, refuse it, run the
    /// reviewer's replacement, or (held for review) tell the client and
    /// wait on. Then goes on with the client's messages that waited.
    fn admitted(&mut self, flow: &mut Flow, admission: Admission) -> Result<(), String> {
        let Some(held) = flow.held.take() else {
            return Ok(());
        };
        let now = Instant::now();
        let Flow {
            to_server,
            to_client,
            state,
            deferred,
            recorder,
            ..
        } = &mut *flow;
        if let Admission::Hold { notice, then } = admission {
            let encoding = state.reading.encoding();
            put_report_in(to_client, encoding, "NOTICE", "00000", &notice, None);
            flow.held = Some(Held {
                future: then,
                ..held
            });
            return Ok(());
        }
        // What was held back with the statement goes first, whatever the
        // outcome: the client expects its answers (and a refusal then
        // fails the batch at the statement, as PostgreSQL would).
        self.send_deferred(deferred, to_server, state, now);
        match admission {
            Admission::Hold { .. } => {}
            Admission::Forward(record) => {
                if held.changes_code {
                    self.session.hidden.sending_change();
                }
                self.forward_statement(
                    &held.frame,
                    held.request,
                    held.about,
                    held.describe_portal,
                    to_server,
                    state,
                    now,
                );
                if let (Some(handle), Some(request)) = (record, state.last_id()) {
                    recorder.open(OpenStatement::new(request, Some(handle), now), state);
                }
            }
            Admission::Refuse(error) => match syntax_checked(&error, &held.frame) {
                Some(sql) => {
                    self.refuse_syntax_error(held.request, sql, error, to_server, state, now)
                }
                None => self.refuse(held.request, error, (to_server, to_client), state, now),
            },
            Admission::Replace { sql, record } => {
                let function_call = matches!(held.request, Request::FunctionCall { .. });
                match self.inspector.check_replacement(function_call, &sql, state) {
                    Err(refusal) => {
                        if let Some(handle) = record {
                            self.gate.complete(handle, refusal.outcome());
                        }
                        self.refuse(held.request, refusal, (to_server, to_client), state, now);
                    }
                    Ok(()) => {
                        // A reviewer's text: whatever it does, taken as a change.
                        self.session.hidden.sending_change();
                        state.statement_replaced();
                        let request = self.run_replacement(&held, &sql, to_server, state, now);
                        if let (Some(handle), Some(request)) = (record, request) {
                            recorder.open(OpenStatement::new(request, Some(handle), now), state);
                        }
                    }
                }
            }
        }
        self.pump_client(flow)
    }

    /// Sends a reviewer's replacement in place of the held Query or Execute.
    /// In the extended protocol it is parsed, bound with the held portal's
    /// parameters and result formats, described (for the masker) and
    /// executed under the gateway's own names; the client sees only the
    /// Execute's answer, so it must return the columns the original would
    /// have. Returns the id of the request whose answer is the statement's
    /// (the Query, or the replacement's Execute).
    fn run_replacement(
        &mut self,
        held: &Held,
        sql: &str,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) -> Option<u64> {
        let Ok(Frontend::Execute { max_rows, .. }) = Frontend::read(&held.frame) else {
            let query = frontend::query(sql.as_bytes());
            self.send_client_frame(query, Request::Query, About::Nothing, out, state, now);
            return state.last_id();
        };
        let parse = frontend::parse(MODIFIED_STATEMENT, sql.as_bytes());
        let statement = state.prepare(
            MODIFIED_STATEMENT,
            Prepared::Parse {
                sql: Bytes::copy_from_slice(sql.as_bytes()),
                strings: state.reading.strings,
                needs_review: false,
            },
        );
        self.send_silent(
            parse,
            Request::Parse,
            About::Statement(statement),
            out,
            state,
            now,
        );

        // The parameters and result formats of the held portal.
        let held_bind = held.bind.as_deref().and_then(frontend::Bind::from_body);
        let body = match held_bind {
            Some(bind) => bind.renamed(MODIFIED_STATEMENT, MODIFIED_STATEMENT),
            None => frontend::Bind::empty(MODIFIED_STATEMENT, MODIFIED_STATEMENT),
        };
        let formats = frontend::Bind::from_body(&body)
            .map(|bind| bind.result_formats().collect())
            .unwrap_or_default();
        let body = body.freeze();
        let bind = frontend::bind(&body);
        let portal = state.bind(MODIFIED_STATEMENT, statement, body, formats);
        self.send_silent(bind, Request::Bind, About::Portal(portal), out, state, now);

        let about = state.describe(Target::Portal, MODIFIED_STATEMENT);
        state.on_gateway_describe(Target::Portal, Some(portal), DescribeOrigin::Gateway);
        out.extend_from_slice(frontend::describe(Target::Portal, MODIFIED_STATEMENT).as_bytes());

        // Executed with the held Execute's row limit.
        let executed = state.execute(MODIFIED_STATEMENT);
        debug_assert_eq!(about, About::Portal(executed.portal));
        let execute = frontend::execute(MODIFIED_STATEMENT, max_rows);
        self.send_client_frame(
            execute,
            Request::Execute,
            About::Portal(executed.portal),
            out,
            state,
            now,
        );
        let request = state.last_id();

        for target in [Target::Portal, Target::Statement] {
            let about = state.close(target, MODIFIED_STATEMENT);
            let close = frontend::close(target, MODIFIED_STATEMENT);
            self.send_silent(close, Request::Close, about, out, state, now);
        }
        request
    }

    /// Sends the messages held back with a statement, in order.
    fn send_deferred(
        &mut self,
        deferred: &mut Vec<(Frame, Request, About)>,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        for (frame, request, about) in deferred.drain(..) {
            self.send_client_frame(frame, request, about, out, state, now);
        }
    }

    /// A message of the gateway's own: its completion is not for the client.
    fn send_silent(
        &mut self,
        frame: Frame,
        request: Request,
        about: About,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        self.send_client_frame(frame, request, about, out, state, now);
        state.mark_last_silent();
    }

    /// Sends, ahead of a client's text, a statement that fails the batch
    /// unless the server still reads text as it last reported (see
    /// [`ConnectionState::needs_reading_check`]): a statement before it in
    /// the batch may have changed that, and no report comes before the
    /// Sync. Passed, its answers are the gateway's; failed, the server
    /// skips the text and the rest of the batch, and the client gets a
    /// refusal in the text's place. Returns whether it was sent.
    fn check_reading(
        &mut self,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) -> bool {
        let Some(sql) = state.reading.check_sql() else {
            return false;
        };
        let error = Refusal::new(
            crate::upstream::SQLSTATE_FEATURE_NOT_SUPPORTED,
            "a statement earlier in this pipeline changed client_encoding or \
             standard_conforming_strings, so the server would read this text differently from \
             how the gateway read it: it did not run, nor anything after it up to the Sync; \
             send it after a Sync",
        )
        .frame(state.reading.encoding())
        .freeze();
        // A failed check leaves its statement (the server skipped the
        // Closes after it): closed first (closing none is no error).
        let close = |target| (frontend::close(target, READING_CHECK), Request::Close);
        let before = [
            close(Target::Portal),
            close(Target::Statement),
            (
                frontend::parse(READING_CHECK, sql.as_bytes()),
                Request::Parse,
            ),
            (
                frontend::bind(&frontend::Bind::empty(READING_CHECK, READING_CHECK)),
                Request::Bind,
            ),
        ];
        for (frame, request) in before {
            self.send_silent(frame, request, About::Nothing, out, state, now);
        }
        out.extend_from_slice(frontend::execute(READING_CHECK, 0).as_bytes());
        state.on_reading_check(error);
        for (frame, request) in [close(Target::Portal), close(Target::Statement)] {
            self.send_silent(frame, request, About::Nothing, out, state, now);
        }
        true
    }

    /// Sends a statement the gate admitted (after a Describe of its portal
    /// when the masker needs the row shape).
    #[allow(clippy::too_many_arguments)]
    fn forward_statement(
        &mut self,
        frame: &Frame,
        request: Request,
        about: About,
        describe_portal: Option<(Vec<u8>, RecordId)>,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        if let Some((name, portal)) = describe_portal {
            state.on_gateway_describe(Target::Portal, Some(portal), DescribeOrigin::Gateway);
            out.extend_from_slice(frontend::describe(Target::Portal, &name).as_bytes());
        }
        // Kept (held, or replaced by a reviewer's text): copied.
        self.note_client_frame(frame.len(), request, about, state, now);
        out.extend_from_slice(frame.as_bytes());
    }

    /// Refuses a client request: nothing of it reaches the server (see
    /// [`ClientVerdict::Statement`]).
    ///
    /// Where nothing of the client's is open on the server (no answer
    /// pending, no extended-protocol message since the last Sync), the
    /// gateway answers alone and the server does not hear of it (and logs
    /// no error): outside a transaction block nothing needs undoing; inside
    /// one, the client is told the block failed (ReadyForQuery `E`) and the
    /// gateway keeps it failed until the client ends it (see
    /// [`ConnectionState::failed_here`]). A refused extended-protocol
    /// message skips the client's messages up to Sync, which the gateway
    /// answers too.
    ///
    /// Anywhere else the server must fail the way the statement would have
    /// (roll back an implicit transaction's earlier statements, skip to
    /// Sync), so the gateway sends it a Describe of a statement that does
    /// not exist and replaces the answer with the refusal.
    fn refuse(
        &mut self,
        request: Request,
        refusal: Refusal,
        (out, to_client): (&mut BytesMut, &mut BytesMut),
        state: &mut ConnectionState,
        now: Instant,
    ) {
        self.count_refused(request, state);
        // (A Sync is refused only when malformed: answered as the Sync.)
        let ends_batch = matches!(
            request,
            Request::Query | Request::FunctionCall { .. } | Request::Sync
        );
        if state.is_idle() && state.at_sync_point {
            let status = match state.transaction_status {
                IDLE => IDLE,
                IN_TRANSACTION => {
                    state.failed_here = true;
                    FAILED_TRANSACTION
                }
                _ => FAILED_TRANSACTION,
            };
            state.transaction_status = status;
            refusal.put(to_client, state.reading.encoding());
            if ends_batch {
                put_ready_for_query(to_client, status);
            } else {
                state.discarding_until_sync = true;
                state.sync_answered_here = Some(status);
            }
            return;
        }
        stand_in(
            DescribeOrigin::Refusal(refusal.frame(state.reading.encoding()).freeze()),
            out,
            state,
        );
        self.end_refused_batch(ends_batch, out, state, now);
    }

    /// Behind a refusal's messages to the server: a Query or FunctionCall
    /// (`ends_batch`) is followed by a Sync of the gateway's, whose
    /// ReadyForQuery is the client's; after an extended-protocol message
    /// the client's messages up to its own Sync are discarded.
    fn end_refused_batch(
        &mut self,
        ends_batch: bool,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        if ends_batch {
            self.send_client_frame(
                frontend::sync(),
                Request::Sync,
                About::Nothing,
                out,
                state,
                now,
            );
        } else {
            state.discarding_until_sync = true;
        }
    }

    /// Counts and logs a refused request.
    fn count_refused(&mut self, request: Request, state: &mut ConnectionState) {
        self.metrics.statements.inc();
        self.statements += 1;
        let span = tracing::info_span!("statement", seq = self.statements, kind = ?request);
        span.in_scope(|| tracing::info!("statement refused by the gateway"));
        // Whatever the string would have prepared in SQL, it did not.
        state.statement_refused();
    }

    /// Refuses a Query or Parse whose text the gateway's copy of
    /// PostgreSQL's grammar rejected, with the server's own answer: the
    /// server is sent a Parse of the text under a name of the gateway's, a
    /// Close of that name, and the refusal's stand-in Describe. A Parse
    /// runs nothing: the server's grammar reads the text and, where it
    /// rejects it too, answers with its own error (its DETAIL and HINT, its
    /// version's wording) and skips the rest, failing the transaction as
    /// the statement would have. Where its grammar accepts the text (another
    /// version's), the gateway still cannot read it: the Close drops what the
    /// Parse made, and a stand-in Describe of it fails (its error, the one
    /// the server logs, names the check) and is replaced by the refusal (see
    /// [`Pending::SyntaxCheck`]). Either way the server's transaction
    /// fails for real, so the gateway no longer keeps a failed block of its
    /// own ([`ConnectionState::failed_here`]).
    fn refuse_syntax_error(
        &mut self,
        request: Request,
        sql: &[u8],
        refusal: Refusal,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        self.count_refused(request, state);
        state.failed_here = false;
        let error = refusal.frame(state.reading.encoding()).freeze();
        state.on_syntax_check(error.clone());
        out.extend_from_slice(frontend::parse(SYNTAX_CHECK_STATEMENT, sql).as_bytes());
        let close = frontend::close(Target::Statement, SYNTAX_CHECK_STATEMENT);
        self.send_silent(close, Request::Close, About::Nothing, out, state, now);
        // Of the name just closed: the server's log tells these refusals
        // (texts only the server's grammar reads) from the others.
        stand_in_named(
            SYNTAX_CHECK_STATEMENT,
            DescribeOrigin::Refusal(error),
            out,
            state,
        );
        self.end_refused_batch(matches!(request, Request::Query), out, state, now);
    }

    /// What becomes of a client message while the client's transaction
    /// block has failed here and not on the server (see
    /// [`ConnectionState::failed_here`]). PostgreSQL runs only a statement
    /// that ends the block there (`IsTransactionExitStmt`) and answers
    /// anything else with 25P02; the gateway does the same for a simple
    /// Query and a Parse:
    ///
    /// - `ROLLBACK` (or `ROLLBACK TO SAVEPOINT`) does to the healthy server
    ///   transaction what it does to a failed one: sent as it is;
    /// - `COMMIT` (or `PREPARE TRANSACTION`) would commit it, so a
    ///   `ROLLBACK` goes instead (what PostgreSQL does with them in a failed
    ///   block, command tag `ROLLBACK` included);
    /// - what succeeds alike in a failed block and a healthy one (an empty
    ///   Parse, a Describe of a statement that is empty or ends the block,
    ///   Flush, a Sync behind them) goes to the server, whose ReadyForQuery
    ///   then says `E`; an empty Query and a lone Sync are answered here.
    ///
    /// Any other message first fails the server's transaction for real (the
    /// server then answers it itself, and logs the stand-in's error).
    fn in_failed_transaction(
        &mut self,
        message: &Frontend<'_>,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) -> FailedStep {
        use hoop_policy::{InFailedTransaction as Read, TransactionExit};
        // As the server reads the text now, or read a prepared one.
        let read = |sql: &[u8], state: &ConnectionState| match state.read_text(sql) {
            Ok(sql) => hoop_policy::in_failed_transaction(&sql, state.reading.strings),
            Err(_) => Read::Unparsed,
        };
        let (name, sql, query) = match message {
            Frontend::Flush | Frontend::Terminate => return FailedStep::Go,
            Frontend::Sync if state.is_idle() => return FailedStep::Answered(FailedAnswer::Ready),
            Frontend::Sync => return FailedStep::Go,
            Frontend::Query { sql } if state.is_idle() => (&b""[..], read(sql, state), true),
            Frontend::Parse(parse) if state.is_idle() => {
                (parse.name, read(parse.sql, state), false)
            }
            Frontend::Describe {
                target: Some(Target::Statement),
                name,
            } => {
                let sql = match state.statement(name) {
                    Some((_, statement)) => match &statement.prepared {
                        Prepared::Parse { sql, strings, .. } => {
                            Some(std::str::from_utf8(sql).map_or(Read::Unparsed, |sql| {
                                hoop_policy::in_failed_transaction(sql, *strings)
                            }))
                        }
                        Prepared::Sql(_) => None,
                    },
                    None => None,
                };
                return match sql {
                    // No result description, in a failed block or not.
                    Some(Read::Empty | Read::Ends(..)) => FailedStep::Go,
                    _ => {
                        self.fail_server_transaction(out, state, now);
                        FailedStep::Go
                    }
                };
            }
            _ => {
                self.fail_server_transaction(out, state, now);
                return FailedStep::Go;
            }
        };
        match sql {
            Read::Ends(TransactionExit::Rollback, _) => {
                state.failed_here = false;
                FailedStep::Go
            }
            Read::Ends(TransactionExit::Commit { chain }, 1) => {
                state.failed_here = false;
                let rollback: &[u8] = if chain {
                    b"ROLLBACK AND CHAIN"
                } else {
                    b"ROLLBACK"
                };
                FailedStep::Instead(if query {
                    frontend::query(rollback)
                } else {
                    frontend::parse(name, rollback)
                })
            }
            Read::Empty if query => FailedStep::Answered(FailedAnswer::EmptyQuery),
            Read::Empty => FailedStep::Go,
            // PostgreSQL reports a syntax error first (the classification
            // finds it), and a Query's other statements with 25P02.
            Read::Unparsed => FailedStep::Refuse,
            Read::Refused if query => FailedStep::Refuse,
            _ => {
                self.fail_server_transaction(out, state, now);
                FailedStep::Go
            }
        }
    }

    /// Fails the server's transaction block as the gateway failed it for
    /// the client, before a message the gateway cannot answer itself: a
    /// Describe of a statement that does not exist, then Sync, answered
    /// to nobody.
    fn fail_server_transaction(
        &mut self,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        state.failed_here = false;
        stand_in(DescribeOrigin::FailTransaction, out, state);
        self.send_silent(
            frontend::sync(),
            Request::Sync,
            About::Nothing,
            out,
            state,
            now,
        );
    }

    /// Queues a message for the server (without copying it, see
    /// [`Frame::forward`]) and records it in the state.
    fn send_client_frame(
        &mut self,
        frame: Frame,
        request: Request,
        about: About,
        out: &mut BytesMut,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        self.note_client_frame(frame.len(), request, about, state, now);
        frame.forward(out);
    }

    /// Records a message queued for the server in the state (with the
    /// records the client's order resolved it to).
    fn note_client_frame(
        &mut self,
        len: usize,
        request: Request,
        about: About,
        state: &mut ConnectionState,
        now: Instant,
    ) {
        if state.on_client_frame(request, about, now) == state::Started::Statement {
            self.metrics.statements.inc();
            self.statements += 1;
            // Never the SQL text or parameters: they may hold card numbers.
            let span = tracing::debug_span!("statement", seq = self.statements, kind = ?request);
            span.in_scope(|| tracing::debug!(bytes = len, "statement sent upstream"));
        }
    }

    /// Judges and passes on the server's complete messages: to the client,
    /// or (`withhold`, while an early read's record is written) to
    /// [`Flow::withheld`].
    fn pump_server(&mut self, flow: &mut Flow, withhold: bool) -> Result<(), RelayEnd> {
        let now = Instant::now();
        let Flow {
            from_server: input,
            to_client,
            withheld,
            state,
            recorder,
            max,
            ..
        } = flow;
        let out = if withhold { withheld } else { to_client };
        let max = (*max).max(crate::protocol::DEFAULT_MAX_MESSAGE_BYTES);
        loop {
            let frame = match split_frame(input, max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return Err(RelayEnd::ProtocolViolation(format!(
                        "invalid message from the database: {e}"
                    )))
                }
            };
            // Read once; a message the gateway cannot read is not passed on.
            let message = Backend::read(&frame)
                .map_err(|e| RelayEnd::ProtocolViolation(format!("the database sent an {e}")))?;
            if matches!(message, Backend::ReadyForQuery { status: IDLE }) {
                self.session.hidden.transaction_ended();
            }
            let completion = matches!(
                message,
                Backend::ParseComplete
                    | Backend::BindComplete
                    | Backend::CloseComplete
                    | Backend::ReadyForQuery { .. }
            );
            if state.front_is_silent() && completion {
                // The completion of a message the gateway sent itself.
                let _ = self.inspector.server_frame(state, &message, &frame);
                state.on_server_frame(&message, now);
                continue;
            }
            let description = matches!(message, Backend::RowDescription(_) | Backend::NoData);
            let verdict = match state.front() {
                // The server's grammar rejected the text too: its error
                // (masked like any) is the answer.
                // The gateway's reading check: its row and completion are
                // its own; its error is the refusal of the text behind it.
                Some(Pending::ReadingCheck(error)) => match &message {
                    Backend::ErrorResponse(_) => ServerVerdict::Replace(BytesMut::from(&error[..])),
                    _ => ServerVerdict::Drop,
                },
                Some(Pending::SyntaxCheck(error)) => match &message {
                    Backend::ErrorResponse(body) if !raised_by_grammar(body) => {
                        ServerVerdict::Replace(BytesMut::from(&error[..]))
                    }
                    _ => self.inspector.server_frame(state, &message, &frame),
                },
                Some(Pending::Describe {
                    origin: DescribeOrigin::Refusal(error),
                    ..
                }) => match message {
                    // The server's answer to the stand-in Describe becomes
                    // the refusal (ParameterDescription: the name existed).
                    Backend::ErrorResponse(_) | Backend::ParameterDescription => {
                        ServerVerdict::Replace(BytesMut::from(&error[..]))
                    }
                    _ if description => ServerVerdict::Drop,
                    _ => self.inspector.server_frame(state, &message, &frame),
                },
                Some(Pending::Describe {
                    origin: DescribeOrigin::FailTransaction,
                    ..
                }) if description
                    || matches!(
                        message,
                        Backend::ErrorResponse(_) | Backend::ParameterDescription
                    ) =>
                {
                    ServerVerdict::Drop
                }
                Some(Pending::Describe {
                    origin: DescribeOrigin::Gateway,
                    ..
                }) if description => {
                    // For the masker only.
                    let _ = self.inspector.server_frame(state, &message, &frame);
                    ServerVerdict::Drop
                }
                // What went to the server while the client's block failed
                // here succeeds alike in a failed block; the client is told
                // its block is still failed.
                _ if matches!(message, Backend::ReadyForQuery { .. }) && state.failed_here => {
                    let mut ready = BytesMut::new();
                    put_ready_for_query(&mut ready, FAILED_TRANSACTION);
                    ServerVerdict::Replace(ready)
                }
                _ if matches!(message, Backend::ParameterStatus { .. }) => ServerVerdict::Forward,
                _ => self.inspector.server_frame(state, &message, &frame),
            };
            if !recorder.is_empty() {
                recorder.observe(state, &message, &frame, &verdict);
            }
            let took = state.on_server_frame(&message, now);
            if state.failed_here {
                state.transaction_status = FAILED_TRANSACTION;
            }
            if let Some(took) = took {
                self.metrics.request_duration.observe(took.as_secs_f64());
                tracing::debug!(
                    micros = took.as_micros() as u64,
                    status = %(state.transaction_status as char),
                    "request complete"
                );
            }
            if !recorder.is_empty() {
                for (handle, outcome) in recorder.finished(state, now) {
                    self.gate.complete(handle, outcome);
                }
            }
            if let Backend::ParameterStatus { .. } = message {
                if crate::upstream::reports_unreadable_encoding(&frame) {
                    // Nothing after it is read the way the server reads it.
                    return Err(RelayEnd::UnreadableEncoding);
                }
                if let Some(bytes) =
                    crate::upstream::filter_parameter_status(&frame, &self.session.mapped_role)
                {
                    if let Some(masked) = mask_parameter_status(&bytes) {
                        out.extend_from_slice(&masked);
                    }
                }
                continue;
            }
            verdict.send(frame, out);
        }
        Ok(())
    }
}

/// Sends the server a Describe of a statement that does not exist, so it
/// fails (and skips to Sync, aborts a transaction block) where the gateway
/// needs it to; `origin` says whose its answer is.
fn stand_in(origin: DescribeOrigin, out: &mut BytesMut, state: &mut ConnectionState) {
    stand_in_named(REFUSED_STATEMENT, origin, out, state);
}

/// [`stand_in`] asking for `name`, which the server's log then shows.
fn stand_in_named(
    name: &[u8],
    origin: DescribeOrigin,
    out: &mut BytesMut,
    state: &mut ConnectionState,
) {
    state.on_gateway_describe(Target::Statement, None, origin);
    out.extend_from_slice(frontend::describe(Target::Statement, name).as_bytes());
}

/// The text of a refused Query or Parse the server is to parse itself
/// (see [`Refusal::syntax`]).
fn syntax_checked<'f>(refusal: &Refusal, frame: &'f Frame) -> Option<&'f [u8]> {
    if !refusal.syntax {
        return None;
    }
    let sql = Frontend::read(frame).ok()?.sql()?;
    // A zero byte would end the text early in the gateway's Parse.
    (!sql.contains(&0)).then_some(sql)
}

/// Whether the server's error for the gateway's Parse of a text came from
/// its grammar reading the text: not from the Parse message itself
/// (several statements in one Parse, a failed transaction block:
/// `exec_parse_message`) nor from storing it under a name a client took
/// (`StorePreparedStatement`), which are answered only once the grammar
/// has accepted the text. An error without the routine field (a server
/// that leaves it out) counts as the grammar's: it is an error either way,
/// and nothing ran.
fn raised_by_grammar(body: &[u8]) -> bool {
    !crate::protocol::backend::fields(body)
        .iter()
        .any(|&(field, value)| {
            field == b'R' && matches!(value, b"exec_parse_message" | b"StorePreparedStatement")
        })
}

/// See [`Relay::in_failed_transaction`].
enum FailedStep {
    /// Handle the message as usual.
    Go,
    /// Answered by the gateway (then ReadyForQuery `E`).
    Answered(FailedAnswer),
    /// Judge and record the message, send this one in its place.
    Instead(Frame),
    /// Record the statement and answer 25P02 (unless it is a syntax error).
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailedAnswer {
    /// A lone Sync: ReadyForQuery only.
    Ready,
    /// A Query without statements: EmptyQueryResponse first.
    EmptyQuery,
}

/// What PostgreSQL answers a statement in a failed transaction, once it
/// parsed: 25P02 (a syntax error is reported first, as the server does).
fn refuse_in_failed_transaction(info: &mut StatementInfo) {
    let syntax_error = matches!(
        &info.decision,
        hoop_policy::Decision::Block { rule, .. } if rule == hoop_policy::SYNTAX_ERROR_RULE
    );
    if !syntax_error {
        info.runs_early = RunsEarly::Never;
        info.calls = None;
        info.decision = hoop_policy::Decision::Block {
            rule: hoop_policy::FAILED_TRANSACTION_RULE.to_owned(),
            message: hoop_policy::IN_FAILED_TRANSACTION_MESSAGE.to_owned(),
            sqlstate: hoop_policy::SQLSTATE_IN_FAILED_TRANSACTION,
            position: None,
        };
    }
}

/// What became of a malformed client message (see [`Relay::malformed`]).
enum AfterMalformed {
    /// Answered with an error (or skipped, as PostgreSQL skips to Sync),
    /// or a Terminate taken as one.
    Done,
    /// Behind an early read's record, like any other message.
    Waits,
}

/// One connection's buffers and session model, which the relay's steps
/// share.
struct Flow {
    from_client: BytesMut,
    to_server: BytesMut,
    from_server: BytesMut,
    to_client: BytesMut,
    /// Server answers withheld while an early read's record is written.
    withheld: BytesMut,
    state: ConnectionState,
    /// The statement waiting for the gate.
    held: Option<Held>,
    /// Client messages held back with a statement that goes to review,
    /// with the records each is about.
    deferred: Vec<(Frame, Request, About)>,
    /// A client message that waits for the server's answers (see
    /// [`ConnectionState::must_wait`]).
    waiting: Option<Frame>,
    recorder: Recorder,
    /// Set once the client has sent Terminate.
    client_done: bool,
    /// Largest client message accepted.
    max: usize,
}

impl Flow {
    fn new(from_client: BytesMut, from_server: BytesMut, record_rows: usize, max: usize) -> Flow {
        Flow {
            from_client,
            to_server: BytesMut::with_capacity(16 * 1024),
            from_server,
            to_client: BytesMut::with_capacity(16 * 1024),
            withheld: BytesMut::new(),
            state: ConnectionState::new(),
            held: None,
            deferred: Vec::new(),
            waiting: None,
            recorder: Recorder::new(record_rows),
            client_done: false,
            max,
        }
    }

    /// Whether the client's messages are read now. While a statement is
    /// held they wait in the buffer; reading on (up to a bound) notices a
    /// disconnect.
    fn client_readable(&self) -> bool {
        !self.client_done
            && self.to_server.len() < HIGH_WATER
            && ((self.held.is_none() && self.waiting.is_none())
                || self.from_client.len() < HIGH_WATER)
    }

    /// Nothing in flight either way: a draining gateway may end the session.
    fn is_quiet(&self) -> bool {
        self.state.is_idle()
            && self.held.is_none()
            && self.to_client.is_empty()
            && self.to_server.is_empty()
    }

    fn client_gone(&self) -> RelayEnd {
        RelayEnd::ClientGone {
            mid_statement: !self.state.is_idle(),
        }
    }
}

/// Masks the card numbers in a ParameterStatus frame (name and value):
/// `SELECT set_config('application_name', <a card number>, false)` makes
/// the server report the number to the client. Masked with `pan_last4`
/// whatever the content strategy, since a parameter's value is shown as
/// it is. `None`: a malformed frame, which is not forwarded (fail closed).
fn mask_parameter_status(frame: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    use hoop_common::mask::{Masker, Strategy};
    use std::borrow::Cow;
    let body = frame.get(5..)?;
    let (name, rest) = crate::protocol::take_cstr(body)?;
    let (value, rest) = crate::protocol::take_cstr(rest)?;
    if !rest.is_empty() {
        return None;
    }
    if !hoop_common::pan::contains_pan(name) && !hoop_common::pan::contains_pan(value) {
        return Some(Cow::Borrowed(frame));
    }
    let masker = Masker::new(Strategy::PanLast4, None).ok()?;
    let mut out = BytesMut::with_capacity(frame.len());
    put_parameter_status(
        &mut out,
        &masker.mask_bytes(name),
        &masker.mask_bytes(value),
    );
    Some(Cow::Owned(out.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::mask_parameter_status;
    use crate::protocol::backend::put_parameter_status;

    fn parameter_status(name: &str, value: &str) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        put_parameter_status(&mut out, name.as_bytes(), value.as_bytes());
        out.to_vec()
    }

    #[test]
    fn parameter_status_values_are_masked() {
        let frame = parameter_status("application_name", "4012 8888 8888 1881");
        let masked = mask_parameter_status(&frame).expect("well-formed");
        assert_eq!(
            masked.as_ref(),
            parameter_status("application_name", "**** **** **** 1881").as_slice()
        );
        let plain = parameter_status("TimeZone", "UTC");
        assert!(matches!(
            mask_parameter_status(&plain),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert!(mask_parameter_status(&plain[..plain.len() - 1]).is_none());
    }
}
