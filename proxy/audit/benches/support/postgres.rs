//! The Postgres store the audit benchmark and the throughput example
//! measure (both include this file).

use hoop_audit::AuditConfig;
use hoop_common::config::SecretRef;
use hoop_testkit::{Auth, Cluster};

/// A throwaway PostgreSQL cluster (tests/kit: the version `$HOOP_PG_VERSION`
/// names, else 15; missing Postgres fails), removed on drop. The store logs
/// in as its superuser with a password (SCRAM on 127.0.0.1), as a deployed
/// gateway does; psql creates the databases over the socket.
pub fn postgres_cluster() -> Cluster {
    Cluster::scratch("audit-bench")
        .superuser("hoop_audit")
        .password("audit-bench-password")
        .local_auth(Auth::Trust)
        .settings("max_connections = 50")
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A store in a fresh database `database` of `cluster`.
pub fn postgres_config(cluster: &Cluster, database: &str, instance: &str) -> AuditConfig {
    cluster
        .psql("postgres", &format!("CREATE DATABASE {database}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname={database}",
        cluster.port,
        cluster.superuser()
    );
    let mut config = AuditConfig::postgres(&url, instance);
    let password = cluster
        .password_file()
        .expect("the superuser has a password");
    config.password = Some(SecretRef::file(password));
    config
}
