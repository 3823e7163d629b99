//! Hashing: SHA-256 for high-entropy secrets (API keys, refresh tokens), argon2id for passwords.

use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{CoreError, CoreResult};
use crate::secret::Password;

/// SHA-256 of a high-entropy secret. A plain fast hash is right here: keys and refresh tokens
/// carry 128+ random bits, so there is nothing to brute-force, and verification stays cheap.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison, for the check after an indexed lookup.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash([redacted])")
    }
}

pub fn sha256(secret: &str) -> TokenHash {
    TokenHash(Sha256::digest(secret.as_bytes()).into())
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy)]
pub struct PasswordHasherConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; further ones wait. Bounds CPU and memory (`memory_kib` each).
    pub max_concurrent: usize,
}

impl Default for PasswordHasherConfig {
    /// OWASP's argon2id recommendation: m=19 MiB, t=2, p=1.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// Hashes and verifies passwords on threads of their own, at most `max_concurrent` at a time,
/// so a burst of logins neither stalls the async runtime nor allocates unbounded memory.
///
/// The threads run at the lowest CPU priority (Linux `nice` 19): when logins and API requests
/// compete for the cores, requests (key verification above all) go first and a login storm
/// barely moves their latency; with the cores otherwise idle, hashing runs at full speed.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// A hash of a random password, verified against when the email is unknown so that
    /// "no such user" costs the same as "wrong password".
    dummy_hash: Arc<String>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The niceness of the hashing threads: the lowest priority that still runs.
const HASHING_NICENESS: i32 = 19;

/// Lowers the calling thread's CPU priority (Linux: `nice` is per thread). Elsewhere a no-op.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HASHING_NICENESS)
        };
        if result != 0 {
            tracing::debug!("could not lower the password hashing thread's priority");
        }
    }
}

impl PasswordHasher {
    pub fn new(config: PasswordHasherConfig) -> CoreResult<Self> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| CoreError::Unexpected(format!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let dummy_hash = hash_with(&argon2, &dummy)?;
        // Waiting jobs hold a password and a reply channel, not argon2's memory; the bound
        // only keeps a flood from growing the queue without end.
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(4096);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..config.max_concurrent.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("keyward-hash-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            // Every hasher is gone.
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| CoreError::Unexpected(format!("password hashing thread: {e}")))?;
        }
        Ok(Self {
            argon2: Arc::new(argon2),
            jobs,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    pub async fn hash(&self, password: &Password) -> CoreResult<String> {
        let argon2 = self.argon2.clone();
        let password = password.expose().to_owned();
        self.run(move || hash_with(&argon2, &password)).await?
    }

    /// Whether `password` matches `stored`; with `None` it verifies against the dummy hash and
    /// answers false, taking the same time.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> CoreResult<bool> {
        let argon2 = self.argon2.clone();
        let password = password.expose().to_owned();
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy_hash).to_owned();
        let matched = self
            .run(move || {
                PasswordHash::new(&stored)
                    .map(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(known && matched)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> CoreResult<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        let closed = || CoreError::Unexpected("password hasher closed".into());
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                // 4096 jobs wait: wait for room, off the async threads.
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|e| CoreError::Unexpected(format!("password hashing queue: {e}")))?
                    .map_err(|_| closed())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(closed()),
        }
        answer
            .await
            .map_err(|_| CoreError::Unexpected("password hashing failed".into()))
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> CoreResult<String> {
    use argon2::PasswordHasher as _;
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CoreError::Unexpected(format!("argon2: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hasher = PasswordHasher::new(PasswordHasherConfig::default()).unwrap();
        let password = Password::presented("correct horse battery".into());
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify(&password, Some(&hash)).await.unwrap());
        let wrong = Password::presented("wrong horse battery".into());
        assert!(!hasher.verify(&wrong, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&password, None).await.unwrap());
    }

    #[test]
    fn token_hash_compares() {
        let a = sha256("kw_abc");
        assert!(a.ct_eq(&sha256("kw_abc")));
        assert!(!a.ct_eq(&sha256("kw_abd")));
        assert_eq!(format!("{a:?}"), "TokenHash([redacted])");
    }
}
