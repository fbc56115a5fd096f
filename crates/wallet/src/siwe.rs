//! Sign-In with Ethereum (EIP-4361): a strict parser and printer of the
//! message, and signer recovery over its EIP-191 form. Pure: time, domain and
//! nonce checks against server state happen in the service.
//!
//! Written here rather than taken from a crate: the grammar is small and
//! exact, and a strict parser (one layout, every field in its place, no
//! trailing text) leaves no room for two readers of one message to disagree.
//!
//! ```text
//! [scheme "://"] domain " wants you to sign in with your Ethereum account:" LF
//! address LF
//! LF
//! [statement LF]
//! LF
//! "URI: " uri LF
//! "Version: 1" LF
//! "Chain ID: " chain-id LF
//! "Nonce: " nonce LF
//! "Issued At: " issued-at
//! [LF "Expiration Time: " expiration-time]
//! [LF "Not Before: " not-before]
//! [LF "Request ID: " request-id]
//! [LF "Resources:" *(LF "- " uri)]
//! ```

use alloy::primitives::{Address, Signature};
use entrada_primitives::clock::{parse_rfc3339, rfc3339};
use std::fmt;
use time::OffsetDateTime;

const PREAMBLE: &str = " wants you to sign in with your Ethereum account:";

/// A parsed EIP-4361 message. Printing it ([`fmt::Display`]) gives the exact
/// text a wallet signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    pub scheme: Option<String>,
    /// RFC 3986 authority: host and optional port.
    pub domain: String,
    pub address: Address,
    pub statement: Option<String>,
    pub uri: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at: OffsetDateTime,
    pub expiration_time: Option<OffsetDateTime>,
    pub not_before: Option<OffsetDateTime>,
    pub request_id: Option<String>,
    pub resources: Vec<String>,
}

/// Why a message is not a well-formed EIP-4361 message; the text says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an EIP-4361 message: {0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

impl SiweMessage {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.contains('\r') {
            return err("lines must end with LF only");
        }
        let mut lines = text.split('\n').peekable();
        let mut next = |what: &str| lines.next().ok_or_else(|| ParseError(format!("ends before {what}")));

        let first = next("the preamble")?;
        let Some(origin) = first.strip_suffix(PREAMBLE) else {
            return err(format!("the first line must end with `{PREAMBLE}`"));
        };
        let (scheme, domain) = match origin.split_once("://") {
            Some((s, d)) => {
                if !valid_scheme(s) {
                    return err("malformed scheme");
                }
                (Some(s.to_owned()), d)
            }
            None => (None, origin),
        };
        if !valid_authority(domain) {
            return err("malformed domain");
        }
        let address = parse_checksummed(next("the address")?)?;
        if !next("the blank line")?.is_empty() {
            return err("a blank line must follow the address");
        }
        let mut line = next("the statement or URI")?;
        let statement = if line.is_empty() {
            None
        } else {
            if !valid_statement(line) {
                return err("the statement has characters outside the allowed set");
            }
            let s = line.to_owned();
            if !next("the blank line")?.is_empty() {
                return err("a blank line must follow the statement");
            }
            Some(s)
        };
        if statement.is_none() {
            // Without a statement the grammar still has its blank line.
            line = next("the URI")?;
            if line.is_empty() {
                return err("too many blank lines before the URI");
            }
        } else {
            line = next("the URI")?;
        }
        let uri = field(line, "URI: ")?;
        if !valid_uri(uri) {
            return err("malformed URI");
        }
        if field(next("the version")?, "Version: ")? != "1" {
            return err("the version must be 1");
        }
        let chain = field(next("the chain id")?, "Chain ID: ")?;
        if chain.is_empty() || !chain.bytes().all(|b| b.is_ascii_digit()) || (chain.len() > 1 && chain.starts_with('0'))
        {
            return err("the chain id must be a decimal number");
        }
        let chain_id = chain.parse::<u64>().map_err(|_| ParseError("the chain id is too large".into()))?;
        let nonce = field(next("the nonce")?, "Nonce: ")?;
        if nonce.len() < 8 || nonce.len() > 128 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return err("the nonce must be 8 or more letters and digits");
        }
        let issued_at = time_field(next("the issue time")?, "Issued At: ")?;

        let mut msg = SiweMessage {
            scheme,
            domain: domain.to_owned(),
            address,
            statement,
            uri: uri.to_owned(),
            chain_id,
            nonce: nonce.to_owned(),
            issued_at,
            expiration_time: None,
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        // The optional fields, each at most once and in the grammar's order.
        let mut rest = lines.peekable();
        if let Some(l) = rest.peek()
            && l.starts_with("Expiration Time: ")
        {
            msg.expiration_time = Some(time_field(rest.next().unwrap_or_default(), "Expiration Time: ")?);
        }
        if let Some(l) = rest.peek()
            && l.starts_with("Not Before: ")
        {
            msg.not_before = Some(time_field(rest.next().unwrap_or_default(), "Not Before: ")?);
        }
        if let Some(l) = rest.peek()
            && l.starts_with("Request ID: ")
        {
            let id = field(rest.next().unwrap_or_default(), "Request ID: ")?;
            if !id.chars().all(|c| is_pchar(c) || c == '%') {
                return err("malformed request id");
            }
            msg.request_id = Some(id.to_owned());
        }
        if rest.peek() == Some(&"Resources:") {
            rest.next();
            while let Some(l) = rest.peek() {
                let Some(r) = l.strip_prefix("- ") else { break };
                if !valid_uri(r) {
                    return err("malformed resource URI");
                }
                msg.resources.push(r.to_owned());
                rest.next();
            }
        }
        if let Some(l) = rest.next() {
            return err(format!("unexpected line `{}`", l.chars().take(40).collect::<String>()));
        }
        if let Some(exp) = msg.expiration_time
            && exp <= msg.issued_at
        {
            return err("the expiration time is not after the issue time");
        }
        Ok(msg)
    }

    /// The address that signed `text` (this message's exact bytes) with an
    /// EIP-191 personal signature: 65 bytes, `0x`-hex, `v` as 27/28 or 0/1.
    pub fn recover_signer(text: &str, signature_hex: &str) -> Option<Address> {
        let hex = signature_hex.strip_prefix("0x")?;
        let bytes = hex::decode(hex).ok()?;
        let sig = Signature::try_from(bytes.as_slice()).ok()?;
        sig.recover_address_from_msg(text.as_bytes()).ok()
    }
}

