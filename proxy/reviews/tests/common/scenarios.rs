//! Hub behaviour every store must show. Each scenario builds its own hub
//! from a configuration, so the memory and Postgres tests run the same code.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hoop_reviews::{
    HubError, MemoryAuditSink, ReviewEvent, ReviewHub, ReviewOutcome, ReviewStatus, ReviewsConfig,
};

use super::{outsider, policy, request, request_for, reviewer};

/// Makes a hub with a fresh audit sink for a configuration.
pub trait Backend {
    fn hub(&self, config: ReviewsConfig)
        -> impl Future<Output = (ReviewHub, Arc<MemoryAuditSink>)>;
}

pub struct Memory;

impl Backend for Memory {
    async fn hub(&self, config: ReviewsConfig) -> (ReviewHub, Arc<MemoryAuditSink>) {
        let sink = Arc::new(MemoryAuditSink::new());
        let hub = ReviewHub::in_memory(config, policy(), sink.clone()).expect("hub");
        (hub, sink)
    }
}

fn event_names(sink: &MemoryAuditSink, id: &str) -> Vec<&'static str> {
    sink.events()
        .iter()
        .filter(|e| e.review_id() == id)
        .map(|e| match e {
            ReviewEvent::Created { .. } => "created",
            ReviewEvent::Approved { .. } => "approved",
            ReviewEvent::Denied { .. } => "denied",
            ReviewEvent::Modified { .. } => "modified",
            ReviewEvent::Expired { .. } => "expired",
            ReviewEvent::Withdrawn { .. } => "withdrawn",
            ReviewEvent::GrantUsed { .. } => "grant_used",
        })
        .collect()
}

async fn status_of(hub: &ReviewHub, id: &str) -> ReviewStatus {
    hub.get(id).await.expect("get").expect("exists").status
}

pub async fn approve_wakes_the_ticket(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    assert!(ticket.id().starts_with("r-"));
    assert!(ticket
        .decision_url()
        .ends_with(&format!("/reviews#{}", ticket.id())));
    assert!(ticket.notice().contains(ticket.id()) && ticket.notice().contains("payments-dml"));
    let review = hub.get(ticket.id()).await.expect("get").expect("stored");
    assert_eq!(review.status, ReviewStatus::Pending);
    assert_eq!(review.sql, "DELETE FROM payments WHERE id = 42");
    let id = ticket.id().to_owned();
    let waiter = tokio::spawn(async move { ticket.wait().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    hub.approve(&id, &reviewer("alice"), Some("ok".into()), None)
        .await
        .expect("approve");
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("joined");
    assert_eq!(
        outcome,
        ReviewOutcome::Approved {
            reviewers: vec!["alice".into()]
        }
    );
    assert_eq!(event_names(&sink, &id), ["created", "approved"]);
}

pub async fn deny_reaches_the_ticket(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    hub.deny(
        ticket.id(),
        &reviewer("bob"),
        Some("  not during business hours ".into()),
    )
    .await
    .expect("deny");
    assert_eq!(
        ticket.wait().await,
        ReviewOutcome::Denied {
            reviewer: "bob".into(),
            reason: Some("not during business hours".into())
        }
    );
    assert_eq!(event_names(&sink, ticket.id()), ["created", "denied"]);
}

pub async fn modify_runs_the_replacement(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    let replacement = "DELETE FROM payments WHERE id = 42 AND amount < 100";
    let review = hub
        .modify(ticket.id(), &reviewer("alice"), replacement.into(), None)
        .await
        .expect("modify");
    assert_eq!(review.status, ReviewStatus::Modified);
    assert_eq!(
        review.sql, "DELETE FROM payments WHERE id = 42",
        "original kept"
    );
    assert_eq!(review.modified_sql.as_deref(), Some(replacement));
    assert_eq!(
        ticket.wait().await,
        ReviewOutcome::Modified {
            reviewer: "alice".into(),
            reviewers: vec!["alice".into()],
            sql: replacement.into()
        }
    );
    let modified = sink
        .events()
        .into_iter()
        .find(|e| matches!(e, ReviewEvent::Modified { .. }))
        .expect("modified event");
    assert!(
        matches!(modified, ReviewEvent::Modified { original_sql, sql, .. }
        if original_sql == "DELETE FROM payments WHERE id = 42" && sql == replacement)
    );
}

pub async fn blocked_modification_keeps_the_review_pending(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    let refused = hub
        .modify(
            ticket.id(),
            &reviewer("alice"),
            "DROP TABLE payments".into(),
            None,
        )
        .await
        .expect_err("blocked");
    assert!(
        matches!(&refused, HubError::Blocked(m) if m.contains("no-ddl")),
        "{refused}"
    );
    assert_eq!(refused.http_status(), 422);
    assert_eq!(status_of(&hub, ticket.id()).await, ReviewStatus::Pending);
    assert_eq!(event_names(&sink, ticket.id()), ["created"]);
    hub.approve(ticket.id(), &reviewer("alice"), None, None)
        .await
        .expect("still decidable");
    assert!(matches!(
        ticket.wait().await,
        ReviewOutcome::Approved { .. }
    ));
}

pub async fn expiry_ends_the_wait(backend: &impl Backend) {
    let config = ReviewsConfig {
        expiry: hoop_reviews::config::HumanDuration(Duration::from_millis(400)),
        ..ReviewsConfig::default()
    };
    let (hub, sink) = backend.hub(config).await;
    let mut ticket = hub.request(request()).await.expect("request");
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), ticket.wait())
        .await
        .expect("expires in time");
    assert_eq!(outcome, ReviewOutcome::Expired);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status_of(&hub, ticket.id()).await, ReviewStatus::Expired);
    let late = hub
        .approve(ticket.id(), &reviewer("alice"), None, None)
        .await
        .expect_err("too late");
    assert_eq!(late.http_status(), 409);
    assert_eq!(event_names(&sink, ticket.id()), ["created", "expired"]);
}

