//! The engine: executes a plan's targets through the rotation protocol (DESIGN.md, "The
//! rotation protocol"), recording every step in the journal so that a crash anywhere can be
//! resumed.
//!
//! - [`journal`]: the state directory's database of runs, step events and target states.
//! - [`stash`]: minted secrets, encrypted, between mint and the end of their target.
//! - [`lock`]: one apply at a time per state directory.
//! - [`state`]: where the state lives: a local directory, or S3 (lease, write-through journal).
//! - [`run`]: runs — bounded concurrency over targets, resume, the shared context;
//! - [`target`]: the per-target state machine; [`steps`]: step names and progress from events;
//! - [`bindings`]: writes to CircleCI and read-back; [`canary`]: the canary pipeline;
//! - [`hunts`]: the hunts before and after a target's rotation, and where their findings go;
//! - [`dryrun`]: the read-only preview; [`events`]: progress output;
//! - [`rehearsal`]: a plan applied to a simulated copy of its world (`apply --rehearse`).

pub mod bindings;
pub mod canary;
pub mod dryrun;
pub mod events;
pub mod hunts;
pub mod journal;
pub mod lock;
pub mod rehearsal;
pub mod run;
pub mod stash;
pub mod state;
pub mod steps;
pub mod target;

/// Why the engine itself (not a target) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Stash(#[from] stash::StashError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("no run {0} in this state directory (see `rekey status`)")]
    NoSuchRun(String),
    #[error(
        "target {target} of run {run} is not waiting for a confirmation (see `rekey status {run}`)"
    )]
    NothingToConfirm { run: String, target: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("a lock of the engine was poisoned by a panic")]
    Poisoned,
}
