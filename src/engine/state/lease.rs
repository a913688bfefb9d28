//! The lock of an S3 state: the object `lock.json`, held by a lease.
//!
//! Taking it is a write with `If-None-Match: *`: of two runners that try at once, S3 lets
//! exactly one create it. The object says who holds it (host, pid, run, CI job URL from
//! `CIRCLE_BUILD_URL`), since when, and until when (`expires`). The holder renews it every third
//! of the lease with `If-Match` on the ETag it last wrote, from a thread of its own, so a long
//! grace wait or hunt keeps it. A runner that finds a lease past its expiry (its holder was
//! killed, or lost its network) takes it over with `If-Match` on the ETag it read, so two
//! runners taking over the same dead lease cannot both win, and says so. A live lease is waited
//! for up to `--lock-timeout`, then refused: the caller exits "locked" having changed nothing.
//!
//! Fencing: the holder records the expiry of its last successful renewal in the location's
//! [`super::s3::Remote`], and the journal and stash write nothing once it has passed or a
//! renewal found the lease taken; and every journal record is a conditional write, so even a
//! holder paused past its lease cannot overwrite the step another runner wrote.
//!
//! Expiry is judged by the clocks of the runners (UTC); they must agree to within a small part of
//! the lease, as NTP-synchronized machines do.

use super::s3::{Cond, Remote, StoreError};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lock's key under the state prefix.
pub const LOCK_KEY: &str = "lock.json";

/// How long a lease lasts and how long to wait for someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// `--lock-lease`: renewed every third of it.
    pub lease: Duration,
    /// `--lock-timeout`: 0 refuses at once.
    pub timeout: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            lease: Duration::from_secs(60),
            timeout: Duration::ZERO,
        }
    }
}

/// What `lock.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: u32,
    /// The run, once the holder has chosen it.
    pub run: Option<String>,
    /// `CIRCLE_BUILD_URL` of the holder's CI job, when it runs in one.
    pub ci_job: Option<String>,
    pub since: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// Random: tells this holder's writes apart from a later holder on the same host and pid.
    pub token: String,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rekey on {} (pid {}", self.host, self.pid)?;
        if let Some(run) = &self.run {
            write!(f, ", run {run}")?;
        }
        if let Some(job) = &self.ci_job {
            write!(f, ", job {job}")?;
        }
        write!(
            f,
            ") since {}, lease until {}",
            self.since
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.expires
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}

/// Why the lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the state {location} is locked by {holder}; nothing was changed. help: this is what a \
         scheduled job that collides with another sees (exit 5); wait with --lock-timeout, or, \
         if that runner is gone and you cannot wait for its lease to expire, \
         `rekey state unlock {} --state {location}`",
        holder.run.as_deref().unwrap_or("RUN")
    )]
    Held {
        location: String,
        holder: Box<LeaseHolder>,
    },
    #[error("the state lock {location}: {what}")]
    Store { location: String, what: String },
}

/// The lease this process holds, renewed until dropped (then deleted).
pub struct Lease {
    remote: Arc<Remote>,
    shared: Arc<Mutex<Current>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

struct Current {
    holder: LeaseHolder,
    etag: String,
    lease: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("location", &self.remote.location().to_string())
            .finish()
    }
}