impl fmt::Display for SiweMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.scheme {
            write!(f, "{s}://")?;
        }
        writeln!(f, "{}{PREAMBLE}", self.domain)?;
        writeln!(f, "{}", self.address.to_checksum(None))?;
        writeln!(f)?;
        if let Some(s) = &self.statement {
            writeln!(f, "{s}")?;
        }
        writeln!(f)?;
        writeln!(f, "URI: {}", self.uri)?;
        writeln!(f, "Version: 1")?;
        writeln!(f, "Chain ID: {}", self.chain_id)?;
        writeln!(f, "Nonce: {}", self.nonce)?;
        write!(f, "Issued At: {}", rfc3339(self.issued_at))?;
        if let Some(t) = self.expiration_time {
            write!(f, "\nExpiration Time: {}", rfc3339(t))?;
        }
        if let Some(t) = self.not_before {
            write!(f, "\nNot Before: {}", rfc3339(t))?;
        }
        if let Some(r) = &self.request_id {
            write!(f, "\nRequest ID: {r}")?;
        }
        if !self.resources.is_empty() {
            write!(f, "\nResources:")?;
            for r in &self.resources {
                write!(f, "\n- {r}")?;
            }
        }
        Ok(())
    }
}

fn field<'a>(line: &'a str, tag: &str) -> Result<&'a str, ParseError> {
    line.strip_prefix(tag).ok_or_else(|| ParseError(format!("expected `{}`", tag.trim_end())))
}

fn time_field(line: &str, tag: &str) -> Result<OffsetDateTime, ParseError> {
    let v = field(line, tag)?;
    // RFC 3339 `date-time` only: a full date, a `T`, a time and an offset.
    if v.len() < 20 || v.as_bytes().get(10) != Some(&b'T') {
        return err(format!("`{}` must be an RFC 3339 date-time", tag.trim_end_matches(": ")));
    }
    parse_rfc3339(v)
        .ok_or_else(|| ParseError(format!("`{}` must be an RFC 3339 date-time", tag.trim_end_matches(": "))))
}

/// EIP-4361 requires the EIP-55 checksummed form.
fn parse_checksummed(s: &str) -> Result<Address, ParseError> {
    if s.len() != 42 || !s.starts_with("0x") {
        return err("the address must be 0x followed by 40 hexadecimal digits");
    }
    Address::parse_checksummed(s, None).map_err(|_| ParseError("the address must be EIP-55 checksummed".into()))
}

fn valid_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// `[userinfo "@"] host [":" port]`, without spaces or path.
fn valid_authority(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=:@[]".contains(c))
        && !s.contains('/')
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~".contains(c)
}

fn is_pchar(c: char) -> bool {
    is_unreserved(c) || "!$&'()*+,;=:@".contains(c)
}

/// An absolute RFC 3986 URI: a scheme, a colon, then URI characters only.
fn valid_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else { return false };
    valid_scheme(scheme)
        && !rest.is_empty()
        && s.len() <= 2048
        && rest.chars().all(|c| is_pchar(c) || "/?#[]%".contains(c))
}

