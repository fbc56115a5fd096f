//! Verification in three stages, so single and batch verification share every check and its order:
//! the envelope and protected header (no trust needed), the claims (trusted once the issuer signature holds),
//! and the proof's time step (once the proof signature holds).

use coset::{CoseSign1, TaggedCborSerializable, iana};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::{Claims, Rejection, STEP_SECONDS, Verified, VerifyContext, claims, credential_hash, envelope, time_step};

/// A signature check waiting to be run: message, signature, key.
pub(crate) struct Check {
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
}

impl Check {
    /// Strict single verification: also refuses small-order keys and non-canonical signatures.
    fn holds(&self) -> bool {
        self.key.verify_strict(&self.message, &self.signature).is_ok()
    }
}

/// Stage one passed: the issuer signature is the next thing to check.
struct Envelope {
    credential: Vec<u8>,
    kid: Vec<u8>,
    key_event: [u8; 16],
    payload: Vec<u8>,
    proof: Option<(i64, [u8; 64])>,
}

/// Stage two passed (assuming the issuer signature holds): only the proof remains.
struct Claimed {
    verified: Verified,
    proof: Option<(i64, Check)>,
}

/// Parses everything that can be parsed without trusting the issuer: envelope, COSE structure, algorithm, key id.
/// Returns the issuer signature check to run next.
fn envelope(qr_text: &str, ctx: &VerifyContext) -> Result<(Envelope, Check), Rejection> {
    let presentation = envelope::decode(qr_text).ok_or(Rejection::Malformed)?;
    let sign1 = CoseSign1::from_tagged_slice(&presentation.credential).map_err(|_| Rejection::Malformed)?;
    // The credential hash names a credential (revocation, proofs); re-encoding the same signed content
    // differently, or adding unsigned headers, must not produce a second name for it.
    let canonical = sign1.clone().to_tagged_vec().map_err(|_| Rejection::Malformed)?;
    let header = &sign1.protected.header;
    if canonical != presentation.credential
        || !sign1.unprotected.is_empty()
        || !header.crit.is_empty()
        || header.content_type.is_some()
        || !header.iv.is_empty()
        || !header.partial_iv.is_empty()
        || !header.counter_signatures.is_empty()
        || !header.rest.is_empty()
    {
        return Err(Rejection::Malformed);
    }
    let payload = sign1.payload.clone().ok_or(Rejection::Malformed)?;
    if header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::EdDSA)) {
        return Err(Rejection::WrongAlgorithm);
    }
    let (key_event, key) = ctx.keys.get(&header.key_id).ok_or(Rejection::UnknownKey)?;
    let signature: [u8; 64] = sign1.signature.as_slice().try_into().map_err(|_| Rejection::BadSignature)?;
    let issuer = Check { message: sign1.tbs_data(&[]), signature: Signature::from_bytes(&signature), key: *key };
    let env = Envelope {
        kid: header.key_id.clone(),
        key_event: *key_event,
        payload,
        proof: presentation.proof,
        credential: presentation.credential,
    };
    Ok((env, issuer))
}

/// Checks the claims; only meaningful once the issuer signature holds.
fn claimed(env: Envelope, ctx: &VerifyContext) -> Result<Claimed, Rejection> {
    let mut rest = env.payload.as_slice();
    let value: ciborium::Value = ciborium::from_reader(&mut rest).map_err(|_| Rejection::Malformed)?;
    if !rest.is_empty() {
        return Err(Rejection::Malformed);
    }
    let claims: Claims = claims::from_value(value).ok_or(Rejection::Malformed)?;
    // A key signs for one event only: another event's key cannot vouch for this one's tickets.
    if claims.event_id != ctx.event_id || env.key_event != ctx.event_id {
        return Err(Rejection::WrongEvent);
    }
    if ctx.now < claims.not_before {
        return Err(Rejection::NotYetValid);
    }
    if ctx.now >= claims.expires_at {
        return Err(Rejection::Expired);
    }
    let hash = credential_hash(&env.credential);
    let proof = match (claims.holder_key, env.proof) {
        (None, None) => None,
        // Our encoder never attaches a proof to a static credential; such a text was made by someone else.
        (None, Some(_)) => return Err(Rejection::Malformed),
        (Some(_), None) => return Err(Rejection::MissingProof),
        (Some(holder), Some((step, sig))) => {
            let key = VerifyingKey::from_bytes(&holder).map_err(|_| Rejection::BadProof)?;
            // A small-order key verifies forged signatures; batch verification would not notice, so refuse here.
            if key.is_weak() {
                return Err(Rejection::BadProof);
            }
            let message = crate::proof_message(&hash, step).to_vec();
            Some((step, Check { message, signature: Signature::from_bytes(&sig), key }))
        }
    };
    let verified = Verified { claims, kid: env.kid, credential_hash: hash, proof_step: proof.as_ref().map(|p| p.0) };
    Ok(Claimed { verified, proof })
}

