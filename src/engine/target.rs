//! The rotation protocol for one target (DESIGN.md steps 2–12), resumable at every step.
//!
//! Each step journals its intent before the side effect and `done` after it, and this function
//! starts by folding the journal into [`Progress`], so a second call after a crash continues
//! where the first stopped: a minted value comes back from the stash (never a second mint), an
//! interrupted mint is resolved by listing the principal's credentials and deleting any this
//! run created but did not record, and every other step is idempotent and simply repeated.
//!
//! The order enforces invariant 1: deactivation and revocation of the old credential come only
//! after every binding holds the new value, verified and read back.

use super::EngineError;
use super::bindings::{self, BindingError};
use super::events::Status;
use super::hunts::{self, RotationFacts, When};
use super::run::Ctx;
use super::steps::{Detail, EventPhase, Progress, Step};
use crate::circleci::CircleCiClient;
use crate::plan::{Place, Target};
use crate::providers::{CredentialInfo, Inspection, Minted, Provider, ProviderError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

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
        Ok(outcome) => outcome,
        // The journal or stash failed: the protocol cannot be kept safely, so stop here.
        Err(e) => Outcome::Incomplete {
            reason: e.to_string(),
        },
    }
}

async fn run_inner(ctx: &Ctx, target: &Target) -> Result<Outcome, EngineError> {
    let id = target.id.as_str();
    let events = ctx.journal.events(id)?;
    let mut progress = Progress::fold(&events);
    if progress.finished {
        return Ok(if progress.has(Step::Done) {
            // A crash between the `done` record and the state update below (step 12) leaves
            // the target's state stale (`rekey status` would never say done): set it again.
            ctx.journal.set_state(id, "done", None, None)?;
            // Step 12 erases the stash after its record: a crash in between left it there.
            ctx.stash.erase(id)?;
            Outcome::Done
        } else {
            // The rollback of a key that never verified records `done`, then erases the stash
            // and sets the state: a crash in between left the deleted key's (encrypted) secret
            // in the stash and the state unset (tests/crash.rs). Both are idempotent.
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
            Outcome::Failed { reason }
        });
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
    let caps = provider.capabilities_for(target);
    let step = Stepper { ctx, target: id };

    // 2. inspect: live state, which credential is in use, age, staleness.
    step.started(Step::Inspect);
    let inspection = match retry(|| provider.inspect(target)).await {
        Ok(i) => i,
        Err(e) => return Ok(step.incomplete(Step::Inspect, format!("cannot inspect: {e}"))),
    };
    if !progress.has(Step::Inspect) {
        let old = match current_credential(&ctx.circleci, target, &inspection).await {
            Ok(old) => old,
            Err(reason) => return Ok(step.fail_untouched(Step::Inspect, reason)),
        };
        // The bindings may hold a credential that an earlier run of rekey minted for this
        // target: the plan was applied before and has done its work (invariant 5).
        let rotated_by = match &old {
            Some(old) => ctx.journal.rotated_earlier(id, &old.id)?,
            None => None,
        };
        let max_age = ctx.max_age(target);
        let mut skip = None;
        if let (Some(old), Some(max_age)) = (&old, max_age)
            && let Some(created) = old.created_at
        {
            let age = Utc::now() - created;
            if !ctx.options.ignore_max_age
                && age.num_seconds() >= 0
                && (age.num_seconds() as u64) < max_age.seconds()
            {
                skip = Some(format!(
                    "current credential {} is {} old, younger than max_age {max_age}",
                    old.id,
                    crate::plan::PlanDuration(age.num_seconds() as u64)
                ));
            }
        }
        // A credential its owner cannot date (a GitHub token): the last rotation of this
        // target by rekey dates it, so a scheduled run does not ask for a new token every time.
        if let (None, Some(max_age), false) = (
            old.as_ref().and_then(|o| o.created_at),
            max_age,
            ctx.options.ignore_max_age,
        ) && skip.is_none()
            && let Some((run, minted)) = ctx.journal.last_rotation(id)?
        {
            let age = Utc::now() - minted;
            if age.num_seconds() >= 0 && (age.num_seconds() as u64) < max_age.seconds() {
                skip = Some(format!(
                    "rotated by run {run} {} ago, younger than max_age {max_age} (the owner does not date this credential)",
                    crate::plan::PlanDuration(age.num_seconds() as u64)
                ));
            }
        }
        // Without max_age nothing says when to rotate again, so a plan that has been carried
        // out stays carried out: applying it again (a re-run CI job, a repeated command)
        // must change nothing rather than rotate a second time.
        if let (Some(old), Some(run), None, false) =
            (&old, &rotated_by, max_age, ctx.options.ignore_max_age)
        {
            skip = Some(format!(
                "already rotated by run {run}: the bindings hold {}, which that run minted (set max_age to rotate on a schedule, or pass --ignore-max-age to rotate again now)",
                old.id
            ));
        }
        if let Some(reason) = skip {
            ctx.journal.record(
                id,
                Step::Inspect,
                EventPhase::Skipped,
                &Detail {
                    message: Some(reason.clone()),
                    ..Default::default()
                },
            )?;
            ctx.journal.set_state(id, "skipped", None, Some(&reason))?;
            step.emit(Step::Inspect, Status::Skipped, Some(&reason));
            return Ok(Outcome::Skipped { reason });
        }
        // What the plan observed predates rekey's own earlier rotation of this target, so it
        // cannot match; live state is exactly what that run left, which is not staleness.
        if rotated_by.is_none() {
            match stale(&ctx.circleci, target).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    step.emit(Step::Inspect, Status::Failed, Some(&reason));
                    // Shown by `rekey status`; nothing was changed.
                    ctx.journal.set_state(id, "stale", None, Some(&reason))?;
                    return Ok(Outcome::Stale { reason });
                }
                // Nothing changed, and the next invocation of this run checks again.
                Err(reason) => return Ok(step.incomplete(Step::Inspect, reason)),
            }
        }
        let detail = Detail {
            old_id: old.as_ref().map(|c| c.id.clone()),
            ..Default::default()
        };
        ctx.journal
            .record(id, Step::Inspect, EventPhase::Done, &detail)?;
        progress.old_id = detail.old_id;
    }
    step.emit(Step::Inspect, Status::Done, progress.old_id.as_deref());

    // 2b. pre-hunt: evidence of abuse of the credential in use, before anything changes. A
    // target minted before this step existed in the journal has nothing to look back on.
    if !progress.has(Step::PreHunt)
        && progress.new_id.is_none()
        && let Some(outcome) = pre_hunt(ctx, &step, target, &progress).await?
    {
        return Ok(outcome);
    }

    // 4 (resolving a crash first). An interrupted mint: the stash has the value, or the owner
    // may hold a credential this run created but never recorded.
    let mut minted: Option<Minted> = None;
    let mut live = inspection.credentials.clone();
    if progress.new_id.is_none() {
        // A crash can also stop the clean-up below between its rollback intent and the delete
        // (tests/crash.rs, `mint-after-call` then `rollback:intent`): the orphan is still there
        // and, with AWS's two-key quota, would block every later mint. With no minted id
        // known, an interrupted rollback can only be that clean-up: run it again. The ids known
        // before the mint come from the mint's intent, folded into `progress.known_ids`.
        if let Some((Step::Mint | Step::Rollback, _)) = &progress.interrupted {
            if let Some(m) = ctx.stash.get(id)? {
                ctx.journal.record(
                    id,
                    Step::Mint,
                    EventPhase::Done,
                    &Detail {
                        new_id: Some(m.id.clone()),
                        ..Default::default()
                    },
                )?;
                progress.new_id = Some(m.id.clone());
                minted = Some(m);
            } else {
                let known = progress.known_ids.clone().unwrap_or_default();
                let sweep = delete_orphans(
                    ctx,
                    &step,
                    provider,
                    target,
                    &live,
                    &known,
                    progress.old_id.as_deref(),
                    "orphan of an interrupted mint",
                )
                .await?;
                match sweep {
                    Ok(deleted) => live.retain(|c| !deleted.contains(&c.id)),
                    Err(reason) => return Ok(step.incomplete(Step::Rollback, reason)),
                }
            }
        }
    }

    if progress.new_id.is_none() {
        // 3. capacity: room under the owner's quota, only by removing a key marked removable.
        if let Some(max) = caps.max_credentials {
            if live.len() >= max {
                let removable = target
                    .policy
                    .removable_keys
                    .iter()
                    .map(|k| k.as_str())
                    .find(|k| {
                        Some(*k) != progress.old_id.as_deref() && live.iter().any(|c| c.id == *k)
                    });
                let Some(victim) = removable else {
                    let reason = format!(
                        "{} already has {} credentials, the owner's limit, and the plan marks none of the others removable (policy.removable_keys)",
                        inspection.principal,
                        live.len()
                    );
                    return Ok(step.fail_untouched(Step::Capacity, reason));
                };
                step.started(Step::Capacity);
                let detail = Detail {
                    removed_id: Some(victim.to_string()),
                    ..Default::default()
                };
                ctx.journal
                    .record(id, Step::Capacity, EventPhase::Intent, &detail)?;
                if let Err(e) = retry(|| provider.revoke(target, victim)).await {
                    return Ok(
                        step.incomplete(Step::Capacity, format!("cannot remove {victim}: {e}"))
                    );
                }
                ctx.journal
                    .record(id, Step::Capacity, EventPhase::Done, &detail)?;
                step.emit(
                    Step::Capacity,
                    Status::Done,
                    Some(&format!("removed {victim}")),
                );
                live.retain(|c| c.id != victim);
            }
        }

        // 4. mint: intent (with the ids that exist now), mint, stash, done.
        step.started(Step::Mint);
        let known: Vec<String> = live.iter().map(|c| c.id.clone()).collect();
        ctx.journal.record(
            id,
            Step::Mint,
            EventPhase::Intent,
            &Detail {
                known_ids: Some(known.clone()),
                ..Default::default()
            },
        )?;
        ctx.crash_point(id, "mint-before-call");
        let m = match mint_without_orphans(ctx, &step, provider, target, &known, &progress).await? {
            Ok(m) => m,
            // A person must give the value (a GitHub personal access token): nothing changed,
            // and the next invocation with the value continues from here.
            Err(MintFailure::GaveUp(ProviderError::NeedsInput(what))) => {
                ctx.journal.record(
                    id,
                    Step::Mint,
                    EventPhase::Failed,
                    &Detail {
                        message: Some(what.clone()),
                        ..Default::default()
                    },
                )?;
                return Ok(
                    step.incomplete(Step::Mint, format!("waiting for the new value: {what}"))
                );
            }
            Err(MintFailure::GaveUp(e)) => {
                ctx.journal.record(
                    id,
                    Step::Mint,
                    EventPhase::Failed,
                    &Detail {
                        message: Some(e.to_string()),
                        ..Default::default()
                    },
                )?;
                return Ok(step.fail_untouched(Step::Mint, format!("mint failed: {e}")));
            }
            // The mint's intent stays open, so a resume lists the principal's credentials
            // again and deletes what this run may have created.
            Err(MintFailure::Unsure(reason)) => return Ok(step.incomplete(Step::Mint, reason)),
        };
        ctx.crash_point(id, "mint-after-call");
        ctx.stash.put(id, &m)?;
        ctx.crash_point(id, "mint-after-stash");
        ctx.journal.record(
            id,
            Step::Mint,
            EventPhase::Done,
            &Detail {
                new_id: Some(m.id.clone()),
                at: Some(Utc::now()),
                ..Default::default()
            },
        )?;
        step.emit(Step::Mint, Status::Done, Some(&m.id));
        progress.new_id = Some(m.id.clone());
        minted = Some(m);
    }
    let minted = match minted {
        Some(m) => m,
        None => match ctx.stash.get(id)? {
            Some(m) => m,
            None => {
                let reason = format!(
                    "credential {} was minted by this run but is not in the stash (was REKEY_STASH_KEY or the state directory changed?)",
                    progress.new_id.as_deref().unwrap_or("?")
                );
                return Ok(step.incomplete(Step::Mint, reason));
            }
        },
    };

    // 5. verify-new, with bounded retries for eventual consistency; a credential that never
    // works is deleted and nothing else has changed.
    if !progress.has(Step::Verify) {
        step.started(Step::Verify);
        ctx.journal
            .record(id, Step::Verify, EventPhase::Intent, &Detail::default())?;
        if let Err(e) = verify_with_retries(ctx, provider, target, &minted).await {
            ctx.journal.record(
                id,
                Step::Verify,
                EventPhase::Failed,
                &Detail {
                    message: Some(e.to_string()),
                    ..Default::default()
                },
            )?;
            let rollback = Detail {
                new_id: Some(minted.id.clone()),
                ..Default::default()
            };
            ctx.journal
                .record(id, Step::Rollback, EventPhase::Intent, &rollback)?;
            if let Err(del) = retry(|| provider.revoke(target, &minted.id)).await {
                return Ok(step.incomplete(
                    Step::Rollback,
                    format!("new credential did not verify ({e}) and could not be deleted: {del}"),
                ));
            }
            ctx.journal
                .record(id, Step::Rollback, EventPhase::Done, &rollback)?;
            ctx.stash.erase(id)?;
            return Ok(step.fail_untouched(
                Step::Verify,
                format!(
                    "new credential {} did not verify ({e}); it was deleted, nothing else changed",
                    minted.id
                ),
            ));
        }
        let note = provider.verified_note(target);
        ctx.journal.record(
            id,
            Step::Verify,
            EventPhase::Done,
            &Detail {
                message: note.clone(),
                ..Default::default()
            },
        )?;
        step.emit(Step::Verify, Status::Done, note.as_deref());
    }

    // 6. write every binding; one that fails leaves both credentials valid (incomplete).
    let mut failed_places = Vec::new();
    for binding in &target.bindings {
        let place = bindings::label(binding);
        if progress.written.contains(&place) {
            continue;
        }
        step.started(Step::Write);
        let before = match bindings::timestamps(&ctx.circleci, binding).await {
            Ok(b) => b,
            Err(e) => {
                failed_places.push(e.to_string());
                continue;
            }
        };
        // Keep timestamps already journaled for this place (a resumed write must compare with
        // the value before the *first* attempt).
        let before: BTreeMap<_, _> = before
            .into_iter()
            .filter(|(k, _)| !progress.before.contains_key(k))
            .collect();
        let detail = Detail {
            place: Some(place.clone()),
            before: before.clone(),
            ..Default::default()
        };
        ctx.journal
            .record(id, Step::Write, EventPhase::Intent, &detail)?;
        progress.before.extend(before);
        ctx.crash_point(id, "write-before-call");
        match bindings::write(&ctx.circleci, binding, &minted).await {
            Ok(()) => {
                ctx.crash_point(id, "write-after-call");
                ctx.journal.record(
                    id,
                    Step::Write,
                    EventPhase::Done,
                    &Detail {
                        place: Some(place.clone()),
                        ..Default::default()
                    },
                )?;
                step.emit(Step::Write, Status::Done, Some(&place));
                progress.written.push(place);
            }
            Err(e) => {
                ctx.journal.record(
                    id,
                    Step::Write,
                    EventPhase::Failed,
                    &Detail {
                        place: Some(place.clone()),
                        message: Some(e.to_string()),
                        ..Default::default()
                    },
                )?;
                step.emit(Step::Write, Status::Failed, Some(&e.to_string()));
                failed_places.push(e.to_string());
            }
        }
    }
    if !failed_places.is_empty() {
        let reason = format!(
            "not every binding could be written ({}); both credentials stay valid — resume once the cause is fixed",
            failed_places.join("; ")
        );
        return Ok(step.incomplete(Step::Write, reason));
    }

    // 7. read-back.
    if !progress.has(Step::ReadBack) {
        step.started(Step::ReadBack);
        for binding in &target.bindings {
            if let Err(e) =
                bindings::read_back(&ctx.circleci, binding, &minted, &progress.before).await
            {
                ctx.journal.record(
                    id,
                    Step::ReadBack,
                    EventPhase::Failed,
                    &Detail {
                        place: Some(bindings::label(binding)),
                        message: Some(e.to_string()),
                        ..Default::default()
                    },
                )?;
                let retry_write = matches!(
                    e,
                    BindingError::Mismatch { .. }
                        | BindingError::Missing { .. }
                        | BindingError::NotUpdated { .. }
                );
                if retry_write {
                    // Forget the write so that resume writes this place again.
                    ctx.journal.record(
                        id,
                        Step::Write,
                        EventPhase::Failed,
                        &Detail {
                            place: Some(bindings::label(binding)),
                            message: Some("read-back did not match".into()),
                            ..Default::default()
                        },
                    )?;
                }
                return Ok(step.incomplete(
                    Step::ReadBack,
                    format!("read-back failed: {e}; both credentials stay valid"),
                ));
            }
        }
        ctx.journal
            .record(id, Step::ReadBack, EventPhase::Done, &Detail::default())?;
        step.emit(Step::ReadBack, Status::Done, None);
    }

    // 8. canary.
    if let Some(canary) = &target.policy.canary {
        if !progress.has(Step::Canary) {
            step.started(Step::Canary);
            ctx.journal
                .record(id, Step::Canary, EventPhase::Intent, &Detail::default())?;
            let timeout = canary
                .timeout
                .as_ref()
                .map(|t| t.value.seconds())
                .unwrap_or(30 * 60);
            match super::canary::run(
                &ctx.circleci,
                &canary.project,
                &canary.branch,
                Duration::from_secs(timeout),
                ctx.options.poll_interval,
            )
            .await
            {
                Ok(pipeline) => {
                    ctx.journal.record(
                        id,
                        Step::Canary,
                        EventPhase::Done,
                        &Detail {
                            pipeline: Some(pipeline.clone()),
                            ..Default::default()
                        },
                    )?;
                    step.emit(Step::Canary, Status::Done, Some(&pipeline));
                }
                Err(reason) => {
                    ctx.journal.record(
                        id,
                        Step::Canary,
                        EventPhase::Failed,
                        &Detail {
                            message: Some(reason.clone()),
                            ..Default::default()
                        },
                    )?;
                    return Ok(step.incomplete(
                        Step::Canary,
                        format!("canary failed: {reason}; both credentials stay valid"),
                    ));
                }
            }
        }
    }

    // 9. deactivate the old credential, and start the grace period.
    let grace = ctx.grace(target);
    let old = progress.old_id.clone();
    if !progress.has(Step::Deactivate) {
        let until = Utc::now() + chrono::Duration::seconds(grace.seconds() as i64);
        match (&old, caps.deactivate) {
            (Some(old_id), true) => {
                step.started(Step::Deactivate);
                ctx.journal.record(
                    id,
                    Step::Deactivate,
                    EventPhase::Intent,
                    &Detail {
                        old_id: Some(old_id.clone()),
                        ..Default::default()
                    },
                )?;
                ctx.crash_point(id, "deactivate-before-call");
                if let Err(e) = retry(|| provider.deactivate(target, old_id)).await {
                    return Ok(step
                        .incomplete(Step::Deactivate, format!("cannot deactivate {old_id}: {e}")));
                }
                ctx.crash_point(id, "deactivate-after-call");
                ctx.journal.record(
                    id,
                    Step::Deactivate,
                    EventPhase::Done,
                    &Detail {
                        old_id: Some(old_id.clone()),
                        until: Some(until),
                        at: Some(Utc::now()),
                        ..Default::default()
                    },
                )?;
                progress.deactivated_at = Some(Utc::now());
                step.emit(Step::Deactivate, Status::Done, Some(old_id));
            }
            _ => {
                let message = match &old {
                    Some(_) => format!(
                        "{} cannot disable a credential: the old one stays valid during the grace period",
                        target.provider.value
                    ),
                    None => "no old credential to deactivate".to_string(),
                };
                ctx.journal.record(
                    id,
                    Step::Deactivate,
                    EventPhase::Skipped,
                    &Detail {
                        until: Some(until),
                        message: Some(message.clone()),
                        ..Default::default()
                    },
                )?;
                step.emit(Step::Deactivate, Status::Skipped, Some(&message));
            }
        }
        progress.grace_until = Some(until);
    }

    // 10. grace: the invocation ends here until the period is over.
    if !progress.has(Step::Grace) {
        let until = progress.grace_until.unwrap_or_else(Utc::now);
        if Utc::now() < until {
            ctx.journal.set_state(id, "waiting", Some(until), None)?;
            step.emit(Step::Grace, Status::Waiting, Some(&until.to_rfc3339()));
            return Ok(Outcome::Waiting {
                until,
                old_still_valid: old.is_some() && !caps.deactivate,
            });
        }
        ctx.journal
            .record(id, Step::Grace, EventPhase::Done, &Detail::default())?;
        step.emit(Step::Grace, Status::Done, None);
    }

    // 10b. post-hunt: was the old credential used after it was disabled, the new one from
    // outside the allow-list? Before revoking, so that a missed consumer can be given its
    // credential back.
    if !progress.has(Step::PostHunt)
        && let Some(outcome) = post_hunt(ctx, &step, target, provider, &progress, caps).await?
    {
        return Ok(outcome);
    }

    // 11. revoke the old credential.
    if let Some(old_id) = &old {
        if !progress.has(Step::Revoke) {
            step.started(Step::Revoke);
            ctx.journal.record(
                id,
                Step::Revoke,
                EventPhase::Intent,
                &Detail {
                    old_id: Some(old_id.clone()),
                    ..Default::default()
                },
            )?;
            ctx.crash_point(id, "revoke-before-call");
            match retry(|| provider.revoke(target, old_id)).await {
                Ok(()) => {}
                // Only a person can revoke it: a manual step, journaled, pending until
                // `rekey confirm` records it done.
                Err(ProviderError::NeedsInput(what)) => {
                    let action = format!("{what}; then run `rekey confirm {} {id}`", ctx.run_id);
                    ctx.journal.record(
                        id,
                        Step::Revoke,
                        EventPhase::Failed,
                        &Detail {
                            old_id: Some(old_id.clone()),
                            message: Some(format!("{MANUAL_STEP}{action}")),
                            ..Default::default()
                        },
                    )?;
                    step.emit(Step::Revoke, Status::Waiting, Some(&action));
                    ctx.journal
                        .set_state(id, AWAITING_CONFIRMATION, None, Some(&action))?;
                    return Ok(Outcome::AwaitingConfirmation { action });
                }
                Err(e) => {
                    return Ok(
                        step.incomplete(Step::Revoke, format!("cannot revoke {old_id}: {e}"))
                    );
                }
            }
            ctx.crash_point(id, "revoke-after-call");
            ctx.journal.record(
                id,
                Step::Revoke,
                EventPhase::Done,
                &Detail {
                    old_id: Some(old_id.clone()),
                    ..Default::default()
                },
            )?;
            step.emit(Step::Revoke, Status::Done, Some(old_id));
        }
    }

    // 12. done: the minted value leaves the stash. Recorded first, erased after: erased
    // first, a crash before the record would leave a run that needs the value (for nothing
    // but its id) and can no longer find it. A crash after the record leaves the sealed value
    // behind until the next invocation, which erases it for a finished target.
    ctx.journal.record(
        id,
        Step::Done,
        EventPhase::Done,
        &Detail {
            new_id: Some(minted.id.clone()),
            ..Default::default()
        },
    )?;
    ctx.stash.erase(id)?;
    ctx.journal.set_state(id, "done", None, None)?;
    step.emit(Step::Done, Status::Done, Some(&minted.id));
    Ok(Outcome::Done)
}

