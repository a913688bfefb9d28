//! The journal: the state directory and the one SQLite database in it that records every run.
//!
//! A run stores the plan text it executes (plans hold no secrets) and its SHA-256, so that
//! `apply --resume` runs exactly what was reviewed. The engine writes an *intent* event before
//! each side effect and a *done* (or *failed*, *skipped*) event after it; [`Journal::record`]
//! returns only once the event is on disk, so whatever the engine did after a `record` returned
//! is known to a later resume. Per-target states are stored beside the events (not folded from
//! them) so that `rekey status` reads a handful of rows; the events stay the source of truth for
//! resuming, the states are for people.
//!
//! Durability and crashes: every write is one SQLite transaction in WAL mode with
//! `synchronous=FULL`, so a commit is fsynced before it returns and a SIGKILL (or power loss)
//! at any moment leaves either the whole record or none of it.
//!
//! Secrets: callers pass only non-secret values (ids, names, timestamps, messages) in `detail`;
//! a record cannot tell a secret from an id, so there is no filter pretending to. Minted values
//! go to the stash ([`crate::engine::stash`]), encrypted, in the same database file.
//! [`Journal::scan_for`] reads the raw database files so tests can prove no secret reached them.
//!
//! On disk: `<state dir>/journal.sqlite` (plus SQLite's `-wal` and `-shm` beside it), created
//! 0600 in a state directory created 0700. The schema is versioned in the `meta` table; a
//! journal written by a newer rekey is refused rather than misread.
//!
//! On S3 (a `state_dir` spelled `s3://BUCKET/PREFIX`, see [`crate::engine::state`]): the same
//! API over an in-memory database filled from S3 when the journal opens; every write goes to S3
//! too, and a record that precedes a side effect returns only once it is in S3
//! ([`crate::engine::state::s3`] says which records wait and why the others need not).

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::state::StateLocation;
use super::state::records::{self, Dump, StashRow};
use super::state::s3::{Cond, Remote};

/// The state directory `apply` uses unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = ".rekey";

/// File name of the database inside the state directory.
pub const JOURNAL_FILE: &str = "journal.sqlite";

/// Schema version this rekey writes and understands. Bump it with a migration in
/// [`migrate`] whenever a table changes.
pub const SCHEMA_VERSION: i64 = 1;

/// Version 1: runs, their events and target states, and the stash's encrypted rows.
/// `STRICT` so a wrong type is an error instead of a silent conversion.
const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    plan_name   TEXT NOT NULL,
    plan_file   TEXT NOT NULL,
    plan_sha256 TEXT NOT NULL,
    plan_text   TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('running', 'complete', 'incomplete', 'waiting', 'failed')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX runs_by_plan ON runs (plan_sha256, created_at);
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id),
    target  TEXT NOT NULL,
    step    TEXT NOT NULL,
    phase   TEXT NOT NULL CHECK (phase IN ('intent', 'done', 'failed', 'skipped')),
    detail  TEXT NOT NULL,
    at      TEXT NOT NULL
) STRICT;
CREATE INDEX events_by_target ON events (run_id, target, seq);
CREATE TABLE targets (
    run_id        TEXT NOT NULL REFERENCES runs (id),
    target        TEXT NOT NULL,
    state         TEXT NOT NULL,
    waiting_until TEXT,
    message       TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (run_id, target)
) STRICT;
CREATE TABLE stash (
    run_id        TEXT NOT NULL REFERENCES runs (id),
    target        TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    key_id        BLOB NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (run_id, target)
) STRICT;
";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {}: {source}", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "journal {} has schema version {found}, newer than this rekey understands ({supported}): \
         use a newer rekey, or another --state-dir",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{} is not a rekey journal: {reason}", path.display())]
    NotAJournal { path: PathBuf, reason: String },
    #[error("journal {}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("no run {0} in the journal")]
    UnknownRun(String),
    #[error("{0:?} is not a run id (expected something like r20261128-095300-7f3a)")]
    InvalidRunId(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("state {0}")]
    Location(String),
    #[error("state {location}: {what}")]
    Remote { location: String, what: String },
}

