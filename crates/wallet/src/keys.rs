//! Envelope encryption of custodial keys (invariant 7: keys stay secret).
//!
//! Each wallet key is sealed under its own random 256-bit data key
//! (AES-256-GCM, random 96-bit nonce), and the data key is sealed under a
//! master key named by a key id. The master keys live in configuration (or,
//! in embedded mode, in a 0600 file in the data directory), never in the
//! database, so a database dump alone yields nothing usable. Rotation only
//! re-seals the 32-byte data keys, never the wallet keys themselves.
//!
//! Both seals carry associated data naming what they protect (user id,
//! address, and for the data key the master key id), so a ciphertext copied
//! onto another user's row, or a row whose key id was edited, fails to open
//! instead of yielding a key for the wrong account.
//!
//! No I/O here except [`MasterKeys::load_or_create_file`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use entrada_primitives::Secret;
use entrada_primitives::token::random_bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// Why keys could not be used. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("master key `{0}` is not configured")]
    UnknownMasterKey(String),
    #[error("the active master key `{0}` is not among the configured keys")]
    ActiveKeyMissing(String),
    #[error("master key `{0}` must be 32 bytes in standard base64")]
    BadMasterKey(String),
    #[error("no master key is configured")]
    NoMasterKey,
    #[error("a stored key does not decrypt (wrong master key, or the row was altered)")]
    Undecryptable,
    #[error("a stored key is malformed: {0}")]
    Malformed(&'static str),
    #[error("master key file: {0}")]
    File(String),
}

/// A 256-bit key that zeroes itself when dropped and never prints.
#[derive(Clone)]
struct KeyBytes(Zeroizing<[u8; 32]>);

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The configured master keys and which one wraps new data keys.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    active: String,
    keys: BTreeMap<String, KeyBytes>,
}

/// A wallet key sealed for storage: every field is safe to store and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_nonce: String,
    pub key_ciphertext: String,
    pub master_key_id: String,
    pub dek_nonce: String,
    pub dek_wrapped: String,
}

/// The data key, re-wrapped under another master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    pub master_key_id: String,
    pub dek_nonce: String,
    pub dek_wrapped: String,
}

/// What a file-held master key looks like; the name says where it came from.
const FILE_NAME: &str = "wallet-master.key";

