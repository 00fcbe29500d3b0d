//! A cluster: created (initdb) on first start, configured, started,
//! stopped, removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::postgres::Postgres;
use crate::run::{as_server_user, checked, free_port, give_to_server_user, running_as_root, Error};

/// The kit's settings file in the data directory, rewritten on each start
/// by the library (kept as it is by `hoop-cluster start` on a cluster that
/// exists).
const SETTINGS_FILE: &str = "hoop-cluster.conf";
/// What `hoop-cluster env` prints, in the cluster's directory.
const STATE_FILE: &str = "cluster.env";
const PASSWORD_FILE: &str = "superuser.password";

/// How a client proves who it is (`pg_hba.conf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    Peer,
    Trust,
    Scram,
}

impl Auth {
    fn method(self) -> &'static str {
        match self {
            Auth::Peer => "peer",
            Auth::Trust => "trust",
            Auth::Scram => "scram-sha-256",
        }
    }

    pub fn parse(text: &str) -> Result<Auth, Error> {
        match text {
            "peer" => Ok(Auth::Peer),
            "trust" => Ok(Auth::Trust),
            "scram" | "scram-sha-256" => Ok(Auth::Scram),
            _ => Err(Error(format!(
                "unknown auth method {text:?} (peer, trust or scram-sha-256)"
            ))),
        }
    }
}

/// What a cluster is made of, before it starts. Every choice has the kit's
/// default; see the crate documentation.
pub struct Builder {
    dir: PathBuf,
    postgres: Option<Postgres>,
    data: Option<PathBuf>,
    socket_dir: Option<PathBuf>,
    log: Option<PathBuf>,
    port: Option<u16>,
    superuser: Option<String>,
    password: Option<String>,
    local_auth: Auth,
    host_auth: Auth,
    locale: String,
    durable: bool,
    settings: String,
    keep: bool,
}

/// A cluster this process made or opened. Dropping it stops the server and
/// removes its directory, unless it was built with [`Builder::keep`].
pub struct Cluster {
    postgres: Postgres,
    /// The cluster's directory (its socket by default, `cluster.env`).
    pub dir: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    superuser: String,
    settings: Option<String>,
    keep: bool,
}

impl Cluster {
    /// A cluster in `dir` (created when missing, then handed to the server's
    /// OS user).
    pub fn builder(dir: impl Into<PathBuf>) -> Builder {
        Builder {
            dir: dir.into(),
            postgres: None,
            data: None,
            socket_dir: None,
            log: None,
            port: None,
            superuser: None,
            password: None,
            local_auth: Auth::Peer,
            host_auth: Auth::Scram,
            locale: "C.UTF-8".into(),
            durable: false,
            settings: String::new(),
            keep: false,
        }
    }

    /// A throw-away cluster in a fresh directory under the system's temp
    /// directory, `hoop-kit/<tag>-<pid>-<n>`.
    pub fn scratch(tag: &str) -> Builder {
        Cluster::builder(scratch_dir(tag))
    }

