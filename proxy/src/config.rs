//! The gateway's TOML configuration. Secrets (the upstream password, signing
//! keys) are never written inline: each is read from a file or an environment
//! variable (`{ file = "…" }` / `{ env = "VAR" }`). Every mistake is reported
//! with the key it concerns.
//!
//! This module knows the gateway's own sections (`[listen]`, `[upstream]`,
//! `[identity]`, `[[role_mapping]]`, `[session]`, `[admin]`) and holds the
//! others as the types their owners define: `[audit]` is
//! [`hoop_audit::AuditSection`], `[reviews]` [`hoop_reviews::ReviewsConfig`],
//! `[[rules]]` and `[policy]` `hoop_policy`'s. It imports no other module of
//! the gateway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoop_common::config::KeyError;
pub use hoop_common::config::{HumanDuration, SecretRef};
use serde::Deserialize;

/// Errors a person fixes by editing the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// `configuration key `…`: …`
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Key(KeyError::new(key, problem))
}

/// `[listen] allow_plaintext`: which clients may log in without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AllowPlaintext {
    /// Clients must use TLS.
    #[default]
    Never,
    /// Plaintext only from loopback addresses (development, the demo).
    Loopback,
    /// Plaintext from anywhere (behind a trusted TLS terminator only).
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    #[default]
    Disable,
    /// Encrypt, without verifying the server certificate (libpq's `require`).
    Require,
    /// Encrypt and verify the certificate chain and host name.
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    pub address: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_plaintext: AllowPlaintext,
    pub max_message_bytes: Option<usize>,
    /// Failed logins allowed per source address within `failed_login_window`.
    pub max_failed_logins: Option<u32>,
    pub failed_login_window: Option<HumanDuration>,
    /// How long in-flight statements may run after SIGTERM/SIGINT.
    pub shutdown_grace: Option<HumanDuration>,
    /// Threads that run sessions (each session stays on one); default:
    /// half the CPUs, at least one.
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub host: String,
    pub port: Option<u16>,
    pub user: String,
    pub password: SecretRef,
    /// Databases clients may name; empty means any the gateway role may connect to.
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub tls: UpstreamTls,
    pub tls_ca_file: Option<PathBuf>,
    pub connect_timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIssuerSection {
    /// Ed25519 seed (base64) the development issuer signs with.
    pub key_file: PathBuf,
    pub issuer: Option<String>,
    pub default_ttl: Option<HumanDuration>,
}

/// `[identity]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderSection {
    /// OpenID issuer URL: discovery + JWKS.
    pub issuer: Option<String>,
    /// A static JWKS file (keys rotate when the file is edited and the gateway restarted).
    pub jwks_file: Option<PathBuf>,
    /// The `iss` expected with `jwks_file` (defaults to `issuer`).
    pub expected_issuer: Option<String>,
    pub audience: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    pub leeway: Option<HumanDuration>,
    /// Signature algorithms accepted (each still has to match its key's type).
    pub algorithms: Option<Vec<String>>,
    pub jwks_min_refresh_interval: Option<HumanDuration>,
    pub jwks_max_age: Option<HumanDuration>,
    pub dev_issuer: Option<DevIssuerSection>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    pub group: String,
    pub role: String,
    /// Columns this role may see unmasked: "schema.table.column".
    #[serde(default)]
    pub unmask: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    pub signing_key: SecretRef,
    pub key_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: ListenSection,
    upstream: UpstreamSection,
    identity: IdentityProviderSection,
    #[serde(default)]
    role_mapping: Vec<RoleMapping>,
    session: SessionSection,
    admin: Option<AdminSection>,
    /// `[reviews]`: hoop-reviews' own keys (`approver_groups` is accepted
    /// as another name for `reviewer_group`).
    #[serde(default)]
    reviews: hoop_reviews::ReviewsConfig,
    /// `[audit]`: hoop-audit's own keys.
    #[serde(default)]
    audit: hoop_audit::AuditSection,
    /// Statement rules, added after the shipped defaults (which
    /// `[policy.default_rules]` selects).
    #[serde(default)]
    rules: Vec<hoop_policy::RuleConfig>,
    #[serde(default)]
    policy: PolicySection,
}

