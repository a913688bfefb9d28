//! Wrappers around any [`Provider`]: fault injection ([`Faulty`]) and latency ([`Delayed`]) for
//! chaos tests and rehearsals.
//!
//! They implement the same trait as the provider they wrap, so the engine cannot tell them
//! apart and no provider carries test-only code. Both are configured through `&self` (interior
//! state), so a test can arm a fault while the engine holds the wrapper behind an `Arc`.

use super::{Capabilities, Inspection, Minted, Provider, ProviderError};
use crate::plan::{ProviderKind, Target};
use async_trait::async_trait;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One operation of the [`Provider`] trait (the ones that talk to the owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Inspect,
    Mint,
    Verify,
    Deactivate,
    Reactivate,
    Revoke,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Inspect,
        Operation::Mint,
        Operation::Verify,
        Operation::Deactivate,
        Operation::Reactivate,
        Operation::Revoke,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Inspect => "inspect",
            Operation::Mint => "mint",
            Operation::Verify => "verify",
            Operation::Deactivate => "deactivate",
            Operation::Reactivate => "reactivate",
            Operation::Revoke => "revoke",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Transient,
    Quota,
    NotFound,
    Rejected,
    Failed,
}

impl FaultKind {
    fn error(self, op: Operation, call: u64) -> ProviderError {
        let msg = format!("injected {self:?} fault in {op} (call {call})");
        match self {
            FaultKind::Transient => ProviderError::Transient(msg),
            FaultKind::Quota => ProviderError::Quota(msg),
            FaultKind::NotFound => ProviderError::NotFound(msg),
            FaultKind::Rejected => ProviderError::Rejected(msg),
            FaultKind::Failed => ProviderError::Failed(msg),
        }
    }
}

/// When an injected fault strikes, relative to the real call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The call never reaches the provider: nothing changed at the owner.
    Before,
    /// The call is made and its effect happens, but the caller gets the error — a lost response
    /// (the key was created, the engine never learnt its id). This is the case that makes
    /// orphans, so resume logic must be tested against it.
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    kind: FaultKind,
    point: FaultPoint,
}

/// A seeded fraction of calls fail with `Transient` (before the call).
#[derive(Debug)]
struct RandomFaults {
    /// Probability in [0, 1].
    fraction: f64,
    ops: Vec<Operation>,
    rng: SplitMix64,
}

#[derive(Debug, Default)]
struct FaultState {
    scripted: BTreeMap<Operation, VecDeque<Fault>>,
    random: Option<RandomFaults>,
    calls: BTreeMap<Operation, u64>,
    injected: BTreeMap<Operation, u64>,
}

/// A provider whose calls fail on demand: the next N calls of an operation, or a seeded
/// fraction of calls. Scripted faults are consumed in order and take precedence over random
/// ones; calls without a fault go through to the inner provider unchanged.
#[derive(Debug)]
pub struct Faulty<P> {
    inner: P,
    state: Mutex<FaultState>,
}

impl<P: Provider> Faulty<P> {
    pub fn new(inner: P) -> Self {
        Faulty {
            inner,
            state: Mutex::new(FaultState::default()),
        }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    pub fn into_inner(self) -> P {
        self.inner
    }

    /// The next `n` calls of `op` fail with `kind` without reaching the provider.
    pub fn fail_next(&self, op: Operation, n: usize, kind: FaultKind) -> &Self {
        self.script(op, n, kind, FaultPoint::Before)
    }

    /// The next `n` calls of `op` reach the provider (their effect happens) and then fail with
    /// `kind`, as when the response is lost.
    pub fn fail_next_after(&self, op: Operation, n: usize, kind: FaultKind) -> &Self {
        self.script(op, n, kind, FaultPoint::After)
    }

    fn script(&self, op: Operation, n: usize, kind: FaultKind, point: FaultPoint) -> &Self {
        let mut state = self.lock();
        let queue = state.scripted.entry(op).or_default();
        queue.extend(std::iter::repeat_n(Fault { kind, point }, n));
        drop(state);
        self
    }

    /// From now on, each call of one of `ops` (all operations when empty) fails with
    /// `Transient`, before reaching the provider, with probability `fraction` (clamped to
    /// [0, 1]). The same seed gives the same sequence of faults for the same sequence of calls.
    pub fn fail_fraction(&self, fraction: f64, seed: u64, ops: &[Operation]) -> &Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let ops = if ops.is_empty() {
            Operation::ALL.to_vec()
        } else {
            ops.to_vec()
        };
        self.lock().random = Some(RandomFaults {
            fraction,
            ops,
            rng: SplitMix64(seed),
        });
        self
    }