pub async fn dropping_the_ticket_withdraws(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let ticket = hub.request(request()).await.expect("request");
    let id = ticket.id().to_owned();
    drop(ticket);
    let withdrawn = super::eventually(Duration::from_secs(5), || {
        let hub = hub.clone();
        let id = id.clone();
        async move { status_of(&hub, &id).await == ReviewStatus::Withdrawn }
    })
    .await;
    assert!(withdrawn, "dropping a pending ticket withdraws the review");
    assert_eq!(event_names(&sink, &id), ["created", "withdrawn"]);
    let review = hub.get(&id).await.expect("get").expect("exists");
    assert!(review.withdrawn_reason.is_some());
    let refused = hub.approve(&id, &reviewer("alice"), None, None).await;
    assert!(matches!(refused, Err(HubError::NotPending { .. })));
}

pub async fn cancelled_wait_keeps_the_review(backend: &impl Backend) {
    let (hub, _sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    // A relay's select! dropping the wait future must not withdraw.
    assert!(
        tokio::time::timeout(Duration::from_millis(150), ticket.wait())
            .await
            .is_err()
    );
    assert_eq!(status_of(&hub, ticket.id()).await, ReviewStatus::Pending);
    hub.approve(ticket.id(), &reviewer("alice"), None, None)
        .await
        .expect("approve");
    assert!(matches!(
        ticket.wait().await,
        ReviewOutcome::Approved { .. }
    ));
    // Once settled, dropping changes nothing.
    let id = ticket.id().to_owned();
    drop(ticket);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status_of(&hub, &id).await, ReviewStatus::Approved);
}

pub async fn explicit_withdraw(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let ticket = hub.request(request()).await.expect("request");
    let id = ticket.id().to_owned();
    ticket
        .withdraw("client sent CancelRequest")
        .await
        .expect("withdraw");
    let review = hub.get(&id).await.expect("get").expect("exists");
    assert_eq!(review.status, ReviewStatus::Withdrawn);
    assert_eq!(
        review.withdrawn_reason.as_deref(),
        Some("client sent CancelRequest")
    );
    assert!(sink.events().contains(&ReviewEvent::Withdrawn {
        review_id: id,
        reason: "client sent CancelRequest".into()
    }));
}

