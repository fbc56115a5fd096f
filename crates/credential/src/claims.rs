//! The CWT claims map a credential signs: its CBOR keys and a strict reader that refuses anything unexpected.

use ciborium::Value;
use ciborium::value::Integer;

use crate::Claims;

/// CWT `exp` (RFC 8392).
pub(crate) const EXP: i64 = 4;
/// CWT `nbf`.
pub(crate) const NBF: i64 = 5;
/// CWT `iat`.
pub(crate) const IAT: i64 = 6;
/// CWT `cti`: the ticket id.
pub(crate) const CTI: i64 = 7;
/// CWT `cnf` (RFC 8747): the holder device's key, as `{1: COSE_Key}`.
pub(crate) const CNF: i64 = 8;
/// Private-use claims (keys below -65536 are reserved for private use by RFC 8392).
pub(crate) const EVENT: i64 = -65537;
pub(crate) const TICKET_TYPE: i64 = -65538;
pub(crate) const ZONES: i64 = -65539;
pub(crate) const GENERATION: i64 = -65540;

/// `cnf` member holding a COSE_Key.
const CNF_COSE_KEY: i64 = 1;
/// COSE_Key labels and values for an Ed25519 public key (RFC 9053).
const KTY: i64 = 1;
const KTY_OKP: i64 = 1;
const CRV: i64 = -1;
const CRV_ED25519: i64 = 6;
const X: i64 = -2;

fn int(v: i64) -> Value {
    Value::Integer(Integer::from(v))
}

fn map(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (int(k), v)).collect())
}

/// The claims as a CBOR map, keys in deterministic order (RFC 8949 §4.2.1: by encoded bytes).
pub(crate) fn to_value(claims: &Claims) -> Value {
    let mut entries = vec![
        (EXP, int(claims.expires_at)),
        (NBF, int(claims.not_before)),
        (IAT, int(claims.issued_at)),
        (CTI, Value::Bytes(claims.ticket_id.to_vec())),
    ];
    if let Some(key) = claims.holder_key {
        let cose_key = map(vec![(KTY, int(KTY_OKP)), (CRV, int(CRV_ED25519)), (X, Value::Bytes(key.to_vec()))]);
        entries.push((CNF, map(vec![(CNF_COSE_KEY, cose_key)])));
    }
    entries.extend([
        (EVENT, Value::Bytes(claims.event_id.to_vec())),
        (TICKET_TYPE, Value::Bytes(claims.ticket_type_id.to_vec())),
        (ZONES, Value::Array(claims.zones.iter().cloned().map(Value::Text).collect())),
        (GENERATION, int(i64::from(claims.generation))),
    ]);
    map(entries)
}

/// An integer-keyed map with no duplicate keys; `None` otherwise.
fn int_map(value: Value) -> Option<Vec<(i64, Value)>> {
    let Value::Map(entries) = value else { return None };
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let k = i64::try_from(k.as_integer()?).ok()?;
        if out.iter().any(|(seen, _)| *seen == k) {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

fn take(entries: &mut Vec<(i64, Value)>, key: i64) -> Option<Value> {
    let at = entries.iter().position(|(k, _)| *k == key)?;
    Some(entries.swap_remove(at).1)
}

fn as_i64(value: Value) -> Option<i64> {
    i64::try_from(value.as_integer()?).ok()
}

fn as_array<const N: usize>(value: Value) -> Option<[u8; N]> {
    value.into_bytes().ok()?.try_into().ok()
}

/// Reads a claims map; `None` if a required claim is missing, has the wrong type or size, a key repeats, or a
/// key is unknown (a v1 verifier must not skip a claim it does not understand).
pub(crate) fn from_value(value: Value) -> Option<Claims> {
    let mut entries = int_map(value)?;
    let holder_key = match take(&mut entries, CNF) {
        None => None,
        Some(cnf) => {
            let mut cnf = int_map(cnf)?;
            let mut key = int_map(take(&mut cnf, CNF_COSE_KEY)?)?;
            let ok = cnf.is_empty()
                && as_i64(take(&mut key, KTY)?)? == KTY_OKP
                && as_i64(take(&mut key, CRV)?)? == CRV_ED25519;
            let x = as_array::<32>(take(&mut key, X)?)?;
            if !ok || !key.is_empty() {
                return None;
            }
            Some(x)
        }
    };
    let zones = match take(&mut entries, ZONES)? {
        Value::Array(items) => items.into_iter().map(|z| z.into_text().ok()).collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    let claims = Claims {
        ticket_id: as_array(take(&mut entries, CTI)?)?,
        event_id: as_array(take(&mut entries, EVENT)?)?,
        ticket_type_id: as_array(take(&mut entries, TICKET_TYPE)?)?,
        zones,
        generation: u32::try_from(as_i64(take(&mut entries, GENERATION)?)?).ok()?,
        not_before: as_i64(take(&mut entries, NBF)?)?,
        expires_at: as_i64(take(&mut entries, EXP)?)?,
        holder_key,
        issued_at: as_i64(take(&mut entries, IAT)?)?,
    };
    entries.is_empty().then_some(claims)
}
