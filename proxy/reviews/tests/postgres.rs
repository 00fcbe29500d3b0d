//! The Postgres store on a throwaway cluster (tests/kit): every hub
//! scenario, then two gateways (two hubs) sharing one database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::postgres::Cluster;
use common::scenarios::{self, Backend};
use common::{policy, request, reviewer, serve_hub, ALICE};
use hoop_reviews::{
    MemoryAuditSink, ReviewEvent, ReviewHub, ReviewOutcome, ReviewStatus, ReviewsConfig, StoreKind,
};
use serde_json::{json, Value};

struct Postgres(tokio_postgres::Config);

impl Backend for Postgres {
    async fn hub(&self, config: ReviewsConfig) -> (ReviewHub, Arc<MemoryAuditSink>) {
        let sink = Arc::new(MemoryAuditSink::new());
        let hub = ReviewHub::postgres(config, self.0.clone(), policy(), sink.clone())
            .await
            .expect("postgres hub");
        (hub, sink)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store() {
    let cluster = Cluster::start();
    let backend = Postgres(cluster.config());
    opens_from_configuration(&cluster).await;
    scenarios::all(&backend).await;
    eprintln!("scenario two_gateways_share_reviews");
    two_gateways_share_reviews(&backend).await;
    eprintln!("scenario concurrent_decisions_have_one_winner");
    concurrent_decisions_have_one_winner(&backend).await;
}

async fn opens_from_configuration(cluster: &Cluster) {
    let config: ReviewsConfig = toml::from_str(&format!(
        "store = \"postgres\"\nurl = \"host=127.0.0.1 port={} user=postgres dbname=postgres\"",
        cluster.port
    ))
    .expect("config");
    assert_eq!(config.store, StoreKind::Postgres);
    let hub = ReviewHub::open(config, policy(), Arc::new(MemoryAuditSink::new()))
        .await
        .expect("opens and creates hoop_reviews");
    hub.list(None).await.expect("table exists");
    let unreachable: ReviewsConfig = toml::from_str(
        "store = \"postgres\"\nurl = \"host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2\"",
    )
    .expect("config");
    let refused = ReviewHub::open(unreachable, policy(), Arc::new(MemoryAuditSink::new())).await;
    assert!(matches!(refused, Err(hoop_reviews::HubError::Store(_))));
}

async fn two_gateways_share_reviews(backend: &Postgres) {
    let (gateway_a, sink_a) = backend.hub(ReviewsConfig::default()).await;
    let (gateway_b, sink_b) = backend.hub(ReviewsConfig::default()).await;
    let api_b = serve_hub(&gateway_b).await;
    let client = reqwest::Client::new();

    // Held on A, approved through B's API: A's ticket wakes.
    let mut changes_a = gateway_a.subscribe();
    let mut ticket = gateway_a.request(request()).await.expect("request on A");
    let id = ticket.id().to_owned();
    let shown: Value = client
        .get(format!("{api_b}/api/reviews/{id}"))
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("get via B")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["subject"], "agent-7");
    let waiter = tokio::spawn(async move { ticket.wait().await });
    let approved = client
        .post(format!("{api_b}/api/reviews/{id}/approve"))
        .bearer_auth(ALICE)
        .json(&json!({"reason": "from gateway B", "grant_for": "10m"}))
        .send()
        .await
        .expect("approve via B");
    assert_eq!(approved.status().as_u16(), 200);
    // The change reaches A through LISTEN/NOTIFY.
    let noticed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match changes_a.recv().await {
                Ok(change) if change.id == id && change.status == ReviewStatus::Approved => {
                    return true
                }
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(noticed, Ok(true), "A hears of B's decision");
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("A's ticket wakes")
        .expect("joined");
    assert_eq!(
        outcome,
        ReviewOutcome::Approved {
            reviewers: vec!["alice".into()]
        }
    );
    assert!(sink_a
        .events()
        .iter()
        .any(|e| matches!(e, ReviewEvent::Created { review_id, .. } if *review_id == id)));
    assert!(
        sink_b
            .events()
            .iter()
            .any(|e| matches!(e, ReviewEvent::Approved { review_id, .. } if *review_id == id)),
        "the deciding gateway records the decision"
    );

    // A grant given through B holds on A.
    let grant = gateway_a
        .check_grant(&request())
        .await
        .expect("lookup")
        .expect("granted");
    assert_eq!(grant.review_id, id);

    // Withdrawn on A (client went away): B shows it.
    let ticket = gateway_a.request(request()).await.expect("request on A");
    let withdrawn_id = ticket.id().to_owned();
    drop(ticket);
    let seen = common::eventually(Duration::from_secs(5), || {
        let gateway_b = gateway_b.clone();
        let id = withdrawn_id.clone();
        async move {
            gateway_b.get(&id).await.ok().flatten().map(|r| r.status)
                == Some(ReviewStatus::Withdrawn)
        }
    })
    .await;
    assert!(seen, "B sees the withdrawal");
}

async fn concurrent_decisions_have_one_winner(backend: &Postgres) {
    let (gateway_a, _) = backend.hub(ReviewsConfig::default()).await;
    let (gateway_b, _) = backend.hub(ReviewsConfig::default()).await;
    for _ in 0..5 {
        let mut ticket = gateway_a.request(request()).await.expect("request");
        let (a, b) = (gateway_a.clone(), gateway_b.clone());
        let (id_a, id_b) = (ticket.id().to_owned(), ticket.id().to_owned());
        let deny = tokio::spawn(async move { a.deny(&id_a, &reviewer("alice"), None).await });
        let approve =
            tokio::spawn(async move { b.approve(&id_b, &reviewer("bob"), None, None).await });
        let deny = deny.await.expect("joined");
        let approve = approve.await.expect("joined");
        assert!(
            deny.is_ok() != approve.is_ok(),
            "exactly one decision wins: {deny:?} / {approve:?}"
        );
        let loser = deny.err().or(approve.err()).expect("one error");
        assert_eq!(loser.http_status(), 409);
        let outcome = ticket.wait().await;
        let stored = gateway_b
            .get(ticket.id())
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored.outcome(), Some(outcome));
    }
}
