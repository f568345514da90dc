//! Users: the people who act. Every event names the user who caused it, and
//! reports name the user's department, so a manager sees which team keeps its
//! records and which does not.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{EmailAddress, Name, Text};
use crate::{Aggregate, DomainError, Event, Rules};

/// What a user may do: `admin` everything, `member` read and write records,
/// `viewer` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            "viewer" => Ok(Self::Viewer),
            _ => Err("must be one of admin, member, viewer".into()),
        }
    }

    pub fn can_write(self) -> bool {
        matches!(self, Self::Admin | Self::Member)
    }

    pub fn is_admin(self) -> bool {
        self == Self::Admin
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub name: Name,
    pub department: Name,
    pub role: Role,
    /// How other systems name the user (an import's owner or actor);
    /// users registered before it existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
}

/// The user's personal data (name, email) was erased, its key destroyed
/// with this event's append: someone who has left asked under GDPR Art. 17,
/// say. Who did it and when are the event's own; `reason` must not name the
/// person. The user's id, department and role stay, so every event they
/// caused still counts for their department; the user acts no more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserErased {
    pub user_id: Uuid,
    pub reason: Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    RegisterUser {
        user_id: Uuid,
        name: String,
        department: String,
        role: String,
        email: Option<String>,
    },
    EraseUser {
        reason: Text,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    pub registered: Option<UserRegistered>,
    /// Erased: the user's name and email are gone and it acts no more.
    pub erased: bool,
    pub version: u64,
}

impl Aggregate for User {
    type Command = UserCommand;

    fn decide(&self, command: &UserCommand, _rules: &Rules) -> Result<Vec<Event>, DomainError> {
        let (user_id, name, department, role, email) = match command {
            UserCommand::RegisterUser {
                user_id,
                name,
                department,
                role,
                email,
            } => (user_id, name, department, role, email),
            UserCommand::EraseUser { reason } => {
                let Some(registered) = &self.registered else {
                    return Err(DomainError::NotFound { kind: "user" });
                };
                if self.erased {
                    return Ok(vec![]);
                }
                return Ok(vec![Event::UserErased(UserErased {
                    user_id: registered.user_id,
                    reason: reason.clone(),
                })]);
            }
        };
        if self.registered.is_some() {
            return Err(DomainError::AlreadyExists { kind: "user" });
        }
        let mut validator = crate::Validator::default();
        let name = validator.check("name", Name::parse(name));
        let department = validator.check("department", Name::parse(department));
        let role = validator.check("role", Role::parse(role));
        let email = match email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(raw) => validator.check("email", EmailAddress::parse(raw)),
            None => None,
        };
        let registered = validator.finish(|| UserRegistered {
            user_id: *user_id,
            name: name.expect("checked"),
            department: department.expect("checked"),
            role: role.expect("checked"),
            email,
        })?;
        Ok(vec![Event::UserRegistered(registered)])
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::UserRegistered(registered) => self.registered = Some(registered.clone()),
            Event::UserErased(_) => self.erased = true,
            _ => return,
        }
        self.version += 1;
    }

    fn version(&self) -> u64 {
        self.version
    }
}
