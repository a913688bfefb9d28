//! The state lock: one `apply` at a time per state directory.
//!
//! An exclusive advisory lock (`flock(2)` through [`std::fs::File::try_lock`]) on
//! `<state dir>/lock`, held for the life of an apply. The kernel releases it when the process
//! ends, however it ends, so a SIGKILLed apply never leaves a stale lock behind, and nothing ever
//! has to guess whether a recorded pid is still alive. The file's content (the holder's pid and
//! start time, as JSON) is only there to tell the next apply who is in the way.
//!
//! On S3 state the lock is a lease instead ([`crate::engine::state::lease`]): the kernel cannot
//! release a lock for a runner on another machine, so the lease runs out unless renewed.
//! Either way a held lock is [`LockError::is_locked`], which the command line turns into exit
//! code 5 ("locked": another run is at work, nothing was changed).

use super::journal::{self, JournalError};
use super::state::StateLocation;
use super::state::lease::{Lease, LeaseError, LeaseOptions};
use chrono::{DateTime, SecondsFormat, Utc};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another rekey apply ({}) is using {}; wait for it or use another --state-dir",
        holder(*pid, *since),
        dir_display(state_dir)
    )]
    Held {
        state_dir: PathBuf,
        /// `None` when the holder had not written its details yet (or wrote something else).
        pid: Option<u32>,
        since: Option<DateTime<Utc>>,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    StateDir(#[from] JournalError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

impl LockError {
    /// Another run holds the lock (as opposed to a failure to check it).
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            LockError::Held { .. } | LockError::Lease(LeaseError::Held { .. })
        )
    }
}

fn holder(pid: Option<u32>, since: Option<DateTime<Utc>>) -> String {
    let pid = pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
    match since {
        Some(t) => format!(
            "{pid}, since {}",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        None => pid,
    }
}

/// `.rekey/`: the directory as the user named it, with a trailing slash to say it is one.
fn dir_display(dir: &Path) -> String {
    let text = dir.display().to_string();
    if text.ends_with('/') {
        text
    } else {
        format!("{text}/")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Holder {
    pid: u32,
    since: DateTime<Utc>,
}

/// Holds the state directory's lock until dropped (or the process ends).
#[derive(Debug)]
pub struct StateLock {
    held: HeldBy,
    path: PathBuf,
    pid: u32,
    since: DateTime<Utc>,
}

#[derive(Debug)]
enum HeldBy {
    File(File),
    Lease(Lease),
}

impl StateLock {
    /// Takes the lock of `state_dir` (creating the directory 0700 and the file 0600 if
    /// needed), or says who holds it. Never waits; an S3 lease lasts the default 60 s.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        StateLock::acquire_with(state_dir, LeaseOptions::default())
    }

    /// Takes the lock of `state_dir`, waiting up to `options.timeout` for another holder; on
    /// S3, with a lease of `options.lease`.
    pub fn acquire_with(state_dir: &Path, options: LeaseOptions) -> Result<StateLock, LockError> {
        if let StateLocation::S3(location) =
            StateLocation::of(state_dir).map_err(JournalError::Location)?
        {
            let remote =
                super::state::s3::remote(&location).map_err(|what| JournalError::Remote {
                    location: location.to_string(),
                    what,
                })?;
            let lease = Lease::acquire(remote, options)?;
            let holder = lease.holder();
            return Ok(StateLock {
                held: HeldBy::Lease(lease),
                path: state_dir.to_path_buf(),
                pid: holder.pid,
                since: holder.since,
            });
        }
        let began = std::time::Instant::now();
        loop {
            match StateLock::try_local(state_dir) {
                Err(LockError::Held { .. }) if began.elapsed() < options.timeout => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Names the run in the lock, where the lock can say it (an S3 lease).
    pub fn set_run(&self, run: &str) {
        if let HeldBy::Lease(lease) = &self.held {
            lease.set_run(run);
        }
    }

    fn try_local(state_dir: &Path) -> Result<StateLock, LockError> {
        journal::ensure_state_dir(state_dir)?;
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // No truncation on open: until the lock is ours, the content is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, since) = read_holder(&mut file);
                return Err(LockError::Held {
                    state_dir: state_dir.to_path_buf(),
                    pid,
                    since,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let me = Holder {
            pid: std::process::id(),
            since: Utc::now(),
        };
        let text = serde_json::to_string(&me).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(StateLock {
            held: HeldBy::File(file),
            path,
            pid: me.pid,
            since: me.since,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Empty the file so nobody reads a finished apply as the holder; then let go. Closing
        // the file would release the lock anyway.
        if let HeldBy::File(file) = &self.held {
            let _ = file.set_len(0);
            let _ = file.unlock();
        }
        // A lease is released by its own drop.
    }
}

/// The holder's details. The holder writes them just after taking the lock, so an empty or
/// partial file is retried briefly before giving up on them.
fn read_holder(file: &mut File) -> (Option<u32>, Option<DateTime<Utc>>) {
    for attempt in 0..10 {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| Read::take(&mut *file, 4096).read_to_string(&mut text));
        if read.is_ok()
            && let Ok(h) = serde_json::from_str::<Holder>(text.trim())
        {
            return (Some(h.pid), Some(h.since));
        }
        if attempt < 9 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (None, None)
}