    /// Removes every armed fault (counters are kept).
    pub fn heal(&self) -> &Self {
        let mut state = self.lock();
        state.scripted.clear();
        state.random = None;
        drop(state);
        self
    }

    /// How many calls of `op` were made to the wrapper (failed ones included).
    pub fn calls(&self, op: Operation) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many calls of `op` got an injected fault.
    pub fn injected(&self, op: Operation) -> u64 {
        self.lock().injected.get(&op).copied().unwrap_or(0)
    }

    /// Scripted faults of `op` not yet consumed.
    pub fn pending(&self, op: Operation) -> usize {
        self.lock().scripted.get(&op).map_or(0, VecDeque::len)
    }

    // A panic while the lock is held (none of the code under it can panic) would only poison
    // counters; keep serving rather than turning every later call into a panic.
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the call and decides its fault, if any. Returns the call number too (1-based).
    fn decide(&self, op: Operation) -> (u64, Option<Fault>) {
        let mut state = self.lock();
        let call = {
            let n = state.calls.entry(op).or_default();
            *n += 1;
            *n
        };
        let mut fault = state.scripted.get_mut(&op).and_then(VecDeque::pop_front);
        if fault.is_none()
            && let Some(random) = state.random.as_mut()
            && random.ops.contains(&op)
            && random.rng.next_f64() < random.fraction
        {
            fault = Some(Fault {
                kind: FaultKind::Transient,
                point: FaultPoint::Before,
            });
        }
        if fault.is_some() {
            *state.injected.entry(op).or_default() += 1;
        }
        (call, fault)
    }

    async fn run<T, F>(&self, op: Operation, call: F) -> Result<T, ProviderError>
    where
        F: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let (n, fault) = self.decide(op);
        match fault {
            None => call.await,
            Some(Fault {
                kind,
                point: FaultPoint::Before,
            }) => {
                tracing::debug!(operation = %op, call = n, ?kind, "injected fault before the call");
                Err(kind.error(op, n))
            }
            Some(Fault {
                kind,
                point: FaultPoint::After,
            }) => {
                // The real outcome is dropped on purpose: that is the fault. A minted value
                // dropped here is wiped by `Secret`'s drop.
                let outcome = call.await;
                tracing::debug!(operation = %op, call = n, ?kind, succeeded = outcome.is_ok(), "injected fault after the call");
                Err(kind.error(op, n))
            }
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for Faulty<P> {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn capabilities_for(&self, target: &Target) -> Capabilities {
        self.inner.capabilities_for(target)
    }

    fn marks(&self) -> bool {
        self.inner.marks()
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        self.run(Operation::Inspect, self.inner.inspect(target))
            .await
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        self.run(Operation::Mint, self.inner.mint(target)).await
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        self.run(Operation::Verify, self.inner.verify(target, minted))
            .await
    }

    async fn deactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.run(
            Operation::Deactivate,
            self.inner.deactivate(target, credential_id),
        )
        .await
    }

    async fn reactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.run(
            Operation::Reactivate,
            self.inner.reactivate(target, credential_id),
        )
        .await
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.run(Operation::Revoke, self.inner.revoke(target, credential_id))
            .await
    }

    fn verified_note(&self, target: &Target) -> Option<String> {
        self.inner.verified_note(target)
    }
}

#[derive(Debug)]
struct Jitter {
    max: Duration,
    rng: SplitMix64,
}

/// A provider whose calls take longer: a base latency for every operation, an override per
/// operation, and an optional seeded jitter in `[0, max]` added to each call. The delay comes
/// before the call, as network latency would, and uses `tokio::time::sleep` so tests running
/// with a paused clock do not wait for real.
#[derive(Debug)]
pub struct Delayed<P> {
    inner: P,
    base: Duration,
    per_op: BTreeMap<Operation, Duration>,
    jitter: Mutex<Option<Jitter>>,
}

