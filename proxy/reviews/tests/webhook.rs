//! Webhook notifications against a local receiver: retried after a
//! failure, both formats, and never in the way of the review.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::{policy, request, serve};
use hoop_reviews::{
    MemoryAuditSink, ReviewHub, ReviewsConfig, WebhookConfig, WebhookFormat, WebhookUrl,
};
use serde_json::Value;

#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
}

async fn receiver(fail_first: usize) -> (Receiver, String) {
    let state = Receiver {
        fail_first,
        ..Receiver::default()
    };
    let captured = state.clone();
    let router = Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let state = captured.clone();
            async move {
                let attempt = state.attempts.fetch_add(1, Ordering::SeqCst);
                if attempt < state.fail_first {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                state.bodies.lock().expect("lock").push(body);
                StatusCode::OK
            }
        }),
    );
    let base = serve(router).await;
    (state, format!("{base}/hook"))
}

fn config(url: &str, format: WebhookFormat) -> ReviewsConfig {
    ReviewsConfig {
        public_url: Some("https://hoop-admin.example".into()),
        webhook: Some(WebhookConfig {
            timeout: hoop_reviews::config::HumanDuration(Duration::from_secs(2)),
            retries: 2,
            ..WebhookConfig::new(WebhookUrl::Inline(url.to_owned()), format)
        }),
        ..ReviewsConfig::default()
    }
}

fn hub(config: ReviewsConfig) -> ReviewHub {
    ReviewHub::in_memory(config, policy(), Arc::new(MemoryAuditSink::new())).expect("hub")
}

async fn delivered(receiver: &Receiver) -> Vec<Value> {
    common::eventually(Duration::from_secs(10), || async {
        !receiver.bodies.lock().expect("lock").is_empty()
    })
    .await;
    receiver.bodies.lock().expect("lock").clone()
}

#[tokio::test]
async fn json_webhook_is_retried_until_delivered() {
    let (receiver, url) = receiver(1).await;
    let hub = hub(config(&url, WebhookFormat::Json));
    let ticket = hub.request(request()).await.expect("request");
    let bodies = delivered(&receiver).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        receiver.attempts.load(Ordering::SeqCst),
        2,
        "one failure, one retry"
    );
    let body = &bodies[0];
    assert_eq!(body["event"], "review.created");
    assert_eq!(body["review"]["id"], ticket.id());
    assert_eq!(body["review"]["sql"], "DELETE FROM payments WHERE id = 42");
    assert_eq!(
        body["decision_url"],
        format!("https://hoop-admin.example/reviews#{}", ticket.id())
    );
}

#[tokio::test]
async fn slack_webhook_has_text_blocks_and_a_button() {
    let (receiver, url) = receiver(0).await;
    let hub = hub(config(&url, WebhookFormat::Slack));
    let ticket = hub.request(request()).await.expect("request");
    let bodies = delivered(&receiver).await;
    let body = &bodies[0];
    assert!(body["text"]
        .as_str()
        .is_some_and(|t| t.contains(ticket.id())));
    let blocks = body["blocks"].as_array().expect("blocks");
    assert!(blocks.iter().any(|b| b["type"] == "actions"
        && b["elements"][0]["url"]
            == format!("https://hoop-admin.example/reviews#{}", ticket.id())));
}

#[tokio::test]
async fn a_dead_webhook_never_holds_up_a_review() {
    let (receiver, url) = receiver(usize::MAX).await;
    let hub = hub(config(&url, WebhookFormat::Json));
    let started = Instant::now();
    let ticket = hub.request(request()).await.expect("request");
    assert!(started.elapsed() < Duration::from_millis(500));
    let gave_up = common::eventually(Duration::from_secs(10), || async {
        receiver.attempts.load(Ordering::SeqCst) == 3
    })
    .await;
    assert!(gave_up, "first try plus two retries");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 3, "bounded");
    hub.approve(ticket.id(), &common::reviewer("alice"), None, None)
        .await
        .expect("the review works regardless");
}
