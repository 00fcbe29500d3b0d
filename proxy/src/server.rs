//! The listener: accepts clients, runs handshake → login → upstream session
//! setup → relay for each, and shuts down gracefully (stop accepting, let
//! in-flight statements finish within the grace period, then close).
//!
//! The top of the gateway: it wires the other modules together, and no
//! module imports it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hoop_common::token::{SessionClaims, SessionSigner, TOKEN_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use hoop_audit::{AuditStore, EndReason, Event, SessionEnd, SessionStart, Timestamp};
use hoop_reviews::ReviewHub;

use crate::auth::Authenticator;
use crate::cancel::{CancelRegistry, CancelTarget, GatewayKey};
use crate::config::Config;
use crate::handshake::{self, Ended, Negotiated};
use crate::login::{self, Admitted, LoginChecks, LoginLimiter};
use crate::metrics::{LoginOutcome, Metrics};
use crate::protocol::backend::{
    self, put_authentication_ok, put_backend_key_data, put_error, put_ready_for_query, Severity,
};
use crate::relay::gate::{Gate, GateSession};
use crate::relay::hidden::HiddenCode;
use crate::relay::inspect::Inspector;
use crate::relay::{Relay, RelayEnd, RelaySession};
use crate::threads::SessionThreads;
use crate::tls::PgStream;
use crate::upstream::{self, Upstream, UpstreamError};

/// Everything connections share.
pub(crate) struct Context {
    pub config: Config,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub upstream_tls: Option<tokio_rustls::TlsConnector>,
    /// Shared with the review API, which verifies reviewers' tokens with it.
    pub auth: Arc<Authenticator>,
    pub signer: SessionSigner,
    pub cancel: CancelRegistry,
    pub login_limiter: LoginLimiter,
    pub metrics: Arc<Metrics>,
    /// The audit trail; opened before the gateway accepts anyone.
    pub audit: AuditStore,
    /// Reviews of held statements (decided through the admin API and page).
    pub reviews: ReviewHub,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen.tls: {0}")]
    Tls(#[from] crate::tls::TlsSetupError),
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    #[error("session.signing_key: {0}")]
    Signer(String),
    #[error("audit store: {0} (the gateway does not serve without a working audit trail)")]
    Audit(String),
    #[error("reviews: {0}")]
    Reviews(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound, not yet running gateway.
pub struct Gateway {
    ctx: Arc<Context>,
    listener: TcpListener,
    admin: Option<TcpListener>,
}

impl Gateway {
    pub async fn bind(config: Config) -> Result<Gateway, ServeError> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::tls::server_acceptor(cert, key)?),
            None => None,
        };
        let upstream_tls = crate::tls::upstream_connector(
            config.upstream.tls,
            config.upstream.tls_ca_file.as_deref(),
        )?;
        let signer =
            SessionSigner::from_seed_base64(&config.session_key_id, &config.session_signing_seed)
                .map_err(|e| ServeError::Signer(e.to_string()))?;
        let auth = Arc::new(Authenticator::new(config.identity.clone())?);
        if let Err(e) = auth.warm_up().await {
            tracing::warn!(error = %e, "identity provider not reachable yet; logins retry it");
        }
        let audit = crate::audit::open_store(&config.audit)
            .await
            .map_err(|e| ServeError::Audit(e.to_string()))?;
        let (reviews, listener, admin) = match start_recorded(&config, &audit).await {
            Ok(started) => started,
            Err(e) => {
                if let Err(close) = audit.close("the gateway failed to start").await {
                    tracing::error!(error = %close, "closing the audit store failed");
                }
                return Err(e);
            }
        };
        let ctx = Context {
            login_limiter: LoginLimiter::new(config.max_failed_logins, config.failed_login_window),
            config,
            tls,
            upstream_tls,
            auth,
            signer,
            cancel: CancelRegistry::default(),
            metrics: Arc::new(Metrics::new()),
            audit,
            reviews,
        };
        Ok(Gateway {
            ctx: Arc::new(ctx),
            listener,
            admin,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.ctx.config.listen)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Gateway {
            ctx,
            listener,
            admin,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin_task = admin.map(|l| {
            let router = crate::admin::router(ctx.metrics.clone()).merge(hoop_reviews::router(
                ctx.reviews.clone(),
                Arc::new(crate::reviews::ReviewerTokens(ctx.auth.clone())),
            ));
            let mut rx = stop_rx.clone();
            tokio::spawn(crate::admin::serve(l, router, async move {
                let _ = rx.wait_for(|v| *v).await;
            }))
        });
        let retention = crate::audit::spawn_retention(ctx.audit.clone());
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "hoop gateway accepting connections");
        let mut threads = match SessionThreads::start(ctx.config.threads) {
            Ok(threads) => threads,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the session threads");
                return;
            }
        };
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let ctx = ctx.clone();
                        let stop = stop_rx.clone();
                        // The socket moves to the session's thread (and its
                        // event loop): see `threads`.
                        let tcp = match tcp.into_std() {
                            Ok(tcp) => tcp,
                            Err(e) => {
                                tracing::warn!(error = %e, %peer, "cannot hand the connection to a session thread");
                                continue;
                            }
                        };
                        connections.spawn_on(
                            async move {
                                match TcpStream::from_std(tcp) {
                                    Ok(tcp) => handle(ctx, tcp, peer, stop).await,
                                    Err(e) => tracing::warn!(error = %e, %peer, "cannot take the connection on a session thread"),
                                }
                            },
                            threads.next(),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        let grace = ctx.config.shutdown_grace;
        tracing::info!(
            connections = connections.len(),
            ?grace,
            "shutting down: no new connections; waiting for in-flight statements"
        );
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = connections.len(),
                "grace period over; closing remaining connections"
            );
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
        // Every session is over: the threads end.
        tokio::task::spawn_blocking(move || drop(threads))
            .await
            .ok();
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        retention.abort();
        let stopped = ctx
            .audit
            .record_event(&Event::GatewayStopped {
                reason: "shutdown".into(),
            })
            .await;
        if let Err(e) = stopped {
            tracing::error!(error = %e, "cannot record the gateway stop in the audit store");
        }
        match ctx.audit.clone().close("gateway stopped").await {
            Ok(checkpoint) => tracing::info!(
                records = checkpoint.length,
                "audit store closed with a final signed checkpoint"
            ),
            Err(e) => tracing::error!(error = %e, "final audit checkpoint failed"),
        }
        tracing::info!("hoop gateway stopped");
    }
}

