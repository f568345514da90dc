//! Money as an integer count of the currency's minor unit (cents), never a
//! float, with an ISO 4217 currency code.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// An ISO 4217 currency code, upper case. Checked against the standard when
/// it enters through `parse`; read back from the log as stored, so a code
/// that ISO later withdraws (as HRK was in 2023) keeps old deals readable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CurrencyCode(String);

impl CurrencyCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let code = raw.trim().to_ascii_uppercase();
        iso_currency::Currency::from_str(&code)
            .map(|currency| Self(currency.code().to_owned()))
            .map_err(|_| format!("{raw:?} is not an ISO 4217 currency code"))
    }

    pub fn code(&self) -> &str {
        &self.0
    }
}

/// A non-negative amount in minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    value_minor: i64,
    currency: CurrencyCode,
}

impl Money {
    pub fn new(value_minor: i64, currency: CurrencyCode) -> Result<Self, String> {
        if value_minor < 0 {
            return Err("value_minor must not be negative".into());
        }
        Ok(Self { value_minor, currency })
    }

    pub fn value_minor(&self) -> i64 {
        self.value_minor
    }

    pub fn currency(&self) -> &CurrencyCode {
        &self.currency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_checked_against_iso_4217() {
        assert_eq!(CurrencyCode::parse("eur").map(|c| c.0), Ok("EUR".into()));
        assert!(CurrencyCode::parse("EURO").is_err());
        assert!(CurrencyCode::parse("XYZ").is_err());
    }

    #[test]
    fn amounts_must_not_be_negative() {
        let eur = CurrencyCode::parse("EUR").expect("EUR is a currency");
        assert!(Money::new(-1, eur.clone()).is_err());
        assert!(Money::new(0, eur).is_ok());
    }
}
