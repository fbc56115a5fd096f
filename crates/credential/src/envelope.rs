//! The QR text: `EN1:` + base45 of a CBOR array `[credential]` (static) or `[credential, step, proof]` (rotating).

use ciborium::Value;

use crate::{Presentation, QR_PREFIX, base45};

/// A CBOR head (RFC 8949 §3): major type and argument, shortest form.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xFF => out.extend([m | 24, arg as u8]),
        0x100..=0xFFFF => {
            out.push(m | 25);
            out.extend((arg as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(m | 26);
            out.extend((arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(arg.to_be_bytes());
        }
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// Written by hand rather than through a CBOR value so the bytes are deterministic by construction.
pub(crate) fn encode(credential: &[u8], proof: Option<(i64, &[u8; 64])>) -> String {
    let mut out = Vec::with_capacity(credential.len() + 80);
    match proof {
        None => {
            head(&mut out, 4, 1);
            bytes(&mut out, credential);
        }
        Some((step, sig)) => {
            head(&mut out, 4, 3);
            bytes(&mut out, credential);
            if step >= 0 {
                head(&mut out, 0, step.unsigned_abs());
            } else {
                // CBOR negative integers carry -1 - n.
                head(&mut out, 1, (-1 - step).unsigned_abs());
            }
            bytes(&mut out, sig);
        }
    }
    let mut text = String::from(QR_PREFIX);
    text.push_str(&base45::encode(&out));
    text
}

/// `None` for anything but the exact shape above, including trailing bytes.
pub(crate) fn decode(text: &str) -> Option<Presentation> {
    let raw = base45::decode(text.strip_prefix(QR_PREFIX)?)?;
    let mut rest = raw.as_slice();
    let value: Value = ciborium::from_reader(&mut rest).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let Value::Array(items) = value else { return None };
    let mut items = items.into_iter();
    let credential = items.next()?.into_bytes().ok()?;
    let proof = match (items.next(), items.next(), items.next()) {
        (None, _, _) => None,
        (Some(step), Some(sig), None) => {
            let step = i64::try_from(step.as_integer()?).ok()?;
            let sig: [u8; 64] = sig.into_bytes().ok()?.try_into().ok()?;
            Some((step, sig))
        }
        _ => return None,
    };
    Some(Presentation { credential, proof })
}
