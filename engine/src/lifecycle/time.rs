//! Wall-clock instants as the lifecycle sees them: milliseconds since the Unix epoch (UTC).
//!
//! The state machine never reads a clock; the runtime passes `now` in. Instants are stored
//! and shown as RFC 3339 strings (`2026-03-01T12:00:00.250Z`), the way BareMetalHost status
//! carries `lastUpdated`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// The system clock. Only the runtime calls this; the lifecycle takes time as input.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    #[must_use]
    pub fn plus(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Parses the RFC 3339 form this type writes (`YYYY-MM-DDTHH:MM:SS[.mmm]Z`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() < 20 || *bytes.last()? != b'Z' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u64> {
            let part = text.get(range)?;
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if separators.iter().any(|&(at, sep)| bytes[at] != sep) {
            return None;
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        let millis = match &bytes[19..bytes.len() - 1] {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                let fraction = number(20..20 + digits.len())?;
                // Keep milliseconds; finer digits are dropped.
                let scale = 10u64.pow(u32::try_from(digits.len()).ok()?);
                fraction * 1000 / scale
            }
            _ => return None,
        };
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        if second > 60 || year < 1970 {
            return None;
        }
        let days = days_from_civil(i64::try_from(year).ok()?, month, day);
        let seconds = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
        Some(Self(seconds * 1000 + millis))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::try_from(month).unwrap_or(1);
    let day = i64::try_from(day).unwrap_or(1);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 % 1000;
        let seconds = self.0 / 1000;
        let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
        let (year, month, day) = civil_from_days(days);
        let in_day = seconds % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            in_day / 3600,
            in_day % 3600 / 60,
            in_day % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an RFC 3339 UTC instant"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_772_366_400_250, "2026-03-01T12:00:00.250Z"),
            (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
        ];
        for (millis, text) in cases {
            let stamp = Timestamp::from_millis(millis);
            assert_eq!(stamp.to_string(), text);
            assert_eq!(Timestamp::parse_rfc3339(text), Some(stamp), "{text}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-03-01T12:00:00Z"),
            Some(Timestamp::from_millis(1_772_366_400_000))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-03-01T12:00:00.123456Z"),
            Some(Timestamp::from_millis(1_772_366_400_123))
        );
    }

    #[test]
    fn rejects_what_it_does_not_write() {
        for text in [
            "",
            "2026-03-01 12:00:00Z",
            "2026-03-01T12:00:00+01:00",
            "2026-13-01T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-03-01T12:00:00.Z",
            "20x6-03-01T12:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(text), None, "{text}");
        }
    }

    #[test]
    fn round_trips_through_serde() {
        let stamp = Timestamp::from_millis(1_700_000_000_123);
        let json = serde_json::to_string(&stamp).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), stamp);
    }

    #[test]
    fn arithmetic_saturates() {
        let stamp = Timestamp::from_millis(1000);
        assert_eq!(stamp.since(Timestamp::from_millis(4000)), Duration::ZERO);
        assert_eq!(stamp.plus(Duration::from_secs(1)).as_millis(), 2000);
        assert_eq!(
            Timestamp::from_millis(u64::MAX)
                .plus(Duration::MAX)
                .as_millis(),
            u64::MAX
        );
    }
}
