//! The sales pipeline: which stages a deal may be in, in which order, how
//! likely a deal in each stage is to be won, and after how many days in a
//! stage a deal counts as rotting. It is configuration, not data: events name
//! stages by their name, and reports read the configuration they are given.

use serde::{Deserialize, Serialize};

/// The most stages a pipeline may define.
pub const PIPELINE_STAGES_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDefinition {
    pub name: String,
    /// Chance of winning a deal in this stage, 0 to 100.
    pub probability_percent: u8,
    /// A deal in this stage for longer than this is rotting.
    pub rotting_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    stages: Vec<StageDefinition>,
}

/// A stage name known to the pipeline it was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageName(String);

impl StageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Pipeline {
    /// A pipeline from its stages, in order. Names must be unique, lower case
    /// words; probabilities at most 100.
    pub fn new(stages: Vec<StageDefinition>) -> Result<Self, String> {
        if stages.is_empty() || stages.len() > PIPELINE_STAGES_MAX {
            return Err(format!("a pipeline has 1 to {PIPELINE_STAGES_MAX} stages"));
        }
        for (index, stage) in stages.iter().enumerate() {
            let well_formed = !stage.name.is_empty()
                && stage
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
            if !well_formed {
                return Err(format!(
                    "stage name {:?} must be lower case letters, digits or _",
                    stage.name
                ));
            }
            if stage.probability_percent > 100 {
                return Err(format!("stage {:?} has a probability over 100%", stage.name));
            }
            if stages[..index].iter().any(|earlier| earlier.name == stage.name) {
                return Err(format!("stage {:?} is defined twice", stage.name));
            }
        }
        Ok(Self { stages })
    }

    pub fn stages(&self) -> &[StageDefinition] {
        &self.stages
    }

    /// The stage a new deal starts in when none is given.
    pub fn first_stage(&self) -> StageName {
        StageName(self.stages[0].name.clone())
    }

    pub fn stage(&self, raw: &str) -> Result<StageName, String> {
        let name = raw.trim();
        match self.definition(name) {
            Some(stage) => Ok(StageName(stage.name.clone())),
            None => {
                let known: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                Err(format!("unknown stage {name:?}; the pipeline has {}", known.join(", ")))
            }
        }
    }

    pub fn definition(&self, name: &str) -> Option<&StageDefinition> {
        self.stages.iter().find(|stage| stage.name == name)
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        let stage = |name: &str, probability_percent, rotting_days| StageDefinition {
            name: name.into(),
            probability_percent,
            rotting_days,
        };
        Self {
            stages: vec![
                stage("lead", 10, 14),
                stage("qualified", 25, 14),
                stage("proposal", 50, 10),
                stage("negotiation", 75, 7),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pipeline_knows_its_stages_in_order() {
        let pipeline = Pipeline::default();
        assert_eq!(pipeline.first_stage().as_str(), "lead");
        assert_eq!(pipeline.stage(" proposal ").map(|s| s.0), Ok("proposal".into()));
        assert!(pipeline.stage("won").is_err());
    }

    #[test]
    fn a_pipeline_refuses_duplicate_or_malformed_stages() {
        let stage = |name: &str| StageDefinition {
            name: name.into(),
            probability_percent: 10,
            rotting_days: 5,
        };
        assert!(Pipeline::new(vec![stage("a"), stage("a")]).is_err());
        assert!(Pipeline::new(vec![stage("Big Deal")]).is_err());
        assert!(Pipeline::new(vec![]).is_err());
        let mut too_likely = stage("a");
        too_likely.probability_percent = 101;
        assert!(Pipeline::new(vec![too_likely]).is_err());
    }
}
