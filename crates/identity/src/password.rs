//! Password hashing with Argon2id, off the async threads.

use crate::domain::IdentityError;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

/// How expensive a password hash is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PasswordCost {
    /// Argon2id with OWASP's recommended floor: 19 MiB, 2 passes, 1 lane.
    /// The only setting for real accounts.
    #[default]
    Standard,
    /// The smallest parameters Argon2 accepts (8 KiB, 1 pass). Only for tests
    /// and benchmarks, where thousands of accounts are created; a hash made
    /// this way is trivially brute-forced.
    Fast,
}

impl PasswordCost {
    fn params(self) -> Result<Params, IdentityError> {
        let (m, t, p) = match self {
            Self::Standard => (19_456, 2, 1),
            Self::Fast => (8, 1, 1),
        };
        Params::new(m, t, p, None).map_err(|e| IdentityError::Internal(format!("argon2 params: {e}")))
    }
}

/// Hashes and verifies passwords. Each call runs on the blocking pool: a
/// standard hash takes tens of milliseconds of CPU, which would otherwise
/// stall every request sharing the async worker.
#[derive(Clone)]
pub(crate) struct Hasher {
    params: Params,
    /// A hash of a random password with the same parameters, verified against
    /// when the email is unknown so that both failures cost the same time.
    dummy: String,
}

impl Hasher {
    pub(crate) async fn new(cost: PasswordCost) -> Result<Self, IdentityError> {
        let params = cost.params()?;
        let random = entrada_primitives::token::random_token();
        let dummy = hash_blocking(params.clone(), random).await?;
        Ok(Self { params, dummy })
    }

    /// A PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    pub(crate) async fn hash(&self, password: &str) -> Result<String, IdentityError> {
        hash_blocking(self.params.clone(), password.to_owned()).await
    }

    /// True when `password` matches `phc`. The parameters come from the PHC
    /// string, so hashes made under another cost setting still verify.
    pub(crate) async fn verify(&self, password: &str, phc: &str) -> Result<bool, IdentityError> {
        let password = password.to_owned();
        let phc = phc.to_owned();
        tokio::task::spawn_blocking(move || {
            Argon2::default().verify_password(password.as_bytes(), phc.as_str()).is_ok()
        })
        .await
        .map_err(|e| IdentityError::Internal(format!("password verification task: {e}")))
    }

    /// Spends the same effort as a real verification and always fails.
    pub(crate) async fn verify_dummy(&self, password: &str) -> Result<bool, IdentityError> {
        let _ = self.verify(password, &self.dummy.clone()).await?;
        Ok(false)
    }
}

async fn hash_blocking(params: Params, password: String) -> Result<String, IdentityError> {
    tokio::task::spawn_blocking(move || {
        let salt = entrada_primitives::token::random_bytes::<16>();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| IdentityError::Internal(format!("password hashing: {e}")))
    })
    .await
    .map_err(|e| IdentityError::Internal(format!("password hashing task: {e}")))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = Hasher::new(PasswordCost::Fast).await.unwrap();
        let phc = h.hash("correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        assert!(h.verify("correct horse battery", &phc).await.unwrap());
        assert!(!h.verify("wrong horse battery", &phc).await.unwrap());
        assert!(!h.verify_dummy("anything at all").await.unwrap());
    }

    #[test]
    fn standard_cost_uses_owasp_parameters() {
        let p = PasswordCost::Standard.params().unwrap();
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (19_456, 2, 1));
    }
}
