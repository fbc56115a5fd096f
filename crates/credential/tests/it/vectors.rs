//! The committed test vectors (`vectors/vectors.json`): every one verifies to its expected outcome, and the file is
//! exactly what this generator produces, so any change to the format shows up as a diff of that file.
//!
//! To rewrite the file after an intended format change: `UPDATE_VECTORS=1 cargo test -p entrada-credential`.

use coset::iana;
use entrada_credential::{
    Claims, KeyRing, Rejection, VerifyContext, credential_hash, encode_rotating, encode_static, issue, prove,
    time_step, verify, verify_batch,
};
use serde_json::{Value, json};

use crate::fixtures::*;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/vectors.json");

/// One trusted key of a vector's key ring.
struct Key {
    event_id: [u8; 16],
    kid: Vec<u8>,
    public_key: [u8; 32],
}

struct Case {
    name: &'static str,
    description: &'static str,
    qr: String,
    now: i64,
    keys: Vec<Key>,
    /// `Ok(proof step)` with the fixed rotating or static claims, or the rejection.
    expect: Result<(Claims, Option<i64>), Rejection>,
}

fn gate_keys() -> Vec<Key> {
    vec![Key { event_id: EVENT, kid: kid(), public_key: issuer().verifying_key().to_bytes() }]
}

fn case(
    name: &'static str,
    description: &'static str,
    qr: String,
    expect: Result<(Claims, Option<i64>), Rejection>,
) -> Case {
    Case { name, description, qr, now: NOW, keys: gate_keys(), expect }
}

fn flip(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[at] ^= 0x01;
    bytes
}

