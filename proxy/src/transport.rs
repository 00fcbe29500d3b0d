//! The byte stream to the database: TCP, then TLS when `[upstream] tls`
//! asks for it. Both the upstream login and cancel forwarding open one; it
//! knows nothing of what is sent over it.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Upstream as UpstreamConfig;
use crate::tls::{PgStream, SSL_ACCEPTED};

/// Why the database could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the database at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS to the database failed: {0}")]
    Tls(String),
    #[error("connection to the database lost: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens TCP (and TLS if configured) to the database.
pub async fn open_transport(
    config: &UpstreamConfig,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> Result<PgStream, TransportError> {
    let addr = format!("{}:{}", config.host, config.port);
    let tcp = tokio::time::timeout(
        config.connect_timeout,
        TcpStream::connect((config.host.as_str(), config.port)),
    )
    .await
    .map_err(|_| TransportError::Connect {
        addr: addr.clone(),
        source: std::io::ErrorKind::TimedOut.into(),
    })?
    .map_err(|source| TransportError::Connect {
        addr: addr.clone(),
        source,
    })?;
    tcp.set_nodelay(true)?;
    let Some(connector) = connector else {
        return Ok(PgStream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let answer = tcp.read_u8().await?;
    if answer != SSL_ACCEPTED {
        return Err(TransportError::Tls(format!(
            "{addr} does not accept TLS (answered {:?})",
            answer as char
        )));
    }
    let name = rustls_pki_types::ServerName::try_from(config.host.clone())
        .map_err(|e| TransportError::Tls(format!("{}: {e}", config.host)))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    Ok(PgStream::Tls(Box::new(tokio_rustls::TlsStream::Client(
        tls,
    ))))
}
