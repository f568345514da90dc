//! Which of a file's columns feed which field. A column named like a field
//! (in any case, with spaces for underscores: `Email`, `Lifecycle Stage`)
//! feeds it; a file another system wrote names its columns its own way, and
//! a mapping says what they mean:
//!
//! ```text
//! # one entry per line or comma-separated; `#` starts a comment line
//! First Name+Last Name = name      # cells joined by a space
//! Company Name = account           # an account by id, external id, name or domain
//! Contact owner = owner            # a user by id, email or name
//! Record ID = external_id
//! Marketing emails opened =        # left out on purpose
//! stage: Closed Won = won          # a value of a field, translated
//! @amount_currency = USD           # a field's value where a row has none
//! @date_format = %m/%d/%Y          # dates written another way than ISO 8601
//! ```
//!
//! With a mapping, the columns it does not name and no field matches are
//! left out and listed in the report (an export holds far more than a CRM
//! record); without one, such a column refuses the file, so that a typo in
//! a header is not a silent loss.

use domain::RecordKind;
use serde::Serialize;

use super::columns as export_columns;

/// What a mapping names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Source columns (joined by a space) and the field they feed; no
    /// field leaves them out.
    columns: Vec<(Vec<String>, Option<String>)>,
    /// A field's value as the other system writes it, and ours.
    values: Vec<(String, String, String)>,
    /// A field's value where a row's cell is empty or the file has none.
    defaults: Vec<(String, String)>,
    date_format: Option<String>,
}

impl Mapping {
    /// Reads `--map` text or a mapping file (the syntax in the module docs).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut mapping = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.split(" #").next().unwrap_or(line);
            for entry in line.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                mapping.add(entry)?;
            }
        }
        Ok(mapping)
    }

    /// This mapping followed by `other`'s entries.
    pub fn and(mut self, other: Self) -> Self {
        self.columns.extend(other.columns);
        self.values.extend(other.values);
        self.defaults.extend(other.defaults);
        self.date_format = other.date_format.or(self.date_format);
        self
    }

    fn add(&mut self, entry: &str) -> Result<(), String> {
        let (left, right) = entry
            .rsplit_once('=')
            .ok_or_else(|| format!("mapping entry {entry:?} is not COLUMN=FIELD"))?;
        let (left, right) = (left.trim(), right.trim());
        if left == "@date_format" {
            if right.is_empty() {
                return Err("@date_format needs a format such as %m/%d/%Y".into());
            }
            self.date_format = Some(right.to_owned());
            return Ok(());
        }
        if let Some(field) = left.strip_prefix('@') {
            if !is_field_name(field) || right.is_empty() {
                return Err(format!("mapping entry {entry:?} is not @field=value"));
            }
            self.defaults.push((field.to_owned(), right.to_owned()));
            return Ok(());
        }
        if let Some((field, value)) = left.split_once(':')
            && is_field_name(field.trim())
        {
            self.values
                .push((field.trim().to_owned(), value.trim().to_owned(), right.to_owned()));
            return Ok(());
        }
        let sources: Vec<String> = left.split('+').map(|s| s.trim().to_owned()).collect();
        if sources.iter().any(String::is_empty) {
            return Err(format!("mapping entry {entry:?} names an empty column"));
        }
        self.columns
            .push((sources, (!right.is_empty()).then(|| right.to_owned())));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.values.is_empty() && self.defaults.is_empty()
    }
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The fields an import of `kind` takes beyond those it exports: references
/// by another system's ids or by name, and what a previous system knew.
fn import_only(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Contact => &["account_external_id", "account", "owner", "last_activity_at"],
        RecordKind::Account => &["owner", "last_activity_at"],
        RecordKind::Deal => &[
            "account_external_id",
            "account",
            "contacts",
            "owner",
            "amount",
            "last_activity_at",
            "closed_at",
        ],
        RecordKind::Interaction => &[
            "contact_external_id",
            "account_external_id",
            "deal_external_id",
            "contact",
            "account",
            "deal",
            "actor",
        ],
        RecordKind::User => &[],
    }
}

/// Every field a file of `kind` may feed.
pub fn fields(kind: RecordKind) -> impl Iterator<Item = &'static str> {
    export_columns(kind).iter().chain(import_only(kind)).copied()
}