/// Runs the pre-rotation hunts and applies `on_findings.pre`; `Some` ends the invocation.
async fn pre_hunt(
    ctx: &Ctx,
    step: &Stepper<'_>,
    target: &Target,
    progress: &Progress,
) -> Result<Option<Outcome>, EngineError> {
    use crate::plan::PreFindings;
    if hunts::names(&ctx.plan, target, When::Pre).is_empty() {
        return Ok(None);
    }
    let id = target.id.as_str();
    step.started(Step::PreHunt);
    let facts = RotationFacts {
        old_id: progress.old_id.clone(),
        ..Default::default()
    };
    let (result, detail, serious, path) = hunt_phase(ctx, target, When::Pre, &facts).await?;
    let policy = ctx.plan.defaults.on_findings.pre;
    // A source that could not be read hides what it holds: a policy that wants a person to
    // look at findings wants one to look at that too.
    let held = serious > 0 || (!result.unread.is_empty() && policy != PreFindings::Continue);
    if !held {
        ctx.journal
            .record(id, Step::PreHunt, EventPhase::Done, &detail)?;
        step.emit(Step::PreHunt, Status::Done, detail.message.as_deref());
        return Ok(None);
    }
    let what = format!(
        "pre-rotation hunt: {} (findings in {})",
        result.summary(),
        path.display()
    );
    match policy {
        PreFindings::Continue => {
            ctx.journal
                .record(id, Step::PreHunt, EventPhase::Done, &detail)?;
            step.emit(
                Step::PreHunt,
                Status::Done,
                Some(&format!(
                    "{what}; rotating anyway (on_findings.pre: continue)"
                )),
            );
            Ok(None)
        }
        PreFindings::Pause => {
            let action = format!(
                "{what}; review them, then run `rekey confirm {} {id}` and `rekey apply --resume {}` to rotate",
                ctx.run_id, ctx.run_id
            );
            let detail = Detail {
                message: Some(action.clone()),
                ..detail
            };
            ctx.journal
                .record(id, Step::PreHunt, EventPhase::Failed, &detail)?;
            ctx.journal
                .set_state(id, AWAITING_CONFIRMATION, None, Some(&action))?;
            step.emit(Step::PreHunt, Status::Failed, Some(&action));
            Ok(Some(Outcome::AwaitingConfirmation { action }))
        }
        PreFindings::Abort => {
            let reason = format!("{what}; not rotated (on_findings.pre: abort)");
            let detail = Detail {
                message: Some(reason.clone()),
                ..detail
            };
            ctx.journal
                .record(id, Step::PreHunt, EventPhase::Failed, &detail)?;
            ctx.journal.set_state(id, "aborted", None, Some(&reason))?;
            step.emit(Step::PreHunt, Status::Failed, Some(&reason));
            Ok(Some(Outcome::Skipped { reason }))
        }
    }
}

