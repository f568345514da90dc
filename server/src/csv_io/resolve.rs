//! References an import names the way the other system did: an account by
//! its name or domain, a contact by email, a user by email or name, any
//! record by its id or by the other system's id (`external_id`).
//!
//! A name must pick exactly one live record: none, or two accounts called
//! alike, refuse the row with the candidates named, never a guess. What was
//! found is remembered for the rest of the import (a file names the same
//! account on many rows), up to `REMEMBERED_MAX` answers.

use std::collections::HashMap;

use domain::RecordKind;
use projections::{ListFilter, Projector};
use serde_json::Value;
use uuid::Uuid;

use super::RowError;
use crate::app::App;

/// Answers kept per import before the memory starts again.
const REMEMBERED_MAX: usize = 10_000;
/// Candidates a name search reads before it gives up: the records whose
/// name, email, title or domain holds the text, of which one must equal it.
const CANDIDATES_MAX: usize = 1_000;
const CANDIDATES_PAGE: usize = 200;

/// Shared by the rows an import has in flight at once.
#[derive(Default)]
pub(super) struct Resolver {
    remembered: std::sync::Mutex<HashMap<(RecordKind, String), Uuid>>,
    /// Every user not erased, read once per import: (id, name, email).
    users: tokio::sync::OnceCell<Vec<(Uuid, String, Option<String>)>>,
}

impl Resolver {
    /// The user `raw` names by id, email or name.
    pub async fn user(&self, projector: &Projector, field: &str, raw: &str) -> Result<Uuid, RowError> {
        if let Ok(id) = Uuid::parse_str(raw) {
            return Ok(id);
        }
        let users = self
            .users
            .get_or_try_init(|| async {
                let model = projector.users().await.map_err(|e| RowError::Failed(e.into()))?;
                Ok::<_, RowError>(
                    model
                        .users
                        .values()
                        .filter(|u| u.erased.is_none())
                        .map(|u| (u.id, u.name.clone(), u.email.clone()))
                        .collect(),
                )
            })
            .await?;
        let by_email: Vec<Uuid> = users
            .iter()
            .filter(|(_, _, email)| email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(raw)))
            .map(|(id, _, _)| *id)
            .collect();
        let found = if by_email.is_empty() {
            users
                .iter()
                .filter(|(_, name, _)| name.eq_ignore_ascii_case(raw))
                .map(|(id, _, _)| *id)
                .collect()
        } else {
            by_email
        };
        one(field, "user", raw, found, "id, email or name")
    }

    /// The live record of `kind` that `raw` names: by id, by external id,
    /// else an account by name or domain, a contact by email, a deal by title.
    pub async fn record(
        &self,
        app: &App,
        projector: &Projector,
        field: &str,
        kind: RecordKind,
        raw: &str,
    ) -> Result<Uuid, RowError> {
        if let Ok(id) = Uuid::parse_str(raw) {
            return Ok(id);
        }
        let key = (kind, raw.to_lowercase());
        if let Some(id) = self.remembered().get(&key) {
            return Ok(*id);
        }
        let id = match super::holder(app, kind, raw).await? {
            Some(id) => id,
            None => {
                let found = by_name(projector, kind, raw).await?;
                let by = match kind {
                    RecordKind::Account => "id, external id, name or domain",
                    RecordKind::Contact => "id, external id or email",
                    _ => "id, external id or title",
                };
                one(field, kind.as_str(), raw, found, by)?
            }
        };
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBERED_MAX {
            remembered.clear();
        }
        remembered.insert(key, id);
        Ok(id)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<(RecordKind, String), Uuid>> {
        // A panic while it was held left nothing half-written worth refusing.
        self.remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Live records of `kind` whose name (an account's also its domain, a
/// contact's email, a deal's title) equals `raw`, ignoring case.
async fn by_name(projector: &Projector, kind: RecordKind, raw: &str) -> Result<Vec<Uuid>, RowError> {
    let keys: &[&str] = match kind {
        RecordKind::Account => &["name", "domain"],
        RecordKind::Contact => &["email"],
        RecordKind::Deal => &["title"],
        RecordKind::Interaction | RecordKind::User => return Ok(Vec::new()),
    };
    let mut found = Vec::new();
    let mut after = None;
    for _ in 0..CANDIDATES_MAX / CANDIDATES_PAGE {
        let filter = ListFilter {
            after,
            text: Some(raw.to_owned()),
            limit: CANDIDATES_PAGE,
            ..ListFilter::default()
        };
        let (page, next) = projector
            .list(kind, &filter)
            .await
            .map_err(|e| RowError::Failed(e.into()))?;
        for view in &page {
            let equal = keys.iter().any(|key| {
                view.get(*key)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(raw))
            });
            if let Some(id) = equal.then(|| view.get("id").and_then(Value::as_str)).flatten() {
                found.extend(Uuid::parse_str(id).ok());
            }
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    Ok(found)
}

/// The one id found, or why the row is refused.
fn one(field: &str, what: &str, raw: &str, found: Vec<Uuid>, by: &str) -> Result<Uuid, RowError> {
    match found.as_slice() {
        [id] => Ok(*id),
        [] => Err(RowError::Refused(format!(
            "{field}: no live {what} has the {by} {raw:?}"
        ))),
        many => Err(RowError::Refused(format!(
            "{field}: {raw:?} names {} {what}s ({}); name one by id or external id",
            many.len(),
            many.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}
