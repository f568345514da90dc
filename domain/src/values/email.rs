//! Email addresses: a pragmatic syntax check (RFC 5321 lengths, dot-atom
//! local part, a host name with a top-level domain) and the normal form used
//! to find duplicates.

use serde::{Deserialize, Serialize};

/// RFC 5321: an address is at most 254 characters, its local part 64.
const EMAIL_CHARS_MAX: usize = 254;
const LOCAL_PART_CHARS_MAX: usize = 64;
const DOMAIN_LABEL_CHARS_MAX: usize = 63;

/// A syntactically valid email address. The domain is kept lower case; the
/// local part as given (it may be case sensitive on its server).
/// Deserialising trusts its input (the log); user input goes through `parse`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let address = raw.trim();
        if address.len() > EMAIL_CHARS_MAX {
            return Err(format!("must be at most {EMAIL_CHARS_MAX} characters"));
        }
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err("must contain an @".into());
        };
        check_local_part(local)?;
        check_domain(domain)?;
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form two addresses share when they reach the same mailbox in
    /// practice: all lower case. Used to group duplicates, never to store.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

fn check_local_part(local: &str) -> Result<(), String> {
    if local.is_empty() || local.len() > LOCAL_PART_CHARS_MAX {
        return Err(format!(
            "the part before @ must be 1 to {LOCAL_PART_CHARS_MAX} characters"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if !local.chars().all(allowed) {
        return Err("the part before @ has a character that is not allowed".into());
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before @ must not start, end or repeat a dot".into());
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain must have a dot, as in example.com".into());
    }
    for label in &labels {
        let valid_chars = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if label.is_empty()
            || label.len() > DOMAIN_LABEL_CHARS_MAX
            || !valid_chars
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!("the domain part {label:?} is not a valid host name"));
        }
    }
    let top_level = labels[labels.len() - 1];
    if top_level.len() < 2 || !top_level.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err("the domain must end in a top-level domain such as .com".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Option<&str>) {
        let parsed = EmailAddress::parse(raw).ok().map(|e| e.0);
        assert_eq!(parsed.as_deref(), expected, "parsing {raw:?}");
    }

    #[test]
    fn accepts_common_addresses_and_lowercases_the_domain() {
        check("ada@example.com", Some("ada@example.com"));
        check(
            " Ada.Lovelace+crm@Example.CO.uk ",
            Some("Ada.Lovelace+crm@example.co.uk"),
        );
        check("o'brien@mail-server.ie", Some("o'brien@mail-server.ie"));
    }

    #[test]
    fn refuses_what_no_mail_server_would_deliver() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "ada lovelace@example.com",
            ".ada@example.com",
            "ada..l@example.com",
            "ada@-example.com",
            "ada@example.c",
            "ada@example.123",
            "ada@exa_mple.com",
        ] {
            check(raw, None);
        }
    }

    #[test]
    fn normal_form_ignores_case() {
        let a = EmailAddress::parse("Ada@Example.com").map(|e| e.normalized());
        let b = EmailAddress::parse("ada@example.COM").map(|e| e.normalized());
        assert_eq!(a, b);
    }
}