/// Runs the post-rotation hunts and applies `on_findings.post`; `Some` ends the invocation
/// before the old credential is revoked.
async fn post_hunt(
    ctx: &Ctx,
    step: &Stepper<'_>,
    target: &Target,
    provider: &dyn Provider,
    progress: &Progress,
    caps: crate::providers::Capabilities,
) -> Result<Option<Outcome>, EngineError> {
    use crate::plan::PostFindings;
    if hunts::names(&ctx.plan, target, When::Post).is_empty() {
        return Ok(None);
    }
    let id = target.id.as_str();
    step.started(Step::PostHunt);
    // Journals written before `at` was recorded: the deactivation happened when the grace
    // period began.
    let deactivated_at = progress.deactivated_at.or_else(|| {
        let grace = chrono::Duration::seconds(ctx.grace(target).seconds() as i64);
        progress
            .grace_until
            .filter(|_| progress.has(Step::Deactivate) && caps.deactivate)
            .map(|u| u - grace)
    });
    let facts = RotationFacts {
        old_id: progress.old_id.clone(),
        new_id: progress.new_id.clone(),
        minted_at: progress.minted_at,
        deactivated_at: deactivated_at.filter(|_| caps.deactivate),
    };
    let (result, detail, serious, path) = hunt_phase(ctx, target, When::Post, &facts).await?;
    if serious == 0 && result.unread.is_empty() {
        ctx.journal
            .record(id, Step::PostHunt, EventPhase::Done, &detail)?;
        step.emit(Step::PostHunt, Status::Done, detail.message.as_deref());
        return Ok(None);
    }
    let what = format!(
        "post-rotation hunt: {} (findings in {})",
        result.summary(),
        path.display()
    );
    if serious == 0 {
        // Nothing found, but not everything read: the old credential stays disabled until a
        // hunt that sees every source says it is unused.
        let reason = format!(
            "{what}; the old credential stays disabled: fix the source and run `rekey apply --resume {}`",
            ctx.run_id
        );
        ctx.journal.record(
            id,
            Step::PostHunt,
            EventPhase::Failed,
            &Detail {
                message: Some(reason.clone()),
                ..detail
            },
        )?;
        return Ok(Some(step.incomplete(Step::PostHunt, reason)));
    }
    let policy = ctx.plan.defaults.on_findings.post;
    if policy == PostFindings::Continue {
        ctx.journal
            .record(id, Step::PostHunt, EventPhase::Done, &detail)?;
        step.emit(
            Step::PostHunt,
            Status::Done,
            Some(&format!(
                "{what}; revoking anyway (on_findings.post: continue)"
            )),
        );
        return Ok(None);
    }
    let mut done_to_old = "the old credential stays disabled".to_string();
    if policy == PostFindings::Reactivate
        && let Some(old_id) = &progress.old_id
    {
        if caps.reactivate && progress.has(Step::Deactivate) && facts.deactivated_at.is_some() {
            let rollback = Detail {
                old_id: Some(old_id.clone()),
                message: Some(
                    "reactivate the old credential after post-rotation hunt findings".into(),
                ),
                ..Default::default()
            };
            ctx.journal
                .record(id, Step::Rollback, EventPhase::Intent, &rollback)?;
            match retry(|| provider.reactivate(target, old_id)).await {
                Ok(()) => {
                    ctx.journal
                        .record(id, Step::Rollback, EventPhase::Done, &rollback)?;
                    done_to_old = format!("the old credential {old_id} was reactivated");
                }
                Err(e) => {
                    ctx.journal.record(
                        id,
                        Step::Rollback,
                        EventPhase::Failed,
                        &Detail {
                            message: Some(format!("cannot reactivate: {e}")),
                            ..rollback
                        },
                    )?;
                    done_to_old = format!(
                        "the old credential {old_id} could not be reactivated ({e}) and stays disabled"
                    );
                }
            }
        } else {
            done_to_old = format!(
                "{} cannot reactivate a credential: the old one stays as it is",
                target.provider.value
            );
        }
    }
    let action = format!(
        "{what}; {done_to_old}; investigate, then run `rekey confirm {} {id}` and `rekey apply --resume {}` to revoke it",
        ctx.run_id, ctx.run_id
    );
    ctx.journal.record(
        id,
        Step::PostHunt,
        EventPhase::Failed,
        &Detail {
            old_id: progress.old_id.clone(),
            message: Some(action.clone()),
            ..detail
        },
    )?;
    ctx.journal
        .set_state(id, AWAITING_CONFIRMATION, None, Some(&action))?;
    step.emit(Step::PostHunt, Status::Failed, Some(&action));
    Ok(Some(Outcome::AwaitingConfirmation { action }))
}

