//! Contacts: the people a company sells to.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::live;
use crate::fields::record_fields;
use crate::input::{Tag, merge_custom};
use crate::values::{CustomFields, EmailAddress, ExternalId, Name, PhoneNumber, Text};
use crate::{Aggregate, DomainError, Event, FromInput, Rules};

/// Where a contact stands in the customer lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    Lead,
    Prospect,
    Customer,
    Churned,
}

impl FromInput for LifecycleStage {
    fn from_input(value: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|_| "must be one of lead, prospect, customer, churned".into())
    }
}

record_fields! {
    /// A contact's current fields.
    fields ContactFields;
    /// The fields one `ContactUpdated` event changed, with their new values.
    changes ContactChanges;
    required { name: Name }
    optional {
        email: EmailAddress,
        phone: PhoneNumber,
        title: Text,
        account_id: Uuid,
        owner_id: Uuid,
        lifecycle_stage: LifecycleStage,
        external_id: ExternalId,
    }
    lists { tags: Vec<Tag>, custom: CustomFields }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactCreated {
    pub contact_id: Uuid,
    pub fields: ContactFields,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactUpdated {
    pub contact_id: Uuid,
    pub changes: ContactChanges,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactArchived {
    pub contact_id: Uuid,
}

/// The contact's personal data was erased (its key destroyed with this
/// event's append): who did it and when are the event's own; `reason` says
/// why (a request under GDPR Art. 17, say) and must not name the person.
/// The contact is archived with it and takes no more changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactErased {
    pub contact_id: Uuid,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContactCommand {
    CreateContact {
        contact_id: Uuid,
        changes: ContactChanges,
    },
    /// `changes.custom` is a merge patch: keys set to `null` are removed.
    UpdateContact {
        changes: ContactChanges,
    },
    ArchiveContact,
    /// Brings over the last activity a previous system knew of (the
    /// append's business time): see `ActivityImported`.
    ImportActivity,
    /// Erases the contact's personal data; erasing it again changes nothing.
    EraseContact {
        reason: Text,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contact {
    pub id: Option<Uuid>,
    pub fields: Option<ContactFields>,
    pub archived: bool,
    pub erased: bool,
    pub version: u64,
}

const KIND: &str = "contact";

impl Aggregate for Contact {
    type Command = ContactCommand;

    fn decide(&self, command: &ContactCommand, rules: &Rules) -> Result<Vec<Event>, DomainError> {
        let erasing = matches!(command, ContactCommand::EraseContact { .. });
        if self.erased && !erasing && !matches!(command, ContactCommand::CreateContact { .. }) {
            return Err(DomainError::Erased { kind: KIND });
        }
        match command {
            ContactCommand::CreateContact { contact_id, changes } => {
                if self.fields.is_some() {
                    return Err(DomainError::AlreadyExists { kind: KIND });
                }
                let mut changes = changes.clone();
                place_phone(&mut changes, rules);
                merge_custom(&mut changes.custom, &CustomFields::new());
                let fields = changes.into_fields()?;
                Ok(vec![Event::ContactCreated(ContactCreated {
                    contact_id: *contact_id,
                    fields,
                })])
            }
            ContactCommand::UpdateContact { changes } => {
                let (contact_id, current) = live(self.id, &self.fields, self.archived, KIND)?;
                let mut proposed = changes.clone();
                place_phone(&mut proposed, rules);
                merge_custom(&mut proposed.custom, &current.custom);
                let changes = proposed.diff(current);
                if changes.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![Event::ContactUpdated(ContactUpdated { contact_id, changes })])
            }
            ContactCommand::ImportActivity => {
                crate::activity::import(crate::RecordKind::Contact, self.id, &self.fields, self.archived, KIND)
            }
            ContactCommand::EraseContact { reason } => {
                let Some(contact_id) = self.id.filter(|_| self.fields.is_some()) else {
                    return Err(DomainError::NotFound { kind: KIND });
                };
                if self.erased {
                    return Ok(vec![]);
                }
                Ok(vec![Event::ContactErased(ContactErased {
                    contact_id,
                    reason: reason.clone(),
                })])
            }
            ContactCommand::ArchiveContact => {
                if self.archived {
                    return Ok(vec![]);
                }
                let (contact_id, _) = live(self.id, &self.fields, self.archived, KIND)?;
                Ok(vec![Event::ContactArchived(ContactArchived { contact_id })])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::ContactCreated(created) => {
                self.id = Some(created.contact_id);
                self.fields = Some(created.fields.clone());
            }
            Event::ContactUpdated(updated) => {
                if let Some(fields) = &mut self.fields {
                    updated.changes.apply_to(fields);
                }
            }
            Event::ContactArchived(_) => self.archived = true,
            Event::ContactErased(_) => {
                self.archived = true;
                self.erased = true;
            }
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

/// A national phone number in `changes`, placed in the store's default
/// region, so that one number is written one way.
fn place_phone(changes: &mut ContactChanges, rules: &Rules) {
    if let (Some(region), Some(Some(phone))) = (&rules.phone_region, &mut changes.phone) {
        *phone = phone.in_region(region);
    }
}