impl Lease {
    /// Takes the lock of `remote`'s location, taking over an expired lease, waiting for a live
    /// one up to `options.timeout`.
    pub fn acquire(remote: Arc<Remote>, options: LeaseOptions) -> Result<Lease, LeaseError> {
        let location = remote.location().to_string();
        let store_err = |what: String| LeaseError::Store {
            location: location.clone(),
            what,
        };
        let lease = options.lease.max(Duration::from_secs(1));
        let began = Instant::now();
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| store_err(e.to_string()))?;
        let token = hex::encode(token);
        loop {
            let now = Utc::now();
            let mine = LeaseHolder {
                host: hostname(),
                pid: std::process::id(),
                run: None,
                ci_job: std::env::var("CIRCLE_BUILD_URL")
                    .ok()
                    .filter(|u| !u.is_empty()),
                since: now,
                expires: now + chrono::Duration::from_std(lease).unwrap_or_default(),
                token: token.clone(),
            };
            let body = serde_json::to_vec(&mine).unwrap_or_default();
            let put = remote
                .call(|store| async move { store.put(LOCK_KEY, body, Cond::Absent).await })
                .map_err(&store_err)?;
            match put {
                Ok(etag) => return Ok(Lease::start(remote, mine, etag, lease)),
                Err(StoreError::Other(e)) => return Err(store_err(e)),
                Err(StoreError::Precondition) => {}
            }
            // Someone holds it: read who, and until when.
            let got = remote
                .call(|store| async move { store.get(LOCK_KEY).await })
                .map_err(&store_err)?
                .map_err(|e| store_err(e.to_string()))?;
            let Some((bytes, etag)) = got else {
                continue; // released meanwhile: try again at once
            };
            let theirs: Option<LeaseHolder> = serde_json::from_slice(&bytes).ok();
            let expired = theirs.as_ref().is_none_or(|h| h.expires <= Utc::now());
            if expired {
                let body = serde_json::to_vec(&mine).unwrap_or_default();
                let etag_in = etag.clone();
                let put =
                    remote
                        .call(|store| async move {
                            store.put(LOCK_KEY, body, Cond::Matches(etag_in)).await
                        })
                        .map_err(&store_err)?;
                match put {
                    Ok(etag) => {
                        match &theirs {
                            Some(h) => tracing::warn!(
                                "took over the expired lock of {location}: it was held by {h}"
                            ),
                            None => tracing::warn!(
                                "took over the lock of {location}, whose content was not a lease"
                            ),
                        }
                        eprintln!(
                            "rekey: took over the expired state lock of {location}{}",
                            theirs
                                .as_ref()
                                .map(|h| format!(" (held by {h})"))
                                .unwrap_or_default()
                        );
                        return Ok(Lease::start(remote, mine, etag, lease));
                    }
                    Err(StoreError::Precondition) => continue, // another runner was quicker
                    Err(StoreError::Other(e)) => return Err(store_err(e)),
                }
            }
            let waited = began.elapsed();
            if waited >= options.timeout {
                let holder = theirs.unwrap_or_else(|| LeaseHolder {
                    host: "?".into(),
                    pid: 0,
                    run: None,
                    ci_job: None,
                    since: Utc::now(),
                    expires: Utc::now(),
                    token: String::new(),
                });
                return Err(LeaseError::Held {
                    location,
                    holder: Box::new(holder),
                });
            }
            let left = options.timeout - waited;
            std::thread::sleep(left.min(Duration::from_secs(1)));
        }
    }

    fn start(remote: Arc<Remote>, holder: LeaseHolder, etag: String, lease: Duration) -> Lease {
        {
            let mut status = remote.lease.lock().unwrap_or_else(|p| p.into_inner());
            status.expires = Some(holder.expires);
            status.lost = None;
        }
        let shared = Arc::new(Mutex::new(Current {
            holder,
            etag,
            lease,
        }));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let renewer = {
            let remote = remote.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("rekey-lease".into())
                .spawn(move || {
                    let period = lease / 3;
                    let mut wait = period;
                    loop {
                        match stopped.recv_timeout(wait) {
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                        match renew(&remote, &shared, None) {
                            Ok(()) => wait = period,
                            Err(StoreError::Precondition) => return, // lost; recorded
                            Err(StoreError::Other(_)) => wait = period.min(Duration::from_secs(1)),
                        }
                    }
                })
                .ok()
        };
        Lease {
            remote,
            shared,
            stop: Some(stop),
            renewer,
        }
    }

    /// Names the run in the lease (renewing it at once), for whoever finds the state locked.
    pub fn set_run(&self, run: &str) {
        if let Err(e) = renew(&self.remote, &self.shared, Some(run)) {
            tracing::warn!(error = %e, "could not name the run in the state lock");
        }
    }

    pub fn holder(&self) -> LeaseHolder {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .holder
            .clone()
    }
}

/// One renewal: the lease extended (and `run` named) with `If-Match` on our last ETag. A 412
/// means another runner took it over: recorded as lost, so nothing more is written.
///
/// The lock on `shared` is held across the write: the renewal thread and `set_run` must not
/// both renew from the same ETag (the second would find the first's write and call it theft).
fn renew(remote: &Remote, shared: &Mutex<Current>, run: Option<&str>) -> Result<(), StoreError> {
    let mut current = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut holder = current.holder.clone();
    if let Some(run) = run {
        holder.run = Some(run.to_string());
    }
    holder.expires = Utc::now() + chrono::Duration::from_std(current.lease).unwrap_or_default();
    let body = serde_json::to_vec(&holder).unwrap_or_default();
    let etag = current.etag.clone();
    let result = remote
        .call(|store| async move { store.put(LOCK_KEY, body, Cond::Matches(etag)).await })
        .map_err(StoreError::Other)
        .and_then(|r| r);
    match result {
        Ok(etag) => {
            let expires = holder.expires;
            current.etag = etag;
            current.holder = holder;
            drop(current);
            remote
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .expires = Some(expires);
            Ok(())
        }
        Err(StoreError::Precondition) => {
            let why = "another runner took the lease over".to_string();
            tracing::error!("the state lock of {} was lost: {why}", remote.location());
            remote.lease.lock().unwrap_or_else(|p| p.into_inner()).lost = Some(why);
            Err(StoreError::Precondition)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not renew the state lock; trying again");
            Err(e)
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let lost = {
            let mut status = self.remote.lease.lock().unwrap_or_else(|p| p.into_inner());
            status.expires = None;
            status.lost.take().is_some()
        };
        if lost {
            return; // not ours any more: leave it to its holder
        }
        let etag = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .etag
            .clone();
        let deleted = self
            .remote
            .call(|store| async move { store.delete(LOCK_KEY, Some(&etag)).await });
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(
                "could not release the state lock of {}; it expires with its lease",
                self.remote.location()
            );
        }
    }
}

/// The lease at a location, read without taking it: `(holder, ETag)`.
pub fn read(remote: &Remote) -> Result<Option<(Option<LeaseHolder>, String)>, String> {
    let got = remote
        .call(|store| async move { store.get(LOCK_KEY).await })?
        .map_err(|e| e.to_string())?;
    Ok(got.map(|(bytes, etag)| (serde_json::from_slice(&bytes).ok(), etag)))
}

/// Deletes the lease at a location if it is still the one with `etag`.
pub fn remove(remote: &Remote, etag: &str) -> Result<(), String> {
    let etag = etag.to_string();
    remote
        .call(|store| async move { store.delete(LOCK_KEY, Some(&etag)).await })?
        .map_err(|e| match e {
            StoreError::Precondition => {
                "the lock changed since it was read (renewed or taken): not removed".into()
            }
            StoreError::Other(e) => e,
        })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
