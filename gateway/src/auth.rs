//! API keys: minting, argon2id hashing, verification with a cache, and roles.
//!
//! argon2 costs tens of milliseconds per verify, so a verified key is remembered by a
//! SHA-256 digest of its text. Key rows are cached too, so a request with a known key touches
//! no database. The cache is tied to the key generation, a counter that a trigger moves on
//! every change to a key: a revocation over the admin API clears it at once, and one made by
//! the CLI in another process is seen within [`RECHECK_EVERY`]. The `obb-key-watch` service
//! reads the generation twice in that time ([`Authenticator::recheck_now`]), so a request
//! finds the cache fresh and reads nothing; it reads the generation itself only when the
//! watch falls behind.

use crate::queue::{KeyPriorities, KeyRow, MintedKey, Queue, StoreError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use openbeepboop::Role;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long cached key rows are trusted before the key generation is read again: the
/// longest a revocation made by the CLI, in another process, takes to apply.
pub const RECHECK_EVERY: Duration = Duration::from_millis(250);

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
    pub priorities: KeyPriorities,
    /// Submits a minute, when the key is limited.
    pub requests_per_minute: Option<u32>,
    /// Jobs it may have queued, when the key is limited.
    pub max_queued_jobs: Option<u32>,
}

/// Why a caller is turned away: the caller's fault, unlike the rest of [`AuthError`].
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("missing API key: send `Authorization: Bearer sk-obb-…`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("a {role} key may not use this route")]
    Forbidden { role: Role },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Refused(#[from] Refusal),
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

/// One thread that does all the argon2 work.
///
/// Hashing is deliberately slow and takes 19 MiB of working memory per hash. On one thread
/// it never takes more than one core and one such block at a time, whatever the number of
/// bad keys sent at once; the allocator (see `main.rs`) then reuses the block.
struct Hasher {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Hasher {
    fn spawn() -> std::io::Result<Self> {
        let (jobs, receiver) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("obb-argon2".to_owned())
            // Ends when the authenticator, and with it the sender, is dropped.
            .spawn(move || receiver.iter().for_each(|job| job()))?;
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(work());
            }))
            .ok()?;
        answer.await.ok()
    }
}

/// Checks keys against the store, remembering those already verified.
pub struct Authenticator {
    hasher: Hasher,
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// Verifications under way, by key digest; failed ones are not remembered.
    in_flight: Mutex<HashMap<[u8; 32], Arc<OnceCell<bool>>>>,
    rows: Mutex<RowCache>,
}

/// Key rows by lookup prefix, valid for one key generation.
#[derive(Default)]
struct RowCache {
    by_prefix: HashMap<String, KeyRow>,
    generation: i64,
    checked_at: Option<Instant>,
}

impl RowCache {
    /// Moves to `generation` if it is newer, dropping every row of the older one. Returns
    /// whether rows read at `generation` may be cached.
    fn observe(&mut self, generation: i64) -> bool {
        if generation > self.generation {
            self.by_prefix.clear();
            self.generation = generation;
        }
        generation == self.generation
    }
}