impl<P: Provider> Delayed<P> {
    pub fn new(inner: P, latency: Duration) -> Self {
        Delayed {
            inner,
            base: latency,
            per_op: BTreeMap::new(),
            jitter: Mutex::new(None),
        }
    }

    /// Latency of one operation instead of the base.
    pub fn with_latency(mut self, op: Operation, latency: Duration) -> Self {
        self.per_op.insert(op, latency);
        self
    }

    /// Adds a pseudo-random extra delay in `[0, max]` to every call, reproducible by `seed`.
    pub fn with_jitter(self, max: Duration, seed: u64) -> Self {
        let rng = SplitMix64(seed);
        *self
            .jitter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Jitter { max, rng });
        self
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The delay the next call of `op` will get (draws from the jitter sequence).
    fn delay(&self, op: Operation) -> Duration {
        let base = self.per_op.get(&op).copied().unwrap_or(self.base);
        let mut jitter = self
            .jitter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match jitter.as_mut() {
            Some(j) => base.saturating_add(j.max.mul_f64(j.rng.next_f64())),
            None => base,
        }
    }

    async fn wait(&self, op: Operation) {
        let d = self.delay(op);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for Delayed<P> {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn capabilities_for(&self, target: &Target) -> Capabilities {
        self.inner.capabilities_for(target)
    }

    fn marks(&self) -> bool {
        self.inner.marks()
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        self.wait(Operation::Inspect).await;
        self.inner.inspect(target).await
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        self.wait(Operation::Mint).await;
        self.inner.mint(target).await
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        self.wait(Operation::Verify).await;
        self.inner.verify(target, minted).await
    }

    async fn deactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.wait(Operation::Deactivate).await;
        self.inner.deactivate(target, credential_id).await
    }

    async fn reactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.wait(Operation::Reactivate).await;
        self.inner.reactivate(target, credential_id).await
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.wait(Operation::Revoke).await;
        self.inner.revoke(target, credential_id).await
    }

    fn verified_note(&self, target: &Target) -> Option<String> {
        self.inner.verified_note(target)
    }
}

/// A provider whose every operation first waits on a shared [`RateLimiter`]: the run's
/// per-service limit (one token per operation; an inspection may make a few API calls).
pub struct RateLimited<P> {
    inner: P,
    limiter: std::sync::Arc<crate::ratelimit::RateLimiter>,
}

impl<P> RateLimited<P> {
    pub fn new(inner: P, limiter: std::sync::Arc<crate::ratelimit::RateLimiter>) -> Self {
        RateLimited { inner, limiter }
    }
}

#[async_trait]
impl<P: Provider> Provider for RateLimited<P> {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn inspect(&self, target: &Target) -> Result<Inspection, ProviderError> {
        self.limiter.acquire().await;
        self.inner.inspect(target).await
    }

    async fn mint(&self, target: &Target) -> Result<Minted, ProviderError> {
        self.limiter.acquire().await;
        self.inner.mint(target).await
    }

    async fn verify(&self, target: &Target, minted: &Minted) -> Result<(), ProviderError> {
        self.limiter.acquire().await;
        self.inner.verify(target, minted).await
    }

    async fn deactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.limiter.acquire().await;
        self.inner.deactivate(target, credential_id).await
    }

    async fn reactivate(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.limiter.acquire().await;
        self.inner.reactivate(target, credential_id).await
    }

    async fn revoke(&self, target: &Target, credential_id: &str) -> Result<(), ProviderError> {
        self.limiter.acquire().await;
        self.inner.revoke(target, credential_id).await
    }
}

