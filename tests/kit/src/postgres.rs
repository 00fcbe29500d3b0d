//! Which Postgres installation to run, and what it offers.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::Error;

/// The version tests run on when `$HOOP_PG_VERSION` does not say.
pub const DEFAULT_VERSION: u32 = 15;

/// One Postgres installation: its major version and `bin` directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postgres {
    version: u32,
    bin: PathBuf,
}

impl Postgres {
    /// The version named by `$HOOP_PG_VERSION`, else 15.
    pub fn from_env() -> Result<Postgres, Error> {
        match std::env::var("HOOP_PG_VERSION") {
            Ok(text) if !text.trim().is_empty() => {
                let version = text.trim().parse().map_err(|_| {
                    Error(format!(
                        "HOOP_PG_VERSION={text:?} is not a major version (15, 17 or 18)"
                    ))
                })?;
                Postgres::version(version)
            }
            _ => Postgres::version(DEFAULT_VERSION),
        }
    }

    /// Version `version`: `$HOOP_PG{N}_BIN`, else setup's env.sh, else
    /// Debian's location. Fails, naming scripts/setup.sh, when none has a
    /// server.
    pub fn version(version: u32) -> Result<Postgres, Error> {
        let var = format!("HOOP_PG{version}_BIN");
        let candidates: Vec<PathBuf> = [
            std::env::var_os(&var).map(PathBuf::from),
            from_setup_env(&var),
            Some(PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))),
        ]
        .into_iter()
        .flatten()
        .collect();
        for bin in &candidates {
            if ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|tool| bin.join(tool).is_file())
            {
                return Ok(Postgres {
                    version,
                    bin: bin.clone(),
                });
            }
        }
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Err(Error(format!(
            "PostgreSQL {version} is not installed (no initdb, pg_ctl and postgres in {}): \
             run scripts/setup.sh, or point {var} at its bin directory",
            looked.join(", ")
        )))
    }

    pub fn version_number(&self) -> u32 {
        self.version
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A program of this installation (`psql`, `pg_config`, `pgbench` …).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Whether the server was built with TLS (the Postgres 17 built by
    /// setup is not).
    pub fn has_ssl(&self) -> bool {
        Command::new(self.tool("pg_config"))
            .arg("--configure")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.contains("--with-ssl=openssl") || text.contains("--with-openssl")
            })
            .unwrap_or(false)
    }

    /// Whether an extension (control file and library) is installed here,
    /// e.g. by `cargo pgrx install`.
    pub fn has_extension(&self, name: &str) -> bool {
        let ask = |flag: &str| {
            Command::new(self.tool("pg_config"))
                .arg(flag)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        };
        match (ask("--sharedir"), ask("--pkglibdir")) {
            (Some(share), Some(lib)) => {
                share.join(format!("extension/{name}.control")).is_file()
                    && lib.join(format!("{name}.so")).is_file()
            }
            _ => false,
        }
    }
}

/// `export HOOP_PG17_BIN='…'` from `$HOOP_CACHE/env.sh`, so a plain `cargo
/// test` finds what scripts/setup.sh installed without sourcing it.
fn from_setup_env(var: &str) -> Option<PathBuf> {
    let cache = std::env::var("HOOP_CACHE").unwrap_or_else(|_| "/var/cache/hoop".into());
    let text = std::fs::read_to_string(Path::new(&cache).join("env.sh")).ok()?;
    let prefix = format!("export {var}=");
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix(&prefix)?;
        Some(PathBuf::from(value.trim_matches(|c| c == '\'' || c == '"')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_version_names_setup() {
        let err = Postgres::version(4).unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 4 is not installed"), "{err}");
        assert!(err.contains("scripts/setup.sh"), "{err}");
        assert!(err.contains("HOOP_PG4_BIN"), "{err}");
    }
}