/// With the audit trail open: record the configuration, open the review
/// hub, bind the listeners, record the start. An error leaves nothing
/// listening; the caller closes the trail.
async fn start_recorded(
    config: &Config,
    audit: &AuditStore,
) -> Result<(ReviewHub, TcpListener, Option<TcpListener>), ServeError> {
    record(
        audit,
        Event::ConfigReloaded {
            source: config.path.display().to_string(),
            ok: true,
            detail: Some("loaded at start".into()),
        },
    )
    .await?;
    let reviews = crate::reviews::open_hub(config, audit.clone())
        .await
        .map_err(|e| ServeError::Reviews(e.to_string()))?;
    let (listener, admin) = bind_listeners(config).await?;
    record(
        audit,
        Event::GatewayStarted {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    )
    .await?;
    if !config.audit.record_statements {
        tracing::warn!(
            "[audit] record_statements = false: statements are NOT recorded one by one; \
             this is for measuring the cost of recording, not for a PCI environment"
        );
        record(
            audit,
            Event::RecordingStopped {
                reason: "per-statement records turned off ([audit] record_statements = false)"
                    .to_owned(),
            },
        )
        .await?;
    }
    Ok((reviews, listener, admin))
}

async fn record(audit: &AuditStore, event: Event) -> Result<(), ServeError> {
    audit
        .record_event(&event)
        .await
        .map_err(|e| ServeError::Audit(e.to_string()))
}

/// The client listener and, when `[admin]` is set, the admin listener.
async fn bind_listeners(config: &Config) -> Result<(TcpListener, Option<TcpListener>), ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let admin = match config.admin {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?,
        ),
        None => None,
    };
    Ok((listener, admin))
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when first polled), so a signal during start-up is not lost
/// and does not kill the process half-way.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

fn new_session_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        b = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct ActiveGuard(Arc<Metrics>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}

impl Context {
    fn login_checks(&self) -> LoginChecks<'_> {
        LoginChecks {
            config: &self.config,
            auth: &self.auth,
            limiter: &self.login_limiter,
            audit: &self.audit,
        }
    }

    /// Sends a CancelRequest for `target` to the database.
    async fn cancel_upstream(&self, target: &CancelTarget) -> std::io::Result<()> {
        crate::cancel::send_cancel(&self.config.upstream, self.upstream_tls.as_ref(), target).await
    }
}

