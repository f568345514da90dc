//! Times given by people, in query parameters and on the command line:
//! RFC 3339 (`2026-09-30T12:00:00Z`) or a date alone (`2026-09-30`, UTC),
//! which means the whole day: its first instant where a range starts
//! (`since`), its last where one ends (`until`, `as_of`).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Deserializer, de::Error};

fn parse(raw: &str, day_time: NaiveTime) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|day| day.and_time(day_time).and_utc())
        .map_err(|_| format!("{raw:?} is neither an RFC 3339 time (2026-09-30T12:00:00Z) nor a date (2026-09-30)"))
}

fn last_instant() -> NaiveTime {
    NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap_or(NaiveTime::MIN)
}

/// A time, or a date standing for its first instant.
pub fn parse_start(raw: &str) -> Result<DateTime<Utc>, String> {
    parse(raw, NaiveTime::MIN)
}

/// A time, or a date standing for its last instant (the whole day included).
pub fn parse_end(raw: &str) -> Result<DateTime<Utc>, String> {
    parse(raw, last_instant())
}

fn optional<'de, D: Deserializer<'de>>(
    d: D,
    parse: fn(&str) -> Result<DateTime<Utc>, String>,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|raw| parse(&raw).map_err(D::Error::custom))
        .transpose()
}

/// `#[serde(deserialize_with)]` for an optional parameter that starts a range.
pub fn start<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    optional(d, parse_start)
}

/// `#[serde(deserialize_with)]` for an optional parameter that ends a range.
pub fn end<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    optional(d, parse_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_means_the_whole_day_and_a_time_means_itself() {
        assert_eq!(
            parse_start("2026-09-30").map(|t| t.to_rfc3339()),
            Ok("2026-09-30T00:00:00+00:00".into())
        );
        assert_eq!(
            parse_end("2026-09-30").map(|t| t.to_rfc3339()),
            Ok("2026-09-30T23:59:59.999999+00:00".into())
        );
        assert_eq!(
            parse_end("2026-09-30T12:00:00+02:00").map(|t| t.to_rfc3339()),
            Ok("2026-09-30T10:00:00+00:00".into())
        );
        assert!(parse_end("30/09/2026").is_err());
        assert!(parse_start("2026-02-30").is_err());
    }
}
