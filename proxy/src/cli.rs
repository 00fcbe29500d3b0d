//! The `hoop` command line.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use crate::auth::dev_issuer::DevIssuer;
use crate::config::Config;

/// How a subcommand failed: the message `main` prints and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_owned())
    }
}

impl From<hoop_reviews::cli::CliError> for Failure {
    fn from(error: hoop_reviews::cli::CliError) -> Failure {
        Failure {
            code: u8::try_from(error.exit_code()).unwrap_or(1),
            message: error.to_string(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

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
    /// Read and verify the audit trail (every read is itself recorded).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Decide held statements through the gateway's admin API.
    Reviews {
        #[command(subcommand)]
        command: ReviewsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute every hash chain and checkpoint; exits 1 naming the first problem.
    Verify {
        /// Configuration file: verify the live store.
        #[arg(
            short = 'c',
            long = "config",
            conflicts_with = "export",
            required_unless_present = "export"
        )]
        config: Option<PathBuf>,
        /// An export directory (from `hoop audit export`): verify it offline.
        export: Option<PathBuf>,
        /// Extra trusted public keys (`key_id:base64` lines), e.g. rotated-out keys;
        /// with an export directory, verify against these instead of the export's own.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// List recorded sessions.
    Sessions {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// RFC 3339 time or a duration ago (24h).
        #[arg(long, value_parser = crate::audit::parse_time)]
        since: Option<hoop_audit::Timestamp>,
        #[arg(long, value_parser = crate::audit::parse_time)]
        until: Option<hoop_audit::Timestamp>,
        /// Only sessions of this subject.
        #[arg(long)]
        sub: Option<String>,
        /// Only sessions that touched this table.
        #[arg(long)]
        table: Option<String>,
    },
    /// One session as a timeline: statements, decisions, outcomes, masked rows.
    Replay {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        session_id: String,
    },
    /// Write an evidence export (JSONL records, checkpoints, public keys, README).
    Export {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        #[arg(long, value_parser = crate::audit::parse_time)]
        since: Option<hoop_audit::Timestamp>,
        #[arg(long, value_parser = crate::audit::parse_time)]
        until: Option<hoop_audit::Timestamp>,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where the review API is and who is calling it.
#[derive(clap::Args, Debug)]
pub struct ReviewerArgs {
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Reviewer token (default: $HOOP_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Admin API base URL (default: reviews.public_url, else http://<admin.address>).
    #[arg(long)]
    admin_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ReviewsCommand {
    /// Reviews, newest first.
    List {
        #[command(flatten)]
        api: ReviewerArgs,
        /// pending | approved | denied | modified | expired | withdrawn
        #[arg(long)]
        status: Option<String>,
    },
    /// Every detail of one review.
    Show {
        #[command(flatten)]
        api: ReviewerArgs,
        id: String,
    },
    /// Approve a held statement.
    Approve {
        #[command(flatten)]
        api: ReviewerArgs,
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Let the requester run the same statement under the same rule for this long (e.g. 30m).
        #[arg(long)]
        grant_for: Option<String>,
    },
    /// Deny a held statement (the client gets 42501 with your reason).
    Deny {
        #[command(flatten)]
        api: ReviewerArgs,
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a replacement statement instead (it goes through the same rules).
    Modify {
        #[command(flatten)]
        api: ReviewerArgs,
        id: String,
        #[arg(long)]
        sql: String,
        #[arg(long)]
        reason: Option<String>,
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
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            let gateway = crate::server::Gateway::bind(config)
                .await
                .map_err(|e| e.to_string())?;
            gateway.run(crate::server::shutdown_signal()).await;
            Ok(())
        }
        Command::Demo => crate::demo::run().await.map_err(Failure::from),
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
        Command::Audit { command } => run_audit(command).await,
        Command::Reviews { command } => run_reviews(command).await,
    }
}

async fn run_audit(command: AuditCommand) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify {
            config,
            export,
            keys,
        } => {
            let ok =
                crate::audit::cli_verify(config.as_deref(), export.as_deref(), keys.as_deref())
                    .await?;
            if ok {
                Ok(())
            } else {
                // The report and the first problem are already printed.
                Err(Failure {
                    message: "the audit trail does not verify".into(),
                    code: 1,
                })
            }
        }
        AuditCommand::Sessions {
            config,
            since,
            until,
            sub,
            table,
        } => {
            let filter = hoop_audit::SessionFilter {
                since,
                until,
                subject: sub,
                table,
            };
            Ok(crate::audit::cli_sessions(&config, filter).await?)
        }
        AuditCommand::Replay { config, session_id } => {
            Ok(crate::audit::cli_replay(&config, &session_id).await?)
        }
        AuditCommand::Export {
            config,
            since,
            until,
            out,
        } => {
            let filter = hoop_audit::ExportFilter { since, until };
            Ok(crate::audit::cli_export(&config, filter, &out).await?)
        }
    }
}

/// Loads the configuration and finds the API base URL and the token.
fn reviewer_api(api: ReviewerArgs) -> Result<(String, String), Failure> {
    let config = Config::load(&api.config).map_err(|e| Failure {
        message: e.to_string(),
        code: 2,
    })?;
    let base = crate::reviews::admin_base_url(&config, api.admin_url.as_deref())?;
    let token = crate::reviews::reviewer_token(api.token)?;
    Ok((base, token))
}

async fn run_reviews(command: ReviewsCommand) -> Result<(), Failure> {
    use hoop_reviews::cli;
    let text = match command {
        ReviewsCommand::List { api, status } => {
            let (base, token) = reviewer_api(api)?;
            cli::cli_list(&base, &token, status.as_deref()).await?
        }
        ReviewsCommand::Show { api, id } => {
            let (base, token) = reviewer_api(api)?;
            cli::cli_show(&base, &token, &id).await?
        }
        ReviewsCommand::Approve {
            api,
            id,
            reason,
            grant_for,
        } => {
            let (base, token) = reviewer_api(api)?;
            cli::cli_approve(&base, &token, &id, reason.as_deref(), grant_for.as_deref()).await?
        }
        ReviewsCommand::Deny { api, id, reason } => {
            let (base, token) = reviewer_api(api)?;
            cli::cli_deny(&base, &token, &id, reason.as_deref()).await?
        }
        ReviewsCommand::Modify {
            api,
            id,
            sql,
            reason,
        } => {
            let (base, token) = reviewer_api(api)?;
            cli::cli_modify(&base, &token, &id, &sql, reason.as_deref()).await?
        }
    };
    print!("{text}");
    Ok(())
}