/// A validated configuration with its secrets loaded.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub allow_plaintext: AllowPlaintext,
    pub max_message_bytes: usize,
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
    pub shutdown_grace: Duration,
    /// Session threads (`[listen] threads`).
    pub threads: usize,
    pub upstream: Upstream,
    /// `[identity]`: where login tokens come from and how they are checked.
    pub identity: IdentityProvider,
    pub role_mapping: Vec<RoleMapping>,
    pub session_key_id: String,
    pub session_signing_seed: String,
    pub admin: Option<SocketAddr>,
    pub reviews: hoop_reviews::ReviewsConfig,
    /// `[audit]`: the store and the checkpoint signing key.
    pub audit: hoop_audit::AuditSettings,
    /// `[[rules]]` (with the defaults) and `[policy]`.
    pub policy: Policy,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub databases: Vec<String>,
    pub tls: UpstreamTls,
    pub tls_ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Oidc { issuer: String },
    JwksFile { path: PathBuf, issuer: String },
    DevIssuer,
}

#[derive(Debug, Clone)]
pub struct DevIssuer {
    pub issuer: String,
    pub seed_base64: String,
    pub default_ttl: Duration,
}

/// The identity provider: where verification keys come from and what an
/// accepted token must say.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    pub source: KeySource,
    pub audience: String,
    pub groups_claim: Vec<String>,
    pub leeway: Duration,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub jwks_min_refresh_interval: Duration,
    pub jwks_max_age: Duration,
    pub dev_issuer: Option<DevIssuer>,
}

impl IdentityProvider {
    /// The `iss` every accepted token must carry.
    pub fn expected_issuer(&self) -> &str {
        match &self.source {
            KeySource::Oidc { issuer } | KeySource::JwksFile { issuer, .. } => issuer,
            KeySource::DevIssuer => self
                .dev_issuer
                .as_ref()
                .map(|d| d.issuer.as_str())
                .unwrap_or_default(),
        }
    }
}

pub const DEFAULT_DEV_ISSUER: &str = "hoop-dev";

const ASYMMETRIC_ALGORITHMS: [jsonwebtoken::Algorithm; 9] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::EdDSA,
];

/// `[listen]`, checked.
struct Listen {
    address: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    allow_plaintext: AllowPlaintext,
    max_message_bytes: usize,
    max_failed_logins: u32,
    failed_login_window: Duration,
    shutdown_grace: Duration,
    threads: usize,
}

/// `[session]`, checked, with its signing seed read.
struct SessionKeys {
    key_id: String,
    signing_seed: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates; relative paths are taken from the file's directory.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let listen = raw.listen.check(&base)?;
        let upstream = raw.upstream.check(&base)?;
        let identity = raw.identity.check(&base)?;
        check_role_mapping(&raw.role_mapping)?;
        let session = raw.session.check(&base)?;
        let admin = match raw.admin {
            Some(a) => Some(
                a.address
                    .parse()
                    .map_err(|e| invalid("admin.address", format!("{:?}: {e}", a.address)))?,
            ),
            None => None,
        };
        let policy = Policy::from_raw(raw.rules, &raw.policy, &base)?;
        let audit = raw
            .audit
            .settings(&base, &session.signing_seed, &session.key_id)?;
        let reviews = raw.reviews.relative_to(&base)?;
        Ok(Config {
            path: path.to_owned(),
            listen: listen.address,
            tls: listen.tls,
            allow_plaintext: listen.allow_plaintext,
            max_message_bytes: listen.max_message_bytes,
            max_failed_logins: listen.max_failed_logins,
            failed_login_window: listen.failed_login_window,
            shutdown_grace: listen.shutdown_grace,
            threads: listen.threads,
            upstream,
            identity,
            role_mapping: raw.role_mapping,
            session_key_id: session.key_id,
            session_signing_seed: session.signing_seed,
            admin,
            reviews,
            audit,
            policy,
        })
    }

    /// The first mapping (in file order) whose group the identity holds.
    pub fn role_for(&self, groups: &[String]) -> Option<&RoleMapping> {
        self.role_mapping
            .iter()
            .find(|m| groups.iter().any(|g| g == &m.group))
    }
}

