//! `hoop demo`: a Postgres 15 cluster under `.hoop/demo/` (port 54329,
//! SCRAM logins on 127.0.0.1, the hoop extension preloaded; run by the test
//! kit, `tests/kit`, as every cluster of the project), the `payments`
//! database with test card numbers, a generated `hoop.toml` with the
//! development issuer, and the gateway on 127.0.0.1:6432 (admin on :8432).
//! Runs until SIGINT/SIGTERM, then stops everything it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hoop_testkit::{running_as_root, server_user_can_reach, Cluster, Postgres};

use crate::config::Config;
use crate::keys;

pub const PG_PORT: u16 = 54329;
pub const GATEWAY_ADDR: &str = "127.0.0.1:6432";
pub const ADMIN_ADDR: &str = "127.0.0.1:8432";
const SEED_SQL: &str = include_str!("seed.sql");
const CONFIG_TOML: &str = include_str!("hoop.toml.in");
const SESSION_KEY_ID: &str = "demo-1";

/// Where the demo keeps its files, relative to the current directory.
pub fn demo_dir() -> Result<PathBuf, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    Ok(cwd.join(".hoop").join("demo"))
}

/// Unix socket directory: inside .hoop/demo when the path is short enough
/// for a socket name (107 bytes), else /tmp.
fn socket_dir(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    if run.as_os_str().len() < 80 {
        run
    } else {
        PathBuf::from("/tmp")
    }
}

/// Where the postgres user keeps the demo cluster (data, socket, log):
/// `dir` itself when that user can reach it. A checkout in `/root` (mode
/// 700) is out of its reach, so there the cluster lives in a directory of
/// its own, `/var/lib/hoop-demo/<hash of dir>`, linked from `dir` as
/// `pgdata`, `run` and `postgres.log`: still found under `.hoop/demo/`,
/// without opening the user's home to other users.
fn cluster_home(dir: &Path) -> Result<PathBuf, String> {
    if !running_as_root() || server_user_can_reach(dir) {
        return Ok(dir.to_owned());
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    let home = PathBuf::from(format!("/var/lib/hoop-demo/{:016x}", hasher.finish()));
    std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    for name in ["pgdata", "run", "postgres.log"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(home.join(name), &link)
                .map_err(|e| format!("{}: {e}", link.display()))?;
        }
    }
    println!(
        "==> {} is out of the postgres user's reach: the demo cluster lives in {} (linked from there)",
        dir.display(),
        home.display()
    );
    Ok(home)
}

/// The demo's cluster, created on first use and kept: its settings are
/// rewritten on each start.
fn prepare_cluster(
    dir: &Path,
    postgres: Postgres,
    trusted_entry: &str,
    with_extension: bool,
) -> Result<Cluster, String> {
    let home = cluster_home(dir)?;
    let data = home.join("pgdata");
    if !data.join("PG_VERSION").is_file() {
        println!("==> creating the demo cluster in {}", data.display());
    }
    // Written by earlier versions of the demo; the kit's file replaces it.
    let _ = std::fs::remove_file(data.join("hoop-demo.conf"));
    let mut settings = format!(
        "password_encryption = 'scram-sha-256'\n{} = '{trusted_entry}'\n",
        hoop_common::names::GUC_TRUSTED_KEYS,
    );
    if with_extension {
        settings.push_str("shared_preload_libraries = 'hoop'\n");
    }
    Cluster::builder(&home)
        .postgres(postgres)
        .port(PG_PORT)
        .data(data)
        .socket_dir(socket_dir(&home))
        .log(home.join("postgres.log"))
        .settings(&settings)
        .durable()
        .keep()
        .create()
        .map_err(|e| e.to_string())
}

