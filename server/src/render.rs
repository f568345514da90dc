//! Reports and histories as tables for people; `--json` prints them whole.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

/// The elements of a JSON array; none for anything else.
fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn amounts(value: &Value) -> String {
    let Some(map) = value.as_object() else {
        return "-".into();
    };
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(currency, minor)| {
            let exact = minor.to_string().parse::<i128>().ok();
            match (exact, domain::values::CurrencyCode::parse(currency)) {
                (Some(minor), Ok(code)) => format!("{} {currency}", code.format_minor(minor)),
                _ => format!("{minor} {currency} (minor units)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn owner(value: &Value) -> String {
    value.get("name").map_or("(no owner)".into(), text)
}

pub fn pipeline(report: &Value) -> String {
    let rows = items(&report["stages"])
        .map(|s| {
            vec![
                text(&s["stage"]),
                format!("{}%", s["probability_percent"]),
                text(&s["count"]),
                amounts(&s["amount"]),
                amounts(&s["weighted_amount"]),
                text(&s["average_days_in_stage"]),
            ]
        })
        .collect();
    let mut out = format!("Pipeline as of {}\n", text(&report["as_of"]));
    out += &table(
        &["stage", "win %", "deals", "amount", "weighted", "avg days in stage"],
        rows,
    );
    out += &format!(
        "\ntotal {} open deals: {} (weighted {})\nwon {}, lost {}, win rate {}\n",
        report["totals"]["count"],
        amounts(&report["totals"]["amount"]),
        amounts(&report["totals"]["weighted_amount"]),
        report["won"],
        report["lost"],
        percent(&report["win_rate"]),
    );
    let period = &report["period"];
    if period.is_object() {
        out += &format!(
            "from {} to {}: {} new, won {} ({}), lost {}, win rate {}, {} slipped\n",
            text(&period["from"]),
            text(&period["to"]),
            period["new"],
            period["won"],
            amounts(&period["won_amount"]),
            period["lost"],
            percent(&period["win_rate"]),
            period["slipped"],
        );
    }
    out + &rotting(&report["rotting_deals"])
}

/// A share from 0 to 1 as a whole percentage; "-" for none.
fn percent(share: &Value) -> String {
    share.as_f64().map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
}

fn rotting(deals: &Value) -> String {
    let rows: Vec<Vec<String>> = items(deals)
        .map(|d| {
            vec![
                text(&d["title"]),
                text(&d["stage"]),
                text(&d["days_in_stage"]),
                owner(&d["owner"]),
                text(&d["id"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no rotting deals\n".into();
    }
    format!(
        "rotting deals:\n{}\n",
        table(&["deal", "stage", "days", "owner", "id"], rows)
    )
}

fn clock_list(title: &str, entries: &Value) -> String {
    let rows: Vec<Vec<String>> = items(entries)
        .map(|e| {
            vec![
                text(&e["kind"]),
                text(&e["name"]),
                owner(&e["owner"]),
                text(&e["reason"]),
                format!(
                    "{} #{}",
                    text(&e["clock_reset_by"]["type"]),
                    e["clock_reset_by"]["position"]
                ),
            ]
        })
        .collect();
    if rows.is_empty() {
        return format!("{title}: none\n");
    }
    format!(
        "{title}:\n{}\n",
        table(&["kind", "name", "owner", "why", "clock last reset by"], rows)
    )
}

pub fn data_quality(report: &Value) -> String {
    let s = &report["summary"];
    let mut out = format!(
        "Data quality as of {} ({} records): {} stale, {} never updated, {} incomplete, {} duplicate groups, {} rotting deals\n",
        text(&report["as_of"]),
        s["records"],
        s["stale"],
        s["never_updated"],
        s["incomplete"],
        s["duplicate_groups"],
        s["rotting_deals"]
    );
    out += &clock_list("stale", &report["stale"]);
    out += &clock_list("never updated", &report["never_updated"]);
    out += &incomplete(&report["incomplete"]);
    out += &duplicates(&report["duplicates"]);
    out += &rotting(&report["rotting_deals"]);
    for (list, total) in [
        ("stale", &s["stale"]),
        ("never_updated", &s["never_updated"]),
        ("incomplete", &s["incomplete"]),
        ("duplicates", &s["duplicate_groups"]),
        ("rotting_deals", &s["rotting_deals"]),
    ] {
        if let Some(cursor) = report["next_cursors"][list].as_str() {
            out += &format!(
                "{list}: {} shown of {total}; more with --list {list} --cursor {cursor}\n",
                items(&report[list]).count()
            );
        }
    }
    out
}

fn incomplete(entries: &Value) -> String {
    let rows: Vec<Vec<String>> = items(entries)
        .map(|e| {
            vec![
                text(&e["kind"]),
                text(&e["name"]),
                owner(&e["owner"]),
                text(&e["reason"]),
                text(&e["completeness"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "incomplete: none\n".into();
    }
    format!(
        "incomplete:\n{}\n",
        table(&["kind", "name", "owner", "why", "completeness"], rows)
    )
}

fn duplicates(groups: &Value) -> String {
    let mut out = String::new();
    for group in items(groups) {
        let names: Vec<String> = items(&group["records"]).map(|r| text(&r["name"])).collect();
        out += &format!(
            "duplicates ({}: {}): {}\n",
            text(&group["reason"]),
            text(&group["key"]),
            names.join(", ")
        );
    }
    out
}

/// One page of one data-quality list, and where the next starts.
pub fn quality_list(page: &Value) -> String {
    let items_of = &page["items"];
    let mut out = match page["list"].as_str() {
        Some("incomplete") => incomplete(items_of),
        Some("duplicates") => duplicates(items_of),
        Some("rotting_deals") => rotting(items_of),
        _ => clock_list(&text(&page["list"]), items_of),
    };
    out += &format!("{} shown of {}", items(items_of).count(), page["total"]);
    match page["next_cursor"].as_str() {
        Some(cursor) => out + &format!("; next page: --cursor {cursor}\n"),
        None => out + "\n",
    }
}

pub fn neglected_accounts(report: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&report["accounts"])
        .map(|a| {
            let departments: Vec<String> = items(&a["departments"])
                .map(|d| match d["days_since"].as_i64() {
                    Some(days) => format!("{} {}x, {days}d ago", text(&d["department"]), d["interactions"]),
                    None => format!("{} never", text(&d["department"])),
                })
                .collect();
            vec![
                text(&a["name"]),
                owner(&a["owner"]),
                text(&a["reason"]),
                departments.join("; "),
            ]
        })
        .collect();
    let mut out = format!(
        "Neglected accounts as of {} (no call, email or meeting{} for {} days): {}\n{}",
        text(&report["as_of"]),
        report["not_touched_by"]
            .as_str()
            .map(|d| format!(" by {d}"))
            .unwrap_or_default(),
        report["days"],
        report["total"],
        table(
            &["account", "owner", "why", "calls, emails and meetings per department"],
            rows
        )
    );
    if let Some(cursor) = report["next_cursor"].as_str() {
        out += &format!("\nnext page: --cursor {cursor}");
    }
    out
}

pub fn owners(report: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&report["owners"])
        .map(|o| {
            vec![
                owner(&o["owner"]),
                text(&o["owner"]["department"]),
                text(&o["records_owned"]),
                text(&o["stale"]),
                text(&o["never_updated"]),
                text(&o["last_activity_at"]),
            ]
        })
        .collect();
    let unowned = &report["unowned"];
    format!(
        "Owners as of {}\n{}\nunowned: {} records, {} stale, {} never updated\n",
        text(&report["as_of"]),
        table(
            &[
                "owner",
                "department",
                "records",
                "stale",
                "never updated",
                "last activity"
            ],
            rows
        ),
        unowned["records"],
        unowned["stale"],
        unowned["never_updated"]
    )
}

/// Display names by id (people, accounts) for the values a table shows.
pub type Names = std::collections::BTreeMap<String, String>;

/// An entry's changes, a field a line: `field: from → to`.
fn changes(entry: &Value, names: &Names) -> String {
    let lines: Vec<String> = entry["changes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(field, change)| {
            format!(
                "{field}: {} → {}",
                readable(&change["from"], names),
                readable(&change["to"], names)
            )
        })
        .collect();
    lines.join("\n")
}

/// Who acted: name (department).
fn who(entry: &Value) -> String {
    format!(
        "{} ({})",
        text(&entry["actor"]["name"]),
        text(&entry["actor"]["department"])
    )
}

pub fn history(entries: &Value, names: &Names) -> String {
    let rows: Vec<Vec<String>> = items(entries)
        .map(|e| {
            vec![
                text(&e["position"]),
                text(&e["occurred_at"]),
                who(e),
                text(&e["type"]),
                changes(e, names),
            ]
        })
        .collect();
    table(&["position", "occurred at", "by", "event", "changes"], rows)
}

/// An audit page: when it happened and when it was recorded, who, on what
/// record, and what changed.
pub fn audit(page: &Value, names: &Names) -> String {
    let rows: Vec<Vec<String>> = items(&page["items"])
        .map(|e| {
            vec![
                text(&e["position"]),
                text(&e["occurred_at"]),
                text(&e["recorded_at"]),
                who(e),
                text(&e["stream_id"]),
                text(&e["type"]),
                changes(e, names),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "position",
            "occurred at",
            "recorded at",
            "by",
            "record",
            "event",
            "changes",
        ],
        rows,
    );
    if let Some(next) = page["next_cursor"].as_u64() {
        out.push_str(&format!("\nmore: --after {next}"));
    }
    out
}

/// A value as people read it: an amount with its currency, a list joined,
/// an id by the name `names` has for it.
fn readable(value: &Value, names: &Names) -> String {
    match value {
        Value::Object(map) if map.contains_key("value_minor") && map.contains_key("currency") => {
            let currency = map["currency"].as_str().unwrap_or("?");
            amounts(&serde_json::json!({ currency: map["value_minor"] }))
        }
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(|i| readable(i, names)).collect::<Vec<_>>().join(", "),
        Value::String(s) => names.get(s).cloned().unwrap_or_else(|| s.clone()),
        Value::Object(map) if map.is_empty() => "-".into(),
        other => text(other),
    }
}

/// One record's view, a field a row; ids of people and the account by name.
pub fn record(view: &Value, names: &Names) -> String {
    let rows = view
        .as_object()
        .into_iter()
        .flatten()
        .map(|(field, value)| vec![field.clone(), readable(value, names)])
        .collect();
    table(&["field", "value"], rows)
}

/// A timeline, newest first: changes and interactions.
pub fn timeline(items_: &Value, names: &Names) -> String {
    let rows: Vec<Vec<String>> = items(items_)
        .map(|e| {
            let what = match e["item"].as_str() {
                Some("interaction") => format!(
                    "{} ({}): {}",
                    text(&e["kind"]),
                    text(&e["direction"]),
                    text(&e["summary"])
                ),
                _ => format!("{}\n{}", text(&e["type"]), changes(e, names)),
            };
            vec![text(&e["occurred_at"]), who(e), what]
        })
        .collect();
    table(&["occurred at", "by", "what"], rows)
}
