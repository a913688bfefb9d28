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
    /// still valid) until `until`; a later `apply --resume` revokes it.
    Waiting { until: DateTime<Utc> },
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
            Outcome::Waiting { until } => format!("waiting until {}", until.to_rfc3339()),
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
            Outcome::Incomplete { reason } => format!("incomplete: {reason}"),
            Outcome::Stale { reason } => format!("stale plan: {reason}"),
            Outcome::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

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
    let mut progress = Progress::fold(&ctx.journal.events(id)?);
    if progress.finished {
        return Ok(if progress.has(Step::Done) {
            Outcome::Done
        } else {
            Outcome::Failed {
                reason: "rolled back in an earlier invocation; start a new run".into(),
            }
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
        if let (Some(old), Some(max_age)) = (&old, ctx.max_age(target)) {
            if let Some(created) = old.created_at {
                let age = Utc::now() - created;
                if !ctx.options.ignore_max_age
                    && age.num_seconds() >= 0
                    && (age.num_seconds() as u64) < max_age.seconds()
                {
                    let reason = format!(
                        "current credential {} is {} old, younger than max_age {max_age}",
                        old.id,
                        crate::plan::PlanDuration(age.num_seconds() as u64)
                    );
                    ctx.journal.record(
                        id,
                        Step::Inspect,
                        EventPhase::Skipped,
                        &Detail {
                            message: Some(reason.clone()),
                            ..Default::default()
                        },
                    )?;
                    step.emit(Step::Inspect, Status::Skipped, Some(&reason));
                    return Ok(Outcome::Skipped { reason });
                }
            }
        }
        if let Some(reason) = stale(&ctx.circleci, target).await {
            step.emit(Step::Inspect, Status::Failed, Some(&reason));
            return Ok(Outcome::Stale { reason });
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

    // 4 (resolving a crash first). An interrupted mint: the stash has the value, or the owner
    // may hold a credential this run created but never recorded.
    let mut minted: Option<Minted> = None;
    let mut live = inspection.credentials.clone();
    if progress.new_id.is_none() {
        if let Some((Step::Mint, intent)) = &progress.interrupted {
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
                let known = intent.known_ids.clone().unwrap_or_default();
                let orphans: Vec<CredentialInfo> = live
                    .iter()
                    .filter(|c| !known.contains(&c.id) && Some(&c.id) != progress.old_id.as_ref())
                    .cloned()
                    .collect();
                for orphan in orphans {
                    let detail = Detail {
                        new_id: Some(orphan.id.clone()),
                        message: Some("orphan of an interrupted mint".into()),
                        ..Default::default()
                    };
                    ctx.journal
                        .record(id, Step::Rollback, EventPhase::Intent, &detail)?;
                    if let Err(e) = retry(|| provider.revoke(target, &orphan.id)).await {
                        return Ok(step.incomplete(
                            Step::Rollback,
                            format!("cannot delete orphan credential {}: {e}", orphan.id),
                        ));
                    }
                    // Recorded as done without new_id: the rollback of an orphan does not end the target.
                    ctx.journal.record(
                        id,
                        Step::Rollback,
                        EventPhase::Done,
                        &Detail {
                            removed_id: Some(orphan.id.clone()),
                            ..Default::default()
                        },
                    )?;
                    step.emit(
                        Step::Rollback,
                        Status::Done,
                        Some(&format!("deleted orphan {}", orphan.id)),
                    );
                    live.retain(|c| c.id != orphan.id);
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
        ctx.crash_point("mint-before-call");
        let m =
            match mint_without_orphans(ctx, provider, target, &known, progress.old_id.as_deref())
                .await
            {
                Ok(m) => m,
                Err(MintFailure::Orphan(reason)) => {
                    return Ok(step.incomplete(Step::Rollback, reason));
                }
                Err(MintFailure::Provider(e)) => {
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
            };
        ctx.crash_point("mint-after-call");
        ctx.stash.put(id, &m)?;
        ctx.crash_point("mint-after-stash");
        ctx.journal.record(
            id,
            Step::Mint,
            EventPhase::Done,
            &Detail {
                new_id: Some(m.id.clone()),
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
        ctx.journal
            .record(id, Step::Verify, EventPhase::Done, &Detail::default())?;
        step.emit(Step::Verify, Status::Done, None);
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
        ctx.crash_point("write-before-call");
        match bindings::write(&ctx.circleci, binding, &minted).await {
            Ok(()) => {
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
                ctx.crash_point("deactivate-before-call");
                if let Err(e) = retry(|| provider.deactivate(target, old_id)).await {
                    return Ok(step
                        .incomplete(Step::Deactivate, format!("cannot deactivate {old_id}: {e}")));
                }
                ctx.journal.record(
                    id,
                    Step::Deactivate,
                    EventPhase::Done,
                    &Detail {
                        old_id: Some(old_id.clone()),
                        until: Some(until),
                        ..Default::default()
                    },
                )?;
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
            return Ok(Outcome::Waiting { until });
        }
        let message =
            "grace period over; post-rotation hunts are not part of this build yet".to_string();
        ctx.journal.record(
            id,
            Step::Grace,
            EventPhase::Done,
            &Detail {
                message: Some(message),
                ..Default::default()
            },
        )?;
        step.emit(Step::Grace, Status::Done, None);
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
            ctx.crash_point("revoke-before-call");
            if let Err(e) = retry(|| provider.revoke(target, old_id)).await {
                return Ok(step.incomplete(Step::Revoke, format!("cannot revoke {old_id}: {e}")));
            }
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

    // 12. done: the minted value leaves the stash.
    ctx.stash.erase(id)?;
    ctx.journal.record(
        id,
        Step::Done,
        EventPhase::Done,
        &Detail {
            new_id: Some(minted.id.clone()),
            ..Default::default()
        },
    )?;
    ctx.journal.set_state(id, "done", None, None)?;
    step.emit(Step::Done, Status::Done, Some(&minted.id));
    Ok(Outcome::Done)
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

/// Why a mint did not produce a credential.
enum MintFailure {
    /// The owner refused or kept failing; nothing of this mint is left at the owner.
    Provider(ProviderError),
    /// A credential this mint may have created could not be listed or removed.
    Orphan(String),
}

/// Mints, retrying transient failures — but a transient failure of a create call may hide a
/// credential that was created (the answer was lost): before every retry, and after the last
/// failure, credentials of the principal that were not there before the mint (`known`) and are
/// not the old one are deleted, journaled as rollbacks. A blind retry would leave that
/// credential behind as an orphan, or (AWS, two keys per user) fail on the quota it uses.
async fn mint_without_orphans(
    ctx: &Ctx,
    provider: &dyn Provider,
    target: &Target,
    known: &[String],
    old_id: Option<&str>,
) -> Result<Minted, MintFailure> {
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match provider.mint(target).await {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        if !error.is_transient() {
            return Err(MintFailure::Provider(error));
        }
        tracing::debug!(target = target.id.as_str(), attempt = attempts, error = %error, "mint failed transiently; checking for a credential it may have created");
        remove_unknown(ctx, provider, target, known, old_id)
            .await
            .map_err(|why| {
                MintFailure::Orphan(format!(
                    "mint failed ({error}) and a credential it may have created could not be checked or removed: {why}"
                ))
            })?;
        if attempts > 5 {
            return Err(MintFailure::Provider(error));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Deletes every credential of the principal that is neither in `known` nor the old one.
async fn remove_unknown(
    ctx: &Ctx,
    provider: &dyn Provider,
    target: &Target,
    known: &[String],
    old_id: Option<&str>,
) -> Result<(), String> {
    let id = target.id.as_str();
    let live = retry(|| provider.inspect(target))
        .await
        .map_err(|e| format!("cannot list credentials: {e}"))?;
    for orphan in live
        .credentials
        .iter()
        .filter(|c| !known.contains(&c.id) && Some(c.id.as_str()) != old_id)
    {
        let detail = Detail {
            new_id: Some(orphan.id.clone()),
            message: Some("created by a mint whose answer was lost".into()),
            ..Default::default()
        };
        ctx.journal
            .record(id, Step::Rollback, EventPhase::Intent, &detail)
            .map_err(|e| e.to_string())?;
        retry(|| provider.revoke(target, &orphan.id))
            .await
            .map_err(|e| format!("cannot delete {}: {e}", orphan.id))?;
        ctx.journal
            .record(
                id,
                Step::Rollback,
                EventPhase::Done,
                &Detail {
                    removed_id: Some(orphan.id.clone()),
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
        ctx.emit(
            id,
            Step::Rollback,
            Status::Done,
            Some(&format!(
                "deleted {} (left by a lost mint answer)",
                orphan.id
            )),
        );
    }
    Ok(())
}

/// Retries a provider call on transient errors (throttling, 5xx), with backoff.
async fn retry<T, F, Fut>(mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut delay = Duration::from_millis(200);
    for _ in 0..5 {
        match call().await {
            Err(e) if e.is_transient() => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
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
/// variables (AWS access key ids), else the plan's `principal.key_id`, else the principal's
/// only credential.
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

/// Compares what the plan observed with live state; `Some(description)` when they differ.
pub(super) async fn stale(circleci: &CircleCiClient, target: &Target) -> Option<String> {
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
                            changes.push(format!("cannot read {slug}: {e}"));
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
                    Err(e) => changes.push(format!("cannot read context {name}: {e}")),
                }
            }
            None => {}
        }
    }
    (!changes.is_empty()).then(|| changes.join("; "))
}