/// Runs one phase's hunts, keeps the findings, counts the serious ones for the exit code, and
/// returns the journal detail summarizing them.
async fn hunt_phase(
    ctx: &Ctx,
    target: &Target,
    when: When,
    facts: &RotationFacts,
) -> Result<(hunts::PhaseResult, Detail, usize, std::path::PathBuf), EngineError> {
    let env = hunts::HuntEnv {
        plan: &ctx.plan,
        rules: ctx.hunt_rules.clone(),
        now: Utc::now(),
        aws: ctx.hunt_aws.clone(),
        plan_dir: ctx.plan_dir.clone(),
        shared: Some(&ctx.hunt_reads),
    };
    let result = hunts::run_phase(&env, target, when, facts).await;
    let path = hunts::findings_path(
        &ctx.options.state_dir,
        &ctx.run_id,
        target.id.as_str(),
        when,
    );
    hunts::keep(&path, &result).map_err(|e| {
        EngineError::Internal(format!(
            "cannot keep the findings in {}: {e}",
            path.display()
        ))
    })?;
    if let Ok(mut records) = ctx.hunt_records.lock() {
        records.push(hunts::HuntRecord::of(
            target.id.as_str(),
            when,
            &result,
            &path,
        ));
    }
    let serious = result.serious(ctx.plan.defaults.on_findings.severity);
    ctx.serious_findings
        .fetch_add(serious, std::sync::atomic::Ordering::Relaxed);
    let detail = Detail {
        findings: Some(result.report.findings.len()),
        severity: result.report.highest().map(|s| s.to_string()),
        message: Some(result.summary()),
        ..Default::default()
    };
    Ok((result, detail, serious, path))
}