/// A file the configuration names, relative to its directory, that must exist.
fn existing_file(key: &str, base: &Path, file: &Path) -> Result<PathBuf, ConfigError> {
    let path = base.join(file);
    if !path.is_file() {
        return Err(invalid(key, format!("{} does not exist", path.display())));
    }
    Ok(path)
}

impl ListenSection {
    fn check(self, base: &Path) -> Result<Listen, ConfigError> {
        let address: SocketAddr = self
            .address
            .parse()
            .map_err(|e| invalid("listen.address", format!("{:?}: {e}", self.address)))?;
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((
                existing_file("listen.tls_cert_file", base, cert)?,
                existing_file("listen.tls_key_file", base, key)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "listen.tls_key_file",
                    "missing (tls_cert_file is set)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "listen.tls_cert_file",
                    "missing (tls_key_file is set)",
                ))
            }
        };
        if tls.is_none() && self.allow_plaintext == AllowPlaintext::Never {
            return Err(invalid(
                "listen.tls_cert_file",
                "required: clients send their token as a password, so TLS is on by default \
                 (set listen.allow_plaintext = \"loopback\" only for local development)",
            ));
        }
        let max_message_bytes = self
            .max_message_bytes
            .unwrap_or(crate::protocol::DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 1024 {
            return Err(invalid("listen.max_message_bytes", "must be at least 1024"));
        }
        let threads = match self.threads {
            // Half the CPUs: a gateway shares its machine (with the
            // database, often), and a busy thread that finds several
            // sessions ready per wake-up spends less per statement than
            // two that each find one (see `threads`).
            None => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            Some(n @ 1..=1024) => n,
            Some(_) => return Err(invalid("listen.threads", "must be between 1 and 1024")),
        };
        Ok(Listen {
            threads,
            address,
            tls,
            allow_plaintext: self.allow_plaintext,
            max_message_bytes,
            max_failed_logins: self.max_failed_logins.unwrap_or(5),
            failed_login_window: duration_or(self.failed_login_window, 60),
            shutdown_grace: duration_or(self.shutdown_grace, 30),
        })
    }
}

fn duration_or(value: Option<HumanDuration>, default_secs: u64) -> Duration {
    value.map_or(Duration::from_secs(default_secs), |d| d.0)
}

impl UpstreamSection {
    fn check(self, base: &Path) -> Result<Upstream, ConfigError> {
        if self.host.is_empty() {
            return Err(invalid("upstream.host", "must not be empty"));
        }
        if self.user.is_empty() {
            return Err(invalid("upstream.user", "must not be empty"));
        }
        let password = self
            .password
            .relative_to(base)
            .resolve("upstream.password")?;
        let tls_ca_file = match &self.tls_ca_file {
            Some(ca) if self.tls == UpstreamTls::VerifyFull => {
                Some(existing_file("upstream.tls_ca_file", base, ca)?)
            }
            Some(ca) => Some(base.join(ca)),
            None => None,
        };
        Ok(Upstream {
            host: self.host,
            port: self.port.unwrap_or(5432),
            user: self.user,
            password,
            databases: self.databases,
            tls: self.tls,
            tls_ca_file,
            connect_timeout: duration_or(self.connect_timeout, 10),
        })
    }
}

impl IdentityProviderSection {
    fn check(self, base: &Path) -> Result<IdentityProvider, ConfigError> {
        let dev_issuer = self
            .dev_issuer
            .as_ref()
            .map(|d| d.check(base))
            .transpose()?;
        let source = self.key_source(base, dev_issuer.is_some())?;
        if self.audience.is_empty() {
            return Err(invalid("identity.audience", "must not be empty"));
        }
        let groups_claim = self.groups_claim_path()?;
        let algorithms = self.algorithms()?;
        let leeway = duration_or(self.leeway, 30);
        if leeway > Duration::from_secs(300) {
            return Err(invalid("identity.leeway", "at most 5m"));
        }
        Ok(IdentityProvider {
            source,
            audience: self.audience,
            groups_claim,
            leeway,
            algorithms,
            jwks_min_refresh_interval: duration_or(self.jwks_min_refresh_interval, 10),
            jwks_max_age: duration_or(self.jwks_max_age, 600),
            dev_issuer,
        })
    }

