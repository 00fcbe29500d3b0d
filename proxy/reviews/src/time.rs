//! Wall-clock instants as reviews carry them: RFC 3339 (UTC, milliseconds)
//! in JSON, `SystemTime` in code, so every gateway sharing a store agrees.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, shown as `2025-01-31T12:00:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }

    /// Truncated to whole milliseconds, the precision the text form keeps,
    /// so a value read back from JSON compares equal to the one written.
    pub fn now_millis() -> Timestamp {
        let now = SystemTime::now();
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let millis = Duration::from_millis(since.as_millis() as u64);
        Timestamp(SystemTime::UNIX_EPOCH + millis)
    }

    pub fn plus(self, duration: Duration) -> Timestamp {
        Timestamp(self.0 + duration)
    }

    /// How long from now until this instant; zero when it has passed.
    pub fn remaining(self) -> Duration {
        self.0
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    pub fn has_passed(self) -> bool {
        SystemTime::now() >= self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(Timestamp)
            .map_err(|e| serde::de::Error::custom(format!("timestamp {text:?}: {e}")))
    }
}

/// Parses a human duration such as `30m`, `5m`, `90s` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as \"30m\" or \"90s\": {e}"))
}

/// Formats a duration the way the configuration writes it (`5m`, `1h 30m`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs().max(1))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let now = Timestamp::now_millis();
        let text = serde_json::to_string(&now).expect("serializes");
        assert!(text.ends_with("Z\""), "{text}");
        let back: Timestamp = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, now);
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
    }
}
