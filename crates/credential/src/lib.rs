//! Entrada's ticket credential: a CWT in a COSE_Sign1 signed by the event's Ed25519 key, plus the holder
//! device's rotating proof, carried base45-encoded in an alphanumeric QR code.
//!
//! Pure: no I/O, no clock reads (time is a parameter), no async. The server issues and verifies online with it,
//! the scanner verifies offline with it, and `vectors/vectors.json` pins the format for other implementations.
//! The format is specified in `docs/credential.md`.

mod base45;
mod claims;
mod envelope;
mod verify;

use std::collections::HashMap;

use coset::{TaggedCborSerializable, iana};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// Domain separation of the holder proof, so no other signature by a device key can pass for one.
pub const PROOF_DOMAIN: &[u8; 28] = b"entrada/credential-proof/v1\0";

/// CBOR bytes of a value; writing into a Vec cannot fail.
fn cbor_bytes(value: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR into a Vec cannot fail");
    out
}

/// The rotation period of a holder's proof, in seconds.
pub const STEP_SECONDS: i64 = 15;

/// The prefix of every QR text this crate produces ("Entrada, format 1").
pub const QR_PREFIX: &str = "EN1:";

/// What the event's issuing key signs: the CWT claims of one ticket for one holder generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The ticket's id (UUID bytes), CWT `cti`.
    pub ticket_id: [u8; 16],
    /// The event the ticket admits to (UUID bytes).
    pub event_id: [u8; 16],
    /// The ticket type (UUID bytes): the gate looks up its zones and entry policy.
    pub ticket_type_id: [u8; 16],
    /// Zone codes the ticket admits to, as named by the organizer.
    pub zones: Vec<String>,
    /// The holder generation: bumped on gift, resale or export, so older credentials can be refused.
    pub generation: u32,
    /// First valid instant, unix seconds (CWT `nbf`, inclusive).
    pub not_before: i64,
    /// End of validity, unix seconds (CWT `exp`, exclusive).
    pub expires_at: i64,
    /// The holder device's Ed25519 public key (CWT `cnf`). `None` marks a static credential for printed
    /// tickets, which needs no proof.
    pub holder_key: Option<[u8; 32]>,
    /// Issue instant, unix seconds (CWT `iat`).
    pub issued_at: i64,
}

/// Signs `claims` with the event's issuing key: tagged COSE_Sign1 bytes, alg EdDSA, `kid` in the protected header.
pub fn issue(claims: &Claims, key: &SigningKey, kid: &[u8]) -> Vec<u8> {
    let protected = coset::HeaderBuilder::new().algorithm(iana::Algorithm::EdDSA).key_id(kid.to_vec()).build();
    let payload = cbor_bytes(&claims::to_value(claims));
    let sign1 = coset::CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(&[], |tbs| key.sign(tbs).to_bytes().to_vec())
        .build();
    // Serializing a COSE_Sign1 of byte strings and an integer/bytes header into a Vec cannot fail.
    sign1.to_tagged_vec().expect("a COSE_Sign1 of byte strings serializes")
}

/// A short key id for an issuing key: the first 8 bytes of SHA-256 over the public key.
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// SHA-256 of the exact credential bytes: what the holder's proof binds to and what revocation lists name.
pub fn credential_hash(credential: &[u8]) -> [u8; 32] {
    Sha256::digest(credential).into()
}

/// The 15-second time step an instant (unix seconds) falls in; floors toward negative infinity.
pub fn time_step(unix: i64) -> i64 {
    unix.div_euclid(STEP_SECONDS)
}

/// The holder device's proof for `step`: an Ed25519 signature over the domain-separated
/// `(credential hash, step)` (see [`proof_message`]).
pub fn prove(credential: &[u8], device: &SigningKey, step: i64) -> [u8; 64] {
    device.sign(&proof_message(&credential_hash(credential), step)).to_bytes()
}

/// The exact bytes a holder proof signs: `"entrada/credential-proof/v1" || 0x00 || hash (32) || step (i64 BE)`.
pub fn proof_message(credential_hash: &[u8; 32], step: i64) -> [u8; 68] {
    let mut msg = [0u8; 68];
    msg[..PROOF_DOMAIN.len()].copy_from_slice(PROOF_DOMAIN);
    msg[PROOF_DOMAIN.len()..PROOF_DOMAIN.len() + 32].copy_from_slice(credential_hash);
    msg[PROOF_DOMAIN.len() + 32..].copy_from_slice(&step.to_be_bytes());
    msg
}

/// The QR text of a rotating credential with its proof for `step`: `EN1:` + base45, alphanumeric-QR-safe.
pub fn encode_rotating(credential: &[u8], step: i64, proof: &[u8; 64]) -> String {
    envelope::encode(credential, Some((step, proof)))
}

