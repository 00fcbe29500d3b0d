//! The review hub: one per gateway process. The relay files a
//! [`ReviewRequest`] and waits on the [`ReviewTicket`]; reviewers decide
//! through the API, which calls [`ReviewHub::approve`], [`ReviewHub::deny`]
//! and [`ReviewHub::modify`].

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::audit::{ReviewAuditSink, ReviewEvent};
use crate::auth::Reviewer;
use crate::config::{ReviewsConfig, StoreKind};
use crate::decide::{self, Action, Rules, Update};
use crate::error::HubError;
use crate::model::{GrantUse, Review, ReviewOutcome, ReviewRequest, ReviewStatus};
use crate::notify::Notifier;
use crate::store::memory::MemoryStore;
use crate::store::postgres::PostgresStore;
use crate::store::{GrantKey, ReviewChange, Store};
use hoop_common::config::HumanDuration;
use hoop_common::time::Timestamp;

use crate::model::format_duration;

/// Vets a reviewer's replacement statement with the gateway's policy, in
/// the context of the review (requester, groups, role, rule): `Err` holds
/// the reason it would be blocked.
pub type PolicyCheck = Arc<dyn Fn(&str, &Review) -> Result<(), String> + Send + Sync>;

/// How often a waiting ticket looks at the store even without a change
/// notice (a missed NOTIFY, a reconnect).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Reviews listed at most.
pub const LIST_LIMIT: usize = 500;

/// Holds the reviews of one gateway process. Clones share everything.
#[derive(Clone)]
pub struct ReviewHub {
    inner: Arc<Inner>,
}

