//! Free text with limits: trimmed, non-empty, bounded in length.

use serde::{Deserialize, Serialize};

/// Longest name or title a record accepts, in characters.
pub const NAME_CHARS_MAX: usize = 200;
/// Longest free text (an interaction summary, a close reason), in characters.
pub const TEXT_CHARS_MAX: usize = 10_000;
/// Longest external id, in characters.
pub const EXTERNAL_ID_CHARS_MAX: usize = 200;

/// A trimmed, non-empty string of at most `limit` characters.
fn bounded(raw: &str, limit: usize) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    if trimmed.chars().count() > limit {
        return Err(format!("must be at most {limit} characters"));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not contain control characters".into());
    }
    Ok(trimmed.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $limit:expr) => {
        $(#[$doc])*
        ///
        /// Deserialising trusts its input: it reads the log, where values were
        /// checked when they were first written. User input goes through `parse`.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, String> {
                bounded(raw, $limit).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }


        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// A record's name or title: required wherever it appears.
    Name,
    NAME_CHARS_MAX
);
text_type!(
    /// Longer free text: summaries, reasons, industries, job titles.
    Text,
    TEXT_CHARS_MAX
);
text_type!(
    /// The id a record has in another system; imports match on it.
    ExternalId,
    EXTERNAL_ID_CHARS_MAX
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_must_not_be_blank() {
        assert_eq!(Name::parse("  Ada Lovelace ").map(|n| n.0), Ok("Ada Lovelace".into()));
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(NAME_CHARS_MAX + 1)).is_err());
        assert!(Name::parse("bell\u{7}").is_err());
    }
}
