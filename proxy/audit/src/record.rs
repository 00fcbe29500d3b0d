//! What is recorded: sessions, statements (begin and outcome) and gateway
//! events. These are the payloads of chain entries; each serialises to the
//! canonical JSON that is hashed (see [`crate::chain`]).
//!
//! Callers pass text that is already masked; the store masks every string
//! again before writing (`payload`).

use serde::{Deserialize, Serialize};

use hoop_common::time::Timestamp;

/// Who is behind a session, as the verified OIDC token said (issuer,
/// subject, client, groups; recorded with these field names).
pub use hoop_common::identity::Identity;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    pub session_id: String,
    pub identity: Identity,
    /// Client address and port as the gateway saw it (`203.0.113.7:51234`).
    pub client_addr: String,
    pub application_name: Option<String>,
    /// Database role the session runs as (`SET ROLE`).
    pub role: String,
    pub database: String,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    ClientQuit,
    TokenExpired,
    Error,
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session_id: String,
    pub ended_at: Timestamp,
    pub reason: EndReason,
    /// What went wrong, for `reason = "error"`.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Block,
    Review,
}

/// The policy's decision on one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDecision {
    pub action: Action,
    /// Rule that decided (`None` for the default allow).
    pub rule: Option<String>,
    /// Why, in words, for a block.
    pub reason: Option<String>,
    /// For reviewed statements: the review and who approved it.
    pub review_id: Option<String>,
    pub reviewer: Option<String>,
}

impl RecordedDecision {
    pub fn allow() -> RecordedDecision {
        RecordedDecision {
            action: Action::Allow,
            rule: None,
            reason: None,
            review_id: None,
            reviewer: None,
        }
    }
}

/// Written (durably) before the statement is forwarded upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementBegin {
    pub session_id: String,
    /// 1, 2, 3 … within the session.
    pub sequence: u64,
    pub received_at: Timestamp,
    /// SQL text with card-number literals masked.
    pub sql: String,
    /// Bind parameters in text form, masked; `None` is SQL NULL.
    pub params: Vec<Option<String>>,
    /// Statement kind from the classifier (`select`, `update`, `copy` …).
    pub kind: String,
    /// Tables the statement touches, `schema.table`.
    pub tables: Vec<String>,
    pub decision: RecordedDecision,
    /// What ran instead of `sql`, masked: a reviewer's modification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_sql: Option<String>,
}

/// How a statement ended; written after the client got its answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatementOutcome {
    /// `SELECT 3`, `UPDATE 1` … (`None` when it failed or was refused).
    pub command_tag: Option<String>,
    /// Rows returned or affected.
    pub rows: Option<u64>,
    /// SQLSTATE of the error, when it failed.
    pub sqlstate: Option<String>,
    /// Error message, masked.
    pub message: Option<String>,
    pub duration_us: u64,
    /// Column names of the recorded rows.
    pub columns: Vec<String>,
    /// The first `record_rows` rows exactly as the client received them
    /// (masked); text form, `None` is NULL.
    pub result_rows: Vec<Vec<Option<String>>>,
}

impl StatementOutcome {
    pub fn succeeded(&self) -> bool {
        self.sqlstate.is_none()
    }
}

/// The completion entry: the outcome and the chain position of the begin
/// entry it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEnd {
    pub session_id: String,
    pub sequence: u64,
    /// Chain sequence number of the matching [`StatementBegin`] entry.
    pub begin_seq: u64,
    pub outcome: StatementOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewOutcome {
    Approved,
    Denied,
    Modified,
}