/// A client that proved who it is and may use a role.
struct Login {
    stream: PgStream,
    admitted: Admitted,
}

/// The handshake, then either a forwarded cancel or a login.
async fn handshake_and_login(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Login, Ended> {
    match handshake::negotiate(tcp, ctx.tls.as_ref()).await? {
        Negotiated::Cancel { pid, secret } => {
            crate::cancel::forward(
                &ctx.cancel,
                &ctx.config.upstream,
                ctx.upstream_tls.as_ref(),
                pid,
                &secret,
            )
            .await;
            Err(Ended::Quietly)
        }
        Negotiated::Startup {
            mut stream,
            startup,
        } => {
            let admitted = login::admit(&ctx.login_checks(), &mut stream, peer, startup).await?;
            Ok(Login { stream, admitted })
        }
    }
}

async fn handle(ctx: Arc<Context>, tcp: TcpStream, peer: SocketAddr, stop: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    ctx.metrics.connections.inc();
    ctx.metrics.connections_active.inc();
    let _active = ActiveGuard(ctx.metrics.clone());
    let sid = new_session_id();
    let span = tracing::info_span!("conn", %sid, %peer, sub = tracing::field::Empty, role = tracing::field::Empty);
    async move {
        let handshake = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            handshake_and_login(&ctx, tcp, peer),
        )
        .await;
        let login = match handshake.unwrap_or(Err(Ended::TimedOut)) {
            Ok(login) => login,
            Err(Ended::Quietly) => return,
            Err(Ended::TimedOut) => {
                tracing::info!("handshake timed out");
                return;
            }
            Err(e @ (Ended::Io(_) | Ended::Tls(_))) => {
                tracing::debug!(error = %e, "handshake failed");
                return;
            }
            Err(Ended::Refused(outcome, reason)) => {
                ctx.metrics.login(outcome);
                tracing::info!(%reason, "connection refused");
                // Token and role refusals are recorded by the login, which
                // knows the user name.
                if !matches!(outcome, LoginOutcome::bad_token | LoginOutcome::no_role) {
                    let event = Event::LoginFailed {
                        client_addr: peer.to_string(),
                        user_name: None,
                        database: None,
                        application_name: None,
                        subject: None,
                        reason,
                    };
                    crate::audit::login_failed(&ctx.audit, event).await;
                }
                return;
            }
        };
        session(&ctx, login, sid, peer, stop).await;
    }
    .instrument(span)
    .await
}

/// Why a session ended, as recorded.
fn end_reason(end: &RelayEnd) -> (EndReason, Option<String>) {
    match end {
        RelayEnd::ClientTerminated => (EndReason::ClientQuit, None),
        RelayEnd::ClientGone { mid_statement } => (
            EndReason::ClientQuit,
            mid_statement.then(|| "the client disconnected during a statement".to_owned()),
        ),
        RelayEnd::ServerClosed => (
            EndReason::Error,
            Some("the database closed the connection".into()),
        ),
        RelayEnd::TokenExpired => (EndReason::TokenExpired, None),
        RelayEnd::ShutDown => (EndReason::Shutdown, None),
        RelayEnd::ProtocolViolation(what) => (
            EndReason::Error,
            Some(format!("protocol violation: {what}")),
        ),
        RelayEnd::AuditUnavailable => (
            EndReason::Error,
            Some("a statement could not be recorded in the audit trail".into()),
        ),
        RelayEnd::UnreadableEncoding => (
            EndReason::Error,
            Some("the database set a client_encoding the gateway cannot read".into()),
        ),
    }
}

/// Records the end of a session that was recorded as started.
async fn record_session_end(ctx: &Context, sid: &str, end: (EndReason, Option<String>)) {
    let (reason, detail) = end;
    let end = SessionEnd {
        session_id: sid.to_owned(),
        ended_at: Timestamp::now(),
        reason,
        detail,
    };
    if let Err(e) = ctx.audit.end_session(&end).await {
        tracing::error!(error = %e, "cannot record the session end in the audit store");
    }
}

