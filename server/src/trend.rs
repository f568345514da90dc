//! Trends: a report's summary figures at each date of a series, each exact
//! as of its date (`Projector::reports_over_time`). Shared by the HTTP API
//! (`/v1/reports/{report}/trend`) and the command line (`crm report ...
//! --every`).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use projections::reports::{PageRequest, ReportRequest};
use serde_json::{Map, Value};

/// Dates a trend answers at most (a year and a month of days).
pub const TREND_POINTS_MAX: usize = 400;

/// How long each period of a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Day,
    Week,
    Month,
}

impl Every {
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        match raw.unwrap_or("month") {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(format!("every={other:?}: one of day, week, month")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The first day of the period holding `day`.
    fn start(self, day: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => day,
            Self::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
            Self::Month => day.with_day(1).unwrap_or(day),
        }
    }

    /// The first day of the period after the one starting on `start`.
    fn next(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::Day => start.succ_opt(),
            Self::Week => start.checked_add_signed(Duration::days(7)),
            Self::Month => start.checked_add_months(chrono::Months::new(1)),
        }
    }
}

/// One date of a series: the period it closes, from its first instant (or
/// the series' `from`) to the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub period_start: DateTime<Utc>,
    pub as_of: DateTime<Utc>,
}

/// The points of a series: the end of each period from the one holding
/// `from` to the one holding `to`, the last cut at `to`.
pub fn series(from: DateTime<Utc>, to: DateTime<Utc>, every: Every) -> Result<Vec<Point>, String> {
    if to < from {
        return Err(format!("to ({to}) is before from ({from})"));
    }
    let mut points = Vec::new();
    let mut start = every.start(from.date_naive());
    while start.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).is_some_and(|t| t <= to) {
        let Some(next) = every.next(start) else { break };
        let period_start = start.and_time(chrono::NaiveTime::MIN).and_utc().max(from);
        let end = next.and_time(chrono::NaiveTime::MIN).and_utc() - Duration::microseconds(1);
        points.push(Point {
            period_start,
            as_of: end.min(to),
        });
        if points.len() > TREND_POINTS_MAX {
            return Err(format!(
                "the series has more than {TREND_POINTS_MAX} dates: take a longer period (every=week or month) or a shorter range"
            ));
        }
        start = next;
    }
    Ok(points)
}

/// The report `base` asks, as of one point of a series: the pipeline's
/// period figures count from the point's period start, and lists hold one
/// entry (the figures are counted whatever the page). A single list of the
/// data-quality report has no figures to follow.
pub fn at_point(base: &ReportRequest, point: &Point) -> Result<ReportRequest, String> {
    let page = PageRequest { cursor: None, limit: 1 };
    let mut request = base.clone();
    match &mut request {
        ReportRequest::Pipeline { page: p, from, .. } => {
            *p = page;
            *from = Some(point.period_start);
        }
        ReportRequest::DataQuality { page: p, .. } | ReportRequest::NeglectedAccounts { page: p, .. } => *p = page,
        ReportRequest::Owners { .. } => {}
        ReportRequest::QualityList { .. } => {
            return Err("a trend follows a whole report's figures, not one list: leave out the list".into());
        }
    }
    Ok(request)
}

/// The members of a report's answer that are figures, not entries.
fn figures(request: &ReportRequest) -> &'static [&'static str] {
    match request {
        ReportRequest::Pipeline { .. } => &[
            "totals",
            "stages",
            "won",
            "lost",
            "win_rate",
            "rotting_deals_total",
            "period",
        ],
        ReportRequest::DataQuality { .. } => &["summary"],
        ReportRequest::NeglectedAccounts { .. } => &["total"],
        ReportRequest::Owners { .. } => &["owners", "unowned"],
        ReportRequest::QualityList { .. } => &["total"],
    }
}

/// Each point with the figures of its answer: `{as_of, <figure>: ...}`.
pub fn points(asks: &[(DateTime<Utc>, ReportRequest)], answers: Vec<Value>) -> Vec<Value> {
    asks.iter()
        .zip(answers)
        .map(|((as_of, request), answer)| {
            let mut point = Map::new();
            point.insert("as_of".into(), serde_json::json!(as_of));
            for name in figures(request) {
                if let Some(value) = answer.get(*name) {
                    point.insert((*name).to_owned(), value.clone());
                }
            }
            Value::Object(point)
        })
        .collect()
}