impl MasterKeys {
    /// From configuration: key id → standard base64 of 32 bytes, and the id
    /// of the key that wraps new data keys.
    pub fn from_config(keys: &BTreeMap<String, Secret<String>>, active: &str) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoMasterKey);
        }
        let mut out = BTreeMap::new();
        for (id, value) in keys {
            if !valid_key_id(id) {
                return Err(KeyError::BadMasterKey(id.clone()));
            }
            out.insert(id.clone(), decode_key(id, value.expose())?);
        }
        if !out.contains_key(active) {
            return Err(KeyError::ActiveKeyMissing(active.to_owned()));
        }
        Ok(Self { active: active.to_owned(), keys: out })
    }

    /// A single random key, for tests.
    pub fn generate(id: &str) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(id.to_owned(), KeyBytes(Zeroizing::new(random_bytes::<32>())));
        Self { active: id.to_owned(), keys }
    }

    /// The embedded mode's master key: read from `<dir>/wallet-master.key`, or
    /// generated there at first start (mode 0600, written before any key is
    /// sealed with it). Returns the keys and whether the file was created now.
    /// The file holds one line, `<key id> <base64>`.
    pub fn load_or_create_file(dir: &Path) -> Result<(Self, bool), KeyError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut text = Zeroizing::new(text);
                let (id, b64) = text
                    .trim()
                    .split_once(' ')
                    .ok_or_else(|| KeyError::File(format!("{} must hold `<key id> <base64>`", path.display())))?;
                let keys = BTreeMap::from([(id.to_owned(), Secret::new(b64.to_owned()))]);
                let loaded = Self::from_config(&keys, id)?;
                text.zeroize();
                Ok((loaded, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| KeyError::File(e.to_string()))?;
                let id = "local-1";
                let key = Zeroizing::new(random_bytes::<32>());
                let line = Zeroizing::new(format!("{id} {}\n", B64.encode(*key)));
                write_private(&path, line.as_bytes())?;
                let keys = BTreeMap::from([(id.to_owned(), KeyBytes(key))]);
                Ok((Self { active: id.to_owned(), keys }, true))
            }
            Err(e) => Err(KeyError::File(format!("{}: {e}", path.display()))),
        }
    }

    /// The file [`Self::load_or_create_file`] uses in `dir`.
    pub fn file_path(dir: &Path) -> std::path::PathBuf {
        dir.join(FILE_NAME)
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    fn key(&self, id: &str) -> Result<&KeyBytes, KeyError> {
        self.keys.get(id).ok_or_else(|| KeyError::UnknownMasterKey(id.to_owned()))
    }

    /// Seals a 32-byte wallet private key for `user` at `address` under a new
    /// data key, wrapped by the active master key.
    pub fn seal(&self, user: &str, address: &str, private_key: &[u8; 32]) -> Result<Sealed, KeyError> {
        let dek = Zeroizing::new(random_bytes::<32>());
        let key_nonce = random_bytes::<12>();
        let key_ciphertext = aead_seal(&dek, &key_nonce, &key_aad(user, address), private_key)?;
        let wrapped = self.wrap(user, address, &dek)?;
        Ok(Sealed {
            key_nonce: B64.encode(key_nonce),
            key_ciphertext: B64.encode(key_ciphertext),
            master_key_id: wrapped.master_key_id,
            dek_nonce: wrapped.dek_nonce,
            dek_wrapped: wrapped.dek_wrapped,
        })
    }

    /// Opens a sealed wallet key. The result zeroes itself when dropped.
    pub fn open(&self, user: &str, address: &str, sealed: &Sealed) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let dek = self.unwrap(user, address, &sealed.master_key_id, &sealed.dek_nonce, &sealed.dek_wrapped)?;
        let nonce = decode_nonce(&sealed.key_nonce)?;
        let ct = B64.decode(&sealed.key_ciphertext).map_err(|_| KeyError::Malformed("key ciphertext"))?;
        let plain = Zeroizing::new(aead_open(&dek, &nonce, &key_aad(user, address), &ct)?);
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(KeyError::Malformed("key length"));
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }

    /// Re-wraps a data key under the active master key; `None` when it already
    /// is (re-wrapping is idempotent).
    pub fn rewrap(&self, user: &str, address: &str, sealed: &Sealed) -> Result<Option<Rewrapped>, KeyError> {
        if sealed.master_key_id == self.active {
            return Ok(None);
        }
        let dek = self.unwrap(user, address, &sealed.master_key_id, &sealed.dek_nonce, &sealed.dek_wrapped)?;
        self.wrap(user, address, &dek).map(Some)
    }

    fn wrap(&self, user: &str, address: &str, dek: &[u8; 32]) -> Result<Rewrapped, KeyError> {
        let master = self.key(&self.active)?;
        let nonce = random_bytes::<12>();
        let wrapped = aead_seal(&master.0, &nonce, &dek_aad(&self.active, user, address), dek)?;
        Ok(Rewrapped {
            master_key_id: self.active.clone(),
            dek_nonce: B64.encode(nonce),
            dek_wrapped: B64.encode(wrapped),
        })
    }

    fn unwrap(
        &self,
        user: &str,
        address: &str,
        key_id: &str,
        nonce: &str,
        wrapped: &str,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let master = self.key(key_id)?;
        let nonce = decode_nonce(nonce)?;
        let ct = B64.decode(wrapped).map_err(|_| KeyError::Malformed("wrapped data key"))?;
        let plain = Zeroizing::new(aead_open(&master.0, &nonce, &dek_aad(key_id, user, address), &ct)?);
        if plain.len() != 32 {
            return Err(KeyError::Malformed("data key length"));
        }
        let mut dek = Zeroizing::new([0u8; 32]);
        dek.copy_from_slice(&plain);
        Ok(dek)
    }
}

/// Key ids appear in configuration keys and table rows: short and plain.
fn valid_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn decode_key(id: &str, b64: &str) -> Result<KeyBytes, KeyError> {
    let bytes = Zeroizing::new(B64.decode(b64.trim()).map_err(|_| KeyError::BadMasterKey(id.to_owned()))?);
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::BadMasterKey(id.to_owned()))?;
    Ok(KeyBytes(Zeroizing::new(arr)))
}

fn decode_nonce(b64: &str) -> Result<[u8; 12], KeyError> {
    let v = B64.decode(b64).map_err(|_| KeyError::Malformed("nonce"))?;
    v.as_slice().try_into().map_err(|_| KeyError::Malformed("nonce length"))
}

fn key_aad(user: &str, address: &str) -> Vec<u8> {
    format!("entrada.wallet.key.v1\n{user}\n{address}").into_bytes()
}

fn dek_aad(key_id: &str, user: &str, address: &str) -> Vec<u8> {
    format!("entrada.wallet.dek.v1\n{key_id}\n{user}\n{address}").into_bytes()
}

fn aead_seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, KeyError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| KeyError::Malformed("key length"))?;
    cipher.encrypt(&Nonce::from(*nonce), Payload { msg, aad }).map_err(|_| KeyError::Malformed("plaintext length"))
}

fn aead_open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ct: &[u8]) -> Result<Vec<u8>, KeyError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| KeyError::Malformed("key length"))?;
    cipher.decrypt(&Nonce::from(*nonce), Payload { msg: ct, aad }).map_err(|_| KeyError::Undecryptable)
}

