//! The rotation protocol for one target (DESIGN.md steps 2–12), resumable at every step.
//!
//! [`run`] reads as the protocol: one call per step, each a method of the target's
//! [`Runner`] in `engine/steps/`. Each step journals its intent before the side effect and
//! `done` after it (one helper, `Runner::journaled`), and a run starts by folding the journal
//! into [`Progress`], so a second call after a crash continues where the first stopped: a
//! minted value comes back from the stash (never a second mint), an interrupted mint is
//! resolved by listing the principal's credentials and deleting any this run created but did
//! not record, and every other step is idempotent and simply repeated.
//!
//! The order enforces invariant 1: deactivation and revocation of the old credential come only
//! after every binding holds the new value, verified and read back.

use super::EngineError;
use super::run::Ctx;
use super::steps::runner::{Runner, Stop};
use super::steps::{EventPhase, Progress, Step};
use crate::plan::Target;
use chrono::{DateTime, Utc};

/// Where a target stands when this invocation is done with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Outcome {
    /// Rotated: every binding holds the new credential and the old one is revoked.
    Done,
    /// In its grace period: the old credential is disabled (or, where the owner cannot disable,
    /// still valid: `old_still_valid`) until `until`; a later `apply --resume` revokes it.
    Waiting {
        until: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        old_still_valid: bool,
    },
    /// Rotated and written everywhere; the old credential must be revoked by a person, who then
    /// runs `rekey confirm RUN TARGET` (a GitHub token whose old value rekey was not given).
    AwaitingConfirmation { action: String },
    /// Nothing to do (credential younger than max_age, grouping not confirmed…).
    Skipped { reason: String },
    /// Stopped with both credentials valid; `apply --resume` continues once the cause is fixed.
    Incomplete { reason: String },
    /// The plan no longer matches live state; nothing was changed.
    Stale { reason: String },
    /// Stopped; what changed was undone (a new credential that did not verify is deleted).
    Failed { reason: String },
}

impl Outcome {
    pub fn label(&self) -> String {
        match self {
            Outcome::Done => "done".into(),
            Outcome::Waiting {
                until,
                old_still_valid,
            } => format!(
                "waiting until {}{}",
                until.to_rfc3339(),
                if *old_still_valid {
                    " (the old credential stays valid: the owner cannot disable it)"
                } else {
                    ""
                }
            ),
            Outcome::AwaitingConfirmation { action } => {
                format!("awaiting confirmation: {action}")
            }
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::Incomplete { reason } => format!("incomplete: {reason}"),
            Outcome::Stale { reason } => format!("stale plan: {reason}"),
            Outcome::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// Target state of a manual step awaiting `rekey confirm` (journal and `rekey status`).
pub const AWAITING_CONFIRMATION: &str = "awaiting-confirmation";

/// Prefix of the journal message of a manual step.
pub const MANUAL_STEP: &str = "manual step: ";

/// Runs (or resumes) `target` as far as it can go in this invocation.
pub async fn run(ctx: &Ctx, target: &Target) -> Outcome {
    match run_inner(ctx, target).await {
        Ok(outcome) | Err(Stop::End(outcome)) => outcome,
        // The journal or stash failed: the protocol cannot be kept safely, so stop here.
        Err(Stop::Engine(e)) => Outcome::Incomplete {
            reason: e.to_string(),
        },
    }
}

/// The protocol (DESIGN.md, "The rotation protocol"): each step returns to go on, or stops
/// the invocation with its outcome.
async fn run_inner(ctx: &Ctx, target: &Target) -> Result<Outcome, Stop> {
    let events = ctx.journal.events(target.id.as_str())?;
    let progress = Progress::fold(&events);
    if progress.finished {
        return Ok(finished(ctx, target.id.as_str(), &events, &progress)?);
    }
    if !target.confirmed {
        return Ok(Outcome::Skipped {
            reason: "grouping not confirmed (set `confirmed: true` after review)".into(),
        });
    }
    let Some(provider) = ctx.providers.get(target.provider.value) else {
        return Ok(Outcome::Skipped {
            reason: format!(
                "provider {} is not available in this build",
                target.provider.value
            ),
        });
    };
    let mut step = Runner::new(ctx, target, provider, progress);
    step.inspect().await?; //                   2. live state; due? stale?
    step.pre_hunt().await?; //                  1. evidence, before anything changes
    step.resolve_interrupted_mint().await?; //  4 after a crash: stash, or orphans swept
    step.capacity().await?; //                  3. room under the owner's quota
    step.mint().await?; //                      4. new credential: id journaled, value stashed
    let minted = step.minted_value()?;
    step.verify(&minted).await?; //             5. it authenticates, or it is deleted
    step.write(&minted).await?; //              6. every binding
    step.read_back(&minted).await?; //          7. every binding holds it
    step.canary().await?; //                    8. a pipeline succeeds with it
    step.deactivate().await?; //                9. old credential disabled, grace starts
    step.grace()?; //                          10. wait until the grace period is over
    step.post_hunt().await?; //               10b. the old one unused since?
    step.revoke().await?; //                   11. old credential deleted
    step.done(&minted.id) //                   12. stash erased
}

/// A target whose journal says it ended: repeats the bookkeeping a crash may have cut short.
fn finished(
    ctx: &Ctx,
    id: &str,
    events: &[super::steps::StepEvent],
    progress: &Progress,
) -> Result<Outcome, EngineError> {
    if progress.has(Step::Done) {
        // A crash between the `done` record and the state update (step 12) leaves the
        // target's state stale (`rekey status` would never say done): set it again.
        ctx.journal.set_state(id, "done", None, None)?;
        // Step 12 erases the stash after its record: a crash in between left it there.
        ctx.stash.erase(id)?;
        return Ok(Outcome::Done);
    }
    // The rollback of a key that never verified records `done`, then erases the stash and
    // sets the state: a crash in between left the deleted key's (encrypted) secret in the
    // stash and the state unset (tests/crash.rs). Both are idempotent.
    let why = events
        .iter()
        .rev()
        .find(|e| e.step == Step::Verify && e.phase == EventPhase::Failed)
        .and_then(|e| e.detail.message.clone())
        .unwrap_or_else(|| "it did not verify".into());
    let reason = format!(
        "the new credential was deleted in an earlier invocation ({why}); nothing else changed: start a new run"
    );
    ctx.stash.erase(id)?;
    ctx.journal.set_state(id, "failed", None, Some(&reason))?;
    Ok(Outcome::Failed { reason })
}
