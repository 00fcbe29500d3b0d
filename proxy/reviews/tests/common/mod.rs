//! Shared by the integration tests: a reviewer-token double, requests, a
//! policy check, the hub scenarios every backend must pass, and a throwaway
//! Postgres cluster (tests/kit).
#![allow(dead_code)]

pub mod postgres;
pub mod scenarios;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hoop_reviews::{
    AuthError, PolicyCheck, Review, ReviewHub, ReviewRequest, Reviewer, ReviewerAuth,
};

/// Bearer tokens of the test people. The real verifier is the gateway's
/// JWT check; here a token simply names a subject and groups.
pub struct FakeAuth {
    people: HashMap<&'static str, Reviewer>,
}

pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";
/// The requester, who is also in the reviewers group.
pub const AGENT: &str = "agent-token";
/// Not a reviewer.
pub const MALLORY: &str = "mallory-token";

pub fn reviewer(subject: &str) -> Reviewer {
    Reviewer {
        subject: subject.to_owned(),
        groups: vec!["reviewers".to_owned()],
    }
}

pub fn outsider() -> Reviewer {
    Reviewer {
        subject: "mallory".to_owned(),
        groups: vec!["fraud-agents".to_owned()],
    }
}

impl FakeAuth {
    pub fn new() -> Arc<FakeAuth> {
        let mut people = HashMap::new();
        people.insert(ALICE, reviewer("alice"));
        people.insert(BOB, reviewer("bob"));
        people.insert(
            AGENT,
            Reviewer {
                subject: "agent-7".to_owned(),
                groups: vec!["payments-admins".to_owned(), "reviewers".to_owned()],
            },
        );
        people.insert(MALLORY, outsider());
        Arc::new(FakeAuth { people })
    }
}

#[async_trait]
impl ReviewerAuth for FakeAuth {
    async fn authenticate(&self, bearer: &str) -> Result<Reviewer, AuthError> {
        self.people
            .get(bearer)
            .cloned()
            .ok_or_else(|| AuthError::Invalid("unknown test token".to_owned()))
    }
}

/// A held DELETE from agent-7, under rule `payments-dml`.
pub fn request() -> ReviewRequest {
    request_for("agent-7", "DELETE FROM payments WHERE id = 42")
}

pub fn request_for(subject: &str, sql: &str) -> ReviewRequest {
    ReviewRequest {
        subject: subject.to_owned(),
        groups: vec!["payments-admins".to_owned()],
        session_id: "0123456789abcdef0123456789abcdef".to_owned(),
        role: "payments_admin".to_owned(),
        sql_masked: sql.to_owned(),
        normalized_sql: sql.replace("42", "$1"),
        rule: "payments-dml".to_owned(),
        reason: "DML on payments needs a reviewer".to_owned(),
        tables: vec!["public.payments".to_owned()],
        client_addr: "127.0.0.1:50000".to_owned(),
    }
}

/// Stands in for the gateway's policy: DROP is never allowed.
pub fn policy() -> PolicyCheck {
    Arc::new(|sql: &str, _review: &Review| {
        if sql.to_ascii_uppercase().contains("DROP") {
            Err("rule no-ddl: DROP is never allowed".to_owned())
        } else {
            Ok(())
        }
    })
}

/// Serves `router` on 127.0.0.1:0; returns its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    format!("http://{addr}")
}

pub fn serve_hub(hub: &ReviewHub) -> impl std::future::Future<Output = String> {
    serve(hoop_reviews::router(hub.clone(), FakeAuth::new()))
}

/// Polls `check` until it holds (at most `within`).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
