//! Wall-clock time as hoop records and shares it: microseconds since the
//! Unix epoch (what PostgreSQL's `timestamptz` keeps), written as RFC 3339
//! UTC in audit records, exports, reviews and the review API, so an auditor
//! reads it directly and a value read back compares equal to the one written.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, microsecond precision, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    pub const fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2024-05-01T12:00:00Z`, fractional seconds allowed).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
            .ok()
            .map(Timestamp::from)
    }

    pub fn saturating_sub(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(micros_of(duration)))
    }

    pub fn plus(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(micros_of(duration)))
    }

    /// How long from now until this instant; zero when it has passed.
    pub fn remaining(self) -> Duration {
        self.system_time()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    pub fn has_passed(self) -> bool {
        Timestamp::now() >= self
    }

    pub fn system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }
}

fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => {
                Timestamp(-i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX))
            }
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_micros(self.system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_to_the_microsecond() {
        let time = Timestamp::from_unix_micros(1_714_564_800_123_456);
        let text = time.to_string();
        assert_eq!(text, "2024-05-01T12:00:00.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&text), Some(time));
        assert_eq!(
            Timestamp::parse_rfc3339("2024-05-01T12:00:00Z"),
            Some(Timestamp::from_unix_micros(1_714_564_800_000_000))
        );
    }

    #[test]
    fn now_round_trips_through_json() {
        let now = Timestamp::now();
        let text = serde_json::to_string(&now).expect("serializes");
        assert!(text.ends_with("Z\""), "{text}");
        let back: Timestamp = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, now);
        assert!(!now.plus(Duration::from_secs(60)).has_passed());
        assert!(now.saturating_sub(Duration::from_secs(1)).has_passed());
    }
}
