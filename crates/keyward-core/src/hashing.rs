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
    /// Hashes that may wait for a thread; past that a request is refused at once with
    /// [`CoreError::Overloaded`]. 0: [`QUEUE_PER_THREAD`] per thread.
    pub queue_capacity: usize,
}

/// Waiting hashes per hashing thread by default: at about 50 ms a hash, a full queue is under
/// a second of work, so a waiting login still answers promptly.
pub const QUEUE_PER_THREAD: usize = 16;

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
            queue_capacity: 0,
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
        // Waiting jobs hold a password and a reply channel, not argon2's memory. The bound
        // keeps a flood from queueing without end: past it, requests are refused at once
        // (503 with Retry-After) instead of waiting behind work they would time out on.
        let threads = config.max_concurrent.max(1);
        let capacity = if config.queue_capacity == 0 {
            threads.saturating_mul(QUEUE_PER_THREAD)
        } else {
            config.queue_capacity
        };
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(capacity);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads {
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

    /// Whether `stored` (a PHC string, which carries its algorithm, version and parameters)
    /// is weaker than what this hasher makes: another algorithm or version, or any argon2
    /// cost below the configured one. The caller rehashes at the next successful login.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
        {
            return true;
        }
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        let wanted = self.argon2.params();
        params.m_cost() < wanted.m_cost()
            || params.t_cost() < wanted.t_cost()
            || params.p_cost() < wanted.p_cost()
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
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                return Err(CoreError::Overloaded {
                    retry_after_seconds: 1,
                })
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
        assert!(!hasher.needs_rehash(&hash));
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    8r2Yn0Mbh4fG9XJYvKaGd5xVUP1cYyCqsl2T3w0QHoA";
        assert!(hasher.needs_rehash(weak));
        let argon2i = hash.replacen("$argon2id$", "$argon2i$", 1);
        assert!(hasher.needs_rehash(&argon2i));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = PasswordHasher::new(PasswordHasherConfig {
            max_concurrent: 1,
            queue_capacity: 1,
            ..PasswordHasherConfig::default()
        })
        .unwrap();
        // Spawned tasks enqueue on their first poll, all before the one thread finishes a
        // hash (tens of milliseconds): 8 at once with room for 2 must refuse some.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    let password = Password::presented("correct horse battery".into());
                    hasher.verify(&password, None).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(CoreError::Overloaded { .. }))));
        assert!(results.iter().any(|r| matches!(r, Ok(false))));
    }

    #[test]
    fn token_hash_compares() {
        let a = sha256("kw_abc");
        assert!(a.ct_eq(&sha256("kw_abc")));
        assert!(!a.ct_eq(&sha256("kw_abd")));
        assert_eq!(format!("{a:?}"), "TokenHash([redacted])");
    }
}
