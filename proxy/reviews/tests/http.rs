//! The review API, page, event stream and CLI helpers over real HTTP, on
//! the in-memory store, with a stand-in for the gateway's token check.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{policy, request, serve_hub, AGENT, ALICE, BOB, MALLORY};
use hoop_reviews::cli::{cli_approve, cli_deny, cli_list, cli_modify, cli_show};
use hoop_reviews::{MemoryAuditSink, ReviewHub, ReviewOutcome, ReviewTicket, ReviewsConfig};
use serde_json::{json, Value};

async fn hub() -> (ReviewHub, String) {
    let hub = ReviewHub::in_memory(
        ReviewsConfig::default(),
        policy(),
        Arc::new(MemoryAuditSink::new()),
    )
    .expect("hub");
    let base = serve_hub(&hub).await;
    (hub, base)
}

async fn held(hub: &ReviewHub) -> ReviewTicket {
    hub.request(request()).await.expect("request")
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut builder = client.request(method, url);
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(url: String, token: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::GET, url, token, None).await
}

async fn post(url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, token, Some(body)).await
}

#[tokio::test]
async fn tokens_are_required_and_only_reviewers_get_in() {
    let (hub, base) = hub().await;
    let ticket = held(&hub).await;
    let client = reqwest::Client::new();
    let bare = client
        .get(format!("{base}/api/reviews"))
        .send()
        .await
        .expect("send");
    assert_eq!(bare.status().as_u16(), 401);
    assert!(bare.headers().contains_key("www-authenticate"));
    let (status, body) = get(format!("{base}/api/reviews"), Some("forged")).await;
    assert_eq!(status, 401);
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("not valid")));
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{base}/api/reviews"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let basic = client
        .get(format!("{base}/api/reviews"))
        .header("authorization", "Basic YWxpY2U6eA==")
        .send()
        .await
        .expect("send");
    assert_eq!(basic.status().as_u16(), 401);

    let (status, body) = get(format!("{base}/api/reviews"), Some(MALLORY)).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = post(
        format!("{base}/api/reviews/{}/approve", ticket.id()),
        Some(MALLORY),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = post(
        format!("{base}/api/reviews/{}/approve", ticket.id()),
        Some(AGENT),
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "the requester cannot approve: {body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("agent-7")));
    let (status, body) = get(format!("{base}/api/reviews/{}", ticket.id()), Some(ALICE)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "pending");
}

#[tokio::test]
async fn reviews_read_as_documented() {
    let (hub, base) = hub().await;
    let ticket = held(&hub).await;
    let (status, body) = get(format!("{base}/api/reviews"), Some(ALICE)).await;
    assert_eq!(status, 200);
    let reviews = body["reviews"].as_array().expect("reviews array");
    assert_eq!(reviews.len(), 1);
    let review = &reviews[0];
    for field in [
        "id",
        "status",
        "subject",
        "rule",
        "sql",
        "created_at",
        "expires_at",
        "reason",
        "tables",
        "decisions",
    ] {
        assert!(
            review.get(field).is_some(),
            "review JSON has {field}: {review}"
        );
    }
    assert_eq!(review["id"], ticket.id());
    assert_eq!(review["subject"], "agent-7");
    assert_eq!(review["rule"], "payments-dml");
    assert_eq!(review["sql"], "DELETE FROM payments WHERE id = 42");
    assert!(
        review.get("normalized_sql").is_none(),
        "only its fingerprint is kept"
    );

    let (status, body) = get(format!("{base}/api/reviews?status=pending"), Some(ALICE)).await;
    assert_eq!(
        (status, body["reviews"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, body) = get(format!("{base}/api/reviews?status=denied"), Some(ALICE)).await;
    assert_eq!(
        (status, body["reviews"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, _) = get(format!("{base}/api/reviews?status=maybe"), Some(ALICE)).await;
    assert_eq!(status, 400);
    let (status, body) = get(
        format!("{base}/api/reviews/r-0000000000000000"),
        Some(ALICE),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = post(
        format!("{base}/api/reviews/r-0000000000000000/deny"),
        Some(ALICE),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn approve_over_http_releases_the_statement() {
    let (hub, base) = hub().await;
    let mut ticket = held(&hub).await;
    let url = format!("{base}/api/reviews/{}/approve", ticket.id());
    let (status, body) = post(url.clone(), Some(ALICE), json!({"reason": "looks fine"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decisions"][0]["reviewer"], "alice");
    assert_eq!(body["decisions"][0]["action"], "approve");
    assert_eq!(body["decisions"][0]["reason"], "looks fine");
    assert!(body["decisions"][0]["at"].is_string());
    assert_eq!(
        ticket.wait().await,
        ReviewOutcome::Approved {
            reviewers: vec!["alice".into()]
        }
    );
    let (status, body) = post(url, Some(BOB), json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = post(
        format!("{base}/api/reviews/{}/deny", ticket.id()),
        Some(BOB),
        json!({}),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn deny_and_grants_over_http() {
    let (hub, base) = hub().await;
    let mut ticket = held(&hub).await;
    let (status, body) = post(
        format!("{base}/api/reviews/{}/deny", ticket.id()),
        Some(BOB),
        json!({"reason": "use the replica"}),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("denied")));
    assert_eq!(
        ticket.wait().await,
        ReviewOutcome::Denied {
            reviewer: "bob".into(),
            reason: Some("use the replica".into())
        }
    );
    let mut granted = held(&hub).await;
    let (status, body) = post(
        format!("{base}/api/reviews/{}/approve", granted.id()),
        Some(ALICE),
        json!({"grant_for": "30m"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["grant_until"].is_string());
    assert!(matches!(
        granted.wait().await,
        ReviewOutcome::Approved { .. }
    ));
    let grant = hub.check_grant(&request()).await.expect("lookup");
    assert_eq!(grant.map(|g| g.review_id), Some(granted.id().to_owned()));
}

#[tokio::test]
async fn modify_over_http_and_its_refusals() {
    let (hub, base) = hub().await;
    let mut ticket = held(&hub).await;
    let url = format!("{base}/api/reviews/{}/modify", ticket.id());
    let (status, body) = post(
        url.clone(),
        Some(ALICE),
        json!({"sql": "DROP TABLE payments"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("blocked by policy")));
    let (status, _) = post(url.clone(), Some(ALICE), json!({"reason": "no sql"})).await;
    assert_eq!(status, 422, "sql is required");
    let (status, _) = post(url.clone(), Some(ALICE), json!({"sql": 5})).await;
    assert_eq!(status, 422);
    let (status, _) = call(reqwest::Method::POST, url.clone(), Some(ALICE), None).await;
    assert_eq!(status, 422);
    let raw = reqwest::Client::new()
        .post(url.clone())
        .bearer_auth(ALICE)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status().as_u16(), 422);
    let (status, body) = get(format!("{base}/api/reviews/{}", ticket.id()), Some(ALICE)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));

    let (status, body) = post(
        url,
        Some(BOB),
        json!({"sql": "DELETE FROM payments WHERE id = 42 AND amount < 10", "reason": "narrower"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "modified");
    assert_eq!(body["sql"], "DELETE FROM payments WHERE id = 42");
    assert_eq!(
        body["modified_sql"],
        "DELETE FROM payments WHERE id = 42 AND amount < 10"
    );
    assert!(matches!(
        ticket.wait().await,
        ReviewOutcome::Modified { sql, .. } if sql.ends_with("amount < 10")
    ));
    let (status, _) = post(
        format!("{base}/api/reviews/{}/approve", ticket.id()),
        Some(ALICE),
        json!({"grant_for": 30}),
    )
    .await;
    assert_eq!(
        status, 422,
        "a body of the wrong shape is refused before anything else"
    );
}

#[tokio::test]
async fn the_page_is_self_contained_and_locked_down() {
    let (_hub, base) = hub().await;
    let page = reqwest::get(format!("{base}/reviews")).await.expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert!(page
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().is_ok_and(|t| t.starts_with("text/html"))));
    let html = page.text().await.expect("html");
    for testid in [
        "token-input",
        "token-save",
        "pending-reviews",
        "review-detail",
        "approve",
        "deny",
        "modify",
        "modify-sql",
        "reason",
        "grant-for",
        "message",
    ] {
        assert!(
            html.contains(&format!("data-testid=\"{testid}\"")),
            "page has {testid}"
        );
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    assert!(!html.contains("<script>"), "no inline script");
    let script = reqwest::get(format!("{base}/reviews/app.js"))
        .await
        .expect("script");
    assert!(script
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().is_ok_and(|t| t.starts_with("text/javascript"))));
    let script = script.text().await.expect("js");
    // Attacker-controlled text must never be parsed as HTML.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.contains(sink), "app.js uses {sink}");
    }
    assert!(script.contains("textContent"));
    assert!(script.contains("sessionStorage"));
    let style = reqwest::get(format!("{base}/reviews/app.css"))
        .await
        .expect("css");
    assert_eq!(style.status().as_u16(), 200);
}

#[tokio::test]
async fn the_event_stream_announces_changes() {
    let (hub, base) = hub().await;
    let unauthorized = reqwest::get(format!("{base}/api/reviews/events"))
        .await
        .expect("send");
    assert_eq!(unauthorized.status().as_u16(), 401);
    let mut stream = reqwest::Client::new()
        .get(format!("{base}/api/reviews/events"))
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status().as_u16(), 200);
    assert!(stream
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().is_ok_and(|t| t.starts_with("text/event-stream"))));
    let ticket = held(&hub).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.chunk().await.expect("chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(ticket.id()) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    assert!(seen.contains("event: review"));
    assert!(seen.contains("\"status\":\"pending\""));
}

#[tokio::test]
async fn cli_helpers_talk_to_the_api() {
    let (hub, base) = hub().await;
    let mut first = held(&hub).await;
    let list = cli_list(&base, ALICE, None).await.expect("list");
    assert!(list.starts_with("ID"), "{list}");
    assert!(list.contains(first.id()) && list.contains("pending") && list.contains("agent-7"));
    let pending = cli_list(&base, ALICE, Some("pending")).await.expect("list");
    assert!(pending.contains(first.id()));
    let bad_status = cli_list(&base, ALICE, Some("later"))
        .await
        .expect_err("usage");
    assert_eq!(bad_status.exit_code(), 2);

    let show = cli_show(&base, ALICE, first.id()).await.expect("show");
    assert!(
        show.contains("DELETE FROM payments WHERE id = 42"),
        "{show}"
    );
    assert!(show.contains("payments-dml") && show.contains("DML on payments needs a reviewer"));

    let refused = cli_approve(&base, AGENT, first.id(), None, None)
        .await
        .expect_err("own review");
    assert_eq!(refused.exit_code(), 4);
    assert!(refused.to_string().contains("agent-7"), "{refused}");
    let forged = cli_list(&base, "forged", None).await.expect_err("401");
    assert_eq!(forged.exit_code(), 4);
    let missing = cli_show(&base, ALICE, "r-0000000000000000")
        .await
        .expect_err("404");
    assert_eq!(missing.exit_code(), 5);

    let approved = cli_approve(&base, ALICE, first.id(), Some("ok"), Some("15m"))
        .await
        .expect("approve");
    assert!(
        approved.contains("approved") && approved.contains("grant until"),
        "{approved}"
    );
    assert!(matches!(first.wait().await, ReviewOutcome::Approved { .. }));
    let again = cli_deny(&base, BOB, first.id(), None)
        .await
        .expect_err("409");
    assert_eq!(again.exit_code(), 6);

    let mut second = held(&hub).await;
    let blocked = cli_modify(&base, BOB, second.id(), "DROP TABLE payments", None)
        .await
        .expect_err("422");
    assert_eq!(blocked.exit_code(), 7);
    assert!(blocked.to_string().contains("blocked by policy"));
    let modified = cli_modify(&base, BOB, second.id(), "SELECT 1", Some("just a test"))
        .await
        .expect("modify");
    assert!(modified.contains("modified"), "{modified}");
    assert!(matches!(
        second.wait().await,
        ReviewOutcome::Modified { .. }
    ));

    let third = held(&hub).await;
    let denied = cli_deny(&base, BOB, third.id(), Some("no"))
        .await
        .expect("deny");
    assert!(denied.contains("denied"));

    let unreachable = cli_list("127.0.0.1:1", ALICE, None)
        .await
        .expect_err("down");
    assert_eq!(unreachable.exit_code(), 3);
}
