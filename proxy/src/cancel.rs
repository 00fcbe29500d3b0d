//! Query cancellation. Each client gets a BackendKeyData with its upstream
//! backend's pid (the one `pg_backend_pid()`, `pg_stat_activity` and every
//! NotificationResponse show it, which clients compare with theirs: a
//! notification from their own session is told apart that way) and the
//! gateway's own random secret, never the upstream one; a CancelRequest
//! carrying it is mapped to the upstream backend and forwarded there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Upstream as UpstreamConfig;
use crate::protocol::frontend::put_cancel_request;

/// The upstream backend a cancel must reach.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub pid: i32,
    pub secret: Bytes,
    /// Counts the cancels for this session: a statement held for review
    /// watches it, and a cancel withdraws the review (nothing of it runs
    /// upstream to cancel).
    pub cancels: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The key handed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatewayKey {
    pub pid: i32,
    pub secret: i32,
}

#[derive(Default)]
pub struct CancelRegistry {
    keys: Mutex<HashMap<GatewayKey, CancelTarget>>,
}

fn random_i32() -> i32 {
    let mut b = [0u8; 4];
    // getrandom only fails without an OS entropy source; then keys stay
    // unguessable enough through the time-based fallback below.
    if getrandom::getrandom(&mut b).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = nanos.to_be_bytes();
    }
    i32::from_be_bytes(b)
}

impl CancelRegistry {
    pub fn register(&self, target: CancelTarget) -> GatewayKey {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Backends of two upstream servers may share a pid: their keys
            // differ by the secret. An upstream that sent no key gets a
            // random pid.
            let pid = match target.pid {
                pid if pid > 0 => pid,
                _ => random_i32() & 0x7fff_ffff,
            };
            let key = GatewayKey {
                pid,
                secret: random_i32(),
            };
            if key.pid != 0 && !keys.contains_key(&key) {
                keys.insert(key, target);
                return key;
            }
        }
    }

    pub fn unregister(&self, key: GatewayKey) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let secret: [u8; 4] = secret.try_into().ok()?;
        let key = GatewayKey {
            pid,
            secret: i32::from_be_bytes(secret),
        };
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

/// Forwards a client's CancelRequest (carrying the gateway's key) to the
/// upstream backend it maps to; an unknown key is ignored, as Postgres does.
pub async fn forward(
    registry: &CancelRegistry,
    config: &UpstreamConfig,
    connector: Option<&tokio_rustls::TlsConnector>,
    pid: i32,
    secret: &[u8],
) {
    match registry.lookup(pid, secret) {
        Some(target) => {
            target.cancels.send_modify(|n| *n += 1);
            if let Err(e) = send_cancel(config, connector, &target).await {
                tracing::warn!(error = %e, "forwarding a cancel request failed");
            }
        }
        None => tracing::debug!("cancel request with an unknown key ignored"),
    }
}

/// Sends a CancelRequest for `target` on a fresh upstream connection.
pub async fn send_cancel(
    config: &UpstreamConfig,
    connector: Option<&tokio_rustls::TlsConnector>,
    target: &CancelTarget,
) -> std::io::Result<()> {
    let mut stream = crate::transport::open_transport(config, connector)
        .await
        .map_err(std::io::Error::other)?;
    let mut msg = BytesMut::new();
    put_cancel_request(&mut msg, target.pid, &target.secret);
    stream.write_all(&msg).await?;
    stream.flush().await?;
    // The server closes the connection once it has signalled the backend.
    // The client's cancel connection closes only after that, as it would
    // directly: a client may take the close to mean the cancel has landed
    // and send its next statement (asyncpg does), which a cancel still on
    // its way would stop instead.
    let mut rest = [0u8; 16];
    let _ = tokio::time::timeout(CANCEL_LANDS_WITHIN, async {
        while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

/// How long a forwarded cancel waits for the server to close its
/// connection (it does once the backend is signalled).
const CANCEL_LANDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
