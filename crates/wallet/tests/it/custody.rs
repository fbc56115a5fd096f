//! Custodial keys: creation on first need, concurrency, encryption at rest,
//! master-key rotation, and secrecy in logs and `Debug`.

use crate::{clock, user};
use alloy::signers::SignerSync as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use entrada_chain::AddressBook;
use entrada_primitives::Secret;
use entrada_storage::testing::fresh;
use entrada_wallet::{Custody, KeyError, MasterKeys, WalletError};
use std::collections::BTreeMap;
use std::sync::Arc;

fn keys(pairs: &[(&str, [u8; 32])], active: &str) -> MasterKeys {
    let map: BTreeMap<String, Secret<String>> =
        pairs.iter().map(|(id, k)| ((*id).to_owned(), Secret::new(B64.encode(k)))).collect();
    MasterKeys::from_config(&map, active).unwrap()
}

/// The first request creates the user's address, later ones return the same one, and the
/// stored row holds neither the private key in hex nor in base64.
#[tokio::test]
async fn address_is_created_once_and_stored_sealed() {
    let tdb = fresh().await;
    let custody = Custody::new(tdb.db.clone(), Arc::new(clock()), MasterKeys::generate("k1"));
    let fan = user(&tdb.db, "fan").await;
    assert_eq!(custody.address_of(fan).await.unwrap(), None);
    let a = custody.custodial_address(fan).await.unwrap();
    assert_eq!(custody.custodial_address(fan).await.unwrap(), a);
    assert_eq!(AddressBook::custodial_address(&custody, fan).await.unwrap(), a);
    let other = custody.custodial_address(user(&tdb.db, "other").await).await.unwrap();
    assert_ne!(a, other);

    let signer = custody.signer(fan).await.unwrap().unwrap();
    assert_eq!(signer.address(), a);
    let secret = signer.to_bytes();
    let row: (String, String, String, String, String, String) = sqlx::query_as(
        "SELECT address, key_nonce, key_ciphertext, master_key_id, dek_nonce, dek_wrapped FROM wallet_keys \
         WHERE user_id = $1",
    )
    .bind(fan.to_db())
    .fetch_one(tdb.db.reader())
    .await
    .unwrap();
    let stored = format!("{row:?}");
    assert!(!stored.contains(&hex::encode(secret)), "private key stored in hex");
    assert!(!stored.contains(&B64.encode(secret)), "private key stored in base64");
    assert_eq!(row.3, "k1");
    // The signer works: a signature made with it recovers to the custodial address.
    let sig = signer.sign_message_sync(b"hello").unwrap();
    assert_eq!(sig.recover_address_from_msg(b"hello").unwrap(), a);

    let audited: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'wallet.key_created' AND object_id = $1")
            .bind(fan.to_db())
            .fetch_one(tdb.db.reader())
            .await
            .unwrap();
    assert_eq!(audited.0, 1);
}

/// Many concurrent first requests for the same new user all get the one stored address.
#[tokio::test]
async fn concurrent_first_use_yields_one_address() {
    let tdb = fresh().await;
    let custody = Custody::new(tdb.db.clone(), Arc::new(clock()), MasterKeys::generate("k1"));
    let fan = user(&tdb.db, "fan").await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = custody.clone();
            tokio::spawn(async move { c.custodial_address(fan).await.unwrap() })
        })
        .collect();
    let mut addresses = Vec::new();
    for t in tasks {
        addresses.push(t.await.unwrap());
    }
    addresses.dedup();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM wallet_keys WHERE user_id = $1")
        .bind(fan.to_db())
        .fetch_one(tdb.db.reader())
        .await
        .unwrap();
    assert_eq!(n.0, 1);
    assert_eq!(custody.signer(fan).await.unwrap().unwrap().address(), addresses[0]);
}

