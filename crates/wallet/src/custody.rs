//! Custodial keys: one secp256k1 key and address per user, created on first
//! need, stored sealed (see [`crate::keys`]), re-wrapped on master-key
//! rotation. The platform pays gas and moves tokens as custodian, so the
//! keys are rarely opened; they exist so every fan owns a distinct address
//! that a later self-custody export could hand over.
//!
//! Invariant 7: a private key exists in clear only inside [`Custody::signer`]
//! and [`Custody::create`], in zeroizing buffers; `Custody`'s `Debug` shows
//! nothing but the active key id, and errors name no key material.

use crate::domain::{WalletError, address_from_db, address_to_db};
use crate::keys::{KeyError, MasterKeys, Sealed};
use crate::store;
use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use entrada_primitives::SharedClock;
use entrada_primitives::ids::UserId;
use entrada_storage::Db;
use entrada_storage::audit::{self, Actor};
use serde_json::json;
use std::fmt;
use std::sync::Arc;

type Result<T, E = WalletError> = std::result::Result<T, E>;

/// The custodial key store. Cheap to clone.
#[derive(Clone)]
pub struct Custody {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: SharedClock,
    keys: MasterKeys,
}

impl fmt::Debug for Custody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Custody").field("active_master_key", &self.inner.keys.active_id()).finish_non_exhaustive()
    }
}

/// What a re-wrap pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Data keys moved to the active master key in this pass.
    pub rewrapped: u64,
    /// Keys that could not be re-wrapped (their master key is not configured,
    /// or the row does not decrypt); they are left as they were.
    pub failed: Vec<(String, String)>,
    /// After the pass: how many keys each master key wraps.
    pub per_master_key: Vec<(String, i64)>,
}

impl Custody {
    pub fn new(db: Db, clock: SharedClock, keys: MasterKeys) -> Self {
        Self { inner: Arc::new(Inner { db, clock, keys }) }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn active_master_key(&self) -> &str {
        self.inner.keys.active_id()
    }

    /// The user's custodial address if it exists; never creates one.
    pub async fn address_of(&self, user: UserId) -> Result<Option<Address>> {
        store::address_of(&self.inner.db, &user.to_db()).await?.map(|a| address_from_db(&a)).transpose()
    }

    /// The user's custodial address, created on first need. Two concurrent
    /// first uses both return the one address that won the insert: the key
    /// is a primary key on the user, the loser's fresh key is discarded
    /// unused, and both re-read the stored row.
    pub async fn custodial_address(&self, user: UserId) -> Result<Address> {
        let id = user.to_db();
        if let Some(a) = store::address_of(&self.inner.db, &id).await? {
            return address_from_db(&a);
        }
        self.create(user).await?;
        // The write answered after its commit, so a read sees the key.
        match store::address_of(&self.inner.db, &id).await? {
            Some(a) => address_from_db(&a),
            None => Err(WalletError::Internal("custodial key missing right after its insert".into())),
        }
    }

    /// Generates, seals and inserts a key; a conflict (someone else was first)
    /// is not an error.
    async fn create(&self, user: UserId) -> Result<()> {
        let signer = PrivateKeySigner::random();
        let address = address_to_db(&signer.address());
        let id = user.to_db();
        let sealed = {
            let secret = zeroize::Zeroizing::new(signer.to_bytes().0);
            self.inner.keys.seal(&id, &address, &secret)?
        };
        drop(signer);
        let now = self.inner.clock.now_ms();
        // One script, not a transaction: on SQLite it joins the writes of the
        // moment in a grouped commit, so the chain worker creating the keys of
        // a sale's new holders never holds the writer.
        let mut script = self.inner.db.script();
        store::push_insert_key(&mut script, &id, &address, &sealed, now, 1);
        audit::push(
            &mut script,
            now,
            &Actor::System,
            "wallet.key_created",
            "user",
            &id,
            json!({ "address": address, "master_key_id": sealed.master_key_id }),
        );
        self.inner.db.write(script).await.map_err(sqlx::Error::from)?;
        Ok(())
    }

    /// Opens the user's key as a signer, or `None` if the user has none yet.
    /// The signer's `Debug` shows only its address.
    pub async fn signer(&self, user: UserId) -> Result<Option<PrivateKeySigner>> {
        let id = user.to_db();
        let Some(row) = store::key_of(&self.inner.db, &id).await? else {
            return Ok(None);
        };
        let secret = self.inner.keys.open(&id, &row.address, &row.sealed)?;
        let signer = PrivateKeySigner::from_bytes(&B256::from(*secret))
            .map_err(|_| WalletError::Key(KeyError::Malformed("not a secp256k1 key")))?;
        if address_to_db(&signer.address()) != row.address {
            return Err(WalletError::Key(KeyError::Malformed("key does not match its address")));
        }
        Ok(Some(signer))
    }

    /// Re-wraps every data key that is not under the active master key, in
    /// batches, each key in its own short transaction. Idempotent (keys
    /// already under the active key are not touched) and resumable (an
    /// interrupted pass leaves every row under either its old or its new
    /// master key, both of which open it while both are configured).
    pub async fn rewrap(&self, batch: i64) -> Result<RewrapReport> {
        let keys = &self.inner.keys;
        let db = &self.inner.db;
        let mut report = RewrapReport::default();
        let mut after = String::new();
        loop {
            let rows = store::keys_not_under(db, keys.active_id(), &after, batch.max(1)).await?;
            let Some(last) = rows.last() else { break };
            after = last.user_id.clone();
            for row in rows {
                match keys.rewrap(&row.user_id, &row.address, &row.sealed) {
                    Ok(None) => {}
                    Ok(Some(to)) => {
                        if self.store_rewrap(&row.user_id, &row.sealed, &to).await? {
                            report.rewrapped += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(user = %row.user_id, error = %e, "custodial key not re-wrapped");
                        report.failed.push((row.user_id.clone(), e.to_string()));
                    }
                }
            }
        }
        report.per_master_key = store::keys_per_master(db).await?;
        Ok(report)
    }

    async fn store_rewrap(&self, user: &str, from: &Sealed, to: &crate::keys::Rewrapped) -> Result<bool> {
        let now = self.inner.clock.now_ms();
        let mut tx = self.inner.db.begin().await?;
        let moved = store::set_wrapping(&mut tx, user, from, to, now).await?;
        if moved {
            audit::record(
                &mut tx,
                now,
                &Actor::System,
                "wallet.key_rewrapped",
                "user",
                user,
                json!({ "from": from.master_key_id, "to": to.master_key_id }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }
}

/// The chain pipeline's view: where a holder's tokens go.
#[async_trait::async_trait]
impl entrada_chain::AddressBook for Custody {
    async fn custodial_address(&self, user: UserId) -> Result<Address, String> {
        Custody::custodial_address(self, user).await.map_err(|e| e.to_string())
    }
}