/// The points as CSV: a row per date, a column per figure, named by its
/// path in the JSON (`totals.count`, `stages.proposal.amount.EUR`,
/// `owners.Ada Lovelace.stale`).
pub fn csv_of(points: &[Value]) -> Result<String, String> {
    let rows: Vec<Vec<(String, String)>> = points
        .iter()
        .map(|point| {
            let mut cells = Vec::new();
            flatten("", point, &mut cells);
            cells
        })
        .collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (name, _) in row {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| format!("the trend's CSV: {e}");
    writer.write_record(&columns).map_err(fail)?;
    for row in rows {
        let record = columns.iter().map(|column| {
            row.iter()
                .find(|(name, _)| name == column)
                .map(|(_, value)| value.as_str())
                .unwrap_or("")
        });
        writer.write_record(record).map_err(fail)?;
    }
    let bytes = writer.into_inner().map_err(|e| format!("the trend's CSV: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("the trend's CSV: {e}"))
}

fn flatten(prefix: &str, value: &Value, cells: &mut Vec<(String, String)>) {
    let join = |name: &str| match prefix {
        "" => name.to_owned(),
        _ => format!("{prefix}.{name}"),
    };
    match value {
        Value::Object(members) => {
            for (name, member) in members {
                flatten(&join(name), member, cells);
            }
        }
        Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                // An entry is named by what it is about: its stage or owner.
                let name = item["stage"]
                    .as_str()
                    .or(item["owner"]["name"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| n.to_string());
                let item = match item {
                    Value::Object(members) => {
                        let mut members = members.clone();
                        members.remove("stage");
                        Value::Object(members)
                    }
                    other => other.clone(),
                };
                flatten(&join(&name), &item, cells);
            }
        }
        Value::Null => cells.push((prefix.to_owned(), String::new())),
        Value::String(text) => cells.push((prefix.to_owned(), text.clone())),
        other => cells.push((prefix.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(raw: &str) -> DateTime<Utc> {
        crate::moment::parse_start(raw).unwrap_or_default()
    }

    #[test]
    fn a_series_ends_each_period_and_its_last_at_to() {
        let months = series(at("2026-01-15"), at("2026-03-10T12:00:00Z"), Every::Month).unwrap_or_default();
        let ends: Vec<String> = months.iter().map(|p| p.as_of.to_rfc3339()).collect();
        assert_eq!(
            ends,
            [
                "2026-01-31T23:59:59.999999+00:00",
                "2026-02-28T23:59:59.999999+00:00",
                "2026-03-10T12:00:00+00:00"
            ]
        );
        assert_eq!(
            months[0].period_start,
            at("2026-01-15"),
            "the first period starts at from"
        );
        assert_eq!(months[1].period_start, at("2026-02-01"));
        // 2026-03-04 is a Wednesday: its week runs from Monday 2 to Sunday 8.
        let weeks = series(at("2026-03-04"), at("2026-03-15"), Every::Week).unwrap_or_default();
        let ends: Vec<String> = weeks.iter().map(|p| p.as_of.date_naive().to_string()).collect();
        assert_eq!(ends, ["2026-03-08", "2026-03-15"]);
        assert_eq!(
            series(at("2026-01-01"), at("2026-01-03"), Every::Day).map(|p| p.len()),
            Ok(3)
        );
    }

    #[test]
    fn a_series_too_long_or_backwards_is_refused() {
        assert!(series(at("2020-01-01"), at("2026-01-01"), Every::Day).is_err());
        assert!(series(at("2020-01-01"), at("2026-01-01"), Every::Month).is_ok());
        assert!(series(at("2026-01-02"), at("2026-01-01"), Every::Day).is_err());
        assert!(Every::parse(Some("quarter")).is_err());
    }

    #[test]
    fn csv_names_entries_by_their_stage_or_owner() {
        let points = [json!({"as_of": "2026-01-31T23:59:59Z", "totals": {"count": 3},
            "stages": [{"stage": "lead", "count": 2}], "owners": [{"owner": {"name": "Ada"}, "stale": 1}]})];
        let csv = csv_of(&points).unwrap_or_default();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("as_of,owners.Ada.owner.name,owners.Ada.stale,stages.lead.count,totals.count")
        );
        assert_eq!(lines.next(), Some("2026-01-31T23:59:59Z,Ada,1,2,3"));
    }
}