/// Gateway events that are not part of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A login the gateway refused. Never holds the token.
    LoginFailed {
        client_addr: String,
        user_name: Option<String>,
        database: Option<String>,
        application_name: Option<String>,
        /// Subject, when the token could be read but was refused.
        subject: Option<String>,
        reason: String,
    },
    ConfigReloaded {
        source: String,
        ok: bool,
        detail: Option<String>,
    },
    GatewayStarted {
        version: String,
    },
    GatewayStopped {
        reason: String,
    },
    /// Written by the store itself when it opens and closes (PCI 10.2.1.6).
    RecordingStarted {
        version: String,
    },
    RecordingStopped {
        reason: String,
    },
    ReviewCreated {
        review_id: String,
        session_id: String,
        sequence: u64,
        rule: String,
        sql: String,
    },
    ReviewDecided {
        review_id: String,
        reviewer: String,
        outcome: ReviewOutcome,
        comment: Option<String>,
    },
    ReviewExpired {
        review_id: String,
    },
    ReviewWithdrawn {
        review_id: String,
        reason: String,
    },
    /// A privilege beyond the default was exercised (e.g. unmasking a column).
    GrantUsed {
        session_id: String,
        subject: String,
        grant: String,
        detail: Option<String>,
    },
    /// Someone read the audit trail (PCI 10.2.1.3).
    AuditRead {
        reader: String,
        action: String,
        detail: Option<String>,
    },
    /// Records older than `before` were purged under the retention policy.
    Purged {
        before: Timestamp,
        through_seq: u64,
    },
}

impl Event {
    /// The entry kind, which is also the `event` tag in the payload.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::LoginFailed { .. } => "login_failed",
            Event::ConfigReloaded { .. } => "config_reloaded",
            Event::GatewayStarted { .. } => "gateway_started",
            Event::GatewayStopped { .. } => "gateway_stopped",
            Event::RecordingStarted { .. } => "recording_started",
            Event::RecordingStopped { .. } => "recording_stopped",
            Event::ReviewCreated { .. } => "review_created",
            Event::ReviewDecided { .. } => "review_decided",
            Event::ReviewExpired { .. } => "review_expired",
            Event::ReviewWithdrawn { .. } => "review_withdrawn",
            Event::GrantUsed { .. } => "grant_used",
            Event::AuditRead { .. } => "audit_read",
            Event::Purged { .. } => "purged",
        }
    }

    pub(crate) fn session_id(&self) -> Option<&str> {
        match self {
            Event::ReviewCreated { session_id, .. } | Event::GrantUsed { session_id, .. } => {
                Some(session_id)
            }
            _ => None,
        }
    }
}

/// Any payload of a chain entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    SessionStart(SessionStart),
    SessionEnd(SessionEnd),
    Statement(StatementBegin),
    StatementEnd(StatementEnd),
    Event(Event),
}

pub(crate) const KIND_SESSION_START: &str = "session_start";
pub(crate) const KIND_SESSION_END: &str = "session_end";
pub(crate) const KIND_STATEMENT: &str = "statement";
pub(crate) const KIND_STATEMENT_END: &str = "statement_end";

impl Record {
    pub fn kind(&self) -> &'static str {
        match self {
            Record::SessionStart(_) => KIND_SESSION_START,
            Record::SessionEnd(_) => KIND_SESSION_END,
            Record::Statement(_) => KIND_STATEMENT,
            Record::StatementEnd(_) => KIND_STATEMENT_END,
            Record::Event(event) => event.kind(),
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match self {
            Record::SessionStart(r) => Some(&r.session_id),
            Record::SessionEnd(r) => Some(&r.session_id),
            Record::Statement(r) => Some(&r.session_id),
            Record::StatementEnd(r) => Some(&r.session_id),
            Record::Event(event) => event.session_id(),
        }
    }

    pub(crate) fn to_value(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Record::SessionStart(r) => serde_json::to_value(r),
            Record::SessionEnd(r) => serde_json::to_value(r),
            Record::Statement(r) => serde_json::to_value(r),
            Record::StatementEnd(r) => serde_json::to_value(r),
            Record::Event(r) => serde_json::to_value(r),
        }
    }

    /// Decodes a stored payload of the given entry kind.
    pub fn decode(kind: &str, payload: &str) -> serde_json::Result<Record> {
        Ok(match kind {
            KIND_SESSION_START => Record::SessionStart(serde_json::from_str(payload)?),
            KIND_SESSION_END => Record::SessionEnd(serde_json::from_str(payload)?),
            KIND_STATEMENT => Record::Statement(serde_json::from_str(payload)?),
            KIND_STATEMENT_END => Record::StatementEnd(serde_json::from_str(payload)?),
            _ => Record::Event(serde_json::from_str(payload)?),
        })
    }
}
