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

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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
    conn: Mutex<Connection>,
    state_dir: PathBuf,
    path: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal of `state_dir`, creating the directory too.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let (conn, path) = open_database(state_dir)?;
        Ok(Journal {
            conn: Mutex::new(conn),
            state_dir: state_dir.to_path_buf(),
            path,
        })
    }

    /// Opens the journal of `state_dir` for reading only, when there is one (`None` when the
    /// directory or the database does not exist): a dry run consults earlier runs this way
    /// without creating or changing anything in the state directory.
    ///
    /// The connection is read-write at the file level but `query_only`: a WAL database opened
    /// with SQLITE_OPEN_READ_ONLY leaves its `-wal` and `-shm` files behind when it closes,
    /// whereas the last ordinary connection to close removes them, leaving the directory as
    /// it found it.
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Journal>, JournalError> {
        let path = state_dir.join(JOURNAL_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let db = |source| JournalError::Database {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
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
            conn: Mutex::new(conn),
            state_dir: state_dir.to_path_buf(),
            path,
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
        let conn = self.conn();
        // Two runs created in the same second collide only if their 16 random bits do too;
        // a few retries make that practically impossible rather than an error.
        for _ in 0..8 {
            let id = RunId::generate(now)?;
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
        let changed = self
            .conn()
            .execute(
                "UPDATE runs SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![run.as_str(), status.as_str(), timestamp(Utc::now())],
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
        let detail = detail.to_string();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (run_id, target, step, phase, detail, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run.as_str(),
                target,
                step,
                phase.as_str(),
                detail,
                timestamp(Utc::now())
            ],
        )
        .map_err(|e| self.db_for_run(e, run))?;
        Ok(conn.last_insert_rowid())
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
                    timestamp(Utc::now())
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