/// Creates `path` readable by its owner only, failing if it exists (two
/// processes starting at once must not both write a different key).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| KeyError::File(format!("{}: {e}", path.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| KeyError::File(format!("{}: {e}", path.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const USER: &str = "0192b3c4-0000-7000-8000-000000000001";
    const ADDR: &str = "0x00000000000000000000000000000000000000aa";

    fn config(pairs: &[(&str, [u8; 32])]) -> BTreeMap<String, Secret<String>> {
        pairs.iter().map(|(id, k)| ((*id).to_owned(), Secret::new(B64.encode(k)))).collect()
    }

    /// A sealed key opens to the same bytes, and only for the user and address it was sealed for.
    #[test]
    fn seal_open_round_trip_and_binding() {
        let keys = MasterKeys::generate("k1");
        let secret = random_bytes::<32>();
        let sealed = keys.seal(USER, ADDR, &secret).unwrap();
        assert_eq!(*keys.open(USER, ADDR, &sealed).unwrap(), secret);
        assert_eq!(keys.open("someone-else", ADDR, &sealed).unwrap_err(), KeyError::Undecryptable);
        assert_eq!(
            keys.open(USER, "0x00000000000000000000000000000000000000bb", &sealed).unwrap_err(),
            KeyError::Undecryptable
        );
        // The ciphertext does not contain the key in any encoding.
        let dump = format!("{sealed:?}");
        assert!(!dump.contains(&hex::encode(secret)) && !dump.contains(&B64.encode(secret)));
        // Two seals of the same key differ (fresh data key and nonces).
        assert_ne!(keys.seal(USER, ADDR, &secret).unwrap().key_ciphertext, sealed.key_ciphertext);
    }

    /// After rotation the old ciphertext still opens while the old key is configured, re-wraps
    /// under the new one, and then opens without the old key.
    #[test]
    fn rotation_rewraps_data_keys() {
        let (old, new) = (random_bytes::<32>(), random_bytes::<32>());
        let before = MasterKeys::from_config(&config(&[("old", old)]), "old").unwrap();
        let secret = random_bytes::<32>();
        let sealed = before.seal(USER, ADDR, &secret).unwrap();

        let both = MasterKeys::from_config(&config(&[("old", old), ("new", new)]), "new").unwrap();
        assert_eq!(*both.open(USER, ADDR, &sealed).unwrap(), secret);
        let re = both.rewrap(USER, ADDR, &sealed).unwrap().unwrap();
        assert_eq!(re.master_key_id, "new");
        let moved = Sealed {
            master_key_id: re.master_key_id,
            dek_nonce: re.dek_nonce,
            dek_wrapped: re.dek_wrapped,
            ..sealed.clone()
        };
        assert_eq!(both.rewrap(USER, ADDR, &moved).unwrap(), None, "idempotent");

        let after = MasterKeys::from_config(&config(&[("new", new)]), "new").unwrap();
        assert_eq!(*after.open(USER, ADDR, &moved).unwrap(), secret);
        assert_eq!(after.open(USER, ADDR, &sealed).unwrap_err(), KeyError::UnknownMasterKey("old".into()));
        // Editing the key id on a row does not make another key open it.
        let relabelled = Sealed { master_key_id: "new".into(), ..sealed };
        assert_eq!(after.open(USER, ADDR, &relabelled).unwrap_err(), KeyError::Undecryptable);
    }

    /// Bad configuration is refused with a message that names the key id, never its value.
    #[test]
    fn configuration_is_checked() {
        assert_eq!(MasterKeys::from_config(&BTreeMap::new(), "a").unwrap_err(), KeyError::NoMasterKey);
        let short = BTreeMap::from([("a".to_owned(), Secret::new("c2hvcnQ=".to_owned()))]);
        let e = MasterKeys::from_config(&short, "a").unwrap_err();
        assert_eq!(e, KeyError::BadMasterKey("a".into()));
        assert!(!e.to_string().contains("c2hvcnQ"));
        assert_eq!(
            MasterKeys::from_config(&config(&[("a", [1; 32])]), "b").unwrap_err(),
            KeyError::ActiveKeyMissing("b".into())
        );
        let keys = MasterKeys::from_config(&config(&[("a", [7; 32])]), "a").unwrap();
        assert!(!format!("{keys:?}").contains(&B64.encode([7u8; 32])));
    }

    /// The embedded key file is created once with mode 0600 and read back the same afterwards.
    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = MasterKeys::load_or_create_file(dir.path()).unwrap();
        assert!(created);
        let sealed = a.seal(USER, ADDR, &[9; 32]).unwrap();
        let (b, created) = MasterKeys::load_or_create_file(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(*b.open(USER, ADDR, &sealed).unwrap(), [9; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(MasterKeys::file_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