/// A run's id: `r` + UTC date and time + 4 random hex digits, e.g. `r20261128-095300-7f3a`.
/// Ids sort by creation time (to the second) and are short enough to type after `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Checks that `text` has the shape of a run id (for ids typed by a person).
    pub fn parse(text: &str) -> Result<RunId, JournalError> {
        let b = text.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let ok = b.len() == 21
            && b[0] == b'r'
            && digits(1..9)
            && b[9] == b'-'
            && digits(10..16)
            && b[16] == b'-'
            && b[17..]
                .iter()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(RunId(text.to_string()))
        } else {
            Err(JournalError::InvalidRunId(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn generate(now: DateTime<Utc>) -> Result<RunId, JournalError> {
        let mut random = [0u8; 2];
        getrandom::fill(&mut random).map_err(|e| JournalError::Random(e.to_string()))?;
        Ok(RunId(format!(
            "r{}-{}",
            now.format("%Y%m%d-%H%M%S"),
            hex::encode(random)
        )))
    }
}

/// Unchecked: for ids read back from the journal or already validated by the caller. An id
/// that names no run is reported as [`JournalError::UnknownRun`] where it is used.
impl From<String> for RunId {
    fn from(id: String) -> Self {
        RunId(id)
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Complete,
    Incomplete,
    Waiting,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Complete => "complete",
            RunStatus::Incomplete => "incomplete",
            RunStatus::Waiting => "waiting",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        Some(match text {
            "running" => RunStatus::Running,
            "complete" => RunStatus::Complete,
            "incomplete" => RunStatus::Incomplete,
            "waiting" => RunStatus::Waiting,
            "failed" => RunStatus::Failed,
            _ => return None,
        })
    }

    /// Whether a later `apply` of the same plan continues this run rather than starting anew.
    /// `running` counts: with the state lock held, a run still marked running was killed.
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            RunStatus::Running | RunStatus::Incomplete | RunStatus::Waiting
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Written before a side effect: the effect may or may not have happened.
    Intent,
    /// Written after the side effect succeeded.
    Done,
    Failed,
    Skipped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Intent => "intent",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Some(match text {
            "intent" => Phase::Intent,
            "done" => Phase::Done,
            "failed" => Phase::Failed,
            "skipped" => Phase::Skipped,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run with the plan it executes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub plan_name: String,
    pub plan_file: String,
    /// Hex SHA-256 of `plan_text`.
    pub plan_sha256: String,
    pub plan_text: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A run as `rekey status` lists it: no plan text, and how many targets are in each state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub id: RunId,
    pub plan_name: String,
    pub plan_file: String,
    pub plan_sha256: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Target state → number of targets in it (states the engine has set so far).
    pub targets: BTreeMap<String, usize>,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    /// Increases with every record in the journal, across runs; never reused.
    pub seq: i64,
    pub run: RunId,
    pub target: String,
    pub step: String,
    pub phase: Phase,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// The state of one target of a run, as the engine last set it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetState {
    pub target: String,
    pub state: String,
    pub waiting_until: Option<DateTime<Utc>>,
    pub message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The journal of a state directory. `Send + Sync`: the connection sits behind a mutex, and
/// every call is one short transaction.
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    state_dir: PathBuf,
    path: PathBuf,
    remote: Option<RemoteJournal>,
    /// A private copy of a busy database that a read-only open reads instead (removed on drop).
    _scratch: Option<Scratch>,
}

/// The S3 side of a journal whose state is on S3.
#[derive(Clone)]
pub(crate) struct RemoteJournal {
    pub remote: Arc<Remote>,
    /// `false` for a read-only open (a dry run): any write is refused, nothing is PUT.
    pub writable: bool,
}

/// Steps whose intent precedes no change anywhere (they read, or wait): their records need not
/// be in S3 before the engine goes on (see [`crate::engine::state::s3`]). The names are those
/// of [`crate::engine::steps::Step`].
const READ_ONLY_STEPS: [&str; 7] = [
    "inspect",
    "pre-hunt",
    "verify",
    "read-back",
    "grace",
    "post-hunt",
    "done",
];

/// A journal on S3 that is dropped still has its last records on their way: wait for them, so
/// that no caller can lose a record by forgetting [`Journal::flush`].
impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(RemoteJournal {
            remote,
            writable: true,
        }) = &self.remote
            && let Err(e) = remote.flush_all()
        {
            tracing::error!(error = %e, "state records not written to S3");
        }
    }
}

/// A directory removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal of `state_dir`, creating the directory too; an
    /// S3 state is read whole from S3.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        if let StateLocation::S3(_) = location(state_dir)? {
            return Journal::open_s3(state_dir, true);
        }
        let (conn, path) = open_database(state_dir)?;
        Ok(Journal {
            conn: Arc::new(Mutex::new(conn)),
            state_dir: state_dir.to_path_buf(),
            path,
            remote: None,
            _scratch: None,
        })
    }

    /// The journal of an S3 state: an in-memory database filled with what S3 holds.
    fn open_s3(state_dir: &Path, writable: bool) -> Result<Journal, JournalError> {
        let StateLocation::S3(loc) = location(state_dir)? else {
            return Err(JournalError::Location(format!(
                "{} is not an S3 state",
                state_dir.display()
            )));
        };
        let remote_err = |what: String| JournalError::Remote {
            location: loc.to_string(),
            what,
        };
        let remote = super::state::s3::remote(&loc).map_err(remote_err)?;
        let path = PathBuf::from(loc.to_string());
        let db = |source| JournalError::Database {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_in_memory().map_err(db)?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(db)?;
        migrate(&conn, &path)?;
        let dump = records::fetch(&remote).map_err(remote_err)?;
        remote.resume_batches(&dump.batches);
        let journal = Journal {
            conn: Arc::new(Mutex::new(conn)),
            state_dir: state_dir.to_path_buf(),
            path,
            remote: Some(RemoteJournal { remote, writable }),
            _scratch: None,
        };
        journal.load(&dump)?;
        Ok(journal)
    }

    /// Another handle on the same journal (same connection, same remote), for the stash.
    pub(crate) fn share(&self) -> Journal {
        Journal {
            conn: self.conn.clone(),
            state_dir: self.state_dir.clone(),
            path: self.path.clone(),
            remote: self.remote.clone(),
            _scratch: None,
        }
    }

    /// The connection, shared with the stash of the same state.
    pub(crate) fn shared_connection(&self) -> Arc<Mutex<Connection>> {
        self.conn.clone()
    }

    /// The remote to write to: none for a local state; refused for a read-only open or a
    /// lost lease.
    pub(crate) fn writable_remote(&self) -> Result<Option<&Arc<Remote>>, JournalError> {
        match &self.remote {
            None => Ok(None),
            Some(r) if !r.writable => {
                Err(self.remote_error("opened read-only (a dry run): refusing to write".into()))
            }
            Some(r) => {
                r.remote.check_lease().map_err(|e| self.remote_error(e))?;
                Ok(Some(&r.remote))
            }
        }
    }

    fn remote_error(&self, what: String) -> JournalError {
        JournalError::Remote {
            location: self.path.display().to_string(),
            what,
        }
    }

    /// Opens the journal of `state_dir` for reading only, when there is one (`None` when the
    /// directory or the database does not exist): a dry run consults earlier runs this way
    /// without creating or changing anything in the state directory.
    ///
    /// Nothing in the state directory is written, not even by SQLite itself: an ordinary
    /// connection checkpoints the write-ahead log into the database when it closes (and a
    /// read-only one leaves `-wal`/`-shm` files behind). So a database without a pending log is
    /// opened `immutable` (no locks, no side files), and one with a pending log (an apply
    /// running, or killed) is copied with its log into a private temporary directory and read
    /// there. An S3 state is only read (GET and LIST), never written.
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Journal>, JournalError> {
        if let StateLocation::S3(_) = location(state_dir)? {
            return Journal::open_s3(state_dir, false).map(Some);
        }
        let path = state_dir.join(JOURNAL_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let (conn, scratch) = open_untouched(&path)?;
        let db = |source| JournalError::Database {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.execute_batch("PRAGMA query_only = ON;").map_err(db)?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let Some(found) = version.and_then(|v| v.parse::<i64>().ok()) else {
            return Err(JournalError::NotAJournal {
                path,
                reason: "its meta table has no schema_version".into(),
            });
        };
        if found > SCHEMA_VERSION {
            return Err(JournalError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Some(Journal {
            conn: Arc::new(Mutex::new(conn)),
            state_dir: state_dir.to_path_buf(),
            path,
            remote: None,
            _scratch: scratch,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Starts a run of a plan: status `running`, the plan text and its SHA-256 stored.
    pub fn create_run(
        &self,
        plan_name: &str,
        plan_file: &str,
        plan_text: &str,
    ) -> Result<RunId, JournalError> {
        let sha = hex::encode(Sha256::digest(plan_text.as_bytes()));
        let now = Utc::now();
        let at = timestamp(now);
        let remote = self.writable_remote()?;
        let conn = self.conn();
        // Two runs created in the same second collide only if their 16 random bits do too;
        // a few retries make that practically impossible rather than an error.
        for _ in 0..8 {
            let id = RunId::generate(now)?;
            if let Some(remote) = remote {
                // S3 first: it is the truth, and its If-None-Match settles a collision with a
                // run another runner created.
                let body = records::run_body(&RunRecord {
                    id: id.clone(),
                    plan_name: plan_name.to_string(),
                    plan_file: plan_file.to_string(),
                    plan_sha256: sha.clone(),
                    plan_text: plan_text.to_string(),
                    status: RunStatus::Running,
                    created_at: now,
                    updated_at: now,
                });
                let rel = records::run_key(id.as_str());
                match remote.call(|store| async move { store.put(&rel, body, Cond::Absent).await })
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(super::state::s3::StoreError::Precondition)) => continue,
                    Ok(Err(e)) => return Err(self.remote_error(e.to_string())),
                    Err(e) => return Err(self.remote_error(e)),
                }
            }
            let inserted = conn
                .execute(
                    "INSERT INTO runs (id, plan_name, plan_file, plan_sha256, plan_text, status,
                                       created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?6)
                     ON CONFLICT (id) DO NOTHING",
                    params![id.as_str(), plan_name, plan_file, sha, plan_text, at],
                )
                .map_err(|e| self.db(e))?;
            if inserted == 1 {
                return Ok(id);
            }
        }
        Err(self.corrupt("could not find an unused run id"))
    }

    /// The run `id`, with its plan text.
    pub fn run(&self, id: &RunId) -> Result<Option<RunRecord>, JournalError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT id, plan_name, plan_file, plan_sha256, plan_text, status, created_at,
                        updated_at
                 FROM runs WHERE id = ?1",
                [id.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.db(e))?;
        let Some((id, plan_name, plan_file, plan_sha256, plan_text, status, created, updated)) =
            row
        else {
            return Ok(None);
        };
        Ok(Some(RunRecord {
            id: RunId(id),
            plan_name,
            plan_file,
            plan_sha256,
            plan_text,
            status: self.run_status(&status)?,
            created_at: self.parse_time(&created)?,
            updated_at: self.parse_time(&updated)?,
        }))
    }

    /// Every run, newest first, with its targets counted by state.
    pub fn runs(&self) -> Result<Vec<RunSummary>, JournalError> {
        let conn = self.conn();
        let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT run_id, state, count(*) FROM targets GROUP BY run_id, state")
                .map_err(|e| self.db(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| self.db(e))?;
            for row in rows {
                let (run, state, n) = row.map_err(|e| self.db(e))?;
                counts
                    .entry(run)
                    .or_default()
                    .insert(state, usize::try_from(n).unwrap_or(0));
            }
        }
        let mut stmt = conn
            .prepare(
                "SELECT id, plan_name, plan_file, plan_sha256, status, created_at, updated_at
                 FROM runs ORDER BY created_at DESC, rowid DESC",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut runs = Vec::new();
        for row in rows {
            let (id, plan_name, plan_file, plan_sha256, status, created, updated) =
                row.map_err(|e| self.db(e))?;
            let targets = counts.remove(&id).unwrap_or_default();
            runs.push(RunSummary {
                id: RunId(id),
                plan_name,
                plan_file,
                plan_sha256,
                status: self.run_status(&status)?,
                created_at: self.parse_time(&created)?,
                updated_at: self.parse_time(&updated)?,
                targets,
            });
        }
        Ok(runs)
    }

    /// The newest unfinished run (running, incomplete or waiting) of exactly this plan text:
    /// `apply` continues it instead of starting a second rotation of the same targets.
    pub fn unfinished_run_for(&self, plan_text: &str) -> Result<Option<RunId>, JournalError> {
        let sha = hex::encode(Sha256::digest(plan_text.as_bytes()));
        let conn = self.conn();
        let id = conn
            .query_row(
                "SELECT id FROM runs
                 WHERE plan_sha256 = ?1 AND status IN ('running', 'incomplete', 'waiting')
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                [sha],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        Ok(id.map(RunId))
    }

    /// Credentials that runs other than `except` minted for a target named `target` and
    /// carried to the end of the protocol (a `done` record), newest first: `(run, credential
    /// id)`. `apply` asks so that a plan applied again after its rotation recognises the
    /// credential the bindings now hold as its own work, not as a change behind its back.
    pub fn rotated_by_other_runs(
        &self,
        target: &str,
        except: &RunId,
    ) -> Result<Vec<(RunId, String)>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT run_id, detail FROM events
                 WHERE target = ?1 AND run_id != ?2 AND step = 'done' AND phase = 'done'
                 ORDER BY seq DESC",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![target, except.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (run, detail) = row.map_err(|e| self.db(e))?;
            let detail: serde_json::Value = serde_json::from_str(&detail)
                .map_err(|e| self.corrupt(format!("a done event of run {run} is not JSON: {e}")))?;
            if let Some(id) = detail.get("new_id").and_then(|v| v.as_str()) {
                out.push((RunId(run), id.to_owned()));
            }
        }
        Ok(out)
    }

    /// When the newest credential that another run minted for `target` and carried to the end
    /// of the protocol was minted: `(run, time)`. It dates a credential its owner cannot date
    /// (a GitHub token has no creation time rekey can read), so `max_age` still applies.
    pub fn last_rotation_by_other_runs(
        &self,
        target: &str,
        except: &RunId,
    ) -> Result<Option<(RunId, DateTime<Utc>)>, JournalError> {
        let row = self
            .conn()
            .query_row(
                "SELECT m.run_id, m.at FROM events m
                 WHERE m.target = ?1 AND m.run_id != ?2 AND m.step = 'mint' AND m.phase = 'done'
                   AND EXISTS (SELECT 1 FROM events d WHERE d.run_id = m.run_id
                               AND d.target = m.target AND d.step = 'done' AND d.phase = 'done')
                 ORDER BY m.seq DESC LIMIT 1",
                params![target, except.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        match row {
            None => Ok(None),
            Some((run, at)) => Ok(Some((RunId(run), self.parse_time(&at)?))),
        }
    }

    pub fn set_run_status(&self, run: &RunId, status: RunStatus) -> Result<(), JournalError> {
        let now = Utc::now();
        if let Some(remote) = self.writable_remote()? {
            // The status says the run ended: its records are in S3 before it.
            remote
                .flush_run(run.as_str())
                .map_err(|e| self.remote_error(e))?;
            let rel = records::status_key(run.as_str());
            let body = records::status_body(status, now);
            remote
                .call(|store| async move { store.put(&rel, body, Cond::None).await })
                .map_err(|e| self.remote_error(e))?
                .map_err(|e| self.remote_error(e.to_string()))?;
        }
        let changed = self
            .conn()
            .execute(
                "UPDATE runs SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![run.as_str(), status.as_str(), timestamp(now)],
            )
            .map_err(|e| self.db(e))?;
        if changed == 0 {
            return Err(JournalError::UnknownRun(run.to_string()));
        }
        Ok(())
    }

    /// Appends an event and returns its sequence number once it is durable on disk.
    ///
    /// `detail` must hold no secret value: ids, names, places, timestamps and messages only.
    pub fn record(
        &self,
        run: &RunId,
        target: &str,
        step: &str,
        phase: Phase,
        detail: &serde_json::Value,
    ) -> Result<i64, JournalError> {
        let seq = self.append(run, target, step, phase, detail)?;
        if phase == Phase::Intent {
            self.wait_before_side_effect(run, target, step)?;
        }
        Ok(seq)
    }

    /// Appends the intents of one step's side effects on several places (a write to each of a
    /// target's bindings) and waits once until all are durable: on S3, one write however many
    /// places, where recording them one by one before each call waited once per place. Resume
    /// reads an intent without its done record as "this place may hold the new value", which
    /// is as true of an intent recorded early as of one recorded just before its call.
    pub fn record_intents(
        &self,
        run: &RunId,
        target: &str,
        step: &str,
        details: &[serde_json::Value],
    ) -> Result<(), JournalError> {
        for detail in details {
            self.append(run, target, step, Phase::Intent, detail)?;
        }
        if !details.is_empty() {
            self.wait_before_side_effect(run, target, step)?;
        }
        Ok(())
    }

    /// An intent precedes a side effect: on S3 it (and everything before it) must be in S3
    /// before the engine goes on, unless the step changes nothing anywhere.
    fn wait_before_side_effect(
        &self,
        run: &RunId,
        target: &str,
        step: &str,
    ) -> Result<(), JournalError> {
        match self.writable_remote()? {
            Some(remote) if !READ_ONLY_STEPS.contains(&step) => remote
                .flush(run.as_str(), target)
                .map_err(|e| self.remote_error(e)),
            _ => Ok(()),
        }
    }

    /// Appends an event (durable on disk; on S3, queued on the target's write chain).
    fn append(
        &self,
        run: &RunId,
        target: &str,
        step: &str,
        phase: Phase,
        detail: &serde_json::Value,
    ) -> Result<i64, JournalError> {
        let remote = self.writable_remote()?;
        let text = detail.to_string();
        let at = Utc::now();
        let conn = self.conn();
        // On S3 a record's key holds its place among the target's records, from 1.
        let place: i64 = match remote {
            Some(_) => conn
                .query_row(
                    "SELECT count(*) FROM events WHERE run_id = ?1 AND target = ?2",
                    params![run.as_str(), target],
                    |r| r.get(0),
                )
                .map_err(|e| self.db(e))?,
            None => 0,
        } + 1;
        conn.execute(
            "INSERT INTO events (run_id, target, step, phase, detail, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run.as_str(),
                target,
                step,
                phase.as_str(),
                text,
                timestamp(at)
            ],
        )
        .map_err(|e| self.db_for_run(e, run))?;
        let seq = conn.last_insert_rowid();
        if let Some(remote) = remote {
            // Queued while the database lock is held, so the chain gets a target's records
            // in the order of their places.
            remote.enqueue_record(Event {
                seq: place,
                run: run.clone(),
                target: target.to_string(),
                step: step.to_string(),
                phase,
                detail: detail.clone(),
                at,
            });
        }
        Ok(seq)
    }

    /// Waits until everything recorded for `run` is durable (at once locally; on S3, once
    /// every write chain of the run is empty): a command that records and ends calls it.
    pub fn flush(&self, run: &RunId) -> Result<(), JournalError> {
        match self.writable_remote()? {
            Some(remote) => remote
                .flush_run(run.as_str())
                .map_err(|e| self.remote_error(e)),
            None => Ok(()),
        }
    }

    /// On S3, queues the deletion of `rel` after everything recorded for `target` in `run`,
    /// without waiting for it (see [`Remote::enqueue_delete`]); `false` for a local state.
    pub(crate) fn delete_after_records(
        &self,
        run: &RunId,
        target: &str,
        rel: String,
    ) -> Result<bool, JournalError> {
        match self.writable_remote()? {
            Some(remote) => {
                remote.enqueue_delete(run.as_str(), target, rel);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The events of a run (of one target when given), in the order they were recorded.
    pub fn events(&self, run: &RunId, target: Option<&str>) -> Result<Vec<Event>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, run_id, target, step, phase, detail, at FROM events
                 WHERE run_id = ?1 AND (?2 IS NULL OR target = ?2) ORDER BY seq",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![run.as_str(), target], raw_event)
            .map_err(|e| self.db(e))?;
        let mut events = Vec::new();
        for row in rows {
            events.push(self.event(row.map_err(|e| self.db(e))?)?);
        }
        Ok(events)
    }

    /// The last event of one target of a run.
    pub fn last(&self, run: &RunId, target: &str) -> Result<Option<Event>, JournalError> {
        let row = self
            .conn()
            .query_row(
                "SELECT seq, run_id, target, step, phase, detail, at FROM events
                 WHERE run_id = ?1 AND target = ?2 ORDER BY seq DESC LIMIT 1",
                params![run.as_str(), target],
                raw_event,
            )
            .optional()
            .map_err(|e| self.db(e))?;
        row.map(|r| self.event(r)).transpose()
    }

    /// Sets (replaces) the displayed state of one target of a run.
    pub fn set_target_state(
        &self,
        run: &RunId,
        target: &str,
        state: &str,
        waiting_until: Option<DateTime<Utc>>,
        message: Option<&str>,
    ) -> Result<(), JournalError> {
        let now = Utc::now();
        if let Some(remote) = self.writable_remote()? {
            let state = TargetState {
                target: target.to_string(),
                state: state.to_string(),
                waiting_until,
                message: message.map(str::to_owned),
                updated_at: now,
            };
            remote.enqueue_state(run.as_str(), state);
        }
        self.conn()
            .execute(
                "INSERT INTO targets (run_id, target, state, waiting_until, message, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id, target) DO UPDATE SET
                     state = excluded.state, waiting_until = excluded.waiting_until,
                     message = excluded.message, updated_at = excluded.updated_at",
                params![
                    run.as_str(),
                    target,
                    state,
                    waiting_until.map(timestamp),
                    message,
                    timestamp(now)
                ],
            )
            .map_err(|e| self.db_for_run(e, run))?;
        Ok(())
    }

    /// The states of a run's targets, by target id.
    pub fn target_states(&self, run: &RunId) -> Result<Vec<TargetState>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT target, state, waiting_until, message, updated_at FROM targets
                 WHERE run_id = ?1 ORDER BY target",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([run.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut states = Vec::new();
        for row in rows {
            let (target, state, until, message, updated) = row.map_err(|e| self.db(e))?;
            states.push(TargetState {
                target,
                state,
                waiting_until: until.map(|t| self.parse_time(&t)).transpose()?,
                message,
                updated_at: self.parse_time(&updated)?,
            });
        }
        Ok(states)
    }

    /// Every row of the journal, the stash's still sealed: what `state migrate` moves.
    pub fn dump(&self) -> Result<Dump, JournalError> {
        let mut dump = Dump::default();
        let runs = self.runs()?;
        for summary in &runs {
            if let Some(record) = self.run(&summary.id)? {
                dump.runs.push(record);
            }
        }
        for record in &dump.runs {
            // A record's place among its target's records, from 1, as S3 keys it.
            let mut places: BTreeMap<String, i64> = BTreeMap::new();
            for mut e in self.events(&record.id, None)? {
                let place = places.entry(e.target.clone()).or_insert(0);
                *place += 1;
                e.seq = *place;
                dump.events.push(e);
            }
            for t in self.target_states(&record.id)? {
                dump.targets.push((record.id.clone(), t));
            }
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT run_id, target, credential_id, key_id, nonce, ciphertext, created_at
                 FROM stash ORDER BY run_id, target",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StashRow {
                    run: r.get(0)?,
                    target: r.get(1)?,
                    credential_id: r.get(2)?,
                    key_id: r.get(3)?,
                    nonce: r.get(4)?,
                    ciphertext: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })
            .map_err(|e| self.db(e))?;
        for row in rows {
            dump.stash.push(row.map_err(|e| self.db(e))?);
        }
        Ok(dump)
    }

    /// Adds `dump`'s rows to this journal as they are (no S3 write): how a journal on S3 is
    /// filled from S3, and how `state migrate` fills a local one. A run already here is kept.
    pub fn load(&self, dump: &Dump) -> Result<(), JournalError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.db(e))?;
        let mut fresh = std::collections::HashSet::new();
        for r in &dump.runs {
            let n = tx
                .execute(
                    "INSERT INTO runs (id, plan_name, plan_file, plan_sha256, plan_text, status,
                                       created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                    params![
                        r.id.as_str(),
                        r.plan_name,
                        r.plan_file,
                        r.plan_sha256,
                        r.plan_text,
                        r.status.as_str(),
                        timestamp(r.created_at),
                        timestamp(r.updated_at)
                    ],
                )
                .map_err(|e| self.db(e))?;
            if n == 1 {
                fresh.insert(r.id.as_str());
            }
        }
        for e in dump
            .events
            .iter()
            .filter(|e| fresh.contains(e.run.as_str()))
        {
            tx.execute(
                "INSERT INTO events (run_id, target, step, phase, detail, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    e.run.as_str(),
                    e.target,
                    e.step,
                    e.phase.as_str(),
                    e.detail.to_string(),
                    timestamp(e.at)
                ],
            )
            .map_err(|e| self.db(e))?;
        }
        for (run, t) in dump
            .targets
            .iter()
            .filter(|(r, _)| fresh.contains(r.as_str()))
        {
            tx.execute(
                "INSERT INTO targets (run_id, target, state, waiting_until, message, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (run_id, target) DO NOTHING",
                params![
                    run.as_str(),
                    t.target,
                    t.state,
                    t.waiting_until.map(timestamp),
                    t.message,
                    timestamp(t.updated_at)
                ],
            )
            .map_err(|e| self.db(e))?;
        }
        for s in dump.stash.iter().filter(|s| fresh.contains(s.run.as_str())) {
            tx.execute(
                "INSERT INTO stash (run_id, target, credential_id, key_id, nonce, ciphertext,
                                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (run_id, target) DO NOTHING",
                params![
                    s.run,
                    s.target,
                    s.credential_id,
                    s.key_id,
                    s.nonce,
                    s.ciphertext,
                    s.created_at
                ],
            )
            .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))
    }

    /// Whether `needle` occurs anywhere in the raw bytes of the database files (the database,
    /// its write-ahead log, a rollback journal): how tests prove a secret never reached disk.
    /// An empty needle is found everywhere.
    pub fn scan_for(&self, needle: impl AsRef<[u8]>) -> Result<bool, JournalError> {
        scan_database_files(&self.path, needle.as_ref())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection half-updated: SQLite rolls
        // back an unfinished transaction itself. So a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn db(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Like [`Journal::db`], but a foreign-key violation means the run does not exist.
    fn db_for_run(&self, source: rusqlite::Error, run: &RunId) -> JournalError {
        if is_foreign_key_violation(&source) {
            JournalError::UnknownRun(run.to_string())
        } else {
            self.db(source)
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn parse_time(&self, text: &str) -> Result<DateTime<Utc>, JournalError> {
        parse_timestamp(text).ok_or_else(|| self.corrupt(format!("bad timestamp {text:?}")))
    }

    fn run_status(&self, text: &str) -> Result<RunStatus, JournalError> {
        RunStatus::parse(text).ok_or_else(|| self.corrupt(format!("unknown run status {text:?}")))
    }

    fn event(&self, raw: RawEvent) -> Result<Event, JournalError> {
        let (seq, run, target, step, phase, detail, at) = raw;
        Ok(Event {
            seq,
            run: RunId(run),
            target,
            step,
            phase: Phase::parse(&phase)
                .ok_or_else(|| self.corrupt(format!("unknown phase {phase:?} in event {seq}")))?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| self.corrupt(format!("event {seq} detail is not JSON: {e}")))?,
            at: self.parse_time(&at)?,
        })
    }
}

type RawEvent = (i64, String, String, String, String, String, String);

fn raw_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

/// Timestamps are stored as RFC 3339 UTC text with milliseconds: readable in `sqlite3`, and
/// their text order is their time order.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// Creates the state directory (0700) if it is missing. An existing directory keeps its mode
/// (it may be one the user chose and shares), with a warning when others can read it; the files
/// inside are 0600 either way.
pub fn ensure_state_dir(state_dir: &Path) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: state_dir.to_path_buf(),
        source,
    };
    match DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::metadata(state_dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(io(std::io::Error::new(
            ErrorKind::NotADirectory,
            "the state directory is not a directory",
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            state_dir = %state_dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the state directory is accessible to other users; its files are not"
        );
    }
    Ok(())
}

/// Opens the database of `state_dir` with rekey's settings and an up-to-date schema. The stash
/// opens its own connection through this too, so both see the same settings.
pub(crate) fn open_database(state_dir: &Path) -> Result<(Connection, PathBuf), JournalError> {
    ensure_state_dir(state_dir)?;
    let path = state_dir.join(JOURNAL_FILE);
    create_private_file(&path)?;
    let db = |source| JournalError::Database {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(&path).map_err(db)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
    // WAL: `rekey status` can read while an apply writes. FULL: a commit is fsynced before it
    // returns, which is what lets the engine trust an intent once `record` returned. A
    // filesystem without shared memory keeps the rollback journal, equally durable with FULL.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::debug!(journal_mode = %mode, "SQLite kept its rollback journal");
    }
    // secure_delete: an erased stash row is overwritten with zeros, not left in a free page.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
    )
    .map_err(db)?;
    migrate(&conn, &path)?;
    Ok((conn, path))
}

/// A connection to the database at `path` that writes nothing beside it (see
/// [`Journal::open_read_only`]), and the scratch directory it reads from, if any.
fn open_untouched(path: &Path) -> Result<(Connection, Option<Scratch>), JournalError> {
    let db = |source| JournalError::Database {
        path: path.to_path_buf(),
        source,
    };
    let io = |p: &Path, source| JournalError::Io {
        path: p.to_path_buf(),
        source,
    };
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let pending = std::fs::metadata(&wal)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if !pending {
        let absolute = std::path::absolute(path).map_err(|e| io(path, e))?;
        let uri = url::Url::from_file_path(&absolute).map_err(|()| JournalError::NotAJournal {
            path: path.to_path_buf(),
            reason: "its path cannot be named as a URI".into(),
        })?;
        let conn = Connection::open_with_flags(
            format!("{uri}?immutable=1"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_URI
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        return Ok((conn, None));
    }
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| JournalError::Random(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("rekey-read-{}", hex::encode(random)));
    DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io(&dir, e))?;
    let scratch = Scratch(dir.clone());
    let copy = dir.join(JOURNAL_FILE);
    for (from, to) in [
        (path.to_path_buf(), copy.clone()),
        (wal, PathBuf::from(format!("{}-wal", copy.display()))),
    ] {
        let mut src = std::fs::File::open(&from).map_err(|e| io(&from, e))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&to)
            .map_err(|e| io(&to, e))?;
        std::io::copy(&mut src, &mut dst).map_err(|e| io(&to, e))?;
    }
    let conn = Connection::open(&copy).map_err(db)?;
    Ok((conn, Some(scratch)))
}

/// What a `state_dir` names, as a journal error.
fn location(state_dir: &Path) -> Result<StateLocation, JournalError> {
    StateLocation::of(state_dir).map_err(JournalError::Location)
}

/// Creates the database file 0600 before SQLite does, so that SQLite (which gives its `-wal`
/// and `-shm` files the database file's mode) never creates anything readable by others, and
/// tightens an existing file that is not 0600.
fn create_private_file(path: &Path) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Creates the schema of an empty database, or checks the version of an existing one.
fn migrate(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let db = |source| JournalError::Database {
        path: path.to_path_buf(),
        source,
    };
    // IMMEDIATE: two processes opening a new state directory at once must not both create it.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
    let result = (|| {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        let has_meta: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        if tables == 0 {
            conn.execute_batch(SCHEMA_V1).map_err(db)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('created_at', ?2)",
                params![SCHEMA_VERSION.to_string(), timestamp(Utc::now())],
            )
            .map_err(db)?;
            return Ok(());
        }
        if has_meta == 0 {
            return Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
                reason: "it has tables but no meta table".into(),
            });
        }
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let Some(found) = version.and_then(|v| v.parse::<i64>().ok()) else {
            return Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
                reason: "its meta table has no schema_version".into(),
            });
        };
        if found > SCHEMA_VERSION {
            return Err(JournalError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // Older versions are migrated here, one step at a time, when there are any.
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(db),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Reads every file of the database (`journal.sqlite`, `-wal`, `-journal`, `-shm`) raw.
pub(crate) fn scan_database_files(db_path: &Path, needle: &[u8]) -> Result<bool, JournalError> {
    if needle.is_empty() {
        return Ok(true);
    }
    let name = db_path.as_os_str().to_string_lossy().into_owned();
    for suffix in ["", "-wal", "-journal", "-shm"] {
        let path = PathBuf::from(format!("{name}{suffix}"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => return Err(JournalError::Io { path, source }),
        };
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_have_the_documented_shape() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T09:53:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let id = RunId::generate(now).unwrap();
        assert!(id.as_str().starts_with("r20261128-095300-"), "{id}");
        assert_eq!(RunId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "r20261128-095300",
            "r20261128-095300-7F3A",
            "x20261128-095300-7f3a",
            "r2026112-0953000-7f3a",
            "r20261128-095300-7f3a0",
        ] {
            assert!(RunId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let a = Utc::now();
        let b = a + chrono::Duration::milliseconds(5);
        assert!(timestamp(a) < timestamp(b));
        let back = parse_timestamp(&timestamp(a)).unwrap();
        assert_eq!(back.timestamp_millis(), a.timestamp_millis());
    }

    #[test]
    fn names_round_trip() {
        for p in [Phase::Intent, Phase::Done, Phase::Failed, Phase::Skipped] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        for s in [
            RunStatus::Running,
            RunStatus::Complete,
            RunStatus::Incomplete,
            RunStatus::Waiting,
            RunStatus::Failed,
        ] {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
    }
}
