//! Accounts: the companies contacts work for and deals are won from.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::live;
use crate::fields::record_fields;
use crate::input::{DomainName, merge_custom};
use crate::values::{CustomFields, ExternalId, Name, Text};
use crate::{Aggregate, DomainError, Event, Rules};

record_fields! {
    /// An account's current fields.
    fields AccountFields;
    /// The fields one `AccountUpdated` event changed, with their new values.
    changes AccountChanges;
    required { name: Name }
    optional { domain: DomainName, industry: Text, owner_id: Uuid, external_id: ExternalId }
    lists { custom: CustomFields }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountCreated {
    pub account_id: Uuid,
    pub fields: AccountFields,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountUpdated {
    pub account_id: Uuid,
    pub changes: AccountChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountArchived {
    pub account_id: Uuid,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    CreateAccount {
        account_id: Uuid,
        changes: AccountChanges,
    },
    /// `changes.custom` is a merge patch: keys set to `null` are removed.
    UpdateAccount {
        changes: AccountChanges,
    },
    ArchiveAccount,
    /// Brings over the last activity a previous system knew of (the
    /// append's business time): see `ActivityImported`.
    ImportActivity,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub id: Option<Uuid>,
    pub fields: Option<AccountFields>,
    pub archived: bool,
    pub version: u64,
}

const KIND: &str = "account";

impl Account {
    /// True when the account exists and may take new deals and contacts.
    pub fn is_live(&self) -> bool {
        self.fields.is_some() && !self.archived
    }
}

impl Aggregate for Account {
    type Command = AccountCommand;

    fn decide(&self, command: &AccountCommand, _rules: &Rules) -> Result<Vec<Event>, DomainError> {
        match command {
            AccountCommand::CreateAccount { account_id, changes } => {
                if self.fields.is_some() {
                    return Err(DomainError::AlreadyExists { kind: KIND });
                }
                let mut changes = changes.clone();
                merge_custom(&mut changes.custom, &CustomFields::new());
                let fields = changes.into_fields()?;
                Ok(vec![Event::AccountCreated(AccountCreated {
                    account_id: *account_id,
                    fields,
                })])
            }
            AccountCommand::UpdateAccount { changes } => {
                let (account_id, current) = live(self.id, &self.fields, self.archived, KIND)?;
                let mut proposed = changes.clone();
                merge_custom(&mut proposed.custom, &current.custom);
                let changes = proposed.diff(current);
                if changes.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![Event::AccountUpdated(AccountUpdated { account_id, changes })])
            }
            AccountCommand::ImportActivity => {
                crate::activity::import(crate::RecordKind::Account, self.id, &self.fields, self.archived, KIND)
            }
            AccountCommand::ArchiveAccount => {
                if self.archived {
                    return Ok(vec![]);
                }
                let (account_id, _) = live(self.id, &self.fields, self.archived, KIND)?;
                Ok(vec![Event::AccountArchived(AccountArchived { account_id })])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::AccountCreated(created) => {
                self.id = Some(created.account_id);
                self.fields = Some(created.fields.clone());
            }
            Event::AccountUpdated(updated) => {
                if let Some(fields) = &mut self.fields {
                    updated.changes.apply_to(fields);
                }
            }
            Event::AccountArchived(_) => self.archived = true,
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