    /// The cluster `hoop-cluster start` (or a builder) made in `dir`, from
    /// its `cluster.env`. Dropping it removes it, as any cluster.
    pub fn open(dir: &Path) -> Result<Cluster, Error> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error(format!(
                "{}: {e} (no cluster made by hoop-cluster there)",
                path.display()
            ))
        })?;
        let get = |key: &str| -> Result<String, Error> {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}=")))
                .map(unquote)
                .ok_or_else(|| Error(format!("{}: no {key}", path.display())))
        };
        let version: u32 = get("HOOP_CLUSTER_VERSION")?
            .parse()
            .map_err(|_| Error(format!("{}: bad HOOP_CLUSTER_VERSION", path.display())))?;
        let postgres = Postgres::version(version)?;
        Ok(Cluster {
            postgres,
            dir: dir.to_owned(),
            data: get("HOOP_CLUSTER_DATA")?.into(),
            socket_dir: get("HOOP_CLUSTER_SOCKET")?.into(),
            log: get("HOOP_CLUSTER_LOG")?.into(),
            port: get("HOOP_CLUSTER_PORT")?
                .parse()
                .map_err(|_| Error(format!("{}: bad HOOP_CLUSTER_PORT", path.display())))?,
            superuser: get("HOOP_CLUSTER_SUPERUSER")?,
            settings: None,
            keep: false,
        })
    }

    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// The superuser's name (`postgres`, or the OS user when not root).
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// The superuser's password file, when it was given a password.
    pub fn password_file(&self) -> Option<PathBuf> {
        let path = self.dir.join(PASSWORD_FILE);
        path.is_file().then_some(path)
    }

    /// A program of this installation, run as the server's OS user.
    pub fn command(&self, tool: &str) -> Command {
        as_server_user(&self.postgres.tool(tool))
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(&self.data).args(args);
        c
    }

    pub fn is_running(&self) -> bool {
        self.pg_ctl(&["status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server (its settings rewritten first when this process
    /// built it); nothing to do when it already runs.
    pub fn start(&self) -> Result<(), Error> {
        if let Some(settings) = &self.settings {
            self.write_settings(settings)?;
        }
        if self.is_running() {
            return Ok(());
        }
        let mut start = self.pg_ctl(&["-w", "-t", "120", "-l"]);
        start.arg(&self.log).arg("start");
        checked(start, "pg_ctl start").map(drop).map_err(|e| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            Error(format!("{e}\n--- {} ---\n{tail}", self.log.display()))
        })
    }

    /// Stops the server cleanly and waits for it (files kept).
    pub fn stop(&self) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        checked(self.pg_ctl(&["-m", "fast", "-w", "stop"]), "pg_ctl stop").map(drop)
    }

    /// Stops the server at once (no checkpoint) and removes the cluster's
    /// directory; what drop does.
    pub fn destroy(&self) {
        let _ = self
            .pg_ctl(&["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Runs SQL as the superuser over the Unix socket; psql's unaligned,
    /// tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        let mut c = self.psql_command(database);
        c.args(["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        checked(c, "psql")
    }

    /// `psql -X` as the superuser over the Unix socket, to add arguments to.
    pub fn psql_command(&self, database: &str) -> Command {
        let mut c = self.command("psql");
        c.arg("-X")
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", &self.superuser, "-d", database]);
        c
    }

    /// The variables `hoop-cluster start|env` print (and `cluster.env`
    /// holds), for shells and Python.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "HOOP_CLUSTER_VERSION",
                self.postgres.version_number().to_string(),
            ),
            (
                "HOOP_CLUSTER_BIN",
                self.postgres.bin().display().to_string(),
            ),
            ("HOOP_CLUSTER_DIR", self.dir.display().to_string()),
            ("HOOP_CLUSTER_DATA", self.data.display().to_string()),
            ("HOOP_CLUSTER_SOCKET", self.socket_dir.display().to_string()),
            ("HOOP_CLUSTER_LOG", self.log.display().to_string()),
            ("HOOP_CLUSTER_PORT", self.port.to_string()),
            ("HOOP_CLUSTER_SUPERUSER", self.superuser.clone()),
        ]
    }

    /// `KEY='value'` lines of [`Cluster::env`], for `eval` in a shell.
    pub fn env_lines(&self) -> String {
        self.env()
            .into_iter()
            .map(|(key, value)| format!("{key}={}\n", shell_quote(&value)))
            .collect()
    }

    /// Stops the server and removes the cluster (unless kept) once process
    /// `owner` is gone, however it ends: a watchdog outside this process.
    /// For clusters held in statics (never dropped) and for scripts.
    // The watchdog must outlive this process, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    pub fn stop_when_gone(&self, owner: u32) -> Result<(), Error> {
        // The postmaster's pid too: if the data directory was removed
        // under it, pg_ctl cannot find it any more.
        let postmaster = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
            .unwrap_or_default();
        let runuser = if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let remove = if self.keep {
            String::new()
        } else {
            format!("rm -rf {}", shell_quote(&self.dir.display().to_string()))
        };
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 1; done; \
             {runuser}{pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; \
             [ -n '{postmaster}' ] && [ \"$(cat /proc/{postmaster}/comm 2>/dev/null)\" = postgres ] && kill -QUIT {postmaster}; \
             {remove}",
            pg_ctl = shell_quote(&self.postgres.tool("pg_ctl").display().to_string()),
            data = shell_quote(&self.data.display().to_string()),
            postmaster = postmaster.trim(),
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| Error(format!("cluster watchdog: {e}")))
    }

    fn write_settings(&self, settings: &str) -> Result<(), Error> {
        let path = self.data.join(SETTINGS_FILE);
        std::fs::write(&path, settings).map_err(|e| Error(format!("{}: {e}", path.display())))?;
        give_to_server_user(&path)
    }

    fn write_state(&self) -> Result<(), Error> {
        let path = self.dir.join(STATE_FILE);
        std::fs::write(&path, self.env_lines())
            .map_err(|e| Error(format!("{}: {e}", path.display())))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.keep {
            self.destroy();
        }
    }
}

impl Builder {
    /// The cluster's directory (to put files there before it starts).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The installation to run (default: [`Postgres::from_env`]).
    pub fn postgres(mut self, postgres: Postgres) -> Builder {
        self.postgres = Some(postgres);
        self
    }

    /// A fixed port (default: a free one).
    pub fn port(mut self, port: u16) -> Builder {
        self.port = Some(port);
        self
    }

    /// The superuser's name (default `postgres`; the OS user when not root).
    pub fn superuser(mut self, name: &str) -> Builder {
        self.superuser = Some(name.into());
        self
    }

    /// A password for the superuser (for SCRAM logins over TCP); written to
    /// [`Cluster::password_file`].
    pub fn password(mut self, password: &str) -> Builder {
        self.password = Some(password.into());
        self
    }

    /// `local` (Unix socket) logins: peer by default.
    pub fn local_auth(mut self, auth: Auth) -> Builder {
        self.local_auth = auth;
        self
    }

    /// `host` logins on 127.0.0.1: SCRAM by default.
    pub fn host_auth(mut self, auth: Auth) -> Builder {
        self.host_auth = auth;
        self
    }

    /// initdb's locale (default `C.UTF-8`; pg_regress wants `C`).
    pub fn locale(mut self, locale: &str) -> Builder {
        self.locale = locale.into();
        self
    }

    /// Keep `fsync` on (the demo); throw-away clusters turn it off.
    pub fn durable(mut self) -> Builder {
        self.durable = true;
        self
    }

    /// `postgresql.conf` lines, after the kit's own (so they win).
    pub fn settings(mut self, lines: &str) -> Builder {
        self.settings.push_str(lines);
        if !lines.ends_with('\n') {
            self.settings.push('\n');
        }
        self
    }

    pub fn data(mut self, path: impl Into<PathBuf>) -> Builder {
        self.data = Some(path.into());
        self
    }

    pub fn socket_dir(mut self, path: impl Into<PathBuf>) -> Builder {
        self.socket_dir = Some(path.into());
        self
    }

    pub fn log(mut self, path: impl Into<PathBuf>) -> Builder {
        self.log = Some(path.into());
        self
    }

    /// Never remove this cluster (drop, owner gone): the demo's.
    pub fn keep(mut self) -> Builder {
        self.keep = true;
        self
    }

    /// initdb when the data directory has no cluster yet, write the
    /// settings and `pg_hba.conf`; does not start the server.
    pub fn create(self) -> Result<Cluster, Error> {
        let postgres = match self.postgres {
            Some(postgres) => postgres,
            None => Postgres::from_env()?,
        };
        let superuser = match self.superuser {
            Some(name) => name,
            None if running_as_root() => "postgres".into(),
            None => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
        };
        let dir = self.dir;
        if !dir.exists() {
            make_dir(&dir)?;
            give_to_server_user(&dir)?;
        }
        let mut cluster = Cluster {
            data: self.data.unwrap_or_else(|| dir.join("data")),
            socket_dir: self.socket_dir.unwrap_or_else(|| dir.clone()),
            log: self.log.unwrap_or_else(|| dir.join("log")),
            port: match self.port {
                Some(port) => port,
                None => free_port()?,
            },
            postgres,
            dir,
            superuser,
            settings: None,
            keep: self.keep,
        };
        if !cluster.socket_dir.exists() {
            make_dir(&cluster.socket_dir)?;
            give_to_server_user(&cluster.socket_dir)?;
        }
        if !cluster.log.exists() {
            std::fs::File::create(&cluster.log)
                .map_err(|e| Error(format!("{}: {e}", cluster.log.display())))?;
            give_to_server_user(&cluster.log)?;
        }
        if !cluster.data.join("PG_VERSION").is_file() {
            initdb(&cluster, &self.locale, self.password.as_deref())?;
        }
        let mut settings = format!(
            "# written by the hoop test kit (tests/kit)\n\
             listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n",
            cluster.port,
            cluster.socket_dir.display()
        );
        if !self.durable {
            settings.push_str("fsync = off\n");
        }
        settings.push_str(&self.settings);
        cluster.write_settings(&settings)?;
        cluster.settings = Some(settings);
        include_settings(&cluster.data)?;
        let hba = cluster.data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "# written by the hoop test kit (tests/kit)\nlocal all all {}\nhost all all 127.0.0.1/32 {}\n",
                self.local_auth.method(),
                self.host_auth.method()
            ),
        )
        .map_err(|e| Error(format!("{}: {e}", hba.display())))?;
        give_to_server_user(&hba)?;
        cluster.write_state()?;
        Ok(cluster)
    }

    /// [`Builder::create`], then start the server.
    pub fn start(self) -> Result<Cluster, Error> {
        let cluster = self.create()?;
        cluster.start()?;
        Ok(cluster)
    }
}