/// Emits events and ends a target's invocation with the right outcome.
struct Stepper<'a> {
    ctx: &'a Ctx,
    target: &'a str,
}

impl Stepper<'_> {
    fn emit(&self, step: Step, status: Status, message: Option<&str>) {
        self.ctx.emit(self.target, step, status, message);
    }

    fn started(&self, step: Step) {
        self.emit(step, Status::Started, None);
    }

    fn incomplete(&self, step: Step, reason: String) -> Outcome {
        self.emit(step, Status::Failed, Some(&reason));
        let _ = self
            .ctx
            .journal
            .set_state(self.target, "incomplete", None, Some(&reason));
        Outcome::Incomplete { reason }
    }

    /// A failure before anything lasting changed at the owner or in CircleCI.
    fn fail_untouched(&self, step: Step, reason: String) -> Outcome {
        self.emit(step, Status::Failed, Some(&reason));
        let _ = self
            .ctx
            .journal
            .set_state(self.target, "failed", None, Some(&reason));
        Outcome::Failed { reason }
    }
}

/// Deletes every credential of `live` that is neither in `known` (the ids before this run's
/// mint) nor the old one: credentials a mint created but whose answer never arrived (a lost
/// answer, a crash). Each deletion is journaled as a rollback without `new_id`, which does not
/// end the target (see `Progress::fold`). `Ok(Err(why))` when one could not be deleted.
#[allow(clippy::too_many_arguments)]
async fn delete_orphans(
    ctx: &Ctx,
    step: &Stepper<'_>,
    provider: &dyn Provider,
    target: &Target,
    live: &[CredentialInfo],
    known: &[String],
    old_id: Option<&str>,
    why: &str,
) -> Result<Result<Vec<String>, String>, EngineError> {
    let id = target.id.as_str();
    let mut deleted = Vec::new();
    for orphan in live
        .iter()
        .filter(|c| !known.contains(&c.id) && Some(c.id.as_str()) != old_id)
    {
        let intent = Detail {
            new_id: Some(orphan.id.clone()),
            message: Some(why.to_string()),
            ..Default::default()
        };
        ctx.journal
            .record(id, Step::Rollback, EventPhase::Intent, &intent)?;
        if let Err(e) = retry(|| provider.revoke(target, &orphan.id)).await {
            return Ok(Err(format!("cannot delete {} ({why}): {e}", orphan.id)));
        }
        let done = Detail {
            removed_id: Some(orphan.id.clone()),
            ..Default::default()
        };
        ctx.journal
            .record(id, Step::Rollback, EventPhase::Done, &done)?;
        step.emit(
            Step::Rollback,
            Status::Done,
            Some(&format!("deleted {} ({why})", orphan.id)),
        );
        deleted.push(orphan.id.clone());
    }
    Ok(Ok(deleted))
}

