//! The token issuer's Ed25519 keys and the access tokens they sign.
//!
//! Keys live in `signing_keys` so that every process of a deployment signs
//! and verifies with the same key; each process keeps them in memory, so
//! verifying an access token (done by the gateway on every request) never
//! touches the database. A token naming an unknown `kid` triggers a reload,
//! at most once per [`RELOAD_INTERVAL_MS`], so forged `kid`s cannot turn
//! into a database query per request.

use crate::domain::IdentityError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use entrada_primitives::auth::Principal;
use entrada_primitives::ids::{SessionId, UserId};
use entrada_primitives::{PlatformRole, SharedClock};
use entrada_storage::Db;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The `aud` of every access token.
pub const AUDIENCE: &str = "entrada";

const RELOAD_INTERVAL_MS: i64 = 5_000;

/// Verified access tokens remembered, at most (a few MB). Verifying an
/// Ed25519 signature costs tens of microseconds and a client sends the
/// same token with every request until it expires; a remembered token is
/// still checked for expiry and for its key being trusted.
const VERIFIED_TOKENS: usize = 16_384;

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    jti: String,
    sid: String,
    role: String,
}

/// A public key as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding (the
    /// JWK `x` member).
    pub x: String,
}

struct Signer {
    kid: String,
    key: EncodingKey,
}

/// One immutable snapshot of the keys; replaced whole on reload so readers
/// never see a half-updated set.
struct KeySet {
    signer: Signer,
    verifiers: HashMap<String, DecodingKey>,
    public: Vec<PublicKey>,
}

pub(crate) struct KeyRing {
    db: Db,
    clock: SharedClock,
    issuer: String,
    access_ttl: time::Duration,
    validation: Validation,
    /// A std `RwLock`, not a Tokio one: it guards an `Arc` swap and is never
    /// held across an await.
    set: RwLock<Arc<KeySet>>,
    last_reload_ms: AtomicI64,
    /// Tokens whose signature and claims were verified, by their exact text.
    verified: Mutex<HashMap<String, Verified>>,
}

/// What a verified token established.
struct Verified {
    kid: String,
    exp: i64,
    principal: Principal,
}

impl KeyRing {
    /// Loads the current key, creating it if the deployment has none yet.
    pub(crate) async fn start(
        db: Db,
        clock: SharedClock,
        issuer: String,
        access_ttl: time::Duration,
    ) -> Result<Self, IdentityError> {
        ensure_current_key(&db, clock.now_ms()).await?;
        let set = load(&db, clock.now_ms(), access_ttl).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is checked against the injected clock, not the system time
        // jsonwebtoken would read, so tests and replays agree.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let ring = Self {
            db,
            last_reload_ms: AtomicI64::new(clock.now_ms()),
            verified: Mutex::new(HashMap::new()),
            clock,
            issuer,
            access_ttl,
            validation,
            set: RwLock::new(Arc::new(set)),
        };
        ring.self_test()?;
        Ok(ring)
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs an access token; returns it with its lifetime in seconds.
    pub(crate) fn issue(
        &self,
        user: UserId,
        role: PlatformRole,
        session: SessionId,
    ) -> Result<(String, i64), IdentityError> {
        let set = self.snapshot();
        let now = self.clock.now().unix_timestamp();
        let ttl = self.access_ttl.whole_seconds();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: user.to_string(),
            aud: AUDIENCE.to_owned(),
            exp: now + ttl,
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
            sid: session.to_string(),
            role: role.as_str().to_owned(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(set.signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &set.signer.key)
            .map_err(|e| IdentityError::Internal(format!("signing an access token: {e}")))?;
        Ok((token, ttl))
    }

    /// Verifies signature, algorithm, issuer and audience, then expiry
    /// against the injected clock. Only then are the claims trusted. A token
    /// verified before is found by its exact text, and its expiry and key
    /// are checked again.
    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, &'static str> {
        const INVALID: &str = "invalid_token";
        let now = self.clock.now().unix_timestamp();
        if let Some(known) = self.remembered(token, now) {
            return known;
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| INVALID)?;
        if header.alg != Algorithm::EdDSA {
            return Err(INVALID);
        }
        let kid = header.kid.ok_or(INVALID)?;
        let mut set = self.snapshot();
        if !set.verifiers.contains_key(&kid) {
            self.reload_if_stale().await;
            set = self.snapshot();
        }
        let key = set.verifiers.get(&kid).ok_or(INVALID)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).map_err(|_| INVALID)?;
        let c = data.claims;
        if now >= c.exp {
            return Err("token_expired");
        }
        let principal = Principal {
            user_id: c.sub.parse::<UserId>().map_err(|_| INVALID)?,
            role: PlatformRole::parse(&c.role).ok_or(INVALID)?,
            session_id: c.sid.parse::<SessionId>().map_err(|_| INVALID)?,
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.retain(|_, v| v.exp > now);
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), Verified { kid, exp: c.exp, principal });
        Ok(principal)
    }

    /// The answer for a token verified before: `None` when it was not, or
    /// when its key is no longer trusted (then it is verified afresh, and
    /// fails).
    fn remembered(&self, token: &str, now: i64) -> Option<Result<Principal, &'static str>> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let v = verified.get(token)?;
        if now >= v.exp {
            return Some(Err("token_expired"));
        }
        self.snapshot().verifiers.contains_key(&v.kid).then_some(Ok(v.principal))
    }

    /// The keys to publish in the JWKS, re-read from the database so that a
    /// key created by another process shows up.
    pub(crate) async fn public_keys(&self) -> Result<Vec<PublicKey>, IdentityError> {
        self.reload().await?;
        Ok(self.snapshot().public.clone())
    }

    async fn reload_if_stale(&self) {
        let now = self.clock.now_ms();
        let last = self.last_reload_ms.load(Ordering::Relaxed);
        if now - last < RELOAD_INTERVAL_MS
            || self.last_reload_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }

    async fn reload(&self) -> Result<(), IdentityError> {
        let set = load(&self.db, self.clock.now_ms(), self.access_ttl).await?;
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Signs and verifies a probe token, so a key the crypto backend cannot
    /// use fails the start-up rather than the first login.
    fn self_test(&self) -> Result<(), IdentityError> {
        let set = self.snapshot();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(set.signer.kid.clone());
        let probe = serde_json::json!({ "sub": "probe" });
        let token = jsonwebtoken::encode(&header, &probe, &set.signer.key)
            .map_err(|e| IdentityError::Internal(format!("signing key unusable: {e}")))?;
        let key = set
            .verifiers
            .get(&set.signer.kid)
            .ok_or_else(|| IdentityError::Internal("no verifier for the signing key".into()))?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(&token, key, &v)
            .map_err(|e| IdentityError::Internal(format!("signing key does not verify: {e}")))?;
        Ok(())
    }
}

