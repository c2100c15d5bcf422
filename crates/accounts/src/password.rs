//! Passwords: the policy for new ones, and argon2id hashing on a bounded pool.
//!
//! # Policy
//!
//! At least [`MIN_CHARS`] characters, at most [`MAX_BYTES`] bytes (far above the 64
//! characters every password manager fits in), no composition rules; a password
//! [zxcvbn] scores below [`MIN_SCORE`] (also counting the username and display name as
//! known words) is refused with zxcvbn's warning and suggestions.
//!
//! # Hashing
//!
//! argon2id, OWASP's parameters (m = 19 MiB, t = 2, p = 1), stored as PHC strings, so a
//! hash records its own parameters and a log-in re-hashes one made with other ones.
//! Each hash costs tens of milliseconds of one core, so hashes run on `threads`
//! dedicated threads (≤ cores), with at most `queue` more waiting; a hash beyond that is
//! refused at once with `Unavailable` and a retry-after, so a log-in storm costs a
//! bounded amount of memory (19 MiB per hashing thread, allocated by its first hash and
//! kept, which spares each hash ~4,900 page faults) and never stalls the async
//! runtime. The hashing threads run at a lower scheduling priority ([`HashPriority`]:
//! nice 10 by default, or Linux's `SCHED_IDLE`): when the CPU is short, the async
//! runtime's work (in the all-in-one, the deliveries of every chat message) goes first
//! and log-ins wait, instead of a log-in storm making every message late; on an idle
//! machine they run at full speed. A log-in for an unknown user verifies against a dummy hash of the
//! same parameters, so it costs the same as a wrong password.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use crate::error::AccountsError;
use crate::metrics::AccountsMetrics;

/// Shortest password, in characters.
pub const MIN_CHARS: usize = 8;
/// Longest password, in bytes.
pub const MAX_BYTES: usize = 1024;
/// Lowest zxcvbn score accepted: "safely unguessable: moderate protection from an
/// offline slow-hash scenario".
pub const MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Three;
/// zxcvbn looks at the first this many characters (its cost grows with the length, and
/// a longer password is strong by its length anyway).
const ESTIMATED_CHARS: usize = 100;
/// What a client is told to wait when the hashing queue is full.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A password from a request. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Whether `password` may be someone's new password. `known` are words an attacker
/// would try first (the username, the display name).
pub fn check_policy(password: &Password, known: &[&str]) -> Result<(), AccountsError> {
    let password = password.expose();
    if password.len() > MAX_BYTES {
        return Err(AccountsError::BadRequest(format!(
            "a password is at most {MAX_BYTES} bytes long"
        )));
    }
    if password.chars().count() < MIN_CHARS {
        return Err(AccountsError::WeakPassword(format!(
            "use at least {MIN_CHARS} characters; a few unrelated words are easy to remember"
        )));
    }
    let estimated: String = password.chars().take(ESTIMATED_CHARS).collect();
    let entropy = zxcvbn::zxcvbn(&estimated, known);
    if entropy.score() >= MIN_SCORE {
        return Ok(());
    }
    let mut advice = vec!["This password is too easy to guess".to_owned()];
    if let Some(feedback) = entropy.feedback() {
        if let Some(warning) = feedback.warning() {
            advice.push(warning.to_string());
        }
        advice.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if advice.len() == 1 {
        advice.push("Add another word or two; length beats symbols".into());
    }
    let sentences: Vec<&str> = advice.iter().map(|a| a.trim_end_matches('.')).collect();
    Err(AccountsError::WeakPassword(format!(
        "{}.",
        sentences.join(". ")
    )))
}

/// The characters of generated passwords: letters and digits without the look-alikes
/// `0 O 1 l I` (56 characters, about 5.8 bits each).
const GENERATED_ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Characters of a generated password: 24, about 139 random bits.
pub const GENERATED_CHARS: usize = 24;

/// A strong random password (an operator's reset), from the OS's random generator.
pub fn generate() -> Result<Password, AccountsError> {
    let n = GENERATED_ALPHABET.len();
    // The largest multiple of n below 256: bytes at or above it are drawn again, so
    // every character is equally likely.
    let limit = 256 - 256 % n;
    let mut password = String::with_capacity(GENERATED_CHARS);
    while password.len() < GENERATED_CHARS {
        for byte in crate::names::random_bytes::<32>()? {
            if usize::from(byte) < limit && password.len() < GENERATED_CHARS {
                password.push(char::from(GENERATED_ALPHABET[usize::from(byte) % n]));
            }
        }
    }
    Ok(Password::new(password))
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP's first recommendation for argon2id: m = 19 MiB, t = 2, p = 1.
    pub const OWASP: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
}

impl Default for HashParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password (or no user).
    Wrong,
    /// Right; `rehash`: the stored hash was made with other parameters than the current
    /// ones and should be replaced.
    Right {
        /// See above.
        rehash: bool,
    },
}