/// How a mint ended without a credential.
enum MintFailure {
    /// The owner refused, or kept failing; nothing this run created is left behind.
    GaveUp(ProviderError),
    /// A credential may exist that this run created and could not delete.
    Unsure(String),
}

/// Attempts of a mint (each followed, on a transient error, by a sweep for orphans).
const MINT_ATTEMPTS: u32 = 6;

/// Mints, retrying transient errors. A transient error can arrive after the owner acted (a 5xx
/// or a timeout after CreateAccessKey took effect): the credential then exists with a secret
/// nobody saw — an orphan (invariant 2) that also holds one of AWS's two slots, so that a blind
/// retry fails on the quota. So after each transient error the principal's credentials are
/// listed and every one that the mint's intent did not know is deleted, journaled as a
/// rollback, before the intent is recorded again and the mint retried.
async fn mint_without_orphans(
    ctx: &Ctx,
    step: &Stepper<'_>,
    provider: &dyn Provider,
    target: &Target,
    known: &[String],
    progress: &Progress,
) -> Result<Result<Minted, MintFailure>, EngineError> {
    let id = target.id.as_str();
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let e = match provider.mint(target).await {
            Ok(m) => return Ok(Ok(m)),
            Err(e) if e.is_transient() => e,
            Err(e) => return Ok(Err(MintFailure::GaveUp(e))),
        };
        tracing::debug!(target = id, attempt, error = %e, "mint failed transiently; looking for a credential it may have created");
        let live = match retry(|| provider.inspect(target)).await {
            Ok(i) => i.credentials,
            Err(list) => {
                return Ok(Err(MintFailure::Unsure(format!(
                    "mint failed ({e}) and the credentials of {id} could not be listed to check that it created none ({list})"
                ))));
            }
        };
        let sweep = delete_orphans(
            ctx,
            step,
            provider,
            target,
            &live,
            known,
            progress.old_id.as_deref(),
            "created by a mint whose answer was lost",
        )
        .await?;
        if let Err(reason) = sweep {
            return Ok(Err(MintFailure::Unsure(format!(
                "mint failed ({e}); {reason}"
            ))));
        }
        if attempt >= MINT_ATTEMPTS {
            return Ok(Err(MintFailure::GaveUp(e)));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
        // The intent again, so that the last record before the next attempt is a mint intent:
        // a crash during it is resolved on resume like any interrupted mint.
        ctx.journal.record(
            id,
            Step::Mint,
            EventPhase::Intent,
            &Detail {
                known_ids: Some(known.to_vec()),
                ..Default::default()
            },
        )?;
    }
}

