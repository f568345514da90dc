//! Phone numbers, normalised to E.164 (`+` and up to 15 digits) where the
//! input says which country it is in (a leading `+` or `00`). A number
//! written without a country code cannot be placed without guessing, so it is
//! kept as its digits and reported as not E.164, unless the store has a
//! default region (`Rules::phone_region`): then it is placed there.

use serde::{Deserialize, Serialize};

/// E.164 allows at most 15 digits including the country code.
const E164_DIGITS_MAX: usize = 15;
/// The shortest international number in use has 7 digits with its country code.
const E164_DIGITS_MIN: usize = 7;
/// Shortest national number we accept (short codes are not customer numbers).
const NATIONAL_DIGITS_MIN: usize = 4;

/// Deserialising trusts its input (the log); user input goes through `parse`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts digits with the usual separators (space, `-`, `.`, `/`,
    /// parentheses) and an optional leading `+` or `00`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        let (international, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => match trimmed.strip_prefix("00") {
                Some(rest) => (true, rest),
                None => (false, trimmed),
            },
        };
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '/' | '(' | ')' => {}
                _ => return Err(format!("must be digits and separators, found {c:?}")),
            }
        }
        if international {
            if digits.starts_with('0') {
                return Err("a country code never starts with 0".into());
            }
            if !(E164_DIGITS_MIN..=E164_DIGITS_MAX).contains(&digits.len()) {
                return Err(format!(
                    "an international number has {E164_DIGITS_MIN} to {E164_DIGITS_MAX} digits"
                ));
            }
            return Ok(Self(format!("+{digits}")));
        }
        if !(NATIONAL_DIGITS_MIN..=E164_DIGITS_MAX).contains(&digits.len()) {
            return Err(format!("must have {NATIONAL_DIGITS_MIN} to {E164_DIGITS_MAX} digits"));
        }
        Ok(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the number is in international E.164 form.
    pub fn is_e164(&self) -> bool {
        self.0.starts_with('+')
    }

    /// A national number (written without a country code) placed in
    /// `region`: in the North American plan (1), ten digits or eleven
    /// starting with 1; elsewhere the trunk prefix 0 is dropped (Italy, 39,
    /// keeps its 0). An international number, or one that would not be a
    /// valid E.164 number there, is kept as it is.
    pub fn in_region(&self, region: &CallingCode) -> Self {
        if self.is_e164() {
            return self.clone();
        }
        let code = region.0.as_str();
        let national = match code {
            "1" => match self.0.len() {
                10 => Some(self.0.as_str()),
                11 => self.0.strip_prefix('1'),
                _ => None,
            },
            "39" => Some(self.0.as_str()),
            _ => Some(self.0.strip_prefix('0').unwrap_or(&self.0)),
        };
        match national {
            Some(national) if (E164_DIGITS_MIN..=E164_DIGITS_MAX).contains(&(code.len() + national.len())) => {
                Self(format!("+{code}{national}"))
            }
            _ => self.clone(),
        }
    }
}

/// A country calling code (1 to 3 digits, not starting with 0): the region
/// a national phone number is placed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingCode(String);

impl CallingCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let digits = raw.trim().trim_start_matches('+');
        let valid =
            (1..=3).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        if valid {
            Ok(Self(digits.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a country calling code (1 to 3 digits, like 1, 44 or 49)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Option<&str>) {
        let parsed = PhoneNumber::parse(raw).ok().map(|p| p.0);
        assert_eq!(parsed.as_deref(), expected, "parsing {raw:?}");
    }

    #[test]
    fn a_national_number_is_placed_in_the_default_region() {
        let region = |code: &str| CallingCode::parse(code).expect("a calling code");
        let placed = |raw: &str, code: &str| PhoneNumber::parse(raw).expect("a number").in_region(&region(code)).0;
        // The pair the duplicates report missed.
        assert_eq!(placed("(206) 555-9857", "1"), placed("+1 206 555 9857", "1"));
        assert_eq!(placed("(206) 555-9857", "1"), "+12065559857");
        assert_eq!(placed("1-206-555-9857", "1"), "+12065559857");
        assert_eq!(placed("020 7946 0958", "44"), "+442079460958");
        assert_eq!(placed("06 1234 5678", "39"), "+390612345678", "Italy keeps its 0");
        assert_eq!(
            placed("+49 30 1234 5678", "1"),
            "+493012345678",
            "already international"
        );
        assert_eq!(placed("555 9857", "1"), "5559857", "too short to place: kept");
        for bad in ["0", "1234", "+", "4a", ""] {
            assert!(CallingCode::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(CallingCode::parse("+44").map(|c| c.0), Ok("44".to_owned()));
    }

    #[test]
    fn international_numbers_become_e164() {
        check("+49 (30) 1234-5678", Some("+493012345678"));
        check("0044 20 7946 0958", Some("+442079460958"));
        check("+1.415.555.2671", Some("+14155552671"));
    }

    #[test]
    fn national_numbers_keep_their_digits() {
        check("030 1234 5678", Some("03012345678"));
        assert!(!PhoneNumber::parse("030 1234 5678").is_ok_and(|p| p.is_e164()));
    }

    #[test]
    fn refuses_letters_and_impossible_lengths() {
        for raw in [
            "",
            "call me",
            "+49 30 CALL",
            "+0 123 4567",
            "+1234",
            "+1234567890123456",
            "12",
        ] {
            check(raw, None);
        }
    }
}
