//! A validated, normalised email address.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address")]
pub struct BadEmail;

impl Email {
    /// Accepts `local@domain.tld` with no spaces or control characters, at most
    /// 254 bytes; the domain is lower-cased (it is case-insensitive), the local
    /// part kept as typed. Deliberately not full RFC 5322: the confirmation
    /// mail is the real check.
    pub fn parse(s: &str) -> Result<Self, BadEmail> {
        let s = s.trim();
        if s.is_empty() || s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(BadEmail);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(BadEmail)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(BadEmail);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err(BadEmail);
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = BadEmail;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_and_lowercases_the_domain() {
        assert_eq!(Email::parse(" Ana@Example.COM ").unwrap().as_str(), "Ana@example.com");
        assert!(Email::parse("a.b+tag@sub.example.org").is_ok());
    }

    #[test]
    fn rejects_what_cannot_be_delivered() {
        for bad in ["", "plain", "@example.com", "a@", "a@b", "a b@c.de", "a@-x.com", "a@x..com"] {
            assert_eq!(Email::parse(bad), Err(BadEmail), "{bad:?}");
        }
    }
}
