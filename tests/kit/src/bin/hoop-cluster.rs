//! The test kit for shells and Python (`tests/kit/cluster.sh`,
//! `tests/e2e/conftest.py`, `bench/`, `scripts/`): the same clusters the
//! Rust tests get.
//!
//! ```text
//! hoop-cluster bin [--version N]
//!     the bin directory of Postgres N ($HOOP_PG_VERSION, else 15)
//! hoop-cluster start DIR [--version N] [--port P] [--superuser NAME]
//!         [--auth-local peer|trust] [--auth-host scram-sha-256|trust]
//!         [--locale L] [--set 'name = value']... [--conf FILE|-]...
//!         [--log FILE] [--owner PID]
//!     create the cluster in DIR when it has none (else start it again as
//!     it was made: only --owner may be given), start it, print its
//!     variables as KEY='value' lines (for eval); with --owner, the cluster
//!     is stopped and DIR removed once process PID is gone
//! hoop-cluster stop DIR [--keep]
//!     stop at once and remove DIR; with --keep, stop cleanly and keep it
//! hoop-cluster env DIR
//!     print the variables again
//! ```
//! Missing Postgres fails (exit 1) with a message naming scripts/setup.sh.

use std::path::PathBuf;
use std::process::ExitCode;

use hoop_testkit::{Auth, Cluster, Error, Postgres};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hoop-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> Error {
    Error("usage: hoop-cluster bin|start|stop|env … (see tests/kit/src/bin/hoop-cluster.rs)".into())
}

fn run(args: &[String]) -> Result<String, Error> {
    let (command, rest) = args.split_first().ok_or_else(usage)?;
    match command.as_str() {
        "bin" => {
            let options = Options::parse(rest, false)?;
            let postgres = options.postgres()?;
            Ok(format!("{}\n", postgres.bin().display()))
        }
        "start" => start(Options::parse(rest, true)?),
        "stop" => {
            let options = Options::parse(rest, true)?;
            let cluster = Cluster::open(&options.dir()?)?;
            if options.keep {
                cluster.stop()?;
                // Kept: not dropped, which would remove it.
                std::mem::forget(cluster);
            } else {
                cluster.destroy();
            }
            Ok(String::new())
        }
        "env" => {
            let options = Options::parse(rest, true)?;
            let cluster = Cluster::open(&options.dir()?)?;
            let out = cluster.env_lines();
            std::mem::forget(cluster);
            Ok(out)
        }
        _ => Err(usage()),
    }
}

fn start(options: Options) -> Result<String, Error> {
    let dir = options.dir()?;
    let cluster = if dir.join("cluster.env").is_file() {
        if options.creates() {
            return Err(Error(format!(
                "{} already holds a cluster: `start` starts it again as it was made (only --owner may be given)",
                dir.display()
            )));
        }
        let cluster = Cluster::open(&dir)?;
        cluster.start()?;
        cluster
    } else {
        let mut builder = Cluster::builder(&dir)
            .postgres(options.postgres()?)
            .local_auth(options.auth_local.unwrap_or(Auth::Peer))
            .host_auth(options.auth_host.unwrap_or(Auth::Scram))
            .settings(&options.settings);
        if let Some(port) = options.port {
            builder = builder.port(port);
        }
        if let Some(name) = &options.superuser {
            builder = builder.superuser(name);
        }
        if let Some(locale) = &options.locale {
            builder = builder.locale(locale);
        }
        if let Some(log) = &options.log {
            builder = builder.log(log);
        }
        builder.start()?
    };
    if let Some(owner) = options.owner {
        cluster.stop_when_gone(owner)?;
    }
    let out = cluster.env_lines();
    // The cluster outlives this command: dropping it would remove it.
    std::mem::forget(cluster);
    Ok(out)
}

#[derive(Default)]
struct Options {
    dir: Option<PathBuf>,
    version: Option<u32>,
    port: Option<u16>,
    superuser: Option<String>,
    auth_local: Option<Auth>,
    auth_host: Option<Auth>,
    locale: Option<String>,
    settings: String,
    log: Option<PathBuf>,
    owner: Option<u32>,
    keep: bool,
}

impl Options {
    fn parse(args: &[String], with_dir: bool) -> Result<Options, Error> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| Error(format!("{name} needs a value")))
            };
            let number = |name: &str, text: String| {
                text.parse::<u32>()
                    .map_err(|_| Error(format!("{name} {text:?} is not a number")))
            };
            match arg.as_str() {
                "--version" => options.version = Some(number(arg, value(arg)?)?),
                "--port" => {
                    let port = number(arg, value(arg)?)?;
                    options.port =
                        Some(u16::try_from(port).map_err(|_| Error(format!("bad port {port}")))?);
                }
                "--superuser" => options.superuser = Some(value(arg)?),
                "--auth-local" => options.auth_local = Some(Auth::parse(&value(arg)?)?),
                "--auth-host" => options.auth_host = Some(Auth::parse(&value(arg)?)?),
                "--locale" => options.locale = Some(value(arg)?),
                "--set" => {
                    options.settings.push_str(&value(arg)?);
                    options.settings.push('\n');
                }
                "--conf" => {
                    let file = value(arg)?;
                    let text = if file == "-" {
                        std::io::read_to_string(std::io::stdin())
                    } else {
                        std::fs::read_to_string(&file)
                    }
                    .map_err(|e| Error(format!("--conf {file}: {e}")))?;
                    options.settings.push_str(&text);
                    options.settings.push('\n');
                }
                "--log" => options.log = Some(value(arg)?.into()),
                "--owner" => options.owner = Some(number(arg, value(arg)?)?),
                "--keep" => options.keep = true,
                _ if with_dir && options.dir.is_none() && !arg.starts_with('-') => {
                    options.dir = Some(arg.into())
                }
                _ => return Err(Error(format!("unexpected argument {arg:?}"))),
            }
        }
        Ok(options)
    }

    fn dir(&self) -> Result<PathBuf, Error> {
        self.dir.clone().ok_or_else(usage)
    }

    fn postgres(&self) -> Result<Postgres, Error> {
        match self.version {
            Some(version) => Postgres::version(version),
            None => Postgres::from_env(),
        }
    }

    /// Whether options only a new cluster can take were given.
    fn creates(&self) -> bool {
        self.version.is_some()
            || self.port.is_some()
            || self.superuser.is_some()
            || self.auth_local.is_some()
            || self.auth_host.is_some()
            || self.locale.is_some()
            || !self.settings.is_empty()
            || self.log.is_some()
    }
}
