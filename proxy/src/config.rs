//! The gateway's TOML configuration. Secrets (the upstream password, signing
//! keys) are never written inline: each is read from a file or an environment
//! variable. Every mistake is reported with the key it concerns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    /// A section checked by its own crate; the text names the key.
    #[error("{0}")]
    Section(String),
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// A duration written as text, e.g. `"30s"`, `"15m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// A secret's source: exactly one of a file path or an environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

impl SecretRef {
    pub(crate) fn resolve(&self, key: &'static str, base: &Path) -> Result<String, ConfigError> {
        match (&self.file, &self.env) {
            (Some(file), None) => {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
                let text = text.trim_end_matches(['\n', '\r']).to_owned();
                if text.is_empty() {
                    return Err(invalid(key, format!("{} is empty", path.display())));
                }
                Ok(text)
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(invalid(
                    key,
                    format!("environment variable {var} is not set or empty"),
                )),
            },
            (Some(_), Some(_)) => Err(invalid(key, "set either `file` or `env`, not both")),
            (None, None) => Err(invalid(
                key,
                "missing: give `file = \"...\"` or `env = \"VAR\"`",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlaintextPolicy {
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
    pub allow_plaintext: PlaintextPolicy,
    pub max_message_bytes: Option<usize>,
    /// Failed logins allowed per source address within `failed_login_window`.
    pub max_failed_logins: Option<u32>,
    pub failed_login_window: Option<HumanDuration>,
    /// How long in-flight statements may run after SIGTERM/SIGINT.
    pub shutdown_grace: Option<HumanDuration>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
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
    identity: IdentitySection,
    #[serde(default)]
    role_mapping: Vec<RoleMapping>,
    session: SessionSection,
    admin: Option<AdminSection>,
    /// `[reviews]`: hoop-reviews' own keys (`approver_groups` is accepted
    /// as another name for `reviewer_group`).
    #[serde(default)]
    reviews: hoop_reviews::ReviewsConfig,
    /// `[audit]`: read by [`crate::audit::settings_from_toml`].
    audit: Option<toml::Table>,
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
    pub allow_plaintext: PlaintextPolicy,
    pub max_message_bytes: usize,
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
    pub shutdown_grace: Duration,
    pub upstream: Upstream,
    pub identity: Identity,
    pub role_mapping: Vec<RoleMapping>,
    pub session_key_id: String,
    pub session_signing_seed: String,
    pub admin: Option<SocketAddr>,
    pub reviews: hoop_reviews::ReviewsConfig,
    /// `[audit]`: the store and the checkpoint signing key.
    pub audit: crate::audit::AuditSettings,
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

#[derive(Debug, Clone)]
pub struct Identity {
    pub source: KeySource,
    pub audience: String,
    pub groups_claim: Vec<String>,
    pub leeway: Duration,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub jwks_min_refresh_interval: Duration,
    pub jwks_max_age: Duration,
    pub dev_issuer: Option<DevIssuer>,
}

impl Identity {
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
        let rel = |p: &PathBuf| base.join(p);

        let listen: SocketAddr = raw
            .listen
            .address
            .parse()
            .map_err(|e| invalid("listen.address", format!("{:?}: {e}", raw.listen.address)))?;
        let tls = match (&raw.listen.tls_cert_file, &raw.listen.tls_key_file) {
            (Some(c), Some(k)) => {
                for (key, p) in [("listen.tls_cert_file", c), ("listen.tls_key_file", k)] {
                    if !rel(p).is_file() {
                        return Err(invalid(key, format!("{} does not exist", rel(p).display())));
                    }
                }
                Some((rel(c), rel(k)))
            }
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
        if tls.is_none() && raw.listen.allow_plaintext == PlaintextPolicy::Never {
            return Err(invalid(
                "listen.tls_cert_file",
                "required: clients send their token as a password, so TLS is on by default \
                 (set listen.allow_plaintext = \"loopback\" only for local development)",
            ));
        }
        let max_message_bytes = raw
            .listen
            .max_message_bytes
            .unwrap_or(crate::protocol::DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 1024 {
            return Err(invalid("listen.max_message_bytes", "must be at least 1024"));
        }

        let up = raw.upstream;
        if up.host.is_empty() {
            return Err(invalid("upstream.host", "must not be empty"));
        }
        if up.user.is_empty() {
            return Err(invalid("upstream.user", "must not be empty"));
        }
        let password = up.password.resolve("upstream.password", &base)?;
        if up.tls == UpstreamTls::VerifyFull {
            if let Some(ca) = &up.tls_ca_file {
                if !rel(ca).is_file() {
                    return Err(invalid(
                        "upstream.tls_ca_file",
                        format!("{} does not exist", rel(ca).display()),
                    ));
                }
            }
        }
        let upstream = Upstream {
            host: up.host,
            port: up.port.unwrap_or(5432),
            user: up.user,
            password,
            databases: up.databases,
            tls: up.tls,
            tls_ca_file: up.tls_ca_file.as_ref().map(rel),
            connect_timeout: up
                .connect_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
        };

        let id = raw.identity;
        let dev_issuer = match &id.dev_issuer {
            Some(d) => {
                let seed = SecretRef {
                    file: Some(d.key_file.clone()),
                    env: None,
                }
                .resolve("identity.dev_issuer.key_file", &base)?;
                Some(DevIssuer {
                    issuer: d
                        .issuer
                        .clone()
                        .unwrap_or_else(|| DEFAULT_DEV_ISSUER.into()),
                    seed_base64: seed,
                    default_ttl: d
                        .default_ttl
                        .map(|t| t.0)
                        .unwrap_or(Duration::from_secs(900)),
                })
            }
            None => None,
        };
        let source = match (&id.issuer, &id.jwks_file, &dev_issuer) {
            (Some(issuer), None, _) => {
                check_issuer_url(issuer)?;
                KeySource::Oidc {
                    issuer: issuer.trim_end_matches('/').to_owned(),
                }
            }
            (None, Some(file), _) => {
                let issuer = id.expected_issuer.clone().ok_or_else(|| {
                    invalid(
                        "identity.expected_issuer",
                        "required with identity.jwks_file (the `iss` tokens must carry)",
                    )
                })?;
                if !rel(file).is_file() {
                    return Err(invalid(
                        "identity.jwks_file",
                        format!("{} does not exist", rel(file).display()),
                    ));
                }
                KeySource::JwksFile {
                    path: rel(file),
                    issuer,
                }
            }
            (None, None, Some(_)) => KeySource::DevIssuer,
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "identity.issuer",
                    "set either identity.issuer or identity.jwks_file, not both",
                ))
            }
            (None, None, None) => {
                return Err(invalid(
                    "identity.issuer",
                    "missing: set identity.issuer (OIDC), identity.jwks_file, or \
                     [identity.dev_issuer] for local development",
                ))
            }
        };
        if id.audience.is_empty() {
            return Err(invalid("identity.audience", "must not be empty"));
        }
        let groups_claim: Vec<String> = id.groups_claim.split('.').map(str::to_owned).collect();
        if groups_claim.iter().any(String::is_empty) {
            return Err(invalid(
                "identity.groups_claim",
                format!(
                    "{:?} is not a claim path like `groups` or `realm_access.roles`",
                    id.groups_claim
                ),
            ));
        }
        let algorithms = match &id.algorithms {
            None => ASYMMETRIC_ALGORITHMS.to_vec(),
            Some(names) => {
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
                out
            }
        };
        let identity = Identity {
            source,
            audience: id.audience,
            groups_claim,
            leeway: id.leeway.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
            algorithms,
            jwks_min_refresh_interval: id
                .jwks_min_refresh_interval
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
            jwks_max_age: id
                .jwks_max_age
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(600)),
            dev_issuer,
        };
        if identity.leeway > Duration::from_secs(300) {
            return Err(invalid("identity.leeway", "at most 5m"));
        }

        if raw.role_mapping.is_empty() {
            return Err(invalid(
                "role_mapping",
                "no [[role_mapping]] entries: nobody could log in",
            ));
        }
        for m in &raw.role_mapping {
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

        let session_signing_seed = raw
            .session
            .signing_key
            .resolve("session.signing_key", &base)?;
        if let Err(e) = hoop_common::token::SessionSigner::from_seed_base64(
            &raw.session.key_id,
            &session_signing_seed,
        ) {
            return Err(invalid("session.signing_key", e.to_string()));
        }
        if raw.session.key_id.is_empty() || raw.session.key_id.contains([':', ',', ' ']) {
            return Err(invalid(
                "session.key_id",
                "must be non-empty without ':', ',' or spaces",
            ));
        }
        let admin = match raw.admin {
            Some(a) => Some(
                a.address
                    .parse()
                    .map_err(|e| invalid("admin.address", format!("{:?}: {e}", a.address)))?,
            ),
            None => None,
        };
        let policy = Policy::from_raw(raw.rules, &raw.policy, &base)?;
        let audit = crate::audit::settings_from_toml(
            raw.audit,
            &base,
            &session_signing_seed,
            &raw.session.key_id,
        )?;
        let reviews = crate::reviews::settings(raw.reviews, &base)?;
        Ok(Config {
            path: path.to_owned(),
            listen,
            tls,
            allow_plaintext: raw.listen.allow_plaintext,
            max_message_bytes,
            max_failed_logins: raw.listen.max_failed_logins.unwrap_or(5),
            failed_login_window: raw
                .listen
                .failed_login_window
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(60)),
            shutdown_grace: raw
                .listen
                .shutdown_grace
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
            upstream,
            identity,
            role_mapping: raw.role_mapping,
            session_key_id: raw.session.key_id,
            session_signing_seed,
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
            Some(secret) => Some(secret.resolve("policy.token_key", base)?.into_bytes()),
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

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hoop-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_valid_file_loads_with_secrets_from_files() {
        let dir = tempdir("ok");
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
        let dir = tempdir("bad");
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
    fn the_shipped_rules_are_configurable_and_misspellings_are_errors() {
        let dir = tempdir("default-rules");
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
