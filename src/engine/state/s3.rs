//! The S3 backend of the state: a store of objects with conditional writes, and the
//! [`Remote`] that the journal and the stash write through.
//!
//! S3 is the truth; the journal keeps an in-memory SQLite copy (filled from S3 when it opens,
//! then written through) only so that every query reads as it does locally. A runner on a
//! fresh machine therefore resumes any run from S3 alone.
//!
//! Ordering, the same guarantee as the local journal: records of one target go to S3 in the
//! order they were made, on a *chain* (a task per target) that writes them in *batches*, one
//! after the other. A record that precedes a side effect (the intent of a step that changes
//! something at an owner or at CircleCI) waits until its chain is empty: everything recorded
//! before it, and itself, is in S3 before the side effect starts. The stash's changes go on
//! the same chain, in their place among the records, and are waited for by the next intent
//! (a sealed value before any write of it, an erased one after the `done` record). The
//! other records (a step's done, a read-only step, the displayed state) do not wait: they go
//! in the same batch as the next record that does (or alone, after [`LINGER`]), so a step
//! costs one S3 write on its path however many records precede it, and S3 is asked for about
//! half the writes one object per record would need. Since a chain writes in order and stops
//! at its first failure, what S3 holds of a target is always a prefix of what was recorded: a
//! crash loses at most the tail after the last wait, exactly as if it had happened earlier, at
//! a point the protocol already survives.
//!
//! Batch `n` of a target is `runs/<run>/events/<target>/<n>.json` (its records numbered on from
//! the batch before, and the target's displayed state when it changed), written with
//! `If-None-Match: *`: two writers (a bug, a lease stolen during a pause) can never both write
//! the same batch; the second is refused and stops. A write that S3 answered with an error but
//! applied (a dropped answer) is retried, refused by its own first copy, and recognised by
//! comparing bytes.
//!
//! Calls run on a runtime of their own (two threads), so the synchronous journal API can wait
//! for them from any thread, inside or outside the engine's runtime.

use super::S3Location;
use super::records;
use crate::engine::journal::{Event, TargetState};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Largest object rekey reads from its state (a plan text is the largest thing it writes).
const MAX_OBJECT: usize = 16 * 1024 * 1024;
/// Objects fetched at once when a journal is read from S3.
const FETCH_CONCURRENCY: usize = 32;
/// Attempts of one write beyond the SDK's own retries (503 SlowDown, dropped connections).
const WRITE_ATTEMPTS: u32 = 4;

/// Why an S3 call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// 412: `If-None-Match: *` found the object, or `If-Match` another ETag.
    Precondition,
    /// Anything else, in a line without secrets (S3's code and message, or the cause).
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Precondition => f.write_str("a conditional write was refused (412)"),
            StoreError::Other(e) => f.write_str(e),
        }
    }
}

/// The condition of a write.
#[derive(Debug, Clone)]
pub enum Cond {
    None,
    /// `If-None-Match: *`: only if the key does not exist.
    Absent,
    /// `If-Match: ETAG`: only if the object is still the one with this ETag.
    Matches(String),
}

/// The objects of one state location, on rekey's S3 client.
#[derive(Clone)]
pub struct Store {
    client: aws_sdk_s3::Client,
    pub location: S3Location,
    kms_key: Option<String>,
}

impl Store {
    /// A store at `location` with the SDK configuration `sdk` (path-style addressing when an
    /// endpoint is configured, as emulators need).
    pub fn new(sdk: &aws_config::SdkConfig, location: S3Location) -> Store {
        let mut config = aws_sdk_s3::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
        if sdk.endpoint_url().is_some() {
            config = config.force_path_style(true);
        }
        if sdk.region().is_none() {
            config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        Store {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            location,
            kms_key: std::env::var(super::KMS_KEY_ENV)
                .ok()
                .filter(|k| !k.trim().is_empty()),
        }
    }

    /// The full key of `rel` under the prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.location.prefix)
    }

