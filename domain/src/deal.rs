//! Deals: opportunities with an account, moving through the pipeline's stages
//! until they are closed as won or lost.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::live;
use crate::fields::record_fields;
use crate::values::{ExternalId, Money, Name, StageName, Text};
use crate::{Aggregate, DomainError, Event, Rules};

record_fields! {
    /// A deal's current fields, apart from its stage and status, which change
    /// only through their own events so that their history is explicit.
    fields DealFields;
    /// The fields one `DealUpdated` event changed, with their new values.
    changes DealChanges;
    required { title: Name, account_id: Uuid }
    optional { owner_id: Uuid, amount: Money, expected_close: chrono::NaiveDate, external_id: ExternalId }
    lists { contact_ids: Vec<Uuid> }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DealStatus {
    Open,
    Won,
    Lost,
}

/// How a deal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DealOutcome {
    Won,
    Lost,
}

impl DealOutcome {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "won" => Ok(Self::Won),
            "lost" => Ok(Self::Lost),
            _ => Err("must be won or lost".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealCreated {
    pub deal_id: Uuid,
    pub fields: DealFields,
    pub stage: StageName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealUpdated {
    pub deal_id: Uuid,
    pub changes: DealChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealStageChanged {
    pub deal_id: Uuid,
    pub from: StageName,
    pub to: StageName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealClosed {
    pub deal_id: Uuid,
    pub outcome: DealOutcome,
    #[serde(default)]
    pub reason: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealArchived {
    pub deal_id: Uuid,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DealCommand {
    /// `stage` is checked against the pipeline; `None` starts in its first stage.
    CreateDeal {
        deal_id: Uuid,
        changes: DealChanges,
        stage: Option<String>,
    },
    /// A patch; a `stage` in it moves the deal as `MoveDealStage` would.
    UpdateDeal {
        changes: DealChanges,
        stage: Option<String>,
    },
    MoveDealStage {
        stage: String,
    },
    CloseDeal {
        outcome: DealOutcome,
        reason: Option<Text>,
    },
    ArchiveDeal,
    /// Brings over the last activity a previous system knew of (the
    /// append's business time): see `ActivityImported`.
    ImportActivity,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deal {
    pub id: Option<Uuid>,
    pub fields: Option<DealFields>,
    pub stage: Option<StageName>,
    pub status: Option<DealStatus>,
    pub archived: bool,
    pub version: u64,
}

const KIND: &str = "deal";

impl Deal {
    /// The event that moves the deal to `raw`, none if it is there already.
    fn move_to(&self, deal_id: Uuid, raw: &str, rules: &Rules) -> Result<Option<Event>, DomainError> {
        let to = rules
            .pipeline
            .stage(raw)
            .map_err(|message| DomainError::field("stage", message))?;
        let from = self.stage.clone().unwrap_or_else(|| rules.pipeline.first_stage());
        // Naming the stage a deal is in moves nothing, closed or not: an
        // exported deal imports again unchanged.
        if from == to {
            return Ok(None);
        }
        if self.status != Some(DealStatus::Open) {
            return Err(DomainError::InvalidState(
                "a closed deal cannot move between stages".into(),
            ));
        }
        Ok(Some(Event::DealStageChanged(DealStageChanged { deal_id, from, to })))
    }

    fn create(
        &self,
        deal_id: Uuid,
        changes: &DealChanges,
        stage: &Option<String>,
        rules: &Rules,
    ) -> Result<Vec<Event>, DomainError> {
        if self.fields.is_some() {
            return Err(DomainError::AlreadyExists { kind: KIND });
        }
        let stage = match stage {
            Some(raw) => rules
                .pipeline
                .stage(raw)
                .map_err(|message| DomainError::field("stage", message)),
            None => Ok(rules.pipeline.first_stage()),
        };
        let fields = changes.clone().into_fields();
        let (fields, stage) = match (fields, stage) {
            (Ok(fields), Ok(stage)) => (fields, stage),
            (fields, stage) => return Err(merge_errors(fields.err(), stage.err())),
        };
        Ok(vec![Event::DealCreated(DealCreated { deal_id, fields, stage })])
    }

    fn update(&self, changes: &DealChanges, stage: &Option<String>, rules: &Rules) -> Result<Vec<Event>, DomainError> {
        let (deal_id, current) = live(self.id, &self.fields, self.archived, KIND)?;
        let mut events = Vec::new();
        let changes = changes.diff(current);
        if !changes.is_empty() {
            events.push(Event::DealUpdated(DealUpdated { deal_id, changes }));
        }
        if let Some(stage) = stage {
            events.extend(self.move_to(deal_id, stage, rules)?);
        }
        Ok(events)
    }
}

/// Field errors from two independent checks, reported together.
fn merge_errors(first: Option<DomainError>, second: Option<DomainError>) -> DomainError {
    let mut fields = Vec::new();
    for error in [first, second].into_iter().flatten() {
        match error {
            DomainError::Validation(errors) => fields.extend(errors),
            other => return other,
        }
    }
    DomainError::Validation(fields)
}

impl Aggregate for Deal {
    type Command = DealCommand;

    fn decide(&self, command: &DealCommand, rules: &Rules) -> Result<Vec<Event>, DomainError> {
        match command {
            DealCommand::CreateDeal {
                deal_id,
                changes,
                stage,
            } => self.create(*deal_id, changes, stage, rules),
            DealCommand::UpdateDeal { changes, stage } => self.update(changes, stage, rules),
            DealCommand::MoveDealStage { stage } => {
                let (deal_id, _) = live(self.id, &self.fields, self.archived, KIND)?;
                Ok(self.move_to(deal_id, stage, rules)?.into_iter().collect())
            }
            DealCommand::CloseDeal { outcome, reason } => {
                let (deal_id, _) = live(self.id, &self.fields, self.archived, KIND)?;
                if self.status != Some(DealStatus::Open) {
                    return Err(DomainError::InvalidState("the deal is already closed".into()));
                }
                Ok(vec![Event::DealClosed(DealClosed {
                    deal_id,
                    outcome: *outcome,
                    reason: reason.clone(),
                })])
            }
            DealCommand::ImportActivity => {
                crate::activity::import(crate::RecordKind::Deal, self.id, &self.fields, self.archived, KIND)
            }
            DealCommand::ArchiveDeal => {
                if self.archived {
                    return Ok(vec![]);
                }
                let (deal_id, _) = live(self.id, &self.fields, self.archived, KIND)?;
                Ok(vec![Event::DealArchived(DealArchived { deal_id })])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::DealCreated(created) => {
                self.id = Some(created.deal_id);
                self.fields = Some(created.fields.clone());
                self.stage = Some(created.stage.clone());
                self.status = Some(DealStatus::Open);
            }
            Event::DealUpdated(updated) => {
                if let Some(fields) = &mut self.fields {
                    updated.changes.apply_to(fields);
                }
            }
            Event::DealStageChanged(moved) => self.stage = Some(moved.to.clone()),
            Event::DealClosed(closed) => {
                self.status = Some(match closed.outcome {
                    DealOutcome::Won => DealStatus::Won,
                    DealOutcome::Lost => DealStatus::Lost,
                });
            }
            Event::DealArchived(_) => self.archived = true,
            Event::ActivityImported(_) => {}
            _ => return,
        }
        self.version += 1;
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn external_id(&self) -> Option<&ExternalId> {
        let fields = self.fields.as_ref().filter(|_| !self.archived)?;
        fields.external_id.as_ref()
    }
}

/// Parses a deal's create or update input into its field changes and the
/// stage to move to. `status` changes only by closing the deal.
pub fn parse_deal_input(input: &crate::Input) -> Result<(DealChanges, Option<String>), DomainError> {
    let mut validator = crate::Validator::default();
    if input.contains_key("status") {
        validator.push("status", "changes only by closing the deal (POST /v1/deals/{id}/close)");
    }
    let stage = match input.get("stage") {
        None => None,
        Some(serde_json::Value::String(stage)) => Some(stage.clone()),
        Some(_) => {
            validator.push("stage", "must be a string naming a pipeline stage");
            None
        }
    };
    let changes = DealChanges::parse(input, &["stage", "status"]);
    match (changes, validator.finish(|| ())) {
        (Ok(changes), Ok(())) => Ok((changes, stage)),
        (changes, status) => Err(merge_errors(changes.err(), status.err())),
    }
}
