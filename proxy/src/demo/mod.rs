//! `hoop demo`: a Postgres 15 cluster under `.hoop/demo/` (port 54329,
//! SCRAM logins on 127.0.0.1, the hoop extension preloaded), the `payments`
//! database with test card numbers, a generated `hoop.toml` with the
//! development issuer, and the gateway on 127.0.0.1:6432 (admin on :8432).
//! Runs until SIGINT/SIGTERM, then stops everything it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// The Postgres 15 binaries: $HOOP_PG15_BIN, else the Debian location.
fn pg15_bin() -> Result<PathBuf, String> {
    let dir = std::env::var_os("HOOP_PG15_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    if dir.join("postgres").is_file() && dir.join("pg_ctl").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "Postgres 15 is not installed ({} has no postgres/pg_ctl): run scripts/setup.sh first",
            dir.display()
        ))
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A command run as the `postgres` OS user when we are root (Postgres
/// refuses to run as root), as ourselves otherwise.
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_checked(mut cmd: Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether `cargo pgrx install` put the extension into this Postgres.
pub fn extension_installed(bin: &Path) -> bool {
    let pg_config = bin.join("pg_config");
    let ask = |flag: &str| {
        Command::new(&pg_config)
            .arg(flag)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    match (ask("--sharedir"), ask("--pkglibdir")) {
        (Some(share), Some(lib)) => {
            share.join("extension/hoop.control").is_file() && lib.join("hoop.so").is_file()
        }
        _ => false,
    }
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

fn chown_postgres(path: &Path) -> Result<(), String> {
    if running_as_root() {
        run_checked(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(path);
                c
            },
            "chown postgres",
        )?;
    }
    Ok(())
}

struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    started_here: bool,
}

impl Cluster {
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data).args(args);
        // The server inherits our environment; Rust backtrace settings would
        // make the extension append backtraces to every error's DETAIL.
        c.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        c
    }

    fn is_running(&self) -> bool {
        self.pg_ctl(&["status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn start(&mut self) -> Result<(), String> {
        if self.is_running() {
            // Left over from an earlier demo that did not shut down: it is
            // the demo's own cluster, so this run stops it at the end too.
            println!("    reusing the running cluster in {}", self.data.display());
            self.started_here = true;
            return Ok(());
        }
        let mut cmd = self.pg_ctl(&["-w", "-t", "60", "-l"]);
        cmd.arg(&self.log).arg("start");
        run_checked(cmd, "pg_ctl start").map_err(|e| {
            let tail = std::fs::read_to_string(&self.log)
                .map(|t| {
                    t.lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            format!("{e}\n--- {} ---\n{tail}", self.log.display())
        })?;
        self.started_here = true;
        Ok(())
    }

    fn stop(&self) {
        if self.started_here {
            println!("stopping the demo cluster");
            let _ = self
                .pg_ctl(&["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    }

    fn psql(&self, database: &str) -> Command {
        let mut c = as_postgres(&self.bin.join("psql"));
        c.arg("-X")
            .arg("-q")
            .arg("-h")
            .arg(&self.socket)
            .arg("-p")
            .arg(PG_PORT.to_string())
            .arg("-d")
            .arg(database);
        c
    }
}

/// Where the postgres user keeps the demo cluster (data, socket, log):
/// `dir` itself when that user can reach it. A checkout in `/root` (mode
/// 700) is out of its reach, so there the cluster lives in a directory of
/// its own, `/var/lib/hoop-demo/<hash of dir>`, linked from `dir` as
/// `pgdata`, `run` and `postgres.log`: still found under `.hoop/demo/`,
/// without opening the user's home to other users.
fn cluster_home(dir: &Path) -> Result<PathBuf, String> {
    if !running_as_root() {
        return Ok(dir.to_owned());
    }
    let mut reach = as_postgres(Path::new("test"));
    reach
        .arg("-d")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if reach.status().is_ok_and(|status| status.success()) {
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

fn prepare_cluster(
    dir: &Path,
    bin: &Path,
    trusted_entry: &str,
    with_extension: bool,
) -> Result<Cluster, String> {
    let home = cluster_home(dir)?;
    let data = home.join("pgdata");
    let socket = socket_dir(&home);
    let cluster = Cluster {
        bin: bin.to_owned(),
        data: data.clone(),
        log: home.join("postgres.log"),
        socket: socket.clone(),
        started_here: false,
    };
    if socket.starts_with(&home) {
        std::fs::create_dir_all(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
        chown_postgres(&socket)?;
    }
    if !data.join("PG_VERSION").is_file() {
        println!("==> creating the demo cluster in {}", data.display());
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        chown_postgres(&data)?;
        // The log file is written by the server.
        let _ = std::fs::File::create(&cluster.log);
        chown_postgres(&cluster.log)?;
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        if running_as_root() {
            initdb.args(["-U", "postgres"]);
        }
        run_checked(initdb, "initdb").map_err(|e| {
            format!("{e}\nhint: the postgres user must be able to reach {} (every parent directory needs o+x)", data.display())
        })?;
    }
    // Settings live in one included file, rewritten on each start.
    let mut conf = format!(
        "# written by `hoop demo`\nlisten_addresses = '127.0.0.1'\nport = {PG_PORT}\n\
         unix_socket_directories = '{}'\npassword_encryption = 'scram-sha-256'\n\
         {} = '{trusted_entry}'\n",
        socket.display(),
        hoop_common::names::GUC_TRUSTED_KEYS,
    );
    if with_extension {
        conf.push_str("shared_preload_libraries = 'hoop'\n");
    }
    std::fs::write(data.join("hoop-demo.conf"), conf)
        .map_err(|e| format!("hoop-demo.conf: {e}"))?;
    let main_conf = data.join("postgresql.conf");
    let text =
        std::fs::read_to_string(&main_conf).map_err(|e| format!("{}: {e}", main_conf.display()))?;
    if !text.contains("include_if_exists = 'hoop-demo.conf'") {
        std::fs::write(
            &main_conf,
            format!("{text}\ninclude_if_exists = 'hoop-demo.conf'\n"),
        )
        .map_err(|e| format!("{}: {e}", main_conf.display()))?;
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "# written by `hoop demo`\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .map_err(|e| format!("pg_hba.conf: {e}"))?;
    Ok(cluster)
}

fn seed(cluster: &Cluster, gateway_password: &str, with_extension: bool) -> Result<(), String> {
    let mut cmd = cluster.psql("postgres");
    cmd.arg("-v")
        .arg(format!("with_extension={with_extension}"))
        .env("HOOP_DEMO_GATEWAY_PASSWORD", gateway_password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if running_as_root() {
        // runuser resets nothing by default, but keep the variable explicit.
        cmd.env("HOOP_DEMO_GATEWAY_PASSWORD", gateway_password);
    }
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
    let bin = pg15_bin()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The postgres user must traverse .hoop/demo to reach its data directory.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711));
    }
    let with_extension = extension_installed(&bin);

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

    let mut cluster = prepare_cluster(&dir, &bin, &trusted, with_extension)?;
    println!("==> starting Postgres 15 on 127.0.0.1:{PG_PORT}");
    cluster.start()?;
    let result = serve(&dir, &cluster, &gateway_password, with_extension, shutdown).await;
    cluster.stop();
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
            cluster.bin.display()
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