pub async fn requester_and_outsiders_cannot_decide(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let ticket = hub.request(request()).await.expect("request");
    let own = hub
        .approve(ticket.id(), &reviewer("agent-7"), None, None)
        .await
        .expect_err("own review");
    assert!(matches!(own, HubError::OwnReview(_)));
    assert_eq!(own.http_status(), 403);
    let own_modify = hub
        .modify(ticket.id(), &reviewer("agent-7"), "SELECT 1".into(), None)
        .await
        .expect_err("own review");
    assert!(matches!(own_modify, HubError::OwnReview(_)));
    let stranger = hub
        .deny(ticket.id(), &outsider(), None)
        .await
        .expect_err("not a reviewer");
    assert!(matches!(stranger, HubError::NotReviewer { .. }));
    assert_eq!(stranger.http_status(), 403);
    let stranger_unknown = hub
        .approve("r-doesnotexist", &outsider(), None, None)
        .await
        .expect_err("refused");
    assert_eq!(
        stranger_unknown.http_status(),
        403,
        "outsiders learn nothing"
    );
    let unknown = hub
        .approve("r-doesnotexist", &reviewer("alice"), None, None)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.http_status(), 404);
    assert_eq!(status_of(&hub, ticket.id()).await, ReviewStatus::Pending);
    assert_eq!(event_names(&sink, ticket.id()), ["created"]);
}

pub async fn min_approvals_need_distinct_reviewers(backend: &impl Backend) {
    let mut config = ReviewsConfig::default();
    config.min_approvals.insert("payments-dml".into(), 2);
    let (hub, sink) = backend.hub(config).await;
    let mut ticket = hub.request(request()).await.expect("request");
    let first = hub
        .approve(ticket.id(), &reviewer("alice"), None, None)
        .await
        .expect("first");
    assert_eq!(first.status, ReviewStatus::Pending);
    assert_eq!(first.min_approvals, 2);
    let again = hub
        .approve(ticket.id(), &reviewer("alice"), None, None)
        .await
        .expect_err("same person twice");
    assert_eq!(again.http_status(), 409);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ticket.wait())
            .await
            .is_err(),
        "one approval is not enough"
    );
    hub.approve(ticket.id(), &reviewer("bob"), None, None)
        .await
        .expect("second");
    assert_eq!(
        ticket.wait().await,
        ReviewOutcome::Approved {
            reviewers: vec!["alice".into(), "bob".into()]
        }
    );
    let approvals: Vec<(u32, u32)> = sink
        .events()
        .iter()
        .filter_map(|e| match e {
            ReviewEvent::Approved {
                approvals,
                required,
                ..
            } if e.review_id() == ticket.id() => Some((*approvals, *required)),
            _ => None,
        })
        .collect();
    assert_eq!(approvals, [(1, 2), (2, 2)]);
}

pub async fn grants_cover_the_same_statement_until_they_expire(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    assert_eq!(hub.check_grant(&request()).await.expect("lookup"), None);
    let review = hub
        .approve(ticket.id(), &reviewer("alice"), None, Some("2s"))
        .await
        .expect("approve with grant");
    assert!(review.grant_until.is_some());
    assert!(matches!(
        ticket.wait().await,
        ReviewOutcome::Approved { .. }
    ));

    let grant = hub
        .check_grant(&request())
        .await
        .expect("lookup")
        .expect("granted");
    assert_eq!(grant.review_id, ticket.id());
    assert_eq!(grant.approvers, ["alice"]);
    assert!(sink.events().iter().any(
        |e| matches!(e, ReviewEvent::GrantUsed { review_id, .. } if review_id == ticket.id())
    ));
    // Another statement, another person or another rule: no grant.
    let other_sql = request_for("agent-7", "DELETE FROM payments");
    assert_eq!(hub.check_grant(&other_sql).await.expect("lookup"), None);
    let other_person = request_for("agent-8", "DELETE FROM payments WHERE id = 42");
    assert_eq!(hub.check_grant(&other_person).await.expect("lookup"), None);
    let mut other_rule = request();
    other_rule.rule = "big-reads".into();
    assert_eq!(hub.check_grant(&other_rule).await.expect("lookup"), None);

    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        hub.check_grant(&request()).await.expect("lookup"),
        None,
        "expired"
    );

    let too_long = hub.request(request()).await.expect("request");
    let refused = hub
        .approve(too_long.id(), &reviewer("alice"), None, Some("3d"))
        .await
        .expect_err("longer than max_grant");
    assert_eq!(refused.http_status(), 422);
    let nonsense = hub
        .approve(too_long.id(), &reviewer("alice"), None, Some("a while"))
        .await
        .expect_err("not a duration");
    assert_eq!(nonsense.http_status(), 422);
}

