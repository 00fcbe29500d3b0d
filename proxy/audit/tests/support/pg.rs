//! A throwaway PostgreSQL cluster from the test kit (`tests/kit`: the
//! version `$HOOP_PG_VERSION` names, else 15; missing Postgres fails):
//! superuser `hoop_audit` with a password, SCRAM on 127.0.0.1. Removed on
//! drop; the shared cluster once the test process is gone.

use std::path::PathBuf;
use std::sync::OnceLock;

use hoop_testkit::{Auth, Cluster};

pub const USER: &str = "hoop_audit";
const PASSWORD: &str = "audit-test-password";

pub struct PgCluster {
    kit: Cluster,
    pub port: u16,
}

impl PgCluster {
    /// A cluster of the test's own (for tests that stop the server).
    pub fn start() -> PgCluster {
        let kit = Cluster::scratch("audit")
            .superuser(USER)
            .password(PASSWORD)
            .local_auth(Auth::Trust)
            .settings("max_connections = 50")
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        PgCluster {
            port: kit.port,
            kit,
        }
    }

    /// One cluster for the whole test binary, stopped when the process ends.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start();
            cluster
                .kit
                .stop_when_gone(std::process::id())
                .unwrap_or_else(|e| panic!("{e}"));
            cluster
        })
    }

    pub fn start_server(&self) {
        self.kit.start().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn stop_server(&self) {
        self.kit.stop().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The password file a config points `password_file` at.
    pub fn password_file(&self) -> PathBuf {
        self.kit
            .password_file()
            .expect("the superuser has a password")
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={database}",
            self.port
        )
    }

    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let config = format!("{} password={PASSWORD}", self.url(database));
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .expect("test connection");
        tokio::spawn(connection);
        client
    }

    /// A fresh database for one test.
    pub async fn create_database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let name = format!(
            "audit_{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let client = self.connect("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        name
    }
}