fn cases() -> Vec<Case> {
    use Rejection::*;
    let cred = credential();
    let step = time_step(NOW);
    let ok = |s: i64| Ok((claims(), Some(s)));
    let static_cred = issue(&static_claims(), &issuer(), &kid());
    let payload_at = cred.windows(16).position(|w| w == [0x11; 16]).expect("ticket id inside the payload");
    let other_event_claims = Claims { event_id: OTHER_EVENT, ..claims() };
    let mut cases = vec![
        case(
            "rotating_ok",
            "A rotating credential with a proof for the verifier's own step.",
            shown_at(&cred, NOW),
            ok(step),
        ),
        case(
            "rotating_device_10s_ahead",
            "The device clock is 10 s ahead: accepted.",
            shown_at(&cred, NOW + 10),
            ok(time_step(NOW + 10)),
        ),
        case(
            "rotating_device_10s_behind",
            "The device clock is 10 s behind: accepted.",
            shown_at(&cred, NOW - 10),
            ok(time_step(NOW - 10)),
        ),
        case(
            "static_ok",
            "A static credential (no holder key) needs no proof.",
            encode_static(&static_cred),
            Ok((static_claims(), None)),
        ),
        case("replay_after_30s", "A QR captured 30 s ago and shown again.", shown_at(&cred, NOW - 30), Err(StaleProof)),
        case("replay_after_45s", "A QR captured 45 s ago and shown again.", shown_at(&cred, NOW - 45), Err(StaleProof)),
        case(
            "device_60s_behind",
            "The device clock is a minute behind (reads like a replay older than a minute).",
            shown_at(&cred, NOW - 60),
            Err(ClockSkew),
        ),
        case("device_60s_ahead", "The device clock is a minute ahead.", shown_at(&cred, NOW + 60), Err(ClockSkew)),
        case(
            "device_30s_ahead",
            "A proof two steps in the future cannot be a replay: the device clock is ahead.",
            shown_at(&cred, NOW + 30),
            Err(ClockSkew),
        ),
        case(
            "missing_proof",
            "A rotating credential presented bare, as if printed.",
            encode_static(&cred),
            Err(MissingProof),
        ),
        case(
            "proof_by_other_device",
            "The proof is signed by a device key other than the credential's holder key.",
            encode_rotating(&cred, step, &prove(&cred, &other_holder(), step)),
            Err(BadProof),
        ),
        case(
            "proof_step_relabelled",
            "A 30 s old proof relabelled with the current step.",
            encode_rotating(&cred, step, &prove(&cred, &holder(), step - 2)),
            Err(BadProof),
        ),
        case(
            "proof_for_other_credential",
            "A proof over another credential's hash.",
            encode_rotating(&cred, step, &prove(&static_cred, &holder(), step)),
            Err(BadProof),
        ),
        case(
            "static_with_proof",
            "A static credential carries no proof; one attached was not made by an issuer.",
            encode_rotating(&static_cred, step, &prove(&static_cred, &holder(), step)),
            Err(Malformed),
        ),
        case(
            "flipped_payload_byte",
            "One bit of the ticket id inside the signed payload flipped.",
            shown_at(&flip(cred.clone(), payload_at), NOW),
            Err(BadSignature),
        ),
        case(
            "flipped_signature_byte",
            "One bit of the issuer signature flipped.",
            shown_at(&flip(cred.clone(), cred.len() - 10), NOW),
            Err(BadSignature),
        ),
        case(
            "wrong_key",
            "Signed by another key under the event key's id.",
            shown_at(&issue(&claims(), &other_issuer(), &kid()), NOW),
            Err(BadSignature),
        ),
        case(
            "truncated_signature",
            "The issuer signature cut to 63 bytes.",
            shown_at(
                &edit_cose(&cred, |s| {
                    s.signature.pop();
                }),
                NOW,
            ),
            Err(BadSignature),
        ),
        case(
            "empty_signature",
            "The issuer signature removed.",
            shown_at(&edit_cose(&cred, |s| s.signature.clear()), NOW),
            Err(BadSignature),
        ),
        case(
            "unknown_kid",
            "Signed by a key the gate does not know.",
            shown_at(&issue(&claims(), &other_issuer(), &other_kid()), NOW),
            Err(UnknownKey),
        ),
        case(
            "no_algorithm",
            "No alg in the protected header (an 'alg none' attempt).",
            shown_at(&with_header(None, None), NOW),
            Err(WrongAlgorithm),
        ),
        case(
            "alg_text_none",
            "alg given as the text \"none\".",
            shown_at(&with_header(None, Some("none")), NOW),
            Err(WrongAlgorithm),
        ),
        case(
            "alg_es256",
            "alg ES256 (-7) instead of EdDSA.",
            shown_at(&with_header(Some(iana::Algorithm::ES256), None), NOW),
            Err(WrongAlgorithm),
        ),
        case(
            "unprotected_header_added",
            "An unsigned header added to a genuine credential.",
            shown_at(&edit_cose(&cred, |s| s.unprotected.key_id = b"x".to_vec()), NOW),
            Err(Malformed),
        ),
        case(
            "detached_payload",
            "The payload removed (detached).",
            shown_at(&edit_cose(&cred, |s| s.payload = None), NOW),
            Err(Malformed),
        ),
        case(
            "untagged_cose",
            "The COSE_Sign1 without its CBOR tag 18.",
            shown_at(&untagged(&cred), NOW),
            Err(Malformed),
        ),
        case(
            "wrong_event",
            "A genuine credential of another event, whose key the gate also knows.",
            shown_at(&issue(&other_event_claims, &other_issuer(), &other_kid()), NOW),
            Err(WrongEvent),
        ),
        case(
            "key_of_other_event",
            "Claims name this event but are signed by another event's key.",
            shown_at(&issue(&claims(), &other_issuer(), &other_kid()), NOW),
            Err(WrongEvent),
        ),
        case("expired", "Shown at the credential's expiry instant (exclusive).", String::new(), Err(Expired)),
        case("not_yet_valid", "Shown one second before the credential's not-before.", String::new(), Err(NotYetValid)),
        case("empty_input", "An empty QR text.", String::new(), Err(Malformed)),
        case("garbage", "Text that is not this format.", "HELLO WORLD".into(), Err(Malformed)),
        case("prefix_only", "The prefix and nothing else.", "EN1:".into(), Err(Malformed)),
        case("not_base45", "Lower-case letters are outside the base45 alphabet.", "EN1:abc".into(), Err(Malformed)),
        case(
            "truncated_text",
            "A QR text cut in the middle.",
            {
                let t = shown_at(&cred, NOW);
                t[..t.len() / 2].to_string()
            },
            Err(Malformed),
        ),
    ];
    for c in &mut cases {
        match c.name {
            "wrong_event" | "key_of_other_event" => c.keys.push(Key {
                event_id: OTHER_EVENT,
                kid: other_kid(),
                public_key: other_issuer().verifying_key().to_bytes(),
            }),
            "expired" => {
                c.now = claims().expires_at;
                c.qr = shown_at(&cred, c.now);
            }
            "not_yet_valid" => {
                c.now = claims().not_before - 1;
                c.qr = shown_at(&cred, c.now);
            }
            _ => {}
        }
    }
    cases
}

fn claims_json(c: &Claims) -> Value {
    json!({
        "ticket_id": hex::encode(c.ticket_id),
        "event_id": hex::encode(c.event_id),
        "ticket_type_id": hex::encode(c.ticket_type_id),
        "zones": c.zones,
        "generation": c.generation,
        "not_before": c.not_before,
        "expires_at": c.expires_at,
        "holder_key": c.holder_key.map(hex::encode),
        "issued_at": c.issued_at,
    })
}