/// A header name as a field would be named: `Lifecycle Stage` is
/// `lifecycle_stage`.
fn as_field(header: &str) -> String {
    header
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

/// Why a file's header was refused, with what was and was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderProblem {
    pub message: String,
    /// Columns of the file that feed a field (`column -> field`).
    pub understood: Vec<String>,
    /// Columns of the file no field matches.
    pub not_understood: Vec<String>,
}

/// How each row of one file becomes cells by field name.
#[derive(Debug, Clone)]
pub struct Plan {
    fields: Vec<(String, Vec<usize>)>,
    values: Vec<(String, String, String)>,
    defaults: Vec<(String, String)>,
    pub date_format: Option<String>,
    /// Columns left out: named so by the mapping, or matching nothing.
    pub ignored: Vec<String>,
}

impl Plan {
    /// Checks `header` against the fields of `kind` and the mapping.
    pub fn new(kind: RecordKind, header: &[String], mapping: &Mapping) -> Result<Self, HeaderProblem> {
        let header: Vec<&str> = header.iter().map(|h| h.trim_start_matches('\u{feff}').trim()).collect();
        let known: Vec<&str> = fields(kind).collect();
        let mut used = vec![false; header.len()];
        let mut plan = Self {
            fields: Vec::new(),
            values: mapping.values.clone(),
            defaults: mapping.defaults.clone(),
            date_format: mapping.date_format.clone(),
            ignored: Vec::new(),
        };
        let mut understood = Vec::new();
        let problem = |message: String, understood: &[String]| HeaderProblem {
            message,
            understood: understood.to_vec(),
            not_understood: Vec::new(),
        };
        if let Some((field, _)) = mapping.defaults.iter().find(|(f, _)| !known.contains(&f.as_str())) {
            return Err(problem(
                format!("the mapping sets {field:?}, which is not a field of a {kind}"),
                &understood,
            ));
        }
        for (sources, target) in &mapping.columns {
            let mut indices = Vec::with_capacity(sources.len());
            for source in sources {
                let found = header
                    .iter()
                    .position(|h| h == source)
                    .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(source)));
                let Some(index) = found else {
                    return Err(problem(
                        format!("the mapping names the column {source:?}, which the file does not have"),
                        &understood,
                    ));
                };
                used[index] = true;
                indices.push(index);
            }
            let Some(target) = target else {
                plan.ignored.extend(indices.iter().map(|&i| header[i].to_owned()));
                continue;
            };
            if !known.contains(&target.as_str()) {
                return Err(problem(
                    format!(
                        "the mapping feeds {target:?}, which is not a field of a {kind}; its fields are {}",
                        known.join(", ")
                    ),
                    &understood,
                ));
            }
            if plan.fields.iter().any(|(field, _)| field == target) {
                return Err(problem(format!("the mapping feeds {target:?} twice"), &understood));
            }
            understood.push(format!("{} -> {target}", sources.join("+")));
            plan.fields.push((target.clone(), indices));
        }
        let mut not_understood = Vec::new();
        for (index, name) in header.iter().enumerate().filter(|(i, _)| !used[*i]) {
            let field = as_field(name);
            if known.contains(&field.as_str()) && !plan.fields.iter().any(|(f, _)| *f == field) {
                understood.push(if *name == field {
                    field.clone()
                } else {
                    format!("{name} -> {field}")
                });
                plan.fields.push((field, vec![index]));
            } else {
                not_understood.push((*name).to_owned());
            }
        }
        let refuse = |message: String| HeaderProblem {
            message,
            understood: understood.clone(),
            not_understood: not_understood.clone(),
        };
        if plan.fields.is_empty() {
            return Err(refuse(format!(
                "no column of the file is a field of a {kind} (is it CSV with a header row?); its fields are {}",
                known.join(", ")
            )));
        }
        if !not_understood.is_empty() && mapping.columns.is_empty() {
            return Err(refuse(format!(
                "the file has columns that are not fields of a {kind}: {}; name what they hold with a mapping \
                 (--map \"Column=field\", or \"Column=\" to leave one out)",
                not_understood.join(", ")
            )));
        }
        plan.ignored.extend(not_understood);
        Ok(plan)
    }

    /// A row's cells by field: sources joined by a space, values translated.
    pub fn cells(&self, record: &csv::StringRecord) -> Vec<(String, String)> {
        let mut cells: Vec<(String, String)> = self
            .fields
            .iter()
            .map(|(field, indices)| {
                let mut value = String::new();
                for cell in indices.iter().filter_map(|&i| record.get(i)).filter(|c| !c.is_empty()) {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(cell);
                }
                let translated = self
                    .values
                    .iter()
                    .find(|(f, from, _)| f == field && from.eq_ignore_ascii_case(&value))
                    .map(|(_, _, to)| to.clone());
                (field.clone(), translated.unwrap_or(value))
            })
            .collect();
        for (field, value) in &self.defaults {
            match cells.iter_mut().find(|(f, _)| f == field) {
                Some((_, cell)) if cell.is_empty() => cell.clone_from(value),
                Some(_) => {}
                None => cells.push((field.clone(), value.clone())),
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn columns_named_like_fields_feed_them_in_any_case() {
        let plan = Plan::new(
            RecordKind::Contact,
            &header(&["\u{feff}Name", "E-mail", "Lifecycle Stage"]),
            &Mapping::default(),
        );
        let problem = plan.expect_err("E-mail is not email");
        assert_eq!(problem.not_understood, ["E-mail"]);
        assert_eq!(
            problem.understood,
            ["Name -> name", "Lifecycle Stage -> lifecycle_stage"]
        );
        let plan = Plan::new(RecordKind::Contact, &header(&["Name", "Email"]), &Mapping::default()).expect("known");
        let row = csv::StringRecord::from(vec!["Ada", "ada@example.com"]);
        assert_eq!(
            plan.cells(&row),
            [
                ("name".to_owned(), "Ada".to_owned()),
                ("email".to_owned(), "ada@example.com".to_owned())
            ]
        );
    }

    #[test]
    fn a_mapping_joins_translates_and_leaves_out() {
        let mapping = Mapping::parse(
            "# HubSpot\nFirst Name+Last Name=name, Email=email\nNotes=\nlifecycle_stage: Sales Qualified Lead=lead\n\
             Lifecycle Stage=lifecycle_stage\n@title = Buyer  # where none is given",
        )
        .expect("parses");
        let plan = Plan::new(
            RecordKind::Contact,
            &header(&["First Name", "Last Name", "Email", "Notes", "Lifecycle Stage", "Fax"]),
            &mapping,
        )
        .expect("mapped");
        assert_eq!(plan.ignored, ["Notes", "Fax"]);
        let row = csv::StringRecord::from(vec![
            "Ada",
            "Lovelace",
            "ada@example.com",
            "x",
            "sales qualified lead",
            "1",
        ]);
        let cells = plan.cells(&row);
        assert_eq!(cells[0], ("name".to_owned(), "Ada Lovelace".to_owned()));
        assert_eq!(cells[2], ("lifecycle_stage".to_owned(), "lead".to_owned()));
        assert_eq!(cells[3], ("title".to_owned(), "Buyer".to_owned()));
    }

    #[test]
    fn a_header_that_holds_no_field_is_refused_with_its_columns() {
        let problem = Plan::new(RecordKind::Deal, &header(&["{\"json\": true}"]), &Mapping::default())
            .expect_err("not a deal file");
        assert!(problem.message.contains("no column"), "{}", problem.message);
        assert_eq!(problem.not_understood, ["{\"json\": true}"]);
        let missing = Plan::new(
            RecordKind::Deal,
            &header(&["title"]),
            &Mapping::parse("Deal Name=title").expect("parses"),
        )
        .expect_err("no such column");
        assert!(missing.message.contains("\"Deal Name\""), "{}", missing.message);
        let unknown = Mapping::parse("title=headline").expect("parses");
        let problem = Plan::new(RecordKind::Deal, &header(&["title"]), &unknown).expect_err("no such field");
        assert!(problem.message.contains("\"headline\""), "{}", problem.message);
        assert!(Mapping::parse("just a column").is_err());
    }
}