/// Counts a hash waiting for a pool thread while it exists (also when its caller gives
/// up meanwhile).
struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// argon2id on a bounded pool (see the module documentation).
pub struct PasswordHasher {
    /// `params` as argon2's.
    argon_params: Params,
    params: HashParams,
    /// Running + waiting hashes: `threads + queue` permits, taken without waiting.
    admitted: Arc<Semaphore>,
    /// Running hashes: `threads` permits.
    running: Arc<Semaphore>,
    /// A hash of a random password with the current parameters, verified for unknown
    /// users.
    dummy: String,
    metrics: AccountsMetrics,
    workers: Workers,
}

/// The scheduling priority of the hashing threads (`CHAT_HASH_PRIORITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashPriority {
    /// `idle`: Linux's `SCHED_IDLE`: they run only when no other thread wants the CPU,
    /// and any thread that wakes up preempts them at once; on a saturated CPU log-ins
    /// wait until it is not.
    Idle,
    /// `low` (the default): nice 10, a tenth of a normal thread's share when the CPU is
    /// contended.
    #[default]
    Low,
    /// `normal`: the process's own priority.
    Normal,
}

/// The nice value of [`HashPriority::Low`].
const LOW_NICE: i32 = 10;

impl std::str::FromStr for HashPriority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(Self::Idle),
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            _ => Err("must be idle, low or normal".into()),
        }
    }
}

/// A job for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The dedicated hashing threads: they take jobs from one queue and end when the
/// [`PasswordHasher`] (the only sender) is dropped.
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    /// Starts `threads` threads at `priority`. A priority that cannot be set (not
    /// Linux, or a seccomp profile that forbids it) is logged once and the threads run
    /// at the process's priority.
    fn start(threads: usize, priority: HashPriority) -> Result<Self, AccountsError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    if let Err(e) = lower_priority(priority)
                        && i == 0
                    {
                        tracing::warn!(?priority, error = %e, "could not lower the hashing threads' priority");
                    }
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| AccountsError::Internal(format!("starting a hashing thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `job` on a hashing thread and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AccountsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .map_err(|_| AccountsError::Internal("hashing threads stopped".into()))?;
        rx.await
            .map_err(|_| AccountsError::Internal("a hashing job failed".into()))
    }
}

/// Lowers the calling thread's scheduling priority to `priority` (Linux keeps the
/// policy and the nice value per thread, so the rest of the process keeps its own). A
/// nice value already lower than [`LOW_NICE`] is left alone.
#[cfg(target_os = "linux")]
fn lower_priority(priority: HashPriority) -> std::io::Result<()> {
    match priority {
        HashPriority::Normal => Ok(()),
        HashPriority::Low => {
            let me = Some(rustix::thread::gettid());
            if rustix::process::getpriority_process(me)? < LOW_NICE {
                rustix::process::setpriority_process(me, LOW_NICE)?;
            }
            Ok(())
        }
        HashPriority::Idle => set_idle_policy(),
    }
}