/// The QR text of a static credential (printed tickets): `EN1:` + base45, no proof.
pub fn encode_static(credential: &[u8]) -> String {
    envelope::encode(credential, None)
}

/// The parts of a QR text, undecoded beyond the envelope: what a server needs to look up a credential by hash
/// without verifying (verification is [`verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// The credential's exact bytes (tagged COSE_Sign1).
    pub credential: Vec<u8>,
    /// The holder's proof, if any: (time step, signature).
    pub proof: Option<(i64, [u8; 64])>,
}

/// Decodes a QR text's envelope (prefix, base45, outer CBOR) without checking any signature.
pub fn decode(qr_text: &str) -> Result<Presentation, Rejection> {
    envelope::decode(qr_text).ok_or(Rejection::Malformed)
}

/// The public issuing keys a verifier trusts, by key id, each bound to the one event it may sign for.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: HashMap<Vec<u8>, ([u8; 16], VerifyingKey)>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` under `kid` for credentials of `event_id` only. A later insert under the same kid replaces it.
    pub fn insert(&mut self, event_id: [u8; 16], kid: &[u8], key: VerifyingKey) {
        self.keys.insert(kid.to_vec(), (event_id, key));
    }

    /// The event and key trusted under `kid`.
    pub fn get(&self, kid: &[u8]) -> Option<(&[u8; 16], &VerifyingKey)> {
        self.keys.get(kid).map(|(event, key)| (event, key))
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Everything a verification depends on besides the QR text.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    /// The event this gate admits to.
    pub event_id: [u8; 16],
    /// Trusted issuing keys.
    pub keys: &'a KeyRing,
    /// The verifier's time, unix seconds.
    pub now: i64,
}

/// A credential that passed every check of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed claims.
    pub claims: Claims,
    /// The issuing key's id.
    pub kid: Vec<u8>,
    /// [`credential_hash`] of the credential bytes.
    pub credential_hash: [u8; 32],
    /// The proof's time step for a rotating credential; `None` for a static one.
    pub proof_step: Option<i64>,
}

/// Why a QR text was refused, in the order the checks run (see `docs/credential.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not a QR text of this format: prefix, base45, CBOR, COSE or claims do not parse.
    Malformed,
    /// The protected header names an algorithm other than EdDSA, or none.
    WrongAlgorithm,
    /// The key id is not in the key ring.
    UnknownKey,
    /// The issuer signature does not verify (flipped byte, truncated, wrong key).
    BadSignature,
    /// Authentic, but for another event (or signed by another event's key).
    WrongEvent,
    /// Before the credential's `not_before`.
    NotYetValid,
    /// At or after the credential's `expires_at`.
    Expired,
    /// A rotating credential presented without its holder proof (e.g. the bare credential was copied).
    MissingProof,
    /// The holder proof's signature does not verify.
    BadProof,
    /// A genuine proof 30 to 59 seconds old: a replayed screenshot or capture.
    StaleProof,
    /// A genuine proof too far from the verifier's time in either direction: the device clock is off by a minute
    /// or more.
    ClockSkew,
}

impl Rejection {
    /// Every rejection, in check order.
    pub const ALL: [Rejection; 11] = [
        Rejection::Malformed,
        Rejection::WrongAlgorithm,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::WrongEvent,
        Rejection::NotYetValid,
        Rejection::Expired,
        Rejection::MissingProof,
        Rejection::BadProof,
        Rejection::StaleProof,
        Rejection::ClockSkew,
    ];

