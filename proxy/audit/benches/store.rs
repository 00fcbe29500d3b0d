//! Records per second into each store with group commit: W concurrent
//! writers (relay sessions), each awaiting the durability of its record
//! before sending the next, as `begin_statement` does.
//!
//! `cargo bench -p hoop-audit`. The Postgres figures need PostgreSQL
//! binaries (a throwaway cluster is started from tests/kit); without them
//! the bench fails after the SQLite figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hoop_audit::{
    AuditConfig, AuditStore, CheckpointSigner, RecordedDecision, SqliteSync, StatementBegin,
    Timestamp,
};
use tokio::runtime::Runtime;

#[path = "support/postgres.rs"]
mod postgres;
use postgres::{postgres_cluster, postgres_config};

fn statement(writer: usize, sequence: u64) -> StatementBegin {
    StatementBegin {
        session_id: format!("bench-{writer}"),
        sequence,
        received_at: Timestamp::now(),
        sql: "SELECT id, card_number, amount FROM public.payments WHERE id = $1 AND created_at > now() - interval '1 day'".into(),
        params: vec![Some(sequence.to_string())],
        kind: "select".into(),
        tables: vec!["public.payments".into()],
        decision: RecordedDecision::allow(),
        executed_sql: None,
    }
}

/// Appends `total` records from `writers` concurrent tasks; returns the time.
async fn append(store: &AuditStore, writers: usize, total: u64) -> Duration {
    let per_writer = total.div_ceil(writers as u64);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            for sequence in 0..per_writer {
                store
                    .begin_statement(&statement(writer, sequence))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    started.elapsed()
}

fn bench_store(
    c: &mut Criterion,
    name: &str,
    runtime: &Runtime,
    config: &AuditConfig,
    writer_counts: &[usize],
) {
    let signer = CheckpointSigner::from_seed("bench", &[9; 32]);
    let store = Arc::new(
        runtime
            .block_on(AuditStore::open(config, signer))
            .expect("store opens"),
    );
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    for &writers in writer_counts {
        group.bench_function(format!("{writers}_writers"), |b| {
            b.iter_custom(|iters| runtime.block_on(append(&store, writers, iters)));
        });
    }
    group.finish();
    if let Ok(store) = Arc::try_unwrap(store) {
        let _ = runtime.block_on(store.close("benchmark done"));
    }
}

fn stores(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = AuditConfig::sqlite(dir.path().join("bench.db"), "bench-sqlite");
    bench_store(c, "sqlite_full_records", &runtime, &sqlite, &[8, 64, 256]);
    let mut normal = AuditConfig::sqlite(dir.path().join("bench-normal.db"), "bench-normal");
    normal.sqlite_synchronous = SqliteSync::Normal;
    bench_store(c, "sqlite_normal_records", &runtime, &normal, &[8, 64, 256]);

    let cluster = postgres_cluster();
    let postgres = postgres_config(&cluster, "bench", "bench-pg");
    bench_store(c, "postgres_records", &runtime, &postgres, &[8, 64, 256]);
}

criterion_group!(benches, stores);
criterion_main!(benches);