    /// Writes `body` at `rel` under `cond`; returns the new ETag. A retried write whose first
    /// attempt S3 applied (its answer lost) comes back 412: the object then holds our bytes,
    /// and that is success.
    pub async fn put(&self, rel: &str, body: Vec<u8>, cond: Cond) -> Result<String, StoreError> {
        let key = self.key(rel);
        let mut last = StoreError::Other("not attempted".into());
        for attempt in 0..WRITE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let mut req = self
                .client
                .put_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(body.clone()));
            req = match &cond {
                Cond::None => req,
                Cond::Absent => req.if_none_match("*"),
                Cond::Matches(etag) => req.if_match(etag),
            };
            if let Some(kms) = &self.kms_key {
                req = req
                    .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                    .ssekms_key_id(kms);
            }
            match req.send().await {
                Ok(out) => return Ok(out.e_tag().unwrap_or_default().to_string()),
                Err(e) if is_precondition(&e) => {
                    // Ours already (an earlier attempt of this call landed, its answer lost,
                    // whether the SDK or this loop retried)? Bodies are unique (a timestamp,
                    // a lease token), so equal bytes mean our own write.
                    if !matches!(cond, Cond::None)
                        && let Ok(Some((bytes, etag))) = self.get(rel).await
                        && bytes == body
                    {
                        return Ok(etag);
                    }
                    return Err(StoreError::Precondition);
                }
                Err(e) => last = StoreError::Other(crate::hunt::remote::aws_error(&e)),
            }
        }
        Err(last)
    }

    /// The object at `rel` and its ETag, `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(self.key(rel))
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(StoreError::Other(crate::hunt::remote::aws_error(&e))),
        };
        if out.content_length().unwrap_or(0) > MAX_OBJECT as i64 {
            return Err(StoreError::Other(format!(
                "{} is larger than {MAX_OBJECT} bytes: not an object rekey wrote",
                self.key(rel)
            )));
        }
        let etag = out.e_tag().unwrap_or_default().to_string();
        let mut body = out.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Other(format!("reading {}: {e}", self.key(rel))))?
        {
            if bytes.len() + chunk.len() > MAX_OBJECT {
                return Err(StoreError::Other(format!(
                    "{} is larger than {MAX_OBJECT} bytes",
                    self.key(rel)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((bytes, etag)))
    }

    /// Deletes `rel` (absent is fine), only if its ETag is `etag` when given.
    pub async fn delete(&self, rel: &str, etag: Option<&str>) -> Result<(), StoreError> {
        let mut req = self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(self.key(rel));
        if let Some(etag) = etag {
            req = req.if_match(etag);
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_precondition(&e) => Err(StoreError::Precondition),
            Err(e) => Err(StoreError::Other(crate::hunt::remote::aws_error(&e))),
        }
    }

    /// Every key under `rel` (relative to the prefix), in S3's (lexicographic) order.
    pub async fn list(&self, rel: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let answer = self
                .client
                .list_objects_v2()
                .bucket(&self.location.bucket)
                .prefix(self.key(rel))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| StoreError::Other(crate::hunt::remote::aws_error(&e)))?;
            for object in answer.contents() {
                if let Some(key) = object.key()
                    && let Some(rel) = key.strip_prefix(&self.location.prefix)
                {
                    out.push(rel.to_string());
                }
            }
            match answer.next_continuation_token() {
                Some(next) if answer.is_truncated() == Some(true) => token = Some(next.into()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The objects of `keys`, fetched concurrently; a key deleted meanwhile is left out.
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let fetched: Vec<_> = futures::stream::iter(keys.into_iter().map(|k| async move {
            let got = self.get(&k).await;
            (k, got)
        }))
        .buffered(FETCH_CONCURRENCY)
        .collect()
        .await;
        let mut out = Vec::new();
        for (key, got) in fetched {
            if let Some((bytes, _)) = got? {
                out.push((key, bytes));
            }
        }
        Ok(out)
    }
}

fn is_precondition<E>(e: &SdkError<E>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    matches!(
        e.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

fn is_not_found<E>(e: &SdkError<E>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    matches!(e.code(), Some("NoSuchKey" | "NotFound"))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

/// The state of the lease this process holds on a location, which every write checks first:
/// once the lease is lost or has run out, nothing more is written (fencing).
#[derive(Debug, Default)]
pub(crate) struct LeaseStatus {
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    pub lost: Option<String>,
}

/// One location's store, its runtime, its write chains and its lease status, shared by the
/// journal, the stash and the lock of this process.
pub struct Remote {
    pub store: Store,
    runtime: tokio::runtime::Runtime,
    chains: Mutex<HashMap<(String, String), Chain>>,
    /// (run, target) → the batches S3 held when this process read it, where a chain that
    /// continues a target (a resumed run) starts.
    batches: Mutex<HashMap<(String, String), i64>>,
    pub(crate) lease: Mutex<LeaseStatus>,
}

struct Chain {
    tx: tokio::sync::mpsc::UnboundedSender<Op>,
}

enum Op {
    Record(Event),
    State(TargetState),
    /// Delete this object once everything queued before it is in S3 (a stash erased).
    Delete(String),
    /// Write this object (a stash sealed) after everything queued before it and before
    /// anything queued after it.
    Put(String, Vec<u8>),
    Flush(std::sync::mpsc::Sender<Result<(), String>>),
}

/// What a chain has not written yet, and where its next batch goes.
struct Pending {
    run: String,
    target: String,
    /// The number of the next batch (batches before it are in S3).
    next: i64,
    records: Vec<Event>,
    state: Option<TargetState>,
    /// Objects to delete once the records queued before them are written.
    deletes: Vec<String>,
    /// The size of `records`' details, roughly: a batch that grows large is written at once.
    bytes: usize,
    /// The first write that failed: nothing after it is written.
    failed: Option<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.state.is_none()
    }

    /// Takes one queued operation: records, states, deletions and waiters join the batch; an
    /// object to put is written at once, after what is pending.
    async fn add(
        &mut self,
        store: &Store,
        op: Op,
        waiters: &mut Vec<std::sync::mpsc::Sender<Result<(), String>>>,
    ) {
        match op {
            Op::Record(e) => {
                self.bytes += 128 + e.detail.to_string().len();
                self.records.push(e);
            }
            Op::State(s) => self.state = Some(s),
            Op::Delete(rel) => self.deletes.push(rel),
            Op::Flush(reply) => waiters.push(reply),
            Op::Put(rel, body) => self.write_then_put(store, rel, body).await,
        }
    }

    /// Writes what is pending (records, then deletions queued before the object: an erase of
    /// the same key must not land after it), then the object, unless an earlier write failed.
    async fn write_then_put(&mut self, store: &Store, rel: String, body: Vec<u8>) {
        self.write_and_delete(store).await;
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = store.put(&rel, body, Cond::None).await {
            self.fail(format!("writing {}: {e}", store.key(&rel)));
        }
    }

    /// Writes the pending batch, then deletes what was queued for deletion (after the records
    /// queued before it, never before; records queued after it may land first, which is
    /// harmless: a deletion only must not overtake what precedes it).
    async fn write_and_delete(&mut self, store: &Store) {
        self.write(store).await;
        for rel in std::mem::take(&mut self.deletes) {
            if self.failed.is_some() {
                break;
            }
            if let Err(e) = store.delete(&rel, None).await {
                self.fail(format!("deleting {}: {e}", store.key(&rel)));
            }
        }
    }

    /// Writes everything pending as the next batch (unless an earlier write failed).
    async fn write(&mut self, store: &Store) {
        if self.is_empty() || self.failed.is_some() {
            self.records.clear();
            self.state = None;
            return;
        }
        let rel = records::batch_key(&self.run, &self.target, self.next);
        let body = records::batch_body(
            &self.run,
            &self.target,
            self.next,
            &self.records,
            self.state.as_ref(),
        );
        self.records.clear();
        self.state = None;
        self.bytes = 0;
        match store.put(&rel, body, Cond::Absent).await {
            Ok(_) => self.next += 1,
            Err(e) => {
                let what = match e {
                    StoreError::Precondition => format!(
                        "{} already exists: another runner wrote this step \
                         (is the state lock working?)",
                        store.key(&rel)
                    ),
                    StoreError::Other(e) => format!("writing {}: {e}", store.key(&rel)),
                };
                self.fail(what);
            }
        }
    }

    /// The chain's first failure: said once, and nothing after it is written.
    fn fail(&mut self, what: String) {
        tracing::error!(error = %what, "state write failed; this target stops at its next step");
        self.failed = Some(what);
    }

    fn result(&self) -> Result<(), String> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// How long a record that no side effect waits for may stay unwritten: it then goes with the
/// next record that one waits for, or alone after this long (so `rekey status` elsewhere sees
/// a target's progress within about a second).
const LINGER: Duration = Duration::from_millis(500);
/// Records of this many bytes are written without waiting for more.
const BATCH_BYTES: usize = 1 << 20;

type Registry = Mutex<HashMap<S3Location, Arc<Remote>>>;

fn registry() -> &'static Registry {
    static REMOTES: OnceLock<Registry> = OnceLock::new();
    REMOTES.get_or_init(Default::default)
}

/// The remote of `location`: made on first use with the default AWS chain (environment, profile,
/// web identity such as CircleCI OIDC, instance role), or with what [`configure`] gave it.
pub fn remote(location: &S3Location) -> Result<Arc<Remote>, String> {
    let mut remotes = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = remotes.get(location) {
        return Ok(r.clone());
    }
    let r = Arc::new(Remote::new(location.clone(), None)?);
    remotes.insert(location.clone(), r.clone());
    Ok(r)
}

/// Uses `sdk` for `location` in this process (tests and benchmarks that run the engine in
/// process against an emulator), replacing any remote made before.
pub fn configure(location: &S3Location, sdk: &aws_config::SdkConfig) -> Result<(), String> {
    let r = Arc::new(Remote::new(location.clone(), Some(sdk.clone()))?);
    let old = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(location.clone(), r);
    // A runtime must not be dropped inside another: keep the old one alive for the process.
    std::mem::forget(old);
    Ok(())
}

impl Remote {
    fn new(location: S3Location, sdk: Option<aws_config::SdkConfig>) -> Result<Remote, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rekey-state")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the state's runtime: {e}"))?;
        let sdk = match sdk {
            Some(sdk) => sdk,
            None => wait_on(&runtime, async {
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await
            })?,
        };
        Ok(Remote {
            store: Store::new(&sdk, location),
            runtime,
            chains: Mutex::new(HashMap::new()),
            batches: Mutex::new(HashMap::new()),
            lease: Mutex::new(LeaseStatus::default()),
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.store.location
    }

    /// Runs `f(store)` on the remote's runtime and waits for it, from any thread.
    pub fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        wait_on(&self.runtime, f(self.store.clone()))
    }

    /// Refuses when this process held a lease on the location that is lost or ran out.
    pub(crate) fn check_lease(&self) -> Result<(), String> {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &lease.lost {
            return Err(format!(
                "the state lock was lost ({why}): nothing more is written"
            ));
        }
        if let Some(expires) = lease.expires
            && chrono::Utc::now() >= expires
        {
            return Err(format!(
                "the state lock's lease ran out at {} without a renewal: nothing more is written",
                expires.to_rfc3339()
            ));
        }
        Ok(())
    }

    /// Notes how many record batches S3 holds per (run, target), read when a journal opened:
    /// the chains continue after them.
    pub(crate) fn resume_batches(&self, read: &HashMap<(String, String), i64>) {
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        for (chain, n) in read {
            let known = batches.entry(chain.clone()).or_insert(0);
            *known = (*known).max(*n);
        }
    }

    /// Queues a journal record on the chain of its `(run, target)`, after everything queued
    /// there before.
    pub(crate) fn enqueue_record(&self, event: Event) {
        let (run, target) = (event.run.to_string(), event.target.clone());
        self.send(run, target, Op::Record(event));
    }

    /// Queues the deletion of `rel` on the chain of `(run, target)`: done after everything
    /// queued there before it, without waiting (a later flush reports a failure).
    pub(crate) fn enqueue_delete(&self, run: &str, target: &str, rel: String) {
        self.send(run.to_string(), target.to_string(), Op::Delete(rel));
    }

    /// Queues the writing of `rel` on the chain of `target` in `run`: after everything queued
    /// before it, before everything queued after it, without waiting for it (the next
    /// [`Remote::flush`] of the target does).
    pub(crate) fn enqueue_put(&self, run: &str, target: &str, rel: String, body: Vec<u8>) {
        self.send(run.to_string(), target.to_string(), Op::Put(rel, body));
    }

    /// Queues the displayed state of `target` in `run` on its chain.
    pub(crate) fn enqueue_state(&self, run: &str, state: TargetState) {
        self.send(run.to_string(), state.target.clone(), Op::State(state));
    }

    fn send(&self, run: String, target: String, op: Op) {
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        let chain = chains
            .entry((run, target))
            .or_insert_with_key(|(run, target)| self.start_chain(run, target));
        if chain.tx.send(op).is_err() {
            // The task is gone (its runtime shut down): the next flush reports it.
            tracing::warn!("state write chain ended unexpectedly");
        }
    }

    /// Waits until every write queued for `(run, target)` is in S3; the first that failed,
    /// if one did (then everything after it was not written).
    pub(crate) fn flush(&self, run: &str, target: &str) -> Result<(), String> {
        self.flush_chains(|r, t| r == run && t == target)
    }

    /// [`Remote::flush`] for every target of `run`: all of them at once.
    pub(crate) fn flush_run(&self, run: &str) -> Result<(), String> {
        self.flush_chains(|r, _| r == run)
    }

    /// [`Remote::flush`] for every chain of this process.
    pub(crate) fn flush_all(&self) -> Result<(), String> {
        self.flush_chains(|_, _| true)
    }

    /// Asks every chain that `which` selects to write what it holds, then waits for all of
    /// them (they write concurrently); the first failure, if any.
    fn flush_chains(&self, which: impl Fn(&str, &str) -> bool) -> Result<(), String> {
        Flushing(self.request_flush(which)).wait()
    }

    fn request_flush(
        &self,
        which: impl Fn(&str, &str) -> bool,
    ) -> Vec<Result<std::sync::mpsc::Receiver<Result<(), String>>, String>> {
        let chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        chains
            .iter()
            .filter(|((run, target), _)| which(run, target))
            .map(|(_, chain)| {
                let (tx, rx) = std::sync::mpsc::channel();
                chain
                    .tx
                    .send(Op::Flush(tx))
                    .map(|_| rx)
                    .map_err(|_| "the state write chain ended".to_string())
            })
            .collect()
    }

    /// The task that writes the records of one target: in order, each batch only after the one
    /// before it is in S3, everything pending as one batch whenever someone waits for it
    /// (a flush) or it has lingered for [`LINGER`].
    fn start_chain(&self, run: &str, target: &str) -> Chain {
        let next = self
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(run.to_string(), target.to_string()))
            .copied()
            .unwrap_or(0)
            + 1;
        let mut pending = Pending {
            run: run.to_string(),
            target: target.to_string(),
            next,
            records: Vec::new(),
            state: None,
            deletes: Vec::new(),
            bytes: 0,
            failed: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Op>();
        let store = self.store.clone();
        self.runtime.spawn(async move {
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let (first, lingered) = match deadline {
                    None => (rx.recv().await, false),
                    Some(at) => tokio::select! {
                        op = rx.recv() => (op, false),
                        _ = tokio::time::sleep_until(at) => (None, true),
                    },
                };
                if first.is_none() && !lingered {
                    // Every sender is gone: write what is left, and end.
                    pending.write_and_delete(&store).await;
                    break;
                }
                let mut waiters = Vec::new();
                // What arrived meanwhile joins this batch; an object to put goes at once, in
                // its place among the records.
                let mut next = first;
                while let Some(op) = next.take().or_else(|| rx.try_recv().ok()) {
                    pending.add(&store, op, &mut waiters).await;
                }
                if lingered
                    || !waiters.is_empty()
                    || !pending.deletes.is_empty()
                    || pending.bytes >= BATCH_BYTES
                {
                    pending.write_and_delete(&store).await;
                    deadline = None;
                } else if deadline.is_none() && !pending.is_empty() {
                    deadline = Some(tokio::time::Instant::now() + LINGER);
                }
                for reply in waiters {
                    let _ = reply.send(pending.result());
                }
            }
        });
        Chain { tx }
    }
}

/// Flushes asked of several chains, which write concurrently.
pub(crate) struct Flushing(Vec<Result<std::sync::mpsc::Receiver<Result<(), String>>, String>>);

impl Flushing {
    /// Waits until every flush is done; the first failure, if any.
    pub(crate) fn wait(self) -> Result<(), String> {
        let mut first = Ok(());
        for pending in self.0 {
            let done = pending.and_then(|rx| {
                block(|| rx.recv()).map_err(|_| "the state write chain ended".to_string())?
            });
            if first.is_ok() {
                first = done;
            }
        }
        first
    }
}

/// Runs `fut` on `runtime` and waits for its result on this thread.
fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    block(|| rx.recv()).map_err(|_| "a state call was abandoned (its task panicked)".to_string())
}

/// Blocks this thread on `f`; on a worker of a multi-threaded runtime, through
/// `block_in_place`, so that the other tasks of that runtime (the other targets) go on.
fn block<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
