//! What reviews tell the audit chain. The gateway wires a sink to its audit
//! store; the hub never changes a review unless the sink has accepted the
//! event first (fail closed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use hoop_common::time::Timestamp;

/// One audit-worthy moment in a review's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReviewEvent {
    Created {
        review_id: String,
        session_id: String,
        subject: String,
        rule: String,
        /// Masked.
        sql: String,
        tables: Vec<String>,
        expires_at: Timestamp,
    },
    /// One approval; `approvals` of `required` so far (the review is
    /// approved when they are equal).
    Approved {
        review_id: String,
        reviewer: String,
        reason: Option<String>,
        grant_for: Option<String>,
        approvals: u32,
        required: u32,
    },
    Denied {
        review_id: String,
        reviewer: String,
        reason: Option<String>,
    },
    /// Both texts: the held statement and its replacement.
    Modified {
        review_id: String,
        reviewer: String,
        reason: Option<String>,
        original_sql: String,
        sql: String,
        approvals: u32,
        required: u32,
    },
    Expired {
        review_id: String,
    },
    Withdrawn {
        review_id: String,
        reason: String,
    },
    /// A statement ran under an earlier review's grant.
    GrantUsed {
        review_id: String,
        session_id: String,
        subject: String,
        rule: String,
        sql: String,
    },
}

impl ReviewEvent {
    pub fn review_id(&self) -> &str {
        match self {
            ReviewEvent::Created { review_id, .. }
            | ReviewEvent::Approved { review_id, .. }
            | ReviewEvent::Denied { review_id, .. }
            | ReviewEvent::Modified { review_id, .. }
            | ReviewEvent::Expired { review_id }
            | ReviewEvent::Withdrawn { review_id, .. }
            | ReviewEvent::GrantUsed { review_id, .. } => review_id,
        }
    }
}

/// The audit store refused or failed to record an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit store: {0}")]
pub struct AuditSinkError(pub String);

/// Where review events go (the gateway's hash-chained audit store).
/// `event` returns only once the event is durable.
#[async_trait]
pub trait ReviewAuditSink: Send + Sync {
    async fn event(&self, event: ReviewEvent) -> Result<(), AuditSinkError>;
}

/// Keeps events in memory; can be told to fail. For tests and the demo.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    events: Mutex<Vec<ReviewEvent>>,
    failing: AtomicBool,
}

impl MemoryAuditSink {
    pub fn new() -> MemoryAuditSink {
        MemoryAuditSink::default()
    }

    pub fn events(&self) -> Vec<ReviewEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// From now on every event is refused (or accepted again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl ReviewAuditSink for MemoryAuditSink {
    async fn event(&self, event: ReviewEvent) -> Result<(), AuditSinkError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditSinkError("refusing events (test)".into()));
        }
        self.events
            .lock()
            .map_err(|_| AuditSinkError("poisoned".into()))?
            .push(event);
        Ok(())
    }
}
