//! Base45 (RFC 9285): bytes as text made only of characters an alphanumeric QR code stores at 5.5 bits each.

/// The 45 characters, in value order; all of them are in the QR alphanumeric set.
pub(crate) const ALPHABET: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

/// Encodes every 2 bytes as 3 characters (a trailing byte as 2), least significant digit first.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(2) * 3);
    let mut push = |value: usize, digits: usize| {
        let mut v = value;
        for _ in 0..digits {
            out.push(char::from(ALPHABET[v % 45]));
            v /= 45;
        }
    };
    for chunk in bytes.chunks(2) {
        match *chunk {
            [a, b] => push(usize::from(a) * 256 + usize::from(b), 3),
            [a] => push(usize::from(a), 2),
            _ => {}
        }
    }
    out
}

fn digit(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).and_then(|p| u32::try_from(p).ok())
}

/// Decodes base45 text; `None` for a character outside the alphabet, a dangling single character, or a group
/// whose value does not fit its bytes.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    let mut out = Vec::with_capacity(text.len() / 3 * 2 + 1);
    for chunk in text.chunks(3) {
        match *chunk {
            [c, d, e] => {
                let v = digit(c)? + digit(d)? * 45 + digit(e)? * 45 * 45;
                let [_, _, hi, lo] = v.to_be_bytes();
                if v > 0xFFFF {
                    return None;
                }
                out.push(hi);
                out.push(lo);
            }
            [c, d] => {
                let v = digit(c)? + digit(d)? * 45;
                out.push(u8::try_from(v).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of RFC 9285 section 4.3 and 4.4 encode and decode as the RFC says.
    #[test]
    fn rfc_9285_examples() {
        assert_eq!(encode(b"AB"), "BB8");
        assert_eq!(encode(b"Hello!!"), "%69 VD92EX0");
        assert_eq!(encode(b"base-45"), "UJCLQE7W581");
        assert_eq!(decode("QED8WEX0").as_deref(), Some(&b"ietf!"[..]));
        assert_eq!(decode("").as_deref(), Some(&b""[..]));
    }

    /// Text that is not base45 is refused rather than decoded to something.
    #[test]
    fn invalid_text_is_refused() {
        assert_eq!(decode("GGW"), None, "65536 does not fit two bytes");
        assert_eq!(decode("A"), None, "a single trailing character");
        assert_eq!(decode("ab"), None, "lower case is outside the alphabet");
        assert_eq!(decode("Ü0"), None);
        assert_eq!(decode("::"), None, "44 + 44*45 does not fit one byte");
    }

    /// Every byte string survives a round trip, and the text stays inside the alphabet.
    #[test]
    fn round_trip() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for n in 0..bytes.len() {
            let text = encode(&bytes[..n]);
            assert!(text.bytes().all(|c| ALPHABET.contains(&c)));
            assert_eq!(decode(&text).as_deref(), Some(&bytes[..n]));
        }
    }
}