/// Tells the client why its session cannot start (a FATAL error) and closes.
async fn refuse_session(client: &mut PgStream, code: &str, message: &str) {
    let mut out = BytesMut::new();
    put_error(&mut out, Severity::Fatal, code, message);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

/// The upstream connection turned into this client's session.
struct UpstreamSession {
    up: Upstream,
    /// ParameterStatus frames the session setup produced.
    later_status: Vec<crate::protocol::Frame>,
    /// The login's notices, masked, for the client.
    notices: BytesMut,
    inspector: Inspector,
    /// Whether the database may run code statements do not name.
    hidden: HiddenCode,
}

/// Logs in upstream as the gateway role, hands the database the signed
/// session (`SET ROLE`, `hoop.session`), and learns which columns it masks.
async fn open_upstream_session(
    ctx: &Context,
    admitted: &Admitted,
    sid: &str,
) -> Result<UpstreamSession, UpstreamError> {
    let mut up = upstream::connect(
        &ctx.config.upstream,
        ctx.upstream_tls.as_ref(),
        &admitted.database,
        &admitted.params,
    )
    .await?;
    let token = sign_session(ctx, admitted, sid, up.pid);
    let later_status = upstream::start_session(&mut up, &admitted.mapping.role, &token).await?;
    if up
        .parameter_status
        .iter()
        .chain(later_status.iter())
        .any(upstream::reports_unreadable_encoding)
    {
        return Err(UpstreamError::Server {
            code: upstream::SQLSTATE_FEATURE_NOT_SUPPORTED.to_owned(),
            message: upstream::UNREADABLE_ENCODING.to_owned(),
        });
    }
    let masked = upstream::load_masked_columns(&mut up).await?;
    let hidden = match HiddenCode::at_login(&admitted.database) {
        Ok(known) => known,
        Err(reading) => reading.read(upstream::hidden_code(&mut up).await?),
    };
    if masked.is_none() {
        tracing::warn!(
            "database has no hoop.masked_columns (extension not installed): \
             no declared columns, content detection only"
        );
    }
    let mut inspector = Inspector::for_session(
        &ctx.config.policy,
        admitted.identity.clone(),
        &admitted.mapping.unmask,
        masked.as_deref(),
    )
    .map_err(|e| UpstreamError::Masking(e.to_string()))?;
    let mut notices = BytesMut::new();
    for notice in std::mem::take(&mut up.notices) {
        inspector.mask_notice(&notice).send(notice, &mut notices);
    }
    Ok(UpstreamSession {
        up,
        later_status,
        notices,
        inspector,
        hidden,
    })
}

/// The signed session token for backend `pid`: the extension checks it.
fn sign_session(ctx: &Context, admitted: &Admitted, sid: &str, pid: i32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = SessionClaims {
        v: TOKEN_VERSION,
        kid: ctx.signer.kid().to_owned(),
        sid: sid.to_owned(),
        sub: admitted.identity.subject.clone(),
        groups: admitted.identity.groups.clone(),
        role: admitted.mapping.role.clone(),
        db: admitted.database.clone(),
        pid,
        unmask: admitted.mapping.unmask.clone(),
        iat: now,
        exp: admitted.expires_at,
    };
    ctx.signer.sign(&claims)
}

/// No access without a record: the session is in the audit trail before
/// the client learns it is logged in.
async fn record_session_start(
    ctx: &Context,
    admitted: &Admitted,
    sid: &str,
    peer: SocketAddr,
) -> Result<(), hoop_audit::AuditError> {
    let start = SessionStart {
        session_id: sid.to_owned(),
        identity: admitted.identity.clone(),
        client_addr: peer.to_string(),
        application_name: admitted
            .params
            .iter()
            .find(|(name, _)| name == "application_name")
            .map(|(_, value)| value.clone()),
        role: admitted.mapping.role.clone(),
        database: admitted.database.clone(),
        started_at: Timestamp::now(),
    };
    ctx.audit.begin_session(&start).await
}

/// AuthenticationOk, the server's parameters (filtered), the gateway's own
/// cancel key, ReadyForQuery. `Err` says why the session is over already.
async fn greet_client(
    client: &mut PgStream,
    session: &UpstreamSession,
    role: &str,
    key: GatewayKey,
) -> Result<(), (EndReason, Option<String>)> {
    let mut out = BytesMut::new();
    put_authentication_ok(&mut out);
    for frame in session
        .up
        .parameter_status
        .iter()
        .chain(session.later_status.iter())
    {
        if let Some(bytes) = upstream::filter_parameter_status(frame, role) {
            out.extend_from_slice(&bytes);
        }
    }
    put_backend_key_data(&mut out, key.pid, &key.secret.to_be_bytes());
    // Where the server puts a login event trigger's notices: after
    // BackendKeyData, before the first ReadyForQuery.
    out.extend_from_slice(&session.notices);
    put_ready_for_query(&mut out, backend::IDLE);
    if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
        return Err((
            EndReason::ClientQuit,
            Some("the client left before the session was ready".to_owned()),
        ));
    }
    Ok(())
}