    /// OIDC discovery, a static JWKS file, or (alone) the development issuer.
    fn key_source(&self, base: &Path, dev_issuer: bool) -> Result<KeySource, ConfigError> {
        match (&self.issuer, &self.jwks_file, dev_issuer) {
            (Some(issuer), None, _) => {
                check_issuer_url(issuer)?;
                Ok(KeySource::Oidc {
                    issuer: issuer.trim_end_matches('/').to_owned(),
                })
            }
            (None, Some(file), _) => {
                let issuer = self.expected_issuer.clone().ok_or_else(|| {
                    invalid(
                        "identity.expected_issuer",
                        "required with identity.jwks_file (the `iss` tokens must carry)",
                    )
                })?;
                let path = existing_file("identity.jwks_file", base, file)?;
                Ok(KeySource::JwksFile { path, issuer })
            }
            (None, None, true) => Ok(KeySource::DevIssuer),
            (Some(_), Some(_), _) => Err(invalid(
                "identity.issuer",
                "set either identity.issuer or identity.jwks_file, not both",
            )),
            (None, None, false) => Err(invalid(
                "identity.issuer",
                "missing: set identity.issuer (OIDC), identity.jwks_file, or \
                 [identity.dev_issuer] for local development",
            )),
        }
    }

    /// `groups_claim` as a path into the token's claims (`realm_access.roles`).
    fn groups_claim_path(&self) -> Result<Vec<String>, ConfigError> {
        let path: Vec<String> = self.groups_claim.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(invalid(
                "identity.groups_claim",
                format!(
                    "{:?} is not a claim path like `groups` or `realm_access.roles`",
                    self.groups_claim
                ),
            ));
        }
        Ok(path)
    }

    /// The accepted signature algorithms: public-key ones only.
    fn algorithms(&self) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
        let Some(names) = &self.algorithms else {
            return Ok(ASYMMETRIC_ALGORITHMS.to_vec());
        };
        let mut out = Vec::new();
        for name in names {
            let alg: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
                invalid("identity.algorithms", format!("unknown algorithm {name:?}"))
            })?;
            if !ASYMMETRIC_ALGORITHMS.contains(&alg) {
                return Err(invalid(
                    "identity.algorithms",
                    format!("{name} is symmetric; only public-key algorithms are accepted"),
                ));
            }
            out.push(alg);
        }
        if out.is_empty() {
            return Err(invalid("identity.algorithms", "must not be empty"));
        }
        Ok(out)
    }
}

impl DevIssuerSection {
    fn check(&self, base: &Path) -> Result<DevIssuer, ConfigError> {
        let seed =
            SecretRef::file(base.join(&self.key_file)).resolve("identity.dev_issuer.key_file")?;
        Ok(DevIssuer {
            issuer: self
                .issuer
                .clone()
                .unwrap_or_else(|| DEFAULT_DEV_ISSUER.into()),
            seed_base64: seed,
            default_ttl: duration_or(self.default_ttl, 900),
        })
    }
}

fn check_role_mapping(mappings: &[RoleMapping]) -> Result<(), ConfigError> {
    if mappings.is_empty() {
        return Err(invalid(
            "role_mapping",
            "no [[role_mapping]] entries: nobody could log in",
        ));
    }
    for m in mappings {
        if m.group.is_empty() || m.role.is_empty() {
            return Err(invalid(
                "role_mapping",
                "every entry needs `group` and `role`",
            ));
        }
        for col in &m.unmask {
            if col.split('.').count() != 3 || col.split('.').any(str::is_empty) {
                return Err(invalid(
                    "role_mapping.unmask",
                    format!("{col:?} is not \"schema.table.column\""),
                ));
            }
        }
    }
    Ok(())
}

