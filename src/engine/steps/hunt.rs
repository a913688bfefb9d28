//! Step 1, pre-hunt (evidence of abuse of the credential in use, before anything changes),
//! and step 10b, post-hunt (was the old credential used after it was disabled, the new one
//! from outside the allow-list?), with the plan's `on_findings` policies.

use super::progress::{Detail, EventPhase, Step};
use super::runner::{Runner, StepResult, Stop, retry};
use crate::engine::EngineError;
use crate::engine::events::Status;
use crate::engine::hunts::{self, RotationFacts, When};
use crate::engine::run::Ctx;
use crate::engine::target::{AWAITING_CONFIRMATION, Outcome};
use crate::plan::Target;
use chrono::Utc;

impl Runner<'_> {
    /// Step 1: the pre-rotation hunts, once per target; a target minted before this step
    /// existed in the journal has nothing to look back on.
    pub async fn pre_hunt(&mut self) -> StepResult {
        if self.progress.has(Step::PreHunt) || self.progress.new_id.is_some() {
            return Ok(());
        }
        match pre_hunt(self).await? {
            Some(outcome) => Err(Stop::End(outcome)),
            None => Ok(()),
        }
    }

    /// Step 10b: the post-rotation hunts, before revoking, so that a missed consumer can be
    /// given its credential back.
    pub async fn post_hunt(&mut self) -> StepResult {
        if self.progress.has(Step::PostHunt) {
            return Ok(());
        }
        match post_hunt(self).await? {
            Some(outcome) => Err(Stop::End(outcome)),
            None => Ok(()),
        }
    }
}

/// Runs the pre-rotation hunts and applies `on_findings.pre`; `Some` ends the invocation.
async fn pre_hunt(step: &Runner<'_>) -> Result<Option<Outcome>, Stop> {
    let (ctx, target, progress) = (step.ctx, step.target, &step.progress);
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
async fn post_hunt(step: &Runner<'_>) -> Result<Option<Outcome>, Stop> {
    let (ctx, target, progress) = (step.ctx, step.target, &step.progress);
    let (provider, caps) = (step.provider, step.caps);
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
        return match step.incomplete(Step::PostHunt, reason) {
            Stop::End(outcome) => Ok(Some(outcome)),
            engine => Err(engine),
        };
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
