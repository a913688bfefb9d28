//! Step 5, verify-new: the new credential authenticates at its owner, with bounded retries for
//! eventual consistency; one that never works is deleted and nothing else has changed.

use super::progress::{Detail, Step};
use super::runner::{Runner, StepResult, retry};
use crate::engine::events::Status;
use crate::engine::run::Ctx;
use crate::plan::Target;
use crate::providers::budget::{VerifyBudget, VerifyClock};
use crate::providers::{Minted, Provider, ProviderError};

impl Runner<'_> {
    /// Step 5: verify, or delete the new credential (a rollback) and fail.
    pub async fn verify(&mut self) -> StepResult {
        if self.progress.has(Step::Verify) {
            return Ok(());
        }
        let minted = &self.minted_value()?;
        self.started(Step::Verify);
        // A credential that lacks a field the bindings map would write nothing there, and the
        // old one would then be retired: refused like one that does not authenticate.
        let call = async {
            missing_fields(self.target, minted).map_err(ProviderError::Failed)?;
            verify_with_retries(self.ctx, self.provider, self.target, minted).await
        };
        // What the verification learnt (a token's scopes): known once it has succeeded.
        let done = |_: &()| {
            Ok(Detail {
                message: self.provider.verified_note(self.target),
                ..Default::default()
            })
        };
        let Err(e) = self
            .journaled(Step::Verify, &Detail::default(), call, done)
            .await?
        else {
            let note = self.provider.verified_note(self.target);
            self.emit(Step::Verify, Status::Done, note.as_deref());
            return Ok(());
        };
        self.record_failed(Step::Verify, Detail::default(), e.to_string())?;
        let rollback = Detail {
            new_id: Some(minted.id.clone()),
            ..Default::default()
        };
        let delete = retry(|| self.provider.revoke(self.target, &minted.id));
        if let Err(del) = self
            .journaled(Step::Rollback, &rollback, delete, |_| Ok(rollback.clone()))
            .await?
        {
            return Err(self.incomplete(
                Step::Rollback,
                format!("new credential did not verify ({e}) and could not be deleted: {del}"),
            ));
        }
        self.ctx.stash.erase(self.id)?;
        Err(self.fail_untouched(
            Step::Verify,
            format!(
                "new credential {} did not verify ({e}); it was deleted, nothing else changed",
                minted.id
            ),
        ))
    }
}

/// Tries the new credential until it works or the target's [`VerifyBudget`] is spent, and
/// says while it waits how long it may still wait.
async fn verify_with_retries(
    ctx: &Ctx,
    provider: &dyn Provider,
    target: &Target,
    minted: &Minted,
) -> Result<(), ProviderError> {
    let budget = VerifyBudget::for_target(target);
    let clock = VerifyClock::with_second(ctx.options.verify_backoff);
    let started = std::time::Instant::now();
    let mut last = None;
    for attempt in 1.. {
        match provider.verify(target, minted).await {
            Ok(()) => return Ok(()),
            Err(e @ (ProviderError::Rejected(_) | ProviderError::Transient(_))) => {
                tracing::debug!(target = target.id.as_str(), attempt, error = %e, "new credential not accepted yet");
                last = Some(e);
                let elapsed = clock.elapsed(started);
                let Some(pause) = budget.pause_after(attempt, elapsed) else {
                    break;
                };
                let note = format!(
                    "not accepted yet after {attempt} attempt(s); waiting for the owner to propagate it, {} of {}",
                    crate::plan::PlanDuration(elapsed.as_secs()),
                    budget.describe()
                );
                ctx.emit(
                    target.id.as_str(),
                    Step::Verify,
                    Status::Waiting,
                    Some(&note),
                );
                clock.sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ProviderError::Rejected("not accepted".into())))
}

/// `Err(why)` when a binding maps a field the minted credential does not have, and the
/// provider does not name it as a field it leaves alone (an Azure client id): an exec mint
/// answering `value` for bindings that map `valeu`.
fn missing_fields(target: &Target, minted: &Minted) -> Result<(), String> {
    let kept: &[&str] = match target.provider.value.binding_fields() {
        Some((allowed, _)) => allowed,
        None => &[],
    };
    let mut missing: Vec<&str> = target
        .bindings
        .iter()
        .flat_map(|b| b.vars.keys())
        .map(|f| f.as_str())
        .filter(|f| !minted.fields.contains_key(*f) && !kept.contains(f))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let mut has: Vec<&str> = minted.fields.keys().map(String::as_str).collect();
    has.sort_unstable();
    Err(format!(
        "the bindings map field(s) {} that the new credential does not have (it has: {}); fix the field names in the plan's bindings",
        missing.join(", "),
        if has.is_empty() {
            "none".to_string()
        } else {
            has.join(", ")
        }
    ))
}