impl SessionSection {
    fn check(self, base: &Path) -> Result<SessionKeys, ConfigError> {
        let signing_seed = self
            .signing_key
            .relative_to(base)
            .resolve("session.signing_key")?;
        if let Err(e) =
            hoop_common::token::SessionSigner::from_seed_base64(&self.key_id, &signing_seed)
        {
            return Err(invalid("session.signing_key", e.to_string()));
        }
        if self.key_id.is_empty() || self.key_id.contains([':', ',', ' ']) {
            return Err(invalid(
                "session.key_id",
                "must be non-empty without ':', ',' or spaces",
            ));
        }
        Ok(SessionKeys {
            key_id: self.key_id,
            signing_seed,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// How card numbers found by content detection are masked
    /// (`pan_last4`, `pan_bin_last4`, `pan_token`, `redact`).
    pub content_strategy: Option<String>,
    /// HMAC key for `pan_token` (the same bytes as the extension's
    /// `hoop.token_key`, so both layers produce the same tokens).
    pub token_key: Option<SecretRef>,
    /// `[policy.default_rules]`: the shipped rule set (`hoop-defaults`)
    /// switched off as a whole or rule by rule, or scoped by group.
    #[serde(default)]
    pub default_rules: hoop_policy::DefaultRules,
}

/// The validated statement rules and masking settings.
#[derive(Clone)]
pub struct Policy {
    pub rules: std::sync::Arc<hoop_policy::RuleSet>,
    /// Masks card numbers found in free text (the `content_strategy`).
    pub content_masker: hoop_common::mask::Masker,
    /// For declared columns that use `pan_token`.
    pub token_key: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules.names().collect::<Vec<_>>())
            .field("content_masker", &self.content_masker)
            .field("token_key", &self.token_key.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

impl Policy {
    fn from_raw(
        rules: Vec<hoop_policy::RuleConfig>,
        section: &PolicySection,
        base: &Path,
    ) -> Result<Policy, ConfigError> {
        let rules =
            hoop_policy::RuleSet::configured(&section.default_rules, rules).map_err(|e| {
                let key = if e.field.starts_with("policy.") {
                    "policy.default_rules"
                } else {
                    "rules"
                };
                invalid(key, e.to_string())
            })?;
        let strategy: hoop_common::mask::Strategy = match &section.content_strategy {
            None => hoop_common::mask::Strategy::PanLast4,
            Some(name) => name.parse().map_err(|_| {
                invalid(
                    "policy.content_strategy",
                    format!(
                        "unknown strategy {name:?} (pan_last4, pan_bin_last4, pan_token, redact)"
                    ),
                )
            })?,
        };
        let token_key = match &section.token_key {
            Some(secret) => Some(
                secret
                    .relative_to(base)
                    .resolve("policy.token_key")?
                    .into_bytes(),
            ),
            None => None,
        };
        let content_masker = hoop_common::mask::Masker::new(strategy, token_key.as_deref())
            .map_err(|e| invalid("policy.token_key", e.to_string()))?;
        Ok(Policy {
            rules: std::sync::Arc::new(rules),
            content_masker,
            token_key: token_key.map(std::sync::Arc::from),
        })
    }
}

fn check_issuer_url(issuer: &str) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(issuer)
        .map_err(|e| invalid("identity.issuer", format!("{issuer:?} is not a URL: {e}")))?;
    let loopback = matches!(
        url.host_str(),
        Some("localhost") | Some("127.0.0.1") | Some("[::1]")
    );
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid(
            "identity.issuer",
            format!("{issuer:?} must be https:// (plain http only on loopback)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn sample(dir: &Path) -> String {
        write(dir, "pw", "secret\n");
        write(
            dir,
            "seed",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        );
        r#"
[listen]
address = "127.0.0.1:6432"
allow_plaintext = "loopback"
[upstream]
host = "127.0.0.1"
user = "hoop_gateway"
password = { file = "pw" }
[identity]
audience = "hoop"
[identity.dev_issuer]
key_file = "seed"
[[role_mapping]]
group = "fraud-agents"
role = "fraud_agent"
[session]
signing_key = { file = "seed" }
key_id = "k1"
"#
        .to_owned()
    }

    /// A scratch directory, removed when the test ends.
    fn tempdir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("hoop-config-{name}-"))
            .tempdir()
            .unwrap()
    }

    #[test]
    fn a_valid_file_loads_with_secrets_from_files() {
        let scratch = tempdir("ok");
        let dir = scratch.path().to_path_buf();
        let text = sample(&dir);
        let cfg = Config::from_toml(&text, &dir.join("hoop.toml")).unwrap();
        assert_eq!(cfg.upstream.password, "secret");
        assert_eq!(cfg.upstream.port, 5432);
        assert!(matches!(cfg.identity.source, KeySource::DevIssuer));
        assert_eq!(
            cfg.role_for(&["x".into(), "fraud-agents".into()])
                .unwrap()
                .role,
            "fraud_agent"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let scratch = tempdir("bad");
        let dir = scratch.path().to_path_buf();
        let text = sample(&dir).replace("password = { file = \"pw\" }", "password = \"inline\"");
        let err = Config::from_toml(&text, &dir.join("hoop.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("password"), "{err}");

        let text = sample(&dir).replace("allow_plaintext = \"loopback\"", "");
        let err = Config::from_toml(&text, &dir.join("hoop.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.tls_cert_file"), "{err}");

        let text = sample(&dir).replace("pw\"", "missing-file\"");
        let err = Config::from_toml(&text, &dir.join("hoop.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream.password") && err.contains("missing-file"),
            "{err}"
        );
    }

    #[test]
    fn every_section_spells_secrets_one_way_and_names_the_key() {
        let scratch = tempdir("secrets");
        let dir = scratch.path().to_path_buf();
        let load = |extra: &str| {
            Config::from_toml(
                &format!("{}\n{extra}", sample(&dir)),
                &dir.join("hoop.toml"),
            )
        };
        for (old, new) in [
            ("[audit]\npassword_file = \"pw\"", "password = { file = "),
            ("[reviews]\npassword_env = \"PW\"", "password = { env = "),
            ("[reviews.webhook]\nurl_file = \"url\"", "url = { file = "),
        ] {
            let err = load(old).unwrap_err().to_string();
            assert!(err.contains(new), "{old}: {err}");
        }

        let cfg = load(
            "[audit]\nstore = \"postgres\"\nurl = \"host=127.0.0.1 dbname=a\"\n\
             password = { file = \"pw\" }\n\
             [reviews]\nstore = \"postgres\"\nurl = \"host=127.0.0.1 dbname=r\"\n\
             password = { file = \"pw\" }\n",
        )
        .unwrap();
        // Relative to the configuration file, like every other path.
        assert_eq!(
            cfg.audit.store.password,
            Some(SecretRef::file(dir.join("pw")))
        );
        assert_eq!(cfg.reviews.password, Some(SecretRef::file(dir.join("pw"))));

        let err = load("[audit]\ncheckpoint_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checkpoint_interval") && err.contains("\"soon\" is not a duration"),
            "{err}"
        );
        let err = load("[audit]\ncheckpoint_key = { env = \"HOOP_TEST_UNSET_CK\" }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`audit.checkpoint_key`"), "{err}");
        let err = load("[reviews]\nexpiry = \"1ms\"").unwrap_err().to_string();
        assert!(err.contains("`reviews.expiry`"), "{err}");
    }

    #[test]
    fn the_shipped_rules_are_configurable_and_misspellings_are_errors() {
        let scratch = tempdir("default-rules");
        let dir = scratch.path().to_path_buf();
        let text = format!(
            "{}\n[policy.default_rules]\ndisable = [\"block-role-commands\"]\n\
             [policy.default_rules.exempt]\nreview-dynamic-sql = [\"migrations\"]\n",
            sample(&dir)
        );
        let cfg = Config::from_toml(&text, &dir.join("hoop.toml")).unwrap();
        let names: Vec<&str> = cfg.policy.rules.names().collect();
        assert!(!names.contains(&"block-role-commands"), "{names:?}");
        assert!(names.contains(&"review-dynamic-sql"), "{names:?}");

        let text = format!(
            "{}\n[policy.default_rules]\ndisable = [\"block-role-comands\"]\n",
            sample(&dir)
        );
        let err = Config::from_toml(&text, &dir.join("hoop.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("policy.default_rules") && err.contains("block-role-comands"),
            "{err}"
        );

        let text = format!(
            "{}\n[policy.default_rules]\nenabled = false\n",
            sample(&dir)
        );
        let cfg = Config::from_toml(&text, &dir.join("hoop.toml")).unwrap();
        assert_eq!(cfg.policy.rules.names().count(), 0);

        let text = format!("{}\n[policy.default_rules]\nenable = false\n", sample(&dir));
        assert!(Config::from_toml(&text, &dir.join("hoop.toml")).is_err());
    }
}