    /// The stable snake_case code (`bad_signature`, `stale_proof`, …) used on the wire and in vectors.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::WrongAlgorithm => "wrong_algorithm",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongEvent => "wrong_event",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::Expired => "expired",
            Rejection::MissingProof => "missing_proof",
            Rejection::BadProof => "bad_proof",
            Rejection::StaleProof => "stale_proof",
            Rejection::ClockSkew => "clock_skew",
        }
    }

    /// The rejection with this code.
    pub fn from_code(code: &str) -> Option<Rejection> {
        Rejection::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for Rejection {}

/// Verifies a QR text completely: envelope, issuer signature (before any claim is trusted), event, validity
/// window and, for a rotating credential, the holder's proof and its time step. Never panics.
///
/// It does not know about revocation, generations superseded, zones or entry history: the caller checks those
/// against [`Verified`].
pub fn verify(qr_text: &str, ctx: &VerifyContext) -> Result<Verified, Rejection> {
    verify::one(qr_text, ctx)
}

/// [`verify`] over many QR texts; the answer at index `i` is exactly what `verify(items[i], ctx)` returns.
/// Signatures are checked together with Ed25519 batch verification where the "batch" feature is on, falling back
/// to one-by-one verification to attribute failures.
pub fn verify_batch(items: &[&str], ctx: &VerifyContext) -> Vec<Result<Verified, Rejection>> {
    verify::batch(items, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(holder: Option<[u8; 32]>) -> Claims {
        Claims {
            ticket_id: [1; 16],
            event_id: [2; 16],
            ticket_type_id: [3; 16],
            zones: vec!["FLOOR".into(), "NORTH-STAND".into()],
            generation: 7,
            not_before: 1_780_000_000,
            expires_at: 1_780_100_000,
            holder_key: holder,
            issued_at: 1_779_000_000,
        }
    }

    /// Time steps are 15-second buckets that floor toward negative infinity, so instants before 1970 cannot alias.
    #[test]
    fn time_steps_floor() {
        assert_eq!(time_step(0), 0);
        assert_eq!(time_step(14), 0);
        assert_eq!(time_step(15), 1);
        assert_eq!(time_step(-1), -1);
        assert_eq!(time_step(-15), -1);
        assert_eq!(time_step(-16), -2);
    }

    /// The step policy: ±1 step accepted, 2–3 steps old is a replay, anything further either way is clock skew.
    #[test]
    fn step_policy_table() {
        let now = 1_780_000_007;
        let n = time_step(now);
        let expect = [
            (-6, Err(Rejection::ClockSkew)),
            (-5, Err(Rejection::ClockSkew)),
            (-4, Err(Rejection::ClockSkew)),
            (-3, Err(Rejection::StaleProof)),
            (-2, Err(Rejection::StaleProof)),
            (-1, Ok(())),
            (0, Ok(())),
            (1, Ok(())),
            (2, Err(Rejection::ClockSkew)),
            (3, Err(Rejection::ClockSkew)),
        ];
        for (d, outcome) in expect {
            assert_eq!(verify::step_policy(n + d, now), outcome, "d = {d}");
        }
        assert_eq!(verify::step_policy(i64::MIN, i64::MAX), Err(Rejection::ClockSkew));
        assert_eq!(verify::step_policy(i64::MAX, i64::MIN), Err(Rejection::ClockSkew));
    }

    /// A credential stays small enough for a QR code scanned at a gate: ~250 bytes rotating, ~200 static, and the
    /// QR text uses only the alphanumeric QR character set.
    #[test]
    fn payload_sizes() {
        let issuer = SigningKey::from_bytes(&[9; 32]);
        let device = SigningKey::from_bytes(&[8; 32]);
        let kid = key_id(&issuer.verifying_key());
        let rotating = issue(&claims(Some(device.verifying_key().to_bytes())), &issuer, &kid);
        let fixed = issue(&claims(None), &issuer, &kid);
        assert!((150..=250).contains(&rotating.len()), "rotating credential is {} bytes", rotating.len());
        assert!((150..=250).contains(&fixed.len()), "static credential is {} bytes", fixed.len());
        let text = encode_rotating(&rotating, 5, &prove(&rotating, &device, 5));
        assert!(text.len() < 500, "rotating QR text is {} characters", text.len());
        assert!(text.bytes().all(|c| b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(&c)));
    }

    /// The proof signs the documented bytes: domain, hash, big-endian step; the same bytes verify under the device key.
    #[test]
    fn proof_signs_the_documented_message() {
        let device = SigningKey::from_bytes(&[8; 32]);
        let credential = b"any credential bytes";
        let msg = proof_message(&credential_hash(credential), -2);
        assert_eq!(&msg[..28], b"entrada/credential-proof/v1\0");
        assert_eq!(&msg[28..60], &credential_hash(credential));
        assert_eq!(&msg[60..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        let proof = ed25519_dalek::Signature::from_bytes(&prove(credential, &device, -2));
        assert!(device.verifying_key().verify_strict(&msg, &proof).is_ok());
    }

    /// Issuing then decoding and parsing gives back the same claims, and every rejection code round-trips.
    #[test]
    fn claims_and_codes_round_trip() {
        for holder in [None, Some([5; 32])] {
            let c = claims(holder);
            let mut rest = &cbor_bytes(&claims::to_value(&c))[..];
            let value: ciborium::Value = ciborium::from_reader(&mut rest).expect("CBOR");
            assert_eq!(claims::from_value(value), Some(c));
        }
        for r in Rejection::ALL {
            assert_eq!(Rejection::from_code(r.code()), Some(r));
        }
        assert_eq!(Rejection::from_code("ok"), None);
    }

    /// Negative steps survive the QR envelope.
    #[test]
    fn envelope_round_trip() {
        for step in [0, 1, 23, 24, 255, 256, 65_536, -1, -24, -25, i64::MIN, i64::MAX] {
            let text = encode_rotating(b"cred", step, &[7; 64]);
            let p = decode(&text).expect("decodes");
            assert_eq!(p, Presentation { credential: b"cred".to_vec(), proof: Some((step, [7; 64])) });
        }
        assert_eq!(decode(&encode_static(b"")).expect("decodes").proof, None);
    }
}