struct Inner {
    config: ReviewsConfig,
    store: Box<dyn Store>,
    policy: PolicyCheck,
    audit: Arc<dyn ReviewAuditSink>,
    changes: broadcast::Sender<ReviewChange>,
    notifier: Option<Notifier>,
    /// The Postgres LISTEN task, stopped with the hub.
    listener: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl ReviewHub {
    /// Opens the store the configuration names (`store = "memory"` or
    /// `"postgres"`).
    pub async fn open(
        config: ReviewsConfig,
        policy: PolicyCheck,
        audit: Arc<dyn ReviewAuditSink>,
    ) -> Result<ReviewHub, HubError> {
        config
            .validate()
            .map_err(|e| HubError::Config(e.to_string()))?;
        match config.store {
            StoreKind::Memory => ReviewHub::in_memory(config, policy, audit),
            StoreKind::Postgres => {
                let pg = config
                    .postgres_config()
                    .map_err(|e| HubError::Config(e.to_string()))?;
                ReviewHub::postgres(config, pg, policy, audit).await
            }
        }
    }

    /// Reviews in this process only (a single gateway).
    pub fn in_memory(
        config: ReviewsConfig,
        policy: PolicyCheck,
        audit: Arc<dyn ReviewAuditSink>,
    ) -> Result<ReviewHub, HubError> {
        let (changes, _) = broadcast::channel(256);
        let store = Box::new(MemoryStore::new(changes.clone()));
        ReviewHub::assemble(config, store, None, changes, policy, audit)
    }

    /// Reviews in table `hoop_reviews` of a database shared by several
    /// gateways (created if missing). Changes made anywhere wake tickets here.
    pub async fn postgres(
        config: ReviewsConfig,
        pg: tokio_postgres::Config,
        policy: PolicyCheck,
        audit: Arc<dyn ReviewAuditSink>,
    ) -> Result<ReviewHub, HubError> {
        let (changes, _) = broadcast::channel(256);
        let store = PostgresStore::connect(pg, changes.clone()).await?;
        let listener = store.spawn_listener().await?;
        ReviewHub::assemble(
            config,
            Box::new(store),
            Some(listener),
            changes,
            policy,
            audit,
        )
    }

    fn assemble(
        config: ReviewsConfig,
        store: Box<dyn Store>,
        listener: Option<JoinHandle<()>>,
        changes: broadcast::Sender<ReviewChange>,
        policy: PolicyCheck,
        audit: Arc<dyn ReviewAuditSink>,
    ) -> Result<ReviewHub, HubError> {
        let notifier = match &config.webhook {
            Some(webhook) => Some(Notifier::new(webhook).map_err(HubError::Config)?),
            None => None,
        };
        Ok(ReviewHub {
            inner: Arc::new(Inner {
                config,
                store,
                policy,
                audit,
                changes,
                notifier,
                listener,
            }),
        })
    }

    pub fn config(&self) -> &ReviewsConfig {
        &self.inner.config
    }

    /// Every change to any review, as it happens (here or, with Postgres,
    /// on another gateway).
    pub fn subscribe(&self) -> broadcast::Receiver<ReviewChange> {
        self.inner.changes.subscribe()
    }

    /// Where a reviewer decides review `id`: `{public_url}/reviews#{id}`.
    pub fn decision_url(&self, id: &str) -> String {
        let base = self
            .inner
            .config
            .public_url
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/');
        format!("{base}/reviews#{id}")
    }

    /// Holds a statement for review: stores the review (after its creation
    /// is recorded in the audit chain), sends the webhook in the
    /// background, and returns the ticket the relay waits on.
    pub async fn request(&self, request: ReviewRequest) -> Result<ReviewTicket, HubError> {
        let now = Timestamp::now();
        let id = new_review_id()?;
        let review = Review {
            id: id.clone(),
            status: ReviewStatus::Pending,
            min_approvals: self.inner.config.min_approvals_for(&request.rule),
            sql_fingerprint: fingerprint(&request.normalized_sql),
            subject: request.subject,
            groups: request.groups,
            session_id: request.session_id,
            role: request.role,
            client_addr: request.client_addr,
            rule: request.rule,
            reason: request.reason,
            sql: request.sql_masked,
            modified_sql: None,
            tables: request.tables,
            created_at: now,
            expires_at: now.plus(self.inner.config.expiry.0),
            decided_at: None,
            decisions: Vec::new(),
            grant_until: None,
            withdrawn_reason: None,
        };
        let event = ReviewEvent::Created {
            review_id: id.clone(),
            session_id: review.session_id.clone(),
            subject: review.subject.clone(),
            rule: review.rule.clone(),
            sql: review.sql.clone(),
            tables: review.tables.clone(),
            expires_at: review.expires_at,
        };
        let expires_at = review.expires_at;
        let notice = format!(
            "statement held for review {id} (rule \"{}\": {}); a reviewer decides at {}; it waits at most {}",
            review.rule,
            review.reason,
            self.decision_url(&id),
            format_duration(self.inner.config.expiry.0),
        );
        self.inner
            .store
            .create(
                Update {
                    review: review.clone(),
                    events: vec![event],
                },
                &*self.inner.audit,
            )
            .await?;
        tracing::info!(review = %id, subject = %review.subject, rule = %review.rule, "statement held for review");
        if let Some(notifier) = &self.inner.notifier {
            notifier.review_created(&review, &self.decision_url(&id));
        }
        Ok(ReviewTicket {
            hub: self.clone(),
            decision_url: self.decision_url(&id),
            id,
            notice,
            expires_at,
            outcome: None,
            settled: false,
        })
    }

    /// A live grant covering this request (same subject, role, rule and
    /// normalized text); its use is recorded before it is returned.
    pub async fn check_grant(&self, request: &ReviewRequest) -> Result<Option<GrantUse>, HubError> {
        if !self.inner.config.grants_allowed {
            return Ok(None);
        }
        let fingerprint = fingerprint(&request.normalized_sql);
        let key = GrantKey {
            subject: &request.subject,
            role: &request.role,
            rule: &request.rule,
            sql_fingerprint: &fingerprint,
        };
        let Some(review) = self.inner.store.find_grant(&key, Timestamp::now()).await? else {
            return Ok(None);
        };
        let Some(until) = review.grant_until else {
            return Ok(None);
        };
        self.inner
            .audit
            .event(ReviewEvent::GrantUsed {
                review_id: review.id.clone(),
                session_id: request.session_id.clone(),
                subject: request.subject.clone(),
                rule: request.rule.clone(),
                sql: request.sql_masked.clone(),
            })
            .await
            .map_err(|e| HubError::Audit(e.to_string()))?;
        Ok(Some(GrantUse {
            approvers: review.current_approvers(),
            review_id: review.id,
            until,
        }))
    }

    /// Refuses anyone outside the reviewer groups (403).
    pub fn authorize(&self, reviewer: &Reviewer) -> Result<(), HubError> {
        decide::check_reviewer(reviewer, &self.rules())
    }

    /// One review, its status brought up to date.
    pub async fn get(&self, id: &str) -> Result<Option<Review>, HubError> {
        let review = self.inner.store.get(id).await?;
        match review {
            Some(review)
                if review.status == ReviewStatus::Pending && review.expires_at.has_passed() =>
            {
                self.expire(id).await.map(Some)
            }
            other => Ok(other),
        }
    }

    /// Reviews, newest first, optionally of one status; overdue ones are
    /// expired first so the list tells the truth.
    pub async fn list(&self, status: Option<ReviewStatus>) -> Result<Vec<Review>, HubError> {
        self.expire_overdue().await;
        self.inner.store.list(status, LIST_LIMIT).await
    }

    /// Approves (one of `min_approvals`); `grant_for` (e.g. `"30m"`) lets
    /// the requester rerun the same statement without a new review.
    pub async fn approve(
        &self,
        id: &str,
        reviewer: &Reviewer,
        reason: Option<String>,
        grant_for: Option<&str>,
    ) -> Result<Review, HubError> {
        let grant_for = grant_for.map(|text| self.parse_grant(text)).transpose()?;
        self.decide(
            id,
            reviewer,
            Action::Approve {
                reason: clean(reason),
                grant_for,
            },
        )
        .await
    }

    pub async fn deny(
        &self,
        id: &str,
        reviewer: &Reviewer,
        reason: Option<String>,
    ) -> Result<Review, HubError> {
        self.decide(
            id,
            reviewer,
            Action::Deny {
                reason: clean(reason),
            },
        )
        .await
    }

    /// Replaces the statement; refused (and the review stays pending) when
    /// the policy check would block the replacement.
    pub async fn modify(
        &self,
        id: &str,
        reviewer: &Reviewer,
        sql: String,
        reason: Option<String>,
    ) -> Result<Review, HubError> {
        self.decide(
            id,
            reviewer,
            Action::Modify {
                sql,
                reason: clean(reason),
            },
        )
        .await
    }

    async fn decide(
        &self,
        id: &str,
        reviewer: &Reviewer,
        action: Action,
    ) -> Result<Review, HubError> {
        // Outsiders learn nothing, not even whether the id exists.
        self.authorize(reviewer)?;
        let groups = self.inner.config.reviewer_groups.clone();
        let policy = self.inner.policy.clone();
        let change = move |review: &Review| {
            let rules = Rules {
                reviewer_groups: &groups,
            };
            decide::decide(
                review,
                reviewer,
                &action,
                Timestamp::now(),
                &rules,
                &*policy,
            )
            .map(Some)
        };
        let result = self
            .inner
            .store
            .update(id, &change, &*self.inner.audit)
            .await;
        match &result {
            Ok(review) => {
                tracing::info!(review = %id, reviewer = %reviewer.subject, status = %review.status, "review decision")
            }
            Err(HubError::Expired(_)) => {
                let _ = self.expire(id).await;
            }
            Err(e) => {
                tracing::info!(review = %id, reviewer = %reviewer.subject, "review decision refused: {e}")
            }
        }
        result
    }

    fn parse_grant(&self, text: &str) -> Result<Duration, HubError> {
        if !self.inner.config.grants_allowed {
            return Err(HubError::Invalid(
                "grants are disabled on this gateway (`reviews.grants_allowed = false`)".into(),
            ));
        }
        let duration = HumanDuration::parse(text)
            .map(|d| d.0)
            .map_err(|e| HubError::Invalid(format!("grant_for: {e}")))?;
        if duration < Duration::from_secs(1) {
            return Err(HubError::Invalid("grant_for must be at least 1s".into()));
        }
        let max = self.inner.config.max_grant.0;
        if duration > max {
            return Err(HubError::Invalid(format!(
                "grant_for {text:?} is longer than the {} this gateway allows",
                format_duration(max)
            )));
        }
        Ok(duration)
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            reviewer_groups: &self.inner.config.reviewer_groups,
        }
    }