/// `*( reserved / unreserved / " " )`: printable ASCII without LF.
fn valid_statement(s: &str) -> bool {
    s.chars().all(|c| is_unreserved(c) || ":/?#[]@!$&'()*+,;= ".contains(c))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync as _;
    use alloy::signers::local::PrivateKeySigner;
    use time::macros::datetime;

    fn sample() -> SiweMessage {
        SiweMessage {
            scheme: None,
            domain: "tickets.example.com".into(),
            address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".parse().unwrap(),
            statement: Some("Link this address to your Entrada account.".into()),
            uri: "https://tickets.example.com".into(),
            chain_id: 8453,
            nonce: "32891756abcdef01".into(),
            issued_at: datetime!(2030-06-01 19:00 UTC),
            expiration_time: Some(datetime!(2030-06-01 19:10 UTC)),
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        }
    }

    /// The printed message is the grammar's exact layout and parses back to itself.
    #[test]
    fn prints_and_parses_back() {
        let m = sample();
        let text = m.to_string();
        assert_eq!(
            text,
            "tickets.example.com wants you to sign in with your Ethereum account:\n\
             0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\n\
             Link this address to your Entrada account.\n\n\
             URI: https://tickets.example.com\nVersion: 1\nChain ID: 8453\nNonce: 32891756abcdef01\n\
             Issued At: 2030-06-01T19:00:00Z\nExpiration Time: 2030-06-01T19:10:00Z"
        );
        assert_eq!(SiweMessage::parse(&text).unwrap(), m);
        let full = SiweMessage {
            scheme: Some("https".into()),
            statement: None,
            not_before: Some(datetime!(2030-06-01 19:00 UTC)),
            request_id: Some("req-1".into()),
            resources: vec!["ipfs://bafybei".into(), "https://example.com/my-web2-claim.json".into()],
            ..m
        };
        assert_eq!(SiweMessage::parse(&full.to_string()).unwrap(), full);
    }

    /// The example message of EIP-4361 itself parses.
    #[test]
    fn parses_the_specification_example() {
        let text = "example.com wants you to sign in with your Ethereum account:\n\
            0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n\
            I accept the ExampleOrg Terms of Service: https://example.com/tos\n\n\
            URI: https://example.com/login\nVersion: 1\nChain ID: 1\nNonce: 32891756\n\
            Issued At: 2021-09-30T16:25:24Z\nResources:\n\
            - ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n\
            - https://example.com/my-web2-claim.json";
        let m = SiweMessage::parse(text).unwrap();
        assert_eq!(
            (m.domain.as_str(), m.chain_id, m.nonce.as_str(), m.resources.len()),
            ("example.com", 1, "32891756", 2)
        );
        assert_eq!(m.to_string(), text);
    }

    /// Every deviation from the grammar is refused.
    #[test]
    fn rejects_malformed_messages() {
        let good = sample().to_string();
        let lower =
            good.replace("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed");
        let cases = [
            good.replace(" wants you", " want you"),
            lower,
            good.replace("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
            good.replace("Version: 1", "Version: 2"),
            good.replace("Chain ID: 8453", "Chain ID: 08453"),
            good.replace("Chain ID: 8453", "Chain ID: x"),
            good.replace("Nonce: 32891756abcdef01", "Nonce: short"),
            good.replace("Nonce: 32891756abcdef01", "Nonce: 32891756-bcdef01"),
            good.replace("2030-06-01T19:00:00Z", "2030-06-01"),
            good.replace("Expiration Time: 2030-06-01T19:10:00Z", "Expiration Time: 2030-06-01T18:00:00Z"),
            good.replace("URI: https://tickets.example.com", "URI: not a uri"),
            good.replace('\n', "\r\n"),
            format!("{good}\nExtra: line"),
            format!("{good}\n"),
            good.replace("\n\nURI", "\n\n\nURI"),
            good.replace("account.\n\n", "account.\n"),
            good.replace("Link this", "Link\u{7f} this"),
            String::new(),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(SiweMessage::parse(c).is_err(), "case {i} parsed: {c}");
        }
    }

    /// Recovery returns the signer of exactly these bytes; any change to the text recovers another
    /// address, and malformed signatures recover nothing.
    #[test]
    fn recovers_the_signer() {
        let signer = PrivateKeySigner::random();
        let m = SiweMessage { address: signer.address(), ..sample() };
        let text = m.to_string();
        let sig = signer.sign_message_sync(text.as_bytes()).unwrap();
        let hex = format!("0x{}", hex::encode(sig.as_bytes()));
        assert_eq!(SiweMessage::recover_signer(&text, &hex), Some(signer.address()));
        assert_ne!(SiweMessage::recover_signer(&text.replace("8453", "8454"), &hex), Some(signer.address()));
        assert_eq!(SiweMessage::recover_signer(&text, "0x1234"), None);
        assert_eq!(SiweMessage::recover_signer(&text, &hex[2..]), None);
    }
}