/// One logged-in client, from the upstream session to its recorded end.
async fn session(
    ctx: &Context,
    login: Login,
    sid: String,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let Login {
        stream: mut client,
        admitted,
    } = login;
    let span = tracing::Span::current();
    span.record("sub", admitted.identity.subject.as_str());
    span.record("role", admitted.mapping.role.as_str());

    let upstream_session = match open_upstream_session(ctx, &admitted, &sid).await {
        Ok(session) => session,
        Err(e) => {
            ctx.metrics.login(LoginOutcome::upstream_error);
            tracing::warn!(error = %e, "upstream session setup failed");
            let (code, message) = e.for_client();
            refuse_session(&mut client, &code, &message).await;
            return;
        }
    };
    if let Err(e) = record_session_start(ctx, &admitted, &sid, peer).await {
        ctx.metrics.login(LoginOutcome::refused);
        tracing::error!(error = %e, "the audit store cannot record the session; refusing it");
        refuse_session(
            &mut client,
            "58000",
            "the gateway cannot record this session in its audit trail, so it refuses access; \
             try again later",
        )
        .await;
        return;
    }
    ctx.metrics.login(LoginOutcome::ok);

    let target = CancelTarget {
        pid: upstream_session.up.pid,
        secret: upstream_session.up.secret.clone(),
        cancels: Arc::new(tokio::sync::watch::channel(0).0),
    };
    let key = ctx.cancel.register(target.clone());
    let greeted = greet_client(&mut client, &upstream_session, &admitted.mapping.role, key).await;
    if let Err(end) = greeted {
        ctx.cancel.unregister(key);
        record_session_end(ctx, &sid, end).await;
        return;
    }
    tracing::info!(database = %admitted.database, upstream_pid = upstream_session.up.pid, "session started");

    let gate_session = GateSession {
        session_id: sid.clone(),
        subject: admitted.identity.subject.clone(),
        groups: admitted.identity.groups.clone(),
        role: admitted.mapping.role.clone(),
        client_addr: peer.to_string(),
    };
    let end = relay(
        ctx,
        client,
        admitted,
        upstream_session,
        target,
        gate_session,
        stop,
    )
    .await;
    ctx.cancel.unregister(key);
    record_session_end(ctx, &sid, end_reason(&end)).await;
    tracing::info!(?end, "session ended");
}

/// The steady state: statements through the gate until one side ends it.
async fn relay(
    ctx: &Context,
    client: PgStream,
    admitted: Admitted,
    upstream_session: UpstreamSession,
    target: CancelTarget,
    gate_session: GateSession,
    stop: watch::Receiver<bool>,
) -> RelayEnd {
    let mut reading = crate::relay::Reading::default();
    for frame in upstream_session
        .up
        .parameter_status
        .iter()
        .chain(upstream_session.later_status.iter())
    {
        if let Ok(backend::Backend::ParameterStatus { name, value }) = backend::Backend::read(frame)
        {
            reading.note(name, value);
        }
    }
    let UpstreamSession {
        up,
        inspector,
        hidden,
        ..
    } = upstream_session;
    let relay = Relay {
        session: RelaySession {
            mapped_role: admitted.mapping.role.clone(),
            reading,
            expires_at: admitted.expires_at,
            max_message_bytes: ctx.config.max_message_bytes,
            hidden,
        },
        statements: 0,
        metrics: ctx.metrics.clone(),
        inspector,
        shutdown: stop,
        gate: Gate::new(
            ctx.audit.clone(),
            ctx.reviews.clone(),
            ctx.config.audit.record_statements,
            ctx.config.audit.store.record_rows,
            ctx.config.policy.content_masker.clone(),
            gate_session,
            target.cancels.subscribe(),
        ),
    };
    let cancel = async {
        if let Err(e) = ctx.cancel_upstream(&target).await {
            tracing::warn!(error = %e, "cancelling the abandoned statement failed");
        }
    };
    let (end, _) = relay
        .run(client, admitted.pending, up.stream, up.read_buf, cancel)
        .await;
    end
}