    /// Pending past expiry → expired (recorded first); returns the review.
    pub(crate) async fn expire(&self, id: &str) -> Result<Review, HubError> {
        let change = |review: &Review| Ok(decide::expire(review, Timestamp::now()));
        self.inner
            .store
            .update(id, &change, &*self.inner.audit)
            .await
    }

    async fn expire_overdue(&self) {
        match self.inner.store.overdue(Timestamp::now()).await {
            Ok(ids) => {
                for id in ids {
                    if let Err(e) = self.expire(&id).await {
                        tracing::warn!(review = %id, "cannot mark review expired: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("cannot look for expired reviews: {e}"),
        }
    }

    pub(crate) async fn withdraw(&self, id: &str, reason: &str) -> Result<Review, HubError> {
        let change = |review: &Review| Ok(decide::withdraw(review, reason, Timestamp::now()));
        self.inner
            .store
            .update(id, &change, &*self.inner.audit)
            .await
    }
}

fn clean(reason: Option<String>) -> Option<String> {
    reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
}

/// `r-` and 16 hex digits (64 random bits).
fn new_review_id() -> Result<String, HubError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| HubError::Store(format!("no randomness for a review id: {e}")))?;
    Ok(format!("r-{}", hex(&bytes)))
}

fn fingerprint(normalized_sql: &str) -> String {
    hex(&Sha256::digest(normalized_sql.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A held statement's claim on its review. Wait on it; drop it (or
/// [`withdraw`](ReviewTicket::withdraw) it) when the client cancels or
/// disconnects, and the review is withdrawn.
pub struct ReviewTicket {
    hub: ReviewHub,
    id: String,
    decision_url: String,
    notice: String,
    expires_at: Timestamp,
    outcome: Option<ReviewOutcome>,
    settled: bool,
}

impl std::fmt::Debug for ReviewTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewTicket")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl ReviewTicket {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The page where this review is decided.
    pub fn decision_url(&self) -> &str {
        &self.decision_url
    }

    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// One line for the client's NoticeResponse: the review id, the rule
    /// and why, where to decide, how long it waits.
    pub fn notice(&self) -> &str {
        &self.notice
    }

    /// Waits for the decision or the expiry. Cancel-safe: dropping the
    /// future leaves the ticket (and the review) as it was.
    pub async fn wait(&mut self) -> ReviewOutcome {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        // Subscribe before looking, so no change slips between the two.
        let mut changes = self.hub.subscribe();
        loop {
            if let Some(outcome) = self.look().await {
                self.outcome = Some(outcome.clone());
                self.settled = true;
                return outcome;
            }
            let pause = self.expires_at.remaining().min(POLL_INTERVAL);
            let deadline = tokio::time::Instant::now() + pause;
            loop {
                tokio::select! {
                    received = changes.recv() => match received {
                        Ok(change) if change.id != self.id => continue,
                        Err(broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(deadline).await;
                            break;
                        }
                        // Ours, or some were missed: look again.
                        _ => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }

    async fn look(&self) -> Option<ReviewOutcome> {
        match self.hub.inner.store.get(&self.id).await {
            Ok(Some(review)) => {
                if let Some(outcome) = review.outcome() {
                    return Some(outcome);
                }
            }
            Ok(None) => {
                tracing::warn!(review = %self.id, "review vanished from the store; treating it as expired");
                return Some(ReviewOutcome::Expired);
            }
            Err(e) => tracing::warn!(review = %self.id, "cannot read review: {e}"),
        }
        if self.expires_at.has_passed() {
            return Some(match self.hub.expire(&self.id).await {
                Ok(review) => review.outcome().unwrap_or(ReviewOutcome::Expired),
                Err(e) => {
                    // The statement does not run either way.
                    tracing::error!(review = %self.id, "cannot record the expiry: {e}");
                    ReviewOutcome::Expired
                }
            });
        }
        None
    }

    /// The client cancelled or went away: withdraw the review, if still
    /// pending (a decision that came first stays as it is).
    pub async fn withdraw(mut self, reason: &str) -> Result<(), HubError> {
        self.settled = true;
        self.hub.withdraw(&self.id, reason).await.map(drop)
    }
}

impl Drop for ReviewTicket {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let hub = self.hub.clone();
        let id = std::mem::take(&mut self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = hub
                        .withdraw(&id, "the client cancelled or disconnected")
                        .await
                    {
                        tracing::warn!(review = %id, "cannot withdraw review: {e}");
                    }
                });
            }
            Err(_) => tracing::warn!(review = %id, "cannot withdraw review outside a runtime"),
        }
    }
}