/// The RFC 7638 thumbprint of the key's JWK: a stable, content-derived kid.
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(public));
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// Creates the deployment's signing key unless one exists. Concurrent
/// starters race on the UNIQUE `slot`; the losers' inserts do nothing and
/// they load the winner's key.
async fn ensure_current_key(db: &Db, now_ms: i64) -> Result<(), IdentityError> {
    let existing: Option<(String,)> = sqlx::query_as("SELECT kid FROM signing_keys WHERE slot = 'current'")
        .fetch_optional(&mut *db.writer().await?)
        .await?;
    if existing.is_some() {
        return Ok(());
    }
    let signing = SigningKey::from_bytes(&entrada_primitives::token::random_bytes::<32>());
    let public = signing.verifying_key().to_bytes();
    let der = signing.to_pkcs8_der().map_err(|e| IdentityError::Internal(format!("encoding the signing key: {e}")))?;
    let kid = thumbprint(&public);
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO signing_keys (kid, slot, private_key, public_key, created_at) \
         VALUES ($1, 'current', $2, $3, $4) ON CONFLICT (slot) DO NOTHING",
    )
    .bind(&kid)
    .bind(B64.encode(der.as_bytes()))
    .bind(B64.encode(public))
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

type KeyRow = (String, Option<String>, String, String, Option<i64>);

async fn load(db: &Db, now_ms: i64, access_ttl: time::Duration) -> Result<KeySet, IdentityError> {
    let rows: Vec<KeyRow> =
        sqlx::query_as("SELECT kid, slot, private_key, public_key, retired_at FROM signing_keys ORDER BY created_at")
            .fetch_all(db.reader())
            .await?;
    let bad = |what: &str| IdentityError::Internal(format!("corrupted signing key row: {what}"));
    let mut signer = None;
    let mut verifiers = HashMap::new();
    let mut public = Vec::new();
    let grace_ms = access_ttl.whole_milliseconds() as i64;
    for (kid, slot, private_b64, public_b64, retired_at) in rows {
        // A retired key still verifies the tokens it signed until they expire.
        if retired_at.is_some_and(|r| r + grace_ms <= now_ms) {
            continue;
        }
        let public_raw = B64.decode(&public_b64).map_err(|_| bad("public key"))?;
        if public_raw.len() != 32 {
            return Err(bad("public key length"));
        }
        verifiers.insert(kid.clone(), DecodingKey::from_ed_der(&public_raw));
        public.push(PublicKey { kid: kid.clone(), x: public_b64 });
        if slot.as_deref() == Some("current") {
            let der = B64.decode(&private_b64).map_err(|_| bad("private key"))?;
            signer = Some(Signer { kid, key: EncodingKey::from_ed_der(&der) });
        }
    }
    let signer = signer.ok_or_else(|| IdentityError::Internal("no current signing key".into()))?;
    Ok(KeySet { signer, verifiers, public })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037, appendix A.3: the thumbprint of the example OKP key.
        let x = B64.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let x: [u8; 32] = x.try_into().unwrap();
        assert_eq!(thumbprint(&x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