fn initdb(cluster: &Cluster, locale: &str, password: Option<&str>) -> Result<(), Error> {
    make_dir(&cluster.data)?;
    give_to_server_user(&cluster.data)?;
    let mut initdb = cluster.command("initdb");
    initdb.arg("-D").arg(&cluster.data).args([
        "-U",
        &cluster.superuser,
        "--no-sync",
        "-E",
        "UTF8",
        &format!("--locale={locale}"),
    ]);
    if let Some(password) = password {
        let file = cluster.dir.join(PASSWORD_FILE);
        std::fs::write(&file, password).map_err(|e| Error(format!("{}: {e}", file.display())))?;
        give_to_server_user(&file)?;
        initdb.arg(format!("--pwfile={}", file.display()));
    }
    checked(initdb, "initdb").map(drop).map_err(|e| {
        Error(format!(
            "{e}\nhint: the postgres user must be able to reach {} (every parent directory needs o+x)",
            cluster.data.display()
        ))
    })
}

/// `include_if_exists` of the kit's settings, once, at the end of
/// `postgresql.conf`.
fn include_settings(data: &Path) -> Result<(), Error> {
    let path = data.join("postgresql.conf");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error(format!("{}: {e}", path.display())))?;
    let line = format!("include_if_exists = '{SETTINGS_FILE}'");
    if !text.contains(&line) {
        std::fs::write(&path, format!("{text}\n{line}\n"))
            .map_err(|e| Error(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|e| Error(format!("{}: {e}", path.display())))
}

/// A fresh directory for a throw-away cluster. Its name holds this
/// process's id, which an earlier process may have had (ids are reused):
/// what such a process left there is removed.
fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join("hoop-kit")
        .join(format!("{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips() {
        for value in ["/tmp/a b", "it's", "plain"] {
            assert_eq!(unquote(&shell_quote(value)), value);
        }
    }
}
