//! The listener: accepts clients, runs handshake → upstream login → session
//! setup → relay for each, and shuts down gracefully (stop accepting, let
//! in-flight statements finish within the grace period, then close).

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

use hoop_audit::{AuditStore, Event, SessionEnd, SessionStart, Timestamp};
use hoop_reviews::ReviewHub;

use crate::auth::Authenticator;
use crate::cancel::{CancelRegistry, CancelTarget};
use crate::config::Config;
use crate::handshake::{self, Ended, LoginLimiter};
use crate::metrics::{LoginOutcome, Metrics};
use crate::protocol::{put_error, put_message, Severity};
use crate::relay::gate::{Gate, GateSession};
use crate::relay::policy::PolicyInspector;
use crate::relay::{Relay, RelaySession};
use crate::upstream;

/// Everything connections share.
pub struct Context {
    pub config: Config,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub upstream_tls: Option<tokio_rustls::TlsConnector>,
    pub auth: Authenticator,
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
        let auth = Authenticator::new(config.identity.clone())?;
        if let Err(e) = auth.warm_up().await {
            tracing::warn!(error = %e, "identity provider not reachable yet; logins retry it");
        }
        let audit = crate::audit::open_store(&config.audit)
            .await
            .map_err(|e| ServeError::Audit(e.to_string()))?;
        let started = async {
            audit
                .record_event(&Event::ConfigReloaded {
                    source: config.path.display().to_string(),
                    ok: true,
                    detail: Some("loaded at start".into()),
                })
                .await
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            let reviews = crate::reviews::open_hub(&config, audit.clone())
                .await
                .map_err(|e| ServeError::Reviews(e.to_string()))?;
            let listener =
                TcpListener::bind(config.listen)
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
            audit
                .record_event(&Event::GatewayStarted {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                })
                .await
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            if !config.audit.record_statements {
                tracing::warn!(
                    "[audit] record_statements = false: statements are NOT recorded one by one; \
                     this is for measuring the cost of recording, not for a PCI environment"
                );
                audit
                    .record_event(&Event::RecordingStopped {
                        reason:
                            "per-statement records turned off ([audit] record_statements = false)"
                                .to_owned(),
                    })
                    .await
                    .map_err(|e| ServeError::Audit(e.to_string()))?;
            }
            Ok::<_, ServeError>((reviews, listener, admin))
        };
        let (reviews, listener, admin) = match started.await {
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
                Arc::new(crate::reviews::ReviewerTokens(ctx.clone())),
            ));
            let mut rx = stop_rx.clone();
            tokio::spawn(crate::admin::serve(l, router, async move {
                let _ = rx.wait_for(|v| *v).await;
            }))
        });
        let retention = crate::audit::spawn_retention(ctx.audit.clone());
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "hoop gateway accepting connections");
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let ctx = ctx.clone();
                        let stop = stop_rx.clone();
                        connections.spawn(async move { handle(ctx, tcp, peer, stop).await });
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

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when first polled), so a signal during start-up is not lost
/// and does not kill the process half-way.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
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
            handshake::accept(&ctx, tcp, peer),
        )
        .await;
        let login = match handshake {
            Err(_) => {
                tracing::info!("handshake timed out");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "handshake failed");
                return;
            }
            Ok(Ok(Err(Ended::Quietly))) => return,
            Ok(Ok(Err(Ended::Refused(outcome, reason)))) => {
                ctx.metrics.login(outcome);
                tracing::info!(%reason, "connection refused");
                // Token and role refusals are recorded by the handshake,
                // which knows the user name.
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
            Ok(Ok(Ok(login))) => login,
        };
        session(&ctx, login, sid, peer, stop).await;
    }
    .instrument(span)
    .await
}