fn generate() -> Value {
    let vectors: Vec<Value> = cases()
        .into_iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "description": c.description,
                "now": c.now,
                "event_id": hex::encode(EVENT),
                "keys": c.keys.iter().map(|k| json!({
                    "event_id": hex::encode(k.event_id),
                    "kid": hex::encode(&k.kid),
                    "public_key": hex::encode(k.public_key),
                })).collect::<Vec<_>>(),
                "qr": c.qr,
            });
            match &c.expect {
                Ok((claims, proof_step)) => {
                    let presented = entrada_credential::decode(&c.qr).expect("a valid vector decodes");
                    v["expect"] = json!("ok");
                    v["claims"] = claims_json(claims);
                    v["kid"] = json!(hex::encode(kid()));
                    v["proof_step"] = json!(proof_step);
                    v["credential_hash"] = json!(hex::encode(credential_hash(&presented.credential)));
                }
                Err(r) => v["expect"] = json!(r.code()),
            }
            v
        })
        .collect();
    json!({
        "format": "EN1",
        "about": "Entrada ticket credential vectors; see docs/credential.md. Seeds are Ed25519 secret keys (RFC 8032).",
        "step_seconds": entrada_credential::STEP_SECONDS,
        "issuer_seed": hex::encode(ISSUER_SEED),
        "other_issuer_seed": hex::encode(OTHER_ISSUER_SEED),
        "holder_seed": hex::encode(HOLDER_SEED),
        "other_holder_seed": hex::encode(OTHER_HOLDER_SEED),
        "vectors": vectors,
    })
}

fn committed() -> Value {
    let text = std::fs::read_to_string(PATH).expect("vectors/vectors.json is committed");
    serde_json::from_str(&text).expect("vectors/vectors.json is JSON")
}

fn hex_array<const N: usize>(v: &Value) -> [u8; N] {
    hex::decode(v.as_str().expect("hex string")).expect("hex").try_into().expect("length")
}

fn ring_of(vector: &Value) -> KeyRing {
    let mut ring = KeyRing::new();
    for k in vector["keys"].as_array().expect("keys") {
        let public = entrada_credential::VerifyingKey::from_bytes(&hex_array(&k["public_key"])).expect("a valid key");
        ring.insert(hex_array(&k["event_id"]), &hex::decode(k["kid"].as_str().expect("kid")).expect("hex"), public);
    }
    ring
}

/// What a verifier reports for a vector, in the vectors' own terms: "ok" plus what it read, or the code.
fn outcome(result: &Result<entrada_credential::Verified, Rejection>) -> Value {
    match result {
        Ok(v) => json!({
            "expect": "ok",
            "claims": claims_json(&v.claims),
            "kid": hex::encode(&v.kid),
            "proof_step": v.proof_step,
            "credential_hash": hex::encode(v.credential_hash),
        }),
        Err(r) => json!({ "expect": r.code() }),
    }
}

fn expected(vector: &Value) -> Value {
    let mut e = json!({ "expect": vector["expect"] });
    if vector["expect"] == "ok" {
        for field in ["claims", "kid", "proof_step", "credential_hash"] {
            e[field] = vector[field].clone();
        }
    }
    e
}

/// Every committed vector verifies to exactly its expected outcome: the claims read for the valid ones, the
/// rejection code for every forgery, replay and skew.
#[test]
fn every_committed_vector_verifies_as_expected() {
    let file = committed();
    let vectors = file["vectors"].as_array().expect("vectors");
    assert!(vectors.len() >= 30);
    for vector in vectors {
        let ring = ring_of(vector);
        let ctx = VerifyContext {
            event_id: hex_array(&vector["event_id"]),
            keys: &ring,
            now: vector["now"].as_i64().expect("now"),
        };
        let result = verify(vector["qr"].as_str().expect("qr"), &ctx);
        assert_eq!(outcome(&result), expected(vector), "vector {}", vector["name"]);
    }
}

/// Verifying all vectors of one key ring in one batch gives, item by item, the same answers as one by one: a
/// forged item in a batch neither hides nor spoils the others.
#[test]
fn batch_verification_agrees_with_single_verification_on_the_vectors() {
    let file = committed();
    let vectors: Vec<&Value> = file["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .filter(|v| v["now"].as_i64() == Some(NOW) && v["keys"].as_array().map(Vec::len) == Some(1))
        .collect();
    let ring = ring();
    let ctx = ctx(&ring, NOW);
    let texts: Vec<&str> = vectors.iter().map(|v| v["qr"].as_str().expect("qr")).collect();
    // Repeat the set so the good items form batches large enough to be verified together.
    let many: Vec<&str> = texts.iter().copied().cycle().take(texts.len() * 5).collect();
    let batch = verify_batch(&many, &ctx);
    for (text, result) in many.iter().zip(&batch) {
        assert_eq!(result, &verify(text, &ctx), "{text}");
    }
    let goods: Vec<&str> = vec![texts[0]; 64];
    assert!(verify_batch(&goods, &ctx).iter().all(Result::is_ok));
    assert!(verify_batch(&[], &ctx).is_empty());
}

/// The committed vectors are exactly what the code produces today: a format change is a visible diff of the
/// vector file (set UPDATE_VECTORS=1 to rewrite it on purpose).
#[test]
fn committed_vectors_match_the_code() {
    let produced = generate();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&produced).expect("serializes") + "\n";
        std::fs::write(PATH, text).expect("writes the vector file");
    }
    assert_eq!(committed(), produced, "vectors/vectors.json differs from what the code produces");
}