/// `sched_setscheduler(0, SCHED_IDLE, {0})`: the calling thread's policy becomes
/// `SCHED_IDLE` (always allowed: it only lowers the priority). rustix has no wrapper.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_idle_policy() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives the call, which
    // only reads it; pid 0 names the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(priority: HashPriority) -> std::io::Result<()> {
    match priority {
        HashPriority::Normal => Ok(()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "per-thread priorities are Linux-only",
        )),
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("running", &self.running.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A pool of `threads` (at least 1) hashing threads at `priority` with `queue`
    /// waiting places. Computes the dummy hash, so it takes one hash's time.
    pub fn new(
        params: HashParams,
        threads: usize,
        priority: HashPriority,
        queue: usize,
        metrics: AccountsMetrics,
    ) -> Result<Self, AccountsError> {
        let argon_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| AccountsError::Internal(format!("argon2 parameters: {e}")))?;
        let random = crate::hex::encode(&crate::names::random_bytes::<16>()?);
        // Not on a hashing thread: in memory of its own, freed at once.
        let dummy = hash_with(&argon_params, &random, &mut Vec::new())?;
        let threads = threads.max(1);
        Ok(Self {
            argon_params,
            params,
            admitted: Arc::new(Semaphore::new(threads + queue)),
            running: Arc::new(Semaphore::new(threads)),
            dummy,
            metrics,
            workers: Workers::start(threads, priority)?,
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a new password (PHC string).
    pub async fn hash(&self, password: &Password) -> Result<String, AccountsError> {
        let password = password.clone();
        self.run("hash", move |params, memory| {
            hash_with(params, password.expose(), memory)
        })
        .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no
    /// user (always [`Verified::Wrong`], in the same time).
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verified, AccountsError> {
        let password = password.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy).to_owned();
        let params = self.params;
        let verified = self
            .run("verify", move |_, memory| {
                let Ok(hash) = PasswordHash::new(&stored) else {
                    tracing::error!("a stored password hash is not a PHC string");
                    return Verified::Wrong;
                };
                if !matches(&hash, password.expose(), memory) {
                    return Verified::Wrong;
                }
                Verified::Right {
                    rehash: !made_with(&hash, params),
                }
            })
            .await?;
        Ok(if known { verified } else { Verified::Wrong })
    }

    /// Runs `job` on the pool, or refuses at once when the pool and its queue are full.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        job: impl FnOnce(&Params, &mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AccountsError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| AccountsError::Unavailable {
                message: "too many log-ins at once; try again shortly".into(),
                retry_after: BUSY_RETRY_AFTER,
            })?;
        let waiting = {
            self.metrics.hash_queue_depth.inc();
            Waiting(self.metrics.hash_queue_depth.clone())
        };
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| AccountsError::Internal("hashing pool closed".into()))?;
        drop(waiting);
        let params = self.argon_params.clone();
        let metrics = self.metrics.clone();
        self.workers
            .run(move || {
                // Held until the hash is done, even if the caller gave up meanwhile.
                let _permits = (admitted, running);
                let start = Instant::now();
                let out = MEMORY.with_borrow_mut(|memory| job(&params, memory));
                metrics.hashed(op, start.elapsed().as_secs_f64());
                out
            })
            .await
    }
}

