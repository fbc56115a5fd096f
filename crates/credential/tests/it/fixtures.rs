//! Fixed keys, ids and times shared by the vectors and the property tests, and forgery helpers.

use coset::{CborSerializable, CoseSign1, TaggedCborSerializable, iana};
use ed25519_dalek::Signer;
use entrada_credential::{Claims, KeyRing, SigningKey, VerifyContext, issue, key_id, prove, time_step};

pub const ISSUER_SEED: [u8; 32] = [0x01; 32];
pub const OTHER_ISSUER_SEED: [u8; 32] = [0x02; 32];
pub const HOLDER_SEED: [u8; 32] = [0x03; 32];
pub const OTHER_HOLDER_SEED: [u8; 32] = [0x04; 32];
pub const EVENT: [u8; 16] = [0x22; 16];
pub const OTHER_EVENT: [u8; 16] = [0x77; 16];
/// 2026-05-28T20:26:47Z: 7 seconds into a 15-second step.
pub const NOW: i64 = 1_780_000_007;

pub fn issuer() -> SigningKey {
    SigningKey::from_bytes(&ISSUER_SEED)
}
pub fn other_issuer() -> SigningKey {
    SigningKey::from_bytes(&OTHER_ISSUER_SEED)
}
pub fn holder() -> SigningKey {
    SigningKey::from_bytes(&HOLDER_SEED)
}
pub fn other_holder() -> SigningKey {
    SigningKey::from_bytes(&OTHER_HOLDER_SEED)
}
pub fn kid() -> Vec<u8> {
    key_id(&issuer().verifying_key()).to_vec()
}
pub fn other_kid() -> Vec<u8> {
    key_id(&other_issuer().verifying_key()).to_vec()
}

/// A rotating credential's claims for the fixed event, valid for a day around [`NOW`].
pub fn claims() -> Claims {
    Claims {
        ticket_id: [0x11; 16],
        event_id: EVENT,
        ticket_type_id: [0x33; 16],
        zones: vec!["FLOOR".into(), "NORTH-STAND".into()],
        generation: 2,
        not_before: NOW - 3_600,
        expires_at: NOW + 20 * 3_600,
        holder_key: Some(holder().verifying_key().to_bytes()),
        issued_at: NOW - 86_400,
    }
}

pub fn static_claims() -> Claims {
    Claims { holder_key: None, generation: 0, ..claims() }
}

/// The ring a gate of [`EVENT`] holds: its issuing key only.
pub fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(EVENT, &kid(), issuer().verifying_key());
    ring
}

pub fn ctx(ring: &KeyRing, now: i64) -> VerifyContext<'_> {
    VerifyContext { event_id: EVENT, keys: ring, now }
}

/// The fixed rotating credential.
pub fn credential() -> Vec<u8> {
    issue(&claims(), &issuer(), &kid())
}

/// The QR text the holder's device shows at `device_time`.
pub fn shown_at(credential: &[u8], device_time: i64) -> String {
    let step = time_step(device_time);
    entrada_credential::encode_rotating(credential, step, &prove(credential, &holder(), step))
}

/// Applies `edit` to a credential's parsed COSE_Sign1 and serializes it again (signature untouched unless edited).
pub fn edit_cose(credential: &[u8], edit: impl FnOnce(&mut CoseSign1)) -> Vec<u8> {
    let mut sign1 = CoseSign1::from_tagged_slice(credential).expect("a valid credential");
    edit(&mut sign1);
    sign1.to_tagged_vec().expect("serializes")
}

/// A COSE_Sign1 over the fixed claims with a chosen protected header, signed by the fixed issuer.
pub fn with_header(alg: Option<iana::Algorithm>, text_alg: Option<&str>) -> Vec<u8> {
    let mut header = coset::HeaderBuilder::new().key_id(kid());
    if let Some(alg) = alg {
        header = header.algorithm(alg);
    }
    let mut header = header.build();
    if let Some(text) = text_alg {
        header.alg = Some(coset::RegisteredLabelWithPrivate::Text(text.to_string()));
    }
    let payload = CoseSign1::from_tagged_slice(&credential()).expect("valid").payload.expect("attached");
    coset::CoseSign1Builder::new()
        .protected(header)
        .payload(payload)
        .create_signature(&[], |tbs| issuer().sign(tbs).to_bytes().to_vec())
        .build()
        .to_tagged_vec()
        .expect("serializes")
}

/// Serializes a COSE_Sign1 untagged (the format requires the tag).
pub fn untagged(credential: &[u8]) -> Vec<u8> {
    CoseSign1::from_tagged_slice(credential).expect("valid").to_vec().expect("serializes")
}