impl Authenticator {
    /// Starts the hashing thread.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            hasher: Hasher::spawn()?,
            verified: Mutex::default(),
            in_flight: Mutex::default(),
            rows: Mutex::default(),
        })
    }

    /// Mints a key on the hashing thread.
    pub async fn mint(&self) -> Result<MintedKey, AuthError> {
        self.hasher
            .run(mint_key)
            .await
            .unwrap_or_else(|| Err(AuthError::Hash("the hashing thread stopped".to_owned())))
    }

    /// Resolves an `Authorization` header value to a principal.
    pub async fn authenticate(
        &self,
        queue: &Queue,
        authorization: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = authorization
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .ok_or(Refusal::Missing)?;
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))
            .ok_or(Refusal::Invalid)?
            .trim();
        let prefix = lookup_prefix(token).ok_or(Refusal::Invalid)?;
        let row = self.row(queue, prefix).await?.ok_or(Refusal::Invalid)?;
        if !self.verify(token, &row).await {
            return Err(Refusal::Invalid.into());
        }
        if row.revoked {
            return Err(Refusal::Revoked.into());
        }
        let KeyRow {
            id,
            name,
            role,
            priorities,
            requests_per_minute,
            max_queued_jobs,
            ..
        } = row;
        Ok(Principal {
            key_id: id,
            name,
            role,
            priorities,
            requests_per_minute,
            max_queued_jobs,
        })
    }

    /// Whether `token` is the key of `row`. Each key is verified with argon2 once: later
    /// requests find its digest in the cache, and requests that arrive while it is being
    /// verified (a restart under load) wait for that one verification.
    async fn verify(&self, token: &str, row: &KeyRow) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = |verified: &HashMap<[u8; 32], String>| {
            verified.get(&digest).is_some_and(|id| *id == row.id)
        };
        if known(&self.lock_verified()) {
            return true;
        }
        let flight = Arc::clone(
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(digest)
                .or_default(),
        );
        let ok = *flight
            .get_or_init(|| async {
                let (text, hash) = (token.to_owned(), row.hash.clone());
                let ok = self
                    .hasher
                    .run(move || verify_hash(&text, &hash))
                    .await
                    .unwrap_or(false);
                if ok {
                    // Remembered before the flight ends, so no later request verifies again.
                    self.lock_verified().insert(digest, row.id.clone());
                }
                ok
            })
            .await;
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest);
        ok
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the key generation now, dropping cached rows if any key changed. Call it after
    /// changing a key in this process, so the change applies to the very next request.
    /// Returns the generation read.
    pub async fn recheck(&self, queue: &Queue) -> Result<i64, AuthError> {
        let generation = queue.key_generation().await?;
        self.lock_rows().observe(generation);
        Ok(generation)
    }

    /// Reads the key generation now and counts it as the periodic recheck: what the
    /// `obb-key-watch` service runs every half [`RECHECK_EVERY`], so that no request waits
    /// for that read.
    /// Counted only when the read succeeded: while the database fails, requests read the
    /// generation themselves and answer its error, instead of trusting a stale cache.
    /// Returns the generation read.
    pub async fn recheck_now(&self, queue: &Queue) -> Result<i64, AuthError> {
        let started = Instant::now();
        let generation = self.recheck(queue).await?;
        let mut rows = self.lock_rows();
        // A request may have claimed a later recheck meanwhile; keep the later one.
        rows.checked_at = Some(rows.checked_at.map_or(started, |at| at.max(started)));
        Ok(generation)
    }

    /// The row of the key with `prefix`, from the cache when it is fresh.
    async fn row(&self, queue: &Queue, prefix: &str) -> Result<Option<KeyRow>, AuthError> {
        let due = {
            let mut rows = self.lock_rows();
            let due = rows
                .checked_at
                .is_none_or(|at| at.elapsed() >= RECHECK_EVERY);
            if due {
                // Claimed here, so concurrent requests keep using the cache meanwhile.
                rows.checked_at = Some(Instant::now());
            }
            due
        };
        if due {
            self.recheck(queue).await?;
        }
        if let Some(row) = self.lock_rows().by_prefix.get(prefix) {
            return Ok(Some(row.clone()));
        }
        // The generation is read before the row, so a row is never cached under a
        // generation older than the change it reflects.
        let (generation, row) = queue.key_by_prefix(prefix.to_owned()).await?;
        if let Some(row) = &row {
            let mut rows = self.lock_rows();
            if rows.observe(generation) {
                rows.by_prefix.insert(prefix.to_owned(), row.clone());
            }
        }
        Ok(row)
    }

    fn lock_rows(&self) -> std::sync::MutexGuard<'_, RowCache> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Principal {
    /// Passes when the principal's role is among `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Refusal> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Refusal::Forbidden { role: self.role })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_rows_follow_the_newest_key_generation_only() {
        let row = KeyRow {
            id: "key_a".into(),
            name: "a".into(),
            role: Role::User,
            hash: String::new(),
            revoked: false,
            priorities: KeyPriorities::default(),
            requests_per_minute: None,
            max_queued_jobs: None,
        };
        let mut cache = RowCache::default();
        assert!(
            cache.observe(0),
            "rows read at the current generation are kept"
        );
        cache.by_prefix.insert("a".into(), row);
        assert!(cache.observe(3), "a newer generation is adopted");
        assert!(cache.by_prefix.is_empty(), "and drops the older rows");
        assert!(
            !cache.observe(2),
            "a row read before the latest change is not cached"
        );
        assert_eq!(cache.generation, 3);
    }

    #[tokio::test]
    async fn a_recheck_off_the_request_path_applies_a_revocation_made_in_another_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        Queue::setup(&crate::queue::Location::File(path.clone())).unwrap();
        let queue = Queue::open(
            &crate::queue::Location::File(path.clone()),
            crate::queue::QueueSettings::default(),
            Arc::new(|_, _| {}),
        )
        .unwrap();
        let key = mint_key().unwrap();
        let created = crate::queue::offline::create_key(
            &crate::queue::Location::File(path.clone()),
            &key,
            "u",
            Role::User,
        )
        .unwrap();
        let auth = Authenticator::new().unwrap();
        let bearer = format!("Bearer {}", key.token);
        let principal = auth.authenticate(&queue, Some(&bearer)).await.unwrap();
        assert_eq!(principal.key_id, created.info.id.as_str());

        // The CLI revokes the key through its own connection; the watch's recheck applies it.
        crate::queue::offline::revoke_key(
            &crate::queue::Location::File(path.clone()),
            created.info.id.as_str(),
        )
        .unwrap();
        auth.recheck_now(&queue).await.unwrap();
        assert!(matches!(
            auth.authenticate(&queue, Some(&bearer)).await,
            Err(AuthError::Refused(Refusal::Revoked))
        ));
    }

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
        // Another last character: never the one it had (a random key may end in `x`).
        let last = if key.token.ends_with('x') { 'y' } else { 'x' };
        assert!(!verify_hash(
            &format!("{}{last}", &key.token[..key.token.len() - 1]),
            &key.hash
        ));
        assert!(!verify_hash(&key.token, "not a phc string"));
        assert!(lookup_prefix("sk-other").is_none());
    }
}