thread_local! {
    /// A hashing thread's argon2 working memory (19 MiB at OWASP's parameters),
    /// allocated by its first hash and reused by the next ones: allocated per hash, it
    /// cost ~4,900 page faults whenever the allocator had handed it back to the kernel,
    /// a third of the hash (docs/benchmarks.md, "Accounts").
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `argon`'s hash of `password` with `salt` into `out`, in `memory` (resized to the
/// parameters' block count; every block is written before it is read, so a reused one
/// needs no clearing).
fn compute(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> argon2::Result<()> {
    memory.resize(params.block_count(), Block::default());
    argon.hash_password_into_with_memory(password, salt, out, &mut memory[..])
}

/// A new PHC string for `password`: argon2id 1.3 with `params`, a random 16-byte salt
/// and a 32-byte hash, as argon2's own `hash_password` makes it.
fn hash_with(
    params: &Params,
    password: &str,
    memory: &mut Vec<Block>,
) -> Result<String, AccountsError> {
    let internal = |e: &dyn fmt::Display| AccountsError::Internal(format!("argon2: {e}"));
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = crate::names::random_bytes::<16>()?;
    let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    compute(&argon, params, password.as_bytes(), &salt, &mut out, memory)
        .map_err(|e| internal(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes to `hash` with `hash`'s own algorithm, version,
/// parameters and salt (the outputs compared in constant time).
fn matches(hash: &PasswordHash, password: &str, memory: &mut Vec<Block>) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        Params::try_from(hash),
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0_u8; expected.len()];
    if compute(&argon, &params, password.as_bytes(), salt, &mut out, memory).is_err() {
        return false;
    }
    Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Whether `hash` is argon2id 1.3 with exactly `params`.
fn made_with(hash: &PasswordHash, params: HashParams) -> bool {
    let Ok(stored) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm == Algorithm::Argon2id.ident()
        && hash.version == Some(Version::V0x13.into())
        && stored.m_cost() == params.memory_kib
        && stored.t_cost() == params.iterations
        && stored.p_cost() == params.parallelism
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: HashParams = HashParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn pw(s: &str) -> Password {
        Password::new(s)
    }

    #[test]
    fn policy() {
        let strong = "correct horse battery staple";
        check_policy(&pw(strong), &[]).expect("strong");
        let random = crate::hex::encode(&crate::names::random_bytes::<512>().expect("random"));
        check_policy(&pw(&random), &[]).expect("1024 bytes allowed");
        let too_long = "x".repeat(MAX_BYTES + 1);
        assert!(matches!(
            check_policy(&pw(&too_long), &[]),
            Err(AccountsError::BadRequest(_))
        ));
        for weak in [
            "short1!",
            "password",
            "password123",
            "qwertyuiop",
            "aaaaaaaaaaaa",
        ] {
            let Err(AccountsError::WeakPassword(advice)) = check_policy(&pw(weak), &[]) else {
                panic!("{weak} accepted");
            };
            assert!(advice.len() > 40 && !advice.contains(".."), "{advice}");
        }
        // The username is a known word.
        assert!(check_policy(&pw("zanzibarqux"), &["zanzibarqux"]).is_err());
    }

    #[test]
    fn password_debug_is_redacted() {
        assert_eq!(format!("{:?}", pw("hunter2")), "Password(<redacted>)");
    }

    /// The calling thread's scheduling policy and nice value, from
    /// `/proc/thread-self/stat` (fields 41 and 19).
    #[cfg(target_os = "linux")]
    fn own_scheduling() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name's closing parenthesis start at field 3.
        let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat").1.split(' ').collect();
        (
            fields[41 - 3].parse().expect("policy"),
            fields[19 - 3].parse().expect("nice"),
        )
    }

    /// The hashing threads run at the priority they were given; the caller's thread
    /// keeps its own.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_given_priority() {
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        let (policy, nice) = own_scheduling();
        assert_eq!(policy, SCHED_OTHER);
        for (priority, expected) in [
            (HashPriority::Idle, (SCHED_IDLE, nice)),
            (HashPriority::Low, (SCHED_OTHER, nice.max(LOW_NICE))),
            (HashPriority::Normal, (SCHED_OTHER, nice)),
        ] {
            let hasher = PasswordHasher::new(CHEAP, 2, priority, 4, AccountsMetrics::default())
                .expect("pool");
            for _ in 0..4 {
                let seen = hasher.workers.run(own_scheduling).await.expect("job");
                assert_eq!(seen, expected, "{priority:?}");
            }
        }
        assert_eq!(own_scheduling(), (policy, nice));
    }

    /// Hashes computed in reused memory are argon2's own: `argon2`'s reference
    /// `hash_password` / `verify_password` accept ours and we accept theirs (the hashes
    /// stored before the memory was reused), across memory of other sizes.
    #[test]
    fn reused_memory_hashes_are_argon2s() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let small = Params::new(CHEAP.memory_kib, 1, 1, None).expect("params");
        let larger = Params::new(128, 2, 1, None).expect("params");
        let mut memory = Vec::new();
        for params in [&small, &larger, &small] {
            let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            let ours = hash_with(params, "correct horse", &mut memory).expect("hash");
            assert_eq!(memory.len(), params.block_count());
            reference
                .verify_password(b"correct horse", ours.as_str())
                .expect("argon2 verifies ours");
            let theirs = reference
                .hash_password(b"correct horse")
                .expect("reference hash")
                .to_string();
            for (stored, what) in [(&ours, "ours"), (&theirs, "theirs")] {
                let parsed = PasswordHash::new(stored).expect("PHC");
                assert!(matches(&parsed, "correct horse", &mut memory), "{what}");
                assert!(!matches(&parsed, "correct horsf", &mut memory), "{what}");
            }
        }
        // A PHC without a hash or of another algorithm never matches.
        assert!(!matches(
            &PasswordHash::new("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ").expect("PHC"),
            "x",
            &mut memory
        ));
    }

    #[tokio::test]
    async fn hash_verify_and_rehash() {
        let hasher = PasswordHasher::new(
            CHEAP,
            1,
            HashPriority::Normal,
            4,
            AccountsMetrics::default(),
        )
        .expect("pool");
        let hash = hasher.hash(&pw("open sesame")).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            hasher
                .verify(&pw("open sesame"), Some(&hash))
                .await
                .expect("verify"),
            Verified::Right { rehash: false }
        );
        assert_eq!(
            hasher
                .verify(&pw("open sesame!"), Some(&hash))
                .await
                .expect("verify"),
            Verified::Wrong
        );
        assert_eq!(
            hasher
                .verify(&pw("open sesame"), None)
                .await
                .expect("verify"),
            Verified::Wrong
        );
        assert_eq!(
            hasher
                .verify(&pw("x"), Some("not a hash"))
                .await
                .expect("verify"),
            Verified::Wrong
        );
        let stronger = HashParams {
            iterations: 2,
            ..CHEAP
        };
        let newer = PasswordHasher::new(
            stronger,
            1,
            HashPriority::Normal,
            4,
            AccountsMetrics::default(),
        )
        .expect("pool");
        assert_eq!(
            newer
                .verify(&pw("open sesame"), Some(&hash))
                .await
                .expect("verify"),
            Verified::Right { rehash: true }
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let metrics = AccountsMetrics::default();
        // One thread, one waiting place: of many hashes at once, most are refused.
        let hasher = Arc::new(
            PasswordHasher::new(
                HashParams::OWASP,
                1,
                HashPriority::Normal,
                1,
                metrics.clone(),
            )
            .expect("pool"),
        );
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let hasher = Arc::clone(&hasher);
                tokio::spawn(async move { hasher.hash(&pw("open sesame")).await })
            })
            .collect();
        let mut busy = 0;
        for call in calls {
            match call.await.expect("task") {
                Ok(_) => {}
                Err(AccountsError::Unavailable { retry_after, .. }) => {
                    assert_eq!(retry_after, BUSY_RETRY_AFTER);
                    busy += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!((1..=4).contains(&busy), "{busy} refused");
        assert_eq!(metrics.hash_queue_depth.get(), 0);
    }

    #[test]
    fn generated_passwords_are_long_random_and_pass_the_policy() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_eq!(a.expose().len(), GENERATED_CHARS);
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().bytes().all(|c| GENERATED_ALPHABET.contains(&c)));
        check_policy(&a, &["alice"]).expect("strong");
    }
}
