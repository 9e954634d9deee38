//! Wall-clock times of silences and alerts: milliseconds since the epoch inside, RFC 3339
//! (UTC) on the wire and in files, as Alertmanager writes them.
//!
//! Owns the one parse and the one format; never reads a clock it is not asked to.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

pub fn now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn format(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

/// RFC 3339 in UTC (`Z`); an offset is refused rather than guessed.
pub fn parse(text: &str) -> Result<Millis, String> {
    let at = humantime::parse_rfc3339(text.trim()).map_err(|e| {
        let shown: String = text.chars().take(40).collect();
        format!("`{shown}` is not an RFC 3339 time in UTC, like 2026-12-01T10:00:00Z ({e})")
    })?;
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "a time before 1970".to_string())?;
    u64::try_from(since.as_millis()).map_err(|_| "a time too far ahead".to_string())
}

/// `#[serde(with = "rfc3339")]` for a `Millis` field.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Millis;

    pub fn serialize<S: Serializer>(at: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }

    /// For an `Option<Millis>` field (`null` or absent: none).
    pub mod optional {
        use serde::{Deserialize, Deserializer};

        use super::super::Millis;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => super::super::parse(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_utc_and_offsets_are_refused() {
        let at = parse("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(format(at), "2026-12-01T10:00:00.000Z");
        assert_eq!(parse(&format(at + 5)).unwrap(), at + 5);
        assert!(parse("2026-12-01T10:00:00+02:00").is_err());
        assert!(parse("tomorrow").is_err());
    }
}
