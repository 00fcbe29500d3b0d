//! One error type for the store, the reader and the verifier. Every message
//! is written for the operator who has to act on it; none carries record
//! contents, so an error can be logged without leaking anything.

use std::path::PathBuf;

pub type Result<T, E = AuditError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The configuration cannot work; nothing was opened.
    #[error("audit configuration: {0}")]
    Config(String),

    /// The store could not be written or read. Callers that were about to
    /// forward a statement must refuse it (fail closed).
    #[error("audit store unavailable: {0}")]
    Unavailable(String),

    /// Another writer appended to this instance's chain (same instance id in
    /// two processes). The writer reloads the chain head and retries once.
    #[error(
        "audit chain conflict for instance {instance:?}: another writer uses this instance id"
    )]
    Conflict { instance: String },

    /// A stored record or file could not be decoded.
    #[error("audit data is malformed: {0}")]
    Malformed(String),

    /// A signing or public key could not be parsed.
    #[error("audit key: {0}")]
    Key(String),

    /// A session or record asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// Reading or writing an export directory failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store's writer has stopped (the store was closed).
    #[error("the audit store is closed")]
    Closed,
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<rusqlite::Error> for AuditError {
    fn from(error: rusqlite::Error) -> AuditError {
        AuditError::Unavailable(format!("sqlite: {error}"))
    }
}

impl From<tokio_postgres::Error> for AuditError {
    fn from(error: tokio_postgres::Error) -> AuditError {
        // `Display` of tokio-postgres errors says only "db error" for a
        // server error: take the server's SQLSTATE and message (never the
        // statement text, which is ours, nor its parameters), or the cause
        // of a connection error.
        let detail = match error.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => match std::error::Error::source(&error) {
                Some(cause) => format!("{error}: {cause}"),
                None => error.to_string(),
            },
        };
        AuditError::Unavailable(format!("postgres: {detail}"))
    }
}