/// Records the end of a session that was recorded as started.
async fn record_session_end(
    ctx: &Context,
    sid: &str,
    end: (hoop_audit::EndReason, Option<String>),
) {
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

async fn session(
    ctx: &Context,
    login: handshake::Login,
    sid: String,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let handshake::Login {
        stream: mut client,
        admitted,
    } = login;
    let identity = &admitted.identity;
    let span = tracing::Span::current();
    span.record("sub", identity.subject.as_str());
    span.record("role", admitted.mapping.role.as_str());

    let setup = async {
        let mut up = upstream::connect(
            &ctx.config.upstream,
            ctx.upstream_tls.as_ref(),
            &admitted.database,
            &admitted.params,
        )
        .await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let claims = SessionClaims {
            v: TOKEN_VERSION,
            kid: ctx.signer.kid().to_owned(),
            sid: sid.clone(),
            sub: identity.subject.clone(),
            groups: identity.groups.clone(),
            role: admitted.mapping.role.clone(),
            db: admitted.database.clone(),
            pid: up.pid,
            unmask: admitted.mapping.unmask.clone(),
            iat: now,
            exp: identity.expires_at,
        };
        let token = ctx.signer.sign(&claims);
        let later = upstream::start_session(&mut up, &admitted.mapping.role, &token).await?;
        let masked = upstream::load_masked_columns(&mut up).await?;
        if masked.is_none() {
            tracing::warn!(
                "database has no hoop.masked_columns (extension not installed): \
                 no declared columns, content detection only"
            );
        }
        let inspector = PolicyInspector::for_session(
            &ctx.config.policy,
            hoop_policy::Identity {
                subject: identity.subject.clone(),
                groups: identity.groups.clone(),
            },
            &admitted.mapping.unmask,
            masked.as_deref(),
        )
        .map_err(|e| upstream::UpstreamError::Masking(e.to_string()))?;
        Ok::<_, upstream::UpstreamError>((up, later, inspector))
    };
    let (up, later_status, inspector) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            ctx.metrics.login(LoginOutcome::upstream_error);
            tracing::warn!(error = %e, "upstream session setup failed");
            let (code, message) = e.for_client();
            let mut out = BytesMut::new();
            put_error(&mut out, Severity::Fatal, &code, &message);
            let _ = client.write_all(&out).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    // No access without a record: the session is in the audit trail before
    // the client learns it is logged in.
    let start = SessionStart {
        session_id: sid.clone(),
        identity: crate::audit::identity_of(&ctx.config, identity),
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
    if let Err(e) = ctx.audit.begin_session(&start).await {
        ctx.metrics.login(LoginOutcome::refused);
        tracing::error!(error = %e, "the audit store cannot record the session; refusing it");
        let mut out = BytesMut::new();
        put_error(
            &mut out,
            Severity::Fatal,
            "58000",
            "the gateway cannot record this session in its audit trail, so it refuses access; \
             try again later",
        );
        let _ = client.write_all(&out).await;
        let _ = client.shutdown().await;
        return;
    }
    ctx.metrics.login(LoginOutcome::ok);
    let gone_early = || {
        (
            hoop_audit::EndReason::ClientQuit,
            Some("the client left before the session was ready".to_owned()),
        )
    };

    let target = CancelTarget {
        pid: up.pid,
        secret: up.secret.clone(),
        cancels: Arc::new(tokio::sync::watch::channel(0).0),
    };
    let key = ctx.cancel.register(target.clone());

    // AuthenticationOk, the server's parameters (filtered), our key, ready.
    let mut out = BytesMut::new();
    out.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
    for frame in up.parameter_status.iter().chain(later_status.iter()) {
        if let Some(bytes) = upstream::filter_parameter_status(frame, &admitted.mapping.role) {
            out.extend_from_slice(&bytes);
        }
    }
    let key_msg = pgwire::messages::startup::BackendKeyData::new(
        key.pid,
        pgwire::messages::startup::SecretKey::I32(key.secret),
    );
    if put_message(&mut out, &key_msg).is_err() {
        ctx.cancel.unregister(key);
        let detail = Some("cannot encode BackendKeyData".to_owned());
        record_session_end(ctx, &sid, (hoop_audit::EndReason::Error, detail)).await;
        return;
    }
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
        ctx.cancel.unregister(key);
        record_session_end(ctx, &sid, gone_early()).await;
        return;
    }
    tracing::info!(database = %admitted.database, upstream_pid = up.pid, "session started");

    let relay = Relay {
        session: RelaySession {
            mapped_role: admitted.mapping.role.clone(),
            expires_at: identity.expires_at,
            upstream: target.clone(),
            max_message_bytes: ctx.config.max_message_bytes,
        },
        statements: 0,
        metrics: ctx.metrics.clone(),
        inspector: Box::new(inspector),
        shutdown: stop,
        gate: Some(Gate::new(
            ctx.audit.clone(),
            ctx.reviews.clone(),
            ctx.config.audit.record_statements,
            ctx.config.audit.store.record_rows,
            ctx.config.policy.content_masker.clone(),
            GateSession {
                session_id: sid.clone(),
                subject: identity.subject.clone(),
                groups: identity.groups.clone(),
                role: admitted.mapping.role.clone(),
                client_addr: peer.to_string(),
            },
            target.cancels.subscribe(),
        )),
    };
    let cancel = async {
        if let Err(e) =
            crate::cancel::send_cancel(&ctx.config.upstream, ctx.upstream_tls.as_ref(), &target)
                .await
        {
            tracing::warn!(error = %e, "cancelling the abandoned statement failed");
        }
    };
    let (end, _) = relay
        .run(client, admitted.pending, up.stream, up.read_buf, cancel)
        .await;
    ctx.cancel.unregister(key);
    record_session_end(ctx, &sid, crate::audit::end_reason(&end)).await;
    tracing::info!(?end, "session ended");
}
