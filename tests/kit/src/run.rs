//! Running programs as the server's OS user, and the kit's one error type.

use std::path::Path;
use std::process::{Command, Stdio};

/// What went wrong, in words a person can act on.
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// `unwrap()` in a test prints Debug: keep it the readable message.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// `program` run as the `postgres` OS user when we are root (Postgres
/// refuses root), as ourselves otherwise; without Rust's backtrace
/// settings, which would make the extension append backtraces to errors.
pub(crate) fn as_server_user(program: &Path) -> Command {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null());
    command
}

/// Whether the server's OS user can reach directory `dir` (a checkout in
/// `/root`, mode 700, is out of its reach).
pub fn server_user_can_reach(dir: &Path) -> bool {
    as_server_user(Path::new("test"))
        .arg("-d")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Hands `path` to the server's OS user (when we are root).
pub(crate) fn give_to_server_user(path: &Path) -> Result<(), Error> {
    if running_as_root() {
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(path);
        checked(chown, "chown postgres")?;
    }
    Ok(())
}

/// Runs `command`; its stdout, or an error with everything it printed.
pub(crate) fn checked(mut command: Command, what: &str) -> Result<String, Error> {
    let out = command
        .output()
        .map_err(|e| Error(format!("{what}: cannot run: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

pub(crate) fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| Error(format!("no free port on 127.0.0.1: {e}")))
}
