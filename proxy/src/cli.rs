//! The `hoop` command line.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::auth::dev_issuer::DevIssuer;
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "hoop",
    version,
    about = "PCI DSS guardrails for machine identities on PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (TOML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Run the local demo: a Postgres 15 cluster under .hoop/demo, the gateway on 127.0.0.1:6432.
    Demo,
    /// Development tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Session-signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a JWT from the development issuer (needs [identity.dev_issuer] in the config).
    Mint {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Subject (who the agent is).
        #[arg(long)]
        sub: String,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new Ed25519 session-signing key and print its hoop.trusted_keys entry.
    Generate {
        /// Directory for session-signing.key.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Key id (defaults to hoop-<unix time>).
        #[arg(long)]
        kid: Option<String>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs a subcommand; the error is printed by `main` and exits non-zero.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let gateway = crate::server::Gateway::bind(config)
                .await
                .map_err(|e| e.to_string())?;
            gateway.run(crate::server::shutdown_signal()).await;
            Ok(())
        }
        Command::Demo => crate::demo::run().await,
        Command::Token {
            command:
                TokenCommand::Mint {
                    config,
                    sub,
                    groups,
                    ttl,
                },
        } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let dev = config.identity.dev_issuer.as_ref().ok_or_else(|| {
                format!(
                    "{}: the development issuer is not enabled ([identity.dev_issuer]); \
                     tokens come from your identity provider",
                    config.path.display()
                )
            })?;
            let issuer = DevIssuer::from_config(dev, &config.identity)?;
            let ttl = ttl.unwrap_or(issuer.default_ttl);
            if ttl > Duration::from_secs(24 * 3600) {
                return Err("--ttl: at most 24h".into());
            }
            if groups.is_empty() {
                eprintln!("note: no --group given; the gateway will refuse a token without a mapped group");
            }
            println!("{}", issuer.mint(&sub, &groups, ttl, now_unix())?);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate { out, kid, force },
        } => {
            let kid = kid.unwrap_or_else(|| format!("hoop-{}", now_unix()));
            let entry = crate::keys::generate(&out, &kid, force)?;
            let path = out.join(crate::keys::SESSION_KEY_FILE);
            println!(
                "wrote {} (mode 0600): keep it secret, it mints database sessions",
                path.display()
            );
            println!();
            println!("postgresql.conf (append to an existing list to rotate):");
            println!("    hoop.trusted_keys = '{entry}'");
            println!();
            println!("hoop.toml:");
            println!("    [session]");
            println!("    signing_key = {{ file = \"{}\" }}", path.display());
            println!("    key_id = \"{kid}\"");
            Ok(())
        }
    }
}
