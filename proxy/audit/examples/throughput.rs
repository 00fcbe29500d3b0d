//! Records per second into each audit store, as a plain table (what
//! `bench/audit.sh` prints). W concurrent writers, each awaiting the
//! durability of its record before sending the next (as the relay awaits
//! `begin_statement`), for a fixed time, into a fresh store per row.
//!
//! ```text
//! cargo run --release -p hoop-audit --example throughput -- \
//!     [--seconds 5] [--writers 8,64,256] [--stores sqlite-full,sqlite-normal,postgres]
//! ```
//!
//! The Postgres rows start a throwaway cluster as the tests do (tests/kit:
//! the version `$HOOP_PG_VERSION` names, else 15; missing Postgres fails).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoop_audit::{
    AuditConfig, AuditStore, CheckpointSigner, RecordedDecision, SqliteSync, StatementBegin,
    Timestamp,
};

#[path = "../benches/support/postgres.rs"]
mod postgres;
use postgres::{postgres_cluster, postgres_config};

struct Options {
    seconds: u64,
    writers: Vec<usize>,
    stores: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        seconds: 5,
        writers: vec![8, 64, 256],
        stores: vec![
            "sqlite-full".into(),
            "sqlite-normal".into(),
            "postgres".into(),
        ],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => {
                options.seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds {value:?} is not a number"))?;
            }
            "--writers" => {
                options.writers = value
                    .split(',')
                    .map(|w| w.parse().map_err(|_| format!("bad writer count {w:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--stores" => options.stores = value.split(',').map(str::to_owned).collect(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

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

/// Appends from `writers` tasks for `warm_up + measure`; records/s over
/// the measured part.
async fn run(store: &AuditStore, writers: usize, measure: Duration) -> f64 {
    let warm_up = Duration::from_secs(1);
    let counted = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (store, counted, counting, stop) = (
            store.clone(),
            counted.clone(),
            counting.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                store
                    .begin_statement(&statement(writer, sequence))
                    .await
                    .expect("append");
                if counting.load(Ordering::Relaxed) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(warm_up).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    counted.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("throughput: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = None;
    let mut databases = 0;
    println!("{:<14} {:>8} {:>12}", "store", "writers", "records/s");
    for store_name in &options.stores {
        for &writers in &options.writers {
            let instance = format!("bench-{store_name}-{writers}");
            let config = match store_name.as_str() {
                "sqlite-full" | "sqlite-normal" => {
                    let mut config =
                        AuditConfig::sqlite(dir.path().join(format!("{instance}.db")), &instance);
                    if store_name == "sqlite-normal" {
                        config.sqlite_synchronous = SqliteSync::Normal;
                    }
                    config
                }
                "postgres" => {
                    let cluster = cluster.get_or_insert_with(postgres_cluster);
                    databases += 1;
                    postgres_config(cluster, &format!("throughput_{databases}"), &instance)
                }
                other => {
                    eprintln!("throughput: unknown store {other:?}");
                    std::process::exit(2);
                }
            };
            let signer = CheckpointSigner::from_seed("bench", &[9; 32]);
            let rate = runtime.block_on(async {
                let store = AuditStore::open(&config, signer)
                    .await
                    .expect("store opens");
                let rate = run(&store, writers, Duration::from_secs(options.seconds)).await;
                store.close("benchmark done").await.expect("close");
                rate
            });
            println!("{store_name:<14} {writers:>8} {rate:>12.0}");
        }
    }
}
