//! `rekey state`: what a team does with its state by hand — list the runs, show one, remove a
//! stuck lease, move a state between a directory and S3.
//!
//! Reading commands open the journal read-only (nothing written, locally or on S3). `migrate`
//! takes the lock of both sides, copies every row (the stash still sealed: the same ciphertexts,
//! openable with the same stash key), and never overwrites an object or a run already at the
//! destination.

use super::StateLocation;
use super::lease::{self, LeaseHolder, LeaseOptions};
use crate::engine::EngineError;
use crate::engine::journal::{
    Event, Journal, JournalError, RunId, RunRecord, RunSummary, TargetState,
};
use crate::engine::lock::StateLock;
use crate::engine::stash::StashEntry;
use std::path::Path;

/// A run as `rekey state show` prints it.
#[derive(Debug, serde::Serialize)]
pub struct RunDetail {
    pub run: RunRecord,
    pub targets: Vec<TargetState>,
    pub events: Vec<Event>,
    /// What the stash holds for the run (ids only, never values).
    pub stashed: Vec<StashEntry>,
}

/// The runs of a state, newest first (an absent local directory has none).
pub fn list(state_dir: &Path) -> Result<Vec<RunSummary>, EngineError> {
    match Journal::open_read_only(state_dir)? {
        Some(journal) => Ok(journal.runs()?),
        None => Ok(Vec::new()),
    }
}

/// One run, its targets, its events and what is stashed for it.
pub fn show(state_dir: &Path, run: &str) -> Result<RunDetail, EngineError> {
    let id = RunId::parse(run)?;
    let journal = Journal::open_read_only(state_dir)?
        .ok_or_else(|| EngineError::NoSuchRun(run.to_string()))?;
    let record = journal
        .run(&id)?
        .ok_or_else(|| EngineError::NoSuchRun(run.to_string()))?;
    let dump = journal.dump()?;
    let stashed = dump
        .stash
        .iter()
        .filter(|s| s.run == run)
        .map(|s| StashEntry {
            target: s.target.clone(),
            credential_id: s.credential_id.clone(),
            created_at: crate::engine::journal::parse_timestamp(&s.created_at),
        })
        .collect();
    Ok(RunDetail {
        targets: journal.target_states(&id)?,
        events: journal.events(&id, None)?,
        run: record,
        stashed,
    })
}

/// Who holds the lock of an S3 state, if anyone (`None` too for a local directory, whose lock
/// the kernel releases when its holder ends).
pub fn lock_holder(state_dir: &Path) -> Result<Option<LeaseHolder>, EngineError> {
    let StateLocation::S3(location) = location(state_dir)? else {
        return Ok(None);
    };
    let remote = remote(&location)?;
    let got = lease::read(&remote).map_err(|what| remote_error(&location, what))?;
    Ok(got.and_then(|(holder, _)| holder))
}

/// What `unlock` did.
#[derive(Debug, serde::Serialize)]
pub enum Unlocked {
    /// The lease was removed; it was this.
    Removed(Option<LeaseHolder>),
    /// There was no lease.
    NotLocked,
    /// The person said no.
    Declined,
}

/// Removes the lease of an S3 state held for `run`, after `confirm(holder)` says yes. Refuses a
/// lease held for another run (a typo must not free someone else's lock).
pub fn unlock(
    state_dir: &Path,
    run: &str,
    confirm: impl FnOnce(Option<&LeaseHolder>) -> bool,
) -> Result<Unlocked, EngineError> {
    let location = match location(state_dir)? {
        StateLocation::S3(location) => location,
        StateLocation::Local(dir) => {
            return Err(EngineError::Internal(format!(
                "{} is a local state: its lock is released by the kernel when its holder ends, \
                 so it cannot be stuck; nothing to unlock",
                dir.display()
            )));
        }
    };
    let remote = remote(&location)?;
    let Some((holder, etag)) =
        lease::read(&remote).map_err(|what| remote_error(&location, what))?
    else {
        return Ok(Unlocked::NotLocked);
    };
    if let Some(h) = &holder
        && h.run.as_deref() != Some(run)
    {
        return Err(EngineError::Internal(format!(
            "the lock of {location} is held by {h}, not for run {run}; nothing was removed \
             (help: name the run the lock shows)"
        )));
    }
    if !confirm(holder.as_ref()) {
        return Ok(Unlocked::Declined);
    }
    lease::remove(&remote, &etag).map_err(|what| remote_error(&location, what))?;
    Ok(Unlocked::Removed(holder))
}

/// What `migrate` copied.
#[derive(Debug, serde::Serialize)]
pub struct Migrated {
    pub runs: usize,
    pub events: usize,
    pub stashed: usize,
}

/// Copies every run of `from` to `to` (directory → S3 or S3 → directory, or alike), holding
/// both locks. Nothing at the destination is overwritten.
pub fn migrate(from: &Path, to: &Path, lock: LeaseOptions) -> Result<Migrated, EngineError> {
    let _from_lock = StateLock::acquire_with(from, lock)?;
    let _to_lock = StateLock::acquire_with(to, lock)?;
    let source = Journal::open_read_only(from)?.ok_or_else(|| {
        EngineError::Internal(format!("{}: no journal to migrate", from.display()))
    })?;
    let dump = source.dump()?;
    match location(to)? {
        StateLocation::S3(location) => {
            let remote = remote(&location)?;
            super::records::upload(&remote, &dump).map_err(|what| remote_error(&location, what))?;
        }
        StateLocation::Local(dir) => Journal::open(&dir)?.load(&dump)?,
    }
    Ok(Migrated {
        runs: dump.runs.len(),
        events: dump.events.len(),
        stashed: dump.stash.len(),
    })
}

fn location(state_dir: &Path) -> Result<StateLocation, EngineError> {
    StateLocation::of(state_dir).map_err(|e| EngineError::Journal(JournalError::Location(e)))
}

fn remote(location: &super::S3Location) -> Result<std::sync::Arc<super::s3::Remote>, EngineError> {
    super::s3::remote(location).map_err(|what| remote_error(location, what))
}

fn remote_error(location: &super::S3Location, what: String) -> EngineError {
    EngineError::Journal(JournalError::Remote {
        location: location.to_string(),
        what,
    })
}
