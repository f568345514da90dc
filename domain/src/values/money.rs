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

    /// Digits after the decimal point in the currency's major unit (2 for
    /// EUR, 0 for JPY, 3 for BHD); 2 for a code ISO no longer lists.
    pub fn minor_digits(&self) -> u32 {
        iso_currency::Currency::from_str(&self.0)
            .ok()
            .and_then(|currency| currency.exponent())
            .map_or(2, u32::from)
    }

    /// An amount in minor units written in major units, exactly:
    /// `123456` EUR → `"1234.56"`, JPY → `"123456"`.
    pub fn format_minor(&self, minor: i128) -> String {
        let digits = self.minor_digits();
        if digits == 0 {
            return minor.to_string();
        }
        let scale = 10i128.pow(digits);
        let sign = if minor < 0 { "-" } else { "" };
        let (major, fraction) = (
            minor.unsigned_abs() / scale.unsigned_abs(),
            minor.unsigned_abs() % scale.unsigned_abs(),
        );
        format!("{sign}{major}.{fraction:0width$}", width = digits as usize)
    }
}

/// The largest amount a deal may carry: 10^15 minor units (ten trillion
/// euros in cents), more than any business holds, and small enough that
/// sums over millions of deals stay exact.
pub const MAX_VALUE_MINOR: i64 = 1_000_000_000_000_000;

/// A non-negative amount in minor units of one currency, at most
/// [`MAX_VALUE_MINOR`].
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
        if value_minor > MAX_VALUE_MINOR {
            return Err(format!(
                "value_minor must be at most {MAX_VALUE_MINOR} (10^15 minor units)"
            ));
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
    fn amounts_are_written_in_the_currency_s_own_unit() {
        let code = |c: &str| CurrencyCode::parse(c).expect("a currency");
        assert_eq!(code("EUR").format_minor(123_456), "1234.56");
        assert_eq!(code("EUR").format_minor(5), "0.05");
        assert_eq!(code("JPY").format_minor(123_456), "123456");
        assert_eq!(code("BHD").format_minor(1_234), "1.234");
        assert_eq!(code("EUR").format_minor(-150), "-1.50");
        assert_eq!(
            code("USD").format_minor(i128::from(i64::MAX) * 4),
            "368934881474191032.28"
        );
    }

    #[test]
    fn amounts_must_not_be_negative() {
        let eur = CurrencyCode::parse("EUR").expect("EUR is a currency");
        assert!(Money::new(-1, eur.clone()).is_err());
        assert!(Money::new(0, eur.clone()).is_ok());
    }

    #[test]
    fn amounts_are_bounded_to_what_a_business_can_hold() {
        let eur = CurrencyCode::parse("EUR").expect("EUR is a currency");
        assert!(Money::new(MAX_VALUE_MINOR, eur.clone()).is_ok());
        assert!(Money::new(MAX_VALUE_MINOR + 1, eur.clone()).is_err());
        assert!(Money::new(i64::MAX, eur).is_err());
    }
}
