//! API keys: minting, argon2id hashing, verification with a cache, and roles.
//!
//! argon2 costs tens of milliseconds per verify, so a verified key is remembered by a
//! SHA-256 digest of its text. The key row is still read on every request (an indexed
//! lookup), so a revocation, even one made by the CLI in another process, applies at once.

use crate::queue::{KeyRow, MintedKey, Queue, StoreError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use openbeepboop::Role;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Every key starts with this, so that secret scanners and humans recognise it.
pub const KEY_PREFIX: &str = "sk-obb-";
const LOOKUP_LEN: usize = 12;
const SECRET_LEN: usize = 40;

/// The caller of a request, once its key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer sk-obb-…`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("a {role} key may not use this route")]
    Forbidden { role: Role },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot hash the key: {0}")]
    Hash(String),
}

/// Makes a new random key and its hash. Slow (argon2): call it off the async threads.
pub fn mint_key() -> Result<MintedKey, AuthError> {
    let mut rng = rand::rng();
    let mut text = |len: usize| -> String {
        (0..len)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    let prefix = text(LOOKUP_LEN);
    let token = format!("{KEY_PREFIX}{prefix}{}", text(SECRET_LEN));
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let hash = Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?
        .to_string();
    Ok(MintedKey {
        token,
        prefix,
        hash,
    })
}

/// The lookup prefix of a well-formed key.
fn lookup_prefix(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    (rest.len() == LOOKUP_LEN + SECRET_LEN && rest.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| &rest[..LOOKUP_LEN])
}

fn verify_hash(token: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(token.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Checks keys against the store, remembering those already verified.
#[derive(Default)]
pub struct Authenticator {
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl Authenticator {
    /// Resolves an `Authorization` header value to a principal.
    pub async fn authenticate(
        &self,
        queue: &Queue,
        authorization: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = authorization
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or(AuthError::Missing)?;
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?
            .trim();
        let prefix = lookup_prefix(token).ok_or(AuthError::Invalid)?;
        let row = queue
            .key_by_prefix(prefix.to_owned())
            .await?
            .ok_or(AuthError::Invalid)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
            .is_some_and(|id| *id == row.id);
        if !cached {
            let (text, hash) = (token.to_owned(), row.hash.clone());
            let ok = tokio::task::spawn_blocking(move || verify_hash(&text, &hash))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(AuthError::Invalid);
            }
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest, row.id.clone());
        }
        if row.revoked {
            return Err(AuthError::Revoked);
        }
        let KeyRow { id, name, role, .. } = row;
        Ok(Principal {
            key_id: id,
            name,
            role,
        })
    }
}

impl Principal {
    /// Passes when the principal's role is among `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), AuthError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { role: self.role })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_verify_and_others_do_not() {
        let key = mint_key().unwrap();
        assert!(key.token.starts_with(KEY_PREFIX));
        assert_eq!(lookup_prefix(&key.token), Some(key.prefix.as_str()));
        assert!(verify_hash(&key.token, &key.hash));
        let mut forged = key.token.clone();
        forged.pop();
        forged.push('!');
        assert!(lookup_prefix(&forged).is_none());
        assert!(!verify_hash(
            &format!("{}x", &key.token[..key.token.len() - 1]),
            &key.hash
        ));
        assert!(!verify_hash(&key.token, "not a phc string"));
        assert!(lookup_prefix("sk-other").is_none());
    }
}
