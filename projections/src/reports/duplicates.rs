//! Duplicates: groups of live records sharing a normalised value (a
//! contact's email or phone, its name within one account; an account's
//! domain). Groups are rows of the duplicates table, which every write keeps
//! current, paged by (reason, value); their members are read for the page
//! only.

use std::fmt::Write as _;

use domain::RecordKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::query::{RecordRow, Sql, table_name};
use super::{Context, ListPage, OwnerRef, PageRequest, QualityList};
use crate::ProjectionError;
use crate::rows::kind_of_table;
use crate::schema::{ACCOUNTS, CONTACTS, DUPLICATES, Table};
use crate::sql::{Cell, Exec, Kind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateMember {
    pub kind: RecordKind,
    pub id: Uuid,
    pub name: String,
    pub owner: Option<OwnerRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateGroup {
    pub reason: String,
    /// The normalised value the records share.
    pub key: String,
    /// The group's records in id order, at most `MEMBERS_LISTED_MAX`.
    pub records: Vec<DuplicateMember>,
    /// More records share the value than `records` lists (a switchboard's
    /// phone number, a common name): the page stays the same size however
    /// large a group grows.
    #[serde(default)]
    pub more_records: bool,
    /// What would take the group off the list.
    pub clears_when: String,
}

/// What makes records duplicates: a reason, and the column holding the value.
struct Rule {
    reason: &'static str,
    table: &'static Table,
    column: &'static str,
    /// What a write that makes its record share the value is warned of.
    warning: &'static str,
}

/// In the order groups are listed.
const RULES: [Rule; 4] = [
    Rule {
        reason: "accounts with the same domain",
        table: &ACCOUNTS,
        column: "dup_domain",
        warning: "same domain",
    },
    Rule {
        reason: "same email",
        table: &CONTACTS,
        column: "dup_email",
        warning: "same email",
    },
    Rule {
        reason: "same name within one account",
        table: &CONTACTS,
        column: "dup_name",
        warning: "same name within one account",
    },
    Rule {
        reason: "same phone",
        table: &CONTACTS,
        column: "dup_phone",
        warning: "same phone",
    },
];

/// The rules of `table`: each one's column, and what a write that makes a
/// record share its value is warned of.
pub(crate) fn warnings(table: &str) -> Vec<(&'static str, &'static str)> {
    RULES
        .iter()
        .filter(|rule| rule.table.name == table)
        .map(|rule| (rule.column, rule.warning))
        .collect()
}

/// Where a page of groups starts: after this value of this rule.
struct GroupCursor {
    rule: usize,
    key: String,
}

impl GroupCursor {
    fn parse(cursor: &str) -> Result<Self, ProjectionError> {
        let bad = || ProjectionError::BadRequest(format!("cursor {cursor:?} is not one this list gave"));
        let (rule, key) = cursor.split_once('.').ok_or_else(bad)?;
        let rule: usize = rule.parse().map_err(|_| bad())?;
        if rule >= RULES.len() {
            return Err(bad());
        }
        Ok(Self {
            rule,
            key: key.to_owned(),
        })
    }
}

/// `FROM ... WHERE ...` of one rule's groups (kept in the duplicates
/// table as the rows change): values two live records share, at least one
/// of them in the scope.
fn groups_sql(sql: &mut Sql, context: &Context, rule: &Rule, after: Option<&str>) {
    let column = rule.column;
    let _ = write!(sql.text, " FROM {} g WHERE rule = '{column}'", table_name(&DUPLICATES));
    if let Some(after) = after {
        sql.push(" AND value > ");
        sql.bind(Cell::Text(Some(after.to_owned())));
    }
    if context.narrows_records() {
        // The scope's terms name the member's columns (`m`'s: the groups
        // table has none of theirs).
        let _ = write!(
            sql.text,
            " AND EXISTS (SELECT 1 FROM {} m WHERE m.{column} = g.value",
            table_name(rule.table)
        );
        context.scope(sql);
        sql.push(")");
    }
}

fn rules_in_scope(context: &Context) -> impl Iterator<Item = (usize, &'static Rule)> + '_ {
    RULES
        .iter()
        .enumerate()
        .filter(|(_, rule)| context.allows(kind_of_table(rule.table.name)))
}

pub(crate) async fn page(
    conn: &mut dyn Exec,
    context: &Context,
    page: &PageRequest,
) -> Result<ListPage<DuplicateGroup>, ProjectionError> {
    let cursor = page.cursor.as_deref().map(GroupCursor::parse).transpose()?;
    let mut groups = Vec::new();
    let mut total = 0;
    let mut last = None;
    for (n, rule) in rules_in_scope(context) {
        let mut counted = Sql::new(conn.dialect());
        counted.push("SELECT COUNT(*)");
        groups_sql(&mut counted, context, rule, None);
        total += counted.count(conn).await?;
        let remaining = page.limit - groups.len();
        let after = match &cursor {
            Some(c) if c.rule > n => continue,
            Some(c) if c.rule == n => Some(c.key.as_str()),
            _ => None,
        };
        if remaining == 0 {
            continue;
        }
        let keys = group_keys(conn, context, rule, after, remaining).await?;
        if let Some(key) = keys.last() {
            last = Some(format!("{n}.{key}"));
        }
        groups.extend(members(conn, context, rule, &keys).await?);
    }
    let next_cursor = (groups.len() == page.limit).then_some(last).flatten();
    Ok(ListPage {
        as_of: context.as_of,
        list: QualityList::Duplicates.name().to_owned(),
        total,
        items: groups,
        next_cursor,
    })
}

async fn group_keys(
    conn: &mut dyn Exec,
    context: &Context,
    rule: &Rule,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, ProjectionError> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT value");
    groups_sql(&mut sql, context, rule, after);
    let _ = write!(sql.text, " ORDER BY value LIMIT {limit}");
    let rows = sql.fetch(conn, &[Kind::Text]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().and_then(Cell::into_text))
        .collect())
}

/// The members a group lists, at most.
pub const MEMBERS_LISTED_MAX: usize = 50;

/// The groups of `keys`, each with its first live members in id order: a
/// statement per page, reading at most `MEMBERS_LISTED_MAX + 1` index
/// entries per group.
async fn members(
    conn: &mut dyn Exec,
    context: &Context,
    rule: &Rule,
    keys: &[String],
) -> Result<Vec<DuplicateGroup>, ProjectionError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(conn.dialect());
    let column = rule.column;
    let table = table_name(rule.table);
    for (n, key) in keys.iter().enumerate() {
        if n > 0 {
            sql.push(" UNION ALL ");
        }
        let _ = write!(
            sql.text,
            "SELECT * FROM (SELECT {column} AS value, id, view FROM {table} WHERE {column} = "
        );
        sql.bind(Cell::Text(Some(key.clone())));
        let _ = write!(sql.text, " ORDER BY id LIMIT {}) AS g{n}", MEMBERS_LISTED_MAX + 1);
    }
    let rows = sql.fetch(conn, &[Kind::Text, Kind::Text, Kind::Text]).await?;
    let mut groups: Vec<DuplicateGroup> = keys
        .iter()
        .map(|key| DuplicateGroup {
            reason: rule.reason.to_owned(),
            key: key.clone(),
            records: Vec::new(),
            more_records: false,
            clears_when: "archiving all but one of the records, or correcting the shared value on all but one".into(),
        })
        .collect();
    for row in rows {
        let mut cells = row.into_iter().map(Cell::into_text);
        let (key, id, view) = (
            cells.next().flatten().unwrap_or_default(),
            cells.next().flatten().unwrap_or_default(),
            cells.next().flatten().unwrap_or_default(),
        );
        let Some(group) = keys.iter().position(|k| *k == key).and_then(|at| groups.get_mut(at)) else {
            continue;
        };
        let record = RecordRow::decode(rule.table.name, &id, &view)?;
        group.records.push(DuplicateMember {
            kind: record.kind(),
            id: record.id(),
            name: record.name().to_owned(),
            owner: context.owner_ref(record.owner_id()),
        });
    }
    for group in &mut groups {
        group.records.sort_by_key(|member| member.id);
        group.more_records = group.records.len() > MEMBERS_LISTED_MAX;
        group.records.truncate(MEMBERS_LISTED_MAX);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::RULES;
    use crate::schema::DUPLICATE_COLUMNS;

    #[test]
    fn every_rule_reads_groups_the_writes_keep() {
        let kept: Vec<(&str, &str)> = DUPLICATE_COLUMNS.iter().map(|(t, c)| (t.name, *c)).collect();
        let read: Vec<(&str, &str)> = RULES.iter().map(|r| (r.table.name, r.column)).collect();
        assert_eq!(kept, read);
    }
}