/// The time-step policy, with `d = proof step - verifier step`:
/// `|d| <= 1` accepted (about ±10 s of device skew); `d` in `-3..=-2` is a 30 to 59 second old capture
/// (`stale_proof`); anything further, either way, is a device clock off by a minute or more (`clock_skew`).
pub(crate) fn step_policy(proof_step: i64, now: i64) -> Result<(), Rejection> {
    let d = i128::from(proof_step) - i128::from(time_step(now));
    match d {
        -1..=1 => Ok(()),
        -3..=-2 => Err(Rejection::StaleProof),
        _ => Err(Rejection::ClockSkew),
    }
}

const _: () = assert!(STEP_SECONDS == 15, "the step policy's bounds are written for 15-second steps");

pub(crate) fn one(qr_text: &str, ctx: &VerifyContext) -> Result<Verified, Rejection> {
    let (env, issuer) = envelope(qr_text, ctx)?;
    if !issuer.holds() {
        return Err(Rejection::BadSignature);
    }
    let claimed = claimed(env, ctx)?;
    finish(claimed, |check| check.holds(), ctx)
}

fn finish(
    claimed: Claimed,
    proof_holds: impl FnOnce(&Check) -> bool,
    ctx: &VerifyContext,
) -> Result<Verified, Rejection> {
    if let Some((step, check)) = &claimed.proof {
        if !proof_holds(check) {
            return Err(Rejection::BadProof);
        }
        step_policy(*step, ctx.now)?;
    }
    Ok(claimed.verified)
}

/// Which of `checks` hold: one batch verification, halving on failure down to single strict verifications, so a
/// few forgeries among many good items cost a few extra batches rather than a fall back to one by one. When the left
/// half of a failed batch holds, the right half is known to fail and is split without being verified as a whole.
/// Only a batch that holds or a single strict verification ever counts a signature as good.
#[cfg(feature = "batch")]
fn holds_all(checks: &[&Check]) -> Vec<bool> {
    /// Fills `out`; true when every check held. `failed`: this group is known to contain a bad signature.
    fn go(checks: &[&Check], out: &mut [bool], failed: bool) -> bool {
        match checks {
            [] => true,
            [one] => {
                out[0] = one.holds();
                out[0]
            }
            _ => {
                if !failed {
                    let messages: Vec<&[u8]> = checks.iter().map(|c| c.message.as_slice()).collect();
                    let signatures: Vec<Signature> = checks.iter().map(|c| c.signature).collect();
                    let keys: Vec<VerifyingKey> = checks.iter().map(|c| c.key).collect();
                    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
                        out.fill(true);
                        return true;
                    }
                }
                let mid = checks.len() / 2;
                let (left, right) = out.split_at_mut(mid);
                let left_held = go(&checks[..mid], left, false);
                go(&checks[mid..], right, left_held);
                false
            }
        }
    }
    let mut out = vec![false; checks.len()];
    go(checks, &mut out, false);
    out
}

#[cfg(not(feature = "batch"))]
fn holds_all(checks: &[&Check]) -> Vec<bool> {
    checks.iter().map(|c| c.holds()).collect()
}

/// An item past stage one: its issuer check, and stage two's answer should that check hold.
type Staged = (Check, Result<Claimed, Rejection>);

pub(crate) fn batch(items: &[&str], ctx: &VerifyContext) -> Vec<Result<Verified, Rejection>> {
    // Stage two runs before the issuer signature is known to hold: its result is only reported if it does, and it
    // decides which proof signatures join the same batch.
    let staged: Vec<Result<Staged, Rejection>> =
        items.iter().map(|text| envelope(text, ctx).map(|(env, issuer)| (issuer, claimed(env, ctx)))).collect();
    let mut checks: Vec<&Check> = Vec::with_capacity(staged.len() * 2);
    for (issuer, claimed) in staged.iter().flatten() {
        checks.push(issuer);
        if let Ok(Claimed { proof: Some((_, proof)), .. }) = claimed {
            checks.push(proof);
        }
    }
    let mut holds = holds_all(&checks).into_iter();
    let mut results = Vec::with_capacity(items.len());
    for entry in staged {
        results.push(match entry {
            Err(rejection) => Err(rejection),
            Ok((_, claimed)) => {
                let issuer_holds = holds.next().unwrap_or(false);
                let proof_holds = match &claimed {
                    Ok(Claimed { proof: Some(_), .. }) => holds.next().unwrap_or(false),
                    _ => true,
                };
                if !issuer_holds {
                    Err(Rejection::BadSignature)
                } else {
                    claimed.and_then(|c| finish(c, |_| proof_holds, ctx))
                }
            }
        });
    }
    results
}
