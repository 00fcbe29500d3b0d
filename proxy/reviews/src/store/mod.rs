//! Where reviews live: this process's memory (one gateway) or a Postgres
//! table shared by several gateways. Both apply a change atomically and
//! only after its audit events are recorded, and both announce every change
//! on the hub's channel (Postgres through LISTEN/NOTIFY, so a decision made
//! through another gateway wakes the ticket here).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::ReviewAuditSink;
use crate::decide::Update;
use crate::error::HubError;
use crate::model::{Review, ReviewStatus};
use hoop_common::time::Timestamp;

pub(crate) mod memory;
pub(crate) mod postgres;

/// A review changed (sent to tickets and to the page's event stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewChange {
    pub id: String,
    pub status: ReviewStatus,
}

/// A read-modify-write step: from the stored review to the update, or
/// `Ok(None)` to leave it as it is.
pub(crate) type Change<'a> =
    &'a (dyn Fn(&Review) -> Result<Option<Update>, HubError> + Send + Sync);

/// What the grant lookup matches on.
pub(crate) struct GrantKey<'a> {
    pub subject: &'a str,
    pub role: &'a str,
    pub rule: &'a str,
    pub sql_fingerprint: &'a str,
}

#[async_trait]
pub(crate) trait Store: Send + Sync {
    /// Stores a new review once `update.events` are recorded.
    async fn create(&self, update: Update, audit: &dyn ReviewAuditSink) -> Result<(), HubError>;

    /// Applies `change` to review `id` atomically; returns the review as
    /// stored afterwards.
    async fn update(
        &self,
        id: &str,
        change: Change<'_>,
        audit: &dyn ReviewAuditSink,
    ) -> Result<Review, HubError>;

    async fn get(&self, id: &str) -> Result<Option<Review>, HubError>;

    /// Newest first.
    async fn list(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<Review>, HubError>;

    /// Ids of pending reviews whose expiry has passed.
    async fn overdue(&self, now: Timestamp) -> Result<Vec<String>, HubError>;

    /// The newest approved review granting `key` beyond `now`.
    async fn find_grant(
        &self,
        key: &GrantKey<'_>,
        now: Timestamp,
    ) -> Result<Option<Review>, HubError>;
}

/// Records `events` in order; the first failure stops everything.
pub(crate) async fn record(
    audit: &dyn ReviewAuditSink,
    events: Vec<crate::audit::ReviewEvent>,
) -> Result<(), HubError> {
    for event in events {
        audit
            .event(event)
            .await
            .map_err(|e| HubError::Audit(e.to_string()))?;
    }
    Ok(())
}
