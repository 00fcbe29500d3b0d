//! `cargo bench -p hoop-policy --bench classify`: what classification costs
//! per statement with PostgreSQL's grammar (parse + walk), and what the
//! per-connection cache saves (exact-text hit, shape hit after a pass of
//! the lexer, and a literal-dependent statement that is classified from its
//! own literals each time).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hoop_policy::{classify, ClassifyCache};

const SHORT: &str = "SELECT id, amount FROM payments WHERE id = 42";
const JOIN: &str = "SELECT p.id, p.amount, r.note FROM payments p JOIN refunds r ON r.payment_id = p.id \
                    WHERE p.created_at > now() - interval '1 day' AND r.note IS NOT NULL ORDER BY p.id LIMIT 50";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("parse+walk, short select", |b| {
        b.iter(|| classify(black_box(SHORT)))
    });
    group.bench_function("parse+walk, join", |b| b.iter(|| classify(black_box(JOIN))));
    group.bench_function("normalize only, short select", |b| {
        b.iter(|| pg_query::normalize(black_box(SHORT)))
    });
    group.bench_function("scan only, short select", |b| {
        b.iter(|| pg_query::scan_tokens(black_box(SHORT)))
    });
    let mut cache = ClassifyCache::new(1024).with_predicate_columns(["amount"]);
    group.bench_function("cache: exact text hit", |b| {
        b.iter(|| cache.classify(black_box(SHORT)))
    });
    let texts: Vec<String> = (0..512)
        .map(|i| format!("SELECT id, amount FROM payments WHERE id = {i}"))
        .collect();
    let mut i = 0;
    let mut shapes = ClassifyCache::new(64).with_predicate_columns(["amount"]);
    group.bench_function("cache: new literals, shape hit", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            shapes.classify(black_box(&texts[i]))
        })
    });
    // pgbench -S: every statement a new aid, so an exact miss and a shape hit.
    let pgbench: Vec<String> = (0..512)
        .map(|aid| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                10_000 + aid
            )
        })
        .collect();
    let mut select_only = ClassifyCache::new(64).with_predicate_columns(["amount"]);
    group.bench_function("cache: pgbench -S, exact miss, shape hit", |b| {
        b.iter(|| {
            i = (i + 1) % pgbench.len();
            select_only.classify(black_box(&pgbench[i]))
        })
    });
    let bounded: Vec<String> = (0..512)
        .map(|i| format!("SELECT id FROM payments WHERE amount < {i}"))
        .collect();
    let mut literal = ClassifyCache::new(64).with_predicate_columns(["amount"]);
    group.bench_function("cache: predicate literal, reclassified", |b| {
        b.iter(|| {
            i = (i + 1) % bounded.len();
            literal.classify(black_box(&bounded[i]))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