fn seed(cluster: &Cluster, gateway_password: &str, with_extension: bool) -> Result<(), String> {
    let mut cmd = cluster.psql_command("postgres");
    cmd.arg("-q")
        .arg("-v")
        .arg(format!("with_extension={with_extension}"))
        .env("HOOP_DEMO_GATEWAY_PASSWORD", gateway_password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("psql: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(SEED_SQL.as_bytes())
            .map_err(|e| format!("psql stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "seeding the payments database failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn hoop_command() -> String {
    let exe = std::env::current_exe().ok();
    let on_path = Command::new("sh")
        .args(["-c", "command -v hoop"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match (exe, on_path) {
        (Some(exe), Some(found))
            if std::fs::canonicalize(&found).ok() == std::fs::canonicalize(&exe).ok() =>
        {
            "hoop".into()
        }
        (Some(exe), _) => exe.display().to_string(),
        _ => "hoop".into(),
    }
}

pub async fn run() -> Result<(), String> {
    // From here on Ctrl-C ends the demo cleanly (the cluster is stopped).
    let shutdown = crate::server::shutdown_signal();
    let dir = demo_dir()?;
    let postgres = Postgres::version(15).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The postgres user must traverse .hoop/demo to reach its data directory.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711));
    }
    let with_extension = postgres.has_extension("hoop");

    println!("==> hoop demo in {}", dir.display());
    let signing_path = dir.join(keys::SESSION_KEY_FILE);
    keys::ensure_secret_file(&signing_path, keys::random_seed_base64)
        .map_err(|e| format!("{}: {e}", signing_path.display()))?;
    let dev_key = dir.join("dev-issuer.key");
    keys::ensure_secret_file(&dev_key, keys::random_seed_base64)
        .map_err(|e| format!("{}: {e}", dev_key.display()))?;
    let password_path = dir.join("gateway.password");
    let gateway_password = keys::ensure_secret_file(&password_path, keys::random_password)
        .map_err(|e| format!("{}: {e}", password_path.display()))?;
    let trusted = keys::signer_from_file(SESSION_KEY_ID, &signing_path)?.trusted_key_entry();

    let cluster = prepare_cluster(&dir, postgres, &trusted, with_extension)?;
    println!("==> starting Postgres 15 on 127.0.0.1:{PG_PORT}");
    if cluster.is_running() {
        // Left over from an earlier demo that did not shut down: it is the
        // demo's own cluster, so this run stops it at the end too.
        println!(
            "    reusing the running cluster in {}",
            cluster.data.display()
        );
    }
    cluster.start().map_err(|e| e.to_string())?;
    let result = serve(&dir, &cluster, &gateway_password, with_extension, shutdown).await;
    println!("stopping the demo cluster");
    if let Err(e) = cluster.stop() {
        eprintln!("{e}");
    }
    result
}

async fn serve(
    dir: &Path,
    cluster: &Cluster,
    gateway_password: &str,
    with_extension: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    println!("==> seeding database payments");
    seed(cluster, gateway_password, with_extension)?;

    let config_path = dir.join("hoop.toml");
    std::fs::write(&config_path, CONFIG_TOML)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let gateway = crate::server::Gateway::bind(config)
        .await
        .map_err(|e| format!("{e} (is another `hoop demo` running?)"))?;

    let hoop = hoop_command();
    let rel_config = ".hoop/demo/hoop.toml";
    println!();
    if !with_extension {
        println!(
            "!! WARNING: the hoop extension is NOT installed in Postgres 15, so this demo runs"
        );
        println!(
            "!! WITHOUT in-database masking or session enforcement: card_number is NOT masked"
        );
        println!("!! and direct connections are NOT refused. Install it and restart the demo:");
        println!(
            "!!     (cd extension && cargo pgrx install --pg-config {}/pg_config)",
            cluster.postgres().bin().display()
        );
        println!();
    }
    println!("hoop gateway on {GATEWAY_ADDR}, admin on http://{ADMIN_ADDR} (/healthz, /metrics)");
    println!();
    println!("Connect as a fraud agent (card numbers masked):");
    println!("  PGPASSWORD=$({hoop} token mint -c {rel_config} --sub agent-7 --group fraud-agents) psql \"host=127.0.0.1 port=6432 dbname=payments user=agent-7\"");
    println!();
    println!("Connect as a payments admin (may unmask card_number):");
    println!("  PGPASSWORD=$({hoop} token mint -c {rel_config} --sub admin-1 --group payments-admins) psql \"host=127.0.0.1 port=6432 dbname=payments user=admin-1\"");
    println!();
    println!("Try the database directly, as a DBA would, with a role that may read payments");
    println!("(the extension refuses: no gateway session):");
    println!("  PGPASSWORD=$(cat .hoop/demo/gateway.password) psql \"host=127.0.0.1 port={PG_PORT} dbname=payments user=hoop_gateway\" -c 'set role fraud_agent' -c 'select * from payments limit 3'");
    println!();
    println!("Statements the rules send to review wait for a person. As the fraud agent, run");
    println!("  select count(*) from payments;     -- an unbounded read of payments");
    println!("psql waits and shows a NOTICE with the review id. Open the review page");
    println!("  http://{ADMIN_ADDR}/reviews");
    println!("and paste a reviewer token from");
    println!("  {hoop} token mint -c {rel_config} --sub alice --group reviewers");
    println!("then approve, deny or modify it (the agent's psql gets the rows, or the error).");
    println!("Or from the terminal:");
    println!(
        "  export HOOP_TOKEN=$({hoop} token mint -c {rel_config} --sub alice --group reviewers)"
    );
    println!("  {hoop} reviews list -c {rel_config}");
    println!("  {hoop} reviews approve -c {rel_config} REVIEW_ID");
    println!();
    println!("`drop table payments` is blocked outright (rule block-drop-payments).");
    println!();
    println!("The audit trail (every statement, decision and outcome; tamper-evident):");
    println!("  {hoop} audit sessions -c {rel_config}");
    println!("  {hoop} audit replay -c {rel_config} SESSION_ID");
    println!("  {hoop} audit verify -c {rel_config}");
    println!();
    println!("Press Ctrl-C to stop the gateway and the cluster.");
    gateway.run(shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CONFIG_TOML;

    /// The demo's configuration carries the rule about its own table (the
    /// binary does not), and its rules validate with the shipped ones.
    #[test]
    fn the_demo_configuration_holds_its_own_payments_rule() {
        #[derive(serde::Deserialize)]
        struct Rules {
            rules: Vec<hoop_policy::RuleConfig>,
        }
        let table: toml::Table = toml::from_str(CONFIG_TOML).expect("the demo TOML parses");
        let rules: Rules = toml::Value::Table(table)
            .try_into()
            .expect("the demo rules parse");
        let payments = rules
            .rules
            .iter()
            .find(|r| r.name == "review-large-payment-reads")
            .expect("the demo's payments rule");
        assert_eq!(payments.tables, ["public.payments"]);
        assert_eq!(payments.predicate.as_deref(), Some("amount > 10000"));
        assert!(hoop_policy::default_rules()
            .iter()
            .all(|r| r.name != "review-large-payment-reads"));
        let rule_set = hoop_policy::RuleSet::with_defaults(rules.rules).expect("valid rules");
        assert!(rule_set.names().any(|n| n == "block-drop-database"));
    }
}