/// Rotation: keys sealed under the old master key open after the new one becomes active, the
/// re-wrap moves every data key (and a second run does nothing), and afterwards the old master
/// key can be removed from configuration with every key still opening.
#[tokio::test]
async fn rewrap_after_rotation_allows_removing_the_old_key() {
    let tdb = fresh().await;
    let (old, new) = ([1u8; 32], [2u8; 32]);
    let before = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("old", old)], "old"));
    let mut fans = Vec::new();
    for i in 0..5 {
        let fan = user(&tdb.db, &format!("fan{i}")).await;
        fans.push((fan, before.custodial_address(fan).await.unwrap()));
    }

    let rotated = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("old", old), ("new", new)], "new"));
    // Before the re-wrap, old ciphertexts open under the rotated configuration.
    assert_eq!(rotated.signer(fans[0].0).await.unwrap().unwrap().address(), fans[0].1);
    // New keys are sealed under the new master key at once.
    let late = user(&tdb.db, "late").await;
    let late_addr = rotated.custodial_address(late).await.unwrap();

    let report = rotated.rewrap(2).await.unwrap();
    assert_eq!(report.rewrapped, 5);
    assert!(report.failed.is_empty());
    assert_eq!(report.per_master_key, vec![("new".to_owned(), 6)]);
    let again = rotated.rewrap(2).await.unwrap();
    assert_eq!(again.rewrapped, 0, "re-wrapping is idempotent");

    let after = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("new", new)], "new"));
    for (fan, addr) in fans.iter().chain(std::iter::once(&(late, late_addr))) {
        assert_eq!(after.signer(*fan).await.unwrap().unwrap().address(), *addr);
    }
    let audited: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'wallet.key_rewrapped'")
        .fetch_one(tdb.db.reader())
        .await
        .unwrap();
    assert_eq!(audited.0, 5);
}

/// Removing the old master key before the re-wrap leaves those keys unopenable, reported by
/// the re-wrap as failures (by key id, never key material) and left untouched for a later run.
#[tokio::test]
async fn rewrap_without_the_old_key_reports_and_resumes() {
    let tdb = fresh().await;
    let (old, new) = ([3u8; 32], [4u8; 32]);
    let before = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("old", old)], "old"));
    let fan = user(&tdb.db, "fan").await;
    let addr = before.custodial_address(fan).await.unwrap();

    let premature = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("new", new)], "new"));
    let e = premature.signer(fan).await.unwrap_err();
    assert!(matches!(e, WalletError::Key(KeyError::UnknownMasterKey(ref id)) if id == "old"), "{e}");
    let report = premature.rewrap(10).await.unwrap();
    assert_eq!((report.rewrapped, report.failed.len()), (0, 1));
    assert_eq!(report.per_master_key, vec![("old".to_owned(), 1)]);

    // Putting the old key back and running again finishes the job.
    let fixed = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("old", old), ("new", new)], "new"));
    assert_eq!(fixed.rewrap(10).await.unwrap().rewrapped, 1);
    assert_eq!(premature.signer(fan).await.unwrap().unwrap().address(), addr);
}

/// Neither `Debug` of the custody service, of a signer, of the master keys nor the log lines
/// written while keys are created and re-wrapped contain a private or master key.
#[tokio::test]
async fn keys_never_reach_logs_or_debug() {
    let logs = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tdb = fresh().await;
    let master = [5u8; 32];
    let custody = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("m", master)], "m"));
    let fan = user(&tdb.db, "fan").await;
    custody.custodial_address(fan).await.unwrap();
    let signer = custody.signer(fan).await.unwrap().unwrap();
    let broken = Custody::new(tdb.db.clone(), Arc::new(clock()), keys(&[("n", [6u8; 32])], "n"));
    let _ = broken.rewrap(10).await.unwrap();
    tracing::info!(?custody, ?signer, "wallet state");

    let secret = signer.to_bytes();
    let text = format!("{}\n{custody:?}\n{signer:?}\n{:?}", logs.text(), keys(&[("m", master)], "m"));
    assert!(text.contains("not re-wrapped"), "the capture works: {text}");
    for needle in [hex::encode(secret), B64.encode(secret), hex::encode(master), B64.encode(master)] {
        assert!(!text.contains(&needle), "key material in logs or Debug output");
    }
}

#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