pub async fn grants_can_be_disabled(backend: &impl Backend) {
    let config = ReviewsConfig {
        grants_allowed: false,
        ..ReviewsConfig::default()
    };
    let (hub, _sink) = backend.hub(config).await;
    let ticket = hub.request(request()).await.expect("request");
    let refused = hub
        .approve(ticket.id(), &reviewer("alice"), None, Some("30m"))
        .await
        .expect_err("grants disabled");
    assert!(matches!(&refused, HubError::Invalid(m) if m.contains("grants_allowed")));
    assert_eq!(status_of(&hub, ticket.id()).await, ReviewStatus::Pending);
}

pub async fn audit_failure_fails_closed(backend: &impl Backend) {
    let (hub, sink) = backend.hub(ReviewsConfig::default()).await;
    let mut ticket = hub.request(request()).await.expect("request");
    sink.set_failing(true);
    let refused = hub
        .approve(ticket.id(), &reviewer("alice"), None, None)
        .await
        .expect_err("not recorded, not applied");
    assert!(matches!(refused, HubError::Audit(_)));
    assert_eq!(refused.http_status(), 503);
    assert!(
        hub.request(request()).await.is_err(),
        "no unrecorded review"
    );
    sink.set_failing(false);
    assert_eq!(status_of(&hub, ticket.id()).await, ReviewStatus::Pending);
    hub.deny(ticket.id(), &reviewer("alice"), None)
        .await
        .expect("recorded now");
    assert!(matches!(ticket.wait().await, ReviewOutcome::Denied { .. }));
    assert_eq!(event_names(&sink, ticket.id()), ["created", "denied"]);
}

pub async fn list_filters_by_status(backend: &impl Backend) {
    let (hub, _sink) = backend.hub(ReviewsConfig::default()).await;
    let pending = hub.request(request()).await.expect("request");
    // Creation times are kept to the millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let denied = hub.request(request()).await.expect("request");
    hub.deny(denied.id(), &reviewer("bob"), None)
        .await
        .expect("deny");
    let ids = |reviews: Vec<hoop_reviews::Review>| -> Vec<String> {
        reviews.into_iter().map(|r| r.id).collect()
    };
    let pending_ids = ids(hub.list(Some(ReviewStatus::Pending)).await.expect("list"));
    assert!(pending_ids.contains(&pending.id().to_owned()));
    assert!(!pending_ids.contains(&denied.id().to_owned()));
    let denied_ids = ids(hub.list(Some(ReviewStatus::Denied)).await.expect("list"));
    assert!(denied_ids.contains(&denied.id().to_owned()));
    let all = ids(hub.list(None).await.expect("list"));
    let newest = all.iter().position(|id| id == denied.id()).expect("listed");
    let older = all
        .iter()
        .position(|id| id == pending.id())
        .expect("listed");
    assert!(newest < older, "newest first");
}

/// The one list of scenarios: calls `$callback!(name, name, …)`, so each
/// backend's tests name every scenario and a new one cannot skip a backend.
macro_rules! for_each_scenario {
    ($callback:ident) => {
        $callback! {
            approve_wakes_the_ticket,
            deny_reaches_the_ticket,
            modify_runs_the_replacement,
            blocked_modification_keeps_the_review_pending,
            expiry_ends_the_wait,
            dropping_the_ticket_withdraws,
            cancelled_wait_keeps_the_review,
            explicit_withdraw,
            requester_and_outsiders_cannot_decide,
            min_approvals_need_distinct_reviewers,
            grants_cover_the_same_statement_until_they_expire,
            grants_can_be_disabled,
            audit_failure_fails_closed,
            list_filters_by_status,
        }
    };
}
// Test binaries that only call `all` do not name the macro.
#[allow(unused_imports)]
pub(crate) use for_each_scenario;

/// Runs every scenario above, in order, naming each.
pub async fn all(backend: &impl Backend) {
    macro_rules! run {
        ($($name:ident),* $(,)?) => {$(
            eprintln!("scenario {}", stringify!($name));
            $name(backend).await;
        )*};
    }
    for_each_scenario!(run);
}
