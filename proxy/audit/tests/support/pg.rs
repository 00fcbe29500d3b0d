//! A throwaway PostgreSQL cluster for tests: initdb into a temporary
//! directory owned by `postgres` (the server refuses to run as root), a
//! free port on 127.0.0.1, SCRAM password auth. Stopped on drop; a shared
//! cluster is stopped by a watchdog when the test process exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const USER: &str = "hoop_audit";
const PASSWORD: &str = "audit-test-password";

pub struct PgCluster {
    base: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// `None` (and the test is skipped) when no Postgres binaries are installed,
/// unless HOOP_REQUIRE_PG is set.
fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("HOOP_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    let found = versions.pop().map(|(_, bin)| bin);
    if found.is_none() && std::env::var_os("HOOP_REQUIRE_PG").is_some() {
        panic!("HOOP_REQUIRE_PG is set but no PostgreSQL binaries were found");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free local port")
}

fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PgCluster {
    /// A cluster of the test's own (for tests that stop the server).
    pub fn start() -> Option<PgCluster> {
        let bin = pg_bin()?;
        let base = std::env::temp_dir().join(format!(
            "hoop-audit-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&base).expect("cluster dir");
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&base);
                c
            },
            "chown",
        );
        let pwfile = base.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&pwfile);
                c
            },
            "chown pwfile",
        );
        let mut initdb = as_postgres(&bin, "initdb");
        initdb
            .arg("-D")
            .arg(base.join("data"))
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb, "initdb");
        let cluster = PgCluster {
            base,
            bin,
            port: free_port(),
        };
        cluster.start_server();
        Some(cluster)
    }

    /// One cluster for the whole test binary, stopped when the process ends.
    pub fn shared() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let cluster = PgCluster::start()?;
                cluster.watch_parent();
                Some(cluster)
            })
            .as_ref()
    }

    pub fn start_server(&self) {
        let mut pg_ctl = as_postgres(&self.bin, "pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.base.join("data"))
            .arg("-l")
            .arg(self.base.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
                self.port,
                self.base.display()
            ))
            .args(["-w", "start"]);
        run(pg_ctl, "pg_ctl start");
    }

    pub fn stop_server(&self) {
        let mut pg_ctl = as_postgres(&self.bin, "pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.base.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(pg_ctl, "pg_ctl stop");
    }

    /// The password file a config points `password_file` at.
    pub fn password_file(&self) -> PathBuf {
        self.base.join("pwfile")
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

    /// Stops the server and removes the directory once this process is
    /// gone (statics are never dropped).
    // The watchdog must outlive this process, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn watch_parent(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             runuser -u postgres -- {pg_ctl} -D {data} -m immediate -w stop; rm -rf {base}",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.base.join("data").display(),
            base = self.base.display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cluster watchdog");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.base.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
