//! hoop's audit store: what the gateway did, recorded so that it cannot be
//! altered unnoticed (PCI DSS 10.2, 10.3) and never holds a readable card
//! number (3.5.1).
//!
//! The relay writes through [`AuditStore`]: `begin_statement` is durable
//! before a statement is forwarded (or the statement is refused), and
//! `complete_statement` adds its outcome. Each gateway instance appends to
//! its own hash chain and signs checkpoints of it. Auditors read through
//! [`AuditReader`] with the public key only: sessions, replay, export and
//! verify (also offline, on an export directory).

/// `[audit]` configuration: store, location, instance id, retention, and
/// the checkpoint key.
pub mod config;

/// The one error type.
pub mod error;

/// What is recorded: sessions, statements, outcomes, events.
pub mod record;

/// A record's canonical payload (what is hashed and stored), with every
/// string masked again: defense in depth.
mod payload;

/// Entries and their hash chain.
pub mod chain;

/// Signed checkpoints and their keys.
pub mod checkpoint;

/// Recomputing chains and checkpoints into a report.
pub mod verify;

/// SQLite and PostgreSQL behind one interface.
mod backend;

/// The group-commit writer thread.
mod writer;

/// One hand-off per caller thread for a commit's answers.
pub mod answers;

/// A timer kept due on a runtime, so that long timeouts do not wake it.
pub mod keeper;

/// The writing side: [`AuditStore`].
mod store;

/// The reading side: [`AuditReader`].
mod reader;

/// Session summaries for `hoop audit sessions`.
mod sessions;

/// The text timeline of `hoop audit replay`.
mod replay;

/// Evidence export to a directory, and its offline verification.
mod export;

pub use chain::{ChainHash, Entry};
pub use checkpoint::{Checkpoint, CheckpointKeys, CheckpointKind, CheckpointSigner};
pub use config::{
    AuditConfig, AuditSection, AuditSettings, AuditStoreKind, SqliteSync, DEFAULT_AUDIT_FILE,
    DEFAULT_INSTANCE_ID,
};
pub use error::{AuditError, Result};
pub use export::{verify_export, verify_export_with_keys, ExportFilter, ExportSummary};
/// Timestamps as recorded (microseconds, RFC 3339 in text): hoop's one kind.
pub use hoop_common::time::Timestamp;
pub use reader::AuditReader;
pub use record::{
    Action, EndReason, Event, Identity, Record, RecordedDecision, ReviewOutcome, SessionEnd,
    SessionStart, StatementBegin, StatementEnd, StatementOutcome,
};
pub use sessions::{SessionFilter, SessionSummary};
pub use store::{AuditStore, SessionIds, StatementHandle};
pub use verify::{ChainReport, IncompleteStatement, Problem, VerifyReport};
pub use writer::PurgeReport;
