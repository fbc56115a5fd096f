//! Money as integer minor units with a currency (invariant 6 of the brief).

use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 alphabetic code: exactly three ASCII upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([b[0], b[1], b[2]]))
        } else {
            Err(MoneyError::BadCurrency)
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

/// An amount in minor units (cents). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be a three-letter ISO 4217 code")]
    BadCurrency,
    #[error("currencies differ")]
    CurrencyMismatch,
    #[error("amount out of range")]
    Overflow,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    pub fn checked_mul(self, n: i64) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(n).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    /// `self × bps / 10 000`, rounded half away from zero, for fees and royalties.
    pub fn basis_points(self, bps: u32) -> Result<Money, MoneyError> {
        let wide = i128::from(self.minor) * i128::from(bps);
        let q = (wide + wide.signum() * 5_000) / 10_000;
        let minor = i64::try_from(q).map_err(|_| MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "E1R", ""] {
            assert_eq!(Currency::parse(bad), Err(MoneyError::BadCurrency), "{bad}");
        }
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies_and_overflow() {
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(Money::new(1, eur).checked_add(Money::new(1, usd)), Err(MoneyError::CurrencyMismatch));
        assert_eq!(Money::new(i64::MAX, eur).checked_add(Money::new(1, eur)), Err(MoneyError::Overflow));
        assert_eq!(Money::new(2500, eur).checked_mul(3).unwrap().minor, 7500);
        assert_eq!(Money::new(1999, eur).basis_points(1000).unwrap().minor, 200);
    }
}
