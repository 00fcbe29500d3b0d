//! The spelling every hoop configuration section shares: durations written
//! for people, secrets read from a file or an environment variable (never
//! inline), and errors that name the key a person has to edit.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration problem, naming the key to fix (`audit.checkpoint_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    pub problem: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration key `{}`: {}", self.key, self.problem)
    }
}

impl std::error::Error for KeyError {}

/// A duration written as text: `"30s"`, `"15m"`, `"1h 30m"`, `"400d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                format!("{text:?} is not a duration such as \"30s\", \"15m\" or \"1h\" ({e})")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where a secret is read from: `{ file = "path" }` (relative to the
/// configuration file) or `{ env = "VAR" }`, exactly one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl SecretRef {
    pub fn file(path: impl Into<PathBuf>) -> SecretRef {
        SecretRef {
            file: Some(path.into()),
            env: None,
        }
    }

    pub fn env(var: impl Into<String>) -> SecretRef {
        SecretRef {
            file: None,
            env: Some(var.into()),
        }
    }

    /// The same secret with a relative `file` taken from `base` (the
    /// configuration file's directory), for reading it later.
    pub fn relative_to(&self, base: &Path) -> SecretRef {
        SecretRef {
            file: self.file.as_ref().map(|f| base.join(f)),
            env: self.env.clone(),
        }
    }

    /// Reads the secret (a file loses its trailing line break); `key` names
    /// it in the error.
    pub fn resolve(&self, key: &str) -> Result<String, KeyError> {
        match (&self.file, &self.env) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    KeyError::new(key, format!("cannot read {}: {e}", path.display()))
                })?;
                let text = text.trim_end_matches(['\n', '\r']).to_owned();
                if text.is_empty() {
                    return Err(KeyError::new(key, format!("{} is empty", path.display())));
                }
                Ok(text)
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(KeyError::new(
                    key,
                    format!("environment variable {var} is not set or empty"),
                )),
            },
            (Some(_), Some(_)) => Err(KeyError::new(key, "set either `file` or `env`, not both")),
            (None, None) => Err(KeyError::new(
                key,
                "missing: give `file = \"...\"` or `env = \"VAR\"`",
            )),
        }
    }
}

/// For a key hoop no longer reads: refuses it, saying what to write
/// instead. Use as
/// `#[serde(default, rename = "password_file", deserialize_with = "…")] _old: Renamed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renamed;

macro_rules! refuse_old_spelling {
    ($(#[$doc:meta])* $name:ident, $old:literal, $new:literal) => {
        $(#[$doc])*
        pub fn $name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Renamed, D::Error> {
            serde::de::IgnoredAny::deserialize(deserializer)?;
            Err(serde::de::Error::custom(concat!(
                "`", $old, "` is no longer read: write `", $new, "`"
            )))
        }
    };
}

refuse_old_spelling!(
    /// `password_file = "…"` → `password = { file = "…" }`.
    refuse_password_file,
    "password_file",
    "password = { file = \"...\" }"
);
refuse_old_spelling!(
    /// `password_env = "…"` → `password = { env = "…" }`.
    refuse_password_env,
    "password_env",
    "password = { env = \"VAR\" }"
);
refuse_old_spelling!(
    /// `url_file = "…"` → `url = { file = "…" }`.
    refuse_url_file,
    "url_file",
    "url = { file = \"...\" }"
);
refuse_old_spelling!(
    /// `url_env = "…"` → `url = { env = "…" }`.
    refuse_url_env,
    "url_env",
    "url = { env = \"VAR\" }"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        password: Option<SecretRef>,
        #[serde(
            default,
            rename = "password_file",
            deserialize_with = "refuse_password_file"
        )]
        _password_file: Renamed,
        timeout: Option<HumanDuration>,
    }

    #[test]
    fn durations_parse_print_and_name_the_problem() {
        assert_eq!(
            HumanDuration::parse("15m"),
            Ok(HumanDuration(Duration::from_secs(900)))
        );
        assert_eq!(HumanDuration(Duration::from_secs(300)).to_string(), "5m");
        let err = HumanDuration::parse("soon").unwrap_err();
        assert!(err.contains("\"soon\" is not a duration"), "{err}");
    }

    #[test]
    fn the_old_spelling_is_refused_naming_the_new_one() {
        let err = serde_json::from_str::<Section>(r#"{"password_file": "pw"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("password = { file = "), "{err}");
        let ok: Section =
            serde_json::from_str(r#"{"password": {"env": "X"}, "timeout": "30s"}"#).unwrap();
        assert_eq!(ok.password, Some(SecretRef::env("X")));
        assert_eq!(ok.timeout, Some(HumanDuration(Duration::from_secs(30))));
    }

    #[test]
    fn secrets_come_from_exactly_one_source() {
        let both = SecretRef {
            file: Some("f".into()),
            env: Some("E".into()),
        };
        let err = both.resolve("upstream.password").unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration key `upstream.password`: set either `file` or `env`, not both"
        );
        let err = SecretRef::env("HOOP_TEST_SURELY_UNSET")
            .resolve("audit.password")
            .unwrap_err();
        assert_eq!(err.key, "audit.password");
        let dir = std::env::temp_dir().join(format!("hoop-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
        let secret = SecretRef::file("pw").relative_to(&dir);
        assert_eq!(secret.resolve("x").unwrap(), "s3cret");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