/// SplitMix64: a tiny, well-distributed generator; enough for reproducible fault schedules
/// (not for anything secret).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{CredentialInfo, CredentialStatus};
    use crate::secret::Secret;
    use std::sync::Arc;
    use std::time::Instant;

    /// A provider that keeps credentials in memory and counts what reached it.
    #[derive(Default)]
    struct Fake {
        keys: Mutex<Vec<CredentialInfo>>,
        next: Mutex<u32>,
    }

    impl Fake {
        fn ids(&self) -> Vec<String> {
            self.keys
                .lock()
                .unwrap()
                .iter()
                .map(|k| k.id.clone())
                .collect()
        }
    }

    #[async_trait]
    impl Provider for Fake {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Exec
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                deactivate: true,
                reactivate: true,
                manual_mint: false,
                max_credentials: None,
            }
        }
        async fn inspect(&self, _: &Target) -> Result<Inspection, ProviderError> {
            Ok(Inspection {
                principal: "fake".into(),
                credentials: self.keys.lock().unwrap().clone(),
            })
        }
        async fn mint(&self, _: &Target) -> Result<Minted, ProviderError> {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            let id = format!("k{next}");
            self.keys.lock().unwrap().push(CredentialInfo {
                label: None,
                id: id.clone(),
                status: CredentialStatus::Active,
                created_at: None,
                last_used: None,
                last_used_service: None,
            });
            let fields = BTreeMap::from([("value".to_owned(), Secret::new("sekrit"))]);
            Ok(Minted { id, fields })
        }
        async fn verify(&self, _: &Target, _: &Minted) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn deactivate(&self, _: &Target, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn reactivate(&self, _: &Target, _: &str) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn revoke(&self, _: &Target, id: &str) -> Result<(), ProviderError> {
            self.keys.lock().unwrap().retain(|k| k.id != id);
            Ok(())
        }
    }

    fn target() -> Target {
        serde_saphyr::from_str("id: t\nprovider: exec\nbindings: []\n").unwrap()
    }

    #[tokio::test]
    async fn fail_next_fails_exactly_n_calls_before_reaching_the_provider() {
        let p = Faulty::new(Fake::default());
        let t = target();
        p.fail_next(Operation::Mint, 2, FaultKind::Transient);
        assert_eq!(p.pending(Operation::Mint), 2);
        for _ in 0..2 {
            let err = p.mint(&t).await.unwrap_err();
            assert!(err.is_transient(), "{err}");
            assert!(err.to_string().contains("mint"), "{err}");
        }
        assert!(
            p.inner().ids().is_empty(),
            "a fault before the call changes nothing"
        );
        let minted = p.mint(&t).await.unwrap();
        assert_eq!(minted.id, "k1");
        assert_eq!(p.calls(Operation::Mint), 3);
        assert_eq!(p.injected(Operation::Mint), 2);
        // Other operations are untouched.
        p.revoke(&t, "k1").await.unwrap();
        assert_eq!(p.injected(Operation::Revoke), 0);
    }

    #[tokio::test]
    async fn fault_kinds_map_to_their_errors() {
        let p = Faulty::new(Fake::default());
        let t = target();
        p.fail_next(Operation::Mint, 1, FaultKind::Quota)
            .fail_next(Operation::Revoke, 1, FaultKind::NotFound)
            .fail_next(Operation::Verify, 1, FaultKind::Rejected)
            .fail_next(Operation::Inspect, 1, FaultKind::Failed);
        assert!(matches!(p.mint(&t).await, Err(ProviderError::Quota(_))));
        assert!(matches!(
            p.revoke(&t, "x").await,
            Err(ProviderError::NotFound(_))
        ));
        let minted = p.mint(&t).await.unwrap();
        assert!(matches!(
            p.verify(&t, &minted).await,
            Err(ProviderError::Rejected(_))
        ));
        assert!(matches!(p.inspect(&t).await, Err(ProviderError::Failed(_))));
        p.verify(&t, &minted).await.unwrap();
    }

    #[tokio::test]
    async fn fail_after_lets_the_effect_happen() {
        let p = Faulty::new(Fake::default());
        let t = target();
        p.fail_next_after(Operation::Mint, 1, FaultKind::Transient);
        let err = p.mint(&t).await.unwrap_err();
        assert!(err.is_transient());
        // The credential exists although the caller never saw it: an orphan to find on resume.
        assert_eq!(p.inner().ids(), vec!["k1".to_owned()]);
        p.fail_next_after(Operation::Revoke, 1, FaultKind::Failed);
        assert!(p.revoke(&t, "k1").await.is_err());
        assert!(p.inner().ids().is_empty());
    }

    #[tokio::test]
    async fn fraction_is_seeded_and_reproducible() {
        async fn pattern(seed: u64) -> Vec<bool> {
            let p = Faulty::new(Fake::default());
            let t = target();
            p.fail_fraction(0.5, seed, &[Operation::Inspect]);
            let mut out = Vec::new();
            for _ in 0..200 {
                out.push(p.inspect(&t).await.is_err());
            }
            // Operations outside the list never fail.
            assert!(p.mint(&t).await.is_ok());
            out
        }
        let a = pattern(7).await;
        assert_eq!(a, pattern(7).await, "same seed, same faults");
        assert_ne!(a, pattern(8).await, "another seed, other faults");
        let failures = a.iter().filter(|f| **f).count();
        assert!((60..=140).contains(&failures), "about half: {failures}");
    }

    #[tokio::test]
    async fn fraction_extremes_and_heal() {
        let p = Faulty::new(Fake::default());
        let t = target();
        p.fail_fraction(1.0, 1, &[]);
        for op_result in [p.inspect(&t).await.is_err(), p.mint(&t).await.is_err()] {
            assert!(op_result);
        }
        p.heal();
        assert!(p.inspect(&t).await.is_ok());
        p.fail_fraction(0.0, 1, &[]);
        for _ in 0..50 {
            assert!(p.inspect(&t).await.is_ok());
        }
        p.fail_fraction(f64::NAN, 1, &[]);
        assert!(p.inspect(&t).await.is_ok());
        // Scripted faults win over an armed fraction of zero.
        p.fail_next(Operation::Inspect, 1, FaultKind::Failed);
        assert!(p.inspect(&t).await.is_err());
    }

    #[tokio::test]
    async fn faulty_is_usable_as_a_shared_trait_object() {
        let faulty = Arc::new(Faulty::new(Fake::default()));
        let dynamic: Arc<dyn Provider> = faulty.clone();
        faulty.fail_next(Operation::Inspect, 1, FaultKind::Transient);
        assert!(dynamic.inspect(&target()).await.is_err());
        assert!(dynamic.inspect(&target()).await.is_ok());
        assert_eq!(dynamic.kind(), ProviderKind::Exec);
        assert!(dynamic.capabilities().deactivate);
    }

    #[tokio::test]
    async fn delayed_adds_latency_per_operation() {
        let p = Delayed::new(Fake::default(), Duration::from_millis(5))
            .with_latency(Operation::Mint, Duration::from_millis(60));
        let t = target();
        let start = Instant::now();
        p.inspect(&t).await.unwrap();
        let inspect = start.elapsed();
        let start = Instant::now();
        let minted = p.mint(&t).await.unwrap();
        let mint = start.elapsed();
        assert!(inspect >= Duration::from_millis(5), "{inspect:?}");
        assert!(mint >= Duration::from_millis(60), "{mint:?}");
        assert_eq!(minted.id, "k1", "the call still happens");
        assert_eq!(p.inner().ids(), vec!["k1".to_owned()]);
    }

    #[tokio::test]
    async fn delayed_jitter_stays_in_bounds_and_is_seeded() {
        let make = || {
            Delayed::new(Fake::default(), Duration::from_millis(10))
                .with_jitter(Duration::from_millis(20), 42)
        };
        let a = make();
        let b = make();
        let da: Vec<_> = (0..50).map(|_| a.delay(Operation::Verify)).collect();
        let db: Vec<_> = (0..50).map(|_| b.delay(Operation::Verify)).collect();
        assert_eq!(da, db);
        assert!(
            da.iter()
                .all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(30))
        );
        assert!(da.iter().any(|d| *d != da[0]), "jitter varies");
    }

    #[tokio::test]
    async fn wrappers_compose() {
        let p = Delayed::new(Faulty::new(Fake::default()), Duration::from_millis(1));
        p.inner()
            .fail_next(Operation::Revoke, 1, FaultKind::Transient);
        let t = target();
        assert!(p.revoke(&t, "k1").await.is_err());
        assert!(p.revoke(&t, "k1").await.is_ok());
    }
}