/// Attempts of a provider operation on transient errors. An operation may be several calls to
/// the owner, each of which can fail (an AWS inspection is GetUser, ListAccessKeys and one
/// GetAccessKeyLastUsed per key: at a 20 % error rate, a whole attempt succeeds half the
/// time), and the provider makes one attempt per call: six attempts left a run stopped one
/// time in sixty at that rate; ten make it about one in a thousand.
const PROVIDER_ATTEMPTS: u32 = 10;

/// Retries a provider call on transient errors (throttling, 5xx), with exponential backoff
/// from 100 ms, capped at 2 s (11 s of waiting at most).
async fn retry<T, F, Fut>(mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 1..PROVIDER_ATTEMPTS {
        match call().await {
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "transient provider error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
    call().await
}

async fn verify_with_retries(
    ctx: &Ctx,
    provider: &dyn Provider,
    target: &Target,
    minted: &Minted,
) -> Result<(), ProviderError> {
    let attempts = target
        .policy
        .verify
        .as_ref()
        .map(|v| v.attempts)
        .unwrap_or(10)
        .max(1);
    let mut delay = ctx.options.verify_backoff;
    let mut last = None;
    for attempt in 1..=attempts {
        match provider.verify(target, minted).await {
            Ok(()) => return Ok(()),
            Err(e @ (ProviderError::Rejected(_) | ProviderError::Transient(_))) => {
                tracing::debug!(target = target.id.as_str(), attempt, error = %e, "new credential not accepted yet");
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ProviderError::Rejected("not accepted".into())))
}

/// The credential the bindings hold now: by the masked last four of the id field in project
/// variables (AWS access key ids), else by a fingerprint the plan observed (checkout keys),
/// else the plan's `principal.key_id`, else the principal's only credential.
pub(super) async fn current_credential(
    circleci: &CircleCiClient,
    target: &Target,
    inspection: &Inspection,
) -> Result<Option<CredentialInfo>, String> {
    let creds = &inspection.credentials;
    if let Some(field) = target.provider.value.id_field() {
        for binding in &target.bindings {
            let (Some(Place::Project(slug)), Some(var)) = (
                binding.place(),
                binding
                    .vars
                    .iter()
                    .find(|(f, _)| f.as_str() == field)
                    .map(|(_, v)| v),
            ) else {
                continue;
            };
            let masks = bindings::project_masks(circleci, slug)
                .await
                .map_err(|e| format!("cannot read {slug}: {e}"))?;
            if let Some(last4) = masks.get(var.as_str()) {
                let matching: Vec<&CredentialInfo> = creds
                    .iter()
                    .filter(|c| c.id.ends_with(last4.as_str()))
                    .collect();
                match matching.as_slice() {
                    [one] => return Ok(Some((*one).clone())),
                    [] => {
                        return Err(format!(
                            "{var} in {slug} ends with {last4}, which matches no credential of {}: is principal right?",
                            inspection.principal
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    // The legacy AWS key pair of project settings shows its key id's last four there.
    for binding in &target.bindings {
        let last4 = bindings::keypair_id_last_four(circleci, binding)
            .await
            .map_err(|e| format!("cannot read {}: {e}", bindings::label(binding)))?;
        if let Some(last4) = last4
            && let [one] = creds
                .iter()
                .filter(|c| c.id.ends_with(&last4))
                .collect::<Vec<_>>()[..]
        {
            return Ok(Some(one.clone()));
        }
    }
    // Keys whose id is their fingerprint (CircleCI checkout keys): the plan observed which one
    // was in use.
    let observed: Vec<&str> = target
        .observed
        .iter()
        .filter_map(|o| o.fingerprint.as_deref())
        .collect();
    if let [one] = creds
        .iter()
        .filter(|c| observed.contains(&c.id.as_str()))
        .collect::<Vec<_>>()
        .as_slice()
    {
        return Ok(Some((*one).clone()));
    }
    if let Some(key_id) = &target.principal.key_id {
        return creds
            .iter()
            .find(|c| c.id == key_id.as_str())
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "principal.key_id {} is not a credential of {}",
                    key_id.as_str(),
                    inspection.principal
                )
            });
    }
    match creds.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(format!(
            "{} has {} credentials and the bindings do not show which one is in use: set principal.key_id",
            inspection.principal,
            creds.len()
        )),
    }
}

/// Compares what the plan observed with live state: `Ok(Some(description))` when they differ,
/// `Err(why)` when live state could not be read. A read that failed (a 5xx after retries, a
/// 403) says nothing about the plan, so it is not reported as staleness: that would tell the
/// reviewer to re-plan when the cause is CircleCI or the token.
pub(super) async fn stale(
    circleci: &CircleCiClient,
    target: &Target,
) -> Result<Option<String>, String> {
    let mut unreadable = Vec::new();
    let mut changes = Vec::new();
    let mut project_cache: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for obs in &target.observed {
        let Some(var) = &obs.var else { continue };
        match obs.place() {
            Some(Place::Project(slug)) => {
                let Some(masked) = &obs.masked else { continue };
                if !project_cache.contains_key(slug) {
                    match bindings::project_masks(circleci, slug).await {
                        Ok(m) => {
                            project_cache.insert(slug.to_string(), m);
                        }
                        Err(e) => {
                            unreadable.push(format!("cannot read {slug}: {e}"));
                            continue;
                        }
                    }
                }
                match project_cache.get(slug).and_then(|m| m.get(var)) {
                    None => changes.push(format!("{var} is gone from project {slug}")),
                    Some(live) if live != masked.last_four() => changes.push(format!(
                        "{var} in project {slug} now ends with {live}, the plan saw {}",
                        masked.last_four()
                    )),
                    Some(_) => {}
                }
            }
            Some(Place::Context(name)) => {
                let Some(seen) = obs.updated_at else { continue };
                let Some(binding) = target
                    .bindings
                    .iter()
                    .find(|b| b.place() == Some(Place::Context(name)))
                else {
                    continue;
                };
                match bindings::timestamps(circleci, binding).await {
                    Ok(stamps) => {
                        let live = stamps
                            .iter()
                            .find(|(k, _)| k.ends_with(&format!("/{var}")))
                            .map(|(_, v)| *v);
                        match live {
                            None => changes.push(format!("{var} is gone from context {name}")),
                            Some(live) if live != seen => changes.push(format!(
                                "{var} in context {name} was updated at {}, after the plan was made",
                                live.to_rfc3339()
                            )),
                            Some(_) => {}
                        }
                    }
                    Err(e) => unreadable.push(format!("cannot read context {name}: {e}")),
                }
            }
            None => {}
        }
    }
    if !unreadable.is_empty() {
        return Err(format!(
            "cannot compare the plan with live state: {}",
            unreadable.join("; ")
        ));
    }
    Ok((!changes.is_empty()).then(|| changes.join("; ")))
}
