//! Reviews in this process: one gateway, nothing to set up.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::{broadcast, Mutex};

use super::{record, Change, GrantKey, ReviewChange, Store};
use crate::audit::ReviewAuditSink;
use crate::decide::Update;
use crate::error::HubError;
use crate::model::{Review, ReviewStatus};
use hoop_common::time::Timestamp;

/// Final reviews kept for the page and the API; older ones are dropped
/// (the audit chain keeps them for good).
const KEEP_FINAL: usize = 2_000;

pub(crate) struct MemoryStore {
    // An async mutex: it is held across the audit write, so that a change
    // and its record happen as one step.
    reviews: Mutex<HashMap<String, Review>>,
    changes: broadcast::Sender<ReviewChange>,
}

impl MemoryStore {
    pub(crate) fn new(changes: broadcast::Sender<ReviewChange>) -> MemoryStore {
        MemoryStore {
            reviews: Mutex::new(HashMap::new()),
            changes,
        }
    }

    fn announce(&self, review: &Review) {
        // No receiver is fine: nobody is waiting.
        let _ = self.changes.send(ReviewChange {
            id: review.id.clone(),
            status: review.status,
        });
    }
}

fn prune(reviews: &mut HashMap<String, Review>) {
    let mut finals: Vec<(Timestamp, String)> = reviews
        .values()
        .filter(|r| r.status.is_final())
        .map(|r| (r.created_at, r.id.clone()))
        .collect();
    if finals.len() <= KEEP_FINAL {
        return;
    }
    finals.sort();
    let excess = finals.len() - KEEP_FINAL;
    for (_, id) in finals.into_iter().take(excess) {
        reviews.remove(&id);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, update: Update, audit: &dyn ReviewAuditSink) -> Result<(), HubError> {
        let mut reviews = self.reviews.lock().await;
        if reviews.contains_key(&update.review.id) {
            return Err(HubError::Store(format!(
                "review id {} already exists",
                update.review.id
            )));
        }
        record(audit, update.events).await?;
        self.announce(&update.review);
        reviews.insert(update.review.id.clone(), update.review);
        prune(&mut reviews);
        Ok(())
    }

    async fn update(
        &self,
        id: &str,
        change: Change<'_>,
        audit: &dyn ReviewAuditSink,
    ) -> Result<Review, HubError> {
        let mut reviews = self.reviews.lock().await;
        let current = reviews
            .get(id)
            .ok_or_else(|| HubError::NotFound(id.to_owned()))?;
        let Some(update) = change(current)? else {
            return Ok(current.clone());
        };
        record(audit, update.events).await?;
        self.announce(&update.review);
        reviews.insert(id.to_owned(), update.review.clone());
        Ok(update.review)
    }

    async fn get(&self, id: &str) -> Result<Option<Review>, HubError> {
        Ok(self.reviews.lock().await.get(id).cloned())
    }

    async fn list(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
    ) -> Result<Vec<Review>, HubError> {
        let reviews = self.reviews.lock().await;
        let mut found: Vec<Review> = reviews
            .values()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        found.truncate(limit);
        Ok(found)
    }

    async fn overdue(&self, now: Timestamp) -> Result<Vec<String>, HubError> {
        let reviews = self.reviews.lock().await;
        Ok(reviews
            .values()
            .filter(|r| r.status == ReviewStatus::Pending && r.expires_at <= now)
            .map(|r| r.id.clone())
            .collect())
    }

    async fn find_grant(
        &self,
        key: &GrantKey<'_>,
        now: Timestamp,
    ) -> Result<Option<Review>, HubError> {
        let reviews = self.reviews.lock().await;
        Ok(reviews
            .values()
            .filter(|r| {
                r.status == ReviewStatus::Approved
                    && r.grant_until.is_some_and(|until| until > now)
                    && r.subject == key.subject
                    && r.role == key.role
                    && r.rule == key.rule
                    && r.sql_fingerprint == key.sql_fingerprint
            })
            .max_by_key(|r| r.grant_until)
            .cloned())
    }
}
